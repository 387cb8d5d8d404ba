"""Training: the `AutoencoderTrainer`, a whole run from command-line arguments to a documented model folder
(`run_training`), `fit` for use from Python, and the prior over a VQ-VAE's codes (`prior`).

    from hf_autoencoders.training import parse_args, run_training
    run_training(*parse_args(["--model_type", "vae", "--output_dir", "outputs/vae", "--do_train", "--do_eval"]))

The names import lazily, so that `--help` of a training command reads the flags without loading the models.
"""

import importlib

_NAMES = {
    "AutoencoderTrainingArguments": "arguments", "DataArguments": "arguments", "ModelArguments": "arguments",
    "build_config": "arguments", "parse_args": "arguments", "training_arguments": "arguments",
    "check_output_dir": "checkpoints",
    "resolve_checkpoint": "checkpoints", "fit": "run", "run_training": "run", "write_run_outputs": "run",
    "AutoencoderTrainer": "trainer",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
