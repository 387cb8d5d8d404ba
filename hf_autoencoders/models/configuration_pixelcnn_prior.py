"""Configuration of the gated PixelCNN prior over VQ-VAE code maps."""

from transformers import PreTrainedConfig

from .configuration_autoencoders import check_model_type


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


class PixelCNNPriorConfig(PreTrainedConfig):
    r"""
    A gated PixelCNN (van den Oord et al., 2016, "Conditional Image Generation with PixelCNN Decoders") over a
    square map of discrete codes, factorised in raster order:

        p(c | y) = prod_{i, j} p(c[i, j] | c[< i, :], c[i, < j], y).

    A vertical stack sees every row above, a horizontal stack the codes to the left in the same row, so the
    receptive field has no blind spot.

        num_embeddings (`int`, defaults to 512): vocabulary size K, i.e. the VQ-VAE codebook size.
        grid_size (`int`, defaults to 7): height = width of the code map.
        hidden_size (`int`, defaults to 64): channels of both stacks (and of the code embedding).
        num_layers (`int`, defaults to 8): number of gated layers.
        kernel_size (`int`, defaults to 5): odd width n of the vertical stack's n//2+1 x n kernel; the horizontal
            stack uses 1 x (n//2+1). The receptive field grows by n//2 rows and columns per layer.
        num_classes (`int`, defaults to 0): 0 for an unconditional prior; > 0 gives p(c | y) for class labels
            y in [0, num_classes), through a learned per-layer embedding of y added as a bias to both gates.
        initializer_range (`float`, defaults to 0.02): std of the normal initialisation of the class biases
            (convolutions use PyTorch's fan-in default, the code embedding N(0, 1)).
        vqvae_identity (`str`, *optional*): the identity of the VQ-VAE whose codes the prior models (a hash of its
            code layout, encoder and quantizer, `code_priors.vqvae_identity`), checked wherever the prior meets a
            VQ-VAE; None for a prior saved before identities were recorded (it cannot be checked).
        vqvae_name_or_path (`str`, *optional*): the Hub id of that VQ-VAE, where it has one (never a local path).
    """

    model_type = "hf_autoencoders_pixelcnn_prior"
    display_name = "PixelCNN prior"

    num_embeddings: int = 512
    grid_size: int = 7
    hidden_size: int = 64
    num_layers: int = 8
    kernel_size: int = 5
    num_classes: int = 0
    initializer_range: float = 0.02
    vqvae_identity: str | None = None
    vqvae_name_or_path: str | None = None

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        check_model_type(cls, config_dict)
        return super().from_dict(config_dict, **kwargs)

    def __post_init__(self, **kwargs):
        for name in ("num_embeddings", "grid_size", "hidden_size", "num_layers", "kernel_size", "num_classes"):
            value = getattr(self, name)
            _require(
                isinstance(value, int) and not isinstance(value, bool),
                f"{name} must be an integer, got {value!r} ({type(value).__name__}).",
            )
        _require(self.num_embeddings >= 2, f"num_embeddings (K) must be >= 2, got {self.num_embeddings}.")
        _require(self.grid_size >= 1, f"grid_size must be >= 1, got {self.grid_size}.")
        _require(self.hidden_size >= 1, f"hidden_size must be >= 1, got {self.hidden_size}.")
        _require(self.num_layers >= 1, f"num_layers must be >= 1, got {self.num_layers}.")
        _require(
            self.kernel_size >= 3 and self.kernel_size % 2 == 1,
            f"kernel_size must be an odd integer >= 3 (e.g. 3, 5, 7), got {self.kernel_size}.",
        )
        _require(
            self.num_classes >= 0, f"num_classes must be >= 0 (0 = unconditional), got {self.num_classes}."
        )
        _require(self.initializer_range > 0, f"initializer_range must be > 0, got {self.initializer_range}.")
        super().__post_init__(**kwargs)
