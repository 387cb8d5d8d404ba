"""Finite Scalar Quantization (Mentzer et al., 2023, "Finite Scalar Quantization: VQ-VAE Made Simple")."""

import torch
from torch import nn

from .configuration_autoencoders import VQVAEConfig
from .quantizers import QuantizerOutput, batch_statistics, check_indices, check_latents, linear_fp32


class FiniteScalarQuantizer(nn.Module):
    r"""
    Finite Scalar Quantization (Mentzer et al., 2023, "Finite Scalar Quantization: VQ-VAE Made Simple").

    z_e is projected (per position, a 1x1 linear map) to C = len(fsq_levels) channels; channel i with L_i levels is
    bounded to L_i values and rounded with a straight-through gradient:

        bound(z) = tanh(z + s) * h - o,   h = (L - 1)(1 + 1e-3) / 2,   o = 1/2 for even L else 0,  s = atanh(o / h),
        q = round(bound(z)) / floor(L / 2)       (forward value; gradient of bound(z) / floor(L / 2)),

    so q takes the L values {-floor(L/2), ..., ceil(L/2) - 1} / floor(L/2) and z = 0 maps to 0. The code is
    projected back to d. The implicit codebook is the grid of prod(L_i) points; the index is the mixed-radix number
    sum_i (q_i floor(L_i/2) + floor(L_i/2)) prod_{j<i} L_j. No codebook or commitment loss (both returned as 0).
    """

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.levels = tuple(int(level) for level in config.fsq_levels)
        self.embedding_dim = config.embedding_dim
        self.num_embeddings = 1
        for level in self.levels:
            self.num_embeddings *= level
        self.project_in = nn.Linear(self.embedding_dim, len(self.levels))
        self.project_out = nn.Linear(len(self.levels), self.embedding_dim)

    def _grid(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The constants of the level grid on `device`, made once per device: levels L_i, half widths floor(L_i / 2)
        and mixed-radix place values prod_{j<i} L_j (long), and the float32 scale h, offset o and shift s of
        `bound`. (Plain attributes rather than buffers: nothing to save, nothing to restore after a meta-device
        load.)"""
        cache = self.__dict__.setdefault("_grids", {})
        if device not in cache:
            levels = torch.tensor(self.levels, device=device)
            float_levels = levels.float()
            half = (float_levels - 1) * (1 + 1e-3) / 2
            offset = torch.where(levels % 2 == 0, 0.5, 0.0).to(device)
            cache[device] = {
                "levels": levels, "half_width": levels // 2,
                "basis": torch.cumprod(torch.cat([levels.new_ones(1), levels[:-1]]), dim=0),
                "scale": half, "offset": offset, "shift": torch.atanh(offset / half),
            }
        return cache[device]

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """tanh-squash channel i onto [-floor(L_i/2), ceil(L_i/2) - 1] widened by a factor 1 + 1e-3 about its centre,
        so rounding gives exactly L_i values, and bound(0) = 0."""
        grid = self._grid(z.device)
        return torch.tanh(z + grid["shift"]) * grid["scale"] - grid["offset"]

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Grid codes (..., C) with values k / floor(L/2) -> mixed-radix indices (...) in [0, prod(levels))."""
        grid = self._grid(codes.device)
        digits = (codes * grid["half_width"]).round().long() + grid["half_width"]
        return (digits * grid["basis"]).sum(-1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Mixed-radix indices (...) -> grid codes (..., C) in float32."""
        grid = self._grid(indices.device)
        digits = (indices.long()[..., None] // grid["basis"]) % grid["levels"]
        return (digits - grid["half_width"]).float() / grid["half_width"]

    def forward(self, z_e: torch.Tensor) -> QuantizerOutput:
        """Quantize z_e of shape (batch, d, h, w); see the class docstring for the math."""
        check_latents(z_e, self.embedding_dim)
        batch, _, height, width = z_e.shape
        with torch.autocast(device_type=z_e.device.type, enabled=False):
            z = linear_fp32(self.project_in, z_e.float().permute(0, 2, 3, 1))
            bounded = self.bound(z)
            codes = (bounded + (bounded.round() - bounded).detach()) / self._grid(z.device)["half_width"]
            indices = self.codes_to_indices(codes.detach())
            quantized = linear_fp32(self.project_out, codes).permute(0, 3, 1, 2).contiguous()
            perplexity, usage = batch_statistics(indices, self.num_embeddings)
        zero = z.new_zeros(())
        return QuantizerOutput(
            quantized=quantized.to(z_e.dtype),
            indices=indices,
            codebook_loss=zero,
            commitment_loss=zero.clone(),
            entropy_loss=zero.clone(),
            perplexity=perplexity,
            codebook_usage=usage,
        )

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """The decoder input of a code map (batch, h, w): grid codes projected up, shape (batch, d, h, w)."""
        check_indices(indices, self.num_embeddings)
        with torch.autocast(device_type=indices.device.type, enabled=False):
            z_q = linear_fp32(self.project_out, self.indices_to_codes(indices))
        return z_q.permute(0, 3, 1, 2).contiguous().to(self.project_out.weight.dtype)
