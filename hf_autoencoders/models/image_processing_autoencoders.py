"""Image processor of the autoencoders: any image -> pixel_values in [0, 1] on the 8-bit grid (or in the model's
range (-1, 1), with `do_normalize`), and back.

Every image is brought to 8 bits (16-bit images k -> round(k / 257), float images x in [0, 1] -> round(255 x)), then
to a fixed mode ("L" or "RGB"; alpha is dropped, palettes are applied), resized to `image_size x image_size` with PIL
when its size differs, and kept as 8-bit integers k in {0, ..., 255} before it becomes pixel_values x = k / 255. So
pixel_values always lie on the 1/255 grid that the discretized-logistic likelihood integrates over, and the training
data (decoded by `hf_autoencoders.data` with `image_to_uint8`, then divided by 255 in the collator) and this processor
give the same tensors for the same image.

This file travels with saved checkpoints (remote code): it imports only numpy, PIL, torch, transformers and its
sibling `saving`.
"""

import io
import os

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.processing_utils import ImagesKwargs

from .saving import SavesToFolder

_MODES = {1: "L", 3: "RGB"}
_RETURN_TENSORS = (None, "pt", "np")


def uint8_to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels k -> float32 k / 255 in [0, 1] (the one conversion shared by the processor and the collator)."""
    return images.float().div_(255.0)


def normalization(pixel_range) -> dict:
    """The processor settings that map [0, 1] pixels into a model's `pixel_range`: none for (0, 1); for (-1, 1),
    mean 0.5 and std 0.5, x -> (x - 0.5) / 0.5 = 2x - 1, as diffusers' `VaeImageProcessor` does."""
    if tuple(pixel_range) == (0.0, 1.0):
        return {"do_normalize": False}
    if tuple(pixel_range) == (-1.0, 1.0):
        return {"do_normalize": True, "image_mean": 0.5, "image_std": 0.5}
    raise ValueError(f"pixel_range must be (0, 1) or (-1, 1), got {pixel_range!r}.")


def _per_channel(values, pixel_values: torch.Tensor) -> torch.Tensor:
    """A mean or std given as one number or one per channel, shaped to broadcast over (batch, C, H, W)."""
    values = torch.as_tensor(values, dtype=pixel_values.dtype, device=pixel_values.device)
    return values.view(1, -1, 1, 1) if values.ndim else values


def normalize(pixel_values: torch.Tensor, image_mean, image_std) -> torch.Tensor:
    """(x - mean) / std per channel: the one map from [0, 1] into a model's range, shared by the processor and the
    training collator so that both give the same tensors."""
    return (pixel_values - _per_channel(image_mean, pixel_values)) / _per_channel(image_std, pixel_values)


def denormalize(pixel_values: torch.Tensor, image_mean, image_std) -> torch.Tensor:
    """x * std + mean per channel: the inverse of `normalize`."""
    return pixel_values * _per_channel(image_std, pixel_values) + _per_channel(image_mean, pixel_values)


def binarize(pixel_values: torch.Tensor, threshold: float) -> torch.Tensor:
    """Deterministic binarization for Bernoulli likelihoods: 1 where x > threshold, else 0 (same dtype)."""
    return (pixel_values > threshold).to(pixel_values.dtype)


def _array_to_pil(array: np.ndarray, channels_first: bool) -> Image.Image:
    """A uint8 (or float in [0, 1]) array of shape HW, HWC or CHW (C in 1, 3, 4) as a PIL image; an ambiguous
    shape such as (3, H, 3) is read as CHW if `channels_first` (torch) and as HWC otherwise (numpy)."""
    if array.ndim == 3:
        if array.shape[0] in (1, 3, 4) and (channels_first or array.shape[-1] not in (1, 3, 4)):
            array = array.transpose(1, 2, 0)
        if array.shape[-1] not in (1, 3, 4):
            raise ValueError(f"has shape {array.shape}; expected (H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4")
        if array.shape[-1] == 1:
            array = array[..., 0]
    elif array.ndim != 2:
        raise ValueError(f"has {array.ndim} dimensions (shape {tuple(array.shape)}); expected 2 or 3")
    if array.dtype == np.uint16:
        array = _sixteen_to_eight_bits(array)
    elif array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating) and array.dtype != np.bool_:
            raise ValueError(
                f"has dtype {array.dtype}; expected uint8 values in [0, 255], uint16 in [0, 65535] or floats in [0, 1]"
            )
        array = _unit_to_eight_bits(array.astype(np.float32), "a float array")
    return Image.fromarray(np.ascontiguousarray(array))


def _sixteen_to_eight_bits(array: np.ndarray) -> np.ndarray:
    """16-bit values k in [0, 65535] -> round(k / 257) in [0, 255] (65535 = 255 * 257, so white stays white)."""
    return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _unit_to_eight_bits(array: np.ndarray, what: str) -> np.ndarray:
    """Floats x in [0, 1] -> round(255 x); NaN, infinities and values outside [0, 1] are refused."""
    if not np.isfinite(array).all():
        raise ValueError(f"is {what} with NaN or infinite values; replace them (e.g. np.nan_to_num) first")
    if array.size and (array.min() < 0 or array.max() > 1):
        raise ValueError(
            f"is {what} with values in [{array.min():g}, {array.max():g}]; expected [0, 1] (divide 8-bit values "
            "by 255 first)"
        )
    return np.rint(array * 255).astype(np.uint8)  # onto the 8-bit grid


def to_eight_bits(image: Image.Image) -> Image.Image:
    """
    A PIL image with 8 bits per channel. 16-bit ("I;16", "I;16B", "I;16L") and 32-bit integer ("I", how PIL opens
    16-bit files) images hold values k in [0, 65535] and become round(k / 257); float ("F") images hold x in [0, 1] and
    become round(255 x). Other values, and NaN, are refused with a ValueError. PIL's own `convert("L")` would clip
    them instead (16-bit images turn white, float images black).
    """
    if image.mode.startswith("I"):
        array = np.asarray(image).astype(np.int64)
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ValueError(
                f"is a {image.mode!r} image with values in [{array.min()}, {array.max()}]; expected 16-bit values "
                "in [0, 65535]"
            )
        return Image.fromarray(_sixteen_to_eight_bits(array))
    if image.mode == "F":
        return Image.fromarray(_unit_to_eight_bits(np.asarray(image, dtype=np.float32), "an 'F' (float) image"))
    return image


def to_pil_image(image) -> Image.Image:
    """
    Open one image given as a PIL image, a numpy array (HW / HWC uint8, or floats in [0, 1]), a torch tensor
    (CHW / HW uint8, or floats in [0, 1]), a local file path, encoded bytes, or a `datasets` image dict
    `{"bytes": ..., "path": ...}`. Raises ValueError (TypeError for unsupported types) saying what is wrong.
    """
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        return _array_to_pil((image.float() if image.is_floating_point() else image).numpy(), channels_first=True)
    if isinstance(image, np.ndarray):
        return _array_to_pil(image, channels_first=False)
    if isinstance(image, dict) and ("bytes" in image or "path" in image):
        image = image.get("bytes") or image.get("path")
    if isinstance(image, (bytes, bytearray, str, os.PathLike)):
        source = io.BytesIO(image) if isinstance(image, (bytes, bytearray)) else image
        try:
            pil_image = Image.open(source)
            pil_image.load()
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            what = "bytes" if isinstance(image, (bytes, bytearray)) else f"file {os.fspath(image)!r}"
            raise ValueError(f"cannot be read as an image ({what}: {err})") from err
        return pil_image
    raise TypeError(
        f"has type {type(image).__name__}; expected a PIL image, a numpy array, a torch tensor, a file path or bytes"
    )


def image_to_uint8(image, image_size: int, num_channels: int, resample: int = Image.Resampling.BILINEAR) -> np.ndarray:
    """
    One image (anything `to_pil_image` accepts, in any PIL mode) as a uint8 array of shape (num_channels, image_size,
    image_size): brought to 8 bits (`to_eight_bits`), converted to "L" (num_channels=1) or "RGB" (num_channels=3) with
    PIL (alpha dropped, palette applied), then resized with PIL's `resample` filter when its size differs (non-square
    images are stretched, not cropped). The training data and the image processor both go through this function.
    """
    pil_image = to_eight_bits(to_pil_image(image))
    mode = _MODES[num_channels]
    if pil_image.mode != mode:
        pil_image = pil_image.convert(mode)
    if pil_image.size != (image_size, image_size):
        pil_image = pil_image.resize((image_size, image_size), resample=resample)
    array = np.array(pil_image, dtype=np.uint8)  # a writable copy
    return array[None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))


class AutoencoderImageProcessorKwargs(ImagesKwargs, total=False):
    image_size: int
    num_channels: int
    do_binarize: bool
    binarize_threshold: float
    do_normalize: bool
    image_mean: float | list[float]
    image_std: float | list[float]


class AutoencoderImageProcessor(SavesToFolder, BaseImageProcessor):
    r"""
    Turns images into the `pixel_values` the autoencoders take, and their outputs back into images.

    Args:
        image_size (`int`, defaults to 28): images are resized to `image_size x image_size`.
        num_channels (`int`, defaults to 1): 1 converts every image to grayscale ("L"), 3 to "RGB".
        resample (`int`, defaults to `PIL.Image.Resampling.BILINEAR`): PIL filter used when resizing.
        do_binarize (`bool`, defaults to `False`): map x to 1[x > binarize_threshold], for Bernoulli likelihoods.
        binarize_threshold (`float`, defaults to 0.5): threshold of the binarization.
        do_normalize (`bool`, defaults to `False`): map x to (x - image_mean) / image_std, into the range of a model
            whose `config.pixel_range` is (-1, 1) (mean 0.5 and std 0.5: x -> 2x - 1, diffusers' convention).
        image_mean, image_std (`float` or one per channel, default 0.5): the normalization's mean and std.

    `preprocess(images)` returns `pixel_values` of shape (batch, num_channels, image_size, image_size), float32,
    with values k / 255 for integers k in [0, 255] (or exactly 0 / 1 when binarizing), normalized with
    `do_normalize`. `postprocess(pixel_values)` undoes the normalization, clamps to [0, 1] and returns PIL images (or
    tensors in [0, 1] with `output_type="pt"`).
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = AutoencoderImageProcessorKwargs

    def __init__(
        self,
        image_size: int = 28,
        num_channels: int = 1,
        resample: int = Image.Resampling.BILINEAR,
        do_binarize: bool = False,
        binarize_threshold: float = 0.5,
        do_normalize: bool = False,
        image_mean: float | list[float] = 0.5,
        image_std: float | list[float] = 0.5,
        **kwargs,
    ):
        kwargs.pop("image_processor_type", None)
        super().__init__(**kwargs)
        if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}.")
        if num_channels not in _MODES:
            raise ValueError(f"num_channels must be 1 (grayscale) or 3 (RGB), got {num_channels!r}.")
        if not 0.0 <= binarize_threshold <= 1.0:
            raise ValueError(f"binarize_threshold must be in [0, 1], got {binarize_threshold!r}.")
        self.image_size = image_size
        self.num_channels = num_channels
        self.resample = int(resample)
        self.do_binarize = bool(do_binarize)
        self.binarize_threshold = float(binarize_threshold)
        for name, value in (("image_mean", image_mean), ("image_std", image_std)):
            values = value if isinstance(value, (list, tuple)) else [value]
            if len(values) not in (1, num_channels) or not all(isinstance(v, (int, float)) for v in values):
                raise ValueError(f"{name} must be a number or one number per channel ({num_channels}), got {value!r}.")
        if any(v <= 0 for v in (image_std if isinstance(image_std, (list, tuple)) else [image_std])):
            raise ValueError(f"image_std must be > 0, got {image_std!r}.")
        self.do_normalize = bool(do_normalize)
        self.image_mean = list(image_mean) if isinstance(image_mean, (list, tuple)) else float(image_mean)
        self.image_std = list(image_std) if isinstance(image_std, (list, tuple)) else float(image_std)

    def __call__(self, images, **kwargs) -> BatchFeature:
        return self.preprocess(images, **kwargs)

    def to_uint8(self, images) -> torch.Tensor:
        """Images (one, a list, or a batched 4-d array/tensor) as a uint8 tensor (batch, C, H, W)."""
        if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4:
            images = list(images)
        elif not isinstance(images, (list, tuple)):
            images = [images]
        if len(images) == 0:
            raise ValueError("images is empty; expected at least one image.")
        arrays = []
        for index, image in enumerate(images):
            try:
                arrays.append(image_to_uint8(image, self.image_size, self.num_channels, self.resample))
            except (ValueError, TypeError) as err:
                raise ValueError(f"images[{index}] {err}.") from err
        return torch.from_numpy(np.stack(arrays))

    def preprocess(
        self,
        images,
        return_tensors: str | None = "pt",
        do_binarize: bool | None = None,
        binarize_threshold: float | None = None,
        do_normalize: bool | None = None,
        **kwargs,
    ) -> BatchFeature:
        """
        Args:
            images: a PIL image, numpy array (HW / HWC uint8, or floats in [0, 1]), torch tensor (CHW / HWC / HW
                uint8, or floats in [0, 1]), file path or bytes; a list of those; or a 4-d batch (numpy NHWC, torch
                NCHW).
            return_tensors (`str`, defaults to `"pt"`): "pt" for a torch tensor, "np" for a numpy array.
            do_binarize, binarize_threshold, do_normalize: override the processor's settings for this call.

        Returns:
            `BatchFeature` with `pixel_values` (batch, num_channels, image_size, image_size), float32 in [0, 1], or
            normalized into the model's range with `do_normalize`.
        """
        if kwargs:
            raise ValueError(
                f"preprocess got unexpected arguments {sorted(kwargs)}; accepted: return_tensors, do_binarize, "
                "binarize_threshold, do_normalize."
            )
        if return_tensors not in _RETURN_TENSORS:
            raise ValueError(f"return_tensors must be one of {_RETURN_TENSORS}, got {return_tensors!r}.")
        do_binarize = self.do_binarize if do_binarize is None else do_binarize
        threshold = self.binarize_threshold if binarize_threshold is None else binarize_threshold
        pixel_values = uint8_to_unit(self.to_uint8(images))
        if do_binarize:
            pixel_values = binarize(pixel_values, threshold)
        if self.do_normalize if do_normalize is None else do_normalize:
            pixel_values = normalize(pixel_values, self.image_mean, self.image_std)
        if return_tensors == "np":
            pixel_values = pixel_values.numpy()
        return BatchFeature(data={"pixel_values": pixel_values})

    def postprocess(self, pixel_values, output_type: str = "pil", do_normalize: bool | None = None):
        """pixel_values (batch, C, H, W) or (C, H, W) with C in 1, 3, in the processor's range (normalized with
        `do_normalize`), back to images: the normalization undone, clamped to [0, 1], as PIL images rounded to 8
        bits (`output_type="pil"`) or as a float tensor in [0, 1] (`"pt"`)."""
        if output_type not in ("pil", "pt"):
            raise ValueError(f"output_type must be 'pil' or 'pt', got {output_type!r}.")
        pixel_values = torch.as_tensor(pixel_values).detach().float().cpu()
        if pixel_values.ndim == 3:
            pixel_values = pixel_values[None]
        if pixel_values.ndim != 4 or pixel_values.shape[1] not in _MODES:
            raise ValueError(
                f"pixel_values has shape {tuple(pixel_values.shape)}; expected (batch, C, H, W) or (C, H, W) "
                "with C in 1, 3."
            )
        if self.do_normalize if do_normalize is None else do_normalize:
            pixel_values = denormalize(pixel_values, self.image_mean, self.image_std)
        if output_type == "pt":
            return pixel_values.clamp(0, 1)
        uint8 = (pixel_values.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return [Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image) for image in uint8]


__all__ = [
    "AutoencoderImageProcessor", "binarize", "denormalize", "image_to_uint8", "normalization", "normalize",
    "to_eight_bits", "to_pil_image", "uint8_to_unit",
]
