"""Conversion between this library's autoencoders and diffusers' `AutoencoderKL` and `VQModel` folders.

A VAE or VQ-VAE with the ldm backbone holds the modules of diffusers' classes under the same names, so a conversion
is a fixed renaming of state-dict keys and a translation of config fields:

    ours                              diffusers
    encoder.quant_conv.*              quant_conv.*
    decoder.post_quant_conv.*         post_quant_conv.*
    encoder.*, decoder.*              encoder.*, decoder.*
    quantizer.codebook                quantize.embedding.weight        (VQ-VAE)

    export_to_diffusers(model, "vae-diffusers")      # then diffusers.AutoencoderKL.from_pretrained("vae-diffusers")
    model = from_diffusers("sd-vae")                 # a VAEModel (or VQVAEModel) that trains with our Trainer

A layout diffusers cannot hold (another backbone, a vector latent, pixels in [0, 1], a likelihood other than the
Gaussian, FSQ or factorized codes) and a diffusers folder of a layout we cannot hold are refused, naming every reason,
before anything is written; a folder is written in a temporary folder beside its destination and renamed into place,
so that an interrupted export leaves nothing half written.

Pixels in [0, 1] are refused rather than folded into the first and last convolutions: the encoder's zero padding
would then pad with mid-grey instead of black, so the folded model would not be the same function.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from transformers import AutoModel

from .models import VAEConfig, VQVAEConfig
from .results import check_destination, write_folder

logger = logging.getLogger(__name__)

DIFFUSERS_CLASSES = ("AutoencoderKL", "VQModel")  # the classes a model's `diffusers_class` may name
# Prefixes of our state dict that become top-level modules in diffusers'.
_MOVED_PREFIXES = {"encoder.quant_conv.": "quant_conv.", "decoder.post_quant_conv.": "post_quant_conv."}
_OUR_CODEBOOK, _THEIR_CODEBOOK = "quantizer.codebook", "quantize.embedding.weight"


def _diffusers():
    try:
        import diffusers
    except ImportError as err:
        raise ImportError("Converting to or from diffusers needs diffusers: pip install 'hf-autoencoders[diffusers]' "
                          "(or pip install diffusers).") from err
    return diffusers


# ------------------------------------------------------------------------------------------------------------ export


def diffusers_layout_problems(model) -> list[str]:
    """Why diffusers' `AutoencoderKL` / `VQModel` cannot hold `model` (empty if it can)."""
    config = model.config
    if getattr(model, "diffusers_class", None) not in DIFFUSERS_CLASSES:
        return [f"diffusers has no class for a {config.display_name}: only a VAE (AutoencoderKL) or a VQ-VAE "
                "(VQModel) converts"]
    problems = []
    if config.backbone != "ldm":
        problems.append(f"backbone={config.backbone!r}: only the 'ldm' backbone has diffusers' layout (train with "
                        "--block_out_channels, or --backbone ldm)")
    if tuple(config.pixel_range) != (-1.0, 1.0):
        problems.append(f"pixel_range={tuple(config.pixel_range)}: diffusers' pipelines feed and read pixels in "
                        "(-1, 1) (the ldm backbone's default)")
    if config.likelihood != "gaussian":
        problems.append(f"likelihood={config.likelihood!r}: diffusers decodes to the decoder's output itself, which "
                        "is the mean image only for the Gaussian likelihood")
    if isinstance(config, VQVAEConfig):
        if config.quantizer != "vq":
            problems.append(f"quantizer={config.quantizer!r}: VQModel holds a codebook (quantizer='vq') only")
        if config.num_quantizers > 1:
            problems.append(f"num_quantizers={config.num_quantizers}: VQModel quantizes with one codebook, not "
                            "residually")
        if config.codebook_dim is not None or config.l2_normalized_codes:
            problems.append("factorized or l2-normalized codes (codebook_dim, l2_normalized_codes): VQModel looks "
                            "codes up by plain Euclidean distance in the latent's own dimension")
    return problems


def diffusers_config(config) -> dict:
    """The keyword arguments of diffusers' `AutoencoderKL` (VAE) or `VQModel` (VQ-VAE) with the same layout."""
    levels = len(config.block_out_channels)
    fields = dict(
        in_channels=config.num_channels,
        out_channels=config.num_channels,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        act_fn="silu",
        norm_num_groups=config.norm_num_groups,
        sample_size=config.image_size,
        mid_block_add_attention=config.mid_block_add_attention,
        scaling_factor=1.0 if config.scaling_factor is None else config.scaling_factor,
    )
    if isinstance(config, VQVAEConfig):
        return dict(fields, latent_channels=config.embedding_dim, num_vq_embeddings=config.num_embeddings,
                    vq_embed_dim=config.embedding_dim)
    return dict(fields, latent_channels=config.latent_channels, shift_factor=config.shift_factor)


def to_diffusers_state_dict(model) -> dict[str, torch.Tensor]:
    """`model`'s weights under diffusers' names (the EMA codebook's statistics, which diffusers does not keep, are
    left out)."""
    renamed = {}
    for name, tensor in model.state_dict().items():
        if name == _OUR_CODEBOOK:
            renamed[_THEIR_CODEBOOK] = tensor
            continue
        if name.startswith(("quantizer.", "likelihood.")):
            continue
        for ours, theirs in _MOVED_PREFIXES.items():
            if name.startswith(ours):
                name = theirs + name[len(ours):]
                break
        renamed[name] = tensor
    return renamed


def export_to_diffusers(model, output_dir, overwrite: bool = False) -> Path:
    """Write `model` as a diffusers `AutoencoderKL` (VAE) or `VQModel` (VQ-VAE) folder that their `from_pretrained`
    loads with every weight in place, carrying `scaling_factor` (1.0 if it was never measured) and `shift_factor`.
    Refuses a layout diffusers cannot hold, and an `output_dir` that holds files (unless `overwrite`), before
    writing anything; the folder appears whole or not at all."""
    problems = diffusers_layout_problems(model)
    if problems:
        raise ValueError(f"This {model.config.display_name} cannot be exported to diffusers: " + "; ".join(problems)
                         + ".")
    output_dir = Path(output_dir)
    check_destination(output_dir, overwrite)
    if model.config.scaling_factor is None:
        logger.warning("The model's scaling_factor was never measured: the export carries scaling_factor=1.0. "
                       "Measure it first with `hf-autoencoders scaling-factor RUN --dataset_name ...`.")
    diffusers_class = getattr(_diffusers(), model.diffusers_class)
    exported = diffusers_class(**diffusers_config(model.config))
    exported.load_state_dict(to_diffusers_state_dict(model), strict=True)
    if model.dtype != torch.float32:
        exported.to(model.dtype)
    return write_folder(output_dir, exported.save_pretrained, overwrite=overwrite)


# ------------------------------------------------------------------------------------------------------------ import


def diffusers_folder_problems(diffusers_config: dict) -> list[str]:
    """Why a diffusers `AutoencoderKL` / `VQModel` config (its config.json) has no counterpart here."""
    name = diffusers_config.get("_class_name")
    if name not in DIFFUSERS_CLASSES:
        return [f"it holds a {name or 'model without _class_name'}, not an AutoencoderKL or a VQModel"]
    problems = []
    blocks = [*diffusers_config.get("down_block_types", ()), *diffusers_config.get("up_block_types", ())]
    other = sorted({block for block in blocks if block not in ("DownEncoderBlock2D", "UpDecoderBlock2D")})
    if other:
        problems.append(f"block types {other} (only DownEncoderBlock2D / UpDecoderBlock2D)")
    if diffusers_config.get("act_fn", "silu") != "silu":
        problems.append(f"act_fn={diffusers_config['act_fn']!r} (only silu)")
    channels = (diffusers_config.get("in_channels", 3), diffusers_config.get("out_channels", 3))
    if channels[0] != channels[1] or channels[0] not in (1, 3):
        problems.append(f"in_channels={channels[0]}, out_channels={channels[1]} (images of 1 or 3 channels in and "
                        "out)")
    if not diffusers_config.get("use_quant_conv", True) or not diffusers_config.get("use_post_quant_conv", True):
        problems.append("no quant_conv / post_quant_conv")
    if diffusers_config.get("latents_mean") is not None or diffusers_config.get("latents_std") is not None:
        problems.append("per-channel latents_mean / latents_std (one scaling_factor and shift_factor only)")
    if diffusers_config.get("norm_type", "group") != "group":
        problems.append(f"norm_type={diffusers_config['norm_type']!r} (only group)")
    latent_channels = diffusers_config.get("latent_channels")
    vq_dim = diffusers_config.get("vq_embed_dim")
    if name == "VQModel" and vq_dim is not None and vq_dim != latent_channels:
        problems.append(f"vq_embed_dim={vq_dim} differs from latent_channels={latent_channels}")
    size = diffusers_config.get("sample_size", 32)
    if isinstance(size, (list, tuple)) and len(set(size)) != 1:
        problems.append(f"sample_size={size} (square images only)")
    return problems


def read_diffusers_config(path, subfolder: str | None = None) -> dict | None:
    """The config.json of the diffusers model at `path` (a model folder, a pipeline folder, whose `vae` or `vqvae`
    subfolder is taken, or a Hub id), with `_subfolder` set to the subfolder it came from; None where `path` holds no
    diffusers model (an hf_autoencoders run, a missing folder)."""
    path = str(path)
    if os.path.isdir(path):
        folders = [subfolder] if subfolder else [None, "vae", "vqvae"]
        for folder in folders:
            config_file = os.path.join(path, *(folder,) if folder else (), "config.json")
            if os.path.isfile(config_file):
                with open(config_file) as file:
                    config = json.load(file)
                if "_class_name" in config:
                    return {**config, "_subfolder": folder}
                if folder is None and "_class_name" not in config:
                    return None  # a transformers model (ours)
        return None
    if os.path.exists(path):
        return None
    try:  # a Hub id: diffusers knows how to fetch its config
        config = _diffusers().AutoencoderKL.load_config(path, subfolder=subfolder)
    except (ImportError, OSError, ValueError):
        return None
    return {**config, "_subfolder": subfolder} if "_class_name" in config else None


def config_from_diffusers(diffusers_config: dict, source: str = "the diffusers model") -> VAEConfig | VQVAEConfig:
    """Our config of the same layout as a diffusers `AutoencoderKL` / `VQModel` config (pixels in (-1, 1)), or a
    ValueError naming every reason `source` cannot be converted. A VQModel's codebook becomes a trained parameter
    (no EMA, no k-means initialisation)."""
    problems = diffusers_folder_problems(diffusers_config)
    if problems:
        raise ValueError(f"{source} cannot be converted to an hf_autoencoders model: " + "; ".join(problems) + ".")
    size = diffusers_config.get("sample_size", 32)
    fields = dict(
        backbone="ldm",
        image_size=size[0] if isinstance(size, (list, tuple)) else size,
        num_channels=diffusers_config.get("in_channels", 3),
        block_out_channels=tuple(diffusers_config.get("block_out_channels", (64,))),
        layers_per_block=diffusers_config.get("layers_per_block", 1),
        norm_num_groups=diffusers_config.get("norm_num_groups", 32),
        mid_block_add_attention=diffusers_config.get("mid_block_add_attention", True),
        pixel_range=(-1.0, 1.0),
        scaling_factor=diffusers_config.get("scaling_factor"),
    )
    if diffusers_config["_class_name"] == "VQModel":
        return VQVAEConfig(**fields, embedding_dim=diffusers_config.get("latent_channels", 3),
                           num_embeddings=diffusers_config.get("num_vq_embeddings", 256), codebook_ema=False,
                           kmeans_init=False, dead_code_threshold=0)
    return VAEConfig(**fields, latent_channels=diffusers_config.get("latent_channels", 4),
                     shift_factor=diffusers_config.get("shift_factor"))


def from_diffusers_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers' weight names -> ours (the inverse of `to_diffusers_state_dict`)."""
    renamed = {}
    for name, tensor in state_dict.items():
        if name == _THEIR_CODEBOOK:
            name = _OUR_CODEBOOK
        for ours, theirs in _MOVED_PREFIXES.items():
            if name.startswith(theirs):
                name = ours + name[len(theirs):]
                break
        renamed[name] = tensor
    return renamed


def from_diffusers(path, subfolder: str | None = None):
    """A diffusers `AutoencoderKL` (or `VQModel`) folder or Hub id as our VAE (or VQ-VAE), with the same weights,
    scaling and shift factors; a pipeline folder's `vae` (or `vqvae`) subfolder is found by itself. Refuses a layout
    we cannot hold, naming every reason, before loading any weight."""
    their_config = read_diffusers_config(path, subfolder)
    if their_config is None:
        raise ValueError(f"{path} is not a diffusers model folder (no config.json of a diffusers model, in it or in a "
                         "vae / vqvae subfolder): pass the folder of an AutoencoderKL or VQModel, or a pipeline's.")
    config = config_from_diffusers(their_config, str(path))
    theirs = getattr(_diffusers(), their_config["_class_name"]).from_pretrained(
        str(path), subfolder=their_config["_subfolder"])
    model = AutoModel.from_config(config)
    missing, unexpected = model.load_state_dict(from_diffusers_state_dict(theirs.state_dict()), strict=False)
    missing = [name for name in missing if not name.startswith("quantizer.")]  # the EMA-free codebook has no stats
    if missing or unexpected:
        raise ValueError(f"{path}: the weights do not map one to one (missing {missing}, unexpected {unexpected}).")
    return model.to(theirs.dtype)
