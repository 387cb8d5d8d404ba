"""The classic autoencoder experiments, one module each, answered with numbers and pictures.

    hf-autoencoders experiment compare --output_dir studies/compare --quick
    hf-autoencoders experiment kl-weight --output_dir studies/kl --dataset_name ../shared/data/mnist

    from hf_autoencoders.studies import run_experiment
    results = run_experiment("latent-size", "studies/latent", quick=True)

`EXPERIMENTS` is the registry: experiment name -> its module in this package, imported when it runs (so the
command line lists the experiments without importing torch). A module holds its `TITLE` and `QUESTION` and either
`run(study)`, which trains and evaluates its runs through a `Study` (see `study.py`), or
`run_standalone(output_dir, ...)` for an experiment that is not about trained autoencoders' reconstructions (the
estimator study).
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from pathlib import Path

EXPERIMENTS = {
    "compare": "compare",
    "latent-size": "latent_size",
    "kl-weight": "kl_weight",
    "denoising": "denoising",
    "latent-layout": "latent_layout",
    "samples": "samples",
    "estimators": "estimators",
}


def experiment_module(name: str):
    """The module of experiment `name`."""
    if name not in EXPERIMENTS:
        raise ValueError(f"experiment {name!r} is not known; use one of {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f".{EXPERIMENTS[name]}", __name__)


def prepare_output_dir(output_dir, overwrite: bool) -> Path:
    """Create `output_dir`, refusing one that already holds files unless `overwrite` (files are written over,
    nothing is deleted)."""
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"output_dir {path} exists and is not a folder; choose another --output_dir")
    existing = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    if existing and not overwrite:
        shown = ", ".join(existing[:5]) + (" ..." if len(existing) > 5 else "")
        raise ValueError(
            f"output_dir {path} already holds files ({shown}). Nothing was changed. Choose a new --output_dir, or "
            "pass --overwrite_output_dir to write over the experiment's files (other files are left alone)."
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_request(name: str, output_dir, quick: bool, overwrite: bool, budget_overrides: dict):
    """Refuse an unknown experiment, an unknown or invalid budget field or an output folder holding files, before
    any work; return the budget."""
    from .study import FULL, QUICK

    experiment_module(name)
    budget = (QUICK if quick else FULL).replace(**budget_overrides)
    prepare_output_dir(output_dir, overwrite)
    return budget


def run_experiment(name: str, output_dir, quick: bool = False, dataset_name: str | None = None, seed: int = 0,
                   overwrite: bool = False, progress: bool = True, **budget_overrides) -> dict:
    """Run experiment `name` (one of `EXPERIMENTS`) and write report.md, results.json and PNGs into `output_dir`.

    `quick` uses the `QUICK` budget (minutes on 2 CPU cores), otherwise `FULL`; `dataset_name` is a Hub id or local
    folder (default: the embedded digits); `budget_overrides` replace `Budget` fields (e.g. `max_steps=5`).
    A folder that already holds files is refused unless `overwrite`. Returns what results.json holds.
    """
    from ..data import load_image_dataset
    from .study import Study

    budget = check_request(name, output_dir, quick, overwrite, budget_overrides)
    module = experiment_module(name)
    if not hasattr(module, "run"):
        accepted = inspect.signature(module.run_standalone).parameters
        ignored = sorted(k for k in budget_overrides if k not in accepted)
        if ignored:
            warnings.warn(f"the {name} experiment takes no {ignored}; they are ignored", stacklevel=2)
        optional = {k: v for k, v in dict(budget_overrides, progress=progress).items() if k in accepted}
        return module.run_standalone(output_dir, quick=quick, dataset_name=dataset_name, seed=seed, **optional)
    data = load_image_dataset(dataset_name)
    study = Study(name, module.TITLE, module.QUESTION, Path(output_dir), data, budget, seed, progress)
    if getattr(module, "NEEDS_LABELS", False) and not study.labelled:
        raise ValueError(f"the {name} experiment needs class labels, but {data.name} has none")
    module.run(study)
    return study.write()


__all__ = ["EXPERIMENTS", "check_request", "experiment_module", "prepare_output_dir", "run_experiment"]
