"""The autoencoder: z = f(x), x_hat = g(z), trained to minimise ||x - g(f(x))||^2."""

import torch

from .backbones import build_decoder, build_encoder
from .configuration_autoencoders import AEConfig
from .modeling_base import AutoencoderOutput, AutoencoderPreTrainedModel, EncoderOutput


class AEModel(AutoencoderPreTrainedModel):
    r"""
    A deterministic autoencoder. With the default Gaussian likelihood (c = 0.5) the loss is the summed squared error
    ||x - g(f(x))||^2 per image, averaged over the batch. With `linear=True` and the MLP backbone, f and g are linear
    maps and the optimum's decoder spans the top-`latent_dim` principal subspace of the data (Baldi & Hornik, 1989).
    With `noise_std > 0` it is a denoising autoencoder: the encoder sees x + noise, the loss compares to clean x.
    """

    config_class = AEConfig

    def __init__(self, config: AEConfig):
        super().__init__(config)
        spatial = config.latent_channels is not None
        width = config.latent_channels if spatial else config.latent_dim
        self.encoder = build_encoder(config, width, spatial)
        self.decoder = build_decoder(config, width, spatial)
        self._build_likelihood()
        self.post_init()

    def encode(self, pixel_values: torch.Tensor, return_dict: bool = True) -> EncoderOutput | tuple:
        """`latents` z = f(x), shape (batch, latent_dim), or (batch, latent_channels, h, w) for a latent map."""
        latents = self._encode_pixels(self.check_pixel_values(pixel_values, any_size=True))
        return EncoderOutput(latents=latents) if return_dict else (latents,)

    def decode(self, latents: torch.Tensor, return_dict: bool = True):
        """`sample` E[x | z] = g(z) (through the likelihood's mean, e.g. a sigmoid for Bernoulli), shape
        (batch, C, H, W)."""
        latents = self._check_latents(latents, self.config.latent_shape)
        return self._decoded(self._decode_latents(latents), return_dict)

    def representation(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """z = f(x)."""
        return self.encode(pixel_values).latents

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None, prior=None) -> torch.Tensor:
        """Decode z ~ N(0, I). An AE has no prior, so this is the naive generator that the VAE's KL term makes
        meaningful: AE latents need not lie where N(0, I) puts its mass, and these images show it."""
        self._check_num_samples(num_samples)
        if prior is not None:
            raise ValueError("An AE decodes z ~ N(0, I); a learned prior over codes applies to a VQ-VAE. "
                             "Pass prior=None.")
        device = generator.device if generator is not None else self.device
        latents = torch.randn(num_samples, *self.config.latent_shape, generator=generator, device=device)
        return self.decode(latents).sample

    def forward(
        self,
        pixel_values: torch.Tensor,
        target_pixel_values: torch.Tensor | None = None,
        return_loss: bool = True,
        return_dict: bool | None = None,
        **kwargs,
    ) -> AutoencoderOutput | tuple:
        """Reconstruct `pixel_values`; the loss compares to `target_pixel_values` if given (denoising), else to
        the input itself."""
        pixel_values, target = self._inputs(pixel_values, target_pixel_values)
        latents = self.encoder(self._corrupt(pixel_values))
        decoder_params = self.decoder(latents)
        reconstruction_loss = self.reconstruction_loss(target, decoder_params).mean() if return_loss else None
        output = AutoencoderOutput(
            loss=reconstruction_loss,
            reconstruction=self.likelihood.mean(decoder_params),
            latents=latents,
            reconstruction_loss=reconstruction_loss,
        )
        return self._return(output, return_dict)
