"""Sharing a trained model: its card (`write_model_card`, the one writer of cards) and the upload of exactly what a
model repository holds (`push_to_hub`: what `hf-autoencoders push` and `--push_to_hub` call).

A run folder holds everything the Hub needs: `model.safetensors`, `config.json` (with the `auto_map` that points at
the model code saved beside it), `preprocessor_config.json`, the pictures and `README.md` (the card), so anyone can
load it with `AutoModel.from_pretrained(repo_id, trust_remote_code=True)`, no package needed. It also holds what must
never be uploaded: checkpoints with pickled optimizer states, `training_args.bin`, caches (a prior's `code_cache/`
is the whole training set as codes), logs. Uploads therefore take an allow-list (`upload_files`), never the folder.
(`model.push_to_hub(repo_id)` is transformers' own: the weights, config and code, keeping the card already on the
Hub.)"""

import ast
import contextlib
import json
import logging
import math
import os
from pathlib import Path

import torch
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, TrainerCallback

from .models.code_priors import is_transformer_prior_config  # importing models registers the Auto classes
from .results import write_text

logger = logging.getLogger(__name__)

# What a model repository holds, besides the model code that config.json's auto_map names (`model_code_files`).
MODEL_FILES = ("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json", "config.json",
               "generation_config.json", "preprocessor_config.json")
CARD_FILES = ("README.md", "*.png")
# What a training run writes into its folder besides those, checkpoints and caches: its pictures and results.
RUN_PICTURES = ("reconstructions.png", "samples.png", "uniform_samples.png", "loss_curves.png")
RESULT_FILES = ("train_results.json", "eval_results.json", "all_results.json", "trainer_state.json",
                "training_args.bin")
_ARCHITECTURE_FIELDS = (
    "backbone", "image_size", "num_channels", "hidden_size", "num_hidden_layers", "num_downsamples", "patch_size",
    "block_out_channels", "layers_per_block", "norm_num_groups", "mid_block_add_attention", "pixel_range",
    "latent_dim", "latent_channels", "likelihood", "gaussian_variance", "kl_weight", "quantizer", "num_embeddings",
    "embedding_dim", "commitment_cost", "codebook_ema", "kmeans_init", "dead_code_threshold", "grid_size",
    "num_layers", "num_quantizers", "rotation_trick", "num_classes", "class_dropout", "vqvae_identity",
)
LATENT_SCALE_HEADING = "## Latent scale"


def load_model(name_or_path: str, what: str = "the model", config=None, expect: str | None = None):
    """The model in a run folder or Hub repository, in eval mode, loaded strictly: weights that do not match its
    config.json (missing, unexpected or reshaped tensors), empty or truncated weight files and NaN or infinite weights
    are refused with an error naming them, never filled with random layers. Anything else gets an error that says
    what to pass (`what` names the argument). A transformer prior over VQ codes (a causal LM) loads with
    `AutoModelForCausalLM`, everything else with `AutoModel`. `config` replaces the saved config (the same
    architecture, other settings); `expect="autoencoder"` refuses a prior, naming what to pass instead."""
    if Path(name_or_path).exists() and not (Path(name_or_path) / "config.json").is_file():
        raise FileNotFoundError(f"{what} {name_or_path} is not a model folder (no config.json): pass the --output_dir "
                                "of a finished training run, or a Hub id.")
    try:
        config = config or AutoConfig.from_pretrained(name_or_path)
    except OSError as err:
        offline = [name for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
                   if os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE")]
        if offline:
            raise FileNotFoundError(
                f"{what} {name_or_path} is neither a model folder nor a model in the Hub's cache, and "
                f"{' and '.join(offline)} {'are' if len(offline) > 1 else 'is'} set, so the Hub was not asked: unset "
                "it to download the model once (it is then cached), or pass the folder of a saved model.") from None
        raise FileNotFoundError(f"{what} {name_or_path} is neither a model folder nor a model on the Hub that can be "
                                f"reached ({' '.join(str(err).split())}).") from None
    except ValueError as err:  # a model type this version does not know
        raise ValueError(f"{what} {name_or_path} holds a model hf_autoencoders cannot load: {err}") from None
    if expect == "autoencoder" and not getattr(config, "family", None):
        kind = "transformer prior" if is_transformer_prior_config(config) else "PixelCNN prior"
        raise ValueError(f"{what} {name_or_path} is a {kind} (a prior over a VQ-VAE's codes), not an autoencoder: "
                         f"pass the VQ-VAE it was trained on as the model, and {name_or_path} as --prior.")
    if Path(name_or_path).is_dir():
        for weights in _weight_files(Path(name_or_path)):
            problem = safetensors_problem(weights)
            if problem:
                raise ValueError(f"{what} {name_or_path}: {weights.name} {problem}; it cannot be loaded. Save the "
                                 "model again (or resume its run from a checkpoint).")
    auto_class = AutoModelForCausalLM if is_transformer_prior_config(config) else AutoModel
    try:
        with _quiet("transformers.modeling_utils"):  # its load report: the error below says it all
            model, info = auto_class.from_pretrained(name_or_path, config=config, output_loading_info=True,
                                                     ignore_mismatched_sizes=True)
    except (SafetensorError, RuntimeError) as err:
        raise ValueError(f"{what} {name_or_path}: its weights cannot be read ({err}).") from None
    mismatches = _loading_mismatches(info)
    if mismatches:
        raise ValueError(f"{what} {name_or_path}: its weights do not match its config.json ({mismatches}), so those "
                         "layers would be random. Was config.json edited or the weights file replaced? Load the folder "
                         "as its run saved it.")
    nonfinite = [name for name, tensor in model.state_dict().items()
                 if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if nonfinite:
        raise ValueError(f"{what} {name_or_path} holds NaN or infinite weights ({_first(nonfinite)}): it cannot give "
                         "meaningful results. Use a checkpoint saved before its training diverged, or retrain it.")
    return model.eval()


def load_processor(name_or_path: str, config):
    """The image processor saved with the autoencoder at `name_or_path` (a run folder or Hub id): how the model's
    training images were preprocessed (size, channels, resampling, binarization), for everything that feeds it
    images afterwards. A model saved without one gets the processor of its config's image shape, without
    binarization."""
    from .models import AutoencoderImageProcessor

    folder = Path(name_or_path)
    saved = (folder / "preprocessor_config.json").is_file() if folder.exists() else True
    processor = None
    if saved:
        try:
            processor = AutoencoderImageProcessor.from_pretrained(name_or_path)
        except OSError:  # a Hub repository without one
            processor = None
    if processor is None:
        return AutoencoderImageProcessor(image_size=config.image_size, num_channels=config.num_channels)
    if (processor.image_size, processor.num_channels) != (config.image_size, config.num_channels):
        raise ValueError(f"{name_or_path}: its image processor takes {processor.num_channels}x{processor.image_size}"
                         f"x{processor.image_size} images, its model {config.num_channels}x{config.image_size}x"
                         f"{config.image_size}; one of preprocessor_config.json and config.json was edited.")
    return processor


def _first(names, count: int = 5) -> str:
    names = sorted(names)
    return ", ".join(names[:count]) + (f" and {len(names) - count} more" if len(names) > count else "")


def _loading_mismatches(info: dict) -> str:
    """What `from_pretrained(..., output_loading_info=True)` found amiss, in words ("" when nothing)."""
    parts = []
    if info.get("missing_keys"):
        parts.append(f"missing: {_first(info['missing_keys'])}")
    if info.get("unexpected_keys"):
        parts.append(f"unexpected: {_first(info['unexpected_keys'])}")
    mismatched = sorted(info.get("mismatched_keys") or [])
    if mismatched:
        shapes = [f"{name} {tuple(saved)} in the weights, {tuple(expected)} by config.json"
                  for name, saved, expected in mismatched[:3]]
        more = f" and {len(mismatched) - 3} more" if len(mismatched) > 3 else ""
        parts.append(f"other shapes: {'; '.join(shapes)}{more}")
    return "; ".join(parts + list(info.get("error_msgs") or []))


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files a model folder's weights are in (one, or the shards its index names)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            return [folder / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
        except (OSError, ValueError, KeyError, AttributeError):
            return [index]
    return [folder / "model.safetensors"] if (folder / "model.safetensors").exists() else []


def safetensors_problem(path) -> str | None:
    """What keeps `path` from being a complete safetensors file ("is empty", "is truncated ...", ...), or None: it
    must be as long as its header says (8 bytes of header length, the JSON header, then every tensor)."""
    path = Path(path)
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "is empty (0 bytes)"
        with open(path, "rb") as f:
            header_length = int.from_bytes(f.read(8), "little")
            if header_length > size - 8:
                return f"is truncated ({size} bytes, too short for its own header)"
            header = json.loads(f.read(header_length))
        end = 8 + header_length + max((entry["data_offsets"][1] for key, entry in header.items()
                                       if key != "__metadata__"), default=0)
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError, AttributeError):
        return "is not a safetensors file (its header is damaged)"
    if size != end:
        return f"is truncated or damaged ({size} bytes, its header announces {end})"
    return None


@contextlib.contextmanager
def _quiet(logger_name: str):
    """Drop the warnings of one logger (a filter: its level also decides what else transformers logs)."""
    logger = logging.getLogger(logger_name)
    drop = logging.Filter(name="\0none")  # matches no logger name: rejects every record
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def model_code_files(folder: Path) -> list[str]:
    """The Python files `save_pretrained` wrote beside the weights: the modules that the `auto_map` of config.json
    and preprocessor_config.json name and, recursively, the siblings they import (`from .x import y`)."""
    folder = Path(folder)
    references = []
    for name in ("config.json", "preprocessor_config.json"):
        try:
            references += json.loads((folder / name).read_text()).get("auto_map", {}).values()
        except (OSError, ValueError, AttributeError):
            continue
    pending = {reference.split("--")[-1].rsplit(".", 1)[0] for reference in references if isinstance(reference, str)}
    found = set()
    while pending:
        module = pending.pop()
        path = folder / f"{module}.py"
        if module in found or not path.is_file():
            continue
        found.add(module)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                pending.add(node.module)
    return sorted(f"{module}.py" for module in found)


def upload_files(folder, include_checkpoints: bool = False) -> list[str]:
    """The files of a run folder that belong in a model repository, relative to it: weights, config, model code,
    processor config, card and pictures. With `include_checkpoints`, each checkpoint-N/'s weights, config, code and
    trainer state too, never its pickled optimizer, scheduler or RNG states."""
    folder = Path(folder)
    files = {p.name for pattern in MODEL_FILES + CARD_FILES for p in folder.glob(pattern) if p.is_file()}
    files |= set(model_code_files(folder))
    if include_checkpoints:
        for checkpoint in sorted(folder.glob("checkpoint-*")):
            files |= {f"{checkpoint.name}/{name}" for name in upload_files(checkpoint) if not name.endswith(".png")}
            if (checkpoint / "trainer_state.json").is_file():
                files.add(f"{checkpoint.name}/trainer_state.json")
    return sorted(files)


def run_files(folder) -> list[Path]:
    """The files a training run wrote into `folder` (not its checkpoints or caches): the model (`MODEL_FILES` and its
    code), the card (README.md), its pictures and the results files; never a user's other files."""
    folder = Path(folder)
    names = [*MODEL_FILES, "README.md", *RUN_PICTURES, *RESULT_FILES]
    files = {p for pattern in names for p in folder.glob(pattern) if p.is_file()}
    return sorted(files | {folder / name for name in model_code_files(folder)})


# The card, a Jinja template filled by `ModelCard.from_template`. `kind` is "autoencoder", "pixelcnn" or "transformer";
# `name` is the repository (USAGE_PLACEHOLDER until it is known: `push_to_hub` then names it).
USAGE_PLACEHOLDER = "path/to/this/folder"
CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

A {{ description }} trained with `hf-autoencoders` on `{{ dataset }}`.
{%- if base_model %} It models the codes of `{{ base_model }}`.{% endif %}

## Usage

```python
{% if kind == "autoencoder" -%}
from transformers import AutoImageProcessor, AutoModel

model = AutoModel.from_pretrained("{{ name }}", trust_remote_code=True)
processor = AutoImageProcessor.from_pretrained("{{ name }}", trust_remote_code=True)
pixel_values = processor(images, return_tensors="pt").pixel_values  # images: PIL images or arrays
reconstruction = model(pixel_values).reconstruction
encoded = model.encode(pixel_values)  # .latent_dist (a VAE's q(z|x)) or .latents (AE, VQ-VAE)
samples = processor.postprocess(model.sample(16))  # PIL images
{%- else -%}
import torch
from transformers import AutoModel{% if kind == "transformer" %}, AutoModelForCausalLM{% endif %}

{% if kind == "transformer" -%}
prior = AutoModelForCausalLM.from_pretrained("{{ name }}")  # a GPT-2 over code tokens: no remote code
{%- else -%}
prior = AutoModel.from_pretrained("{{ name }}", trust_remote_code=True)
{%- endif %}
{% if vqvae_id -%}
vqvae = AutoModel.from_pretrained("{{ vqvae_id }}", trust_remote_code=True)  # the VQ-VAE it was trained on
{%- else -%}
# The VQ-VAE it was trained on (identity {{ vqvae_identity }}): push it first (hf-autoencoders push VQVAE_DIR
# your-name/vqvae) and load it by its Hub id.
vqvae = AutoModel.from_pretrained("your-name/vqvae", trust_remote_code=True)
{%- endif %}
{% if num_classes -%}
# One sample of each class{% if guidance %} (classifier-free guidance: guidance_scale, default {{ guidance }}){% endif %}
images = vqvae.sample({{ num_classes }}, generator=torch.Generator().manual_seed(0), prior=prior,
                      class_labels=list(range({{ num_classes }}))){% if labels %}  # {{ labels }}{% endif %}
{%- else -%}
images = vqvae.sample(16, generator=torch.Generator().manual_seed(0), prior=prior)
{%- endif %}
{%- endif %}
```

It needs `transformers>=5` and `torch`.
{%- if kind != "transformer" %} `trust_remote_code=True` runs the model code saved in this repository; with
`pip install hf-autoencoders` and `import hf_autoencoders`, it is not needed.{% endif %}
{%- if kind != "autoencoder" %} `vqvae.sample` checks that the prior was trained on this VQ-VAE's codes (the
identity its config records).{% endif %}
{% if kind == "transformer" %}
Tokens 0 .. K-1 are the VQ-VAE's codes in raster order, K is the start token and K+1+y the token of class y
{%- if guidance %}; K+1+C is the null class of classifier-free guidance{% endif %}
(`hf_autoencoders.models.code_priors`).
{% endif %}{%- if kind == "transformer" and num_quantizers > 1 %}
The VQ-VAE quantizes residually at depth n = {{ num_quantizers }}: each position has n codes, modelled depth-first
within each position; depth d's code c is the token d K + c, the start token is n K and class y is n K + 1 + y.
{% endif %}
## Architecture

| field | value |
|---|---|
{% for field, value in architecture.items() -%}
| `{{ field }}` | {{ value }} |
{% endfor %}
{%- if latent_scale %}
{{ latent_scale }}
{%- endif %}
{%- if training %}
## Training

The hyperparameters, and the figures measured while training (on the training data: not test metrics).

| | value |
|---|---|
{% for field, value in training.items() -%}
| `{{ field }}` | {{ value }} |
{% endfor %}
{%- endif %}
{%- if recipe %}
## Tokenizer recipe
{% for paragraph in recipe %}
{{ paragraph }}
{% endfor %}
{%- endif %}
## Results

{% if results -%}
Measured on the test split of `{{ dataset }}` ({{ num_examples }} images).

| metric | value |
|---|---|
{% for metric, value in results.items() -%}
| {{ metric }} | {{ value }} |
{% endfor %}
{%- if quality_features %}
The `*_fd_*`, `*_kid_*`, precision, recall, density and coverage figures compare the test images with their
reconstructions and with as many samples, in {{ quality_features }}. FD is biased upwards at small N: compare FDs only
at equal `quality_num_real` and `quality_num_samples`; KID is unbiased.
{% endif %}
{%- if generability %}
The `generability_*` figures say how well this VQ-VAE's codes can be generated
(`hf_autoencoders.training.generability`): {{ generability }}. Compare them between VQ-VAEs of the same data at the same budget, beside the reconstruction
figures: a VQ-VAE that reconstructs better does not always generate better.
{% endif %}
{%- for weights, values in beside.items() %}
### The {{ weights }} weights

{% if weights == "trained" -%}
The weights of this repository are the exponential moving average of the trained weights; the trained weights
themselves measured:
{%- else -%}
The exponential moving average of the weights (not the weights of this repository) measured:
{%- endif %}

| metric | value |
|---|---|
{% for metric, value in values.items() -%}
| {{ metric }} | {{ value }} |
{% endfor %}
{%- endfor %}
{%- else -%}
No test metrics were measured: this run was made without `--do_eval`, so the card holds the figures of training only.
{%- if kind == "autoencoder" %} `hf-autoencoders evaluate` measures them.{% endif %}
{% endif %}
{%- for title, file in pictures.items() %}
## {{ title }}

![{{ title }}]({{ file }})
{% endfor %}"""


def recipe_paragraphs(recipe: dict) -> list[str]:
    """What a card says about the tokenizer recipe a model was trained with (`TokenizerRecipe.description()`): the
    perceptual term and its network, the discriminator and what the collapse guard saw, which weights were saved."""
    r = {k: _format(v) for k, v in recipe.items()}
    paragraphs = []
    if "perceptual_network" in recipe:
        name = recipe["perceptual_network"]
        kind = "" if name == "lpips" else (": these are not LPIPS values, and compare only with figures of the same "
                                           "network on the same data")
        paragraphs.append(f"**Perceptual term** (weight {r['perceptual_weight']}): the `{name}` network, "
                          f"{recipe['perceptual_network_description']}. The `perceptual_{name}` figures below are "
                          f"distances on it{kind}.")
    if "disc_weight" in recipe:
        weight = f"{r['disc_weight']} times the adaptive weight" if recipe["adaptive_weight"] else r["disc_weight"]
        text = (f"**Discriminator**: a PatchGAN of {r['disc_num_layers']} layers from {r['disc_channels']} channels, "
                f"{recipe['disc_loss']} loss, weight {weight}, from step {r['disc_start']} (not part of this "
                f"repository). While it trained, the PSNR of a fixed batch of held-out images was watched: ")
        if recipe.get("gan_collapse_events"):
            text += (f"it fell more than {r['gan_guard_margin_db']} dB below its {r['gan_reference_psnr']} dB of step "
                     f"{r['gan_reference_step']} at {r['gan_collapse_events']} checks, first at step "
                     f"{r['gan_first_collapse_step']}, by up to {r['gan_worst_psnr_drop_db']} dB (the guard's action: "
                     f"{recipe['gan_guard_action']}).")
        elif recipe.get("gan_reference_psnr") is not None:
            text += (f"it never fell more than {r['gan_guard_margin_db']} dB below its {r['gan_reference_psnr']} dB of "
                     f"step {r['gan_reference_step']}.")
        else:
            text += "the run ended before the discriminator started."
        paragraphs.append(text)
    if "model_ema_decay" in recipe:
        saved = ("these are the weights of this repository" if recipe.get("saved_weights") == "ema" else
                 "the trained weights are those of this repository")
        paragraphs.append(f"**EMA of the weights** (decay {r['model_ema_decay']}, {r['ema_num_updates']} updates): "
                          f"{saved}; the test metrics of both are below.")
    return paragraphs


def _format(value) -> str:
    value = getattr(value, "value", value)  # enums such as SchedulerType
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _guidance(config) -> str | None:
    """The default guidance scale of a prior that can be guided, for its card; None for one that cannot."""
    from .models.code_priors import DEFAULT_GUIDANCE_SCALE, null_class_token

    return f"{DEFAULT_GUIDANCE_SCALE:g}" if null_class_token(config) is not None else None


def _class_names(config) -> str | None:
    """"0 = airplane, 1 = automobile, ..." from a prior's id2label, where it records class names."""
    names = getattr(config, "id2label", None) or {}
    if not names or len(names) != getattr(config, "num_classes", 0) or all(str(k) == str(v) for k, v in names.items()) \
            or any(str(v).startswith("LABEL_") for v in names.values()):
        return None
    return ", ".join(f"{k} = {v}" for k, v in sorted(names.items(), key=lambda item: int(item[0])))


def _hub_id(name: str | None) -> str | None:
    """`name` if it can be a Hub repository id (owner/name, not a local path), else None."""
    if not name or Path(name).exists() or name.count("/") != 1 or name.startswith((".", "/")):
        return None
    return name


def public_name(name: str | None) -> str | None:
    """How a card names a dataset or model: its Hub id, or for a local folder only the folder's own name (a card
    never shows where a user keeps files)."""
    if not name or _hub_id(name):
        return name
    return Path(name).name if Path(name).exists() or "/" in name or "\\" in name else name


def _measured_quality(name: str, value: float) -> bool:
    """Whether a test figure belongs in the card's model-index: a measure of the model, not a count (`num_examples`,
    `quality_num_real`, `iwae_num_samples`, ...), a spread (`kid_std`) or a loss it does not train (an EMA
    codebook's or FSQ's `codebook_loss`, 0 by construction). The results table keeps every figure."""
    return not ("num_" in name or "_std" in name or (name.endswith("_loss") and value == 0.0))


def write_model_card(
    output_dir: str | Path,
    config,
    dataset_name: str,
    metrics: dict | None = None,
    *,
    training: dict | None = None,
    pictures: dict[str, str] | None = None,
    repo_id: str | None = None,
    license: str | None = None,
    base_model: str | None = None,
    latent_scale: dict | None = None,
    recipe: dict | None = None,
) -> Path:
    """Write the model card, `README.md` in `output_dir`, of an autoencoder or a prior over a VQ-VAE's codes (what
    `config` is), with huggingface_hub's `ModelCard` and `CARD_TEMPLATE`: metadata (library, tags, license, the
    dataset and `base_model` where they are Hub ids, a `model-index` holding the test metrics), how to use the model,
    its architecture, its latents' scaling and shift factors and how they were measured (`latent_scale`, what
    `evaluation.scaling_factors` returns), how it was trained (`training`: hyperparameters and figures of training),
    the test `metrics` (the numbers of one evaluation, a leading `eval_` dropped from their names; without them the
    card says that none were measured), and the `pictures` (title -> file in `output_dir`). `recipe` (the tokenizer
    recipe's `TokenizerRecipe.description()`) adds what it trained with, which weights were saved and what its
    collapse guard recorded; the metrics of the other set of weights (`trained_*` or `ema_*`) get their own table,
    out of the model-index. Returns the card's path."""
    output_dir = Path(output_dir)
    if getattr(config, "family", None):
        kind, description = "autoencoder", f"{config.display_name} ({config.backbone} backbone)"
    elif is_transformer_prior_config(config):
        kind, description = "transformer", "transformer prior (GPT-2 backbone)"
    else:
        kind, description = "pixelcnn", f"{config.display_name} (autoregressive backbone)"
    metrics = {name.removeprefix("eval_"): value for name, value in (metrics or {}).items()}
    beside = {}  # the other set of weights of a run with an EMA: not this model's figures
    for weights in ("trained", "ema"):
        values = {name: metrics.pop(name) for name in [n for n in metrics if n.startswith(f"{weights}_")]}
        values = {name.removeprefix(f"{weights}_"): _format(float(v)) for name, v in sorted(values.items())
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        if values:
            beside[weights] = values
    numeric = {k: float(v) for k, v in sorted(metrics.items())
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    dataset_id, dataset = _hub_id(dataset_name), public_name(str(dataset_name))
    eval_results = [
        EvalResult(task_type="image-to-image" if kind == "autoencoder" else "unconditional-image-generation",
                   dataset_type=dataset, dataset_name=dataset, dataset_split="test", metric_type=key,
                   metric_name=key, metric_value=value)
        for key, value in numeric.items() if _measured_quality(key, value)
    ]
    # transformers 5 has no pipeline for autoencoders (the usage snippet shows the calls); a prior is tagged as the
    # image generator it is, not with the text-generation widget a GPT-2 config would invite
    pipeline_tag = None if kind == "autoencoder" else "unconditional-image-generation"
    card_data = ModelCardData(
        model_name=repo_id or output_dir.name,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        inference=False,  # no inference widget: as the Hub's VAE cards say
        tags=["hf-autoencoders", "autoencoder", description.split(" (")[0].lower().replace(" ", "-"), "image",
              *([config.backbone] if kind == "autoencoder" else [])],
        datasets=[dataset_id] if dataset_id else None,
        base_model=_hub_id(base_model),
        license=license,
        eval_results=eval_results or None,
    )
    card = ModelCard.from_template(
        card_data, template_str=CARD_TEMPLATE, kind=kind, description=description, dataset=dataset,
        name=repo_id or USAGE_PLACEHOLDER, base_model=public_name(base_model), base_model_id=_hub_id(base_model),
        architecture=_architecture(config, kind),
        latent_scale=latent_scale_section(latent_scale, dataset) if latent_scale else None,
        training={k: _format(v) for k, v in (training or {}).items()},
        results={k: _format(v) for k, v in numeric.items()}, num_examples=int(numeric.get("num_examples", 0)) or "all",
        quality_features=metrics.get("quality_features"), generability=metrics.get("generability_prior"),
        pictures=pictures or {}, beside=beside,
        recipe=recipe_paragraphs(recipe) if recipe else [], num_quantizers=getattr(config, "num_quantizers", 1),
        vqvae_id=_hub_id(getattr(config, "vqvae_name_or_path", None)),
        vqvae_identity=getattr(config, "vqvae_identity", None) or "not recorded",
        num_classes=getattr(config, "num_classes", 0) if kind != "autoencoder" else 0,
        guidance=_guidance(config) if kind == "transformer" else None, labels=_class_names(config),
    )
    path = output_dir / "README.md"
    card.save(path)
    return path


def _architecture(config, kind: str) -> dict[str, str]:
    """The fields of the card's Architecture table: those an autoencoder's config.json names (not the fields of
    another backbone), those a prior's config holds."""
    written = config.to_diff_dict() if kind == "autoencoder" else None
    return {field: _format(tuple(value) if isinstance(value, list) else value)
            for field in _ARCHITECTURE_FIELDS
            if (value := getattr(config, field, None)) is not None and (written is None or field in written)}


def latent_scale_section(factors: dict, dataset_name: str) -> str:
    """The card's section on the latents' scaling and shift factors and how they were measured (`factors`: what
    `evaluation.scaling_factors` returns)."""
    lines = [
        LATENT_SCALE_HEADING, "",
        "A diffusion model on these latents trains on `(z - shift_factor) * scaling_factor` and decodes its own with "
        "`model.decode(latents / scaling_factor + shift_factor)`; `hf-autoencoders export RUN OUT --to diffusers` "
        "carries both into diffusers' config.", "",
        "| | value |", "|---|---|",
        f"| `scaling_factor` | {_format(factors['scaling_factor'])} |",
        f"| `shift_factor` | {_format(factors['shift_factor'])} |", "",
        f"Measured on the {factors.get('latents', 'latents')} of the {factors['num_train_images']} training images of "
        f"`{dataset_name}` ({factors['num_train_values']} values, streamed in batches): `shift_factor` is their mean "
        "and `scaling_factor` 1 / their standard deviation.",
    ]
    if "scaled_test_std" in factors:
        lines[-1] += (f" On the {factors['num_test_images']} test images, the scaled latents have mean "
                      f"{_format(factors['scaled_test_mean'])} and standard deviation "
                      f"{_format(factors['scaled_test_std'])}.")
    return "\n".join(lines) + "\n"


def write_latent_scale(folder: str | Path, factors: dict) -> Path:
    """Set `scaling_factor` and `shift_factor` in the config.json of a model folder, every other field as it was,
    written atomically (in transformers' format)."""
    path = Path(folder) / "config.json"
    config = json.loads(path.read_text())
    config.update(scaling_factor=factors["scaling_factor"], shift_factor=factors["shift_factor"])
    return write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def update_card_latent_scale(folder: str | Path, factors: dict, dataset_name: str) -> Path | None:
    """Put `latent_scale_section` into the card of a run folder, in place of the one it holds, else before its
    Training or Results section (written whole or not at all); None where the folder has no card."""
    path = Path(folder) / "README.md"
    if not path.is_file():
        return None
    text = path.read_text()
    section = latent_scale_section(factors, dataset_name)
    start = text.find(LATENT_SCALE_HEADING + "\n")
    if start >= 0:
        end = text.find("\n## ", start + len(LATENT_SCALE_HEADING))
        text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
    else:
        anchor = next((i for i in (text.find("\n## Training\n"), text.find("\n## Results\n")) if i >= 0), len(text))
        text = text[:anchor + 1] + section + text[anchor + 1:]
    return write_text(path, text)


class HubUploadError(ConnectionError):
    """An upload to the Hub failed (no network, offline mode, no permission, ...); what was to be uploaded is intact."""


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload autoencoder trained with hf_autoencoders",
    api: HfApi | None = None,
    include_checkpoints: bool = False,
    path_in_repo: str | None = None,
) -> str:
    """Upload the model files of a run folder (`upload_files`) to `repo_id`, its card first naming `repo_id`
    (`name_card`). Returns the commit URL; a failed upload raises `HubUploadError`, saying why and what to do."""
    folder = Path(folder)
    missing = [f for f in ("config.json", "model.safetensors") if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a trained model folder (missing {', '.join(missing)}); pass the "
                                "--output_dir of a finished training run.")
    api = api or HfApi(token=token)
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True, token=token)
        if path_in_repo is None:
            name_card(folder, getattr(repo, "repo_id", None) or repo_id)  # the full id: owner/name
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, path_in_repo=path_in_repo,
                                   allow_patterns=upload_files(folder, include_checkpoints),
                                   commit_message=commit_message, token=token)
    except Exception as err:  # the network, the Hub or the account: whatever it is, nothing local was changed
        raise HubUploadError(f"could not upload {folder} to {repo_id} ({type(err).__name__}: "
                             f"{str(err).strip().splitlines()[0] if str(err).strip() else 'no details'}). "
                             f"{_upload_hint(err)}") from err
    return str(getattr(commit, "commit_url", commit))


def _upload_hint(err: Exception) -> str:
    status = getattr(getattr(err, "response", None), "status_code", None)
    if "offline" in str(err).lower() or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set: unset it to upload."
    if status in (401, 403):
        return "Log in with `hf auth login`, or pass a token with write access (--token or --hub_token)."
    return "Check the network and the repository id, then try again."


def name_card(folder: str | Path, repo_id: str) -> None:
    """Make the card a run wrote (`write_model_card`) name the repository it is pushed to: its title, the
    model-index and the usage snippet, which said `USAGE_PLACEHOLDER` (or another repository) until now. Cards that
    this library did not write are left alone."""
    path = Path(folder) / "README.md"
    if not path.is_file():
        return
    card = ModelCard.load(path)
    old = card.data.model_name
    if "hf-autoencoders" not in (card.data.tags or []) or old == repo_id:
        return
    text = card.text.replace(f'"{USAGE_PLACEHOLDER}"', f'"{repo_id}"')
    if old:
        text = text.replace(f'from_pretrained("{old}"', f'from_pretrained("{repo_id}"')
        text = text.replace(f"# {old}\n", f"# {repo_id}\n", 1)
    card.text, card.data.model_name = text, repo_id
    card.save(path)


class HubPushCallback(TrainerCallback):
    """Pushes while training, as `--hub_strategy` says (the finished folder, with its card, is pushed at the end):
    "every_save" uploads each saved checkpoint's model to the repository's root, "checkpoint" also keeps it in
    `last-checkpoint/`, "all_checkpoints" each one in its own `checkpoint-N/`. Only allow-listed files go up. An
    upload that fails (no network, ...) is reported and never stops training; the next save uploads again, the
    newer checkpoint in place of the one that failed (with "all_checkpoints", also each failed one still there)."""

    def __init__(self, repo_id: str, strategy: str, token: str | None = None, private: bool | None = None, api=None):
        self.repo_id, self.strategy = repo_id, str(getattr(strategy, "value", strategy))
        self.token, self.private, self.api = token, private, api
        self.failed: list[tuple[Path, str | None]] = []  # (checkpoint, path in the repository) still to upload

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not (checkpoint / "model.safetensors").is_file():
            return
        targets = {"every_save": [None], "checkpoint": [None, "last-checkpoint"],
                   "all_checkpoints": [None, checkpoint.name]}.get(self.strategy, [])
        retries = [(folder, where) for folder, where in self.failed if where is not None and where == folder.name
                   and (folder / "model.safetensors").is_file()]  # all_checkpoints: a rotated-out one is gone
        self.failed = []
        for folder, path_in_repo in [*retries, *((checkpoint, where) for where in targets)]:
            try:
                push_to_hub(folder, self.repo_id, token=self.token, private=self.private, api=self.api,
                            path_in_repo=path_in_repo, commit_message=f"Training in progress, step {state.global_step}")
            except HubUploadError as err:
                self.failed.append((folder, path_in_repo))
                logger.warning("%s Training goes on; the next save uploads again.", err)

