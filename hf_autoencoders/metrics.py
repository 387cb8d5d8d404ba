"""Evaluation metrics for autoencoders.

Image fidelity (MSE, PSNR, SSIM), likelihood bounds for VAEs (ELBO, importance-weighted NLL), codebook usage for
VQ-VAEs, downstream usefulness (a small CNN classifier, a linear probe on latents) and sample quality judged by such
a classifier. Models are used duck-typed: ``model(pixel_values, return_loss=True)`` returns an output with ``.loss``,
``.reconstruction`` and further ``*_loss`` terms, plus ``.latents`` (AE/VAE) or ``.indices`` (VQ-VAE); a VAE's
``encode(x)`` returns a diagonal-Gaussian posterior and ``log_likelihood(x, z)`` gives log p(x | z) per sample.

Images are float tensors (batch, channels, height, width) with values in [0, 1]. Per-image values are averaged over
the set; every returned number is a plain Python float so that the results serialise to JSON.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

LOG_2PI = math.log(2 * math.pi)


# --------------------------------------------------------------------------------------------------------- helpers


def _as_images(x, name: str) -> torch.Tensor:
    """A 4-d image batch; uint8 pixels k become k / 255, as the collator does."""
    x = torch.as_tensor(x)
    if x.dim() != 4:
        raise ValueError(f"{name} must be a 4-d tensor (batch, channels, height, width); got shape {tuple(x.shape)}")
    return x.float() / 255.0 if x.dtype == torch.uint8 else x


def _check_pair(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _as_images(x, "x"), _as_images(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape; got {tuple(x.shape)} and {tuple(y.shape)}")
    return x, y


def _reduce(values: torch.Tensor, reduction: str):
    if reduction == "mean":
        return values.mean().item()
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be 'mean' or 'none'; got {reduction!r}")


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


@contextlib.contextmanager
def _eval_mode(model):
    """Put ``model`` in eval mode (if it has modes) and restore its previous mode afterwards."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        if was_training:
            model.train()


def _model_family(model) -> str:
    """``"ae"``, ``"vae"`` or ``"vqvae"`` from ``model.config.model_type`` (``hf_autoencoders_<family>``)."""
    model_type = getattr(getattr(model, "config", None), "model_type", "")
    return model_type.removeprefix("hf_autoencoders_")


def _to_tensor(value) -> torch.Tensor:
    if isinstance(value, (list, tuple)) and value and (torch.is_tensor(value[0]) or isinstance(value[0], np.ndarray)):
        return torch.stack([torch.as_tensor(v) for v in value])
    return torch.as_tensor(value)


def _pixel_values_of(item, where: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Split one batch (tensor, tuple/list, or dict) into pixel values and labels (``None`` when absent)."""
    if isinstance(item, dict) or hasattr(item, "keys"):
        if "pixel_values" not in item:
            raise ValueError(f"{where} has keys {list(item.keys())}; a 'pixel_values' key is required")
        labels = item.get("labels", item.get("label"))
        return _to_tensor(item["pixel_values"]), None if labels is None else _to_tensor(labels)
    if isinstance(item, (tuple, list)):
        labels = _to_tensor(item[1]) if len(item) > 1 else None
        return _to_tensor(item[0]), labels
    return _to_tensor(item), None


def _stack_examples(examples: list[tuple[torch.Tensor, torch.Tensor | None]]):
    labels = [lab for _, lab in examples]
    return (
        torch.stack([p for p, _ in examples]),
        None if any(lab is None for lab in labels) else torch.stack(labels),
    )


def _group_examples(items: Iterable, batch_size: int):
    """Pass batches (4-d pixel values) through and group single examples (3-d) into batches of ``batch_size``."""
    examples = []
    for item in items:
        pixel_values, labels = _pixel_values_of(item, "an item of the data")
        if pixel_values.dim() != 3:
            yield pixel_values, labels
            continue
        examples.append((pixel_values, labels))
        if len(examples) == batch_size:
            yield _stack_examples(examples)
            examples = []
    if examples:
        yield _stack_examples(examples)


def iterate_batches(data, batch_size: int = 256) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Yield ``(pixel_values, labels_or_None)`` batches from any common container of images.

    Accepted: a tensor (N, C, H, W); a tuple ``(images, labels)`` of tensors; a dict with ``"pixel_values"`` (and
    optionally ``"labels"``/``"label"``); a ``datasets.Dataset`` whose rows have ``"pixel_values"`` (e.g. after
    ``set_transform``); or any indexable or iterable container (a torch ``Dataset``, a ``DataLoader``, a list, a
    ``datasets.IterableDataset``) of batches or of single examples, each a tensor, a tuple ``(pixel_values, label)``
    or a dict; single examples (3-d pixel values) are grouped into batches of ``batch_size``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size}")
    if torch.is_tensor(data) or isinstance(data, np.ndarray):
        data = (torch.as_tensor(data),)
    if isinstance(data, dict):
        if "pixel_values" not in data:
            raise ValueError(f"a dict of data needs a 'pixel_values' key; got keys {list(data.keys())}")
        data = (data["pixel_values"], data.get("labels", data.get("label")))
    if isinstance(data, tuple) and (torch.is_tensor(data[0]) or isinstance(data[0], np.ndarray)):
        images = torch.as_tensor(data[0])
        labels = data[1] if len(data) > 1 else None
        for start in range(0, len(images), batch_size):
            stop = start + batch_size
            yield images[start:stop], None if labels is None else torch.as_tensor(labels[start:stop])
        return
    if hasattr(data, "column_names") and hasattr(data, "__len__"):  # datasets.Dataset: slicing is batched
        for start in range(0, len(data), batch_size):
            batch = data[start : start + batch_size]
            yield _pixel_values_of(batch, "the dataset batch")
        return
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        yield from _group_examples((data[i] for i in range(len(data))), batch_size)
        return
    if isinstance(data, Iterable):
        yield from _group_examples(data, batch_size)
        return
    raise ValueError(
        f"data of type {type(data).__name__} is not supported; pass a tensor, (images, labels), a dict with "
        "'pixel_values', a datasets.Dataset, an indexable dataset or an iterable of batches"
    )


def _num_items(data) -> int | None:
    if torch.is_tensor(data) or isinstance(data, np.ndarray):
        return len(data)
    if isinstance(data, tuple) and (torch.is_tensor(data[0]) or isinstance(data[0], np.ndarray)):
        return len(data[0])
    if isinstance(data, dict) and "pixel_values" in data:
        return len(data["pixel_values"])
    try:
        return len(data.dataset) if hasattr(data, "dataset") else len(data)
    except TypeError:
        return None


# ------------------------------------------------------------------------------------------------ image fidelity


def mse(x, y, reduction: str = "mean"):
    """Mean squared error per pixel, (1/CHW) sum (x - y)^2, per image; averaged over the batch by default."""
    x, y = _check_pair(x, y)
    return _reduce((x.double() - y.double()).pow(2).flatten(1).mean(1), reduction)


def psnr(x, y, data_range: float = 1.0, reduction: str = "mean"):
    """Peak signal-to-noise ratio in dB, 10 log10(data_range^2 / MSE), computed per image and then averaged.

    Averaging per-image PSNRs (rather than taking the PSNR of the pooled MSE) is the usual convention in image
    restoration papers. An image identical to its reference has MSE 0 and PSNR ``inf``; the mean is then ``inf``
    too, so a perfect reconstruction is visible rather than hidden behind an arbitrary cap.
    """
    if data_range <= 0:
        raise ValueError(f"data_range must be positive; got {data_range}")
    values = 10 * torch.log10(data_range**2 / mse(x, y, reduction="none"))  # MSE 0 -> inf
    return _reduce(values, reduction)


def _gaussian_window(size: int, sigma: float, dtype, device) -> torch.Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    window = torch.exp(-(coords**2) / (2 * sigma**2))
    return window / window.sum()


def ssim(
    x,
    y,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    reduction: str = "mean",
):
    """Structural similarity (Wang, Bovik, Sheikh & Simoncelli, 2004) with a Gaussian window.

    With local statistics mu, sigma^2 and the covariance sigma_xy weighted by a normalised ``window_size`` x
    ``window_size`` Gaussian of standard deviation ``sigma``,

        SSIM = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)),

    with C1 = (k1 L)^2, C2 = (k2 L)^2 and L = ``data_range``. The map is computed over valid window positions only
    (no padding, as in the reference implementation), averaged over positions and then over channels, per image.
    Images smaller than the window use a window as large as the image (the largest odd size that fits).
    Values lie in [-1, 1]; SSIM(x, x) = 1.
    """
    x, y = _check_pair(x, y)
    if data_range <= 0:
        raise ValueError(f"data_range must be positive; got {data_range}")
    if window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"window_size must be a positive odd integer; got {window_size}")
    channels, height, width = x.shape[1:]
    size = min(window_size, height, width)
    size -= 1 - size % 2  # keep the window odd so it has a centre
    x, y = x.double(), y.double()
    g = _gaussian_window(size, sigma, x.dtype, x.device)
    kernel_h = g.view(1, 1, size, 1).repeat(channels, 1, 1, 1)
    kernel_w = g.view(1, 1, 1, size).repeat(channels, 1, 1, 1)

    def blur(t):  # separable depthwise Gaussian filter, valid positions only
        return F.conv2d(F.conv2d(t, kernel_h, groups=channels), kernel_w, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov_xy = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return _reduce(ssim_map.flatten(2).mean(2).mean(1), reduction)


# ------------------------------------------------------------------------------------------- likelihood bounds


def _posterior(model, pixel_values):
    posterior = model.encode(pixel_values)
    return getattr(posterior, "latent_dist", posterior)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over every dimension but the first (batch): -1/2 sum (z^2 + log 2 pi)."""
    return -0.5 * (z.pow(2) + LOG_2PI).flatten(1).sum(1)


def importance_sampled_nll(
    model,
    pixel_values,
    num_samples: int = 100,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Importance-weighted estimate of -log p(x) per image, in nats (Burda, Grosse & Salakhutdinov, 2016).

        -log p(x) <= -log (1/K) sum_k p(x | z_k) p(z_k) / q(z_k | x),    z_k ~ q(z | x),

    evaluated with logsumexp for stability. The bound is the (negated) ELBO in expectation for K = 1, and tightens
    monotonically towards -log p(x) as K grows. log p(z) is ``model.log_prior(z)`` where the model has one, else
    N(0, I). Returns a CPU tensor of shape (N,).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer; got {num_samples}")
    device = _model_device(model)
    log_prior = getattr(model, "log_prior", standard_normal_log_prob)
    results = []
    with _eval_mode(model):
        chunks = iterate_batches(torch.as_tensor(pixel_values), batch_size)
        for x, _ in tqdm(chunks, desc=f"IWAE NLL (K={num_samples})", disable=not progress, leave=False):
            x = x.to(device)
            q = _posterior(model, x)
            log_weights = torch.empty(num_samples, x.shape[0], dtype=torch.float64, device=x.device)
            for k in range(num_samples):
                z = q.sample(generator=generator)
                log_weights[k] = (model.log_likelihood(x, z) + log_prior(z) - q.log_prob(z)).double()
            log_mean_weight = torch.logsumexp(log_weights, dim=0) - math.log(num_samples)
            results.append(-log_mean_weight.cpu())
    return torch.cat(results)


def _standard_normal_kl(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return 0.5 * (mean.pow(2) + std.pow(2) - 1 - 2 * std.log()).flatten(1).sum(1)


def elbo(
    model,
    pixel_values,
    batch_size: int = 256,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Evidence lower bound per image, in nats: E_q[log p(x | z)] - KL(q(z | x) || N(0, I)) <= log p(x).

    The expectation is a Monte Carlo average over ``num_samples`` draws of z ~ q(z | x); the KL term is analytic:
    the posterior's ``kl()`` where it has one, else that of a diagonal Gaussian to N(0, I),
    1/2 sum (mu^2 + sigma^2 - 1 - log sigma^2). Returns a CPU tensor of shape (N,).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer; got {num_samples}")
    device = _model_device(model)
    results = []
    with _eval_mode(model):
        chunks = iterate_batches(torch.as_tensor(pixel_values), batch_size)
        for x, _ in tqdm(chunks, desc="ELBO", disable=not progress, leave=False):
            x = x.to(device)
            q = _posterior(model, x)
            kl = q.kl().double() if hasattr(q, "kl") else _standard_normal_kl(q.mean.double(), q.std.double())
            expected_log_lik = sum(
                model.log_likelihood(x, q.sample(generator=generator)).double() for _ in range(num_samples)
            )
            results.append((expected_log_lik / num_samples - kl).cpu())
    return torch.cat(results)


def nats_to_bits_per_dim(nll, num_dims: int):
    """Convert a negative log-likelihood in nats per image into bits per dimension: nll / (num_dims * ln 2).

    ``num_dims`` is the number of modelled values per image (channels * height * width). The result is a meaningful
    code length only for a *discrete* likelihood (a discretized logistic over 8-bit pixels, or a Bernoulli over
    binarized pixels): a continuous density (e.g. the fixed-variance Gaussian) on [0, 1]-scaled data is not a
    probability, can be negative, and is not comparable with the bits/dim reported in the literature.
    Accepts a float, a numpy array or a tensor and returns the same kind.
    """
    if num_dims < 1:
        raise ValueError(f"num_dims must be a positive integer; got {num_dims}")
    return nll / (num_dims * math.log(2))


# ---------------------------------------------------------------------------------------------- codebook usage


class CodebookUsage:
    """Accumulates a histogram of VQ code indices over a whole evaluation set.

    ``compute()`` returns the perplexity exp(H(p)) of the empirical code distribution p (``num_embeddings`` when all
    codes are used uniformly, 1 when a single code is used), the entropy H(p) in nats, the fraction of the codebook
    that was used at least once, and the counts behind them.
    """

    def __init__(self, num_embeddings: int):
        if not isinstance(num_embeddings, int) or num_embeddings < 1:
            raise ValueError(f"num_embeddings must be a positive integer; got {num_embeddings!r}")
        self.num_embeddings = num_embeddings
        self.counts = torch.zeros(num_embeddings, dtype=torch.long)

    def update(self, indices) -> CodebookUsage:
        indices = torch.as_tensor(indices).flatten().long().cpu()
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.num_embeddings):
            raise ValueError(
                f"indices must lie in [0, {self.num_embeddings}); got values in "
                f"[{indices.min().item()}, {indices.max().item()}]"
            )
        self.counts += torch.bincount(indices, minlength=self.num_embeddings)
        return self

    def compute(self) -> dict[str, float]:
        total = int(self.counts.sum())
        if total == 0:
            raise ValueError("CodebookUsage.compute() needs at least one index; update() was never given any")
        p = self.counts.double() / total
        entropy = 0.0 - (p[p > 0] * p[p > 0].log()).sum().item()  # 0.0 - x: no "-0.0" for a single code
        used = int((self.counts > 0).sum())
        return {
            "perplexity": math.exp(entropy),
            "entropy": entropy,
            "usage": used / self.num_embeddings,
            "num_used": used,
            "num_tokens": total,
        }


def codebook_stats(indices, num_embeddings: int) -> dict[str, float]:
    """Codebook perplexity and usage over a tensor of indices or an iterable of index tensors (see CodebookUsage)."""
    usage = CodebookUsage(num_embeddings)
    for chunk in [indices] if torch.is_tensor(indices) or isinstance(indices, np.ndarray) else indices:
        usage.update(chunk)
    return usage.compute()


# ------------------------------------------------------------------------------------------ latent interpolation


def interpolate_latents(z0, z1, steps: int, method: str = "linear") -> torch.Tensor:
    """Points between batches of latents ``z0`` and ``z1`` of shape (batch, *latent_shape).

    Returns (batch, steps, *latent_shape), including both end points. ``"linear"``: (1 - t) z0 + t z1.
    ``"slerp"``: spherical interpolation of each flattened latent, sin((1 - t) w) / sin(w) z0 + sin(t w) / sin(w) z1
    with w the angle between z0 and z1 (Shoemake, 1985; White, 2016), which keeps Gaussian latents at a typical
    norm; it falls back to linear where the two are (anti)parallel. To interpolate a single pair, pass ``z[None]``.
    """
    z0, z1 = torch.as_tensor(z0), torch.as_tensor(z1)
    if z0.shape != z1.shape or z0.dim() < 2:
        raise ValueError(
            f"z0 and z1 must share a shape (batch, *latent_shape); got {tuple(z0.shape)} and {tuple(z1.shape)}"
        )
    if steps < 2:
        raise ValueError(f"steps must be at least 2 (the two end points); got {steps}")
    if method not in ("linear", "slerp"):
        raise ValueError(f"method must be 'linear' or 'slerp'; got {method!r}")
    t = torch.linspace(0, 1, steps, dtype=torch.float64, device=z0.device).view(1, steps, 1)
    a, b = z0.flatten(1).double().unsqueeze(1), z1.flatten(1).double().unsqueeze(1)  # (batch, 1, D)
    out = (1 - t) * a + t * b
    if method == "slerp":
        cos = F.cosine_similarity(a, b, dim=-1).clamp(-1, 1).unsqueeze(-1)  # (batch, 1, 1)
        omega = torch.arccos(cos)
        sin = torch.sin(omega)
        spherical = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / sin.clamp_min(1e-12)
        out = torch.where(sin > 1e-6, spherical, out)
    return out.view(z0.shape[0], steps, *z0.shape[1:]).to(z0.dtype)


# ------------------------------------------------------------------------------------------ downstream classifier


class SmallCNN(nn.Module):
    """Two 3x3 conv + ReLU + 2x2 max-pool stages and a linear classifier on a 7x7 grid of features.

    The adaptive average pooling to 7x7 is the identity for 28x28 inputs and lets 32x32 and 64x64 images share
    the same head.
    """

    def __init__(self, num_channels: int, num_classes: int, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(num_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(7),
        )
        self.classifier = nn.Linear(2 * width * 49, num_classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(2 * pixel_values - 1).flatten(1))  # [0, 1] -> [-1, 1]; logits


def _default_device(device) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _labels(labels, n: int, name: str) -> torch.Tensor:
    labels = torch.as_tensor(labels).long().flatten()
    if len(labels) != n:
        raise ValueError(f"{name} must have one label per image ({n}); got {len(labels)}")
    return labels


def train_classifier(
    images,
    labels,
    num_classes: int | None = None,
    epochs: int = 5,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    width: int = 32,
    seed: int = 0,
    device=None,
    progress: bool = True,
) -> SmallCNN:
    """Train a SmallCNN on ``images`` (N, C, H, W) in [0, 1] with integer ``labels`` using Adam and cross-entropy.

    Initialisation and shuffling are seeded by ``seed`` (without touching the global RNG state), so on CPU two calls
    with the same inputs return identical weights. Returns the classifier in eval mode on ``device``.
    """
    images = _as_images(images, "images").float()
    labels = _labels(labels, len(images), "labels")
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}); got [{labels.min().item()}, {labels.max().item()}]")
    device = _default_device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clf = SmallCNN(images.shape[1], num_classes, width).to(device)
    optimizer = torch.optim.Adam(clf.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    clf.train()
    for _ in tqdm(range(epochs), desc="classifier epochs", disable=not progress, leave=False):
        for idx in torch.randperm(len(images), generator=generator).split(batch_size):
            loss = F.cross_entropy(clf(images[idx].to(device)), labels[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return clf.eval()


def predict_proba(clf: nn.Module, images, batch_size: int = 512) -> torch.Tensor:
    """Softmax class probabilities (N, num_classes) of a logit-producing classifier, on CPU."""
    images = _as_images(images, "images").float()
    device = _model_device(clf)
    with _eval_mode(clf):
        return torch.cat([clf(chunk.to(device)).softmax(-1).cpu() for chunk in images.split(batch_size)])


def classifier_accuracy(clf: nn.Module, images, labels, batch_size: int = 512) -> float:
    """Fraction of ``images`` whose arg-max prediction equals ``labels``."""
    probs = predict_proba(clf, images, batch_size)
    return (probs.argmax(-1) == _labels(labels, len(probs), "labels")).double().mean().item()


def downstream_accuracy(
    train_images,
    train_labels,
    test_images,
    test_labels,
    test_reconstructions=None,
    synthetic_images=None,
    synthetic_labels=None,
    classifier: nn.Module | None = None,
    num_classes: int | None = None,
    epochs: int = 5,
    width: int = 32,
    seed: int = 0,
    device=None,
    progress: bool = True,
) -> dict[str, float]:
    """How much class information survives an autoencoder, measured with a SmallCNN in both directions.

    The classifiers are SmallCNNs trained by ``train_classifier`` with ``epochs``, ``width`` and ``seed``.
    Returns (keys read "train_<A>_test_<B>": trained on A, tested on B):
      - ``train_real_test_real``: a classifier trained on the real training images (or the given ``classifier``),
        tested on the real test images: the reference accuracy.
      - ``train_real_test_reconstructions``: the same classifier on ``test_reconstructions`` (reconstructions of
        the test images) against the true test labels; present when they are given.
      - ``train_synthetic_test_real``: a fresh classifier trained on ``synthetic_images`` (reconstructions of the
        training set, or samples) with ``synthetic_labels`` - or, when those are ``None``, pseudo-labels given by the
        real classifier - tested on the real test images; present when ``synthetic_images`` is given.
    """
    test_labels = _labels(test_labels, len(test_images), "test_labels")
    if num_classes is None:
        num_classes = int(max(torch.as_tensor(train_labels).max(), test_labels.max())) + 1
    if classifier is None:
        classifier = train_classifier(
            train_images, train_labels, num_classes, epochs, width=width, seed=seed, device=device, progress=progress
        )
    results = {"train_real_test_real": classifier_accuracy(classifier, test_images, test_labels)}
    if test_reconstructions is not None:
        results["train_real_test_reconstructions"] = classifier_accuracy(
            classifier, test_reconstructions, test_labels
        )
    if synthetic_images is not None:
        if synthetic_labels is None:
            synthetic_labels = predict_proba(classifier, synthetic_images).argmax(-1)
        synthetic_clf = train_classifier(
            synthetic_images, synthetic_labels, num_classes, epochs, width=width, seed=seed, device=device,
            progress=progress,
        )
        results["train_synthetic_test_real"] = classifier_accuracy(synthetic_clf, test_images, test_labels)
    return results


@torch.no_grad()
def representations(model, images, batch_size: int = 500) -> torch.Tensor:
    """The representation of each image, flattened to (N, features): z = f(x) (AE), the posterior mean E_q[z] (VAE),
    z_q (VQ-VAE). What a linear probe or a latent-layout plot reads."""
    family = _model_family(model)
    device = _model_device(model)
    chunks = []
    with _eval_mode(model):
        for x in _as_images(images, "images").float().split(batch_size):
            x = x.to(device)
            if family == "ae":
                z = model.encode(x)
            elif family == "vae":
                z = model.encode(x).mean
            else:
                z = model.quantize(model.encode(x)).quantized
            chunks.append(z.flatten(1).cpu())
    return torch.cat(chunks)


def linear_probe_accuracy(
    train_latents, train_labels, test_latents, test_labels, max_iter: int = 1000, C: float = 1.0
) -> float:
    """Test accuracy of a multinomial logistic regression on standardised latents (features flattened per sample)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def features(z):
        z = torch.as_tensor(z)
        return z.reshape(len(z), -1).double().cpu().numpy()

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=C))
    probe.fit(features(train_latents), torch.as_tensor(train_labels).cpu().numpy())
    return float(probe.score(features(test_latents), torch.as_tensor(test_labels).cpu().numpy()))


def sample_quality(clf: nn.Module, samples, confidence_threshold: float = 0.9, batch_size: int = 512) -> dict:
    """Judge generated samples with a classifier trained on real data.

    With p(y | x) the classifier's softmax and p(y) = mean_x p(y | x):
      - ``confident_fraction``: fraction of samples with max_y p(y | x) >= ``confidence_threshold``;
      - ``mean_max_prob``: mean of max_y p(y | x) (how recognisable samples are);
      - ``class_entropy``: entropy in nats of the histogram of predicted classes (diversity; at most
        ``log(num_classes)``, reported as ``max_class_entropy``);
      - ``inception_score``: exp(E_x KL(p(y | x) || p(y))), an Inception-Score-like number computed with this
        classifier instead of Inception (between 1 and num_classes; not comparable with published IS values).
    """
    probs = predict_proba(clf, samples, batch_size).double()
    num_classes = probs.shape[1]
    max_prob = probs.max(-1).values
    histogram = torch.bincount(probs.argmax(-1), minlength=num_classes).double() / len(probs)
    class_entropy = 0.0 - (histogram[histogram > 0] * histogram[histogram > 0].log()).sum().item()
    marginal = probs.mean(0)
    kl = (probs * (probs.clamp_min(1e-12).log() - marginal.clamp_min(1e-12).log())).sum(-1)
    return {
        "confident_fraction": (max_prob >= confidence_threshold).double().mean().item(),
        "mean_max_prob": max_prob.mean().item(),
        "class_entropy": class_entropy,
        "max_class_entropy": math.log(num_classes),
        "inception_score": kl.mean().exp().item(),
    }


# ------------------------------------------------------------------------------------------------- whole model


def _loss_terms(output) -> dict[str, torch.Tensor]:
    items = output.items() if hasattr(output, "items") else vars(output).items()
    return {k: v for k, v in items if k.endswith("loss") and torch.is_tensor(v) and v.numel() == 1}


def collect_outputs(
    model, data, fields: tuple[str, ...] = ("reconstruction", "latents"), batch_size: int = 256, progress: bool = True
) -> dict[str, torch.Tensor]:
    """Run ``model`` over ``data`` and concatenate the requested output fields (on CPU), plus ``labels`` if the data
    has them. Fields the model does not return are left out (e.g. ``latents`` of a VQ-VAE that returns ``indices``).
    """
    device = _model_device(model)
    collected: dict[str, list[torch.Tensor]] = {}
    with _eval_mode(model):
        batches = iterate_batches(data, batch_size)
        total = _num_batches(data, batch_size)
        for x, labels in tqdm(batches, desc="collecting outputs", total=total, disable=not progress, leave=False):
            output = model(_as_images(x, "pixel_values").to(device).float())
            for field in fields:
                value = getattr(output, field, None)
                if value is not None:
                    collected.setdefault(field, []).append(value.detach().cpu())
            if labels is not None:
                collected.setdefault("labels", []).append(labels.cpu())
    return {k: torch.cat(v) for k, v in collected.items()}


def _num_batches(data, batch_size: int) -> int | None:
    n = _num_items(data)
    if n is None or hasattr(data, "batch_size"):  # a DataLoader yields its own batches
        return len(data) if hasattr(data, "__len__") else None
    return math.ceil(n / batch_size)


def evaluate_model(
    model,
    data,
    batch_size: int = 256,
    num_importance_samples: int = 100,
    max_examples: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Every applicable metric of an autoencoder over an evaluation set, as a JSON-serialisable dict of floats (and
    the integer counts ``num_examples`` and ``iwae_num_samples``).

    All models: ``mse`` (per pixel), ``psnr`` (dB, per-image mean), ``ssim`` (per-image mean), each computed on the
    reconstruction clamped to [0, 1], and the set average of every scalar ``*_loss`` field of the output (``loss``,
    ``reconstruction_loss``, ``kl_loss``, ...).
    VAE: ``elbo`` (nats per image, one sample of z) and, if ``num_importance_samples`` > 0, ``iwae_nll`` (nats) with
    ``iwae_num_samples``; with a discrete likelihood (``config.likelihood`` "discretized_logistic" or "bernoulli") also
    ``iwae_bits_per_dim`` and ``elbo_bits_per_dim`` (the negative ELBO in bits/dim).
    VQ-VAE: ``codebook_perplexity``, ``codebook_usage`` (fraction of codes used), ``codebook_entropy`` over the set.
    ``max_examples`` evaluates only the first examples; ``seed`` seeds the posterior samples of the bounds.
    """
    family = _model_family(model)
    device = _model_device(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    per_image: dict[str, list[torch.Tensor]] = {"mse": [], "psnr": [], "ssim": []}
    loss_sums: dict[str, float] = {}
    codebook = CodebookUsage(int(model.config.num_embeddings)) if family == "vqvae" else None
    num_examples, num_dims = 0, None
    total = _num_batches(data, batch_size)
    with _eval_mode(model):
        for x, _ in tqdm(iterate_batches(data, batch_size), desc="evaluating", total=total, disable=not progress):
            if max_examples is not None:
                if num_examples >= max_examples:
                    break
                x = x[: max_examples - num_examples]
            x = _as_images(x, "pixel_values").to(device).float()
            num_examples += len(x)
            num_dims = x[0].numel()
            output = model(x, return_loss=True)
            for name, value in _loss_terms(output).items():  # per-sample averages: weight by batch size
                loss_sums[name] = loss_sums.get(name, 0.0) + value.item() * len(x)
            reconstruction = output.reconstruction.clamp(0, 1)
            per_image["mse"].append(mse(x, reconstruction, reduction="none").cpu())
            per_image["psnr"].append(psnr(x, reconstruction, reduction="none").cpu())
            per_image["ssim"].append(ssim(x, reconstruction, reduction="none").cpu())
            if family == "vae":
                per_image.setdefault("elbo", []).append(elbo(model, x, len(x), generator=generator))
                if num_importance_samples > 0:
                    per_image.setdefault("iwae_nll", []).append(
                        importance_sampled_nll(model, x, num_importance_samples, len(x), generator=generator)
                    )
            if codebook is not None:
                codebook.update(output.indices)
    if num_examples == 0:
        raise ValueError("data yielded no examples to evaluate")
    results: dict[str, float] = {"num_examples": num_examples}
    results.update({name: torch.cat(values).double().mean().item() for name, values in per_image.items()})
    results.update({name: total_loss / num_examples for name, total_loss in loss_sums.items()})
    if "iwae_nll" in results:
        results["iwae_num_samples"] = num_importance_samples
    if family == "vae" and getattr(model.config, "likelihood", None) in ("discretized_logistic", "bernoulli"):
        results["elbo_bits_per_dim"] = nats_to_bits_per_dim(-results["elbo"], num_dims)
        if "iwae_nll" in results:
            results["iwae_bits_per_dim"] = nats_to_bits_per_dim(results["iwae_nll"], num_dims)
    if codebook is not None:
        stats = codebook.compute()
        results.update(
            codebook_perplexity=stats["perplexity"], codebook_usage=stats["usage"], codebook_entropy=stats["entropy"]
        )
    return {k: v if isinstance(v, int) else float(v) for k, v in results.items()}
