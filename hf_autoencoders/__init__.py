"""hf_autoencoders: AE, VAE and VQ-VAE (with a prior over the VQ-VAE's codes) as Hugging Face transformers models.

The package imports lazily, so the `hf-autoencoders` command starts at once. The models register with `AutoConfig`,
`AutoModel` and `AutoImageProcessor`, and are marked for `save_pretrained` to write their code beside the weights
(so checkpoints load anywhere with `trust_remote_code`), as soon as `hf_autoencoders.models` is imported: by any of
the names below (`from hf_autoencoders import VAEModel`), or by `import hf_autoencoders.models`.

Layers, each importing only those below it:

    cli                 the `hf-autoencoders` command
    studies             the classic experiments, one file each
    training            the Trainer, a training run, the prior over codes
    evaluation, hub     the one evaluation loop and its metrics; model cards, uploads and loading
    data, plots         datasets and collators; figures
    models, results     configs, models, image processor (torch + transformers only: travels with checkpoints);
                        strict JSON results files and cache keys
"""

import importlib

__version__ = "0.1.0"

_MODEL_NAMES = (
    "AEConfig", "AEModel", "AUTOENCODER_FAMILIES", "AutoencoderConfig", "AutoencoderImageProcessor",
    "AutoencoderOutput", "CategoricalGaussianPosterior", "DecoderOutput", "DiagonalGaussian", "EncoderOutput",
    "MODEL_CLASSES", "PixelCNNPriorConfig", "PixelCNNPriorModel", "PixelCNNPriorOutput", "PosteriorOutput",
    "VAEConfig", "VAEModel",
    "VQVAEConfig", "VQVAEModel", "autoencoder_classes",
)
_SUBMODULES = ("cli", "data", "evaluation", "hub", "models", "plots", "results", "studies", "training")

__all__ = [*_MODEL_NAMES, "__version__"]


def __getattr__(name: str):
    if name in _MODEL_NAMES:
        return getattr(importlib.import_module(".models", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_MODEL_NAMES, *_SUBMODULES])
