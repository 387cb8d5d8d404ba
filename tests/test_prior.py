"""Tests of the gated PixelCNN prior over code maps: causality (no blind spot), likelihood, sampling, save/load."""

import itertools
import math

import pytest
import torch

from hf_autoencoders.models.configuration_pixelcnn_prior import PixelCNNPriorConfig
from hf_autoencoders.models.modeling_pixelcnn_prior import PixelCNNPriorModel, PixelCNNPriorOutput

K, GRID = 16, 6
TINY = dict(num_embeddings=K, grid_size=GRID, hidden_size=16, num_layers=3, kernel_size=5)


def tiny_prior(seed: int = 0, **overrides) -> PixelCNNPriorModel:
    torch.manual_seed(seed)
    return PixelCNNPriorModel(PixelCNNPriorConfig(**{**TINY, **overrides})).eval()


def random_codes(batch: int, seed: int = 0, k: int = K, grid: int = GRID) -> torch.Tensor:
    return torch.randint(0, k, (batch, grid, grid), generator=torch.Generator().manual_seed(seed))


def raster_masks(grid: int = GRID):
    """before[p, q] = q comes strictly before p in raster order (p, q flattened indices)."""
    index = torch.arange(grid * grid)
    before = index[None, :] < index[:, None]
    return before


# ----------------------------------------------------------------------------------------------------- config


def test_config_defaults_and_validation():
    config = PixelCNNPriorConfig()
    assert config.model_type == "hf_autoencoders_pixelcnn_prior"
    assert (config.num_embeddings, config.grid_size, config.hidden_size) == (512, 7, 64)
    assert (config.num_layers, config.kernel_size, config.num_classes) == (8, 5, 0)
    for field, value in [
        ("num_embeddings", 1),
        ("grid_size", 0),
        ("hidden_size", 0),
        ("num_layers", 0),
        ("kernel_size", 4),
        ("kernel_size", 1),
        ("num_classes", -1),
        ("initializer_range", 0.0),
        ("grid_size", 7.0),
    ]:
        with pytest.raises(ValueError, match=field):
            PixelCNNPriorConfig(**{field: value})


# ----------------------------------------------------------------------------------------------- causality


@pytest.mark.parametrize("num_classes", [0, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_causality_by_perturbation(num_classes, seed):
    """Changing the code at p leaves the logits at p and every earlier position bit-identical, and changes the
    logits at every later one (with 3 layers of kernel 5 the receptive field covers the whole 6 x 6 grid, so this
    also rules out the blind spot up-right of p)."""
    model = tiny_prior(seed, num_classes=num_classes).double()
    n = GRID * GRID
    base = random_codes(1, seed)
    perturbed = base.repeat(n, 1, 1)
    p = torch.arange(n)
    shift = 1 + torch.randint(0, K - 1, (n,), generator=torch.Generator().manual_seed(seed))
    perturbed[p, p // GRID, p % GRID] = (perturbed[p, p // GRID, p % GRID] + shift) % K
    class_labels = torch.full((1,), 2) if num_classes else None
    with torch.no_grad():
        logits = model(base, class_labels=class_labels).logits
        logits_perturbed = model(perturbed, class_labels=None if class_labels is None else class_labels.repeat(n))
    # change[p, q]: largest change of the logits at q when the code at p changes.
    change = (logits_perturbed.logits - logits).abs().amax(-1).reshape(n, n)
    at_or_before = ~raster_masks().T  # at_or_before[p, q] = q <= p
    assert change[at_or_before].max() == 0, "a logit depends on the current or a later code"
    assert change[~at_or_before].min() > 1e-7, "a later logit ignores an earlier code (blind spot?)"
    # Named cases of the above: the next position and the one directly below.
    for p in range(n - 1):
        assert change[p, p + 1] > 1e-7
        if p + GRID < n:
            assert change[p, p + GRID] > 1e-7
    # The blind spot of the original PixelCNN: up-right of (3, 2) lies (1, 4), (2, 3), (2, 5)...
    row, col = 3, 2
    for up_right in [(2, 3), (1, 4), (2, 5), (0, 5)]:
        assert change[up_right[0] * GRID + up_right[1], row * GRID + col] > 1e-7


def test_causality_by_gradients():
    """d logits[p] / d onehot[q] is exactly zero for q >= p in raster order and non-zero for every q < p."""
    model = tiny_prior(3).double()
    codes = random_codes(1, 3)
    one_hot = torch.nn.functional.one_hot(codes, K).double().requires_grad_(True)
    embedding = model.get_input_embeddings()
    # Feed one_hot @ E in place of the lookup E[codes] (same value), so gradients reach the one-hot inputs.
    handle = embedding.register_forward_hook(lambda module, args, output: one_hot @ module.weight)
    try:
        logits = model(codes).logits[0].reshape(GRID * GRID, K)
        rows = []
        for p in range(GRID * GRID):
            (grad,) = torch.autograd.grad(logits[p].sum(), one_hot, retain_graph=True)
            rows.append(grad[0].abs().amax(-1).flatten())
    finally:
        handle.remove()
    sensitivity = torch.stack(rows)  # sensitivity[p, q] = max_k |d logits[p].sum() / d onehot[q, k]|
    before = raster_masks()
    assert sensitivity[~before].max() == 0
    assert sensitivity[before].min() > 1e-7
    assert torch.equal(sensitivity > 0, before)


# ------------------------------------------------------------------------------------------ loss, log_prob


def test_loss_matches_cross_entropy_by_hand():
    model = tiny_prior(0)
    codes, targets = random_codes(5, 0), random_codes(5, 1)
    out = model(codes)
    assert isinstance(out, PixelCNNPriorOutput)
    assert out.logits.shape == (5, GRID, GRID, K)
    log_probs = out.logits.log_softmax(-1)
    nll = -log_probs.gather(-1, codes[..., None]).squeeze(-1)  # (batch, grid, grid)
    torch.testing.assert_close(out.loss, nll.mean())
    torch.testing.assert_close(out.nll_per_sample, nll.sum((1, 2)).mean())
    torch.testing.assert_close(out.nll_per_sample, out.loss * GRID * GRID)
    torch.testing.assert_close(model.log_prob(codes), -nll.sum((1, 2)))
    # A fresh model predicts nearly uniformly: loss close to ln K.
    assert abs(out.loss.item() - math.log(K)) < 0.1
    # Explicit labels replace input_ids as targets; the logits are unchanged.
    out_labels = model(codes, labels=targets)
    torch.testing.assert_close(out_labels.logits, out.logits)
    torch.testing.assert_close(out_labels.loss, -log_probs.gather(-1, targets[..., None]).mean())
    no_loss = model(codes, return_loss=False)
    assert no_loss.loss is None and no_loss.nll_per_sample is None
    torch.testing.assert_close(no_loss.logits, out.logits)
    # The loss is a mean: the same for a batch and that batch repeated.
    torch.testing.assert_close(model(codes.repeat(3, 1, 1)).loss, out.loss)


def test_log_prob_is_normalised_over_all_code_maps():
    """sum over all K^(h*w) maps of p(c) = 1, which holds only for a proper raster-order factorisation."""
    model = tiny_prior(0, num_embeddings=3, grid_size=2, hidden_size=8, num_layers=2, kernel_size=3).double()
    all_maps = torch.tensor(list(itertools.product(range(3), repeat=4))).reshape(-1, 2, 2)
    with torch.no_grad():
        total = model.log_prob(all_maps).exp().sum()
    torch.testing.assert_close(total, torch.tensor(1.0, dtype=torch.float64))


def test_conditional_logits_depend_on_class_label():
    model = tiny_prior(0, num_classes=3)
    codes = random_codes(2, 0)
    with torch.no_grad():
        logits_0 = model(codes, class_labels=torch.tensor([0, 0])).logits
        logits_1 = model(codes, class_labels=torch.tensor([1, 1])).logits
        mixed = model(codes, class_labels=torch.tensor([0, 1])).logits
    # Every position, including the first (which sees no codes), depends on the label.
    assert (logits_0 - logits_1).abs().amax(-1).min() > 1e-5
    torch.testing.assert_close(mixed[0], logits_0[0])
    torch.testing.assert_close(mixed[1], logits_1[1])


def test_training_lowers_the_loss_on_structured_maps():
    """A few Adam steps on maps c[i, j] = (i + j + s) % K learn the diagonal structure."""
    model = tiny_prior(0).train()
    i, j = torch.meshgrid(torch.arange(GRID), torch.arange(GRID), indexing="ij")
    codes = torch.stack([(i + j + s) % K for s in range(4)])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model(codes).loss.item()
    for _ in range(40):
        loss = model(codes).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.25 * first


# ------------------------------------------------------------------------------------------------ sampling


def test_generate_shape_range_determinism_and_training_mode():
    model = tiny_prior(0)
    samples = model.generate(4, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (4, GRID, GRID) and samples.dtype == torch.long
    assert samples.min() >= 0 and samples.max() < K
    again = model.generate(4, generator=torch.Generator().manual_seed(0))
    other = model.generate(4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(samples, again)
    assert not torch.equal(samples, other)
    model.train()
    model.generate(1, generator=torch.Generator().manual_seed(0))
    assert model.training
    model.eval()
    model.generate(1, generator=torch.Generator().manual_seed(0))
    assert not model.training


@pytest.mark.parametrize("temperature", [0.0, 1e-6])
def test_cold_sampling_is_argmax_of_the_logits(temperature):
    """At temperature 0 (argmax) or near it, each sampled code is the argmax of the logits that forward gives on the
    finished sample (the same conditional, since the logits at p see only the codes before p)."""
    model = tiny_prior(0, num_classes=2)
    samples = model.generate(6, temperature=temperature, generator=torch.Generator().manual_seed(0), class_labels=1)
    with torch.no_grad():
        logits = model(samples, class_labels=torch.ones(6, dtype=torch.long)).logits
    assert torch.equal(samples, logits.argmax(-1))


def test_samples_follow_the_model_distribution():
    """Empirical frequencies of generated maps match exp(log_prob) over all 3^4 maps of a 2 x 2 grid."""
    model = tiny_prior(1, num_embeddings=3, grid_size=2, hidden_size=8, num_layers=2, kernel_size=3)
    with torch.no_grad():
        model.head[-1].weight.mul_(10)  # sharpen the distribution away from uniform
    all_maps = torch.tensor(list(itertools.product(range(3), repeat=4))).reshape(-1, 2, 2)
    with torch.no_grad():
        probs = model.log_prob(all_maps).exp()
    n = 20000
    samples = model.generate(n, generator=torch.Generator().manual_seed(0))
    index = (samples.reshape(n, 4) * torch.tensor([27, 9, 3, 1])).sum(-1)
    frequencies = torch.bincount(index, minlength=81).float() / n
    assert probs.max() > 3 / 81  # not uniform, so the test can tell a wrong sampler
    total_variation = 0.5 * (frequencies - probs).abs().sum()
    assert total_variation < 0.04, total_variation


# ------------------------------------------------------------------------------------------------ save/load


def test_save_and_load_roundtrip(tmp_path):
    model = tiny_prior(0, num_classes=2)
    model.save_pretrained(tmp_path)
    files = {path.name for path in tmp_path.iterdir()}
    assert "model.safetensors" in files and "config.json" in files
    assert not any(name.endswith(".bin") for name in files)
    reloaded = PixelCNNPriorModel.from_pretrained(tmp_path)
    config, config_reloaded = model.config.to_dict(), reloaded.config.to_dict()
    config.pop("_name_or_path"), config_reloaded.pop("_name_or_path")
    assert config_reloaded == config
    state, state_reloaded = model.state_dict(), reloaded.state_dict()
    assert state.keys() == state_reloaded.keys()
    for name, tensor in state.items():
        assert torch.equal(tensor, state_reloaded[name]), name
    labels = torch.tensor([0, 1, 1])
    before = model.generate(3, generator=torch.Generator().manual_seed(7), class_labels=labels)
    after = reloaded.generate(3, generator=torch.Generator().manual_seed(7), class_labels=labels)
    assert torch.equal(before, after)


# ----------------------------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_value_error():
    model = tiny_prior(0)
    codes = random_codes(2, 0)
    bad_inputs = [
        (codes.float(), "input_ids.*integer"),
        (codes[0], r"input_ids.*shape \(batch, 6, 6\)"),
        (random_codes(2, 0, grid=7), "input_ids.*grid_size"),
        (torch.full_like(codes, K), r"input_ids.*\[0, num_embeddings=16\)"),
        (torch.full_like(codes, -1), r"input_ids.*\[0, num_embeddings=16\)"),
    ]
    for input_ids, message in bad_inputs:
        with pytest.raises(ValueError, match=message):
            model(input_ids)
    with pytest.raises(ValueError, match="labels.*shape"):
        model(codes, labels=codes[:, :3])
    with pytest.raises(ValueError, match="labels.*num_embeddings"):
        model(codes, labels=codes + K)
    with pytest.raises(ValueError, match="labels must have batch size 2"):
        model(codes, labels=codes[:1])
    with pytest.raises(ValueError, match="class_labels.*unconditional"):
        model(codes, class_labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="class_labels.*unconditional"):
        model.generate(2, class_labels=0)
    with pytest.raises(ValueError, match="num_samples"):
        model.generate(0)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(1, temperature=-1.0)

    conditional = tiny_prior(0, num_classes=3)
    with pytest.raises(ValueError, match="class_labels are required"):
        conditional(codes)
    with pytest.raises(ValueError, match="class_labels are required"):
        conditional.generate(2)
    with pytest.raises(ValueError, match=r"class_labels must lie in \[0, num_classes=3\)"):
        conditional(codes, class_labels=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"class_labels must have shape \(2,\)"):
        conditional(codes, class_labels=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="class_labels must be an int or an integer tensor"):
        conditional(codes, class_labels=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="class_labels"):
        conditional.log_prob(codes)
