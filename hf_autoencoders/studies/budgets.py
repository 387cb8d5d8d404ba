"""How much data, model and compute the runs of an experiment get: the `Budget`, and the named budgets.

    quick   MLP models, 300 steps of batch 64: every experiment quickly on a CPU (the tests' path).
    mlp     MLP models, 800 steps of batch 128 (1.7 epochs of MNIST): the budget of the first MNIST results.
    seed    the budget the questions were written for: conv models trained for epochs (5 on MNIST, 25 for the
            samples experiment), compare / samples / linear-pca over 3 seeds. On 3-channel data (CIFAR-10) the
            `seed` budget is `SEED_RGB`: wider conv models, a K = 512, d = 64 VQ-VAE with an 8x8 code map, 3 epochs.

A budget is the same for every run of an experiment; `Budget.replace` overrides fields (from the command line:
`--max_steps`, `--seeds`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    """The data, model sizes, training length, seeds and evaluation sizes of every run of an experiment."""

    # data
    max_train_examples: int | None  # None: the whole training split
    max_test_examples: int
    # models: one backbone for every family
    backbone: str
    hidden_size: int
    num_hidden_layers: int
    latent_dim: int  # AE / VAE
    num_embeddings: int  # VQ-VAE codebook size K
    embedding_dim: int  # VQ-VAE code dimension d
    # training: `max_steps` if set, else `epochs` passes over the training images (`sample_epochs` in `samples`)
    max_steps: int | None
    epochs: float | None
    batch_size: int
    learning_rate: float
    # evaluation
    iwae_samples: int  # K of the importance-weighted bound
    iwae_examples: int  # test images the likelihood bounds are computed on
    probe_examples: int  # training images the linear probe is fitted on
    classifier_examples: int  # training images of the reference classifier (and of the Frechet-distance features)
    classifier_epochs: int
    classifier_width: int
    num_samples: int  # Frechet distances: this many samples per model against as many test images
    tsne_points: int
    # PixelCNN prior (samples experiment)
    prior_steps: int
    prior_hidden_size: int
    prior_layers: int
    # the swept values
    latent_sizes: tuple[int, ...]
    kl_weights: tuple[float, ...] = (1.0, 0.01, 0.001, 0.0001)
    noise_levels: tuple[float, ...] = (0.25, 0.5, 0.75)
    # seeds of the replicated experiments (compare, samples, linear-pca); sweeps train one seed per setting
    num_seeds: int = 1
    # bits per code of the quantizers experiment: K = 2^bits codes for every quantizer (and per depth of residual VQ)
    quantizer_bits: int = 12
    sample_epochs: float | None = None  # training length of the samples experiment (None: `epochs`)
    name: str = "custom"  # the name it is known by in `BUDGETS`

    def __post_init__(self):
        positive_ints = ["max_test_examples", "hidden_size", "latent_dim", "num_embeddings", "embedding_dim",
                         "batch_size", "iwae_samples", "iwae_examples", "probe_examples", "classifier_examples",
                         "classifier_epochs", "classifier_width", "num_samples", "tsne_points", "prior_steps",
                         "prior_hidden_size", "prior_layers", "num_seeds", "quantizer_bits"]
        for name in positive_ints + ["max_train_examples", "max_steps"]:
            value = getattr(self, name)
            if value is None and name not in positive_ints:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"budget field {name} must be a positive integer, got {value!r}")
        if not isinstance(self.num_hidden_layers, int) or self.num_hidden_layers < 0:
            raise ValueError(f"budget field num_hidden_layers must be an integer >= 0, got {self.num_hidden_layers!r}")
        for name in ("epochs", "sample_epochs", "learning_rate"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"budget field {name} must be a positive number, got {value!r}")
        if self.max_steps is None and self.epochs is None:
            raise ValueError("a budget needs max_steps or epochs")
        for name in ("latent_sizes", "kl_weights", "noise_levels"):
            values = getattr(self, name)
            if not values or any(not isinstance(v, (int, float)) or v <= 0 for v in values):
                raise ValueError(f"budget field {name} must be a non-empty sequence of positive numbers, "
                                 f"got {values!r}")

    def replace(self, **overrides) -> Budget:
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown budget field(s) {unknown}; the fields are {sorted(known)}")
        return dataclasses.replace(self, **overrides)

    def train_steps(self, num_train_examples: int, epochs: float | None = None) -> int:
        """Optimizer steps of one run: `max_steps` if set, else `epochs` (default: the budget's) passes over
        `num_train_examples` images in batches of `batch_size` (the last batch of a pass may be smaller)."""
        if self.max_steps is not None:
            return self.max_steps
        return math.ceil((epochs or self.epochs) * math.ceil(num_train_examples / self.batch_size))


QUICK = Budget(
    max_train_examples=10_000, max_test_examples=500, backbone="mlp", hidden_size=128, num_hidden_layers=2,
    latent_dim=16, num_embeddings=64, embedding_dim=8, max_steps=300, epochs=None, batch_size=64,
    learning_rate=2e-3, iwae_samples=32, iwae_examples=200, probe_examples=1500, classifier_examples=1500,
    classifier_epochs=10, classifier_width=16, num_samples=256, tsne_points=500, prior_steps=200,
    prior_hidden_size=16, prior_layers=3, latent_sizes=(128, 16, 2), quantizer_bits=6, name="quick",
)
MLP = Budget(
    max_train_examples=None, max_test_examples=5000, backbone="mlp", hidden_size=256, num_hidden_layers=2,
    latent_dim=16, num_embeddings=128, embedding_dim=16, max_steps=800, epochs=None, batch_size=128,
    learning_rate=1e-3, iwae_samples=100, iwae_examples=1000, probe_examples=5000, classifier_examples=5000,
    classifier_epochs=3, classifier_width=16, num_samples=1000, tsne_points=2000, prior_steps=400,
    prior_hidden_size=32, prior_layers=4, latent_sizes=(512, 256, 128, 16, 2), name="mlp",
)
# Conv models of 16 channels: narrow enough that the MNIST set (about a hundred 5-epoch model trainings counting the
# 25-epoch ones) runs on a CPU (docs/experiments.md gives the times).
SEED = Budget(
    max_train_examples=None, max_test_examples=10_000, backbone="conv", hidden_size=16, num_hidden_layers=0,
    latent_dim=16, num_embeddings=512, embedding_dim=16, max_steps=None, epochs=5, sample_epochs=25,
    batch_size=128, learning_rate=1e-3, iwae_samples=100, iwae_examples=1000, probe_examples=5000,
    classifier_examples=10_000, classifier_epochs=3, classifier_width=16, num_samples=5000, tsne_points=2000,
    prior_steps=1000, prior_hidden_size=32, prior_layers=4, latent_sizes=(512, 256, 128, 16, 2), num_seeds=3,
    name="seed",
)
# CIFAR-10: 32x32x3 images give an 8x8 code map; K = 512 codes of d = 64 as in the VQ-VAE questions. The samples
# experiment uses the same 3 epochs as compare, so it reuses compare's trained models (see `--runs_dir`).
SEED_RGB = SEED.replace(hidden_size=32, latent_dim=64, embedding_dim=64, epochs=3, sample_epochs=3,
                        latent_sizes=(512, 256, 128, 64, 16), name="seed (RGB)")

BUDGETS = {"quick": QUICK, "mlp": MLP, "seed": SEED}
RGB_BUDGETS = {"seed": SEED_RGB}  # replaces the budget of that name for 3-channel data


def budget_named(name: str, num_channels: int = 1, **overrides) -> Budget:
    """The budget called `name` (one of `BUDGETS`) for images of `num_channels` channels, with `overrides`."""
    if name not in BUDGETS:
        raise ValueError(f"budget {name!r} is not known; use one of {', '.join(BUDGETS)}")
    budget = RGB_BUDGETS.get(name, BUDGETS[name]) if num_channels == 3 else BUDGETS[name]
    return budget.replace(**overrides)


__all__ = ["BUDGETS", "MLP", "QUICK", "RGB_BUDGETS", "SEED", "SEED_RGB", "Budget", "budget_named"]
