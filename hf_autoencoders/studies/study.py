"""What every experiment shares: the budget, a trained run, and the `Study` that trains and evaluates runs on one
dataset and writes the report (`report.md`, `results.json` and figures).

Every experiment trains a handful of models on the same data with the same backbone and budget (`Budget`), evaluates
them the same way (`Study.evaluate`, on top of `hf_autoencoders.evaluation.evaluate`) and states what the numbers
show. The experiments themselves are one module each in this package.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from transformers import set_seed
from transformers.trainer_callback import PrinterCallback

from ..data import ImageCollator, ImageTensorDataset
from ..evaluation import (
    classifier_accuracy,
    evaluate,
    interpolate_latents,
    linear_probe_accuracy,
    representations,
    sample_quality,
    train_classifier,
)
from ..models import autoencoder_classes
from ..plots import plot_interpolations, plot_loss_curves, plot_reconstructions, plot_samples, save_image_grid
from ..training import AutoencoderTrainer, AutoencoderTrainingArguments

PROBE_MAX_ITER = 300  # L-BFGS iterations of the linear probe


@dataclass(frozen=True)
class Budget:
    """How much data, model and compute every run of an experiment gets (the same for all its runs)."""

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
    # training
    max_steps: int
    batch_size: int
    learning_rate: float
    # evaluation
    iwae_samples: int  # K of the importance-weighted bound
    iwae_examples: int  # test images the likelihood bounds are computed on
    probe_examples: int  # training images the linear probe is fitted on
    classifier_examples: int  # training images of the reference classifier
    classifier_epochs: int
    classifier_width: int
    num_samples: int  # generated images judged by the classifier
    tsne_points: int
    # PixelCNN prior (samples experiment)
    prior_steps: int
    prior_hidden_size: int
    prior_layers: int
    # the swept values
    latent_sizes: tuple[int, ...]
    kl_weights: tuple[float, ...] = (1.0, 0.01, 0.001, 0.0001)
    noise_levels: tuple[float, ...] = (0.25, 0.5, 0.75)

    def replace(self, **overrides) -> Budget:
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown budget field(s) {unknown}; the fields are {sorted(known)}")
        return dataclasses.replace(self, **overrides)


QUICK = Budget(
    max_train_examples=10_000, max_test_examples=500, backbone="mlp", hidden_size=128, num_hidden_layers=2,
    latent_dim=16, num_embeddings=64, embedding_dim=8, max_steps=300, batch_size=64, learning_rate=2e-3,
    iwae_samples=32, iwae_examples=200, probe_examples=1500, classifier_examples=1500, classifier_epochs=10,
    classifier_width=16, num_samples=256, tsne_points=500, prior_steps=200, prior_hidden_size=16, prior_layers=3,
    latent_sizes=(128, 16, 2),
)
FULL = Budget(
    max_train_examples=None, max_test_examples=5000, backbone="mlp", hidden_size=256, num_hidden_layers=2,
    latent_dim=16, num_embeddings=128, embedding_dim=16, max_steps=800, batch_size=128, learning_rate=1e-3,
    iwae_samples=100, iwae_examples=1000, probe_examples=5000, classifier_examples=5000, classifier_epochs=3,
    classifier_width=16, num_samples=1000, tsne_points=2000, prior_steps=400, prior_hidden_size=32, prior_layers=4,
    latent_sizes=(512, 256, 128, 16, 2),
)


@dataclass
class Run:
    """One trained model and what was measured on it."""

    label: str
    family: str
    model: torch.nn.Module
    metrics: dict
    log_history: list = field(default_factory=list)
    train_seconds: float = 0.0
    reconstructions: torch.Tensor | None = None  # of the first test images (after input noise, if any)
    samples: torch.Tensor | None = None

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "_", self.label.lower()).strip("_")


def display_name(family: str) -> str:
    """"VQ-VAE" for "vqvae": the family's own display name."""
    return autoencoder_classes(family)[0].display_name


def as_float_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float in [0, 1] (what `ImageCollator` does to a batch)."""
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()


def train_quietly(trainer_class, model, dataset, collator, *, steps: int, batch_size: int, learning_rate: float,
                  seed: int) -> list[dict]:
    """Train `model` with a transformers Trainer of `trainer_class` for `steps` steps and return its log history.
    Nothing is written to disk and nothing printed: the experiment's progress bar says how far it is."""
    with tempfile.TemporaryDirectory() as scratch:
        args = AutoencoderTrainingArguments(
            output_dir=scratch, max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=learning_rate,
            logging_steps=max(1, steps // 25), save_strategy="no", report_to="none", disable_tqdm=True, seed=seed,
            dataloader_pin_memory=torch.cuda.is_available(),
        )
        trainer = trainer_class(model=model, args=args, data_collator=collator, train_dataset=dataset)
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    return trainer.state.log_history


class Study:
    """What every experiment shares: the data, the reference classifier, training and evaluating runs with one
    budget, figures, and the report (`report.md` + `results.json`)."""

    def __init__(self, name: str, title: str, question: str, output_dir: Path, data, budget: Budget, seed: int,
                 progress: bool = True):
        self.name, self.title, self.question = name, title, question
        self.dir, self.data, self.budget, self.seed, self.progress = Path(output_dir), data, budget, seed, progress
        b = budget
        train, test = data.train, data.test
        n_train = len(train) if b.max_train_examples is None else min(b.max_train_examples, len(train))
        self.train_set = ImageTensorDataset(train.images[:n_train],
                                            None if train.labels is None else train.labels[:n_train])
        self.test_x = as_float_images(test.images[: b.max_test_examples])
        self.test_y = None if test.labels is None else test.labels[: b.max_test_examples]
        self.labelled = self.test_y is not None and train.labels is not None and data.num_labels is not None
        self.runs: dict[str, Run] = {}
        self.sections: list[str] = []
        self.findings: list[str] = []
        self.figures: list[str] = []
        self.summary: dict = {}  # experiment-specific numbers for results.json
        self.reference: dict = {}
        self.started = time.time()

    # ------------------------------------------------------------------------------------------- data helpers

    def train_images(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        n = min(n, len(self.train_set))
        labels = self.train_set.labels
        return as_float_images(self.train_set.images[:n]), None if labels is None else labels[:n]

    def noisy(self, images: torch.Tensor, noise_std: float) -> torch.Tensor:
        """x + noise_std * eps with a fixed seed: the corruption the denoising models are trained with (unclamped)."""
        if noise_std == 0:
            return images
        generator = torch.Generator().manual_seed(self.seed + 1)
        return images + noise_std * torch.randn(images.shape, generator=generator)

    @cached_property
    def classifier(self):
        """A SmallCNN trained on real training images: the judge of reconstructions and samples."""
        b = self.budget
        images, labels = self.train_images(b.classifier_examples)
        with torch.enable_grad():  # first asked for inside an evaluation under no_grad
            clf = train_classifier(images, labels, self.data.num_labels, epochs=b.classifier_epochs,
                                   width=b.classifier_width, seed=self.seed, progress=False)
        self.reference["classifier_examples"] = len(images)
        self.reference["classifier_test_accuracy"] = classifier_accuracy(clf, self.test_x, self.test_y)
        return clf

    # ------------------------------------------------------------------------------------------------ models

    def config(self, family: str, **fields):
        """A config of `family` with the budget's backbone and sizes, shaped for the data; `fields` override."""
        b = self.budget
        config_class = autoencoder_classes(family)[0]
        values = dict(image_size=self.data.image_size, num_channels=self.data.num_channels, backbone=b.backbone,
                      hidden_size=b.hidden_size, num_hidden_layers=b.num_hidden_layers, latent_dim=b.latent_dim,
                      num_embeddings=b.num_embeddings, embedding_dim=b.embedding_dim)
        values = {k: v for k, v in values.items() if k in config_class.__dataclass_fields__}
        return config_class(**{**values, **fields})

    def train(self, label: str, family: str, test_noise_std: float = 0.0, **fields) -> Run:
        """Train a `family` model (config `fields` override the budget's) and evaluate it on the test images, with
        Gaussian noise of `test_noise_std` on the input (clean targets)."""
        if label in self.runs:
            raise ValueError(f"a run named {label!r} exists already in this study")
        set_seed(self.seed)
        model = autoencoder_classes(family)[1](self.config(family, **fields))
        start = time.time()
        log_history = train_quietly(AutoencoderTrainer, model, self.train_set, ImageCollator(),
                                    steps=self.budget.max_steps, batch_size=self.budget.batch_size,
                                    learning_rate=self.budget.learning_rate, seed=self.seed)
        run = Run(label, family, model.eval(), {}, log_history, time.time() - start)
        run.metrics = self.evaluate(run, test_noise_std)
        self.runs[label] = run
        return run

    def train_all(self, specs: list[tuple]) -> list[Run]:
        """Train (label, family, config-fields[, test_noise_std]) specs in order, with a progress bar."""
        from tqdm.auto import tqdm

        runs = []
        bar = tqdm(specs, desc=f"{self.name}: runs", unit="run", disable=not self.progress)
        for label, family, fields, *noise in bar:
            bar.set_postfix_str(label)
            runs.append(self.train(label, family, *noise, **fields))
        return runs

    @torch.no_grad()
    def fidelity(self, model, noise_std: float = 0.0) -> tuple[dict, torch.Tensor]:
        """`hf_autoencoders.evaluation.evaluate` on the test images, given with `noise_std` Gaussian noise on the
        input and compared with the clean images (MSE / PSNR / SSIM, every loss term, the codebook usage of a
        VQ-VAE), plus the summed squared error and the reference classifier's accuracy on the reconstructions.
        Returns (metrics, reconstructions)."""
        reconstructions = []
        metrics = evaluate(model, self.test_x, batch_size=500, noise_std=noise_std, seed=self.seed + 1,
                           progress=False,
                           on_batch=lambda x, out: reconstructions.append(out.reconstruction.clamp(0, 1).cpu()))
        recon = torch.cat(reconstructions)
        metrics = {"num_test_examples": metrics.pop("num_examples"), "noise_std": noise_std, **metrics,
                   "sse": metrics["mse"] * self.test_x[0].numel()}
        if self.labelled:
            metrics["downstream_accuracy"] = classifier_accuracy(self.classifier, recon, self.test_y)
        return metrics, recon

    def samples(self, model, prior=None) -> torch.Tensor:
        """The budget's number (at least 32) of samples of `model` (codes from `prior` for a VQ-VAE), in [0, 1]."""
        generator = torch.Generator(device=model.device).manual_seed(self.seed)
        return model.sample(max(self.budget.num_samples, 32), generator=generator, prior=prior).clamp(0, 1).cpu()

    @torch.no_grad()
    def evaluate(self, run: Run, noise_std: float = 0.0, keep: int = 16) -> dict:
        """Every applicable metric of a trained model: `fidelity` (inputs with `noise_std` noise, clean targets);
        for a model with a posterior (VAE) the ELBO / IWAE NLL of the first clean test images and its active units;
        linear-probe accuracy on the representations of clean images, and the classifier's judgement of samples.
        Keeps the first reconstructions and samples."""
        model, b = run.model, self.budget
        metrics, recon = self.fidelity(model, noise_std)
        if hasattr(model, "log_importance_weights"):
            bounds = evaluate(model, self.test_x, max_examples=b.iwae_examples, num_importance_samples=b.iwae_samples,
                              seed=self.seed, progress=False)
            metrics.update(elbo=bounds["elbo"], iwae_nll=bounds["iwae_nll"], iwae_samples=b.iwae_samples,
                           bound_examples=bounds["num_examples"])
            means = representations(model, self.test_x)
            metrics["active_units"] = int((means.var(0) > 0.01).sum())  # Burda et al. (2016): Var_x E_q[z_j] > 0.01
        run.reconstructions = recon[:keep]
        run.samples = self.samples(model)
        if self.labelled:
            probe_x, probe_y = self.train_images(b.probe_examples)
            with warnings.catch_warnings():  # an unconverged probe is still a probe: its budget is fixed
                warnings.simplefilter("ignore")
                metrics["linear_probe_accuracy"] = linear_probe_accuracy(
                    representations(model, probe_x), probe_y, representations(model, self.test_x), self.test_y,
                    max_iter=PROBE_MAX_ITER)
            metrics.update({f"sample_{k}": v for k, v in sample_quality(self.classifier, run.samples).items()})
        return metrics

    # ----------------------------------------------------------------------------------------------- figures

    def path(self, filename: str) -> Path:
        self.figures.append(filename)
        return self.dir / filename

    def reconstruction_figure(self, run: Run) -> str:
        name = f"{run.slug}_reconstructions.png"
        plot_reconstructions(self.test_x[: len(run.reconstructions)], run.reconstructions, self.path(name))
        return name

    def samples_figure(self, run: Run, samples: torch.Tensor | None = None, name: str | None = None) -> str:
        name = name or f"{run.slug}_samples.png"
        plot_samples((run.samples if samples is None else samples)[:32], self.path(name))
        return name

    def loss_figure(self, runs: list[Run], terms: tuple[str, ...] = ("loss",), name: str = "loss_curves.png") -> str:
        """One subplot per run and term: the training curves of every run side by side."""
        history = [{"step": entry["step"], f"{run.label} {term}": entry[term]}
                   for run in runs for entry in run.log_history for term in terms if term in entry]
        plot_loss_curves(history, self.path(name), title="training loss (per image, averaged since the last log)")
        return name

    @torch.no_grad()
    def interpolation_figure(self, run: Run, pairs: int = 4, steps: int = 10) -> str:
        """Decoded straight lines in latent space between test images i and i + pairs: between posterior means for a
        VAE, between encoder outputs z_e for a VQ-VAE (whose `decode` quantizes every point)."""
        model, x = run.model, self.test_x[: 2 * pairs].to(run.model.device)
        encoded = model.encode(x)
        z = encoded.latent_dist.mode() if hasattr(encoded, "latent_dist") else encoded.latents
        path = interpolate_latents(z[:pairs], z[pairs:], steps)
        images = model.decode(path.flatten(0, 1).to(z.dtype)).sample.clamp(0, 1).cpu()
        name = f"{run.slug}_interpolations.png"
        plot_interpolations(images.view(pairs, steps, *images.shape[1:]), self.path(name))
        return name

    def image_rows_figure(self, rows: list[torch.Tensor], name: str, nrow: int = 8) -> str:
        """Rows of images stacked into one grid (each row `nrow` images)."""
        save_image_grid(torch.cat([r[:nrow].clamp(0, 1) for r in rows]), self.path(name), nrow=nrow, scale=2)
        return name

    def line_figure(self, name: str, panels: list[tuple[str, dict]], xlabel: str, logx: bool = False) -> str:
        """One panel per (y label, {series name: (xs, ys)}), the series drawn as lines with markers."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4.2 * len(panels), 3.6))
        FigureCanvasAgg(fig)
        for ax, (ylabel, series) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
            for label, (xs, ys) in series.items():
                ax.plot(xs, ys, marker="o", ms=4, label=label)
            if logx:
                ax.set_xscale("log")
            ax.set(xlabel=xlabel, ylabel=ylabel)
            ax.grid(alpha=0.3)
            if len(series) > 1:
                ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(self.path(name), dpi=120)
        return name

    # ------------------------------------------------------------------------------------------------ report

    def section(self, title: str, text: str = "", table: str = "", figures: list[tuple[str, str]] = ()):
        """A `## title` section: text, a markdown table and figures given as (caption, file name)."""
        parts = [f"## {title}", text, table]
        parts += [f"![{caption}]({name})\n*{caption}*" for caption, name in figures]
        self.sections.append("\n\n".join(p for p in parts if p))

    def table(self, runs: list[Run], columns: list[str], first: str = "run", labels=None) -> str:
        """A markdown table of the runs' metrics (columns = metric keys, absent values shown as -)."""
        columns = [c for c in columns if any(c in r.metrics for r in runs)]
        labels = labels or [r.label for r in runs]
        rows = [[label] + [fmt(r.metrics.get(c)) for c in columns] for label, r in zip(labels, runs)]
        return markdown_table([first] + [COLUMN_NAMES.get(c, c) for c in columns], rows)

    def write(self) -> dict:
        """Write report.md and results.json; return the results."""
        b = self.budget
        train_seconds = sum(r.train_seconds for r in self.runs.values())
        total = time.time() - self.started
        setup = (
            f"**Setup.** Data: `{self.data.name}` ({len(self.train_set)} training images, {len(self.test_x)} test "
            f"images, {self.data.num_channels}x{self.data.image_size}x{self.data.image_size}). Every model: "
            f"`{b.backbone}` backbone (hidden size {b.hidden_size}, hidden layers {b.num_hidden_layers}), "
            f"{b.max_steps} Adam steps of batch {b.batch_size} at learning rate {b.learning_rate:g} (cosine "
            f"schedule), seed {self.seed}. Losses are per image (sums over pixels), averaged over the test images. "
            f"Wall time: {total / 60:.1f} min ({train_seconds / 60:.1f} min training)."
        )
        if "classifier_test_accuracy" in self.reference:
            setup += (
                " The judge of reconstructions and samples is a small CNN trained on "
                f"{self.reference['classifier_examples']} real training images; its accuracy on the real test "
                f"images is {self.reference['classifier_test_accuracy']:.3f}."
            )
        findings = "\n".join(f"- {f}" for f in self.findings)
        report = "\n\n".join([f"# {self.title}", self.question, setup, "**What the numbers show.**\n\n" + findings,
                              *self.sections, GLOSSARY]) + "\n"
        (self.dir / "report.md").write_text(report)
        results = {
            "experiment": self.name,
            "question": self.question,
            "dataset": {"name": self.data.name, "train_examples": len(self.train_set),
                        "test_examples": len(self.test_x), "image_size": self.data.image_size,
                        "num_channels": self.data.num_channels},
            "budget": dataclasses.asdict(b),
            "seed": self.seed,
            "reference": self.reference,
            "runs": {
                label: {
                    "family": run.family,
                    "config": {k: v for k, v in run.model.config.to_diff_dict().items()
                               if k not in ("transformers_version", "model_type")},
                    "metrics": run.metrics,
                    "train_seconds": run.train_seconds,
                    "train_loss_curve": [[e["step"], e["loss"]] for e in run.log_history if "loss" in e],
                }
                for label, run in self.runs.items()
            },
            "summary": self.summary,
            "findings": self.findings,
            "figures": self.figures,
            "total_seconds": total,
        }
        (self.dir / "results.json").write_text(json.dumps(results, indent=2, default=_json_default) + "\n")
        return results


COLUMN_NAMES = {
    "mse": "MSE", "psnr": "PSNR (dB)", "ssim": "SSIM", "sse": "SSE", "loss": "loss", "reconstruction_loss": "rec. loss",
    "kl_loss": "KL (nats)", "elbo": "ELBO (nats)", "iwae_nll": "IWAE NLL (nats)", "active_units": "active units",
    "codebook_usage": "codebook usage", "codebook_perplexity": "perplexity", "downstream_accuracy": "downstream acc.",
    "linear_probe_accuracy": "probe acc.", "sample_confident_fraction": "confident samples",
    "sample_mean_max_prob": "mean max p(y|x)", "sample_class_entropy": "class entropy (nats)",
    "sample_inception_score": "IS (small CNN)", "input_psnr": "noisy-input PSNR", "latent_silhouette": "silhouette",
    "aggregate_mean_abs": "mean abs(mu_j)", "aggregate_std": "mean std_j", "prior_mismatch": "prior mismatch",
}
FIDELITY = ["mse", "psnr", "ssim"]
SAMPLE_QUALITY = ["sample_confident_fraction", "sample_mean_max_prob", "sample_class_entropy", "sample_inception_score"]
GLOSSARY = """**Glossary.** *MSE*: mean squared error per pixel; *PSNR*: 10 log10(1 / MSE) per image, averaged;
*SSIM*: structural similarity (Gaussian window). *ELBO* and *IWAE NLL* are in nats per image under the model's own
Gaussian likelihood with fixed variance c (continuous densities: comparable only between models with the same c).
*Active units*: latent dimensions whose posterior mean varies over the test images (variance > 0.01). *Downstream
acc.*: the reference classifier's accuracy on the reconstructions of the test images (trained on real images).
*Probe acc.*: a logistic regression on the latents (posterior means for the VAE, quantized vectors for the VQ-VAE)
fitted on training images. *Confident samples*: fraction of generated images that the classifier assigns a class with
probability >= 0.9; *class entropy*: entropy of the histogram of predicted classes (log 10 = 2.30 nats when all ten
digits are equally frequent). VAE reconstructions decode one posterior sample z ~ q(z|x)."""


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
        return f"{value:.3g}"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


def _json_default(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
