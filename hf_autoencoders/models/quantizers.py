"""What the quantizers of the VQ-VAE latent grid share: their output type, code statistics, the nearest-neighbour
math and the collectives that keep their state identical across processes.

One module per technique, each taking the encoder's grid z_e of shape (batch, d, h, w) and returning a
[`QuantizerOutput`]:

- `quantizer_vq.py`: a learned codebook (VQ), with the rotation trick as an option;
- `quantizer_simvq.py`: SimVQ, a frozen random codebook through one learned linear map;
- `quantizer_fsq.py`: Finite Scalar Quantization;
- `quantizer_lfq.py`: lookup-free quantization (MAGVIT-v2);
- `quantizer_residual.py`: residual quantization of depth n over any of them, and `build_quantizer`, which makes
  the one `config.quantizer` and `config.num_quantizers` name.

The quantization math runs in float32 whatever the autocast context, since nearest-neighbour search in bfloat16
picks wrong codes.

Distributed training: whatever a quantizer computes from a batch (code counts, EMA sums, k-means, restarts, LFQ's
batch entropy) is computed from the global batch, all processes' batches concatenated in rank order, so every
process keeps the same state and that state equals the one a single process would reach on the global batch.
"""

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput


@dataclass
class QuantizerOutput(ModelOutput):
    """
    Args:
        quantized: the decoder input, shape (batch, d, h, w): the chosen codes in value, with a gradient estimator
            (the straight-through z_e + sg(z_q - z_e) of van den Oord et al., 2017, or the rotation trick).
        indices: the code map, long, in [0, K): shape (batch, h, w), or (batch, n, h, w) for residual quantization
            of depth n > 1 (depth d's codes at [:, d]).
        codebook_loss: ||sg(z_e) - e||^2, a per-sample sum averaged over the batch (zero for EMA codebooks, FSQ and
            LFQ).
        commitment_loss: beta * ||z_e - sg(e)||^2, same reduction (zero for FSQ).
        perplexity: exp(H(p)) of this batch's code histogram p (K when all codes are used evenly, 1 for one code);
            the mean over depths for residual quantization.
        codebook_usage: fraction of the K codes used at least once in this batch (mean over depths).
        entropy_loss: LFQ's entropy penalty (zero for the other quantizers; last, so that the tuple positions of the
            fields before it are what they were).
    """

    quantized: torch.FloatTensor | None = None
    indices: torch.LongTensor | None = None
    codebook_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    perplexity: torch.FloatTensor | None = None
    codebook_usage: torch.FloatTensor | None = None
    entropy_loss: torch.FloatTensor | None = None


# ------------------------------------------------------------------------------------------------- code statistics


def code_statistics(counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Of a histogram of code counts (K,): the perplexity exp(H(p)) of the empirical distribution p (K when every
    code is used equally, 1 for a single code), its entropy H(p) = -sum_k p_k log p_k in nats, the fraction of the
    K codes used at least once (`usage`) and the number never used (`dead_codes`). The one definition used for a
    batch, an evaluation set and the training logs."""
    counts = counts.double()
    probs = counts / counts.sum().clamp_min(1)
    entropy = -torch.special.xlogy(probs, probs).sum()
    return {"perplexity": entropy.exp(), "entropy": entropy, "usage": (counts > 0).double().mean(),
            "dead_codes": (counts == 0).sum()}


def batch_statistics(indices: torch.Tensor, num_codes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(perplexity, usage) of the codes of one batch, float32."""
    stats = code_statistics(torch.bincount(indices.flatten(), minlength=num_codes))
    return stats["perplexity"].float(), stats["usage"].float()


# ----------------------------------------------------------------------------------------------------- distributed


def world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def is_rank0() -> bool:
    return world_size() == 1 or dist.get_rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over processes, in place (nothing to do in one process)."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_from_rank0(tensor: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        dist.broadcast(tensor, src=0)
    return tensor


def _batch_sizes(rows: torch.Tensor) -> list[int]:
    """Rows of `rows` on each process, in rank order."""
    size = torch.tensor([len(rows)], device=rows.device)
    sizes = [torch.empty_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    return [int(s) for s in sizes]


def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """All processes' rows (n_p, dim), concatenated in rank order: the global batch (shards may differ in size)."""
    if world_size() == 1:
        return rows
    sizes = _batch_sizes(rows)
    padded = rows.new_zeros(max(sizes), *rows.shape[1:])
    padded[: len(rows)] = rows
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def sample_rows(rows: torch.Tensor, num_samples: int) -> torch.Tensor:
    """`num_samples` rows drawn uniformly with replacement from the global batch, the same on every process: rank 0
    draws the row numbers (as one process drawing from the whole batch would), each row is sent by the process that
    holds it and summed into place with zeros from the others (exact)."""
    if world_size() == 1:
        return rows[torch.randint(len(rows), (num_samples,), device=rows.device)]
    sizes = _batch_sizes(rows)
    picks = torch.randint(sum(sizes), (num_samples,), device=rows.device) if is_rank0() else \
        torch.empty(num_samples, dtype=torch.long, device=rows.device)
    broadcast_from_rank0(picks)
    local = picks - sum(sizes[: dist.get_rank()])
    mine = (local >= 0) & (local < len(rows))
    if len(rows):
        chosen = torch.where(mine[:, None], rows[local.clamp(0, len(rows) - 1)], 0.0)
    else:
        chosen = rows.new_zeros(num_samples, *rows.shape[1:])
    return all_reduce_sum(chosen.contiguous())


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes in the forward pass and in the backward pass (the gradient of S_p is sum_q dL_q/dS)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(tensor.clone())

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(grad.clone())


def global_sum(local_sum: torch.Tensor) -> torch.Tensor:
    r"""The sum of `local_sum` over processes, with the gradient DDP turns into the gradient of the global batch.

    Its value is S = sum_p S_p on every process; the gradient it passes to this process's S_p is the sum over
    processes of their upstream gradients dL_q/dS (as SyncBatchNorm's). DDP averages the processes' gradients, so the
    update is (1/W) sum_p (sum_q dL_q/dS) dS_p/dtheta = dL/dS dS/dtheta for L = (1/W) sum_q L_q: the one-process
    gradient of a loss that uses a statistic of the global batch, whether every process's loss holds the whole
    statistic (LFQ's batch entropy, where the W upstream gradients are equal) or each only its own rows' use of it
    (FSQ's standardisation)."""
    if world_size() == 1:
        return local_sum
    return _AllReduceSum.apply(local_sum)


# ------------------------------------------------------------------------------------------------------- the math


class InitializedFromData:
    """The once-flag of a quantizer initialised from its first training batch (`config.kmeans_init`): the persistent
    `initialized` buffer says it happened, so a reloaded model is not initialised again. Mixed into an `nn.Module`."""

    def _register_initialized(self) -> None:
        self.register_buffer("initialized", torch.zeros((), dtype=torch.long))

    def _reset_initialized(self) -> None:
        self.initialized.zero_()
        self._initialized_seen = False

    def _initialization_done(self) -> bool:
        # Cache the buffer's value once it reads 1, to avoid a host sync every step; `initialized` is the truth.
        if not getattr(self, "_initialized_seen", False):
            self._initialized_seen = bool(self.initialized)
        return self._initialized_seen

    def _load_from_state_dict(self, *args, **kwargs):
        self._initialized_seen = False
        super()._load_from_state_dict(*args, **kwargs)


def linear_fp32(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)` in float32, whatever dtype the model was cast to."""
    bias = None if layer.bias is None else layer.bias.float()
    return F.linear(x, layer.weight.float(), bias)


def _squared_distances(z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """||z_i - e_k||^2 = ||z_i||^2 - 2 z_i.e_k + ||e_k||^2 for every pair, shape (N, K), with one matmul."""
    return torch.addmm(codes.pow(2).sum(1), z, codes.t(), alpha=-2).add_(z.pow(2).sum(1, keepdim=True))


def to_vectors(z_e: torch.Tensor) -> torch.Tensor:
    """(batch, d, h, w) -> (batch * h * w, d), positions in raster order within each image."""
    return z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])


def to_grid(vectors: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """(batch * h * w, d) -> (batch, d, h, w), contiguous."""
    return vectors.view(batch, height, width, -1).permute(0, 3, 1, 2).contiguous()


def check_latents(z_e: torch.Tensor, dim: int) -> None:
    if not isinstance(z_e, torch.Tensor) or z_e.dim() != 4 or z_e.shape[1] != dim or not z_e.is_floating_point():
        got = tuple(z_e.shape) if isinstance(z_e, torch.Tensor) else type(z_e).__name__
        dtype = f" of dtype {z_e.dtype}" if isinstance(z_e, torch.Tensor) else ""
        raise ValueError(
            f"z_e must be a float tensor of shape (batch, {dim}, h, w) (embedding_dim={dim}), got {got}{dtype}."
        )


def check_indices(indices: torch.Tensor, num_codes: int, shape: str = "(batch, h, w)") -> None:
    ndim = shape.count(",") + 1
    if not isinstance(indices, torch.Tensor) or indices.dim() != ndim or indices.is_floating_point():
        got = tuple(indices.shape) if isinstance(indices, torch.Tensor) else type(indices).__name__
        raise ValueError(f"indices must be an integer tensor of shape {shape}, got {got}.")
    if indices.numel() and (indices.min() < 0 or indices.max() >= num_codes):
        raise ValueError(
            f"indices must lie in [0, {num_codes}) (num_embeddings={num_codes}), "
            f"got values in [{int(indices.min())}, {int(indices.max())}]."
        )
