"""Quantizers of the VQ-VAE latent grid: a learned codebook (VQ) and Finite Scalar Quantization (FSQ).

Both take the encoder's grid z_e of shape (batch, d, h, w) and return a [`QuantizerOutput`]: the straight-through
decoder input, the code map, the two VQ losses and code-usage statistics. `build_quantizer` picks the one named by
`config.quantizer`. The quantization math runs in float32 whatever the autocast context, since nearest-neighbour
search in bfloat16 picks wrong codes.
"""

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from .configuration_autoencoders import VQVAEConfig


@dataclass
class QuantizerOutput(ModelOutput):
    """
    Args:
        quantized: the decoder input, shape (batch, d, h, w): the chosen codes in value, with the straight-through
            gradient z_e + sg(z_q - z_e) (van den Oord et al., 2017).
        indices: the code map, shape (batch, h, w), long, in [0, K).
        codebook_loss: ||sg(z_e) - e||^2, a per-sample sum averaged over the batch (zero for EMA codebooks and FSQ).
        commitment_loss: beta * ||z_e - sg(e)||^2, same reduction (zero for FSQ).
        perplexity: exp(H(p)) of this batch's code histogram p (K when all codes are used evenly, 1 for one code).
        codebook_usage: fraction of the K codes used at least once in this batch.
    """

    quantized: torch.FloatTensor | None = None
    indices: torch.LongTensor | None = None
    codebook_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    perplexity: torch.FloatTensor | None = None
    codebook_usage: torch.FloatTensor | None = None


# ------------------------------------------------------------------------------------------------------- helpers


def _world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if _world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def _broadcast_from_rank0(tensor: torch.Tensor) -> torch.Tensor:
    if _world_size() > 1:
        dist.broadcast(tensor, src=0)
    return tensor


def _is_rank0() -> bool:
    return _world_size() == 1 or dist.get_rank() == 0


def _linear_fp32(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)` in float32, whatever dtype the model was cast to."""
    bias = None if layer.bias is None else layer.bias.float()
    return F.linear(x, layer.weight.float(), bias)


def _squared_distances(z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """||z_i - e_k||^2 = ||z_i||^2 - 2 z_i.e_k + ||e_k||^2 for every pair, shape (N, K), with one matmul."""
    return torch.addmm(codes.pow(2).sum(1), z, codes.t(), alpha=-2).add_(z.pow(2).sum(1, keepdim=True))


def code_statistics(counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Of a histogram of code counts (K,): the perplexity exp(H(p)) of the empirical distribution p (K when every
    code is used equally, 1 for a single code), its entropy H(p) = -sum_k p_k log p_k in nats, and the fraction of the
    K codes used at least once. The one definition used for a batch, an evaluation set and the training logs."""
    counts = counts.double()
    probs = counts / counts.sum().clamp_min(1)
    entropy = -torch.special.xlogy(probs, probs).sum()
    return {"perplexity": entropy.exp(), "entropy": entropy, "usage": (counts > 0).double().mean()}


def _batch_statistics(indices: torch.Tensor, num_codes: int) -> tuple[torch.Tensor, torch.Tensor]:
    stats = code_statistics(torch.bincount(indices.flatten(), minlength=num_codes))
    return stats["perplexity"].float(), stats["usage"].float()


def _kmeans(vectors: torch.Tensor, num_clusters: int, iters: int, spherical: bool):
    """Lloyd's k-means from `num_clusters` random data points (drawn with replacement when there are fewer points
    than clusters). Empty clusters keep their centre. Spherical k-means (unit centres) when `spherical`.
    Returns the centres (K, dim) and the size of each cluster (K,)."""
    n = vectors.shape[0]
    if n >= num_clusters:
        start = torch.randperm(n, device=vectors.device)[:num_clusters]
    else:
        start = torch.randint(n, (num_clusters,), device=vectors.device)
    centres = vectors[start].clone()
    counts = torch.zeros(num_clusters, device=vectors.device)
    for _ in range(iters):
        assignment = _squared_distances(vectors, centres).argmin(1)
        counts = torch.bincount(assignment, minlength=num_clusters).float()
        means = torch.zeros_like(centres).index_add_(0, assignment, vectors) / counts.clamp_min(1)[:, None]
        if spherical:
            means = F.normalize(means, dim=1)
        centres = torch.where(counts[:, None] > 0, means, centres)
    return centres, counts


def _check_latents(z_e: torch.Tensor, dim: int) -> None:
    if not isinstance(z_e, torch.Tensor) or z_e.dim() != 4 or z_e.shape[1] != dim or not z_e.is_floating_point():
        got = tuple(z_e.shape) if isinstance(z_e, torch.Tensor) else type(z_e).__name__
        dtype = f" of dtype {z_e.dtype}" if isinstance(z_e, torch.Tensor) else ""
        raise ValueError(
            f"z_e must be a float tensor of shape (batch, {dim}, h, w) (embedding_dim={dim}), got {got}{dtype}."
        )


def _check_indices(indices: torch.Tensor, num_codes: int) -> None:
    if not isinstance(indices, torch.Tensor) or indices.dim() != 3 or indices.is_floating_point():
        got = tuple(indices.shape) if isinstance(indices, torch.Tensor) else type(indices).__name__
        raise ValueError(f"indices must be an integer tensor of shape (batch, h, w), got {got}.")
    if indices.numel() and (indices.min() < 0 or indices.max() >= num_codes):
        raise ValueError(
            f"indices must lie in [0, {num_codes}) (num_embeddings={num_codes}), "
            f"got values in [{int(indices.min())}, {int(indices.max())}]."
        )


# ------------------------------------------------------------------------------------------------------------- VQ


class VectorQuantizer(nn.Module):
    r"""
    Vector quantization with a learned codebook {e_k}, k < K (van den Oord et al., 2017, "Neural Discrete
    Representation Learning").

    Each vector z of the grid z_e is replaced by its nearest code, k = argmin_k ||z - e_k||^2, found from
    ||z||^2 - 2 z.e_k + ||e_k||^2 with one matmul. The decoder sees the straight-through z_e + sg(z_q - z_e), so the
    reconstruction gradient is copied from z_q to z_e. The losses, each a per-sample sum over positions and
    dimensions averaged over the batch, are

        codebook_loss   = ||sg(z_e) - e_k||^2          (moves the codes; 0 with `codebook_ema`)
        commitment_loss = beta ||z_e - sg(e_k)||^2     (keeps z_e near its code).

    Options, all from a [`VQVAEConfig`]:

    - `codebook_ema`: instead of the codebook loss, codes are exponential moving averages of the vectors assigned
      to them (van den Oord et al., 2017, appendix A.1; Razavi et al., 2019, "VQ-VAE-2"). With n_k the count and
      s_k the sum of the vectors assigned to code k in the batch (summed over all processes), and decay gamma:
          N_k <- gamma N_k + (1 - gamma) n_k,     m_k <- gamma m_k + (1 - gamma) s_k,
          e_k = m_k / N~_k,  with the Laplace-smoothed counts N~_k = (N_k + eps) / (n + K eps) * n, n = sum_k N_k.
      The state starts as if every code had been assigned once (N_k = 1, m_k = e_k), so e_k = m_k / N_k holds from
      the start; codes update in training mode only. The codebook is then a buffer, not a parameter.
    - `kmeans_init`: on the first training forward the codebook is set by `kmeans_iters` steps of k-means on the
      batch's vectors (as SoundStream, Zeghidour et al., 2021); the `initialized` buffer records it, so a reloaded
      model does not re-initialise.
    - `dead_code_threshold` = T > 0: `steps_since_used` counts the training steps since each code was last chosen;
      at the next training forward, codes with a count >= T are re-seeded with random encoder outputs of the
      current batch (random restarts, Dhariwal et al., 2020, "Jukebox").
    - `codebook_dim` (factorized codes) and `l2_normalized_codes` (Yu et al., 2022, "ViT-VQGAN"): the lookup runs on
      W_in z_e in `codebook_dim` dimensions, optionally on l2-normalised z and e (nearest code = highest cosine
      similarity); the code is projected back to d by W_out. The losses are measured in that lookup space.
    - `stochastic_quantization`: in training, the code is sampled with probability
      softmax_k(-||z - e_k||^2 / temperature) (Gumbel-max), distance-weighted as in the soft-EM training of
      Roy et al., 2018; in eval mode the nearest code is used.

    With `torch.distributed` initialised and more than one process, EMA statistics and code counts are summed over
    processes and k-means / restarts are computed on rank 0 and broadcast, so every process keeps the same codebook.
    """

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.num_embeddings = config.num_embeddings
        self.embedding_dim = config.embedding_dim
        self.codebook_dim = config.codebook_dim or config.embedding_dim
        self.commitment_cost = config.commitment_cost
        self.use_ema = config.codebook_ema
        self.ema_decay = config.ema_decay
        self.ema_epsilon = config.ema_epsilon
        self.kmeans_init = config.kmeans_init
        self.kmeans_iters = config.kmeans_iters
        self.dead_code_threshold = config.dead_code_threshold
        self.l2_normalized_codes = config.l2_normalized_codes
        self.stochastic = config.stochastic_quantization
        self.temperature = config.quantization_temperature

        factorized = config.codebook_dim is not None
        self.project_in = nn.Linear(self.embedding_dim, self.codebook_dim) if factorized else None
        self.project_out = nn.Linear(self.codebook_dim, self.embedding_dim) if factorized else None
        codebook = torch.empty(self.num_embeddings, self.codebook_dim)
        if self.use_ema:  # moving averages, not trained by gradient: a buffer, outside optimizers and DDP's reducer
            self.register_buffer("codebook", codebook)
            self.register_buffer("ema_cluster_size", torch.ones(self.num_embeddings))
            self.register_buffer("ema_embed_sum", torch.zeros(self.num_embeddings, self.codebook_dim))
        else:
            self.codebook = nn.Parameter(codebook)
        if self.kmeans_init:
            self.register_buffer("initialized", torch.zeros((), dtype=torch.long))
        if self.dead_code_threshold > 0:
            self.register_buffer("steps_since_used", torch.zeros(self.num_embeddings, dtype=torch.long))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Codes uniform in +-sqrt(3 / codebook_dim) (unit expected norm), fresh EMA and usage state. The
        projections are `nn.Linear`s with their own `reset_parameters`."""
        bound = (3.0 / self.codebook_dim) ** 0.5
        self.codebook.uniform_(-bound, bound)
        if self.use_ema:
            self.ema_cluster_size.fill_(1.0)
            self.ema_embed_sum.copy_(self.codebook)
        if self.kmeans_init:
            self.initialized.zero_()
            self._initialized_seen = False
        if self.dead_code_threshold > 0:
            self.steps_since_used.zero_()

    def codes(self) -> torch.Tensor:
        """The codes used for the lookup, (K, codebook_dim) float32 (l2-normalised with `l2_normalized_codes`)."""
        codes = self.codebook.float()
        return F.normalize(codes, dim=1) if self.l2_normalized_codes else codes

    def forward(self, z_e: torch.Tensor) -> QuantizerOutput:
        """Quantize z_e of shape (batch, d, h, w); see the class docstring for the math."""
        _check_latents(z_e, self.embedding_dim)
        batch, _, height, width = z_e.shape
        with torch.autocast(device_type=z_e.device.type, enabled=False):
            z = self._to_lookup_space(z_e.float())  # (batch * h * w, codebook_dim)
            if self.training:
                self._initialize_and_restart(z.detach())
            codes = self.codes()
            with torch.no_grad():
                distances = _squared_distances(z, codes)
                if self.training and self.stochastic:
                    gumbel = -torch.empty_like(distances).exponential_().log()
                    indices = (gumbel - distances / self.temperature).argmax(1)
                else:
                    indices = distances.argmin(1)
            z_q = F.embedding(indices, codes)
            commitment_loss = self.commitment_cost * (z - z_q.detach()).pow(2).sum() / batch
            if self.use_ema:
                codebook_loss = z.new_zeros(())
            else:
                codebook_loss = (z.detach() - z_q).pow(2).sum() / batch
            if self.training:
                self._update_state(z.detach(), indices)
            quantized = self._from_lookup_space(z + (z_q - z).detach(), batch, height, width)
            perplexity, usage = _batch_statistics(indices, self.num_embeddings)
        return QuantizerOutput(
            quantized=quantized.to(z_e.dtype),
            indices=indices.view(batch, height, width),
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            perplexity=perplexity,
            codebook_usage=usage,
        )

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """The decoder input z_q of a code map (batch, h, w): the codes (projected up for factorized codes), shape
        (batch, d, h, w), in the codebook's dtype."""
        _check_indices(indices, self.num_embeddings)
        batch, height, width = indices.shape
        with torch.autocast(device_type=indices.device.type, enabled=False):
            z_q = F.embedding(indices.reshape(-1).long(), self.codes())
            z_q = self._from_lookup_space(z_q, batch, height, width)
        return z_q.to(self.codebook.dtype)

    def _to_lookup_space(self, z_e: torch.Tensor) -> torch.Tensor:
        z = z_e.permute(0, 2, 3, 1).reshape(-1, self.embedding_dim)
        if self.project_in is not None:
            z = _linear_fp32(self.project_in, z)
        return F.normalize(z, dim=1) if self.l2_normalized_codes else z

    def _from_lookup_space(self, z: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
        if self.project_out is not None:
            z = _linear_fp32(self.project_out, z)
        return z.view(batch, height, width, self.embedding_dim).permute(0, 3, 1, 2).contiguous()

    def _kmeans_done(self) -> bool:
        # Cache the buffer's value once it reads 1, to avoid a host sync every step; `initialized` is the truth.
        if not getattr(self, "_initialized_seen", False):
            self._initialized_seen = bool(self.initialized)
        return self._initialized_seen

    def _load_from_state_dict(self, *args, **kwargs):
        self._initialized_seen = False
        super()._load_from_state_dict(*args, **kwargs)

    @torch.no_grad()
    def _set_codes(self, mask: torch.Tensor, values: torch.Tensor, counts: torch.Tensor) -> None:
        """Codes where `mask` become `values`, with EMA state as if each had been assigned `counts` vectors."""
        self.codebook.copy_(torch.where(mask[:, None], values, self.codebook.float()))
        if self.use_ema:
            self.ema_cluster_size.copy_(torch.where(mask, counts, self.ema_cluster_size.float()))
            self.ema_embed_sum.copy_(torch.where(mask[:, None], values * counts[:, None], self.ema_embed_sum.float()))

    @torch.no_grad()
    def _initialize_and_restart(self, z: torch.Tensor) -> None:
        """k-means initialisation (first training step) and dead-code restarts, computed on rank 0 and broadcast."""
        num_codes, device = self.num_embeddings, z.device
        if self.kmeans_init and not self._kmeans_done():
            if _is_rank0():
                centres, counts = _kmeans(z, num_codes, self.kmeans_iters, self.l2_normalized_codes)
            else:
                centres = torch.empty(num_codes, self.codebook_dim, device=device)
                counts = torch.empty(num_codes, device=device)
            _broadcast_from_rank0(centres)
            _broadcast_from_rank0(counts)
            # Counts of one process's batch, scaled to the batches of all processes that the EMA will sum.
            counts = counts.clamp_min(1) * _world_size()
            self._set_codes(torch.ones(num_codes, dtype=torch.bool, device=device), centres, counts)
            self.initialized.fill_(1)
            if self.dead_code_threshold > 0:
                self.steps_since_used.zero_()
        if self.dead_code_threshold > 0:
            # Draw a candidate for every code and keep those of the dead ones: no host sync to count them.
            dead = self.steps_since_used >= self.dead_code_threshold
            candidates = z[torch.randint(z.shape[0], (num_codes,), device=device)]
            _broadcast_from_rank0(candidates)
            self._set_codes(dead, candidates, torch.ones(num_codes, device=device))
            self.steps_since_used.masked_fill_(dead, 0)

    @torch.no_grad()
    def _update_state(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        """EMA codebook update and usage counters, from the counts and sums of all processes."""
        if not (self.use_ema or self.dead_code_threshold > 0):
            return
        counts = torch.bincount(indices, minlength=self.num_embeddings).float()
        if self.use_ema:
            sums = torch.zeros_like(self.codebook, dtype=torch.float32).index_add_(0, indices, z)
            stats = _all_reduce_sum(torch.cat([counts[:, None], sums], dim=1))  # one collective for both
            counts, sums = stats[:, 0], stats[:, 1:]
            decay, eps = self.ema_decay, self.ema_epsilon
            cluster_size = self.ema_cluster_size.float() * decay + (1 - decay) * counts
            embed_sum = self.ema_embed_sum.float() * decay + (1 - decay) * sums
            n = cluster_size.sum()
            smoothed = (cluster_size + eps) / (n + self.num_embeddings * eps) * n
            self.ema_cluster_size.copy_(cluster_size)
            self.ema_embed_sum.copy_(embed_sum)
            self.codebook.copy_(embed_sum / smoothed[:, None])
        else:
            _all_reduce_sum(counts)
        if self.dead_code_threshold > 0:
            self.steps_since_used.add_(1).masked_fill_(counts > 0, 0)


# ------------------------------------------------------------------------------------------------------------ FSQ


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
        _check_latents(z_e, self.embedding_dim)
        batch, _, height, width = z_e.shape
        with torch.autocast(device_type=z_e.device.type, enabled=False):
            z = _linear_fp32(self.project_in, z_e.float().permute(0, 2, 3, 1))
            bounded = self.bound(z)
            codes = (bounded + (bounded.round() - bounded).detach()) / self._grid(z.device)["half_width"]
            indices = self.codes_to_indices(codes.detach())
            quantized = _linear_fp32(self.project_out, codes).permute(0, 3, 1, 2).contiguous()
            perplexity, usage = _batch_statistics(indices, self.num_embeddings)
        zero = z.new_zeros(())
        return QuantizerOutput(
            quantized=quantized.to(z_e.dtype),
            indices=indices,
            codebook_loss=zero,
            commitment_loss=zero.clone(),
            perplexity=perplexity,
            codebook_usage=usage,
        )

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """The decoder input of a code map (batch, h, w): grid codes projected up, shape (batch, d, h, w)."""
        _check_indices(indices, self.num_embeddings)
        with torch.autocast(device_type=indices.device.type, enabled=False):
            z_q = _linear_fp32(self.project_out, self.indices_to_codes(indices))
        return z_q.permute(0, 3, 1, 2).contiguous().to(self.project_out.weight.dtype)


def build_quantizer(config: VQVAEConfig) -> VectorQuantizer | FiniteScalarQuantizer:
    """The quantizer named by `config.quantizer`: "vq" -> [`VectorQuantizer`], "fsq" -> [`FiniteScalarQuantizer`]."""
    if config.quantizer == "vq":
        return VectorQuantizer(config)
    if config.quantizer == "fsq":
        return FiniteScalarQuantizer(config)
    raise ValueError(f"quantizer={config.quantizer!r} is not known; use 'vq' or 'fsq'.")
