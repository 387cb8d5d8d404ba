"""`ImageCollator`: dataset items -> the batch a model takes."""

from dataclasses import dataclass, fields

import torch

from ..models.image_processing_autoencoders import binarize, normalization, normalize, uint8_to_unit


@dataclass
class ImageCollator:
    """
    Stacks dataset items into `{"pixel_values": float32 (B, C, H, W)}`, x = k / 255 for uint8 pixels k
    (float pixels are taken as already in [0, 1]); `binarize` maps x to 1[x > binarize_threshold], or, with
    `stochastic_binarization`, draws a fresh x' ~ Bernoulli(x) for every batch (the dynamic binarization of MNIST used
    by the IWAE paper and most VAE likelihood results). The pixels are then mapped into the model's `pixel_range`
    ((0, 1) or (-1, 1)) by the image processor's normalization, so that a batch holds what `processor(images)` gives.
    Items may be dicts with "pixel_values" or bare tensors. "labels" (long (B,)) is emitted only with
    `return_labels=True`.
    """

    return_labels: bool = False
    binarize: bool = False
    binarize_threshold: float = 0.5
    stochastic_binarization: bool = False
    pixel_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self):
        self._normalization = normalization(self.pixel_range)  # refuses a range no model has

    def __repr__(self) -> str:
        """The dataclass's repr, naming the pixel range only where it is not [0, 1], so that a cache key made of it
        before the range existed stays the same."""
        shown = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                 if f.name != "pixel_range" or tuple(self.pixel_range) != (0.0, 1.0)]
        return f"{type(self).__name__}({', '.join(shown)})"

    def __call__(self, features: list) -> dict[str, torch.Tensor]:
        if len(features) == 0:
            raise ValueError("Cannot collate an empty batch.")
        images = [f["pixel_values"] if isinstance(f, dict) else f for f in features]
        images = torch.stack([torch.as_tensor(image) for image in images])
        pixel_values = uint8_to_unit(images) if images.dtype == torch.uint8 else images.float()
        if self.binarize and self.stochastic_binarization:
            pixel_values = torch.bernoulli(pixel_values)
        elif self.binarize:
            pixel_values = binarize(pixel_values, self.binarize_threshold)
        if self._normalization["do_normalize"]:
            pixel_values = normalize(pixel_values, self._normalization["image_mean"], self._normalization["image_std"])
        batch = {"pixel_values": pixel_values}
        if self.return_labels:
            if not all(isinstance(f, dict) and "labels" in f for f in features):
                raise ValueError("return_labels=True, but some items have no 'labels' (the dataset has no labels).")
            batch["labels"] = torch.stack([torch.as_tensor(f["labels"]) for f in features]).long()
        return batch


def collate_fn(features: list) -> dict[str, torch.Tensor]:
    """`ImageCollator()` as a plain function: uint8 items -> {"pixel_values": float in [0, 1]}."""
    return ImageCollator()(features)
