"""Residual quantization of depth n over any quantizer (Lee et al., 2022, "Autoregressive Image Generation using
Residual Quantization", RQ-VAE; Zeghidour et al., 2021, SoundStream), and `build_quantizer`, which makes the
quantizer a config names."""

import torch
from torch import nn

from .configuration_autoencoders import VQVAEConfig
from .quantizer_fsq import FiniteScalarQuantizer
from .quantizer_lfq import LookupFreeQuantizer
from .quantizer_simvq import SimVectorQuantizer
from .quantizer_vq import VectorQuantizer
from .quantizers import QuantizerOutput, check_indices, check_latents

QUANTIZER_CLASSES = {"vq": VectorQuantizer, "simvq": SimVectorQuantizer, "fsq": FiniteScalarQuantizer,
                     "lfq": LookupFreeQuantizer}


class ResidualQuantizer(nn.Module):
    r"""
    Residual quantization: n quantizers of one kind (`layers`, each with its own codebook or projections), the d-th
    quantizing what the ones before it left over,

        r_0 = z_e,     q_d = Q_d(r_{d-1}),     r_d = r_{d-1} - sg(q_d),     z_q = q_1 + ... + q_n,

    so each depth refines the sum of the ones before it, and a position's code is the tuple (k_1, ..., k_n): K^n
    values for n K codewords. `indices` has shape (batch, n, h, w); `embed` of those n maps is the sum of their
    codewords. Each depth keeps its own gradient estimator (straight-through, rotation trick, FSQ's rounding), so the
    decoder input z_q = sum_d q_d sends the encoder the sum of the n estimators' gradients. The losses are the sums
    over depths of each quantizer's: with codebook quantizers, the commitment loss is
    sum_d beta ||r_{d-1} - sg(e_{k_d})||^2 = sum_d beta ||z_e - sg(q_1 + ... + q_d)||^2 (the partial sums, as in
    RQ-VAE), and the codebook of depth d (its EMA, k-means initialisation and restarts) learns the residuals r_{d-1}.
    Separate codebooks per depth, as in SoundStream, rather than RQ-VAE's one shared codebook: the residuals shrink
    with depth, and each depth's codes fit its own scale.

    The batch statistics `perplexity` and `codebook_usage` are the means over depths.
    """

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.embedding_dim = config.embedding_dim
        self.num_quantizers = config.num_quantizers
        self.layers = nn.ModuleList(QUANTIZER_CLASSES[config.quantizer](config) for _ in range(config.num_quantizers))
        self.num_embeddings = self.layers[0].num_embeddings

    def forward(self, z_e: torch.Tensor) -> QuantizerOutput:
        """Quantize z_e of shape (batch, d, h, w) at every depth; see the class docstring for the math."""
        check_latents(z_e, self.embedding_dim)
        residual, outputs = z_e, []
        for layer in self.layers:
            output = layer(residual)
            residual = residual - output.quantized.detach()
            outputs.append(output)

        def total(name):
            return torch.stack([getattr(output, name) for output in outputs]).sum(0)

        return QuantizerOutput(
            quantized=total("quantized"),
            indices=torch.stack([output.indices for output in outputs], dim=1),
            codebook_loss=total("codebook_loss"),
            commitment_loss=total("commitment_loss"),
            entropy_loss=total("entropy_loss"),
            perplexity=total("perplexity") / self.num_quantizers,
            codebook_usage=total("codebook_usage") / self.num_quantizers,
        )

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """The decoder input of n code maps (batch, n, h, w): the sum over depths of each depth's codeword, shape
        (batch, d, h, w)."""
        check_indices(indices, self.num_embeddings, f"(batch, {self.num_quantizers}, h, w)")
        if indices.shape[1] != self.num_quantizers:
            raise ValueError(f"indices must hold one code map per depth, shape (batch, {self.num_quantizers}, h, w) "
                             f"(num_quantizers={self.num_quantizers}), got {tuple(indices.shape)}.")
        return torch.stack([layer.embed(indices[:, depth]) for depth, layer in enumerate(self.layers)]).sum(0)


def build_quantizer(config: VQVAEConfig) -> nn.Module:
    """The quantizer a config names: a [`ResidualQuantizer`] of depth `config.num_quantizers` > 1, else the one
    quantizer of kind `config.quantizer` ("vq" -> [`VectorQuantizer`], "simvq" -> [`SimVectorQuantizer`], "fsq" ->
    [`FiniteScalarQuantizer`], "lfq" -> [`LookupFreeQuantizer`])."""
    if config.quantizer not in QUANTIZER_CLASSES:
        raise ValueError(f"quantizer={config.quantizer!r} is not known; use one of {tuple(QUANTIZER_CLASSES)}.")
    if config.num_quantizers > 1:
        return ResidualQuantizer(config)
    return QUANTIZER_CLASSES[config.quantizer](config)
