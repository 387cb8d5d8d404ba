"""Training and evaluating the runs of an experiment: the data subsets, the trained models (kept on disk so that an
interrupted experiment resumes from its finished runs), and every measurement of a run.

A *run* is one model trained with one seed (`Run`); a *group* is one setting (family + config fields) trained over
the experiment's seeds (`Group`), which is what tables and verdicts compare (mean and spread over seeds).

`Runner.train` trains a group, or reloads its finished runs from the `RunStore` (`runs_dir/<slug>-<key>/`: the
weights in safetensors, the config, the training log, and a `COMPLETE` marker written last), then evaluates every
run with `hf_autoencoders.evaluation.evaluate` and the other measures. A run's key is a hash of everything that
determines its weights (data, config, training length, batch size, learning rate, seed), so experiments that share a
`runs_dir` share identical runs. Evaluation always reads the weights back from disk, so a resumed experiment writes
the same numbers as one that ran through.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import shutil
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
    domain_features,
    evaluate,
    linear_probe_accuracy,
    quality_metrics,
    representations,
    train_classifier,
)
from ..models import PixelCNNPriorConfig, PixelCNNPriorModel, autoencoder_classes
from ..training import AutoencoderTrainer, training_arguments
from .budgets import Budget

PROBE_MAX_ITER = 300  # L-BFGS iterations of the linear probe
KEEP_IMAGES = 16  # reconstructions and samples kept per run for the figures
FIGURE_SAMPLES = 64


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def display_name(family: str) -> str:
    """"VQ-VAE" for "vqvae": the family's own display name."""
    return autoencoder_classes(family)[0].display_name


def as_float_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float in [0, 1] (what `ImageCollator` does to a batch)."""
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()


@dataclass
class Run:
    """One trained model (one seed) and what was measured on it."""

    label: str
    family: str
    seed: int
    model: torch.nn.Module
    metrics: dict
    log_history: list = field(default_factory=list)
    train_seconds: float = 0.0
    train_steps: int = 0
    reconstructions: torch.Tensor | None = None  # of the first test images (after input noise, if any)
    samples: torch.Tensor | None = None

    @property
    def slug(self) -> str:
        return slugify(self.label)


@dataclass
class Group:
    """One setting trained with each of the experiment's seeds: the unit that tables and verdicts compare."""

    label: str
    family: str
    runs: list[Run]

    @property
    def first(self) -> Run:
        """The first seed's run: the one the figures show."""
        return self.runs[0]

    @property
    def config(self):
        return self.first.model.config

    @property
    def slug(self) -> str:
        return slugify(self.label)

    def values(self, key: str) -> list[float]:
        values = [r.metrics.get(key) for r in self.runs]
        return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]

    def mean(self, key: str) -> float:
        values = self.values(key)
        return sum(values) / len(values) if values else math.nan

    def std(self, key: str) -> float:
        """Sample standard deviation over seeds (0 for one seed)."""
        values = self.values(key)
        if len(values) < 2:
            return 0.0
        mean = sum(values) / len(values)
        return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


# ------------------------------------------------------------------------------------------------------- the store


class RunStore:
    """Trained models on disk, one folder per run: `<slug>-<key>/` with `model.safetensors`, `config.json`,
    `run.json` (what was trained and its training log) and `COMPLETE`, written last. A folder without the marker is
    an interrupted run and is trained again."""

    MARKER = "COMPLETE"

    def __init__(self, directory, resume: bool):
        self.dir, self.resume = Path(directory), resume

    def folder(self, slug: str, spec: dict) -> Path:
        key = hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:10]
        return self.dir / f"{slug}-{key}"

    def finished(self, folder: Path) -> bool:
        return self.resume and (folder / self.MARKER).is_file()

    def save(self, folder: Path, model: torch.nn.Module, record: dict) -> None:
        from safetensors.torch import save_model

        if folder.exists():
            shutil.rmtree(folder)  # an interrupted or outdated copy of this very run
        partial = folder.with_name(folder.name + ".partial")
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        save_model(model.to(memory_format=torch.contiguous_format), str(partial / "model.safetensors"))
        model.config.to_json_file(partial / "config.json")
        (partial / "run.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
        (partial / self.MARKER).write_text("")
        os.replace(partial, folder)

    def load(self, folder: Path, model: torch.nn.Module) -> dict:
        """Load the weights of `folder` into `model` (built from the same config) and return its record."""
        from safetensors.torch import load_model

        load_model(model, str(folder / "model.safetensors"))
        return json.loads((folder / "run.json").read_text())


def train_quietly(trainer_class, model, dataset, collator, *, steps: int, batch_size: int, learning_rate: float,
                  seed: int, progress: bool = False, description: str = "", callbacks=None, training=None,
                  **trainer_kwargs) -> list[dict]:
    """Train `model` with a transformers Trainer of `trainer_class` for `steps` steps and return its log history.
    Nothing is written to disk; with `progress`, the Trainer's step bar is shown; `callbacks` are added to the
    Trainer's (e.g. a step timer); `training` holds other training-argument fields (e.g. the tokenizer recipe's) and
    `trainer_kwargs` other arguments of the trainer (`eval_dataset`, `perceptual_network`)."""
    with tempfile.TemporaryDirectory() as scratch:
        args = training_arguments(
            scratch, max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=learning_rate,
            logging_steps=max(1, steps // 25), disable_tqdm=not progress, seed=seed,
            dataloader_pin_memory=torch.cuda.is_available(), run_name=description or None, **(training or {}),
        )
        trainer = trainer_class(model=model, args=args, data_collator=collator, train_dataset=dataset,
                                callbacks=callbacks, **trainer_kwargs)
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    return trainer.state.log_history


# ------------------------------------------------------------------------------------------------------ the runner


class Runner:
    """The data of an experiment and its trained, evaluated runs, all under one `Budget`.

    `seeds`: the seeds every group is trained with. `runs_dir`: where trained models are kept (default
    `output_dir/runs`); with `resume`, finished runs found there are loaded instead of trained again.
    `measure_quality`: measure the Frechet distance of every run's reconstructions and samples (off for the
    experiments that do not use it: it costs about as much as the rest of the evaluation).
    """

    def __init__(self, name: str, data, budget: Budget, seeds: list[int], output_dir, *, runs_dir=None,
                 resume: bool = False, progress: bool = True, measure_quality: bool = True):
        self.name, self.data, self.budget, self.seeds, self.progress = name, data, budget, list(seeds), progress
        self.measure_quality = measure_quality
        self.seed = self.seeds[0]
        self.output_dir = Path(output_dir)
        self.store = RunStore(Path(runs_dir) if runs_dir is not None else self.output_dir / "runs", resume)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        b = budget
        train, test = data.train, data.test
        n_train = len(train) if b.max_train_examples is None else min(b.max_train_examples, len(train))
        self.train_set = ImageTensorDataset(train.images[:n_train],
                                            None if train.labels is None else train.labels[:n_train])
        self.test_x = as_float_images(test.images[: b.max_test_examples])
        self.test_y = None if test.labels is None else test.labels[: b.max_test_examples]
        self.labelled = self.test_y is not None and train.labels is not None and data.num_labels is not None
        self.groups: dict[str, Group] = {}
        self.reference: dict = {}  # the reference classifier's own figures
        self.timing = {"runs_trained": 0, "runs_reused": 0, "train_seconds_this_pass": 0.0,
                       "train_seconds_of_reused_runs": 0.0}

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
        """A SmallCNN trained on real training images: the judge of reconstructions (downstream accuracy)."""
        b = self.budget
        images, labels = self.train_images(b.classifier_examples)
        with torch.enable_grad():  # first asked for inside an evaluation under no_grad
            clf = train_classifier(images, labels, self.data.num_labels, epochs=b.classifier_epochs,
                                   width=b.classifier_width, seed=self.seed, progress=False)
        self.reference["classifier_examples"] = len(images)
        self.reference["classifier_test_accuracy"] = classifier_accuracy(clf, self.test_x, self.test_y)
        return clf

    @cached_property
    def quality_features(self):
        """The features the Frechet distance is measured on (`hf_autoencoders.evaluation.domain_features`: a
        classifier trained on the labelled training images, cached with the runs), or None for unlabelled data."""
        if not self.labelled:
            return None
        images, labels = self.train_images(self.budget.classifier_examples)
        with torch.enable_grad():
            return domain_features(images, labels, num_classes=self.data.num_labels, seed=self.seed,
                                   cache_dir=self.store.dir / "features", dataset_name=self.data.name, progress=False)

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

    def fit(self, label: str, family: str, fields: dict, seed: int, epochs: float | None = None,
            steps: int | None = None, training: dict | None = None, trainer_kwargs: dict | None = None):
        """The model of (`family`, `fields`, `seed`) trained under the budget (or for `steps` steps where given):
        loaded from the store when it is finished there (and resuming), else trained and saved. `training` holds
        training-argument fields beyond the budget's (the tokenizer recipe's), `trainer_kwargs` arguments of the
        `AutoencoderTrainer` (a `perceptual_network`); both are part of the run's key. Returns (model read back from
        disk, record)."""
        b = self.budget
        config = self.config(family, **fields)
        steps = steps or b.train_steps(len(self.train_set), epochs)
        folder, spec = self.run_folder(family, config, seed, steps, training, trainer_kwargs)
        model_class = autoencoder_classes(family)[1]

        def train(model):
            extra = dict(trainer_kwargs or {})
            if training:  # what the trainer watches while training (the collapse guard): the first test images
                extra.setdefault("eval_dataset", ImageTensorDataset((self.test_x[:64] * 255).round().to(torch.uint8)))
            return train_quietly(AutoencoderTrainer, model, self.train_set, ImageCollator(), steps=steps,
                                 batch_size=b.batch_size, learning_rate=b.learning_rate, seed=seed,
                                 progress=self.progress, training=training, **extra)

        return self.trained(folder, lambda: model_class(copy.deepcopy(config)), train, seed,
                            {"label": label, "spec": spec})

    def run_folder(self, family: str, config, seed: int, steps: int, training: dict | None = None,
                   trainer_kwargs: dict | None = None) -> tuple[Path, dict]:
        """The store folder of the `family` model with `config` trained for `steps` steps from `seed` under the
        budget, and what it is keyed on: everything that determines the weights, the config as config.json holds
        it (`to_diff_dict`), and any other training fields and trainer arguments (a network by its weights). Named
        by what it is, not by its label."""
        b = self.budget
        spec = {"dataset": self.data.name, "train_examples": len(self.train_set), "family": family,
                "config": _config_dict(config), "steps": steps, "batch_size": b.batch_size,
                "learning_rate": b.learning_rate, "seed": seed}
        if training:
            spec["training"] = dict(training)
        if trainer_kwargs:
            spec["trainer"] = {name: _weights_digest(value) if isinstance(value, torch.nn.Module) else repr(value)
                               for name, value in trainer_kwargs.items()}
        return self.store.folder(f"{family}_s{seed}", spec), spec

    def trained(self, folder: Path, build, train, seed: int, record: dict):
        """The model `build()` makes, trained by `train(model) -> log history` after seeding with `seed` and saved
        to `folder` with `record`, or loaded from `folder` where it is finished (resuming). Always read back from
        disk. `build` makes each model with its own config (the Trainer edits the config of the model it trains).
        Returns (model on the device in eval mode, its record)."""
        if self.store.finished(folder):
            model = build()
            record = self.store.load(folder, model)
            self.timing["runs_reused"] += 1
            self.timing["train_seconds_of_reused_runs"] += record["train_seconds"]
        else:
            set_seed(seed)
            model = build()
            start = time.time()
            log_history = train(model)
            seconds = time.time() - start
            self.store.save(folder, model, {**record, "seed": seed, "train_seconds": seconds,
                                            "log_history": log_history})
            self.timing["runs_trained"] += 1
            self.timing["train_seconds_this_pass"] += seconds
            model = build()
            record = self.store.load(folder, model)
        return model.to(self.device).eval(), record

    def train(self, label: str, family: str, fields: dict | None = None, *, test_noise_std: float = 0.0,
              seeds: list[int] | None = None, epochs: float | None = None, steps: int | None = None,
              bar=None, training: dict | None = None, trainer_kwargs: dict | None = None) -> Group:
        """Train (or reload) `family` with config `fields` for each seed (for `steps` steps where given, else the
        budget's length; with the training fields `training` and trainer arguments `trainer_kwargs`, see `fit`) and
        evaluate each run on the test images, given with Gaussian noise of `test_noise_std` on the input (clean
        targets). Returns the group."""
        if label in self.groups:
            raise ValueError(f"a group named {label!r} exists already in this experiment")
        runs = []
        for seed in seeds or self.seeds:
            if bar is not None:
                bar.set_postfix_str(f"{label}, seed {seed}")
            model, record = self.fit(label, family, fields or {}, seed, epochs, steps, training, trainer_kwargs)
            run = Run(label, family, seed, model, {}, record["log_history"], record["train_seconds"],
                      record["spec"]["steps"])
            run.metrics = self.evaluate(run, test_noise_std)
            runs.append(run)
            if bar is not None:
                bar.update()
        group = Group(label, family, runs)
        self.groups[label] = group
        return group

    def train_all(self, specs: list[tuple], epochs: float | None = None) -> list[Group]:
        """Train (label, family, config-fields[, test_noise_std]) specs over the seeds, with a progress bar."""
        from tqdm.auto import tqdm

        with tqdm(total=len(specs) * len(self.seeds), desc=f"{self.name}: runs", unit="run",
                  disable=not self.progress) as bar:
            return [self.train(label, family, fields, test_noise_std=noise[0] if noise else 0.0, epochs=epochs,
                               bar=bar) for label, family, fields, *noise in specs]

    # --------------------------------------------------------------------------------------------- evaluation

    @torch.no_grad()
    def fidelity(self, model, noise_std: float = 0.0) -> tuple[dict, torch.Tensor]:
        """`hf_autoencoders.evaluation.evaluate` on the test images, given with `noise_std` Gaussian noise on the
        input and compared with the clean images (MSE / PSNR / SSIM, every loss term, the codebook usage of a
        VQ-VAE), plus the summed squared error, the edge sharpness (`edge_energy`: the gradient energy of the
        reconstructions over that of the originals) and the reference classifier's accuracy on the reconstructions.
        Returns (metrics, the first reconstructions)."""
        kept, edges = [], torch.zeros(2, dtype=torch.float64)

        def on_batch(x, out):
            recon = out.reconstruction.float().clamp(0, 1)
            edges[0] += edge_energy(recon).sum().item()
            edges[1] += edge_energy(x).sum().item()
            if sum(len(k) for k in kept) < KEEP_IMAGES:
                kept.append(recon[:KEEP_IMAGES].cpu())
            if self.labelled:
                predictions.append(self.classifier(recon).argmax(-1).cpu())

        predictions = []
        metrics = evaluate(model, self.test_x, batch_size=500, noise_std=noise_std, seed=self.seed + 1,
                           progress=False, on_batch=on_batch)
        metrics = {"num_test_examples": metrics.pop("num_examples"), "noise_std": noise_std, **metrics,
                   "sse": metrics["mse"] * self.test_x[0].numel(), "edge_sharpness": (edges[0] / edges[1]).item()}
        if self.labelled:
            metrics["downstream_accuracy"] = (torch.cat(predictions) == self.test_y).double().mean().item()
        return metrics, torch.cat(kept)[:KEEP_IMAGES]

    def samples(self, model, n: int = FIGURE_SAMPLES, prior=None) -> torch.Tensor:
        """`n` samples of `model` (codes from `prior` for a VQ-VAE), in [0, 1], on the CPU."""
        generator = torch.Generator(device=model.device).manual_seed(self.seed)
        with torch.no_grad():
            return model.sample(n, generator=generator, prior=prior).clamp(0, 1).cpu()

    def quality(self, model, prior=None, reconstructions: bool = True) -> dict:
        """Frechet distance (and the other measures of `hf_autoencoders.evaluation.quality_metrics`) between the
        first `num_samples` test images and the model's reconstructions of them, and `num_samples` of its samples
        (codes from `prior`), on the domain features; empty where those are unavailable."""
        features = self.quality_features
        if features is None:
            return {}
        n = self.budget.num_samples
        metrics = quality_metrics(model, self.test_x[:n], features=features, num_samples=n, prior=prior,
                                  seed=self.seed, reconstructions=reconstructions, samples=True, progress=False)
        self.reference["quality_features"] = metrics.pop("quality_features")
        return metrics

    @torch.no_grad()
    def evaluate(self, run: Run, noise_std: float = 0.0) -> dict:
        """Every applicable metric of a trained model: `fidelity` (inputs with `noise_std` noise, clean targets);
        for a model with a posterior (VAE) the ELBO / IWAE NLL of the first clean test images and its active units;
        the linear-probe accuracy on the representations of clean images; the Frechet distance of its
        reconstructions and samples. Keeps the first reconstructions and samples for the figures."""
        model, b = run.model, self.budget
        metrics, run.reconstructions = self.fidelity(model, noise_std)
        if hasattr(model, "log_importance_weights"):
            bounds = evaluate(model, self.test_x, max_examples=b.iwae_examples, num_importance_samples=b.iwae_samples,
                              seed=self.seed, progress=False)
            metrics.update(elbo=bounds["elbo"], iwae_nll=bounds["iwae_nll"], iwae_samples=b.iwae_samples,
                           bound_examples=bounds["num_examples"])
            means = representations(model, self.test_x)
            metrics["active_units"] = int((means.var(0) > 0.01).sum())  # Burda et al. (2016): Var_x E_q[z_j] > 0.01
        run.samples = self.samples(model)
        if self.labelled:
            probe_x, probe_y = self.train_images(b.probe_examples)
            with warnings.catch_warnings():  # an unconverged probe is still a probe: its budget is fixed
                warnings.simplefilter("ignore")
                metrics["linear_probe_accuracy"] = linear_probe_accuracy(
                    representations(model, probe_x), probe_y, representations(model, self.test_x), self.test_y,
                    max_iter=PROBE_MAX_ITER)
        if noise_std == 0 and self.measure_quality:
            metrics.update(self.quality(model))
        return metrics

    # ------------------------------------------------------------------------------------------------ priors

    def train_prior(self, vq_run: Run, prior_type: str = "pixelcnn") -> tuple[torch.nn.Module, dict]:
        """A prior over the code maps of `vq_run`'s training images (trained, or reloaded from the store): a
        PixelCNN of the budget's size, or with `prior_type="transformer"` a GPT-2 prior of `code_priors`' default
        size; both for the budget's `prior_steps`. Returns it and its statistics (test NLL in nats and bits per
        code, against log2 K for uniform codes)."""
        from transformers import AutoModelForCausalLM

        from ..models import code_priors
        from ..evaluation.priors import code_nll
        from ..training.prior import CodeDataset, PriorTrainer, extract_codes, prior_collator

        b, vqvae = self.budget, vq_run.model
        num_embeddings, grid = vqvae.config.num_embeddings, vqvae.config.latent_grid_size
        if prior_type == "pixelcnn":
            config = PixelCNNPriorConfig(num_embeddings=num_embeddings, grid_size=grid,
                                         hidden_size=b.prior_hidden_size, num_layers=b.prior_layers)
            build = lambda: PixelCNNPriorModel(copy.deepcopy(config))  # noqa: E731
            sizes = {"hidden_size": config.hidden_size, "num_layers": config.num_layers}
        elif prior_type == "transformer":
            config = code_priors.transformer_prior_config(num_embeddings, grid)
            build = lambda: AutoModelForCausalLM.from_config(copy.deepcopy(config))  # noqa: E731
            sizes = {"hidden_size": config.n_embd, "num_layers": config.n_layer, "num_heads": config.n_head}
        else:
            raise ValueError(f"prior_type must be pixelcnn or transformer, got {prior_type!r}")
        spec = {"vqvae": _weights_digest(vqvae), "config": _config_dict(config), "steps": b.prior_steps,
                "batch_size": b.batch_size, "learning_rate": b.learning_rate, "seed": vq_run.seed}
        suffix = "pixelcnn_prior" if prior_type == "pixelcnn" else "transformer_prior"
        folder = self.store.folder(f"{vq_run.slug}_s{vq_run.seed}_{suffix}", spec)

        def train(prior):
            train_codes, _ = extract_codes(vqvae, self.train_set, progress=False)
            return train_quietly(PriorTrainer, prior, CodeDataset(train_codes), prior_collator(prior),
                                 steps=b.prior_steps, batch_size=b.batch_size, learning_rate=b.learning_rate,
                                 seed=vq_run.seed)

        prior, record = self.trained(folder, build, train, vq_run.seed, {"spec": spec})
        prior.config.vqvae_identity = vqvae.identity()  # recorded after the store key: the stored runs keep theirs
        test_codes, _ = extract_codes(vqvae, ImageTensorDataset((self.test_x * 255).round().to(torch.uint8)),
                                      progress=False)
        nll = code_nll(prior, CodeDataset(test_codes))
        return prior, {"prior_type": prior_type, "prior_test_nll_nats_per_code": nll,
                       "prior_test_bits_per_code": nll / math.log(2),
                       "uniform_bits_per_code": math.log2(num_embeddings), "prior_steps": b.prior_steps,
                       "prior_train_seconds": record["train_seconds"],
                       "prior_config": {**sizes, "grid_size": grid},
                       "prior_loss_curve": [[e["step"], e["loss"]] for e in record["log_history"] if "loss" in e]}

    def train_transformer_prior(self, vq_run: Run) -> tuple[torch.nn.Module, dict]:
        """A transformer prior (GPT-2, `models.code_priors`) over the code maps of `vq_run`'s training images, the n
        codes of each position depth-first for residual quantization, with the budget's prior steps, width and depth
        (trained, or reloaded from the store). Its batches hold `batch_size / n` maps, so every depth trains on as
        many codes per step. Returns it and its statistics: the test NLL in bits per image (of the whole code map)
        and per code, against h w n log2 K for uniform codes."""
        from transformers import AutoModelForCausalLM

        from ..evaluation.priors import code_map_nlls
        from ..models import code_priors
        from ..training.prior import CodeDataset, CodeTokenCollator, PriorTrainer, extract_codes

        b, vqvae = self.budget, vq_run.model
        depth, grid = vqvae.config.num_quantizers, vqvae.config.latent_grid_size
        config = code_priors.transformer_prior_config(
            vqvae.config.num_embeddings, grid, hidden_size=b.prior_hidden_size, num_layers=b.prior_layers,
            num_heads=4 if b.prior_hidden_size % 4 == 0 else 1, num_quantizers=depth)
        batch_size = max(1, b.batch_size // depth)
        spec = {"vqvae": _weights_digest(vqvae), "config": _config_dict(config), "steps": b.prior_steps,
                "batch_size": batch_size, "learning_rate": b.learning_rate, "seed": vq_run.seed}
        folder = self.store.folder(f"{vq_run.slug}_s{vq_run.seed}_transformer_prior", spec)

        def train(prior):
            train_codes, _ = extract_codes(vqvae, self.train_set, progress=False)
            return train_quietly(PriorTrainer, prior, CodeDataset(train_codes), CodeTokenCollator(config),
                                 steps=b.prior_steps, batch_size=batch_size, learning_rate=b.learning_rate,
                                 seed=vq_run.seed)

        prior, record = self.trained(folder, lambda: AutoModelForCausalLM.from_config(copy.deepcopy(config)), train,
                                     vq_run.seed, {"spec": spec})
        test_codes, _ = extract_codes(vqvae, ImageTensorDataset((self.test_x * 255).round().to(torch.uint8)),
                                      progress=False)
        bits = code_map_nlls(prior, CodeDataset(test_codes), batch_size=max(1, 256 // depth)).mean().item()
        bits /= math.log(2)
        codes = grid**2 * depth
        return prior, {"prior_bits_per_image": bits, "prior_bits_per_code": bits / codes,
                       "uniform_bits_per_image": codes * math.log2(config.num_embeddings),
                       "prior_steps": b.prior_steps, "prior_batch_size": batch_size,
                       "prior_train_seconds": record["train_seconds"],
                       "prior_config": {"hidden_size": config.n_embd, "num_layers": config.n_layer,
                                        "grid_size": grid, "num_quantizers": depth},
                       "prior_loss_curve": [[e["step"], e["loss"]] for e in record["log_history"] if "loss" in e]}


def edge_energy(images: torch.Tensor) -> torch.Tensor:
    r"""Gradient energy of each image, sum over pixels and channels of |d_x I| + |d_y I| (finite differences):
    what blur removes. The ratio of a reconstruction's edge energy to the original's is its edge sharpness
    (1: as sharp as the original; below 1: blurred)."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).sum(1)
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1).sum(1)
    return dx + dy


def _config_dict(config) -> dict:
    return {k: v for k, v in config.to_diff_dict().items() if k not in ("transformers_version",)}


def _weights_digest(model) -> str:
    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


__all__ = ["Group", "Run", "RunStore", "Runner", "as_float_images", "display_name", "edge_energy", "train_quietly"]
