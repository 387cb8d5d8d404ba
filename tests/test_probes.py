"""The timing and probes the backbones experiment and the benchmarks measure with (`hf_autoencoders.evaluation.timing`
and `.probes`), on cases whose answer is known."""

import pytest
import torch

from hf_autoencoders.evaluation.probes import (
    activation_bytes,
    border_interior_ratio,
    error_map,
    latent_cell_gradient,
    outside_share,
    patch_border_mask,
    peak_training_bytes,
    training_memory,
)
from hf_autoencoders.evaluation.timing import StepTimer, alternate, equal_time_steps
from hf_autoencoders.models import autoencoder_classes


def model(family, **fields):
    config_class, model_class = autoencoder_classes(family)
    torch.manual_seed(0)
    return model_class(config_class(**fields))


def test_alternate_reverses_the_order_every_other_round_and_keeps_each_result():
    calls = []

    def measure(name):
        def call():
            calls.append(name)
            return f"{name}{calls.count(name)}"
        return call

    class Bar:
        n = 0

        def update(self):
            self.n += 1

    bar = Bar()
    results = alternate({name: measure(name) for name in "abc"}, 3, bar)
    assert calls == list("abccbaabc") and bar.n == 9
    assert results == {"a": ["a1", "a2", "a3"], "b": ["b1", "b2", "b3"], "c": ["c1", "c2", "c3"]}


def test_equal_time_steps_and_step_intervals():
    seconds = {"mlp": 0.01, "conv": 0.04, "vit": 0.16}
    assert equal_time_steps(seconds, 40 * seconds["conv"]) == {"mlp": 160, "conv": 40, "vit": 10}
    assert equal_time_steps({"conv": 1.0, "vit": 1000.0}, 40.0)["vit"] == 1  # at least one step
    ticks = iter([0.0, 5.0, 5.5, 5.75])
    timer = StepTimer(timer=lambda: next(ticks))
    for _ in range(4):
        timer.on_step_end(None, None, None)
    assert timer.intervals() == [5.0, 0.5, 0.25] and timer.intervals(skip=1) == [0.5, 0.25]


def test_patch_border_ratio_on_known_errors():
    mask = patch_border_mask(8, 4)
    assert mask.sum() == 4 * 12 and not mask[1:3, 1:3].any() and mask[0].all()  # each 4x4 patch: a ring of 12
    errors = torch.where(mask, 2.0, 0.5)
    assert border_interior_ratio(errors, 4) == pytest.approx(4.0)
    assert border_interior_ratio(torch.full((12, 12), 0.3), 3) == pytest.approx(1.0)
    # images reconstructed with an error only on patch borders, measured through the squared errors
    x = torch.rand(5, 1, 8, 8)
    recon = x + 0.1 * mask
    squared = ((recon - x) ** 2).sum((0, 1)) + 1e-4 * 5
    assert border_interior_ratio(squared, 4) == pytest.approx((0.01 * 5 + 5e-4) / 5e-4)
    with pytest.raises(ValueError, match="no interior"):
        border_interior_ratio(errors, 2)
    with pytest.raises(ValueError, match="does not tile"):
        border_interior_ratio(torch.ones(10, 10), 4)


def test_error_map_is_the_mean_squared_error_by_position():
    ae = model("ae", backbone="mlp", hidden_size=16, latent_dim=4).eval()
    images = torch.rand(7, 1, 28, 28)
    with torch.no_grad():
        expected = ((ae(images).reconstruction.clamp(0, 1) - images) ** 2).sum(1).mean(0)
    errors = error_map(ae, images, batch_size=3)
    assert errors.shape == (28, 28) and torch.allclose(errors.float(), expected, atol=1e-6)


def test_locality_measures():
    # a gradient wholly inside the 3x3 cells around the centre of a 7x7 grid on 28x28 pixels, then an even one
    inside = torch.zeros(28, 28)
    inside[8:20, 8:20] = 1.0
    assert outside_share(inside, 7) == pytest.approx((0.0, 1 - 144 / 784))
    share, area = outside_share(torch.ones(28, 28), 7)
    assert share == pytest.approx(area)

    # a conv VQ-VAE's latent cell depends on its neighbourhood only: none of the gradient beyond its receptive field
    conv = model("vqvae", backbone="conv", hidden_size=8, num_residual_blocks=0, embedding_dim=4,
                 num_embeddings=8).eval()
    gradient = latent_cell_gradient(conv, torch.rand(4, 1, 28, 28))
    assert gradient.shape == (28, 28) and gradient.sum() > 0
    assert gradient[:, :4].sum() == 0 and gradient[:4].sum() == 0  # two 4x4 stride-2 convs + a 3x3 see 18 pixels
    ae = model("ae", backbone="mlp", hidden_size=16, latent_dim=4)
    assert latent_cell_gradient(ae, torch.rand(2, 1, 28, 28)) is None  # a vector latent has no cells


def test_memory_grows_with_the_batch_and_leaves_the_weights_out():
    ae = model("ae", backbone="mlp", hidden_size=16, latent_dim=4).train()
    small, large = (activation_bytes(ae, torch.rand(n, 1, 28, 28)) for n in (8, 16))
    assert small > 0 and large == 2 * small  # saved-for-backward bytes, not the weights

    vae = model("vae", backbone="mlp", hidden_size=64)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3)
    small = peak_training_bytes(vae, torch.rand(8, 1, 28, 28), optimizer)
    weights = sum(p.numel() * 4 for p in vae.parameters())
    assert small > 3 * weights  # parameters, gradients and two Adam moments at least
    x = torch.rand(64, 1, 28, 28)
    large = peak_training_bytes(vae, x, optimizer)
    assert (large - small) / 56 > 784 * 4  # at least the decoder output of each image
    half = peak_training_bytes(vae, x[:32], optimizer)
    assert training_memory(vae, x, optimizer) == (large, (large - half) / 32)  # the slope from B/2 to B
    with pytest.raises(ValueError, match="at least 2"):
        training_memory(vae, torch.rand(1, 1, 28, 28))
