"""Model code. Every file here imports only its siblings, torch and transformers, so that a saved checkpoint carries
the code it needs and loads with plain `transformers` and `trust_remote_code=True`.

`MODEL_CLASSES` is the one registry of the families: model_type -> (config class, model class). What a family is
(its display name, loss terms, representation and sampler) lives on those classes; `autoencoder_classes("vae")`
finds a family by the short name the command line uses. Importing this package registers every class with
`AutoConfig` / `AutoModel` / `AutoImageProcessor` and for `save_pretrained` to write its code.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel

from .code_priors import sample_codes, transformer_prior_config
from .configuration_autoencoders import AEConfig, AutoencoderConfig, VAEConfig, VQVAEConfig
from .configuration_pixelcnn_prior import PixelCNNPriorConfig
from .image_processing_autoencoders import AutoencoderImageProcessor
from .modeling_ae import AEModel
from .modeling_base import (
    AutoencoderOutput,
    AutoencoderPreTrainedModel,
    DecoderOutput,
    EncoderOutput,
    PosteriorOutput,
)
from .modeling_pixelcnn_prior import PixelCNNPriorModel, PixelCNNPriorOutput
from .modeling_vae import CategoricalGaussianPosterior, DiagonalGaussian, VAEModel, standard_normal_log_prob
from .modeling_vqvae import VQVAEModel
from .quantizers import code_statistics

MODEL_CLASSES = {
    config_class.model_type: (config_class, model_class)
    for config_class, model_class in (
        (AEConfig, AEModel),
        (VAEConfig, VAEModel),
        (VQVAEConfig, VQVAEModel),
        (PixelCNNPriorConfig, PixelCNNPriorModel),
    )
}
AUTOENCODER_FAMILIES = tuple(c.family for c, _ in MODEL_CLASSES.values() if getattr(c, "family", None))

for _config_class, _model_class in MODEL_CLASSES.values():
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
    AutoModel.register(_config_class, _model_class, exist_ok=True)
    _config_class.register_for_auto_class()
    _model_class.register_for_auto_class("AutoModel")
    if getattr(_config_class, "family", None):  # an autoencoder of images
        AutoImageProcessor.register(_config_class, slow_image_processor_class=AutoencoderImageProcessor,
                                    exist_ok=True)
AutoencoderImageProcessor.register_for_auto_class("AutoImageProcessor")


def autoencoder_classes(family: str) -> tuple[type[AutoencoderConfig], type[AutoencoderPreTrainedModel]]:
    """(config class, model class) of the autoencoder family `family` ("ae", "vae" or "vqvae")."""
    for config_class, model_class in MODEL_CLASSES.values():
        if getattr(config_class, "family", None) == family:
            return config_class, model_class
    raise ValueError(f"model type {family!r} is not known; use one of {', '.join(AUTOENCODER_FAMILIES)}.")


__all__ = [
    "AEConfig", "AEModel", "AUTOENCODER_FAMILIES", "AutoencoderConfig", "AutoencoderImageProcessor",
    "AutoencoderOutput", "AutoencoderPreTrainedModel", "CategoricalGaussianPosterior", "DecoderOutput",
    "DiagonalGaussian", "EncoderOutput", "MODEL_CLASSES", "PixelCNNPriorConfig", "PixelCNNPriorModel",
    "PixelCNNPriorOutput", "PosteriorOutput", "VAEConfig", "VAEModel", "VQVAEConfig",
    "VQVAEModel",
    "autoencoder_classes", "code_priors", "code_statistics", "sample_codes", "standard_normal_log_prob",
    "transformer_prior_config",
]
