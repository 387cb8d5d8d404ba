"""SimVQ (Zhu et al., 2024, "Addressing Representation Collapse in Vector Quantized Models with One Linear Layer")."""

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_autoencoders import VQVAEConfig
from .quantizer_vq import VectorQuantizer
from .quantizers import gather_rows, linear_fp32


class SimVectorQuantizer(VectorQuantizer):
    r"""
    SimVQ: vector quantization against the codebook E = C W^T + b, where C (K x c, `frozen_codebook`) is drawn once
    from N(0, 1/c) and never trained, and W, b (c x c and c, `codebook_transform`) are one learned linear layer
    (c = `codebook_dim`, or d). The bias b, which the paper's formula leaves out and its code keeps, moves the whole
    cloud of codes onto the encoder outputs, wherever they start.

    Plain VQ moves only the codes that are chosen (by the codebook loss or the EMA), so codes that lose the
    competition early are never moved again and the codebook collapses. In SimVQ the codebook loss
    ||sg(z) - e_k||^2 trains W and b, and a step of them moves every code at once (the whole cloud of codes is
    shifted, rotated and stretched toward the encoder outputs), so no code is left behind. Everything else is the
    [`VectorQuantizer`]'s: the nearest-code lookup, the commitment loss beta ||z - sg(e_k)||^2, the straight-through
    or rotation-trick gradient, factorized and l2-normalised codes, stochastic quantization.

    `kmeans_init` is SimVQ's own data initialisation: on the first training forward, row i of W and b_i are rescaled
    and shifted so that dimension i of the codes has the mean and standard deviation of dimension i of the global
    batch's vectors z,

        w_i <- w_i std(z_i) / std_k(E_ki),      b_i <- mean(z_i) - mean_k(C w_i)     (population moments; new w_i),

    so the cloud of codes starts on the encoder outputs instead of far inside or outside them (where the lookup picks
    only the few codes at its edge, and SimVQ collapses until W and b have crossed the gap). The `initialized`
    buffer records it. The options that move single codes (`codebook_ema`, `dead_code_threshold`) do not apply: the
    codes of SimVQ move with the linear layer only.
    """

    def _build_codebook(self, config: VQVAEConfig) -> None:
        self.use_ema, self.dead_code_threshold = False, 0
        self.kmeans_init = config.kmeans_init
        self.register_buffer("frozen_codebook", torch.empty(self.num_embeddings, self.codebook_dim))
        self.codebook_transform = nn.Linear(self.codebook_dim, self.codebook_dim)
        if self.kmeans_init:
            self._register_initialized()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """C ~ N(0, 1/c) (rows of unit expected norm); W and b keep `nn.Linear`'s initialisation."""
        self.frozen_codebook.normal_(0.0, self.codebook_dim**-0.5)
        if self.kmeans_init:
            self._reset_initialized()

    @torch.no_grad()
    def _initialize_and_restart(self, z: torch.Tensor) -> None:
        """Match the codes' per-dimension mean and std to the global batch's (first training step only)."""
        if not self.kmeans_init or self._initialization_done():
            return
        vectors = gather_rows(z)  # the global batch, so that every process computes one process's moments exactly
        mean, std = vectors.mean(0), vectors.std(0, correction=0)
        weight, bias = self.codebook_transform.weight, self.codebook_transform.bias
        weight.mul_((std / self.codebook.std(0, correction=0).clamp_min(1e-12))[:, None].to(weight.dtype))
        bias.copy_(mean - self.codebook.mean(0) + bias.float())  # the rescaled codes' mean moved onto the batch's
        self.initialized.fill_(1)

    @property
    def codebook(self) -> torch.Tensor:
        """E = C W^T + b, (K, codebook_dim), differentiable in W and b."""
        return linear_fp32(self.codebook_transform, self.frozen_codebook.float())

    def codes(self) -> torch.Tensor:
        codes = self.codebook
        return F.normalize(codes, dim=1) if self.l2_normalized_codes else codes

    @property
    def _dtype(self) -> torch.dtype:
        return self.codebook_transform.weight.dtype
