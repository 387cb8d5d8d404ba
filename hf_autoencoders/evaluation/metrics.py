"""Metrics of images and codes, each with one definition: MSE, PSNR, SSIM, nats -> bits/dim, codebook usage.

Images are float tensors (batch, channels, height, width) with values in [0, 1] (uint8 pixels k are read as k / 255).
Per-image values are averaged over the batch unless `reduction="none"`.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from ..models import code_statistics


def as_images(x, name: str = "images") -> torch.Tensor:
    """A 4-d image batch; uint8 pixels k become k / 255 (float32), as the collator does; floats are kept."""
    x = torch.as_tensor(x)
    if x.dim() != 4:
        raise ValueError(f"{name} must be a 4-d tensor (batch, channels, height, width); got shape {tuple(x.shape)}")
    return x.float() / 255.0 if x.dtype == torch.uint8 else x


def to_model_range(model, images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] in the model's pixel range (`model.to_model_range`; as they are for a model without one)."""
    return model.to_model_range(images) if hasattr(model, "to_model_range") else images


def unit_images(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """A model's output images (reconstructions, samples) in [0, 1], clamped, float32: what metrics, features and
    plots read."""
    pixel_values = pixel_values.float()
    return (model.to_unit_range(pixel_values) if hasattr(model, "to_unit_range") else pixel_values).clamp(0, 1)


def model_and_unit_images(model, x, name: str = "pixel_values") -> tuple[torch.Tensor, torch.Tensor]:
    """A batch as (the model's input, in its pixel range; the same images in [0, 1], what metrics read): uint8
    pixels k are k / 255 mapped into the model's range; float pixels are taken as already in it, as the training
    collator gives them."""
    x = torch.as_tensor(x)
    if x.dtype == torch.uint8:
        unit = as_images(x, name)
        return to_model_range(model, unit), unit
    x = as_images(x, name)
    return x, (model.to_unit_range(x) if hasattr(model, "to_unit_range") else x)


def model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model):
    """`model` in eval mode under `torch.no_grad()`, its previous mode restored afterwards."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        if was_training:
            model.train()


def _check_pair(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = as_images(x, "x"), as_images(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape; got {tuple(x.shape)} and {tuple(y.shape)}")
    return x, y


def _reduce(values: torch.Tensor, reduction: str):
    if reduction == "mean":
        return values.mean().item()
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be 'mean' or 'none'; got {reduction!r}")


def mse(x, y, reduction: str = "mean"):
    """Mean squared error per pixel, (1/CHW) sum (x - y)^2, per image; averaged over the batch by default."""
    x, y = _check_pair(x, y)
    return _reduce((x.double() - y.double()).pow(2).flatten(1).mean(1), reduction)


def psnr(x, y, data_range: float = 1.0, reduction: str = "mean"):
    """Peak signal-to-noise ratio in dB, 10 log10(data_range^2 / MSE), computed per image (torchmetrics) and then
    averaged.

    Averaging per-image PSNRs (rather than taking the PSNR of the pooled MSE) is the usual convention in image
    restoration papers. An image identical to its reference has MSE 0 and PSNR ``inf``; the mean is then ``inf``
    too, so a perfect reconstruction is visible rather than hidden behind an arbitrary cap.
    """
    x, y = _check_pair(x, y)
    if data_range <= 0:
        raise ValueError(f"data_range must be positive; got {data_range}")
    values = peak_signal_noise_ratio(y.double(), x.double(), data_range=data_range, reduction="none", dim=(1, 2, 3))
    return _reduce(values, reduction)


SSIM_SIGMA = 1.5  # of the Gaussian window; torchmetrics truncates it at 3.5 sigma: an 11 x 11 window
SSIM_BORDER = 5  # the window's radius


def ssim(x, y, data_range: float = 1.0, reduction: str = "mean"):
    """Structural similarity (Wang, Bovik, Sheikh & Simoncelli, 2004) with an 11 x 11 Gaussian window of standard
    deviation 1.5 (torchmetrics' map). With local statistics mu, sigma^2 and the covariance sigma_xy under the window,

        SSIM = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)),

    with C1 = (0.01 L)^2, C2 = (0.03 L)^2 and L = ``data_range``. The map is averaged over the positions where the
    window lies inside the image (as in the reference implementation; torchmetrics' own mean also counts the
    reflect-padded border), then over channels, per image. An image smaller than the window uses a uniform window as
    large as the image (the largest odd size that fits), averaged over the whole map. Values lie in [-1, 1];
    SSIM(x, x) = 1.
    """
    x, y = _check_pair(x, y)
    if data_range <= 0:
        raise ValueError(f"data_range must be positive; got {data_range}")
    size = min(x.shape[-2:])
    fits = size > 2 * SSIM_BORDER
    window = {} if fits else {"gaussian_kernel": False, "kernel_size": size - 1 + size % 2}
    _, ssim_map = structural_similarity_index_measure(y.double(), x.double(), sigma=SSIM_SIGMA, data_range=data_range,
                                                      reduction="none", return_full_image=True, **window)
    if fits:
        ssim_map = ssim_map[..., SSIM_BORDER:-SSIM_BORDER, SSIM_BORDER:-SSIM_BORDER]
    return _reduce(ssim_map.flatten(1).mean(1), reduction)


def nats_to_bits_per_dim(nll, num_dims: int):
    """Convert a negative log-likelihood in nats per image into bits per dimension: nll / (num_dims * ln 2).

    ``num_dims`` is the number of modelled values per image (channels * height * width). The result is a meaningful
    code length only for a *discrete* likelihood (a discretized logistic over 8-bit pixels, or a Bernoulli over
    binarized pixels): a continuous density (e.g. the fixed-variance Gaussian) on [0, 1]-scaled data is not a
    probability, can be negative, and is not comparable with the bits/dim reported in the literature.
    Accepts a float, a numpy array or a tensor and returns the same kind.
    """
    if num_dims < 1:
        raise ValueError(f"num_dims must be a positive integer; got {num_dims}")
    return nll / (num_dims * math.log(2))



class CodebookUsage:
    """Accumulates a histogram of VQ code indices over a whole evaluation set.

    ``compute()`` returns the perplexity exp(H(p)) of the empirical code distribution p (``num_embeddings`` when all
    codes are used uniformly, 1 when a single code is used), the entropy H(p) in nats, the fraction of the codebook
    that was used at least once, and the counts behind them.
    """

    def __init__(self, num_embeddings: int):
        if not isinstance(num_embeddings, int) or num_embeddings < 1:
            raise ValueError(f"num_embeddings must be a positive integer; got {num_embeddings!r}")
        self.num_embeddings = num_embeddings
        self.counts = torch.zeros(num_embeddings, dtype=torch.long)

    def update(self, indices) -> CodebookUsage:
        indices = torch.as_tensor(indices).flatten().long().cpu()
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.num_embeddings):
            raise ValueError(
                f"indices must lie in [0, {self.num_embeddings}); got values in "
                f"[{indices.min().item()}, {indices.max().item()}]"
            )
        self.counts += torch.bincount(indices, minlength=self.num_embeddings)
        return self

    def compute(self) -> dict[str, float]:
        total = int(self.counts.sum())
        if total == 0:
            raise ValueError("CodebookUsage.compute() needs at least one index; update() was never given any")
        stats = {name: value.item() for name, value in code_statistics(self.counts).items()}
        stats["entropy"] += 0.0  # no "-0.0" for a single code
        return {**stats, "num_used": int((self.counts > 0).sum()), "num_tokens": total}


def codebook_stats(indices, num_embeddings: int) -> dict[str, float]:
    """Codebook perplexity and usage over a tensor of indices or an iterable of index tensors (see CodebookUsage)."""
    usage = CodebookUsage(num_embeddings)
    for chunk in [indices] if torch.is_tensor(indices) or isinstance(indices, np.ndarray) else indices:
        usage.update(chunk)
    return usage.compute()
