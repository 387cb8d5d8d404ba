"""Lookup-free quantization (Yu et al., 2023, "Language Model Beats Diffusion: Tokenizer is Key to Visual
Generation", MAGVIT-v2)."""

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_autoencoders import VQVAEConfig
from .quantizers import (
    InitializedFromData,
    QuantizerOutput,
    all_reduce_sum,
    batch_statistics,
    check_indices,
    check_latents,
    gather_rows,
    global_sum,
    linear_fp32,
    to_grid,
    to_vectors,
)


def binary_entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(Bernoulli(sigmoid(a))) in nats, elementwise: sigmoid(a) softplus(-a) + sigmoid(-a) softplus(a)."""
    return torch.sigmoid(logits) * F.softplus(-logits) + torch.sigmoid(-logits) * F.softplus(logits)


class LookupFreeQuantizer(InitializedFromData, nn.Module):
    r"""
    Lookup-free quantization, LFQ (MAGVIT-v2). z_e is projected (per position, a 1x1 linear map) to b = log2(K)
    channels z; each channel is quantized to its sign,

        q_i = +1 if z_i > 0 else -1,        index = sum_i 2^i [q_i = +1],

    so the K = 2^b codes are the corners of the cube {-1, +1}^b and the index is the binary number their signs spell:
    no codebook, no lookup. The decoder reads the straight-through z + sg(q - z), projected back to d.

    Losses (per-sample sums averaged over the batch, as the other terms):

        commitment_loss = beta ||z - sg(q)||^2,
        entropy_loss    = lambda D (E_n[H(p_n)] - gamma H(E_n[p_n]))          (training mode only; 0 in eval),

    with p_n(c) = softmax_c(-||z_n - c||^2 / tau) the soft assignment of position n to the K codes and E_n the mean
    over the batch's positions. The first entropy makes each assignment confident; the second, the entropy of the
    batch's average assignment, is maximised (so subtracted) to spread the batch over all codes (MAGVIT-v2; Jansen et
    al., 2020). lambda = `lfq_entropy_loss_weight`, gamma = `lfq_batch_maximization_weight`, tau =
    `lfq_entropy_temperature`. MAGVIT-v2 weighs the penalty by lambda against a reconstruction loss that is a mean
    over the D = C H W pixel values; this library's reconstruction loss is their sum, so the penalty is multiplied
    by D to keep MAGVIT-v2's balance.

    The soft assignment factorises over the channels: -||z - c||^2 = 2 z.c - ||z||^2 - b, so
    p_n(c) = prod_i sigmoid(c_i a_{n,i}) with a = 4 z / tau. Hence H(p_n) = sum_i h(sigmoid(a_{n,i})) exactly (h the
    binary entropy), in O(b) per position, and log p_n(c) = a_n . bits(c) - sum_i softplus(a_{n,i}) over the codes
    c of a group of bits is one matmul. The batch entropy is computed over `lfq_entropy_groups` = G groups of b / G
    bits, as sum_g H(E_n[p_{n,g}]): exact for G = 1; for G > 1 an upper bound (the joint entropy is at most the sum of
    its parts) at cost N G 2^(b/G) instead of N 2^b.

    `kmeans_init` is LFQ's data initialisation: on the first training forward the bias of the 1x1 map is shifted so
    that every channel of z has mean 0 over the global batch, b <- b - mean(z). Each bit then splits the batch about
    evenly, instead of starting (and, at tau = 0.01, where the entropy terms' gradients vanish away from z = 0,
    staying) constant for most positions. The `initialized` buffer records it.

    Distributed training: the batch's average assignment is the global batch's (summed over processes, with the
    gradient of `quantizers.global_sum`), so the entropy term and its gradient are those of one process on the
    global batch.
    """

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.embedding_dim = config.embedding_dim
        self.num_embeddings = config.num_embeddings
        self.num_bits = config.num_embeddings.bit_length() - 1
        self.commitment_cost = config.commitment_cost
        self.entropy_loss_weight = config.lfq_entropy_loss_weight
        self.batch_maximization_weight = config.lfq_batch_maximization_weight
        self.temperature = config.lfq_entropy_temperature
        self.entropy_groups = config.lfq_entropy_groups
        self.num_pixels = config.num_pixels
        self.project_in = nn.Linear(self.embedding_dim, self.num_bits)
        self.project_out = nn.Linear(self.num_bits, self.embedding_dim)
        self.kmeans_init = config.kmeans_init
        if self.kmeans_init:
            self._register_initialized()

    @torch.no_grad()
    def _center(self, vectors: torch.Tensor) -> None:
        """b <- b - mean(z) over the global batch (first training step only)."""
        mean = linear_fp32(self.project_in, gather_rows(vectors)).mean(0)  # over the global batch, exactly
        self.project_in.bias.sub_(mean.to(self.project_in.bias.dtype))
        self.initialized.fill_(1)

    def _place_values(self, device: torch.device) -> torch.Tensor:
        """2^i for the b channels, long (a plain attribute per device: nothing to save or restore)."""
        cache = self.__dict__.setdefault("_place_value_cache", {})
        if device not in cache:
            cache[device] = 2 ** torch.arange(self.num_bits, device=device)
        return cache[device]

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Sign codes (..., b) in {-1, +1} -> indices (...) in [0, 2^b)."""
        return ((codes > 0).long() * self._place_values(codes.device)).sum(-1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices (...) -> sign codes (..., b) in {-1, +1}, float32."""
        bits = (indices.long()[..., None] // self._place_values(indices.device)) % 2
        return bits.float() * 2 - 1

    def forward(self, z_e: torch.Tensor) -> QuantizerOutput:
        """Quantize z_e of shape (batch, d, h, w); see the class docstring for the math."""
        check_latents(z_e, self.embedding_dim)
        batch, _, height, width = z_e.shape
        with torch.autocast(device_type=z_e.device.type, enabled=False):
            vectors = to_vectors(z_e.float())
            if self.training and self.kmeans_init and not self._initialization_done():
                self._center(vectors.detach())
            z = linear_fp32(self.project_in, vectors)  # (batch * h * w, b)
            codes = torch.where(z > 0, 1.0, -1.0)
            indices = self.codes_to_indices(codes)
            commitment_loss = self.commitment_cost * (z - codes).pow(2).sum() / batch
            if self.training and self.entropy_loss_weight > 0:
                entropy_loss = self.entropy_loss_weight * self.num_pixels * self.entropy_penalty(z)
            else:
                entropy_loss = z.new_zeros(())
            quantized = to_grid(linear_fp32(self.project_out, z + (codes - z).detach()), batch, height, width)
            perplexity, usage = batch_statistics(indices, self.num_embeddings)
        return QuantizerOutput(
            quantized=quantized.to(z_e.dtype),
            indices=indices.view(batch, height, width),
            codebook_loss=z.new_zeros(()),
            commitment_loss=commitment_loss,
            entropy_loss=entropy_loss,
            perplexity=perplexity,
            codebook_usage=usage,
        )

    def entropy_penalty(self, z: torch.Tensor) -> torch.Tensor:
        """E_n[H(p_n)] - gamma sum_g H(E_n[p_{n,g}]) in nats, over the positions z (N, b) of the global batch."""
        logits = 4 * z / self.temperature
        count = all_reduce_sum(z.new_tensor(float(len(z))))
        per_position = global_sum(binary_entropy(logits).sum()) / count
        if self.batch_maximization_weight == 0:
            return per_position
        batch_entropy = z.new_zeros(())
        group_bits = self.num_bits // self.entropy_groups
        bits = self.indices_to_codes(torch.arange(2**group_bits, device=z.device))[:, :group_bits].add(1).div(2)
        for group in logits.split(group_bits, dim=1):
            log_probs = group @ bits.t() - F.softplus(group).sum(1, keepdim=True)  # log p_{n,g}(c), (N, 2^(b/G))
            mean = global_sum(log_probs.exp().sum(0)) / count
            batch_entropy = batch_entropy - (mean * mean.clamp_min(torch.finfo(mean.dtype).tiny).log()).sum()
        return per_position - self.batch_maximization_weight * batch_entropy

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """The decoder input of a code map (batch, h, w): the sign codes projected up, shape (batch, d, h, w)."""
        check_indices(indices, self.num_embeddings)
        with torch.autocast(device_type=indices.device.type, enabled=False):
            z_q = linear_fp32(self.project_out, self.indices_to_codes(indices))
        return z_q.permute(0, 3, 1, 2).contiguous().to(self.project_out.weight.dtype)
