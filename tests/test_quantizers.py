"""Tests of the VQ and FSQ quantizers (hf_autoencoders/models/quantizer_vq.py, quantizer_fsq.py); the newer
quantizers (rotation trick, SimVQ, LFQ, residual) are in tests/test_modern_quantizers.py."""

from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from hf_autoencoders.models import VQVAEModel
from hf_autoencoders.models.configuration_autoencoders import VQVAEConfig
from hf_autoencoders.models.quantizer_fsq import FiniteScalarQuantizer
from hf_autoencoders.models.quantizer_residual import build_quantizer
from hf_autoencoders.models.quantizer_vq import VectorQuantizer
from hf_autoencoders.models.quantizers import QuantizerOutput


def make_vq(**kwargs) -> VectorQuantizer:
    # The paper's plain quantizer unless a test asks for an option (the config's defaults turn EMA, k-means init
    # and dead-code restart on).
    plain = {"codebook_ema": False, "kmeans_init": False, "dead_code_threshold": 0}
    fields = {"num_embeddings": 16, "embedding_dim": 4, **plain, **kwargs}
    return VectorQuantizer(VQVAEConfig(**fields))


def flat(z_e: torch.Tensor) -> torch.Tensor:
    return z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])


def brute_force_nearest(vectors: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    return ((vectors[:, None, :] - codes[None, :, :]) ** 2).sum(-1).argmin(1)


def clustered_latents(centres: torch.Tensor, batch: int, size: int = 3, spread: float = 0.05) -> torch.Tensor:
    """z_e (batch, d, size, size) whose vectors lie near the rows of `centres`, cycling through them."""
    n = batch * size * size
    vectors = centres[torch.arange(n) % len(centres)] + spread * torch.randn(n, centres.shape[1])
    return vectors.view(batch, size, size, -1).permute(0, 3, 1, 2).contiguous()


# ------------------------------------------------------------------------------------------------- nearest neighbour


def test_indices_are_brute_force_nearest_and_quantized_is_the_code():
    torch.manual_seed(0)
    vq = make_vq().eval()
    z_e = torch.randn(3, 4, 5, 5)
    out = vq(z_e)
    assert isinstance(out, QuantizerOutput)
    assert out.indices.shape == (3, 5, 5) and out.indices.dtype == torch.long
    assert out.quantized.shape == z_e.shape
    expected = brute_force_nearest(flat(z_e), vq.codebook.detach())
    assert torch.equal(out.indices.flatten(), expected)
    torch.testing.assert_close(flat(out.quantized), vq.codebook.detach()[expected])
    torch.testing.assert_close(out.quantized, vq.embed(out.indices))


def test_straight_through_copies_the_upstream_gradient():
    torch.manual_seed(0)
    vq = make_vq()
    z_e = torch.randn(2, 4, 3, 3, requires_grad=True)
    upstream = torch.randn(2, 4, 3, 3)
    vq(z_e).quantized.backward(upstream)
    torch.testing.assert_close(z_e.grad, upstream)
    assert vq.codebook.grad is None  # the decoder path does not reach the codebook


def test_codebook_loss_moves_only_codes_and_commitment_only_z_e():
    torch.manual_seed(0)
    beta = 0.25
    vq = make_vq(commitment_cost=beta)
    z_e = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = vq(z_e)
    chosen = vq.codebook.detach()[out.indices.flatten()]
    squared = ((flat(z_e.detach()) - chosen) ** 2).sum() / 2
    torch.testing.assert_close(out.codebook_loss, squared)
    torch.testing.assert_close(out.commitment_loss, beta * squared)

    out.codebook_loss.backward(retain_graph=True)
    assert z_e.grad is None
    expected = torch.zeros_like(vq.codebook).index_add_(0, out.indices.flatten(), 2 * (chosen - flat(z_e.detach())) / 2)
    torch.testing.assert_close(vq.codebook.grad, expected)

    vq.codebook.grad = None
    out.commitment_loss.backward()
    assert vq.codebook.grad is None
    torch.testing.assert_close(flat(z_e.grad), beta * 2 * (flat(z_e.detach()) - chosen) / 2)


def test_losses_do_not_depend_on_batch_size():
    torch.manual_seed(0)
    vq = make_vq().eval()
    z_e = torch.randn(8, 4, 3, 3)
    small, large = vq(z_e), vq(z_e.repeat(4, 1, 1, 1))
    torch.testing.assert_close(small.codebook_loss, large.codebook_loss)
    torch.testing.assert_close(small.commitment_loss, large.commitment_loss)
    torch.testing.assert_close(small.perplexity, large.perplexity)
    torch.testing.assert_close(small.codebook_usage, large.codebook_usage)


def test_perplexity_and_usage():
    vq = make_vq(num_embeddings=4, embedding_dim=2).eval()
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]]))
    z_e = clustered_latents(vq.codebook.detach()[:2], batch=2, size=2, spread=0.01)  # two codes, equally often
    out = vq(z_e)
    torch.testing.assert_close(out.perplexity, torch.tensor(2.0))
    torch.testing.assert_close(out.codebook_usage, torch.tensor(0.5))


def test_autocast_bfloat16_keeps_float32_indices():
    torch.manual_seed(0)
    vq = make_vq(num_embeddings=256, embedding_dim=16).eval()
    z_e = torch.randn(4, 16, 8, 8) * 3 + 5  # large norms: bfloat16 distances would pick wrong codes
    reference = vq(z_e).indices
    lossy = _squared_distances_bf16(flat(z_e), vq.codebook.detach()).argmin(1)
    assert not torch.equal(lossy, reference.flatten())  # the check below can fail
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vq(z_e)
        out_bf16 = vq(z_e.bfloat16())
    assert torch.equal(out.indices, reference)
    assert out.quantized.dtype == torch.float32 and out.commitment_loss.dtype == torch.float32
    assert out_bf16.quantized.dtype == torch.bfloat16


def _squared_distances_bf16(z, codes):
    z, codes = z.bfloat16(), codes.bfloat16()
    return (z**2).sum(1, keepdim=True) - 2 * z @ codes.t() + (codes**2).sum(1)


# ---------------------------------------------------------------------------------------------------------- EMA


def test_ema_step_follows_the_formula_and_takes_no_gradient():
    torch.manual_seed(0)
    decay, eps, num_codes = 0.9, 1e-5, 4
    vq = make_vq(num_embeddings=num_codes, embedding_dim=2, codebook_ema=True, ema_decay=decay, ema_epsilon=eps)
    assert not vq.codebook.requires_grad and "codebook" in dict(vq.named_buffers())  # a buffer: no optimizer step
    with torch.no_grad():
        vq.reset_parameters()
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 4.0]]))
        vq.ema_embed_sum.copy_(vq.codebook)
    old = vq.codebook.detach().clone()
    targets = old + 1.0  # each code's vectors sit 1 away on both axes
    z_e = clustered_latents(targets, batch=2, size=2, spread=0.1).requires_grad_()

    out = vq.train()(z_e)
    assert out.codebook_loss.item() == 0.0 and not out.codebook_loss.requires_grad
    vectors, indices = flat(z_e.detach()), out.indices.flatten()
    counts = torch.bincount(indices, minlength=num_codes).float()
    sums = torch.zeros(num_codes, 2).index_add_(0, indices, vectors)
    size = decay * 1.0 + (1 - decay) * counts
    embed_sum = decay * old + (1 - decay) * sums
    n = size.sum()
    expected = embed_sum / ((size + eps) / (n + num_codes * eps) * n)[:, None]
    torch.testing.assert_close(vq.codebook.detach(), expected)
    assert ((vq.codebook - targets).norm(dim=1) < (old - targets).norm(dim=1)).all()

    for _ in range(30):
        vq(clustered_latents(targets, batch=2, size=2, spread=0.1))
    assert (vq.codebook - targets).norm(dim=1).max() < 0.2  # converged to the cluster means

    (out.quantized.sum() + out.commitment_loss).backward()
    assert vq.codebook.grad is None

    frozen = vq.codebook.detach().clone()
    vq.eval()(z_e + 3)
    assert torch.equal(vq.codebook.detach(), frozen)  # no update in eval mode


# ------------------------------------------------------------------------------------------------------ k-means init


@pytest.mark.parametrize("ema", [False, True])
def test_kmeans_init_runs_on_the_first_training_call_only(ema):
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]])
    vq = make_vq(num_embeddings=4, embedding_dim=2, kmeans_init=True, kmeans_iters=10, codebook_ema=ema)
    before = vq.codebook.detach().clone()
    vq.eval()(clustered_latents(centres, batch=2))
    assert vq.initialized.item() == 0 and torch.equal(vq.codebook.detach(), before)  # eval does not initialise

    vq.train()(clustered_latents(centres, batch=4))
    assert vq.initialized.item() == 1
    # k-means from random starts may merge two clusters; check the codes sit on the data's clusters.
    distance_to_nearest_centre = torch.cdist(vq.codebook.detach(), centres).min(1).values
    assert distance_to_nearest_centre.max() < 0.2
    if ema:
        averages = vq.ema_embed_sum / vq.ema_cluster_size[:, None]
        torch.testing.assert_close(averages, vq.codebook, rtol=0, atol=0.05)

    if not ema:  # a second training call (gradient codebook) leaves the codebook alone
        initialised = vq.codebook.detach().clone()
        vq(clustered_latents(centres + 100, batch=4))
        assert torch.equal(vq.codebook.detach(), initialised)

        reloaded = make_vq(num_embeddings=4, embedding_dim=2, kmeans_init=True)
        reloaded.load_state_dict(vq.state_dict())
        reloaded.train()(clustered_latents(centres + 100, batch=4))
        assert torch.equal(reloaded.codebook.detach(), initialised)  # a reloaded model does not re-initialise


def test_kmeans_init_with_fewer_vectors_than_codes():
    torch.manual_seed(0)
    vq = make_vq(num_embeddings=64, embedding_dim=4, kmeans_init=True).train()
    z_e = torch.randn(1, 4, 2, 2)
    vq(z_e)
    assert vq.initialized.item() == 1
    # starts drawn with replacement; duplicates stay empty clusters, so every code is one of the 4 vectors
    gaps = (vq.codebook.detach()[:, None, :] - flat(z_e)[None]).abs().sum(-1).min(1).values
    assert gaps.max() < 1e-6
    assert len(torch.unique(vq.codebook.detach(), dim=0)) == 4


# -------------------------------------------------------------------------------------------------- dead-code restart


@pytest.mark.parametrize("ema", [False, True])
def test_dead_codes_are_reseeded_after_the_threshold(ema):
    torch.manual_seed(0)
    vq = make_vq(num_embeddings=8, embedding_dim=2, dead_code_threshold=2, codebook_ema=ema).train()
    live = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    with torch.no_grad():
        vq.codebook.copy_(torch.cat([live, torch.full((4, 2), 100.0)]))
        if ema:
            vq.ema_embed_sum.copy_(vq.codebook)
    for _ in range(2):
        vq(clustered_latents(live, batch=2, spread=0.05))
    assert vq.steps_since_used.tolist() == [0, 0, 0, 0, 2, 2, 2, 2]
    assert (vq.codebook.detach()[4:] > 99).all()  # not yet restarted

    z_e = clustered_latents(live, batch=2, spread=0.05)
    vq(z_e)
    to_batch = (vq.codebook.detach()[4:, None, :] - flat(z_e)[None]).norm(dim=-1).min(1).values
    if ema:
        assert to_batch.max() < 0.5  # re-seeded, then moved by this step's EMA update toward its assignments
        assert (vq.ema_cluster_size[4:] < 2).all()  # EMA state restarted with the codes
    else:
        assert to_batch.max() < 1e-6  # each re-seeded code is a vector of the batch
        torch.testing.assert_close(vq.codebook.detach()[:4], live)
    assert (vq.steps_since_used[4:] <= 1).all()


# ------------------------------------------------------------------------------------ factorized and l2-normalised


@pytest.mark.parametrize(("codebook_dim", "l2"), [(None, True), (3, False), (3, True)])
def test_factorized_and_l2_codes(codebook_dim, l2):
    torch.manual_seed(0)
    vq = make_vq(embedding_dim=8, codebook_dim=codebook_dim, l2_normalized_codes=l2)
    z_e = torch.randn(2, 8, 3, 3, requires_grad=True)
    out = vq.train()(z_e)
    assert out.quantized.shape == z_e.shape
    (out.quantized.sum() + out.commitment_loss + out.codebook_loss).backward()
    assert z_e.grad is not None and z_e.grad.abs().sum() > 0
    if codebook_dim is not None:
        assert vq.project_in.weight.grad.abs().sum() > 0 and vq.project_out.weight.grad.abs().sum() > 0
        assert vq.codebook.shape == (16, codebook_dim)

    with torch.no_grad():
        out = vq.eval()(z_e)
        torch.testing.assert_close(vq.embed(out.indices), out.quantized)
        lookup = flat(z_e)
        if codebook_dim is not None:
            lookup = vq.project_in(lookup)
        codes = vq.codebook
        if l2:
            lookup, codes = F.normalize(lookup, dim=1), F.normalize(codes, dim=1)
            # nearest on the sphere = highest cosine similarity
            assert torch.equal(out.indices.flatten(), (lookup @ codes.t()).argmax(1))
        assert torch.equal(out.indices.flatten(), brute_force_nearest(lookup, codes))


# -------------------------------------------------------------------------------------------------------- stochastic


def test_stochastic_quantization_temperature():
    torch.manual_seed(0)
    z_e = torch.randn(4, 4, 4, 4)
    cold = make_vq(stochastic_quantization=True, quantization_temperature=1e-6)
    nearest = cold.eval()(z_e).indices
    assert torch.equal(cold.train()(z_e).indices, nearest)

    hot = make_vq(stochastic_quantization=True, quantization_temperature=1e6)
    hot.load_state_dict(cold.state_dict())
    assert torch.equal(hot.eval()(z_e).indices, nearest)  # eval mode is always nearest
    sampled = hot.train()(z_e).indices
    assert (sampled != nearest).float().mean() > 0.5  # near-uniform sampling over 16 codes


# --------------------------------------------------------------------------------------------------------------- FSQ


def make_fsq(levels=(8, 5, 3), dim=4) -> FiniteScalarQuantizer:
    return FiniteScalarQuantizer(VQVAEConfig(quantizer="fsq", fsq_levels=levels, embedding_dim=dim))


def test_fsq_indices_embed_and_losses():
    torch.manual_seed(0)
    fsq = make_fsq()
    assert fsq.num_embeddings == 120
    z_e = (torch.randn(4, 4, 5, 5) * 5).requires_grad_()
    out = fsq.train()(z_e)
    assert out.indices.dtype == torch.long and out.indices.shape == (4, 5, 5)
    assert out.indices.min() >= 0 and out.indices.max() < 120
    assert out.codebook_loss.item() == 0.0 and out.commitment_loss.item() == 0.0
    out.quantized.sum().backward()
    assert z_e.grad.abs().sum() > 0 and fsq.project_in.weight.grad.abs().sum() > 0  # straight-through rounding

    with torch.no_grad():
        out = fsq.eval()(z_e)
    torch.testing.assert_close(fsq.embed(out.indices), out.quantized)


def test_fsq_input_std_standardizes_each_channel_with_batch_then_running_statistics():
    """fsq_input_std = s: in training each projected channel is s (z - mean) / std over the batch, so the codes do
    not depend on the projection's per-channel scale and shift (what keeps a channel from drifting into the tanh's
    flat ends); the running statistics average the first batches exactly and serve in eval."""
    torch.manual_seed(0)
    fsq = make_fsq(levels=(8, 8), dim=2).train()
    assert fsq.input_std == 0.8
    first, second = torch.randn(64, 2) * 3 + 1, torch.randn(64, 2) * 0.5 - 2
    standardized = fsq.standardize(first)
    torch.testing.assert_close(standardized.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(standardized.std(0, correction=0), torch.full((2,), 0.8), atol=1e-4, rtol=0)
    fsq.standardize(second)
    for statistic, batch in (("running_mean", lambda x: x.mean(0)), ("running_var", lambda x: x.var(0, correction=0))):
        torch.testing.assert_close(getattr(fsq, statistic), (batch(first) + batch(second)) / 2)
    fsq.eval()
    expected = (first - fsq.running_mean) * 0.8 / (fsq.running_var + 1e-5).sqrt()
    torch.testing.assert_close(fsq.standardize(first), expected)

    z_e = torch.randn(4, 2, 5, 5)
    codes = fsq.train()(z_e).indices
    with torch.no_grad():
        fsq.project_in.weight.mul_(torch.tensor([[4.0], [0.25]]))
        fsq.project_in.bias.add_(torch.tensor([3.0, -2.0]))
    assert torch.equal(fsq(z_e).indices, codes)
    assert len(codes.unique()) > 20  # spread over the 64-point grid, not a handful of codes
    paper = FiniteScalarQuantizer(VQVAEConfig(quantizer="fsq", fsq_levels=(8, 8), embedding_dim=2,
                                              fsq_input_std=None))
    assert not [name for name, _ in paper.named_buffers()]


def test_fsq_grid_and_index_round_trip():
    fsq = make_fsq(levels=(8, 5, 3, 2))
    indices = torch.arange(fsq.num_embeddings)
    codes = fsq.indices_to_codes(indices)
    assert torch.equal(fsq.codes_to_indices(codes), indices)
    assert len(torch.unique(codes, dim=0)) == fsq.num_embeddings
    # rounding the bounded values of any input gives exactly L values per channel, 0 included
    sweep = torch.linspace(-20, 20, 4001)[:, None].expand(-1, 4)
    rounded = fsq.bound(sweep).round()
    for channel, level in enumerate((8, 5, 3, 2)):
        values = torch.unique(rounded[:, channel])
        assert len(values) == level and 0 in values
        assert values.min() == -(level // 2)
    assert torch.equal(fsq.bound(torch.zeros(1, 4)), torch.zeros(1, 4))


def test_fsq_perplexity_and_usage_under_autocast():
    torch.manual_seed(0)
    fsq = make_fsq()
    z_e = torch.randn(2, 4, 3, 3)
    reference = fsq.eval()(z_e)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fsq(z_e)
    assert torch.equal(out.indices, reference.indices)
    assert 1 <= out.perplexity <= 18 and 0 < out.codebook_usage <= 18 / 120


def test_standardized_fsq_trains_and_evaluates_in_a_bfloat16_model():
    """A model cast to bfloat16 keeps its running statistics in bfloat16 and trains and evaluates."""
    torch.manual_seed(0)
    model = VQVAEModel(VQVAEConfig(quantizer="fsq", fsq_levels=(8, 8), image_size=16, num_channels=3, hidden_size=16,
                                   num_residual_blocks=1)).to(torch.bfloat16)
    x = torch.rand(4, 3, 16, 16, dtype=torch.bfloat16)
    model.train()(x).loss.backward()
    assert model.quantizer.running_var.dtype == torch.bfloat16 and int(model.quantizer.num_batches_tracked) == 1
    with torch.no_grad():
        assert torch.isfinite(model.eval()(x).reconstruction.float()).all()


# --------------------------------------------------------------------------------------------- building and errors


def test_build_quantizer_and_bad_input():
    assert isinstance(build_quantizer(VQVAEConfig(embedding_dim=4)), VectorQuantizer)
    assert isinstance(build_quantizer(VQVAEConfig(quantizer="fsq", embedding_dim=4)), FiniteScalarQuantizer)
    vq = make_vq()
    with pytest.raises(ValueError, match="z_e"):
        vq(torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="indices"):
        vq.embed(torch.tensor([[[16]]]))
    with pytest.raises(ValueError, match="indices"):
        make_fsq().embed(torch.zeros(2, 3))


def test_state_is_in_the_state_dict():
    vq = make_vq(codebook_ema=True, kmeans_init=True, dead_code_threshold=3).train()
    vq(torch.randn(2, 4, 3, 3))
    state = vq.state_dict()
    assert {"codebook", "ema_cluster_size", "ema_embed_sum", "initialized", "steps_since_used"} <= set(state)
    clone = make_vq(codebook_ema=True, kmeans_init=True, dead_code_threshold=3)
    clone.load_state_dict(state)
    z_e = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(clone.eval()(z_e).quantized, vq.eval()(z_e).quantized)


# ------------------------------------------------------------------------------------------------------ distributed


def _sync_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size, timeout=timedelta(seconds=60)
    )
    try:
        torch.manual_seed(0)  # the same initial codebook everywhere, as DDP would broadcast
        vq = make_vq(
            num_embeddings=16, codebook_ema=True, ema_decay=0.8, kmeans_init=True, dead_code_threshold=1
        ).train()
        torch.manual_seed(1 + rank)  # different data and different random draws on each rank
        restarts = 0
        for _ in range(4):
            restarts += int((vq.steps_since_used >= 1).sum())
            vq(torch.randn(2, 4, 3, 3) * (1 + rank) + 3 * rank)
        state = {name: tensor.clone() for name, tensor in vq.state_dict().items()}
        torch.save({"state": state, "restarts": restarts}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_codebooks_stay_identical_across_processes(tmp_path):
    # fork (not spawn): the children need not re-import torch and transformers, which takes most of the time
    start_method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    args = (2, str(tmp_path / "init"), str(tmp_path))
    mp.start_processes(_sync_worker, args=args, nprocs=2, join=True, start_method=start_method)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    assert ranks[0]["restarts"] > 0  # dead-code restarts did happen
    assert ranks[0]["state"]["initialized"].item() == 1
    for name, tensor in ranks[0]["state"].items():
        assert torch.equal(tensor, ranks[1]["state"][name]), name
