"""What every autoencoder shares: the output types, the encode/decode contract, input checks, weight init and the
decoder likelihood.

The contract is the one of diffusers' `AutoencoderKL` and `VQModel`, so code written for those drives these models:

    model.encode(pixel_values).latent_dist.sample()      # VAE: q(z|x), a `DiagonalGaussian` (`PosteriorOutput`)
    model.encode(pixel_values).latents                   # AE: z = f(x); VQ-VAE: the grid z_e(x) (`EncoderOutput`)
    model.decode(z).sample                               # the image E[x | z], shape (batch, C, H, W)
    model.decode(z, return_dict=False)[0]                # tuples wherever return_dict=False

and beyond it every family says what it is: `config.display_name`, `model.loss_terms` (the terms of its loss),
`model.representation(pixel_values)` (what an image is in its latent space) and `model.sample(num_samples)` (how it
generates).

Pixels are in the model's range, `config.pixel_range`: (0, 1), or (-1, 1) as diffusers' pipelines expect;
`model.to_model_range(images)` and `model.to_unit_range(pixel_values)` map [0, 1] images into it and back. As in
diffusers, `enable_slicing()` makes `encode` and `decode` run one image at a time, and `enable_tiling()` runs them on
overlapping tiles of the training size, blended, so that images larger than it take the memory of one tile.
"""

from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .backbones import init_weights
from .configuration_autoencoders import AutoencoderConfig
from .likelihoods import build_likelihood
from .saving import SavesToFolder


@dataclass
class AutoencoderOutput(ModelOutput):
    """
    The one output of every autoencoder's forward.

    Its first field is `latents`, an image's features: what transformers' "image-feature-extraction" pipeline
    returns (it reads the first value of the output's fields). As a tuple (`return_dict=False`, or `output[0]`) the
    loss comes first, as the Trainer and transformers' models have it: (loss, reconstruction, latents, indices, ...).

    Args:
        latents: the latent the decoder read: z, shape (batch, latent_dim) (AE, VAE: a draw from q(z|x)), or the
            quantized grid z_q, shape (batch, embedding_dim, h, w) (VQ-VAE).
        loss: the training objective, a per-sample sum averaged over the batch (independent of batch size).
        reconstruction: the decoder's mean image E[x | z], shape (batch, C, H, W), in the model's pixel range.
        latents: the latent z (AE, VAE): a vector (batch, latent_dim), or a map (batch, latent_channels, h, w).
        indices: the code map of a VQ-VAE, shape (batch, h, w), or (batch, n, h, w) for residual quantization of
            depth n > 1.
        reconstruction_loss: -log p(x | z) up to a constant (||x - g(z)||^2 / 2c for the Gaussian likelihood).
        kl_loss: KL(q(z|x) || p(z)) (VAE).
        codebook_loss: ||sg(z_e) - e||^2 (VQ-VAE).
        commitment_loss: beta * ||z_e - sg(e)||^2 (VQ-VAE).
        entropy_loss: the entropy penalty of lookup-free quantization (VQ-VAE with quantizer="lfq").
        perplexity: exp of the entropy of the batch's code histogram (VQ-VAE).
        codebook_usage: fraction of the K codes used in the batch (VQ-VAE).
    """

    latents: torch.FloatTensor | None = None
    loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    indices: torch.LongTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    kl_loss: torch.FloatTensor | None = None
    codebook_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    entropy_loss: torch.FloatTensor | None = None
    perplexity: torch.FloatTensor | None = None
    codebook_usage: torch.FloatTensor | None = None

    def to_tuple(self) -> tuple:
        """The fields that are not None, the loss first: (loss, reconstruction, latents, indices, ...)."""
        first = [name for name in ("loss", "reconstruction", "latents") if name in self]
        return tuple(self[name] for name in first + [name for name in self.keys() if name not in first])


@dataclass
class EncoderOutput(ModelOutput):
    """
    The output of a deterministic encoder's `encode` (diffusers' `VQEncoderOutput`).

    Args:
        latents: z = f(x), shape (batch, latent_dim) or (batch, latent_channels, h, w) (AE), or the unquantized
            grid z_e(x), shape (batch, d, h, w) (VQ-VAE; `decode` quantizes it).
    """

    latents: torch.FloatTensor | None = None


@dataclass
class PosteriorOutput(ModelOutput):
    """
    The output of a VAE's `encode` (diffusers' `AutoencoderKLOutput`). Only this output has `latent_dist`, so code
    that asks `hasattr(output, "latent_dist")`, as diffusers' pipelines do, tells the two apart.

    Args:
        latent_dist: the approximate posterior q(z|x): a `DiagonalGaussian` with a reparameterized
            `sample(generator)`, `mode()`, `mean`, `std`, `kl()` and `nll()`.
    """

    latent_dist: Any = None


@dataclass
class DecoderOutput(ModelOutput):
    """
    The output of `decode` (diffusers' `DecoderOutput`).

    Args:
        sample: the decoded image E[x | z], shape (batch, C, H, W), pixels in the model's range
            (`config.pixel_range`) for a trained model.
        commit_loss: the commitment loss beta * ||z - sg(e)||^2 of the quantization `decode` did (VQ-VAE).
    """

    sample: torch.FloatTensor | None = None
    commit_loss: torch.FloatTensor | None = None


class AutoencoderPreTrainedModel(SavesToFolder, PreTrainedModel):
    config_class = AutoencoderConfig
    base_model_prefix = "autoencoder"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    # The terms of the training loss, fields of `AutoencoderOutput`; the loss is their (weighted) sum.
    loss_terms: tuple[str, ...] = ("reconstruction_loss",)
    # The diffusers class of the same layout (with the ldm backbone), if there is one (`diffusers_compat`).
    diffusers_class: str | None = None
    use_slicing = False
    use_tiling = False

    @property
    def supports_gradient_checkpointing(self) -> bool:
        """Every backbone but the MLP has repeated blocks to checkpoint (see `backbones`)."""
        return self.config.backbone != "mlp"

    def _init_weights(self, module):
        init_weights(module, self.config.initializer_range)

    def _build_likelihood(self):
        self.likelihood = build_likelihood(self.config)

    def to_model_range(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> the model's pixel range (`config.pixel_range`): x -> low + (high - low) x."""
        low, high = self.config.pixel_range
        return images if (low, high) == (0.0, 1.0) else images * (high - low) + low

    def to_unit_range(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixels in the model's range (its inputs, reconstructions, samples) -> [0, 1], unclamped: the inverse of
        `to_model_range`, for metrics, plots and saved images."""
        low, high = self.config.pixel_range
        return pixel_values if (low, high) == (0.0, 1.0) else (pixel_values - low) / (high - low)

    @property
    def fully_convolutional(self) -> bool:
        """Whether encoder and decoder are convolutions throughout (the conv and ldm backbones with a latent map), so
        that `encode` and `decode` take images of any size whose sides are multiples of f, and tiling applies."""
        return self.config.backbone in ("conv", "ldm") and self.config.spatial_latent

    def check_pixel_values(self, pixel_values, name: str = "pixel_values", check_range: bool = True,
                           check_values: bool = True, any_size: bool = False) -> torch.Tensor:
        """Refuse input the model cannot take, saying what was expected; return it in the model's dtype and on its
        device. Pixels must be finite and, with `check_range`, in the model's pixel range (an input corrupted on
        purpose, such as the noisy input of a denoising autoencoder given with a clean target, is not range-checked).
        Reading the values (`check_values`) waits for the device; shapes and dtypes are always checked. With
        `any_size`, a fully convolutional model takes any height and width that are multiples of f."""
        config = self.config
        low, high = config.pixel_range
        expected = (config.num_channels, config.image_size, config.image_size)
        shape = f"(batch, {', '.join(map(str, expected))})"
        if not isinstance(pixel_values, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape {shape}, got {type(pixel_values).__name__}.")
        if any_size and self.fully_convolutional and pixel_values.ndim == 4:
            factor = config.downsampling_factor
            if pixel_values.shape[1] == config.num_channels and all(
                    side > 0 and side % factor == 0 for side in pixel_values.shape[2:]):
                expected = tuple(pixel_values.shape[1:])
            else:
                shape = f"(batch, {config.num_channels}, H, W) with H and W multiples of {factor}"
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            hint = ""
            if pixel_values.ndim == 4 and pixel_values.shape[1] != config.num_channels:
                hint = f" (num_channels is {config.num_channels}, the input has {pixel_values.shape[1]} channels)"
            elif pixel_values.ndim == 4:
                hint = f" (image_size is {config.image_size}; resize the images or use the model's image processor)"
            elif pixel_values.ndim == 3 and tuple(pixel_values.shape) == expected:
                hint = "; for one image, add the batch dimension with pixel_values[None]"
            raise ValueError(f"{name} must have shape {shape}, got {tuple(pixel_values.shape)}{hint}.")
        if pixel_values.shape[0] == 0:
            raise ValueError(f"{name} is an empty batch (shape {tuple(pixel_values.shape)}); pass at least one image.")
        if pixel_values.is_meta:
            raise ValueError(f"{name} is on the meta device and holds no values; pass a tensor with data.")
        expected_range = f"[{low:g}, {high:g}]"
        if not pixel_values.is_floating_point():
            how = ("divide uint8 images by 255" if (low, high) == (0.0, 1.0)
                   else "map uint8 images with model.to_model_range(images / 255)")
            raise ValueError(f"{name} must be floating point in {expected_range}, got dtype {pixel_values.dtype}; "
                             f"{how} or use the model's image processor.")
        if not check_values:
            return pixel_values.to(device=self.device, dtype=self.dtype)
        if not torch.isfinite(pixel_values).all():
            raise ValueError(f"{name} contains NaN or infinite values; pixel values must be finite, in "
                             f"{expected_range}.")
        if check_range:
            smallest, largest = (value.item() for value in pixel_values.aminmax())
            if smallest < low or largest > high:
                if smallest >= 0 and largest > 1.5:
                    how = "divide by 255" if (low, high) == (0.0, 1.0) else "map them with model.to_model_range(x / 255)"
                    hint = f" They look like 0..255 values: {how}, or use the model's image processor."
                elif smallest >= -1 and largest <= 1:
                    hint = " They look like [-1, 1] values: map them with (x + 1) / 2 (model.to_unit_range)."
                else:
                    hint = f" Rescale the images to {expected_range}, or use the model's image processor."
                raise ValueError(f"{name} must lie in the model's pixel range {expected_range} (config.pixel_range), "
                                 f"got values in [{smallest:g}, {largest:g}].{hint}")
        return pixel_values.to(device=self.device, dtype=self.dtype)

    def _inputs(self, pixel_values, target_pixel_values) -> tuple[torch.Tensor, torch.Tensor]:
        """(input, target) of a forward: the target defaults to the input; an input given with its own target may be
        corrupted (out of the pixel range), the target may not. In training mode the values are read on the first batch only,
        so that the steps after it run without a host sync (a non-finite loss is the Trainer's to catch)."""
        values = not (self.training and getattr(self, "_checked_training_values", False))
        if target_pixel_values is None:
            pixel_values = target = self.check_pixel_values(pixel_values, check_values=values)
        else:
            target = self.check_pixel_values(target_pixel_values, "target_pixel_values", check_values=values)
            pixel_values = self.check_pixel_values(pixel_values, check_range=False, check_values=values)
        self._checked_training_values = self.training  # only once a batch has passed
        if pixel_values.shape[0] != target.shape[0]:
            raise ValueError(f"target_pixel_values has {target.shape[0]} images, pixel_values {pixel_values.shape[0]}.")
        return pixel_values, target

    def reconstruction_loss(self, target: torch.Tensor, decoder_params: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) minus its parameter-free constant, per sample."""
        return self.likelihood.nll(target, decoder_params) - self.likelihood.constant

    def _corrupt(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Denoising autoencoders: add N(0, noise_std^2) to the input while training; the target stays clean."""
        noise_std = getattr(self.config, "noise_std", 0.0)
        if self.training and noise_std > 0:
            return pixel_values + noise_std * torch.randn_like(pixel_values)
        return pixel_values

    def _decoded(self, decoder_params: torch.Tensor, return_dict: bool, commit_loss=None):
        sample = self.likelihood.mean(decoder_params)
        return DecoderOutput(sample=sample, commit_loss=commit_loss) if return_dict else (sample,)

    def _return(self, output: ModelOutput, return_dict: bool | None):
        """`output`, or its tuple of non-None fields when return_dict is False (default: config.return_dict)."""
        return_dict = self.config.return_dict if return_dict is None else return_dict
        return output if return_dict else output.to_tuple()

    @staticmethod
    def _check_num_samples(num_samples) -> None:
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")

    def _check_latents(self, latents, shape: tuple[int, ...]) -> torch.Tensor:
        """A latent of shape (batch, *shape) for `decode`, in the model's dtype and on its device; a fully
        convolutional model takes latent maps of any height and width."""
        ok = isinstance(latents, torch.Tensor) and latents.ndim == len(shape) + 1 and latents.shape[1] == shape[0]
        if ok and not (self.fully_convolutional and len(shape) == 3 and min(latents.shape[2:]) > 0):
            ok = tuple(latents.shape[1:]) == tuple(shape)
        if not ok:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents must be a tensor of shape (batch, {', '.join(map(str, shape))}), got {got}.")
        if not latents.is_floating_point():
            raise ValueError(f"latents must be floating point, got dtype {latents.dtype}.")
        return latents.to(device=self.device, dtype=self.dtype)

    def freeze_encoder(self) -> None:
        """Train the decoder only: the encoder (with its `quant_conv`) and a VQ-VAE's codebook stop learning and stay
        in eval mode (no codebook updates), so that the latents of every image stay what they were, and a
        diffusion model trained on them stays valid (as the fine-tuned decoders of Stable Diffusion's VAE were made).
        Frozen parts are not saved as such: a reloaded model trains whole."""
        self._frozen = [module for module in (self.encoder, getattr(self, "quantizer", None)) if module is not None]
        for module in self._frozen:
            module.requires_grad_(False)
            module.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        for module in getattr(self, "_frozen", ()):
            module.eval()
        return self

    # ------------------------------------------------------------------------------------------ slicing and tiling

    def enable_slicing(self) -> None:
        """`encode` and `decode` run one image of the batch at a time (less memory for large batches)."""
        self.use_slicing = True

    def disable_slicing(self) -> None:
        self.use_slicing = False

    def enable_tiling(self, tile_size: int | None = None, tile_overlap: float = 0.25) -> None:
        """`encode` and `decode` of images larger than `tile_size` pixels (default: the training size,
        `config.image_size`) run on overlapping tile_size x tile_size tiles (tile_size / f latents), a fraction
        `tile_overlap` of a tile overlapping its neighbour; the outputs are blended with weights that ramp linearly
        across each overlap. Memory is that of one tile whatever the image size. GroupNorm statistics are per tile,
        so the result is close to, not equal to, the untiled one. Needs a fully convolutional model (conv or ldm
        backbone with a latent map)."""
        if not self.fully_convolutional:
            raise ValueError("Tiling needs a fully convolutional model (backbone 'conv' or 'ldm' with a latent map, "
                             f"latent_channels set); this one has backbone={self.config.backbone!r} and a "
                             f"{'vector latent' if self.config.backbone in ('conv', 'ldm') else 'fixed input size'}.")
        factor = self.config.downsampling_factor
        tile_size = self.config.image_size if tile_size is None else tile_size
        if not isinstance(tile_size, int) or tile_size < factor or tile_size % factor:
            raise ValueError(f"tile_size must be a positive multiple of f={factor}, got {tile_size!r}.")
        if not 0 <= tile_overlap < 1:
            raise ValueError(f"tile_overlap must be in [0, 1), got {tile_overlap!r}.")
        tile = tile_size // factor
        overlap = min(tile - 1, round(tile * tile_overlap))
        self.tile_latent_size, self.tile_latent_stride = tile, tile - overlap
        self.use_tiling = True

    def disable_tiling(self) -> None:
        self.use_tiling = False

    def _encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The encoder's output for `encode`: per image with slicing, per tile with tiling."""
        if self.use_slicing and pixel_values.shape[0] > 1:
            return torch.cat([self._encode_pixels(image) for image in pixel_values.split(1)])
        factor = self.config.downsampling_factor
        if self.use_tiling and max(pixel_values.shape[2:]) > self.tile_latent_size * factor:
            return _tiled(self.encoder, pixel_values, self.tile_latent_size * factor,
                          self.tile_latent_stride * factor, 1, factor)
        return self.encoder(pixel_values)

    def _decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """The decoder's output for `decode`: per image with slicing, per tile with tiling."""
        if self.use_slicing and latents.shape[0] > 1:
            return torch.cat([self._decode_latents(latent) for latent in latents.split(1)])
        if self.use_tiling and latents.ndim == 4 and max(latents.shape[2:]) > self.tile_latent_size:
            return _tiled(self.decoder, latents, self.tile_latent_size, self.tile_latent_stride,
                          self.config.downsampling_factor, 1)
        return self.decoder(latents)

    def representation(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """What an image is in this model's latent space (what a linear probe or a latent-layout plot reads)."""
        raise NotImplementedError


def _tile_starts(size: int, tile: int, stride: int) -> list[int]:
    """Where tiles of `tile` start along a side of `size`, every `stride`, the last one flush with the end."""
    if size <= tile:
        return [0]
    return [*range(0, size - tile, stride), size - tile]


def _ramp(length: int, blend: int, before: bool, after: bool, reference: torch.Tensor) -> torch.Tensor:
    """Blending weights along one side of a tile: rising linearly over the first `blend` entries where a tile
    overlaps it before, falling over the last `blend` where one overlaps it after, 1 elsewhere (never 0)."""
    weight = torch.ones(length, dtype=reference.dtype, device=reference.device)
    if blend > 0:
        rise = (torch.arange(blend, dtype=reference.dtype, device=reference.device) + 0.5) / blend
        if before:
            weight[:blend] = torch.minimum(weight[:blend], rise)
        if after:
            weight[-blend:] = torch.minimum(weight[-blend:], rise.flip(0))
    return weight


def _tiled(module, inputs: torch.Tensor, tile: int, stride: int, up: int, down: int) -> torch.Tensor:
    """`module` applied to overlapping tile x tile windows of `inputs` (batch, C, H, W), starting every `stride`;
    each output is up / down times the size of its window, and the outputs are blended with linear ramps across
    the overlaps (weights normalised to sum to one at every position)."""
    height, width = inputs.shape[-2:]
    rows, columns = _tile_starts(height, tile, stride), _tile_starts(width, tile, stride)
    blend = (tile - stride) * up // down
    out = weights = None
    for i, top in enumerate(rows):
        for j, left in enumerate(columns):
            piece = module(inputs[..., top : top + tile, left : left + tile])
            if out is None:
                out = piece.new_zeros(*piece.shape[:2], height * up // down, width * up // down)
                weights = piece.new_zeros(out.shape[-2:])
            rows_weight = _ramp(piece.shape[-2], blend, i > 0, i < len(rows) - 1, piece)
            columns_weight = _ramp(piece.shape[-1], blend, j > 0, j < len(columns) - 1, piece)
            weight = rows_weight[:, None] * columns_weight[None, :]
            y, x = top * up // down, left * up // down
            out[..., y : y + piece.shape[-2], x : x + piece.shape[-1]] += piece * weight
            weights[y : y + piece.shape[-2], x : x + piece.shape[-1]] += weight
    return out / weights
