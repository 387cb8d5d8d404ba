"""Sharing a trained model: a model card written from the run, and an upload of the whole folder.

A run folder holds everything the Hub needs: `model.safetensors`, `config.json` (with the `auto_map` that points at
the model code saved beside it), `preprocessor_config.json`, the pictures and `README.md` (the card). Uploading it
as is lets anyone load it with `AutoModel.from_pretrained(repo_id, trust_remote_code=True)`, no package needed.
"""

import json
from pathlib import Path

from huggingface_hub import HfApi, ModelCard, ModelCardData

# Files of a run folder that are not part of the shared model.
UPLOAD_IGNORE = ["checkpoint-*", "checkpoint-*/**", "runs/**", "*.pt", "*.bin", "training_args.bin"]

_ARCHITECTURE_FIELDS = (
    "backbone", "image_size", "num_channels", "hidden_size", "num_hidden_layers", "num_downsamples", "patch_size",
    "latent_dim", "likelihood", "gaussian_variance", "kl_weight", "quantizer", "num_embeddings", "embedding_dim",
    "commitment_cost", "codebook_ema", "kmeans_init", "dead_code_threshold", "grid_size", "num_layers",
)


def _format(value) -> str:
    value = getattr(value, "value", value)  # enums such as SchedulerType
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def autoencoder_usage(name: str) -> list[str]:
    """The card's usage snippet for an autoencoder repository `name`."""
    return [
        "```python",
        "from transformers import AutoImageProcessor, AutoModel",
        "",
        f'model = AutoModel.from_pretrained("{name}", trust_remote_code=True)',
        f'processor = AutoImageProcessor.from_pretrained("{name}", trust_remote_code=True)',
        'pixel_values = processor(images, return_tensors="pt").pixel_values  # images: PIL images or arrays',
        "reconstruction = model(pixel_values).reconstruction",
        "latents = model.encode(pixel_values)  # .latent_dist (VAE) or .latents (AE, VQ-VAE)",
        "images = model.decode(latents.latents).sample  # AE and VQ-VAE; a VAE decodes latents.latent_dist.sample()",
        "```",
        "",
        "`trust_remote_code=True` runs the model code saved in this repository; with `pip install hf-autoencoders` "
        "and `import hf_autoencoders`, it is not needed.",
    ]


def write_model_card(
    output_dir: str | Path,
    config,
    metrics: dict,
    dataset_name: str,
    hyperparameters: dict | None = None,
    pictures: dict[str, str] | None = None,
    repo_id: str | None = None,
    usage=autoencoder_usage,
    pipeline_tag: str | None = "image-to-image",
) -> Path:
    """Write `README.md` in `output_dir`: what the model is, how it was trained, the metrics measured on the test
    split, pictures, and a usage snippet (`usage(repo_id)` gives its lines). Returns the card's path."""
    family = getattr(config, "display_name", config.model_type)
    tag = family.lower().replace(" ", "-")
    backbone = getattr(config, "backbone", None)
    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=["hf-autoencoders", "autoencoder", tag, "image", *([backbone] if backbone else [])],
        # Only Hub ids belong in the card's metadata, not local folders.
        datasets=[dataset_name] if dataset_name and "/" in dataset_name and not Path(dataset_name).exists() else None,
        license="apache-2.0",
    )
    name = repo_id or Path(output_dir).name
    architecture = {f: getattr(config, f) for f in _ARCHITECTURE_FIELDS if getattr(config, f, None) is not None}
    lines = [
        f"# {name}",
        "",
        f"A {family} ({backbone or 'autoregressive'} backbone) trained with "
        f"`hf_autoencoders` on `{dataset_name}`.",
        "",
        "## Usage",
        "",
        *usage(repo_id or "path/to/this/folder"),
        "",
        "## Architecture",
        "",
        "| field | value |",
        "|---|---|",
        *[f"| `{k}` | {_format(v)} |" for k, v in architecture.items()],
        "",
    ]
    if hyperparameters:
        lines += ["## Training", "", "| hyperparameter | value |", "|---|---|"]
        lines += [f"| `{k}` | {_format(v)} |" for k, v in hyperparameters.items()] + [""]
    if numeric:
        lines += ["## Results", "", f"Measured on the test split of `{dataset_name}`.", "",
                  "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_format(v)} |" for k, v in sorted(numeric.items())] + [""]
    for title, file in (pictures or {}).items():
        lines += [f"## {title}", "", f"![{title}]({file})", ""]
    card = ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines))
    path = Path(output_dir) / "README.md"
    card.save(path)
    (Path(output_dir) / "eval_results.json").write_text(json.dumps(numeric, indent=2) + "\n")
    return path


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload autoencoder trained with hf_autoencoders",
    api: HfApi | None = None,
) -> str:
    """Upload a run folder (weights, config, code, processor, card, pictures; no checkpoints) to `repo_id`.
    Returns the commit URL."""
    folder = Path(folder)
    missing = [f for f in ("config.json", "model.safetensors") if not (folder / f).is_file()]
    if missing:
        raise ValueError(f"{folder} is not a trained model folder (missing {', '.join(missing)}); "
                         "pass the --output_dir of a finished training run.")
    api = api or HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, token=token)
    commit = api.upload_folder(
        repo_id=repo_id, folder_path=folder, commit_message=commit_message, ignore_patterns=UPLOAD_IGNORE,
        token=token,
    )
    return str(getattr(commit, "commit_url", commit))
