"""What every autoencoder shares: the output type, input checks, weight init and the decoder likelihood."""

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .backbones import init_weights
from .configuration_autoencoders import AutoencoderConfig
from .likelihoods import build_likelihood


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


class AutoencoderPreTrainedModel(PreTrainedModel):
    config_class = AutoencoderConfig
    base_model_prefix = "autoencoder"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False

    def _init_weights(self, module):
        init_weights(module, self.config.initializer_range)

    def _build_likelihood(self):
        self.likelihood = build_likelihood(self.config)

    def check_pixel_values(self, pixel_values, name: str = "pixel_values") -> None:
        """Refuse input the model cannot take, saying what was expected."""
        config = self.config
        expected = (config.num_channels, config.image_size, config.image_size)
        if not isinstance(pixel_values, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape (batch, {', '.join(map(str, expected))}), "
                             f"got {type(pixel_values).__name__}.")
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            hint = ""
            if pixel_values.ndim == 4 and pixel_values.shape[1] != config.num_channels:
                hint = f" (num_channels is {config.num_channels}, the input has {pixel_values.shape[1]} channels)"
            elif pixel_values.ndim == 4:
                hint = f" (image_size is {config.image_size}; resize the images or use the model's image processor)"
            raise ValueError(f"{name} must have shape (batch, {', '.join(map(str, expected))}), "
                             f"got {tuple(pixel_values.shape)}{hint}.")
        if not pixel_values.is_floating_point():
            raise ValueError(f"{name} must be floating point in [0, 1], got dtype {pixel_values.dtype}; "
                             "divide uint8 images by 255 or use the model's image processor.")
        if not torch.isfinite(pixel_values).all():
            raise ValueError(f"{name} contains NaN or infinite values; pixel values must be finite, in [0, 1].")

    def reconstruction_loss(self, target: torch.Tensor, decoder_params: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) minus its parameter-free constant, per sample."""
        return self.likelihood.nll(target, decoder_params) - self.likelihood.constant

    def _target(self, pixel_values, target_pixel_values):
        if target_pixel_values is None:
            return pixel_values
        self.check_pixel_values(target_pixel_values, "target_pixel_values")
        return target_pixel_values

    def _corrupt(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Denoising autoencoders: add N(0, noise_std^2) to the input while training; the target stays clean."""
        noise_std = getattr(self.config, "noise_std", 0.0)
        if self.training and noise_std > 0:
            return pixel_values + noise_std * torch.randn_like(pixel_values)
        return pixel_values
