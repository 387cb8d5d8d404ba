"""The VQ-VAE: a grid of encoder vectors z_e snapped to a learned codebook, decoded from the codes."""

import torch

from .backbones import build_decoder, build_encoder
from .code_priors import check_prior_fits, sample_codes
from .configuration_autoencoders import VQVAEConfig
from .modeling_base import AutoencoderOutput, AutoencoderPreTrainedModel, EncoderOutput
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
    loss_terms = ("reconstruction_loss", "codebook_loss", "commitment_loss")

    def __init__(self, config: VQVAEConfig):
        super().__init__(config)
        self.encoder = build_encoder(config, config.embedding_dim, spatial=True)
        self.quantizer = build_quantizer(config)
        self.decoder = build_decoder(config, config.embedding_dim, spatial=True)
        self._build_likelihood()
        self.post_init()

    def encode(self, pixel_values: torch.Tensor, return_dict: bool = True) -> EncoderOutput | tuple:
        """`latents`: z_e(x), the unquantized encoder output, shape (batch, d, h, w) (`decode` quantizes it)."""
        latents = self.encoder(self.check_pixel_values(pixel_values))
        return EncoderOutput(latents=latents) if return_dict else (latents,)

    def quantize(self, latents: torch.Tensor):
        """Snap z_e to the codebook: a `QuantizerOutput` with the straight-through `quantized`, `indices`, losses."""
        return self.quantizer(latents)

    def decode(self, latents: torch.Tensor, force_not_quantize: bool = False, return_dict: bool = True):
        """`sample` E[x | z_q], shape (batch, C, H, W), from a grid of shape (batch, d, h, w). As in diffusers'
        `VQModel`, the grid is quantized first (and `commit_loss` reported) unless `force_not_quantize`, which
        decodes it as given (e.g. codes already looked up, or a point between codes)."""
        grid = self.config.latent_grid_size
        expected = (self.config.embedding_dim, grid, grid)
        if not isinstance(latents, torch.Tensor) or latents.ndim != 4 or tuple(latents.shape[1:]) != expected:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents must be a tensor of shape (batch, {', '.join(map(str, expected))}), got {got}.")
        latents = latents.to(device=self.device, dtype=self.dtype)
        commit_loss = None
        if not force_not_quantize:
            quantized = self.quantize(latents)
            latents, commit_loss = quantized.quantized, quantized.commitment_loss
        return self._decoded(self.decoder(latents), return_dict, commit_loss)

    def representation(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """z_q, the quantized grid the decoder reads, shape (batch, d, h, w)."""
        return self.quantize(self.encode(pixel_values).latents).quantized

    def encode_indices(self, pixel_values: torch.Tensor) -> torch.LongTensor:
        """The code map of each image, shape (batch, h, w)."""
        return self.quantize(self.encode(pixel_values).latents).indices

    def decode_indices(self, indices: torch.LongTensor) -> torch.Tensor:
        """Images from code maps of shape (batch, h, w)."""
        grid, num_embeddings = self.config.latent_grid_size, self.config.num_embeddings
        if not isinstance(indices, torch.Tensor) or indices.is_floating_point():
            raise ValueError(f"indices must be an integer tensor of shape (batch, {grid}, {grid}).")
        if indices.ndim != 3 or tuple(indices.shape[1:]) != (grid, grid):
            raise ValueError(f"indices must have shape (batch, {grid}, {grid}), got {tuple(indices.shape)}.")
        if indices.numel() and (indices.min() < 0 or indices.max() >= num_embeddings):
            raise ValueError(f"indices must lie in [0, {num_embeddings}), got values in "
                             f"[{int(indices.min())}, {int(indices.max())}].")
        return self.decode(self.quantizer.embed(indices.to(self.device)), force_not_quantize=True).sample

    def check_prior(self, prior) -> str:
        """Refuse anything but a prior over this VQ-VAE's codes (a `PixelCNNPriorModel` or a transformer prior, see
        `code_priors`), or one trained for another codebook size K or code-map size. Returns the prior's type."""
        return check_prior_fits(self.config, prior)

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        generator: torch.Generator | None = None,
        prior=None,
        temperature: float = 1.0,
        class_labels: torch.LongTensor | int | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
    ) -> torch.Tensor:
        """Images from code maps drawn from `prior` (a `PixelCNNPriorModel` or a transformer prior; `temperature`,
        `top_k`, `top_p` and `class_labels` as in `code_priors.sample_codes`), or uniformly at random if None — the
        VQ-VAE's own training prior, which generates poorly: codes are strongly dependent in real images."""
        self._check_num_samples(num_samples)
        if prior is None:
            if class_labels is not None or top_k is not None or top_p is not None:
                raise ValueError("class_labels, top_k and top_p need a prior; uniform codes have no classes and no "
                                 "logits to cut.")
            grid = self.config.latent_grid_size
            device = generator.device if generator is not None else self.device
            indices = torch.randint(self.config.num_embeddings, (num_samples, grid, grid), generator=generator,
                                    device=device)
        else:
            self.check_prior(prior)
            indices = sample_codes(prior, num_samples, generator=generator, temperature=temperature, top_k=top_k,
                                   top_p=top_p, class_labels=class_labels)
        return self.decode_indices(indices)

    def forward(
        self,
        pixel_values: torch.Tensor,
        target_pixel_values: torch.Tensor | None = None,
        return_loss: bool = True,
        return_dict: bool | None = None,
        **kwargs,
    ) -> AutoencoderOutput | tuple:
        pixel_values, target = self._inputs(pixel_values, target_pixel_values)
        quantized = self.quantize(self.encoder(self._corrupt(pixel_values)))
        decoder_params = self.decoder(quantized.quantized)
        reconstruction_loss = self.reconstruction_loss(target, decoder_params).mean()
        loss = reconstruction_loss + quantized.codebook_loss + quantized.commitment_loss
        output = AutoencoderOutput(
            loss=loss if return_loss else None,
            reconstruction=self.likelihood.mean(decoder_params),
            latents=quantized.quantized,
            indices=quantized.indices,
            reconstruction_loss=reconstruction_loss,
            codebook_loss=quantized.codebook_loss,
            commitment_loss=quantized.commitment_loss,
            perplexity=quantized.perplexity,
            codebook_usage=quantized.codebook_usage,
        )
        return self._return(output, return_dict)
