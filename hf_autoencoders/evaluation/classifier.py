"""A reference classifier of the images, and what it says about an autoencoder: how much class information survives
its reconstructions (downstream accuracy), how linearly separable its latents are (linear probe), and how
recognisable its samples are (sample quality).

The classifier (`SmallCNN`) is the library's own small CNN, trained on the dataset's labelled training images: its
scores compare models trained here with each other, not with published numbers (for those, see `frechet`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .metrics import as_images, eval_mode, model_device, to_model_range, unit_images


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
    images = as_images(images, "images").float()
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
    images = as_images(images, "images").float()
    device = model_device(clf)
    with eval_mode(clf):
        return torch.cat([clf(chunk.to(device)).softmax(-1).cpu() for chunk in images.split(batch_size)])


def classifier_accuracy(clf: nn.Module, images, labels, batch_size: int = 512) -> float:
    """Fraction of ``images`` whose arg-max prediction equals ``labels``."""
    probs = predict_proba(clf, images, batch_size)
    return (probs.argmax(-1) == _labels(labels, len(probs), "labels")).double().mean().item()


def downstream_accuracy(model, classifier: nn.Module, test_images, test_labels, batch_size: int = 256) -> dict:
    """How much class information survives an autoencoder: the accuracy of ``classifier`` (trained on the real
    training images, `train_classifier`) on the real ``test_images`` (``classifier_test_accuracy``, the reference)
    and on ``model``'s reconstructions of them (``downstream_accuracy``), both against ``test_labels``."""
    test_images = as_images(test_images, "test_images").float()
    device = model_device(model)
    with eval_mode(model):
        reconstructions = torch.cat([unit_images(model, model(to_model_range(model, x.to(device))).reconstruction).cpu()
                                     for x in test_images.split(batch_size)])
    return {"classifier_test_accuracy": classifier_accuracy(classifier, test_images, test_labels),
            "downstream_accuracy": classifier_accuracy(classifier, reconstructions, test_labels)}


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
