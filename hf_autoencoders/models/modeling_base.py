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

    Args:
        loss: the training objective, a per-sample sum averaged over the batch (independent of batch size).
        reconstruction: the decoder's mean image E[x | z], shape (batch, C, H, W).
        latents: the latent vector z, shape (batch, latent_dim) (AE, VAE).
        indices: the code map of a VQ-VAE, shape (batch, h, w).
        reconstruction_loss: -log p(x | z) up to a constant (||x - g(z)||^2 / 2c for the Gaussian likelihood).
        kl_loss: KL(q(z|x) || p(z)) (VAE).
        codebook_loss: ||sg(z_e) - e||^2 (VQ-VAE).
        commitment_loss: beta * ||z_e - sg(e)||^2 (VQ-VAE).
        perplexity: exp of the entropy of the batch's code histogram (VQ-VAE).
        codebook_usage: fraction of the K codes used in the batch (VQ-VAE).
    """

    loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    latents: torch.FloatTensor | None = None
    indices: torch.LongTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    kl_loss: torch.FloatTensor | None = None
    codebook_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    perplexity: torch.FloatTensor | None = None
    codebook_usage: torch.FloatTensor | None = None


@dataclass
class EncoderOutput(ModelOutput):
    """
    The output of a deterministic encoder's `encode` (diffusers' `VQEncoderOutput`).

    Args:
        latents: z = f(x), shape (batch, latent_dim) (AE), or the unquantized grid z_e(x), shape (batch, d, h, w)
            (VQ-VAE; `decode` quantizes it).
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
        sample: the decoded image E[x | z], shape (batch, C, H, W), pixels in [0, 1] for a trained model.
        commit_loss: the commitment loss beta * ||z - sg(e)||^2 of the quantization `decode` did (VQ-VAE).
    """

    sample: torch.FloatTensor | None = None
    commit_loss: torch.FloatTensor | None = None


class AutoencoderPreTrainedModel(SavesToFolder, PreTrainedModel):
    config_class = AutoencoderConfig
    base_model_prefix = "autoencoder"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False
    # The terms of the training loss, fields of `AutoencoderOutput`; the loss is their (weighted) sum.
    loss_terms: tuple[str, ...] = ("reconstruction_loss",)

    def _init_weights(self, module):
        init_weights(module, self.config.initializer_range)

    def _build_likelihood(self):
        self.likelihood = build_likelihood(self.config)

    def check_pixel_values(self, pixel_values, name: str = "pixel_values", check_range: bool = True,
                           check_values: bool = True) -> torch.Tensor:
        """Refuse input the model cannot take, saying what was expected; return it in the model's dtype and on its
        device. Pixels must be finite and, with `check_range`, in [0, 1] (an input corrupted on purpose, such as
        the noisy input of a denoising autoencoder given with a clean target, is not range-checked). Reading the
        values (`check_values`) waits for the device; shapes and dtypes are always checked."""
        config = self.config
        expected = (config.num_channels, config.image_size, config.image_size)
        shape = f"(batch, {', '.join(map(str, expected))})"
        if not isinstance(pixel_values, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape {shape}, got {type(pixel_values).__name__}.")
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
        if not pixel_values.is_floating_point():
            raise ValueError(f"{name} must be floating point in [0, 1], got dtype {pixel_values.dtype}; "
                             "divide uint8 images by 255 or use the model's image processor.")
        if not check_values:
            return pixel_values.to(device=self.device, dtype=self.dtype)
        if not torch.isfinite(pixel_values).all():
            raise ValueError(f"{name} contains NaN or infinite values; pixel values must be finite, in [0, 1].")
        if check_range:
            low, high = pixel_values.aminmax()
            if low < 0 or high > 1:
                if low >= 0 and high > 1.5:
                    hint = " They look like 0..255 values: divide by 255, or use the model's image processor."
                elif low >= -1 and high <= 1:
                    hint = " They look like [-1, 1] values: rescale them with (x + 1) / 2."
                else:
                    hint = " Rescale the images to [0, 1], or use the model's image processor."
                raise ValueError(f"{name} must lie in [0, 1], got values in [{low.item():g}, {high.item():g}].{hint}")
        return pixel_values.to(device=self.device, dtype=self.dtype)

    def _inputs(self, pixel_values, target_pixel_values) -> tuple[torch.Tensor, torch.Tensor]:
        """(input, target) of a forward: the target defaults to the input; an input given with its own target may be
        corrupted (out of [0, 1]), the target may not. In training mode the values are read on the first batch only,
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

    def _check_latents(self, latents, size: int) -> torch.Tensor:
        """A (batch, size) latent for `decode`, in the model's dtype and on its device."""
        if not isinstance(latents, torch.Tensor) or latents.ndim != 2 or latents.shape[1] != size:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents must be a tensor of shape (batch, {size}), got {got}.")
        if not latents.is_floating_point():
            raise ValueError(f"latents must be floating point, got dtype {latents.dtype}.")
        return latents.to(device=self.device, dtype=self.dtype)

    def representation(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """What an image is in this model's latent space (what a linear probe or a latent-layout plot reads)."""
        raise NotImplementedError
