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
    "latent_dim", "likelihood", "gaussian_variance", "kl_weight", "quantizer", "num_embeddings", "embedding_dim",
    "commitment_cost", "codebook_ema", "kmeans_init", "dead_code_threshold", "grid_size", "num_layers",
)


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
        raise FileNotFoundError(f"{what} {name_or_path} is neither a model folder nor a model on the Hub that can be "
                                f"reached ({err}).") from None
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


# The card, a Jinja template filled by `ModelCard.from_template`. `kind` is "autoencoder", "pixelcnn" or "transformer".
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
samples = model.sample(16)
{%- elif kind == "pixelcnn" -%}
import torch
from transformers import AutoModel

prior = AutoModel.from_pretrained("{{ name }}", trust_remote_code=True)
vqvae = AutoModel.from_pretrained("path/to/the/vqvae", trust_remote_code=True)  # the one it was trained on
images = vqvae.sample(16, generator=torch.Generator().manual_seed(0), prior=prior)
{%- else -%}
import torch
from transformers import AutoModel, AutoModelForCausalLM

prior = AutoModelForCausalLM.from_pretrained("{{ name }}")  # a GPT-2 over code tokens: no remote code
vqvae = AutoModel.from_pretrained(prior.config.vqvae_name_or_path, trust_remote_code=True)
images = vqvae.sample(16, generator=torch.Generator().manual_seed(0), prior=prior, top_k=100)
{%- endif %}
```

It needs `transformers>=5` and `torch`.
{%- if kind != "transformer" %} `trust_remote_code=True` runs the model code saved in this repository; with
`pip install hf-autoencoders` and `import hf_autoencoders.models`, it is not needed.{% endif %}
{% if kind == "transformer" %}
Tokens 0 .. K-1 are the VQ-VAE's codes in raster order, K is the start token and K+1+y the token of class y
(`hf_autoencoders.models.code_priors`).
{% endif %}
## Architecture

| field | value |
|---|---|
{% for field, value in architecture.items() -%}
| `{{ field }}` | {{ value }} |
{% endfor %}
{%- if training %}
## Training

The hyperparameters, and the figures measured while training (on the training data: not test metrics).

| | value |
|---|---|
{% for field, value in training.items() -%}
| `{{ field }}` | {{ value }} |
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
{%- else -%}
No test metrics were measured: this run was made without `--do_eval`, so the card holds the figures of training only.
{%- if kind == "autoencoder" %} `hf-autoencoders evaluate` measures them.{% endif %}
{% endif %}
{%- for title, file in pictures.items() %}
## {{ title }}

![{{ title }}]({{ file }})
{% endfor %}"""


def _format(value) -> str:
    value = getattr(value, "value", value)  # enums such as SchedulerType
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _hub_id(name: str | None) -> str | None:
    """`name` if it can be a Hub repository id (owner/name, not a local path), else None."""
    if not name or Path(name).exists() or name.count("/") != 1 or name.startswith((".", "/")):
        return None
    return name


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
) -> Path:
    """Write the model card, `README.md` in `output_dir`, of an autoencoder or a prior over a VQ-VAE's codes (what
    `config` is), with huggingface_hub's `ModelCard` and `CARD_TEMPLATE`: metadata (library, tags, license, the
    dataset and `base_model` where they are Hub ids, a `model-index` holding the test metrics), how to use the model,
    its architecture, how it was trained (`training`: hyperparameters and figures of training), the test `metrics`
    (the numbers of one evaluation, a leading `eval_` dropped from their names; without them the card says that none
    were measured), and the `pictures` (title -> file in `output_dir`). Returns the card's path."""
    output_dir = Path(output_dir)
    if getattr(config, "family", None):
        kind, description = "autoencoder", f"{config.display_name} ({config.backbone} backbone)"
    elif is_transformer_prior_config(config):
        kind, description = "transformer", "transformer prior (GPT-2 backbone)"
    else:
        kind, description = "pixelcnn", f"{config.display_name} (autoregressive backbone)"
    metrics = {name.removeprefix("eval_"): value for name, value in (metrics or {}).items()}
    numeric = {k: float(v) for k, v in sorted(metrics.items())
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    dataset_id = _hub_id(dataset_name)
    eval_results = [
        EvalResult(task_type="image-to-image" if kind == "autoencoder" else "unconditional-image-generation",
                   dataset_type=dataset_id or Path(str(dataset_name)).name, dataset_name=str(dataset_name),
                   dataset_split="test", metric_type=key, metric_name=key, metric_value=value)
        for key, value in numeric.items() if key != "num_examples"
    ]
    card_data = ModelCardData(
        model_name=repo_id or output_dir.name,
        library_name="transformers",
        pipeline_tag=None,  # transformers 5 has no pipeline for autoencoders; the usage snippet shows the calls
        tags=["hf-autoencoders", "autoencoder", description.split(" (")[0].lower().replace(" ", "-"), "image",
              *([config.backbone] if kind == "autoencoder" else [])],
        datasets=[dataset_id] if dataset_id else None,
        base_model=_hub_id(base_model),
        license=license,
        eval_results=eval_results or None,
    )
    card = ModelCard.from_template(
        card_data, template_str=CARD_TEMPLATE, kind=kind, description=description, dataset=dataset_name,
        name=repo_id or "path/to/this/folder", base_model=base_model,
        architecture={f: _format(getattr(config, f)) for f in _ARCHITECTURE_FIELDS
                      if getattr(config, f, None) is not None},
        training={k: _format(v) for k, v in (training or {}).items()},
        results={k: _format(v) for k, v in numeric.items()}, num_examples=int(numeric.get("num_examples", 0)) or "all",
        quality_features=metrics.get("quality_features"), pictures=pictures or {},
    )
    path = output_dir / "README.md"
    card.save(path)
    return path


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
    """Upload the model files of a run folder (`upload_files`) to `repo_id`. Returns the commit URL; a failed upload
    raises `HubUploadError`, saying why and what to do."""
    folder = Path(folder)
    missing = [f for f in ("config.json", "model.safetensors") if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a trained model folder (missing {', '.join(missing)}); pass the "
                                "--output_dir of a finished training run.")
    api = api or HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, token=token)
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

