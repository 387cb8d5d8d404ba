"""The VQ-VAE: a grid of encoder vectors z_e snapped to a learned codebook, decoded from the codes."""

import torch

from .backbones import build_decoder, build_encoder
from .code_priors import check_prior_fits, sample_codes, vqvae_identity
from .configuration_autoencoders import VQVAEConfig
from .modeling_base import AutoencoderOutput, AutoencoderPreTrainedModel, EncoderOutput
from .quantizer_lfq import LookupFreeQuantizer
from .quantizer_residual import build_quantizer
from .quantizer_simvq import SimVectorQuantizer


class VQVAEModel(AutoencoderPreTrainedModel):
    r"""
    A VQ-VAE (van den Oord et al., 2017). The encoder gives z_e(x), a grid of d-dimensional vectors; each is replaced
    by its nearest codebook entry e_k of the K x d codebook, z_q = e_argmin_k ||z_e - e_k||; the decoder reconstructs
    from the straight-through input z_e + sg(z_q - z_e), whose value is z_q and whose gradient is that of z_e. Loss:

        -log p(x | z_q) + ||sg(z_e) - e||^2 + beta ||z_e - sg(e)||^2,

    the codebook loss moving the codes toward the encoder outputs and the commitment loss (beta = 0.25) keeping
    the encoder close to its codes. (With `codebook_ema=True` the codes are moving averages instead.) The prior over
    codes is uniform while training the autoencoder; `sample` draws from it or from a learned prior.

    `config.quantizer` chooses the quantizer (VQ, SimVQ, FSQ or LFQ, whose entropy penalty adds the loss term
    `entropy_loss`) and `config.num_quantizers` = n > 1 stacks n of them as residual quantization: an image is then
    n code maps, `indices` of shape (batch, n, h, w), decoded from the sum of their codewords.
    """

    config_class = VQVAEConfig
    loss_terms = ("reconstruction_loss", "codebook_loss", "commitment_loss")
    diffusers_class = "VQModel"

    def __init__(self, config: VQVAEConfig):
        super().__init__(config)
        self.encoder = build_encoder(config, config.embedding_dim, spatial=True)
        self.quantizer = build_quantizer(config)
        self.decoder = build_decoder(config, config.embedding_dim, spatial=True)
        self._build_likelihood()
        if config.quantizer == "lfq":
            self.loss_terms = (*type(self).loss_terms, "entropy_loss")
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args, output_loading_info: bool = False, **kwargs):
        """`PreTrainedModel.from_pretrained`, where SimVQ and LFQ checkpoints saved before those quantizers kept an
        `initialized` flag (their data initialisation came later) load as initialised, as they were trained, rather
        than with the flag missing; every other missing key is reported as usual."""
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        flags = set(info["missing_keys"]) & {f"{name}.initialized" for name, module in model.named_modules()
                                             if isinstance(module, (SimVectorQuantizer, LookupFreeQuantizer))}
        for key in flags:
            model.get_buffer(key).fill_(1)
        info["missing_keys"] = type(info["missing_keys"])(key for key in info["missing_keys"] if key not in flags)
        return (model, info) if output_loading_info else model

    @property
    def indices_shape(self) -> tuple[int, ...]:
        """The shape of one image's codes: (h, w), or (n, h, w) for residual quantization of depth n > 1."""
        grid, depth = self.config.latent_grid_size, self.config.num_quantizers
        return (grid, grid) if depth == 1 else (depth, grid, grid)

    def encode(self, pixel_values: torch.Tensor, return_dict: bool = True) -> EncoderOutput | tuple:
        """`latents`: z_e(x), the unquantized encoder output, shape (batch, d, h, w) (`decode` quantizes it)."""
        latents = self._encode_pixels(self.check_pixel_values(pixel_values, any_size=True))
        return EncoderOutput(latents=latents) if return_dict else (latents,)

    def quantize(self, latents: torch.Tensor):
        """Snap z_e to the codebook: a `QuantizerOutput` with the straight-through `quantized`, `indices`, losses."""
        return self.quantizer(latents)

    def decode(self, latents: torch.Tensor, force_not_quantize: bool = False, return_dict: bool = True):
        """`sample` E[x | z_q], shape (batch, C, H, W), from a grid of shape (batch, d, h, w). As in diffusers'
        `VQModel`, the grid is quantized first (and `commit_loss` reported) unless `force_not_quantize`, which
        decodes it as given (e.g. codes already looked up, or a point between codes)."""
        grid = self.config.latent_grid_size
        latents = self._check_latents(latents, (self.config.embedding_dim, grid, grid))
        commit_loss = None
        if not force_not_quantize:
            quantized = self.quantize(latents)
            latents, commit_loss = quantized.quantized, quantized.commitment_loss
        return self._decoded(self._decode_latents(latents), return_dict, commit_loss)

    def representation(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """z_q, the quantized grid the decoder reads, shape (batch, d, h, w)."""
        return self.quantize(self.encode(pixel_values).latents).quantized

    def encode_indices(self, pixel_values: torch.Tensor) -> torch.LongTensor:
        """The code map of each image, shape (batch, h, w); for residual quantization of depth n > 1 the n code
        maps, shape (batch, n, h, w) (`indices_shape`)."""
        return self.quantize(self.encode(pixel_values).latents).indices

    def decode_indices(self, indices: torch.LongTensor) -> torch.Tensor:
        """Images from code maps of shape (batch, h, w), or (batch, n, h, w) for residual quantization of depth n > 1
        (the decoder reads the sum of the n codewords)."""
        num_embeddings = self.config.num_embeddings
        shape = f"(batch, {', '.join(map(str, self.indices_shape))})"
        if not isinstance(indices, torch.Tensor) or indices.is_floating_point():
            raise ValueError(f"indices must be an integer tensor of shape {shape}.")
        expected = self.indices_shape
        spatial_ok = tuple(indices.shape[-2:]) == expected[-2:] or (  # a fully convolutional model decodes any grid
            self.fully_convolutional and min(indices.shape[-2:], default=0) > 0)
        if indices.ndim != 1 + len(expected) or tuple(indices.shape[1:-2]) != expected[:-2] or not spatial_ok:
            depth = f" (num_quantizers={self.config.num_quantizers})" if self.config.num_quantizers > 1 else ""
            raise ValueError(f"indices must have shape {shape}{depth}, got {tuple(indices.shape)}.")
        if indices.numel() and (indices.min() < 0 or indices.max() >= num_embeddings):
            raise ValueError(f"indices must lie in [0, {num_embeddings}), got values in "
                             f"[{int(indices.min())}, {int(indices.max())}].")
        return self.decode(self.quantizer.embed(indices.to(self.device)), force_not_quantize=True).sample

    def identity(self) -> str:
        """This VQ-VAE's identity, as the priors trained on its codes record it (`code_priors.vqvae_identity`: a hash
        of its code layout, encoder and quantizer)."""
        return vqvae_identity(self)

    def check_prior(self, prior) -> str:
        """Refuse anything but a prior over this VQ-VAE's codes (a `PixelCNNPriorModel` or a transformer prior, see
        `code_priors`): one trained for another codebook size K or code-map size, or on the codes of another VQ-VAE
        (its recorded identity differs from `identity()`), is refused. Returns the prior's type."""
        return check_prior_fits(self, prior)

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        generator: torch.Generator | None = None,
        prior=None,
        temperature: float | None = None,
        class_labels: torch.LongTensor | list[int] | int | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        guidance_scale: float | None = None,
    ) -> torch.Tensor:
        """Images decoded from code maps drawn from `prior` (a `PixelCNNPriorModel` or a transformer prior over this
        VQ-VAE's codes, checked by `check_prior`), or uniformly at random if None: the VQ-VAE's own training prior,
        which generates poorly, since codes are strongly dependent in real images.

        `class_labels` (an int, a list or a tensor of labels, one per sample) conditions a class-conditional prior,
        and `guidance_scale` s guides it (classifier-free guidance, l_u + s (l_c - l_u); 1 = none; default: the
        library's for a prior trained with label dropout, else 1); `temperature` (default: the library's), `top_k`
        and `top_p` shape each step's distribution. All as in `code_priors.sample_codes`. Returns
        (num_samples, C, H, W) images."""
        self._check_num_samples(num_samples)
        if prior is None:
            given = [name for name, value in (("class_labels", class_labels), ("top_k", top_k), ("top_p", top_p),
                                              ("guidance_scale", guidance_scale), ("temperature", temperature))
                     if value is not None]
            if given:
                raise ValueError(f"{', '.join(given)} need a prior; uniform codes have no classes and no logits to cut "
                                 "or guide.")
            device = generator.device if generator is not None else self.device
            indices = torch.randint(self.config.num_embeddings, (num_samples, *self.indices_shape),
                                    generator=generator, device=device)
        else:
            self.check_prior(prior)
            indices = sample_codes(prior, num_samples, generator=generator, temperature=temperature, top_k=top_k,
                                   top_p=top_p, class_labels=class_labels, guidance_scale=guidance_scale)
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
        loss = reconstruction_loss + quantized.codebook_loss + quantized.commitment_loss + quantized.entropy_loss
        output = AutoencoderOutput(
            loss=loss if return_loss else None,
            reconstruction=self.likelihood.mean(decoder_params),
            latents=quantized.quantized,
            indices=quantized.indices,
            reconstruction_loss=reconstruction_loss,
            codebook_loss=quantized.codebook_loss,
            commitment_loss=quantized.commitment_loss,
            entropy_loss=quantized.entropy_loss if "entropy_loss" in self.loss_terms else None,
            perplexity=quantized.perplexity,
            codebook_usage=quantized.codebook_usage,
        )
        return self._return(output, return_dict)
