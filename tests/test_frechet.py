"""Sample and reconstruction quality on fixed features: the Fréchet distance and KID against independent reference
computations, their sanity on real and noise images, precision/recall/density/coverage, the cached domain features,
the offline Inception path, `quality_metrics` on the model contract, and `evaluate --fid`."""

import json
import math
import urllib.error
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

import hf_autoencoders.evaluation.features as F
from hf_autoencoders.cli import main as cli_main
from hf_autoencoders.data import ImageTensorDataset, collate_fn, load_image_dataset
from hf_autoencoders.evaluation import (
    FIDInceptionV3,
    domain_features,
    frechet_distance,
    inception_features,
    kernel_inception_distance,
    precision_recall_density_coverage,
    quality_metrics,
)
from hf_autoencoders.models import autoencoder_classes

METRICS = ("fd", "kid", "kid_std", "precision", "recall", "density", "coverage")


@pytest.fixture(scope="module")
def digits():
    data = load_image_dataset(None)  # 1500 training and 297 test images of the embedded digits, 28x28
    return SimpleNamespace(train=data.train.images.float() / 255, labels=data.train.labels,
                           test=data.test.images.float() / 255)


@pytest.fixture(scope="module")
def features(digits, tmp_path_factory):
    return domain_features(digits.train, digits.labels, cache_dir=tmp_path_factory.mktemp("cache"), epochs=1,
                           width=8, device="cpu", progress=False)


def noise_like(images, seed=0):
    return torch.rand(images.shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------- against references


def reference_fd(x, y):
    mu_x, mu_y = x.mean(0), y.mean(0)
    cov_x, cov_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    return float(((mu_x - mu_y) ** 2).sum() + np.trace(cov_x + cov_y - 2 * scipy.linalg.sqrtm(cov_x @ cov_y).real))


def reference_kid(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written out as double sums over distinct pairs."""
    d, m = x.shape[1], len(x)
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    k_xx, k_yy = k(x, x), k(y, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k(x, y).sum() / m**2)


@pytest.mark.parametrize("dim, shift", [(6, 0.0), (12, 0.3), (40, 1.0)])
def test_fd_and_kid_match_independent_references(dim, shift):
    rng = np.random.default_rng(dim)
    x = rng.normal(size=(200, dim))
    y = rng.normal(size=(200, dim)) @ rng.normal(scale=0.5, size=(dim, dim)) + shift
    assert frechet_distance(x, y) == pytest.approx(reference_fd(x, y), rel=1e-4)
    kid, kid_std = kernel_inception_distance(x, y, subsets=1, subset_size=200)  # one subset: the whole sets
    assert kid == pytest.approx(reference_kid(x, y), rel=1e-4) and kid_std == 0.0
    kid_mean, kid_std = kernel_inception_distance(x, y, subsets=20, subset_size=100, seed=1)
    assert kid_std > 0 and abs(kid_mean - reference_kid(x, y)) < 4 * kid_std  # subsets: same expectation
    assert kernel_inception_distance(x, y, subsets=20, subset_size=100, seed=1) == (kid_mean, kid_std)  # seeded


def test_fd_of_a_set_with_itself_is_zero_and_bad_input_is_refused():
    x = np.random.default_rng(0).normal(size=(50, 5))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9) and frechet_distance(x, x) >= 0
    with pytest.raises(ValueError, match="differ in size"):
        frechet_distance(x, x[:, :4])
    with pytest.raises(ValueError, match="at least 2 rows"):
        frechet_distance(x, x[:1])
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(x, np.full((3, 5), np.nan))
    with pytest.raises(ValueError, match="matrix"):
        kernel_inception_distance(x.ravel(), x)


def test_precision_recall_density_coverage_by_hand():
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    # k = 1: every real radius is 1; fakes at 0.5 and 10: one inside the real balls, one far away.
    fake = np.array([[0.5], [10.0], [10.5]])
    prdc = precision_recall_density_coverage(real, fake, k=1, k_precision_recall=1)
    assert prdc["precision"] == pytest.approx(1 / 3)  # only 0.5 lies in a real ball
    # Fake radii 9.5, 0.5, 0.5: the lone fake's ball B(0.5, 9.5) holds every real image, so recall is 1 - the
    # sensitivity to outliers that density and coverage remove.
    assert prdc["recall"] == 1.0
    assert prdc["density"] == pytest.approx(2 / 3)  # 0.5 lies in the balls of 0 and 1: 2 / (k M)
    assert prdc["coverage"] == pytest.approx(2 / 4)  # the reals 0 and 1 have a fake within their radius
    with pytest.raises(ValueError, match="at least 6 rows"):
        precision_recall_density_coverage(real, fake)


# ------------------------------------------------------------------------------- sanity on real images


def test_fd_real_vs_real_far_below_real_vs_noise(digits, features):
    test, train = features.extract(digits.test), features.extract(digits.train[:600])
    noise = features.extract(noise_like(digits.test))
    assert frechet_distance(test, train) < 0.05 * frechet_distance(test, noise)
    assert kernel_inception_distance(test, train)[0] < 0.05 * kernel_inception_distance(test, noise)[0]


def test_fd_grows_monotonically_with_the_share_of_noise(digits, features):
    test, train = features.extract(digits.test), features.extract(digits.train[: len(digits.test)])
    noise = features.extract(noise_like(digits.test))
    n = len(test)
    fds = [frechet_distance(test, torch.cat([noise[: int(f * n)], train[int(f * n):]])) for f in np.linspace(0, 1, 6)]
    assert all(a < b for a, b in zip(fds, fds[1:])), fds


def test_precision_and_recall_of_real_near_one_and_of_noise_near_zero(digits, features):
    test, train = features.extract(digits.test), features.extract(digits.train[:600])
    real = precision_recall_density_coverage(test, train)
    assert real["precision"] > 0.75 and real["recall"] > 0.7 and real["coverage"] > 0.9, real
    noise = precision_recall_density_coverage(test, features.extract(noise_like(digits.test)))
    assert max(noise.values()) < 0.02, noise


# ------------------------------------------------------------------------------------ domain features


def test_domain_features_are_cached_per_data_and_seed(digits, tmp_path, monkeypatch):
    images, labels = digits.train[:300], digits.labels[:300]
    first = domain_features(images, labels, cache_dir=tmp_path, epochs=1, width=8, device="cpu", progress=False)
    assert first.name == "domain" and first.num_features == 64 and "300 labelled 1x28x28" in first.description
    assert len(list(tmp_path.glob("*.safetensors"))) == 1

    monkeypatch.setattr(F, "train_classifier", lambda *a, **k: pytest.fail("the domain classifier was trained again"))
    again = domain_features(images, labels, cache_dir=tmp_path, epochs=1, width=8, device="cpu", progress=False)
    assert torch.equal(first.extract(digits.test), again.extract(digits.test))
    for changed in (dict(seed=1), dict(epochs=2)):  # another seed or setting is another classifier
        with pytest.raises(pytest.fail.Exception, match="trained again"):
            domain_features(images, labels, cache_dir=tmp_path, width=8, device="cpu", progress=False,
                            **{"epochs": 1, **changed})
    with pytest.raises(pytest.fail.Exception, match="trained again"):  # other images: another dataset
        domain_features(digits.train[300:600], labels, cache_dir=tmp_path, epochs=1, width=8, device="cpu")


def test_domain_features_refuse_images_of_another_shape(features):
    with pytest.raises(ValueError, match="trained on 1x28x28 images"):
        features.extract(torch.rand(2, 3, 32, 32))


# --------------------------------------------------------------------------------------- Inception path


def random_inception_weights(path):
    """FIDInceptionV3 with He-initialised convolutions (so that images still change its output), saved as a file."""
    torch.manual_seed(0)
    network = FIDInceptionV3()
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.save(network.state_dict(), path)
    return path


def test_inception_path_runs_offline_on_random_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: pytest.fail("tried to download"))
    features = inception_features(random_inception_weights(tmp_path / "inception.pth"), device="cpu")
    assert features.name == "inception" and "inception.pth" in features.description
    grey, rgb = torch.rand(3, 1, 28, 28), torch.rand(2, 3, 40, 32)
    grey_features = features.extract(grey)
    assert grey_features.shape == (3, 2048) and features.extract(rgb).shape == (2, 2048)
    assert torch.equal(grey_features, features.extract(grey.expand(-1, 3, -1, -1)))  # grey = RGB repeated
    assert grey_features.std(0).mean() > 0  # the images reach the features
    # quality_metrics runs the same code on these features as on the domain features below (the keys end in
    # "_inception"); a 2048-d Fréchet distance costs seconds on CPU, so the test stops here.


def test_inception_refuses_standard_fid_without_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="--inception_weights PATH"):
        inception_features()

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(FileNotFoundError, match="could not be downloaded .*no route to host.*--inception_weights"):
        inception_features()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        inception_features(tmp_path / "missing.pth")
    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / "linear.pth")
    with pytest.raises(ValueError, match="does not hold the FID InceptionV3 weights"):
        inception_features(tmp_path / "linear.pth")


# ----------------------------------------------------------------------------------------- quality_metrics


class Copier(nn.Module):
    """Reconstructs perfectly; its samples are images drawn from `pool`, and it records the prior it was given."""

    def __init__(self, pool):
        super().__init__()
        self.pool = pool
        self.weight = nn.Parameter(torch.zeros(()))
        self.priors = []

    def forward(self, pixel_values):
        return SimpleNamespace(reconstruction=pixel_values + self.weight)

    def sample(self, num_samples, generator=None, prior=None):
        self.priors.append(prior)
        return self.pool[torch.randint(len(self.pool), (num_samples,), generator=generator)]


def test_quality_metrics_on_the_model_contract(digits, features):
    real = digits.test
    good, bad = Copier(pool=digits.train), Copier(pool=noise_like(digits.train))
    metrics = quality_metrics(good, real, features=features, num_samples=300, prior="the prior", batch_size=100,
                              progress=False)
    keys = {f"{t}_{m}_domain" for t in ("reconstruction", "sample") for m in METRICS}
    assert set(metrics) == keys | {"quality_num_real", "quality_num_samples", "quality_features"}
    assert metrics["quality_num_real"] == 297 and metrics["quality_num_samples"] == 300
    assert metrics["quality_features"] == features.description
    assert good.priors == ["the prior"] * 3  # three batches of samples, each drawn with the prior
    assert metrics["reconstruction_fd_domain"] == pytest.approx(0, abs=1e-6)  # reconstructions are the images
    assert metrics["reconstruction_precision_domain"] == metrics["reconstruction_recall_domain"] == 1.0
    json.dumps(metrics)
    assert all(type(v) is float and math.isfinite(v) for k, v in metrics.items() if not k.startswith("quality_"))

    noisy = quality_metrics(bad, real, features=features, num_samples=300, reconstructions=False, progress=False)
    assert noisy["sample_fd_domain"] > 20 * metrics["sample_fd_domain"]
    assert noisy["sample_precision_domain"] < 0.02 < 0.7 < metrics["sample_precision_domain"]
    assert "reconstruction_fd_domain" not in noisy
    assert quality_metrics(bad, real, features=features, num_samples=300, reconstructions=False,
                           progress=False) == noisy  # seeded
    with pytest.raises(ValueError, match="Nothing to measure"):
        quality_metrics(good, real, features=features, reconstructions=False, samples=False)
    with pytest.raises(ValueError, match="at least 6"):
        quality_metrics(good, real, features=features, num_samples=3)


@pytest.mark.parametrize("family", ["ae", "vae", "vqvae"])
def test_quality_metrics_on_library_models(family, digits, features):
    config_class, model_class = autoencoder_classes(family)
    size = {"latent_dim": 4} if family != "vqvae" else {"num_embeddings": 16, "embedding_dim": 4}
    torch.manual_seed(0)
    model = model_class(config_class(backbone="mlp", hidden_size=32, image_size=28, num_channels=1, **size))
    metrics = quality_metrics(model, digits.test[:64], features=features, num_samples=32, progress=False)
    assert metrics["quality_num_real"] == 64 and metrics["quality_num_samples"] == 32
    assert all(math.isfinite(metrics[f"{t}_{m}_domain"]) for t in ("reconstruction", "sample") for m in METRICS)
    loader = torch.utils.data.DataLoader(ImageTensorDataset((digits.test[:64] * 255).round().byte()), batch_size=16,
                                         collate_fn=collate_fn)
    assert metrics == quality_metrics(model, loader, features=features, num_samples=32, progress=False)  # seeded,
    # whatever the container (iterating a DataLoader draws from the global RNG; the VAE's posterior must not see it)


# ------------------------------------------------------------------------------------------- the command


def test_evaluate_fid_command(tmp_path, monkeypatch, capsys):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    config_class, model_class = autoencoder_classes("vae")
    torch.manual_seed(0)
    model_class(config_class(backbone="mlp", hidden_size=32, latent_dim=4)).save_pretrained(tmp_path / "vae")
    args = ["evaluate", str(tmp_path / "vae"), "--max_eval_samples", "64", "--num_importance_samples", "0",
            "--max_train_samples", "300", "--classifier_epochs", "1", "--fid", "--num_samples", "32"]
    cli_main(args)
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["quality_num_real"] == 64 and metrics["quality_num_samples"] == 32
    assert metrics["sample_fd_domain"] > 0 and "reconstruction_kid_domain" in metrics
    assert "300 labelled 1x28x28 training images of digits, weights sha256 " in metrics["quality_features"]
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 1  # the domain classifier, cached

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as exit_:
        cli_main([*args, "--features", "inception"])
    assert exit_.value.code == 2 and "--inception_weights PATH" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["evaluate", str(tmp_path / "vae"), "--num_samples", "10"])
    assert "apply to --fid" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["evaluate", str(tmp_path / "vae"), "--fid", "--num_samples", "3"])
    assert "--num_samples must be at least 6" in capsys.readouterr().err
