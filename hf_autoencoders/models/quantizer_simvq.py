"""SimVQ (Zhu et al., 2024, "Addressing Representation Collapse in Vector Quantized Models with One Linear Layer")."""

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_autoencoders import VQVAEConfig
from .quantizer_vq import VectorQuantizer
from .quantizers import linear_fp32


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

    The options that move codes directly (`codebook_ema`, `kmeans_init`, `dead_code_threshold`) do not apply: the
    codes of SimVQ move with the linear layer only.
    """

    def _build_codebook(self, config: VQVAEConfig) -> None:
        self.use_ema, self.kmeans_init, self.dead_code_threshold = False, False, 0
        self.register_buffer("frozen_codebook", torch.empty(self.num_embeddings, self.codebook_dim))
        self.codebook_transform = nn.Linear(self.codebook_dim, self.codebook_dim)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """C ~ N(0, 1/c) (rows of unit expected norm); W and b keep `nn.Linear`'s initialisation."""
        self.frozen_codebook.normal_(0.0, self.codebook_dim**-0.5)

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
