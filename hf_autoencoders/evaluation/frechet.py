r"""Sample and reconstruction quality that can be compared: Fréchet distance, KID, precision, recall, density and
coverage between real images and a model's reconstructions of them or its samples, on fixed features
(`features.domain_features` or `features.inception_features`).

    from hf_autoencoders.evaluation import domain_features, quality_metrics
    features = domain_features(train_images, train_labels)          # trained once, then read from the cache
    quality_metrics(model, test_images, features=features)           # {"sample_fd_domain": ..., ...}

On features of real images X = {x_i} (N of them) and generated ones Y = {y_j} (M):

- Fréchet distance (Heusel et al., 2017), between Gaussians fitted to each set:
      FD = ||mu_X - mu_Y||^2 + Tr(S_X + S_Y - 2 (S_X S_Y)^{1/2}).
  Its estimate from N and M samples is biased upwards, by roughly c / N (Chong & Forsyth, 2020) with a c that
  depends on the model: FDs are comparable only at the same N and M, and every report carries them.
- Kernel Inception Distance (Binkowski et al., 2018): the squared maximum mean discrepancy with the kernel
  k(x, y) = (x.y / d + 1)^3, estimated without bias (U-statistic) on random subsets of equal size, so its mean does
  not depend on N; reported as the mean and standard deviation over subsets.
- Improved precision and recall (Kynkaanniemi et al., 2019) and density and coverage (Naeem et al., 2020), from the
  k-nearest-neighbour balls B(x_i, r_k(x_i)) of each set.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import iterate_batches
from .features import ImageFeatures
from .loop import seeded
from .metrics import as_images, eval_mode, model_device, to_model_range, unit_images

METRICS = ("fd", "kid", "kid_std", "precision", "recall", "density", "coverage")


class _GivenFeatures(nn.Module):
    """The feature map of torchmetrics' FID and KID when the features are already computed: the identity."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _feature_pair(real, fake, min_rows: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    real, fake = (torch.as_tensor(f).double().cpu() for f in (real, fake))
    for name, f in (("real", real), ("fake", fake)):
        if f.dim() != 2:
            raise ValueError(f"{name} features must be a matrix (N, num_features); got shape {tuple(f.shape)}.")
        if len(f) < min_rows:
            raise ValueError(f"{name} features need at least {min_rows} rows here; got {len(f)}. Use more images.")
        if not torch.isfinite(f).all():
            raise ValueError(f"{name} features hold NaN or infinite values; check the images and the feature network.")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features differ in size: {real.shape[1]} and {fake.shape[1]}.")
    return real, fake


def frechet_distance(real, fake) -> float:
    r"""Fréchet distance between Gaussians fitted to two feature matrices (N, d) and (M, d):
    ||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^{1/2}), with unbiased covariances (torchmetrics'
    FrechetInceptionDistance, in float64). Floored at 0 (rounding can take two equal sets a hair below it)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = _feature_pair(real, fake)
    # The features are already those of every image: no gathering across processes (one process may measure alone).
    metric = FrechetInceptionDistance(feature=_GivenFeatures(real.shape[1]), sync_on_compute=False)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return max(float(metric.compute()), 0.0)


def kernel_inception_distance(
    real,
    fake,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    r"""KID: the unbiased estimate of MMD^2 with the polynomial kernel k(x, y) = (gamma x.y + coef)^degree
    (gamma = 1 / d by default), on ``subsets`` random pairs of subsets of min(``subset_size``, N, M) rows each:

        MMD^2_u = sum_{i != i'} k(x_i, x_i') / (m (m - 1)) + sum_{j != j'} k(y_j, y_j') / (m (m - 1))
                  - 2 sum_{i, j} k(x_i, y_j) / m^2.

    Returns (mean, standard deviation) over the subsets (torchmetrics' KernelInceptionDistance, seeded by ``seed``).
    The mean can be slightly negative when the two sets come from the same distribution."""
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = _feature_pair(real, fake)
    size = min(subset_size, len(real), len(fake))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "will save all extracted features in buffer": we know
        metric = KernelInceptionDistance(feature=_GivenFeatures(real.shape[1]), subsets=subsets, subset_size=size,
                                         degree=degree, gamma=gamma, coef=float(coef), sync_on_compute=False)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def _knn_radii(features: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row."""
    return torch.cat([torch.cdist(part, features).kthvalue(k + 1, dim=1).values for part in features.split(chunk)])


def precision_recall_density_coverage(real, fake, *, k: int = 5, k_precision_recall: int = 3,
                                      chunk: int = 1024) -> dict[str, float]:
    r"""Fidelity and diversity of fake features (M, d) against real ones (N, d), from k-nearest-neighbour balls.
    With r_k(x) the distance from x to its k-th nearest neighbour in its own set:

    - precision = (1/M) sum_j 1[y_j in some B(x_i, r_k(x_i))]   (how many fakes look real)
    - recall    = (1/N) sum_i 1[x_i in some B(y_j, r_k(y_j))]   (how much of the real set the fakes cover)
      both with k = ``k_precision_recall`` (3, Kynkaanniemi et al., 2019);
    - density   = (1 / (k M)) sum_j sum_i 1[y_j in B(x_i, r_k(x_i))]   (can exceed 1)
    - coverage  = (1/N) sum_i 1[min_j ||x_i - y_j|| <= r_k(x_i)]
      both with k = ``k`` (5, Naeem et al., 2020), which fixes recall's and precision's sensitivity to outliers.

    Distances are computed in blocks of ``chunk`` rows, so memory stays O(chunk (N + M))."""
    if k < 1 or k_precision_recall < 1:
        raise ValueError(f"k and k_precision_recall must be positive integers; got {k} and {k_precision_recall}.")
    most = max(k, k_precision_recall)
    real, fake = _feature_pair(real, fake, min_rows=most + 1)
    real_radii_pr = _knn_radii(real, k_precision_recall, chunk)
    fake_radii_pr = _knn_radii(fake, k_precision_recall, chunk)
    real_radii = _knn_radii(real, k, chunk)
    precise = torch.zeros(len(fake), dtype=torch.bool)
    density = torch.zeros(len(fake), dtype=torch.float64)
    recalled = torch.zeros(len(real), dtype=torch.bool)
    nearest_fake = torch.full((len(real),), math.inf, dtype=torch.float64)
    for start in range(0, len(fake), chunk):
        distances = torch.cdist(fake[start : start + chunk], real)  # (chunk, N)
        precise[start : start + chunk] = (distances <= real_radii_pr).any(1)
        density[start : start + chunk] = (distances <= real_radii).sum(1)
        recalled |= (distances <= fake_radii_pr[start : start + chunk, None]).any(0)
        nearest_fake = torch.minimum(nearest_fake, distances.min(0).values)
    return {
        "precision": precise.double().mean().item(),
        "recall": recalled.double().mean().item(),
        "density": density.sum().item() / (k * len(fake)),
        "coverage": (nearest_fake <= real_radii).double().mean().item(),
    }


def feature_metrics(real, fake, *, seed: int = 0) -> dict[str, float]:
    """Every metric of METRICS between two feature matrices: fd, kid, kid_std, precision, recall, density and
    coverage. KID is averaged over 100 subsets of min(1000, N / 2, M / 2) rows (half the smaller set at most, so
    that the subsets differ and kid_std says how much the estimate moves); the rest use the defaults above."""
    subset_size = min(1000, min(len(real), len(fake)) // 2)
    kid, kid_std = kernel_inception_distance(real, fake, subset_size=max(subset_size, 2), seed=seed)
    return {"fd": frechet_distance(real, fake), "kid": kid, "kid_std": kid_std,
            **precision_recall_density_coverage(real, fake)}


@torch.no_grad()
def sample_features(model, features: ImageFeatures, num_samples: int, *, prior=None, seed: int = 0,
                    batch_size: int = 256, progress: bool = False, class_labels=None) -> torch.Tensor:
    """Features of ``num_samples`` samples of ``model`` (``model.sample(n, generator=..., prior=prior)``, a
    class-conditional prior's with `class_labels` (one per sample) or else the classes in turn, and its default
    guidance; mapped from the model's pixel range to [0, 1] and clamped), drawn in batches of ``batch_size`` from one generator seeded by ``seed``: the same seed
    and batch size give the same samples."""
    device = model_device(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    classes = getattr(getattr(prior, "config", None), "num_classes", 0)
    fake = []
    with eval_mode(model), seeded(seed, device):
        for start in tqdm(range(0, num_samples, batch_size), desc="samples", disable=not progress, leave=False):
            n = min(batch_size, num_samples - start)
            if class_labels is not None:
                labels = {"class_labels": class_labels[start:start + n]}
            else:
                labels = {"class_labels": torch.arange(start, start + n) % classes} if classes else {}
            images = model.sample(n, generator=generator, prior=prior, **labels)
            fake.append(features.extract(unit_images(model, images), batch_size))
    return torch.cat(fake)


def quality_from_features(model, features: ImageFeatures, real: torch.Tensor, reconstructed: torch.Tensor | None,
                          *, num_samples: int | None = None, prior=None, seed: int = 0, batch_size: int = 256,
                          samples: bool = True, progress: bool = False, class_labels=None) -> dict:
    """The figures of `quality_metrics` from the ``features`` of the real images (N, d) and of their reconstructions
    (or None), with ``num_samples`` (default N) samples of ``model`` (`sample_features`): what a training run's
    evaluation and `hf-autoencoders evaluate` both compute after their one pass over the test images."""
    results = {"quality_num_real": len(real)}
    if reconstructed is not None:
        metrics = feature_metrics(real, reconstructed, seed=seed)
        results.update({f"reconstruction_{name}_{features.name}": v for name, v in metrics.items()})
    if samples:
        num_samples = len(real) if num_samples is None else num_samples
        fake = sample_features(model, features, num_samples, prior=prior, seed=seed, batch_size=batch_size,
                               progress=progress, class_labels=class_labels)
        metrics = feature_metrics(real, fake, seed=seed)
        results.update({f"sample_{name}_{features.name}": v for name, v in metrics.items()})
        results["quality_num_samples"] = num_samples
    results["quality_features"] = features.description
    return results


@torch.no_grad()
def quality_metrics(
    model,
    real_images,
    *,
    features: ImageFeatures,
    num_samples: int | None = None,
    prior=None,
    class_labels=None,
    seed: int = 0,
    batch_size: int = 256,
    reconstructions: bool = True,
    samples: bool = True,
    progress: bool = True,
) -> dict:
    """Quality of a model's reconstructions of ``real_images`` and of its samples, against ``real_images``
    (float (N, C, H, W) in [0, 1], or anything `data.iterate_batches` reads), on ``features``.

    Reconstructions are ``model(x).reconstruction`` of each real image; samples are ``num_samples`` (default N)
    images of ``model.sample(n, generator=..., prior=prior)`` (AE and VAE: z ~ N(0, I); VQ-VAE: uniform codes, or
    ``prior``'s, a class-conditional prior's with the classes in turn and its default guidance), both mapped from the
    model's pixel range to [0, 1] and clamped; the model reads the real images in its range. Seeded by ``seed``. Needs
    at least 6 real images and 6 samples. A class-conditional ``prior`` draws sample k with class
    ``class_labels[k]`` (long, one per sample) where given.

    Returns plain floats under ``f"{target}_{metric}_{features.name}"`` for target in ("reconstruction", "sample")
    and metric in METRICS, with ``quality_num_real`` (N), ``quality_num_samples`` (M, with samples) and
    ``quality_features`` (what the features are).
    """
    if not (reconstructions or samples):
        raise ValueError("Nothing to measure: pass reconstructions=True, samples=True or both.")
    if num_samples is not None and num_samples < 6:
        raise ValueError(f"num_samples must be at least 6 (the k-nearest-neighbour balls of density and coverage "
                         f"have k = 5); got {num_samples}.")
    device = model_device(model)
    # Read every batch first: iterating some containers (a DataLoader) draws from the global RNG, which the seeded
    # block below must not see, or the VAE's reconstructions would depend on the container.
    batches = [as_images(x, "real_images").float() for x, _ in iterate_batches(real_images, batch_size)]
    if not batches:
        raise ValueError("real_images yielded no images; pass a non-empty set of real images.")
    real, reconstructed = [], []
    with eval_mode(model), seeded(seed, device):
        for x in tqdm(batches, desc="real images", disable=not progress, leave=False):
            real.append(features.extract(x, batch_size))
            if reconstructions:
                recon = unit_images(model, model(to_model_range(model, x.to(device))).reconstruction)
                reconstructed.append(features.extract(recon, batch_size))
    reconstructed = torch.cat(reconstructed) if reconstructions else None
    return quality_from_features(model, features, torch.cat(real), reconstructed, num_samples=num_samples, prior=prior,
                                 seed=seed, batch_size=batch_size, samples=samples, progress=progress,
                                 class_labels=class_labels)
