"""The VQ-VAE: a grid of encoder vectors z_e snapped to a learned codebook, decoded from the codes."""

import torch

from .backbones import build_decoder, build_encoder
from .configuration_autoencoders import VQVAEConfig
from .modeling_base import AutoencoderOutput, AutoencoderPreTrainedModel
from .quantizers import build_quantizer


class VQVAEModel(AutoencoderPreTrainedModel):
    r"""
    A VQ-VAE (van den Oord et al., 2017). The encoder gives z_e(x), a grid of d-dimensional vectors; each is replaced
    by its nearest codebook entry e_k of the K x d codebook, z_q = e_argmin_k ||z_e - e_k||; the decoder reconstructs
    from the straight-through input z_e + sg(z_q - z_e), whose value is z_q and whose gradient is that of z_e. Loss:

        -log p(x | z_q) + ||sg(z_e) - e||^2 + beta ||z_e - sg(e)||^2,

    the codebook loss moving the codes toward the encoder outputs and the commitment loss (beta = 0.25) keeping
    the encoder close to its codes. (With `codebook_ema=True` the codes are moving averages instead.) The prior over
    codes is uniform while training the autoencoder; `sample` draws from it or from a learned prior.
    """

    config_class = VQVAEConfig

    def __init__(self, config: VQVAEConfig):
        super().__init__(config)
        self.encoder = build_encoder(config, config.embedding_dim, spatial=True)
        self.quantizer = build_quantizer(config)
        self.decoder = build_decoder(config, config.embedding_dim, spatial=True)
        self._build_likelihood()
        self.post_init()

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """z_e(x), the unquantized encoder output, shape (batch, d, h, w)."""
        self.check_pixel_values(pixel_values)
        return self.encoder(pixel_values)

    def quantize(self, latents: torch.Tensor):
        """Snap z_e to the codebook: a `QuantizerOutput` with the straight-through `quantized`, `indices`, losses."""
        return self.quantizer(latents)

    def decode(self, quantized: torch.Tensor) -> torch.Tensor:
        """E[x | z_q], shape (batch, C, H, W)."""
        return self.likelihood.mean(self.decoder(quantized))

    def encode_indices(self, pixel_values: torch.Tensor) -> torch.LongTensor:
        """The code map of each image, shape (batch, h, w)."""
        return self.quantize(self.encode(pixel_values)).indices

    def decode_indices(self, indices: torch.LongTensor) -> torch.Tensor:
        """Images from code maps of shape (batch, h, w)."""
        grid, num_embeddings = self.config.latent_grid_size, self.config.num_embeddings
        if indices.ndim != 3 or tuple(indices.shape[1:]) != (grid, grid):
            raise ValueError(f"indices must have shape (batch, {grid}, {grid}), got {tuple(indices.shape)}.")
        if indices.numel() and (indices.min() < 0 or indices.max() >= num_embeddings):
            raise ValueError(f"indices must lie in [0, {num_embeddings}), got values in "
                             f"[{int(indices.min())}, {int(indices.max())}].")
        return self.decode(self.quantizer.embed(indices.to(self.device)))

    @torch.no_grad()
    def sample(
        self, num_samples: int, generator: torch.Generator | None = None, prior=None, temperature: float = 1.0
    ) -> torch.Tensor:
        """Images from code maps drawn from `prior` (a `PixelCNNPriorModel`), or uniformly at random if None — the
        VQ-VAE's own training prior, which generates poorly: codes are strongly dependent in real images."""
        if prior is None:
            grid = self.config.latent_grid_size
            indices = torch.randint(
                self.config.num_embeddings, (num_samples, grid, grid), generator=generator, device=generator.device
                if generator is not None else self.device,
            )
        else:
            indices = prior.generate(num_samples, temperature=temperature, generator=generator)
        return self.decode_indices(indices)

    def forward(
        self,
        pixel_values: torch.Tensor,
        target_pixel_values: torch.Tensor | None = None,
        return_loss: bool = True,
        return_dict: bool | None = None,
        **kwargs,
    ) -> AutoencoderOutput:
        self.check_pixel_values(pixel_values)
        target = self._target(pixel_values, target_pixel_values)
        quantized = self.quantize(self.encoder(self._corrupt(pixel_values)))
        decoder_params = self.decoder(quantized.quantized)
        reconstruction_loss = self.reconstruction_loss(target, decoder_params).mean()
        loss = reconstruction_loss + quantized.codebook_loss + quantized.commitment_loss
        return AutoencoderOutput(
            loss=loss if return_loss else None,
            reconstruction=self.likelihood.mean(decoder_params),
            indices=quantized.indices,
            reconstruction_loss=reconstruction_loss,
            codebook_loss=quantized.codebook_loss,
            commitment_loss=quantized.commitment_loss,
            perplexity=quantized.perplexity,
            codebook_usage=quantized.codebook_usage,
        )
