"""One training run, from arguments to a saved, documented model: what `examples/train_*.py` and
`hf-autoencoders train` call.

    model_args, data_args, training_args = parse_args(model_type="vqvae")
    metrics = run_training(model_args, data_args, training_args)
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModel, HfArgumentParser, TrainingArguments, set_seed

from .data import ImageCollator, load_image_dataset
from .hub import push_to_hub
from .models import MODEL_CLASSES
from .reports import write_run_outputs
from .trainer import AutoencoderTrainer

FAMILIES = {"ae": "hf_autoencoders_ae", "vae": "hf_autoencoders_vae", "vqvae": "hf_autoencoders_vqvae"}


@dataclass
class ModelArguments:
    """Which model to train. Any other config field can be set with --config_overrides."""

    model_type: str = field(default="vqvae", metadata={"help": "ae, vae or vqvae."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Start from this trained model (a folder or Hub id) instead of a new one."}
    )
    backbone: str = field(default="conv", metadata={"help": "mlp, conv or vit."})
    latent_dim: int | None = field(default=None, metadata={"help": "AE/VAE latent size."})
    hidden_size: int | None = field(default=None, metadata={"help": "Backbone width."})
    likelihood: str | None = field(default=None, metadata={"help": "gaussian, bernoulli or discretized_logistic."})
    kl_weight: float | None = field(default=None, metadata={"help": "VAE beta."})
    num_embeddings: int | None = field(default=None, metadata={"help": "VQ-VAE codebook size K."})
    embedding_dim: int | None = field(default=None, metadata={"help": "VQ-VAE code dimension d."})
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Other config fields, e.g. 'codebook_ema=true,kmeans_init=true,dead_code_threshold=20'."},
    )

    def __post_init__(self):
        if self.model_type not in FAMILIES:
            raise ValueError(f"--model_type {self.model_type!r} is not known; use one of {sorted(FAMILIES)}.")


@dataclass
class DataArguments:
    """Which images to train on."""

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "A Hub id (ylecun/mnist), a local folder, or nothing for the embedded digits (no network)."},
    )
    image_column: str | None = field(default=None, metadata={"help": "Image column (found by type if not given)."})
    label_column: str | None = field(default=None, metadata={"help": "Label column (found by type if not given)."})
    image_size: int | None = field(default=None, metadata={"help": "Resize images to this size."})
    num_channels: int | None = field(default=None, metadata={"help": "1 (grayscale) or 3 (RGB)."})
    binarize: bool = field(default=False, metadata={"help": "Threshold pixels at 0.5 (for a Bernoulli likelihood)."})
    stochastic_binarization: bool = field(
        default=False,
        metadata={"help": "With --binarize, draw pixels ~ Bernoulli(intensity) afresh for every batch (dynamic "
                  "binarization, as in the IWAE paper) instead of thresholding."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training images."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N test images."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing into an output_dir that already holds files."}
    )

    def __post_init__(self):
        if self.stochastic_binarization and not self.binarize:
            raise ValueError("--stochastic_binarization only applies with --binarize; pass both.")


@dataclass
class AutoencoderTrainingArguments(TrainingArguments):
    """`TrainingArguments` with defaults that suit autoencoders on small images."""

    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate."})
    per_device_train_batch_size: int = field(default=128, metadata={"help": "Batch size per device."})
    per_device_eval_batch_size: int = field(default=256, metadata={"help": "Eval batch size per device."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    logging_steps: float = field(default=50, metadata={"help": "Log every N steps."})
    save_steps: float = field(default=500, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep the last N checkpoints."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Must stay False for image inputs."})
    channels_last: bool | None = field(
        default=None,
        metadata={"help": "Keep 4-d weights, and so the convolutions' activations, in channels-last memory order. "
                  "Default: on for the conv backbone on CPU, where it trains 8-12% faster (benchmarks/README.md)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if not torch.cuda.is_available():  # pinned memory only helps host-to-GPU copies
            self.dataloader_pin_memory = False


def fit(model, train_dataset, eval_dataset=None, *, output_dir, collator=None, **training_kwargs):
    """Train `model` on a dataset with `AutoencoderTrainer` and return the trainer, for use from Python (studies,
    benchmarks, notebooks). `training_kwargs` are `TrainingArguments` fields (max_steps, learning_rate, ...);
    nothing is checkpointed unless `save_strategy` says so.

        trainer = fit(VAEModel(VAEConfig()), data.train, data.test, output_dir="runs/vae", max_steps=500)
    """
    defaults = dict(save_strategy="no", logging_steps=50, disable_tqdm=True, report_to="none")
    args = AutoencoderTrainingArguments(output_dir=str(output_dir), **{**defaults, **training_kwargs})
    trainer = AutoencoderTrainer(
        model=model, args=args, data_collator=collator or ImageCollator(), train_dataset=train_dataset,
        eval_dataset=eval_dataset,
    )
    trainer.train()
    return trainer


def parse_args(args: list[str] | None = None, model_type: str | None = None):
    """Parse command-line flags into (ModelArguments, DataArguments, AutoencoderTrainingArguments)."""
    parser = HfArgumentParser((ModelArguments, DataArguments, AutoencoderTrainingArguments))
    if model_type is not None:
        parser.set_defaults(model_type=model_type)
    return parser.parse_args_into_dataclasses(args=args)


def check_output_dir(output_dir: str, overwrite: bool, resume_from_checkpoint) -> None:
    """Refuse to write into a folder that already holds a user's files, unless asked to."""
    path = Path(output_dir)
    if not path.exists() or overwrite or resume_from_checkpoint:
        return
    if not path.is_dir():
        raise ValueError(f"output_dir {output_dir} exists and is not a folder; choose another --output_dir.")
    existing = sorted(p.name for p in path.iterdir())
    if existing:
        shown = ", ".join(existing[:5]) + (" ..." if len(existing) > 5 else "")
        raise ValueError(
            f"output_dir {output_dir} already holds files ({shown}). Nothing was changed. Choose a new --output_dir, "
            "continue the run with --resume_from_checkpoint, or pass --overwrite_output_dir to write over it."
        )


def resolve_checkpoint(resume_from_checkpoint, output_dir: str) -> str | None:
    """The checkpoint folder to resume from: a given checkpoint folder, or with "true"/"latest" (or the output_dir
    itself) the newest *complete* `checkpoint-N` in output_dir, so a run killed while saving resumes from the last
    checkpoint that was fully written."""
    if not resume_from_checkpoint or str(resume_from_checkpoint).lower() == "false":
        return None
    path = Path(str(resume_from_checkpoint))
    if str(resume_from_checkpoint).lower() in ("true", "latest") or path.resolve() == Path(output_dir).resolve():
        complete = [
            c for c in Path(output_dir).glob("checkpoint-*")
            if c.name.split("-")[-1].isdigit() and (c / "trainer_state.json").is_file()
            and (c / "model.safetensors").is_file()
        ]
        if not complete:
            raise ValueError(f"--resume_from_checkpoint: {output_dir} holds no complete checkpoint-N folder to "
                             "resume from; start a new run instead.")
        return str(max(complete, key=lambda c: int(c.name.split("-")[-1])))
    if not (path / "trainer_state.json").is_file():
        raise ValueError(f"--resume_from_checkpoint {path} is not a complete checkpoint folder (no "
                         "trainer_state.json); pass a checkpoint-N folder, or 'latest' for the newest one.")
    return str(path)


def _parse_overrides(text: str | None) -> dict:
    overrides = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        if "=" not in item:
            raise ValueError(f"--config_overrides item {item!r} is not of the form key=value.")
        key, value = (s.strip() for s in item.split("=", 1))
        try:
            overrides[key] = json.loads(value.lower() if value.lower() in ("true", "false", "null") else value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def build_config(model_args: ModelArguments, image_size: int, num_channels: int):
    """A new config of the requested family, shaped for the data, or the config of `model_name_or_path`."""
    model_type = FAMILIES[model_args.model_type]
    if model_args.model_name_or_path is not None:
        config = AutoConfig.from_pretrained(model_args.model_name_or_path)
        if config.model_type != model_type:
            raise ValueError(
                f"{model_args.model_name_or_path} holds a {config.model_type!r} model, but --model_type "
                f"{model_args.model_type} trains {model_type!r}; pass --model_type "
                f"{next((k for k, v in FAMILIES.items() if v == config.model_type), '?')} or another folder."
            )
        return config
    config_class = MODEL_CLASSES[model_type][0]
    known = {f for f in config_class.__dataclass_fields__}
    values = {"image_size": image_size, "num_channels": num_channels, "backbone": model_args.backbone}
    for name in ("latent_dim", "hidden_size", "likelihood", "kl_weight", "num_embeddings", "embedding_dim"):
        value = getattr(model_args, name)
        if value is not None:
            if name not in known:
                raise ValueError(f"--{name} does not apply to --model_type {model_args.model_type}.")
            values[name] = value
    for key, value in _parse_overrides(model_args.config_overrides).items():
        if key not in known:
            raise ValueError(f"--config_overrides: {key!r} is not a field of {config_class.__name__}.")
        values[key] = value
    return config_class(**values)


def run_training(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments) -> dict:
    """Train, evaluate and save a model with its image processor, pictures, metrics and model card."""
    transformers.utils.logging.set_verbosity_warning()
    check_output_dir(training_args.output_dir, data_args.overwrite_output_dir, training_args.resume_from_checkpoint)
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    set_seed(training_args.seed)

    data = load_image_dataset(
        data_args.dataset_name,
        image_size=data_args.image_size,
        num_channels=data_args.num_channels,
        image_column=data_args.image_column,
        label_column=data_args.label_column,
        max_samples=None,
    )
    train_set, eval_set = data.train, data.test
    if data_args.max_train_samples:
        train_set = torch.utils.data.Subset(train_set, range(min(data_args.max_train_samples, len(train_set))))
    if data_args.max_eval_samples:
        eval_set = torch.utils.data.Subset(eval_set, range(min(data_args.max_eval_samples, len(eval_set))))

    config = build_config(model_args, data.image_size, data.num_channels)
    if (config.image_size, config.num_channels) != (data.image_size, data.num_channels):
        raise ValueError(
            f"The model takes {config.num_channels}x{config.image_size}x{config.image_size} images but the data is "
            f"{data.num_channels}x{data.image_size}x{data.image_size}; pass --image_size {config.image_size} "
            f"--num_channels {config.num_channels}."
        )
    if model_args.model_name_or_path is not None:
        model = AutoModel.from_pretrained(model_args.model_name_or_path)
    else:
        model = MODEL_CLASSES[config.model_type][1](config)
    processor = data.image_processor(do_binarize=data_args.binarize)
    collator = ImageCollator(binarize=data_args.binarize, stochastic_binarization=data_args.stochastic_binarization)

    training_args.remove_unused_columns = False
    # The Trainer would push from every checkpoint with its own card; the finished folder is pushed once, below.
    push, training_args.push_to_hub = training_args.push_to_hub, False
    example_images = collator([eval_set[i] for i in range(min(8, len(eval_set)))])["pixel_values"]
    trainer = AutoencoderTrainer(
        model=model,
        args=training_args,
        data_collator=collator,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=processor,
        image_log_pixel_values=example_images,
    )

    metrics = {}
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()
        metrics.update(result.metrics)
        trainer.save_state()
    if training_args.do_eval:
        metrics.update(trainer.evaluate())
    if trainer.is_world_process_zero():
        output_dir = Path(training_args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        if not training_args.do_train:
            trainer.save_model()
        write_run_outputs(trainer.model, data, eval_set, collator, metrics, output_dir, model_args, data_args,
                          training_args, log_history=trainer.state.log_history)
        if push:
            repo_id = training_args.hub_model_id or output_dir.name
            url = push_to_hub(output_dir, repo_id, token=training_args.hub_token,
                              private=training_args.hub_private_repo)
            print(f"pushed to {url}")
    return metrics
