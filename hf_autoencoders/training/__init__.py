"""Training: the `AutoencoderTrainer`, the steps of a whole run from command-line arguments to a documented model
folder (`run_training` takes them in order, as `examples/train_autoencoder.py` shows), `fit` for use from Python,
and the prior over a VQ-VAE's codes (`prior`).

    from hf_autoencoders.training import parse_args, run_training
    run_training(*parse_args(["--model_type", "vae", "--output_dir", "outputs/vae", "--do_train", "--do_eval"]))

The names import lazily, so that `--help` of a training command reads the flags without loading the models.
"""

import importlib

_NAMES = {
    "ArgumentParser": "arguments", "AutoencoderTrainingArguments": "arguments", "DataArguments": "arguments",
    "ModelArguments": "arguments", "PriorArguments": "arguments", "build_config": "arguments",
    "training_arguments": "arguments",
    "RunFolderLock": "checkpoints", "check_not_input": "checkpoints", "check_output_dir": "checkpoints",
    "clear_previous_run": "checkpoints", "output_dir_lock": "checkpoints", "resolve_checkpoint": "checkpoints",
    "generability": "generability",
    "parse_args": "parsing", "parse_command": "parsing", "parse_prior_args": "parsing",
    "build_model": "run", "check_request": "run", "fid_features": "run", "fit": "run", "load_training_data": "run",
    "measure_latent_scale": "run", "run_training": "run", "write_pictures": "run",
    "AutoencoderTrainer": "trainer", "training_summary": "trainer",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
