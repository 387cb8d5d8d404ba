"""hf_autoencoders: AE, VAE and VQ-VAE (with a prior over the VQ-VAE's codes) as Hugging Face transformers models.

`import hf_autoencoders` registers the models with `AutoConfig`, `AutoModel` and `AutoImageProcessor`, so that
`AutoModel.from_pretrained(run_folder)` loads them as this package's classes, without `trust_remote_code`; they are
also marked for `save_pretrained` to write their code beside the weights (so checkpoints load anywhere with
`trust_remote_code`). The registration needs transformers, whose import takes seconds, and the `hf-autoencoders`
command must answer `--help` at once: so the package imports lazily, and registers the models (`hf_autoencoders.models`)
at once if transformers is already imported, else the moment it is (`_RegisterWithTransformers`).

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
import importlib.abc
import importlib.util
import sys

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


def _register_models() -> None:
    """Import `hf_autoencoders.models`, whose import registers the Auto classes (unless it is already imported or
    being imported: it registers them itself at its end)."""
    if f"{__name__}.models" not in sys.modules:
        importlib.import_module(".models", __name__)


class _RegisterWithTransformers(importlib.abc.MetaPathFinder):
    """Registers the models right after the `transformers` package has been imported, before anything of it is used.

    At that moment no module of transformers is half-imported (a submodule is imported only once its package is
    whole), so the models can import what they need from it."""

    def find_spec(self, name, path=None, target=None):
        if name != "transformers":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def exec_module_and_register(module):
                exec_module(module)
                _register_models()

            spec.loader.exec_module = exec_module_and_register
        return spec


if "transformers" in sys.modules:
    _register_models()
elif not any(isinstance(finder, _RegisterWithTransformers) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWithTransformers())
