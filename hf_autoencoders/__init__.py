"""hf_autoencoders: AE, VAE and VQ-VAE (with a PixelCNN prior) as Hugging Face transformers models.

Importing the package registers every config and model with `AutoConfig` / `AutoModel`, and marks them for
`save_pretrained` to write their code beside the weights (so checkpoints load anywhere with `trust_remote_code`).
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel

from .models import (  # noqa: F401  (the public names)
    MODEL_CLASSES,
    AEConfig,
    AEModel,
    AutoencoderConfig,
    AutoencoderImageProcessor,
    AutoencoderOutput,
    CategoricalGaussianPosterior,
    DiagonalGaussian,
    PixelCNNPriorConfig,
    PixelCNNPriorModel,
    PixelCNNPriorOutput,
    VAEConfig,
    VAEModel,
    VQVAEConfig,
    VQVAEModel,
)

for _model_type, (_config_class, _model_class) in MODEL_CLASSES.items():
    AutoConfig.register(_model_type, _config_class, exist_ok=True)
    AutoModel.register(_config_class, _model_class, exist_ok=True)
    _config_class.register_for_auto_class()
    _model_class.register_for_auto_class("AutoModel")
    if _model_type != PixelCNNPriorConfig.model_type:
        AutoImageProcessor.register(_config_class, slow_image_processor_class=AutoencoderImageProcessor,
                                    exist_ok=True)
AutoencoderImageProcessor.register_for_auto_class("AutoImageProcessor")

__version__ = "0.1.0"
