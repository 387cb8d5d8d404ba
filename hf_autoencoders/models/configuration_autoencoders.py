"""Configurations of the autoencoder families: AE, VAE and VQ-VAE.

All three share the image shape, the backbone (encoder/decoder architecture) and the decoder likelihood; each adds the
fields of its latent space. Every field is checked when the config is built, so a model that cannot be made is
refused before any weight is allocated.
"""

import math
import types
import typing

from transformers import PreTrainedConfig

BACKBONES = ("mlp", "conv", "vit", "ldm")
LIKELIHOODS = ("gaussian", "bernoulli", "discretized_logistic")
QUANTIZERS = ("vq", "fsq", "simvq", "lfq")
CODEBOOK_QUANTIZERS = ("vq", "simvq")  # a nearest codeword e_k of a codebook: what the rotation trick rotates onto
GRADIENT_ESTIMATORS = ("reparameterization", "score_function")
SCORE_FUNCTION_BASELINES = ("none", "moving_average", "leave_one_out")
CATEGORICAL_ESTIMATORS = ("score_function", "gumbel_softmax")
VIT_OUTPUT_HEADS = ("linear", "pixel_shuffle")
# Fields of the ViT that were dropped from the library (options measured not to pay): a config naming them is refused.
REMOVED_VIT_FIELDS = ("vit_position_encoding", "vit_rope_theta", "vit_patch_stem", "vit_decoder_hidden_size")

PIXEL_RANGES = ((0.0, 1.0), (-1.0, 1.0))

# Per-backbone defaults for fields left as None.
_DEFAULT_HIDDEN_SIZE = {"mlp": 512, "conv": 64, "vit": 64}
_DEFAULT_NUM_HIDDEN_LAYERS = {"mlp": 2, "conv": 0, "vit": 1}
_DEFAULT_NUM_ATTENTION_HEADS = {"mlp": 4, "conv": 4, "vit": 2}
# The ldm backbone's defaults (diffusers' names): three levels (f = 4), one ResNet block per level, GroupNorm of 32
# groups, attention in the mid block; images in [-1, 1] and a 4-channel latent map, as diffusers' AutoencoderKL.
LDM_DEFAULTS = {"block_out_channels": (64, 128, 128), "layers_per_block": 1, "norm_num_groups": 32,
                "mid_block_add_attention": True, "pixel_range": (-1.0, 1.0)}
LDM_DEFAULT_LATENT_CHANNELS = 4
# Fields of the conv and ViT backbones that an ldm config does not use (its config.json leaves them out).
_NOT_LDM_FIELDS = ("hidden_size", "num_hidden_layers", "num_downsamples", "num_residual_blocks", "patch_size",
                   "num_attention_heads")
# Fields added after checkpoints were first saved: config.json names them only where they are set, so the configs of
# models that do not use them (and the studies' run keys made from them) stay as they were.
_WRITTEN_WHEN_SET = ("latent_channels", "block_out_channels", "layers_per_block", "norm_num_groups",
                     "mid_block_add_attention", "scaling_factor", "shift_factor")


MAX_CODES = 2**20  # the largest codebook: code histograms and priors hold K entries per code map position


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def check_model_type(config_class, config_dict: dict) -> None:
    """Refuse to build a config of one model type from a saved config of another (transformers would only warn and
    then make a randomly initialised model of the wrong kind)."""
    saved = config_dict.get("model_type")
    if saved and saved != config_class.model_type and config_class.model_type != "hf_autoencoders_base":
        raise ValueError(f"The saved config is of model type {saved!r}, not {config_class.model_type!r} "
                         f"({config_class.__name__}); load it with AutoModel.from_pretrained, or with the class of "
                         "its own type.")


def legacy_vit_fields(config_dict: dict) -> dict:
    """A saved ViT config completed with the values its ViT options had when it was saved: one naming no
    `vit_output_head` predates the options (a linear head, 4x-wide MLPs); one naming a head but no
    `vit_conv_channels` or `vit_mlp_ratio` was saved when those defaulted to half the token width and 4."""
    if config_dict.get("backbone") != "vit":
        return config_dict
    completed = dict(config_dict)
    completed.setdefault("vit_output_head", "linear")
    completed.setdefault("vit_mlp_ratio", 4.0)
    if "vit_conv_channels" not in completed or completed["vit_conv_channels"] is None:
        completed["vit_conv_channels"] = max(1, completed.get("hidden_size", 128) // 2)
    completed.setdefault("num_attention_heads", 4)
    return completed


def _check_types(config: PreTrainedConfig) -> None:
    """Refuse a value of the wrong type for any field the config classes declare (a float or string size, a
    non-finite float), naming the field: the errors torch would raise later are far from the cause."""
    for cls in type(config).__mro__:
        if cls is PreTrainedConfig:
            break
        for name, annotation in vars(cls).get("__annotations__", {}).items():
            value = getattr(config, name, None)
            kinds = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
            if value is None and type(None) in kinds:
                continue
            _require(not (type(None) in kinds and str not in kinds and isinstance(value, str)
                          and value.lower() == "none"),
                     f"{name}={value!r} is the string {value!r}; for no value pass None (null on the command line, "
                     f"--config_overrides {name}=null).")
            if int in kinds and not (float in kinds or bool in kinds):
                _require(isinstance(value, int) and not isinstance(value, bool),
                         f"{name} must be an integer, got {value!r} ({type(value).__name__}).")
            elif float in kinds:
                _require(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
                         f"{name} must be a finite number, got {value!r}.")
            elif bool in kinds:
                _require(isinstance(value, bool), f"{name} must be true or false, got {value!r}.")
            elif str in kinds:
                _require(isinstance(value, str), f"{name} must be a string, got {value!r} ({type(value).__name__}).")


class AutoencoderConfig(PreTrainedConfig):
    r"""
    Fields shared by every autoencoder.

    Image shape (as in transformers' vision configs):
        image_size (`int`, defaults to 28): height and width of the (square) input images.
        num_channels (`int`, defaults to 1): number of image channels (1 for grayscale, 3 for RGB).

    Backbone (the encoder f and decoder g):
        backbone (`str`, defaults to `"conv"`):
            `"mlp"`: fully connected layers on the flattened image.
            `"conv"`: strided 4x4 convolutions followed by residual blocks (3x3 conv, ReLU, 1x1 conv), mirrored by
            transposed convolutions in the decoder, as in the VQ-VAE paper (van den Oord et al., 2017).
            `"vit"`: patch embedding, pre-norm transformer blocks, and a transformer decoder whose tokens are
            un-embedded back into pixels (Dosovitskiy et al., 2021; He et al., 2022), with learned position
            embeddings; attention through `torch.nn.functional.scaled_dot_product_attention`. Its design options are
            the `vit_*` fields below.
            `"ldm"`: the autoencoder of latent diffusion (Esser et al., 2021, "VQGAN"; Rombach et al., 2022, "LDM") in
            diffusers' module layout, so that its weights map one to one onto diffusers' `AutoencoderKL` and
            `VQModel`: a 3x3 convolution, then at each level `layers_per_block` ResNet blocks (GroupNorm, SiLU, 3x3
            convolutions) and, but at the last level, a stride-2 3x3 convolution; a mid block (ResNet block,
            single-head self-attention, ResNet block); GroupNorm, SiLU and a 3x3 convolution to the latent channels
            and a 1x1 convolution (`quant_conv`). The decoder mirrors it (`post_quant_conv`, mid block, levels of
            `layers_per_block + 1` ResNet blocks with nearest-neighbour upsampling and a 3x3 convolution). Its latent
            is always a map, f = 2^(len(block_out_channels) - 1) times smaller than the image on each side; its
            options are the ldm fields below.
        hidden_size (`int`, *optional*): width of the backbone (units of an MLP layer, channels of the conv
            backbone, token width of the ViT). Defaults to 512 / 64 / 64 for mlp / conv / vit (the last level's
            channels for ldm, which sets its widths with `block_out_channels`).
        num_hidden_layers (`int`, *optional*): hidden layers of the MLP, or transformer blocks of the ViT encoder
            and of its decoder. Defaults to 2 / 1 for mlp / vit (unused by conv).
        num_downsamples (`int`, defaults to 2): stride-2 stages of the conv backbone; the latent grid of a conv (and
            of an MLP VQ-VAE) is `image_size / 2**num_downsamples`.
        num_residual_blocks (`int`, defaults to 2): residual blocks of the conv backbone.
        patch_size (`int`, defaults to 4): ViT patch size; the ViT latent grid is `image_size / patch_size`.
        num_attention_heads (`int`, *optional*): attention heads of the ViT blocks. Defaults to 2 for the ViT (4,
            unused, for the others).

    ViT options (backbone="vit" only, written to config.json for every ViT):
        vit_output_head (`str`, defaults to `"pixel_shuffle"`): how decoder tokens become pixels. `"linear"`: each
            token is linearly un-embedded into its own patch, which never sees its neighbours' pixels (seams at patch
            borders). `"pixel_shuffle"`: each token is un-embedded into a vit_conv_channels x p x p block, the blocks
            are tiled into a full-resolution feature map (pixel shuffle, Shi et al., 2016), then GELU and a 3x3
            convolution across patch borders give the output.
        vit_conv_channels (`int`, defaults to 16): channels of the "pixel_shuffle" head's full-resolution map.
        vit_mlp_ratio (`float`, defaults to 2.0): hidden width of the transformer MLPs, as a multiple of the token
            width (4 in ViT, MAE and ViT-VQGAN).
        vit_decoder_num_layers (`int`, *optional*): transformer blocks of the decoder; defaults to num_hidden_layers
            (which then counts the encoder's blocks only).

    The defaults are the ViT measured best per second of training on 28x28 and 32x32 images (docs/models.md): width
    64, one encoder and one decoder block, 2 heads, 2x-wide MLPs and the pixel-shuffle head. A ViT config.json saved
    before these options existed (it names no `vit_output_head`) is read with the values of that time: a linear head,
    4x-wide MLPs, and a pixel-shuffle head half the token width, so those checkpoints give the same outputs.
        linear (`bool`, defaults to `False`): no nonlinearity anywhere (MLP backbone only). A linear AE trained on
            squared error spans the same subspace as PCA (Baldi & Hornik, 1989).

    ldm options (backbone="ldm" only, with diffusers' names; written to config.json for every ldm model):
        block_out_channels (`tuple[int]`, defaults to (64, 128, 128)): the channels of each level, from the image
            side; their number sets the downsampling factor f = 2^(levels - 1).
        layers_per_block (`int`, defaults to 1): ResNet blocks per encoder level (the decoder has one more).
        norm_num_groups (`int`, defaults to 32): GroupNorm groups; must divide every entry of block_out_channels.
        mid_block_add_attention (`bool`, defaults to `True`): self-attention between the mid blocks' ResNet blocks.

    Pixel range and latent scale:
        pixel_range (`tuple[float]`, *optional*): the range of the model's inputs and outputs, (0, 1), or (-1, 1) as
            diffusers' pipelines expect. Defaults to (-1, 1) for ldm and (0, 1) for the other backbones. The image
            processor maps images into it (`do_normalize`); `model.to_model_range` and `model.to_unit_range` map
            between it and [0, 1]. The loss is computed in it: the same images in (-1, 1) have 4 times the squared
            error, so a Gaussian variance c in (-1, 1) weighs the KL term as c / 4 does in (0, 1).
        scaling_factor (`float`, *optional*): s such that the latents (z - shift_factor) * s have unit variance
            (diffusers' `scaling_factor`, what a diffusion model is trained on); None until measured on data.
        shift_factor (`float`, *optional*): the latents' mean, subtracted before scaling; None until measured.

    Decoder likelihood p(x | z):
        likelihood (`str`, defaults to `"gaussian"`):
            `"gaussian"`: N(g(z), c I) with fixed variance c; reconstruction loss ||x - g(z)||^2 / 2c.
            `"bernoulli"`: independent Bernoulli pixels with logits g(z), for binarized images.
            `"discretized_logistic"`: a logistic per pixel integrated over the 8-bit bin of width 1/255, with a
            learned scale per channel, so negative log-likelihoods are in nats of discrete data and convert to
            bits/dim (Salimans et al., 2017).
        gaussian_variance (`float`, defaults to 0.5): the fixed variance c of the Gaussian likelihood. With c = 0.5,
            the reconstruction loss is exactly the summed squared error.
    """

    model_type = "hf_autoencoders_base"
    family: typing.ClassVar[str | None] = None
    display_name: typing.ClassVar[str] = "autoencoder"

    image_size: int = 28
    num_channels: int = 1
    backbone: str = "conv"
    hidden_size: int | None = None
    num_hidden_layers: int | None = None
    num_downsamples: int = 2
    num_residual_blocks: int = 2
    patch_size: int = 4
    num_attention_heads: int | None = None
    vit_output_head: str = "pixel_shuffle"
    vit_conv_channels: int = 16
    vit_mlp_ratio: float = 2.0
    vit_decoder_num_layers: int | None = None
    linear: bool = False
    likelihood: str = "gaussian"
    gaussian_variance: float = 0.5
    initializer_range: float = 0.02
    block_out_channels: list[int] | tuple[int, ...] | None = None
    layers_per_block: int | None = None
    norm_num_groups: int | None = None
    mid_block_add_attention: bool | None = None
    pixel_range: list[float] | tuple[float, ...] | None = None
    scaling_factor: float | None = None
    shift_factor: float | None = None

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        check_model_type(cls, config_dict)
        return super().from_dict(legacy_vit_fields(config_dict), **kwargs)

    def __post_init__(self, **kwargs):
        removed = [name for name in REMOVED_VIT_FIELDS if name in kwargs]
        _require(not removed, f"{', '.join(removed)}: ViT option(s) no longer in hf_autoencoders (they did not pay "
                              "when measured, docs/models.md); remove them from the config, or load the model with "
                              "the hf_autoencoders version that saved it.")
        _check_types(self)
        _require(self.backbone in BACKBONES, f"backbone={self.backbone!r} is not known; use one of {BACKBONES}.")
        _require(
            self.likelihood in LIKELIHOODS, f"likelihood={self.likelihood!r} is not known; use one of {LIKELIHOODS}."
        )
        _require(self.num_channels >= 1, f"num_channels must be >= 1, got {self.num_channels}.")
        _require(self.image_size >= 1, f"image_size must be >= 1, got {self.image_size}.")
        _require(self.gaussian_variance > 0, f"gaussian_variance (c) must be > 0, got {self.gaussian_variance}.")
        self._resolve_ldm_options()
        self._check_pixel_range()
        _require(self.scaling_factor is None or self.scaling_factor > 0,
                 f"scaling_factor must be > 0 (1 / the latents' standard deviation), got {self.scaling_factor}.")
        if self.hidden_size is None:
            self.hidden_size = _DEFAULT_HIDDEN_SIZE[self.backbone]
        if self.num_hidden_layers is None:
            self.num_hidden_layers = _DEFAULT_NUM_HIDDEN_LAYERS[self.backbone]
        if self.num_attention_heads is None:
            self.num_attention_heads = _DEFAULT_NUM_ATTENTION_HEADS[self.backbone]
        _require(self.hidden_size >= 1, f"hidden_size must be >= 1, got {self.hidden_size}.")
        _require(self.num_hidden_layers >= 0, f"num_hidden_layers must be >= 0, got {self.num_hidden_layers}.")
        _require(self.num_residual_blocks >= 0, f"num_residual_blocks must be >= 0, got {self.num_residual_blocks}.")
        _require(self.num_attention_heads >= 1, f"num_attention_heads must be >= 1, got {self.num_attention_heads}.")
        _require(self.initializer_range > 0, f"initializer_range must be > 0, got {self.initializer_range}.")
        if self.backbone in ("conv", "mlp"):
            factor = 2**self.num_downsamples
            _require(self.num_downsamples >= 0, f"num_downsamples must be >= 0, got {self.num_downsamples}.")
            _require(
                self.image_size % factor == 0,
                f"image_size={self.image_size} is not divisible by 2**num_downsamples={factor}; "
                f"use an image_size that is a multiple of {factor} or change num_downsamples.",
            )
        if self.backbone == "ldm":
            factor = self.downsampling_factor
            _require(self.image_size % factor == 0,
                     f"image_size={self.image_size} is not divisible by the ldm backbone's downsampling factor "
                     f"f={factor} (2**(len(block_out_channels) - 1)); use an image_size that is a multiple of {factor} "
                     "or fewer block_out_channels.")
            _require(not self.linear, "linear=True needs backbone='mlp' or 'conv' (the ldm backbone has GroupNorm, "
                                      "SiLU and attention).")
        if self.backbone == "vit":
            _require(
                self.patch_size >= 1 and self.image_size % self.patch_size == 0,
                f"image_size={self.image_size} is not divisible by patch_size={self.patch_size}; "
                "use a patch_size that divides image_size (e.g. 4 for 28, 32 and 64).",
            )
            _require(
                self.hidden_size % self.num_attention_heads == 0,
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}.",
            )
            _require(not self.linear, "linear=True needs backbone='mlp' or 'conv' (attention is not linear).")
            self._check_vit_options()
        else:
            fields = type(self).__dataclass_fields__
            changed = [name for name, field in fields.items()
                       if name.startswith("vit_") and getattr(self, name) != field.default]
            _require(not changed, f"{', '.join(changed)} apply to backbone='vit' only, but backbone={self.backbone!r}; "
                                  "pass backbone='vit' or leave them at their defaults.")
        super().__post_init__(**kwargs)

    def to_diff_dict(self) -> dict:
        """What config.json holds: transformers' difference from the defaults, with every `vit_*` option of a ViT
        and every ldm option of an ldm model (so that its config says which backbone it is, whatever the defaults
        become) and none of another backbone's; the fields added later only where they are set, and the pixel range
        where it is not (0, 1) or the backbone is ldm."""
        vit, ldm = self.backbone == "vit", self.backbone == "ldm"
        written = {}
        for key, value in super().to_diff_dict().items():
            if key.startswith("vit_") and not (vit and value is not None):
                continue
            if (key in _WRITTEN_WHEN_SET and value is None) or (ldm and key in _NOT_LDM_FIELDS):
                continue
            if key == "pixel_range" and not ldm and tuple(value) == PIXEL_RANGES[0]:
                continue
            written[key] = value
        return written

    def _resolve_ldm_options(self) -> None:
        """Fill the ldm options of an ldm config with their defaults and check them, and set the fields of the other
        backbones to what the ldm backbone has (its widths are `block_out_channels`, its mid-block attention has one
        head); refuse the ldm options on another backbone."""
        names = ("block_out_channels", "layers_per_block", "norm_num_groups", "mid_block_add_attention")
        if self.backbone != "ldm":
            given = [name for name in names if getattr(self, name) is not None]
            _require(not given, f"{', '.join(given)} apply to backbone='ldm' only, but backbone={self.backbone!r}; "
                                "pass backbone='ldm' or leave them out.")
            return
        for name in names:
            if getattr(self, name) is None:
                setattr(self, name, LDM_DEFAULTS[name])
        channels = self.block_out_channels
        _require(isinstance(channels, (list, tuple)) and len(channels) >= 1
                 and all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in channels),
                 f"block_out_channels must be a non-empty sequence of positive integers such as (64, 128, 128), got "
                 f"{channels!r}.")
        self.block_out_channels = tuple(channels)
        _require(self.layers_per_block >= 1, f"layers_per_block must be >= 1, got {self.layers_per_block}.")
        _require(self.norm_num_groups >= 1 and all(c % self.norm_num_groups == 0 for c in channels),
                 f"norm_num_groups={self.norm_num_groups} must divide every entry of block_out_channels={channels}; "
                 "choose channels that are multiples of it, or fewer groups.")
        implied = {"hidden_size": channels[-1], "num_hidden_layers": 0, "num_attention_heads": 1}
        for name, value in implied.items():
            _require(getattr(self, name) in (None, value),
                     f"{name} does not apply to backbone='ldm' (its widths are block_out_channels, its mid-block "
                     f"attention has one head); leave {name} out.")
            setattr(self, name, value)

    def _check_pixel_range(self) -> None:
        if self.pixel_range is None:
            self.pixel_range = LDM_DEFAULTS["pixel_range"] if self.backbone == "ldm" else PIXEL_RANGES[0]
        value = self.pixel_range
        _require(isinstance(value, (list, tuple)) and tuple(value) in PIXEL_RANGES,
                 f"pixel_range must be (0, 1) or (-1, 1), got {value!r}.")
        self.pixel_range = tuple(float(bound) for bound in value)
        _require(self.likelihood != "bernoulli" or self.pixel_range == PIXEL_RANGES[0],
                 "likelihood='bernoulli' models binary pixels in {0, 1}: it needs pixel_range (0, 1).")

    def _check_vit_options(self) -> None:
        _require(self.vit_output_head in VIT_OUTPUT_HEADS,
                 f"vit_output_head={self.vit_output_head!r} is not known; use one of {VIT_OUTPUT_HEADS}.")
        _require(self.vit_mlp_ratio > 0, f"vit_mlp_ratio must be > 0, got {self.vit_mlp_ratio}.")
        _require(self.vit_conv_channels >= 1, f"vit_conv_channels must be >= 1, got {self.vit_conv_channels}.")
        _require(self.vit_decoder_num_layers is None or self.vit_decoder_num_layers >= 0,
                 f"vit_decoder_num_layers must be >= 0 or None, got {self.vit_decoder_num_layers}.")

    @property
    def downsampling_factor(self) -> int:
        """f: how many times smaller the spatial latent grid is than the image, on each side."""
        if self.backbone == "vit":
            return self.patch_size
        if self.backbone == "ldm":
            return 2 ** (len(self.block_out_channels) - 1)
        return 2**self.num_downsamples

    @property
    def latent_grid_size(self) -> int:
        """Side of the spatial latent grid (VQ-VAE code map, spatial AE/VAE latent)."""
        return self.image_size // self.downsampling_factor

    @property
    def spatial_latent(self) -> bool:
        """Whether the latent is a map (batch, channels, h, w) rather than a vector."""
        return True

    @property
    def num_pixels(self) -> int:
        return self.num_channels * self.image_size * self.image_size


class AEConfig(AutoencoderConfig):
    r"""
    A deterministic autoencoder x -> z = f(x) -> g(z), trained to minimise ||x - g(f(x))||^2.

        latent_dim (`int`, defaults to 16): size of the latent vector z (with `latent_channels`, the size of the
            latent map, latent_channels * h * w).
        latent_channels (`int`, *optional*): make z a map of shape (latent_channels, h, w) on the backbone's latent
            grid (h = w = image_size / f), as the autoencoders of latent diffusion have, instead of a vector. Any
            backbone; the ldm backbone always has one (4 channels by default).
        noise_std (`float`, defaults to 0.0): standard deviation of Gaussian noise added to the input during
            training only (a denoising autoencoder, Vincent et al., 2008); the target stays the clean image.

    Plus every field of [`AutoencoderConfig`].
    """

    model_type = "hf_autoencoders_ae"
    family = "ae"  # the name --model_type takes
    display_name = "AE"

    latent_dim: int | None = None
    latent_channels: int | None = None
    noise_std: float = 0.0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.backbone == "ldm" and self.latent_channels is None:
            self.latent_channels = LDM_DEFAULT_LATENT_CHANNELS
        if self.latent_channels is not None:
            _require(self.latent_channels >= 1, f"latent_channels must be >= 1, got {self.latent_channels}.")
            size = self.latent_channels * self.latent_grid_size**2
            _require(self.latent_dim in (None, size),
                     f"latent_dim={self.latent_dim} does not match the latent map of latent_channels="
                     f"{self.latent_channels} on a {self.latent_grid_size}x{self.latent_grid_size} grid ({size} "
                     "entries); leave latent_dim out with latent_channels.")
            self.latent_dim = size
        elif self.latent_dim is None:
            self.latent_dim = 16
        _require(self.latent_dim >= 1, f"latent_dim must be >= 1, got {self.latent_dim}.")
        _require(self.noise_std >= 0, f"noise_std must be >= 0, got {self.noise_std}.")

    @property
    def spatial_latent(self) -> bool:
        return self.latent_channels is not None

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """The shape of one latent: (latent_dim,), or (latent_channels, h, w) for a latent map."""
        if self.latent_channels is None:
            return (self.latent_dim,)
        return (self.latent_channels, self.latent_grid_size, self.latent_grid_size)


class VAEConfig(AEConfig):
    r"""
    A variational autoencoder (Kingma & Welling, 2014): q(z|x) = N(mu(x), diag sigma^2(x)), prior p(z) = N(0, I).

        latent_dim (`int`, defaults to 16): size of the continuous latent z.
        kl_weight (`float`, defaults to 1.0): beta of the beta-VAE (Higgins et al., 2017), multiplying the KL term.
            With the Gaussian likelihood the effective weight of KL against the *summed squared error* is
            2 c * kl_weight: choose `gaussian_variance` rather than this knob where you can.
        gaussian_variance (`float`, defaults to 0.05): the fixed decoder variance c.
        gradient_estimator (`str`, defaults to `"reparameterization"`): how gradients reach the encoder through the
            sample z ~ q(z|x). `"reparameterization"`: z = mu + sigma * eps, eps ~ N(0, I) (pathwise).
            `"score_function"`: REINFORCE, grad E_q[f(z)] = E_q[f(z) grad log q(z|x)], unbiased but high variance,
            and the only option that also works for discrete latents.
        score_function_baseline (`str`, defaults to `"moving_average"`): control variate b subtracted from f(z):
            `"none"`, `"moving_average"` of past f, or `"leave_one_out"` (mean of the other samples' f; needs
            `num_latent_samples >= 2`).
        num_latent_samples (`int`, defaults to 1): samples of z per image in the training loss.
        num_categories (`int`, defaults to 0): if > 0, the latent gets a categorical part c ~ Cat(pi(x)) with that
            many classes, prior Uniform(num_categories), beside the continuous part.
        categorical_estimator (`str`, defaults to `"gumbel_softmax"`): `"score_function"` or `"gumbel_softmax"`
            (a relaxed one-hot sample with temperature `gumbel_temperature`, Jang et al. 2017; Maddison et al. 2017).
        gumbel_temperature (`float`, defaults to 0.5).
    """

    model_type = "hf_autoencoders_vae"
    family = "vae"  # the name --model_type takes
    display_name = "VAE"

    gaussian_variance: float = 0.05
    kl_weight: float = 1.0
    gradient_estimator: str = "reparameterization"
    score_function_baseline: str = "moving_average"
    num_latent_samples: int = 1
    num_categories: int = 0
    categorical_estimator: str = "gumbel_softmax"
    gumbel_temperature: float = 0.5

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        _require(self.kl_weight >= 0, f"kl_weight must be >= 0, got {self.kl_weight}.")
        _require(
            self.gradient_estimator in GRADIENT_ESTIMATORS,
            f"gradient_estimator={self.gradient_estimator!r} is not known; use one of {GRADIENT_ESTIMATORS}.",
        )
        _require(
            self.score_function_baseline in SCORE_FUNCTION_BASELINES,
            f"score_function_baseline={self.score_function_baseline!r} is not known; "
            f"use one of {SCORE_FUNCTION_BASELINES}.",
        )
        _require(self.num_latent_samples >= 1, f"num_latent_samples must be >= 1, got {self.num_latent_samples}.")
        _require(
            self.score_function_baseline != "leave_one_out" or self.num_latent_samples >= 2,
            "score_function_baseline='leave_one_out' needs num_latent_samples >= 2.",
        )
        _require(self.num_categories >= 0, f"num_categories must be >= 0, got {self.num_categories}.")
        _require(self.num_categories == 0 or self.latent_channels is None,
                 "num_categories > 0 (a categorical latent per image) needs a vector latent; leave latent_channels out "
                 "(and use a backbone other than ldm).")
        _require(
            self.categorical_estimator in CATEGORICAL_ESTIMATORS,
            f"categorical_estimator={self.categorical_estimator!r} is not known; use one of {CATEGORICAL_ESTIMATORS}.",
        )
        _require(self.gumbel_temperature > 0, f"gumbel_temperature must be > 0, got {self.gumbel_temperature}.")


class VQVAEConfig(AutoencoderConfig):
    r"""
    A vector-quantized VAE (van den Oord et al., 2017): the encoder's grid of vectors z_e is snapped to a learned
    K x d codebook, the decoder sees the straight-through z_e + sg(z_q - z_e).

        quantizer (`str`, defaults to `"vq"`): how z_e becomes codes (docs/models.md has each one's math):
            `"vq"`: the nearest code of a learned codebook (the options below shape it).
            `"simvq"`: SimVQ (Zhu et al., 2024): the nearest code of the codebook C W^T + b, C a frozen random K x d
            matrix and (W, b) one learned linear layer, so every code moves with it and none is left behind.
            `"fsq"`: Finite Scalar Quantization (Mentzer et al., 2023): each of len(fsq_levels) channels rounded to
            a fixed grid; no codebook loss.
            `"lfq"`: lookup-free quantization (Yu et al., 2023, MAGVIT-v2): each of log2(K) channels quantized to
            its sign, the code being the binary number they spell; an entropy penalty spreads the codes.
        num_embeddings (`int`, defaults to 512): codebook size K (derived as prod(fsq_levels) for FSQ; a power of 2
            for LFQ).
        embedding_dim (`int`, defaults to 64): dimension d of z_e and of the decoder input (the latent channels of
            the ldm backbone).
        commitment_cost (`float`, defaults to 0.25): beta of the commitment loss beta * ||z_e - sg(e)||^2 (for LFQ,
            beta * ||z - sg(sign(z))||^2).
        num_quantizers (`int`, defaults to 1): residual quantization of depth n (Lee et al., 2022, "RQ-VAE";
            Zeghidour et al., 2021): n quantizers of the kind `quantizer` names, each with its own codebook, the
            d-th quantizing what the ones before left over, r_d = r_{d-1} - q_d; the decoder reads q_1 + ... + q_n
            and an image has n code maps, `indices` of shape (batch, n, h, w) (for n = 1, (batch, h, w)).
        rotation_trick (`bool`, defaults to `False`): pass the gradient from z_q to z_e by the rotation and rescaling
            that takes z_e onto z_q (Fifty et al., 2024), instead of copying it (straight-through). For the codebook
            quantizers, "vq" and "simvq".

    Options of the learned codebook (`"vq"`; SimVQ's codes move with its linear layer only, FSQ and LFQ have no
    codebook):
        codebook_ema (`bool`, defaults to `True`): update the codebook as exponential moving averages of the
            assigned encoder outputs instead of the codebook loss (paper's appendix; Razavi et al., 2019).
        ema_decay (`float`, defaults to 0.99): decay of those averages.
        ema_epsilon (`float`, defaults to 1e-5): Laplace smoothing of the EMA cluster sizes.
        kmeans_init (`bool`, defaults to `True`): initialise the codes from the first training batch: k-means for
            `"vq"`; for `"simvq"` the linear map gives the codes the batch's per-dimension mean and std; for `"lfq"`
            the projection is centred so each bit splits the batch evenly. (FSQ has nothing to initialise.)
        kmeans_iters (`int`, defaults to 10).
        dead_code_threshold (`int`, defaults to 20): re-seed a code from the encoder outputs once it has gone unused
            for that many training steps (0 = never; Dhariwal et al., 2020 "Jukebox").

    The defaults (EMA, k-means init, dead-code restart) keep the whole codebook in use; the paper's plain VQ-VAE,
    whose codebook often collapses to a few codes, is `codebook_ema=False, kmeans_init=False, dead_code_threshold=0`.

    Options of the codebook lookup (`"vq"` and `"simvq"`):
        codebook_dim (`int`, *optional*): look codes up in this lower dimension (factorized codes, Yu et al., 2022
            "ViT-VQGAN"), projecting z_e down before and back up after quantization.
        l2_normalized_codes (`bool`, defaults to `False`): l2-normalise z_e and the codes before the lookup
            (cosine similarity, ViT-VQGAN).
        stochastic_quantization (`bool`, defaults to `False`): sample the code k with probability proportional to
            exp(-||z_e - e_k||^2 / quantization_temperature) while training, instead of the nearest neighbour.
        quantization_temperature (`float`, defaults to 1.0).

    FSQ:
        fsq_levels (`tuple[int]`, defaults to (8, 5, 5, 5)): quantization levels per channel.
        fsq_input_std (`float`, *optional*, defaults to 0.8): standardise each of the len(fsq_levels) projected
            channels over the batch (running statistics in eval, as a BatchNorm without learned scale or shift) and
            scale it to this standard deviation before the bound, so no channel can drift into the tanh's flat ends
            or shrink onto one level. `None` is the paper's FSQ (the bound applied to the projection as it is), what
            FSQ configs saved without this field mean.

    LFQ (MAGVIT-v2's entropy penalty; written to config.json for LFQ only):
        lfq_entropy_loss_weight (`float`, defaults to 0.1): lambda of the entropy loss
            lambda * D * (E_n[H(p_n)] - gamma * H(E_n[p_n])), p_n = softmax_c(-||z_n - c||^2 / tau) over the K codes
            at position n, E_n over the batch's positions, D = num_channels * image_size**2 (MAGVIT-v2's weight
            against a per-pixel mean reconstruction loss, carried over to this library's per-image sum).
        lfq_batch_maximization_weight (`float`, defaults to 1.0): gamma, the weight of the batch entropy
            H(E_n[p_n]) against the per-position entropy E_n[H(p_n)].
        lfq_entropy_temperature (`float`, defaults to 0.01): tau.
        lfq_entropy_groups (`int`, defaults to 1): compute the batch entropy over this many groups of log2(K) / G
            bits each, as the sum of the groups' entropies (an upper bound on the joint entropy, exact when the
            groups are independent): it costs (positions x G x K^(1/G)) instead of (positions x K), which large
            codebooks (K = 2^18) need. The per-position entropy is exact either way.
    """

    model_type = "hf_autoencoders_vqvae"
    family = "vqvae"  # the name --model_type takes
    display_name = "VQ-VAE"

    quantizer: str = "vq"
    num_embeddings: int = 512
    embedding_dim: int = 64
    commitment_cost: float = 0.25
    codebook_ema: bool = True
    ema_decay: float = 0.99
    ema_epsilon: float = 1e-5
    kmeans_init: bool = True
    kmeans_iters: int = 10
    dead_code_threshold: int = 20
    codebook_dim: int | None = None
    l2_normalized_codes: bool = False
    stochastic_quantization: bool = False
    quantization_temperature: float = 1.0
    fsq_levels: list[int] | tuple[int, ...] = (8, 5, 5, 5)
    fsq_input_std: float | None = 0.8
    num_quantizers: int = 1
    rotation_trick: bool = False
    lfq_entropy_loss_weight: float = 0.1
    lfq_batch_maximization_weight: float = 1.0
    lfq_entropy_temperature: float = 0.01
    lfq_entropy_groups: int = 1

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        _require(
            self.quantizer in QUANTIZERS, f"quantizer={self.quantizer!r} is not known; use one of {QUANTIZERS}."
        )
        _require(
            isinstance(self.fsq_levels, (list, tuple))
            and all(isinstance(level, int) and not isinstance(level, bool) for level in self.fsq_levels),
            f"fsq_levels must be a sequence of integers such as (8, 5, 5, 5), got {self.fsq_levels!r}.",
        )
        self.fsq_levels = tuple(self.fsq_levels)
        if self.quantizer == "fsq":
            _require(
                len(self.fsq_levels) >= 1 and all(level >= 2 for level in self.fsq_levels),
                f"fsq_levels must be a non-empty sequence of integers >= 2, got {self.fsq_levels}.",
            )
            num_embeddings = 1
            for level in self.fsq_levels:
                num_embeddings *= level
            self.num_embeddings = num_embeddings
            _require(self.fsq_input_std is None or self.fsq_input_std > 0,
                     f"fsq_input_std must be > 0 (the standard deviation of each channel before the bound; 0.8 by "
                     f"default), or None for the paper's FSQ, got {self.fsq_input_std}.")
        else:
            _require(self.fsq_input_std == type(self).__dataclass_fields__["fsq_input_std"].default,
                     f"fsq_input_std applies to quantizer='fsq' only, but quantizer={self.quantizer!r}; pass "
                     "quantizer='fsq' or leave it at its default.")
        _require(self.num_embeddings >= 2, f"num_embeddings (K) must be >= 2, got {self.num_embeddings}.")
        _require(
            self.num_embeddings <= MAX_CODES,
            f"num_embeddings (K) is {self.num_embeddings}, more than {MAX_CODES} codes (2**20): code histograms and "
            "priors would not fit in memory. Use fewer codes (for FSQ, fewer or smaller fsq_levels such as "
            "(8, 5, 5, 5)).",
        )
        _require(self.embedding_dim >= 1, f"embedding_dim (d) must be >= 1, got {self.embedding_dim}.")
        _require(self.commitment_cost >= 0, f"commitment_cost must be >= 0, got {self.commitment_cost}.")
        _require(0 < self.ema_decay < 1, f"ema_decay must be in (0, 1), got {self.ema_decay}.")
        _require(self.dead_code_threshold >= 0, f"dead_code_threshold must be >= 0, got {self.dead_code_threshold}.")
        _require(
            self.codebook_dim is None or self.codebook_dim >= 1,
            f"codebook_dim must be >= 1 or None, got {self.codebook_dim}.",
        )
        _require(
            self.quantization_temperature > 0,
            f"quantization_temperature must be > 0, got {self.quantization_temperature}.",
        )
        _require(self.num_quantizers >= 1,
                 f"num_quantizers (the depth of residual quantization) must be >= 1, got {self.num_quantizers}; "
                 "use 1 for a single quantizer.")
        _require(not self.rotation_trick or self.quantizer in CODEBOOK_QUANTIZERS,
                 f"rotation_trick rotates z_e onto its codeword, so it applies to the codebook quantizers "
                 f"{CODEBOOK_QUANTIZERS}, not quantizer={self.quantizer!r} (which rounds each channel with a "
                 "straight-through gradient); drop rotation_trick or use quantizer='vq' or 'simvq'.")
        self._check_lfq_options()

    def _check_lfq_options(self) -> None:
        fields = type(self).__dataclass_fields__
        if self.quantizer != "lfq":
            changed = [name for name, field in fields.items()
                       if name.startswith("lfq_") and getattr(self, name) != field.default]
            _require(not changed, f"{', '.join(changed)} apply to quantizer='lfq' only, but quantizer="
                                  f"{self.quantizer!r}; pass quantizer='lfq' or leave them at their defaults.")
            return
        bits = self.num_embeddings.bit_length() - 1
        _require(self.num_embeddings == 2**bits,
                 f"num_embeddings={self.num_embeddings}: LFQ's codes are the 2^b sign patterns of b channels, so K "
                 f"must be a power of 2; use {2**bits} or {2**(bits + 1)}.")
        _require(self.lfq_entropy_loss_weight >= 0,
                 f"lfq_entropy_loss_weight must be >= 0, got {self.lfq_entropy_loss_weight}.")
        _require(self.lfq_batch_maximization_weight >= 0,
                 f"lfq_batch_maximization_weight must be >= 0, got {self.lfq_batch_maximization_weight}.")
        _require(self.lfq_entropy_temperature > 0,
                 f"lfq_entropy_temperature must be > 0, got {self.lfq_entropy_temperature}.")
        _require(self.lfq_entropy_groups >= 1 and bits % self.lfq_entropy_groups == 0,
                 f"lfq_entropy_groups={self.lfq_entropy_groups} must be >= 1 and divide the {bits} bits of "
                 f"K = {self.num_embeddings} codes; use one of "
                 f"{[g for g in range(1, bits + 1) if bits % g == 0]}.")

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        """An FSQ config saved before `fsq_input_std` existed meant the paper's FSQ: it loads with None."""
        if config_dict.get("quantizer") == "fsq" and "fsq_input_std" not in config_dict | kwargs:
            config_dict = {**config_dict, "fsq_input_std": None}
        return super().from_dict(config_dict, **kwargs)

    def to_diff_dict(self) -> dict:
        """config.json's fields, without those of options left off: `num_quantizers` = 1 and `rotation_trick` =
        False (what every config meant before they existed), `fsq_input_std` unless an FSQ sets it, and the
        `lfq_*` options unless quantizer is "lfq" (which then names them all). So configs that use none of them
        write what they wrote before."""
        off = {"num_quantizers": 1, "rotation_trick": False}
        lfq = self.quantizer == "lfq"
        standardized_fsq = self.quantizer == "fsq" and self.fsq_input_std is not None
        return {key: value for key, value in super().to_diff_dict().items()
                if not (key in off and value == off[key]) and (not key.startswith("lfq_") or lfq)
                and (key != "fsq_input_std" or standardized_fsq)}
