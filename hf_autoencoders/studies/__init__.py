"""The classic autoencoder experiments, one module each, answered with numbers, pictures and verdicts.

    hf-autoencoders experiment compare --output_dir studies/compare --budget quick
    hf-autoencoders experiment compare --output_dir runs/compare --budget seed \
        --dataset_name ../shared/data/cifar10 --resume

    from hf_autoencoders.studies import run_experiment
    results = run_experiment("latent-size", "studies/latent", budget="quick")

`EXPERIMENTS` is the registry: experiment name -> its module in this package, imported when it runs (so the
command line lists the experiments without importing torch). A module holds its `TITLE`, `QUESTION` and `REPLICATED`
(trained over the budget's seeds, or one seed per setting), optionally `MEASURES_QUALITY = False` (no Frechet
distances) and `NEEDS_LABELS`, and either `run(runner, report)` — it trains and
evaluates groups of runs through a `Runner` (`runner.py`) and states what they show in a `Report` (`report.py`) —
or `run_standalone(output_dir, ...)` for an experiment that is not about trained autoencoders' reconstructions (the
estimator study). To add an experiment, add its module and one line here.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from pathlib import Path

from ..training.checkpoints import RunFolderLock, check_output_dir

EXPERIMENTS = {
    "compare": "compare",
    "latent-size": "latent_size",
    "kl-weight": "kl_weight",
    "denoising": "denoising",
    "latent-layout": "latent_layout",
    "samples": "samples",
    "linear-pca": "linear_pca",
    "estimators": "estimators",
    "backbones": "backbones",
    "quantizers": "quantizers",
    "gan-recipe": "gan_recipe",
}


def experiment_module(name: str):
    """The module of experiment `name`."""
    if name not in EXPERIMENTS:
        raise ValueError(f"experiment {name!r} is not known; use one of {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f".{EXPERIMENTS[name]}", __name__)


def prepare_output_dir(output_dir, overwrite: bool, resume: bool = False) -> Path:
    """Create `output_dir` after `check_output_dir`: one that already holds files is refused unless `overwrite`
    (files are written over, nothing else is deleted) or `resume` (an interrupted experiment continues there)."""
    check_output_dir(output_dir, overwrite, resume,
                     how_to_resume="pass --resume to continue an interrupted experiment there from its finished runs")
    path = Path(output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_request(name: str, output_dir, budget: str = "quick", *, overwrite: bool = False, resume: bool = False,
                  seeds: int | None = None, runs_dir=None, budget_overrides: dict | None = None):
    """Refuse an unknown experiment or budget, an invalid budget field or value, or an output folder holding files
    (see `prepare_output_dir`), before any work; return the (grayscale) budget."""
    from .budgets import budget_named

    experiment_module(name)
    if seeds is not None and (not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1):
        raise ValueError(f"seeds must be a positive integer, got {seeds!r}")
    resolved = budget_named(budget, **(budget_overrides or {}))
    if runs_dir is not None:
        runs = Path(runs_dir)
        if runs.exists() and not runs.is_dir():
            raise ValueError(f"runs_dir {runs} exists and is not a folder; choose another --runs_dir")
        if runs.is_dir() and any(runs.iterdir()) and not (resume or overwrite):
            raise ValueError(f"runs_dir {runs} already holds trained runs. Pass --resume to reuse the finished ones, "
                             "or --overwrite_output_dir to train them again.")
    prepare_output_dir(output_dir, overwrite, resume)
    return resolved


def run_experiment(name: str, output_dir, budget: str = "mlp", dataset_name: str | None = None, seed: int = 0,
                   seeds: int | None = None, overwrite: bool = False, resume: bool = False, runs_dir=None,
                   progress: bool = True, quick: bool | None = None, **budget_overrides) -> dict:
    """Run experiment `name` (one of `EXPERIMENTS`) and write report.md, results.json and PNGs into `output_dir`.

    `budget`: "quick" (the shortest), "mlp" or "seed" (see `budgets.py`; `quick=True` is
    `budget="quick"`); `dataset_name` a Hub id or local folder (default: the embedded digits); `seed` the first seed
    and `seeds` how many (default: the budget's for a replicated experiment, else 1); `budget_overrides` replace
    `Budget` fields (e.g. `max_steps=5`). Trained runs are kept in `runs_dir` (default `output_dir/runs`); `resume`
    reloads the finished ones instead of training them again. A folder that already holds files is refused unless
    `overwrite` or `resume`; so is a folder another run owns (`RunFolderLock`). Returns what results.json holds.
    """
    from ..data import load_image_dataset
    from .budgets import budget_named
    from .report import Report
    from .runner import Runner

    if quick:
        budget = "quick"
    check_request(name, output_dir, budget, overwrite=overwrite, resume=resume, seeds=seeds, runs_dir=runs_dir,
                  budget_overrides=budget_overrides)
    with RunFolderLock(output_dir):  # the experiment owns its folder until it ends
        module = experiment_module(name)
        if not hasattr(module, "run"):
            accepted = inspect.signature(module.run_standalone).parameters
            ignored = sorted(k for k in budget_overrides if k not in accepted)
            if ignored:
                warnings.warn(f"the {name} experiment takes no {ignored}; they are ignored", stacklevel=2)
            optional = {k: v for k, v in budget_overrides.items() if k in accepted}
            return module.run_standalone(output_dir, budget=budget, dataset_name=dataset_name, seed=seed, **optional)
        data = load_image_dataset(dataset_name)
        resolved = budget_named(budget, data.num_channels, **budget_overrides)
        if getattr(module, "NEEDS_LABELS", False) and (data.num_labels is None or data.train.labels is None):
            raise ValueError(f"the {name} experiment needs class labels, but {data.name} has none")
        count = seeds or (resolved.num_seeds if module.REPLICATED else 1)
        runner = Runner(name, data, resolved, list(range(seed, seed + count)), output_dir, runs_dir=runs_dir,
                        resume=resume, progress=progress, measure_quality=getattr(module, "MEASURES_QUALITY", True))
        report = Report(name, module.TITLE, module.QUESTION, output_dir)
        module.run(runner, report)
        return report.write(runner)


__all__ = ["EXPERIMENTS", "check_request", "experiment_module", "prepare_output_dir", "run_experiment"]
