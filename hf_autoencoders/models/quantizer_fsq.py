"""Finite Scalar Quantization (Mentzer et al., 2023, "Finite Scalar Quantization: VQ-VAE Made Simple")."""

import torch
from torch import nn

from .configuration_autoencoders import VQVAEConfig
from .quantizers import QuantizerOutput, batch_statistics, check_indices, check_latents, global_sum, linear_fp32


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

    With `fsq_input_std` = s (not None), each projected channel is standardised before the bound,

        z_i <- s (z_i - mu_i) / sqrt(var_i + 1e-5),

    mu_i and var_i the mean and (population) variance of channel i over the global batch's positions in training
    (gradients flow through them, as in BatchNorm), and their running averages in eval (`running_mean`,
    `running_var`: the plain average over the first 10 training batches, then an EMA with momentum 0.1). Without
    it the channels are at the mercy of the projection's scale: from a small initialisation they all learn the same
    leading direction first (channels correlated near +-1, a 1-D path through the grid), and a channel whose mean
    drifts into the tanh's flat end sits on one level with almost no gradient to bring it back; either leaves
    most of the grid unused. Standardised channels keep their spread across the levels whatever the encoder does.
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
        self.input_std = config.fsq_input_std
        if self.input_std is not None:
            self.register_buffer("running_mean", torch.zeros(len(self.levels)))
            self.register_buffer("running_var", torch.ones(len(self.levels)))
            self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))

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

    def standardize(self, z: torch.Tensor) -> torch.Tensor:
        """Channels (..., C) to mean 0 and standard deviation `input_std`: over the global batch in training
        (updating the running statistics), with the running statistics in eval."""
        if self.training:
            rows = z.reshape(-1, z.shape[-1])
            sums = global_sum(torch.cat([rows.sum(0), rows.new_full((1,), len(rows))]))
            count = sums[-1]
            mean = sums[:-1] / count
            # Centred on sg(mean): no cancellation when |mean| >> std, and the gradient is the exact one, since
            # the dropped term's derivative sum_n 2 (z_n - mean) d mean is 0 (and under DDP each sum stays linear).
            var = global_sum((rows - mean.detach()).pow(2).sum(0)) / count
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                dtype = self.running_mean.dtype  # the model's, if it was cast
                momentum = self.num_batches_tracked.reciprocal().clamp_min(0.1).to(dtype)
                self.running_mean.lerp_(mean.detach().to(dtype), momentum)
                self.running_var.lerp_(var.detach().to(dtype), momentum)
        else:
            mean, var = self.running_mean.float(), self.running_var.float()
        return (z - mean) * (self.input_std * torch.rsqrt(var + 1e-5))

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
            if self.input_std is not None:
                z = self.standardize(z)
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
