"""Model code. Every file here imports only its siblings, torch and transformers, so that a saved checkpoint carries
the code it needs and loads with plain `transformers` and `trust_remote_code=True`."""

from .configuration_autoencoders import AEConfig, AutoencoderConfig, VAEConfig, VQVAEConfig
from .configuration_pixelcnn_prior import PixelCNNPriorConfig
from .image_processing_autoencoders import AutoencoderImageProcessor
from .modeling_ae import AEModel
from .modeling_base import AutoencoderOutput, AutoencoderPreTrainedModel
from .modeling_pixelcnn_prior import PixelCNNPriorModel, PixelCNNPriorOutput
from .modeling_vae import CategoricalGaussianPosterior, DiagonalGaussian, VAEModel
from .modeling_vqvae import VQVAEModel

MODEL_CLASSES = {
    AEConfig.model_type: (AEConfig, AEModel),
    VAEConfig.model_type: (VAEConfig, VAEModel),
    VQVAEConfig.model_type: (VQVAEConfig, VQVAEModel),
    PixelCNNPriorConfig.model_type: (PixelCNNPriorConfig, PixelCNNPriorModel),
}

__all__ = [
    "AEConfig", "AEModel", "AutoencoderConfig", "AutoencoderImageProcessor", "AutoencoderOutput",
    "AutoencoderPreTrainedModel", "CategoricalGaussianPosterior", "DiagonalGaussian", "MODEL_CLASSES",
    "PixelCNNPriorConfig", "PixelCNNPriorModel", "PixelCNNPriorOutput", "VAEConfig", "VAEModel", "VQVAEConfig",
    "VQVAEModel",
]
