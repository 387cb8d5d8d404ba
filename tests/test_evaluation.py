import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from hf_autoencoders.evaluation import (
    CodebookUsage,
    SmallCNN,
    classifier_accuracy,
    codebook_stats,
    downstream_accuracy,
    evaluate,
    interpolate_latents,
    likelihood_bounds,
    linear_probe_accuracy,
    mse,
    nats_to_bits_per_dim,
    psnr,
    sample_quality,
    ssim,
    train_classifier,
)
from hf_autoencoders.models import DiagonalGaussian as Posterior


def elbo(model, x, num_samples, generator, batch_size=256):
    return torch.cat([likelihood_bounds(model, c, num_samples, generator)[0] for c in x.split(batch_size)])


def importance_sampled_nll(model, x, num_samples, generator, batch_size=256):
    return torch.cat([-likelihood_bounds(model, c, num_samples, generator)[1] for c in x.split(batch_size)])


def rand_images(n, c, h, w, seed=0, low=0.0, high=1.0):
    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(n, c, h, w, generator=g)


# ---------------------------------------------------------------------------------------------- MSE / PSNR


def test_mse_is_per_pixel_mean():
    x = torch.zeros(2, 1, 2, 2)
    y = x.clone()
    y[0, 0, 0, 0] = 1.0  # image 0: MSE 1/4, image 1: MSE 0
    assert mse(x, y) == pytest.approx(0.125)
    assert mse(x, y, reduction="none").tolist() == pytest.approx([0.25, 0.0])


@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.1])
def test_psnr_matches_noise_level(sigma):
    x = rand_images(16, 3, 32, 32, low=0.3, high=0.7)
    noisy = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))  # no clipping
    assert psnr(x, noisy) == pytest.approx(10 * math.log10(1 / sigma**2), abs=0.2)
    # data_range scales the peak: PSNR of images in [0, 255] equals that of the same images in [0, 1]
    assert psnr(255 * x, 255 * noisy, data_range=255.0) == pytest.approx(psnr(x, noisy), abs=1e-6)


def test_psnr_of_identical_images_is_inf():
    x = rand_images(3, 1, 8, 8)
    assert psnr(x, x) == math.inf
    assert torch.isinf(psnr(x, x, reduction="none")).all()
    y = x.clone()
    y[0] += 0.1
    per_image = psnr(x, y, reduction="none")
    assert math.isfinite(per_image[0].item()) and torch.isinf(per_image[1:]).all()


def test_fidelity_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="4-d"):
        ssim(torch.zeros(4, 4), torch.zeros(4, 4))
    with pytest.raises(ValueError, match="reduction"):
        mse(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), reduction="sum")


# ---------------------------------------------------------------------------------------------------- SSIM


def reference_ssim(x: np.ndarray, y: np.ndarray, data_range=1.0) -> float:
    """Independent SSIM of one 2-d image pair: scipy's truncated Gaussian filter (radius 5 = 11x11 window for
    sigma 1.5), then the 5-pixel border where the window leaves the image is cropped (valid positions only)."""
    blur = lambda a: gaussian_filter(a, sigma=1.5, truncate=3.5)  # noqa: E731
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s[5:-5, 5:-5].mean()


def test_ssim_matches_independent_reference():
    x = rand_images(2, 3, 28, 28, seed=0).double()
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype)).clamp(0, 1)
    expected = [np.mean([reference_ssim(x[i, c].numpy(), y[i, c].numpy()) for c in range(3)]) for i in range(2)]
    assert ssim(x, y, reduction="none").tolist() == pytest.approx(expected, abs=1e-10)


def test_ssim_identity_symmetry_bounds_and_noise_ordering():
    x = rand_images(4, 1, 28, 28)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    y = rand_images(4, 1, 28, 28, seed=1)
    assert ssim(x, y) == pytest.approx(ssim(y, x), abs=1e-12)
    values = ssim(x, y, reduction="none")
    assert ((values >= -1) & (values <= 1)).all()
    assert ssim(x, 1 - x) < 0  # anti-correlated structure
    g = torch.Generator().manual_seed(2)
    scores = [ssim(x, x + s * torch.randn(x.shape, generator=g)) for s in (0.01, 0.05, 0.1, 0.3, 1.0)]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.99 and scores[-1] < 0.2


def test_ssim_of_constant_images_is_analytic():
    a, b = 0.2, 0.7
    c1 = 0.01**2
    x, y = torch.full((1, 1, 28, 28), a), torch.full((1, 1, 28, 28), b)
    # zero variances: the structure term is C2 / C2 = 1 and only the luminance term remains
    assert ssim(x, y) == pytest.approx((2 * a * b + c1) / (a**2 + b**2 + c1), rel=1e-6)


def test_ssim_averages_channels_and_handles_small_images():
    x, y = rand_images(2, 3, 32, 32, seed=0), rand_images(2, 3, 32, 32, seed=1)
    per_channel = torch.stack([ssim(x[:, [c]], y[:, [c]], reduction="none") for c in range(3)]).mean(0)
    assert ssim(x, y, reduction="none").tolist() == pytest.approx(per_channel.tolist(), abs=1e-12)
    tiny = rand_images(2, 1, 6, 6)  # smaller than the 11x11 window: a 5x5 window is used
    assert ssim(tiny, tiny) == pytest.approx(1.0)
    assert ssim(tiny, rand_images(2, 1, 6, 6, seed=5)) < 0.9


# ----------------------------------------------------------------------------------------- ELBO and IWAE


class DiagonalGaussian:
    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    def sample(self, generator=None):
        return self.mean + self.std * torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype)

    def log_prob(self, z):
        return torch.distributions.Normal(self.mean, self.std).log_prob(z).sum(-1)


class LinearGaussianVAE:
    """z ~ N(0, I_d), x | z ~ N(W z + b, s^2 I_D): log p(x) = log N(x; b, W W^T + s^2 I) is exact. The encoder is the
    true posterior mean with a diagonal std inflated by ``inflate``, so the ELBO and IWAE bounds have a real gap."""

    def __init__(self, d=2, D=4, noise=0.5, inflate=2.0, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(D, d, generator=g, dtype=torch.float64)
        self.b = 0.1 * torch.randn(D, generator=g, dtype=torch.float64)
        self.noise, self.inflate = noise, inflate
        self.posterior_cov = torch.linalg.inv(torch.eye(d, dtype=torch.float64) + self.W.T @ self.W / noise**2)
        self.config = SimpleNamespace(num_pixels=D)
        self.likelihood = SimpleNamespace(discrete=True)  # as if it were a code length, to check bits/dim

    loss_terms = ("reconstruction_loss", "kl_loss")

    def posterior(self, x):
        x = x.flatten(1).double()
        mean = (x - self.b) @ self.W @ self.posterior_cov / self.noise**2
        std = self.posterior_cov.diagonal().sqrt().expand_as(mean) * self.inflate
        return Posterior(mean, 2 * std.log())

    def log_importance_weights(self, x, num_samples, generator=None):
        q = self.posterior(x)
        z = q.sample(generator, num_samples)
        log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        return self.log_likelihood(x, z) + log_prior - q.log_prob(z)

    def decode(self, z):
        return (z @ self.W.T + self.b).view(-1, 1, 2, 2)

    def log_likelihood(self, x, z):
        return torch.distributions.Normal(z @ self.W.T + self.b, self.noise).log_prob(x.flatten(1).double()).sum(-1)

    def log_marginal(self, x):
        cov = self.W @ self.W.T + self.noise**2 * torch.eye(len(self.b), dtype=torch.float64)
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(x.flatten(1).double())

    def analytic_elbo(self, x):
        q = self.posterior(x)
        D = len(self.b)
        residual = (x.flatten(1).double() - q.mean @ self.W.T - self.b).pow(2).sum(1)
        trace = (self.W.pow(2) @ q.std[0].pow(2)).sum()  # tr(W diag(s^2) W^T)
        expected_log_lik = -0.5 * D * math.log(2 * math.pi * self.noise**2) - (residual + trace) / (2 * self.noise**2)
        kl = 0.5 * (q.mean.pow(2) + q.std.pow(2) - 1 - q.std.pow(2).log()).sum(1)
        return expected_log_lik - kl

    def sample_x(self, n, seed=1):
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.W.shape[1], generator=g, dtype=torch.float64)
        x = z @ self.W.T + self.b + self.noise * torch.randn(n, len(self.b), generator=g, dtype=torch.float64)
        return x.view(n, 1, 2, 2)

    def __call__(self, x, target_pixel_values=None, return_loss=True):
        q = self.posterior(x)
        z = q.mean
        reconstruction_loss = -self.log_likelihood(x, z).mean()
        kl_loss = 0.5 * (q.mean.pow(2) + q.std.pow(2) - 1 - q.std.pow(2).log()).sum(1).mean()
        return SimpleNamespace(
            loss=reconstruction_loss + kl_loss,
            reconstruction_loss=reconstruction_loss,
            kl_loss=kl_loss,
            reconstruction=self.decode(z),
            latents=z,
        )


def test_elbo_matches_analytic_value():
    model = LinearGaussianVAE()
    x = model.sample_x(100)
    estimate = elbo(model, x, num_samples=1000, batch_size=64, generator=torch.Generator().manual_seed(0))
    expected = model.analytic_elbo(x)
    assert estimate.shape == (100,)
    assert estimate.tolist() == pytest.approx(expected.tolist(), abs=0.5)  # Monte Carlo error per image
    assert (estimate - expected).mean().abs() < 0.05
    assert (estimate < model.log_marginal(x)).all()


def test_iwae_with_one_sample_is_the_elbo_in_expectation():
    model = LinearGaussianVAE()
    x = model.sample_x(2000)
    single = -importance_sampled_nll(model, x, num_samples=1, generator=torch.Generator().manual_seed(0))
    difference = single - model.analytic_elbo(x)
    assert abs(difference.mean().item()) < 4 * difference.std().item() / math.sqrt(len(x))


def test_iwae_tightens_with_more_samples_towards_exact_nll():
    model = LinearGaussianVAE()
    x = model.sample_x(300)
    exact = -model.log_marginal(x)
    gaps = {
        k: (importance_sampled_nll(model, x, num_samples=k, batch_size=300, generator=torch.Generator().manual_seed(k))
            - exact).mean().item()
        for k in (1, 4, 32, 1024)
    }
    assert gaps[1] > gaps[4] > gaps[32] > gaps[1024]
    assert gaps[1] == pytest.approx(-model.analytic_elbo(x).mean().item() - exact.mean().item(), rel=0.3)
    assert gaps[4] > 0.05 and abs(gaps[1024]) < 0.01  # a real gap that closes at large K


def test_iwae_rejects_bad_num_samples():
    with pytest.raises(ValueError, match="num_samples"):
        likelihood_bounds(LinearGaussianVAE(), torch.zeros(2, 1, 2, 2), num_samples=0)


def test_nats_to_bits_per_dim():
    assert nats_to_bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    assert nats_to_bits_per_dim(torch.tensor([3072 * math.log(2) * 3]), 3072).item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="num_dims"):
        nats_to_bits_per_dim(1.0, 0)


# --------------------------------------------------------------------------------------------- codebook usage


def test_codebook_stats_uniform_single_and_known_histogram():
    uniform = codebook_stats(torch.arange(64).repeat(10).view(10, 8, 8), num_embeddings=64)
    assert uniform["perplexity"] == pytest.approx(64) and uniform["usage"] == 1.0
    single = codebook_stats(torch.full((4, 7, 7), 3), num_embeddings=64)
    assert single["perplexity"] == pytest.approx(1.0) and single["usage"] == pytest.approx(1 / 64)
    known = codebook_stats(torch.tensor([0, 0, 1, 2]), num_embeddings=4)  # p = (1/2, 1/4, 1/4, 0): H = 1.5 bits
    assert known["perplexity"] == pytest.approx(2**1.5) and known["usage"] == 0.75
    assert known["entropy"] == pytest.approx(1.5 * math.log(2)) and known["num_tokens"] == 4


def test_codebook_usage_accumulates_over_batches():
    batches = [torch.tensor([[0, 1], [1, 1]]), torch.tensor([[2, 2], [2, 0]])]
    accumulator = CodebookUsage(8)
    for b in batches:
        accumulator.update(b)
    assert accumulator.compute() == codebook_stats(batches, 8) == codebook_stats(torch.cat(batches), 8)
    assert accumulator.counts.tolist() == [2, 3, 3, 0, 0, 0, 0, 0]
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        accumulator.update(torch.tensor([8]))
    with pytest.raises(ValueError, match="at least one"):
        CodebookUsage(8).compute()


# ------------------------------------------------------------------------------------------------ interpolation


def test_interpolate_latents_linear_and_slerp():
    z0, z1 = torch.tensor([[1.0, 0.0], [2.0, 2.0]]), torch.tensor([[0.0, 1.0], [4.0, 4.0]])
    linear = interpolate_latents(z0, z1, steps=5)
    assert linear.shape == (2, 5, 2)
    assert torch.allclose(linear[:, 0], z0) and torch.allclose(linear[:, -1], z1)
    assert torch.allclose(linear[0, 2], torch.tensor([0.5, 0.5]))
    slerp = interpolate_latents(z0, z1, steps=5, method="slerp")
    assert torch.allclose(slerp[:, 0], z0) and torch.allclose(slerp[:, -1], z1, atol=1e-6)
    assert torch.allclose(slerp[0].norm(dim=-1), torch.ones(5))  # stays on the unit circle
    assert torch.allclose(slerp[0, 2], torch.tensor([1.0, 1.0]) / math.sqrt(2))
    assert torch.allclose(slerp[1], linear[1])  # parallel latents: falls back to linear
    grids = interpolate_latents(torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2), steps=6, method="slerp")
    assert grids.shape == (3, 6, 4, 2, 2)
    with pytest.raises(ValueError, match="method"):
        interpolate_latents(z0, z1, 3, method="cubic")


# ------------------------------------------------------------------------------------ classifiers and probes


def separable_images(n, num_classes=4, size=28, channels=1, seed=0):
    """Class k is a bright square in the k-th horizontal band on a noisy background."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    images = 0.2 * torch.rand(n, channels, size, size, generator=g)
    band = size // num_classes
    for k in range(num_classes):
        images[labels == k, :, k * band : (k + 1) * band, size // 4 : size // 2] = 1.0
    return images, labels


def test_classifier_learns_separable_images_deterministically():
    images, labels = separable_images(256)
    test_images, test_labels = separable_images(128, seed=1)
    clf = train_classifier(images, labels, num_classes=4, epochs=3, width=8, seed=0, device="cpu", progress=False)
    assert classifier_accuracy(clf, test_images, test_labels) > 0.95
    again = train_classifier(images, labels, num_classes=4, epochs=3, width=8, seed=0, device="cpu", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(clf.state_dict().values(), again.state_dict().values()))
    other = train_classifier(images, labels, num_classes=4, epochs=1, width=8, seed=1, device="cpu", progress=False)
    assert not torch.equal(clf.classifier.weight, other.classifier.weight)


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3), (64, 3)])
def test_small_cnn_accepts_every_image_size(size, channels):
    logits = SmallCNN(channels, num_classes=10, width=4)(torch.rand(2, channels, size, size))
    assert logits.shape == (2, 10)


def test_train_classifier_rejects_bad_labels():
    with pytest.raises(ValueError, match="labels"):
        train_classifier(torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 5, 2]), num_classes=3, progress=False)
    with pytest.raises(ValueError, match="one label per image"):
        train_classifier(torch.rand(4, 1, 28, 28), torch.tensor([0, 1]), progress=False)


def test_downstream_accuracy_on_real_images_and_reconstructions():
    from types import SimpleNamespace

    class Reconstructs(torch.nn.Module):  # an "autoencoder" that returns f(x)
        def __init__(self, f):
            super().__init__()
            self.f = f

        def forward(self, pixel_values):
            return SimpleNamespace(reconstruction=self.f(pixel_values))

    images, labels = separable_images(256)
    test_images, test_labels = separable_images(128, seed=1)
    classifier = train_classifier(images, labels, 4, epochs=3, width=8, seed=0, device="cpu", progress=False)
    perfect = downstream_accuracy(Reconstructs(lambda x: x), classifier, test_images, test_labels, batch_size=50)
    assert set(perfect) == {"classifier_test_accuracy", "downstream_accuracy"}
    assert perfect["downstream_accuracy"] == perfect["classifier_test_accuracy"] > 0.95
    # a blurry "autoencoder" that keeps only the mean of each image destroys the class information
    blurry = Reconstructs(lambda x: x.mean((1, 2, 3), keepdim=True).expand_as(x))
    assert downstream_accuracy(blurry, classifier, test_images, test_labels)["downstream_accuracy"] < 0.5


def test_linear_probe_on_separable_latents():
    g = torch.Generator().manual_seed(0)
    centres = 5 * torch.randn(5, 8, generator=g)
    labels = torch.arange(500) % 5
    latents = centres[labels] + torch.randn(500, 8, generator=g)
    accuracy = linear_probe_accuracy(latents[:400], labels[:400], latents[400:], labels[400:])
    assert accuracy > 0.97
    noise = torch.randn(500, 8, generator=g)
    assert linear_probe_accuracy(noise[:400], labels[:400], noise[400:], labels[400:]) < 0.5


def test_sample_quality_with_fake_classifier():
    clf = nn.Flatten()  # the "images" (N, 1, 1, 10) hold the logits themselves
    diverse = (20 * torch.eye(10)[torch.arange(100) % 10]).view(100, 1, 1, 10)
    quality = sample_quality(clf, diverse)
    assert quality["confident_fraction"] == 1.0 and quality["mean_max_prob"] == pytest.approx(1.0, abs=1e-6)
    assert quality["class_entropy"] == pytest.approx(math.log(10)) == quality["max_class_entropy"]
    assert quality["inception_score"] == pytest.approx(10, rel=1e-4)
    collapsed = sample_quality(clf, (20 * torch.eye(10)[torch.zeros(100, dtype=torch.long)]).view(100, 1, 1, 10))
    assert collapsed["class_entropy"] == pytest.approx(0.0) and collapsed["inception_score"] == pytest.approx(1.0)
    unsure = sample_quality(clf, torch.zeros(100, 1, 1, 10))
    assert unsure["confident_fraction"] == 0.0 and unsure["mean_max_prob"] == pytest.approx(0.1)
    assert unsure["inception_score"] == pytest.approx(1.0)
    half = torch.cat([diverse[:50], torch.zeros(50, 1, 1, 10)])
    assert sample_quality(clf, half, confidence_threshold=0.5)["confident_fraction"] == 0.5


# ----------------------------------------------------------------------------------------------- whole models


class FakeAE(nn.Module):
    """Reconstructs x exactly; its 'loss' is a per-sample value (the image mean) averaged over the batch."""

    loss_terms = ("reconstruction_loss",)

    def __init__(self, num_embeddings=None):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.config = SimpleNamespace(num_embeddings=num_embeddings)

    def forward(self, pixel_values, target_pixel_values=None, return_loss=True):
        per_sample = pixel_values.flatten(1).mean(1)
        codes = (pixel_values[:, 0, ::7, ::7] * 4).long().clamp(max=3)  # codes in {0..3}
        return SimpleNamespace(
            loss=per_sample.mean(),
            reconstruction_loss=per_sample.mean(),
            reconstruction=pixel_values * self.scale,
            latents=pixel_values.flatten(1)[:, :3],
            indices=codes if self.config.num_embeddings else None,
        )


def test_evaluate_autoencoder():
    images = rand_images(10, 1, 28, 28)
    model = FakeAE().train()
    results = evaluate(model, images, batch_size=4, progress=False)  # batches of 4, 4, 2
    assert model.training  # mode restored
    assert results["num_examples"] == 10
    assert results["mse"] == 0 and results["psnr"] == math.inf and results["ssim"] == pytest.approx(1.0)
    assert results["loss"] == pytest.approx(images.mean().item())  # batch-size weighted, not a mean of means
    assert "elbo" not in results and "codebook_perplexity" not in results
    assert all(type(v) is float for k, v in results.items() if k != "num_examples")
    assert type(results["num_examples"]) is int
    json.dumps(results)
    assert evaluate(model, images, batch_size=4, max_examples=5, progress=False)["num_examples"] == 5


def test_evaluate_vqvae_counts_codes_over_the_set():
    images = rand_images(10, 1, 28, 28)
    results = evaluate(FakeAE(num_embeddings=16), images, batch_size=3, progress=False)
    expected = codebook_stats((images[:, 0, ::7, ::7] * 4).long().clamp(max=3), 16)
    assert results["codebook_perplexity"] == pytest.approx(expected["perplexity"])
    assert results["codebook_usage"] == pytest.approx(4 / 16)


def test_evaluate_vae_reports_bounds():
    model = LinearGaussianVAE()
    x = model.sample_x(64)
    results = evaluate(model, x.float(), batch_size=32, num_importance_samples=256, progress=False)
    exact_nll = -model.log_marginal(x).mean().item()
    assert -results["elbo"] > results["iwae_nll"] > exact_nll - 0.05
    assert results["iwae_num_samples"] == 256
    assert results["iwae_bits_per_dim"] == pytest.approx(results["iwae_nll"] / (4 * math.log(2)))
    assert {"loss", "reconstruction_loss", "kl_loss", "mse", "psnr", "ssim"} <= set(results)
    json.dumps(results)


def test_psnr_and_ssim_are_pinned_to_their_values():
    """PSNR and SSIM come from torchmetrics; these are the values of the library's own implementation before it
    (and of the reference SSIM above), so a change of either library's definition fails here, not in a study."""
    expected = {
        (1, 28): ([20.5270656184, 20.8980067459, 20.7478858], [0.9433418674, 0.9520238574, 0.9420244594]),
        (3, 32): ([20.4275084027, 20.3939396944, 20.3845698753], [0.9451108472, 0.9456794716, 0.9436017181]),
    }
    for seed, ((channels, size), (psnrs, ssims)) in enumerate(expected.items()):
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(3, channels, size, size, generator=g)
        y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
        assert psnr(x, y, reduction="none").tolist() == pytest.approx(psnrs, abs=1e-5)  # torchmetrics: float32 log
        assert ssim(x, y, reduction="none").tolist() == pytest.approx(ssims, abs=1e-8)
