"""Vector quantization with a learned codebook (van den Oord et al., 2017), and the rotation trick (Fifty et al.,
2024) as its gradient estimator."""

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_autoencoders import VQVAEConfig
from .quantizers import (
    InitializedFromData,
    QuantizerOutput,
    _squared_distances,
    all_reduce_sum,
    batch_statistics,
    broadcast_from_rank0,
    check_indices,
    check_latents,
    gather_rows,
    is_rank0,
    linear_fp32,
    sample_rows,
    to_grid,
    to_vectors,
)


def rotate_to(z: torch.Tensor, q: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    r"""
    The rotation trick (Fifty et al., 2024, "Restructuring Vector Quantization with the Rotation Trick"): the value
    q, with the gradient of the linear map that rotates and rescales z onto q.

    For each row z (the encoder output) and q (its code), with u = z / ||z||, v = q / ||q||, w = (u + v) / ||u + v||
    and lambda = ||q|| / ||z||, the map is lambda R with the rotation

        R = I - 2 w w^T + 2 v u^T,     R u = v,

    the rotation in the plane of u and v (identity on its complement), written as two reflections. lambda and R are
    constants of the backward pass (stop-gradient), so q~ = sg(lambda R) z has the value q and the gradient
    dL/dz = lambda R^T dL/dq~: the reconstruction gradient at q, rotated back to z and rescaled, where the
    straight-through estimator copies it unchanged. Computed without forming R: R z = z - 2 (w.z) w + 2 (u.z) v.
    Where z and q point in opposite directions (u + v = 0), R is the reflection I + 2 v u^T = I - 2 u u^T, still an
    orthogonal map taking u to v. The value is set to q exactly (a straight-through correction of the rounding, with no
    gradient), also for z = 0.

    Args:
        z: (N, dim), the vectors that receive the gradient. q: (N, dim), their codes (no gradient flows into q).
    """
    z_norm = z.detach().norm(dim=1, keepdim=True)
    q_norm = q.detach().norm(dim=1, keepdim=True)
    u = z.detach() / z_norm.clamp_min(eps)
    v = q.detach() / q_norm.clamp_min(eps)
    w = F.normalize(u + v, dim=1, eps=eps)
    rotated = z - 2 * (z * w).sum(1, keepdim=True) * w + 2 * (z * u).sum(1, keepdim=True) * v
    rotated = rotated * (q_norm / z_norm.clamp_min(eps))
    return rotated + (q.detach() - rotated).detach()


class VectorQuantizer(InitializedFromData, nn.Module):
    r"""
    Vector quantization with a learned codebook {e_k}, k < K (van den Oord et al., 2017, "Neural Discrete
    Representation Learning").

    Each vector z of the grid z_e is replaced by its nearest code, k = argmin_k ||z - e_k||^2, found from
    ||z||^2 - 2 z.e_k + ||e_k||^2 with one matmul. The decoder sees the straight-through z_e + sg(z_q - z_e), so the
    reconstruction gradient is copied from z_q to z_e (or, with `rotation_trick`, rotated: [`rotate_to`]). The
    losses, each a per-sample sum over positions and dimensions averaged over the batch, are

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
      similarity); the code is projected back to d by W_out. The losses and the rotation trick work in that lookup
      space.
    - `stochastic_quantization`: in training, the code is sampled with probability
      softmax_k(-||z - e_k||^2 / temperature) (Gumbel-max), distance-weighted as in the soft-EM training of
      Roy et al., 2018; in eval mode the nearest code is used. It composes with the rotation trick, which rotates z
      onto whichever code was drawn.

    With `torch.distributed` initialised and more than one process, everything computed from a batch comes from the
    global batch (all processes' batches in rank order): EMA statistics and code counts are summed over processes,
    k-means runs on rank 0 over the gathered vectors and restarts draw from them (`quantizers.sample_rows`), and the
    results are broadcast; so every process keeps the same codebook, the one a single process would reach on the
    global batch.
    """

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.num_embeddings = config.num_embeddings
        self.embedding_dim = config.embedding_dim
        self.codebook_dim = config.codebook_dim or config.embedding_dim
        self.commitment_cost = config.commitment_cost
        self.l2_normalized_codes = config.l2_normalized_codes
        self.stochastic = config.stochastic_quantization
        self.temperature = config.quantization_temperature
        self.rotation_trick = config.rotation_trick

        factorized = config.codebook_dim is not None
        self.project_in = nn.Linear(self.embedding_dim, self.codebook_dim) if factorized else None
        self.project_out = nn.Linear(self.codebook_dim, self.embedding_dim) if factorized else None
        self._build_codebook(config)
        self.reset_parameters()

    def _build_codebook(self, config: VQVAEConfig) -> None:
        self.use_ema = config.codebook_ema
        self.ema_decay = config.ema_decay
        self.ema_epsilon = config.ema_epsilon
        self.kmeans_init = config.kmeans_init
        self.kmeans_iters = config.kmeans_iters
        self.dead_code_threshold = config.dead_code_threshold
        codebook = torch.empty(self.num_embeddings, self.codebook_dim)
        if self.use_ema:  # moving averages, not trained by gradient: a buffer, outside optimizers and DDP's reducer
            self.register_buffer("codebook", codebook)
            self.register_buffer("ema_cluster_size", torch.ones(self.num_embeddings))
            self.register_buffer("ema_embed_sum", torch.zeros(self.num_embeddings, self.codebook_dim))
        else:
            self.codebook = nn.Parameter(codebook)
        if self.kmeans_init:
            self._register_initialized()
        if self.dead_code_threshold > 0:
            self.register_buffer("steps_since_used", torch.zeros(self.num_embeddings, dtype=torch.long))

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
            self._reset_initialized()
        if self.dead_code_threshold > 0:
            self.steps_since_used.zero_()

    def codes(self) -> torch.Tensor:
        """The codes used for the lookup, (K, codebook_dim) float32 (l2-normalised with `l2_normalized_codes`)."""
        codes = self.codebook.float()
        return F.normalize(codes, dim=1) if self.l2_normalized_codes else codes

    @property
    def _dtype(self) -> torch.dtype:
        return self.codebook.dtype

    def forward(self, z_e: torch.Tensor) -> QuantizerOutput:
        """Quantize z_e of shape (batch, d, h, w); see the class docstring for the math."""
        check_latents(z_e, self.embedding_dim)
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
            decoder_input = rotate_to(z, z_q) if self.rotation_trick else z + (z_q - z).detach()
            quantized = self._from_lookup_space(decoder_input, batch, height, width)
            perplexity, usage = batch_statistics(indices, self.num_embeddings)
        return QuantizerOutput(
            quantized=quantized.to(z_e.dtype),
            indices=indices.view(batch, height, width),
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            entropy_loss=z.new_zeros(()),
            perplexity=perplexity,
            codebook_usage=usage,
        )

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """The decoder input z_q of a code map (batch, h, w): the codes (projected up for factorized codes), shape
        (batch, d, h, w), in the codebook's dtype."""
        check_indices(indices, self.num_embeddings)
        batch, height, width = indices.shape
        with torch.autocast(device_type=indices.device.type, enabled=False):
            z_q = F.embedding(indices.reshape(-1).long(), self.codes())
            z_q = self._from_lookup_space(z_q, batch, height, width)
        return z_q.to(self._dtype)

    def _to_lookup_space(self, z_e: torch.Tensor) -> torch.Tensor:
        z = to_vectors(z_e)
        if self.project_in is not None:
            z = linear_fp32(self.project_in, z)
        return F.normalize(z, dim=1) if self.l2_normalized_codes else z

    def _from_lookup_space(self, z: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
        if self.project_out is not None:
            z = linear_fp32(self.project_out, z)
        return to_grid(z, batch, height, width)

    @torch.no_grad()
    def _set_codes(self, mask: torch.Tensor, values: torch.Tensor, counts: torch.Tensor) -> None:
        """Codes where `mask` become `values`, with EMA state as if each had been assigned `counts` vectors."""
        self.codebook.copy_(torch.where(mask[:, None], values, self.codebook.float()))
        if self.use_ema:
            self.ema_cluster_size.copy_(torch.where(mask, counts, self.ema_cluster_size.float()))
            self.ema_embed_sum.copy_(torch.where(mask[:, None], values * counts[:, None], self.ema_embed_sum.float()))

    @torch.no_grad()
    def _initialize_and_restart(self, z: torch.Tensor) -> None:
        """k-means initialisation (first training step) and dead-code restarts, from the global batch."""
        num_codes, device = self.num_embeddings, z.device
        if self.kmeans_init and not self._initialization_done():
            vectors = gather_rows(z)
            if is_rank0():
                centres, counts = _kmeans(vectors, num_codes, self.kmeans_iters, self.l2_normalized_codes)
            else:
                centres = torch.empty(num_codes, self.codebook_dim, device=device)
                counts = torch.empty(num_codes, device=device)
            broadcast_from_rank0(centres)
            broadcast_from_rank0(counts)
            self._set_codes(torch.ones(num_codes, dtype=torch.bool, device=device), centres, counts.clamp_min(1))
            self.initialized.fill_(1)
            if self.dead_code_threshold > 0:
                self.steps_since_used.zero_()
        if self.dead_code_threshold > 0:
            # Draw a candidate for every code and keep those of the dead ones: no host sync to count them.
            dead = self.steps_since_used >= self.dead_code_threshold
            self._set_codes(dead, sample_rows(z, num_codes), torch.ones(num_codes, device=device))
            self.steps_since_used.masked_fill_(dead, 0)

    @torch.no_grad()
    def _update_state(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        """EMA codebook update and usage counters, from the counts and sums of all processes."""
        if not (self.use_ema or self.dead_code_threshold > 0):
            return
        counts = torch.bincount(indices, minlength=self.num_embeddings).float()
        if self.use_ema:
            sums = torch.zeros_like(self.codebook, dtype=torch.float32).index_add_(0, indices, z)
            stats = all_reduce_sum(torch.cat([counts[:, None], sums], dim=1))  # one collective for both
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
            all_reduce_sum(counts)
        if self.dead_code_threshold > 0:
            self.steps_since_used.add_(1).masked_fill_(counts > 0, 0)


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
