"""The flags of a training run, as dataclasses `HfArgumentParser` reads (as in transformers' example scripts):
`ModelArguments` (which model), `DataArguments` (which images) and `AutoencoderTrainingArguments` (the
`TrainingArguments`, with defaults that suit autoencoders)."""

import json
import re
from dataclasses import dataclass, field

import torch
from transformers import HfArgumentParser, TrainingArguments

CODE_CACHE_FOLDER = "code_cache"  # where a prior run keeps the codes it extracted, inside its output_dir


@dataclass
class ModelArguments:
    """Which model to train. Any other config field can be set with --config_overrides."""

    model_type: str = field(default="vqvae", metadata={"help": "ae, vae or vqvae (the model families)."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Start from this trained model (a folder or Hub id) instead of a new one."}
    )
    backbone: str = field(
        default="conv",
        metadata={"help": "mlp, conv or vit. conv is the default for every family: on 28x28 and 32x32 images it "
                          "reconstructs best per second of training (docs/results.md)."},
    )
    latent_dim: int | None = field(default=None, metadata={"help": "AE/VAE latent size."})
    hidden_size: int | None = field(default=None, metadata={"help": "Backbone width."})
    likelihood: str | None = field(default=None, metadata={"help": "gaussian, bernoulli or discretized_logistic."})
    kl_weight: float | None = field(default=None, metadata={"help": "VAE beta."})
    num_embeddings: int | None = field(default=None, metadata={"help": "VQ-VAE codebook size K."})
    embedding_dim: int | None = field(default=None, metadata={"help": "VQ-VAE code dimension d."})
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Other config fields as key=value pairs separated by commas, values in JSON, e.g. "
                          "'dead_code_threshold=20,quantizer=fsq,fsq_levels=[8,5,5,5]'."},
    )

    def __post_init__(self):
        from ..models import autoencoder_classes

        autoencoder_classes(self.model_type)  # refuses an unknown family, naming the known ones


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
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be a positive number of images, got {value}; leave it out to use "
                                 "the whole split.")


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
                  "Default: on for the conv backbone on CPU, where it trains 8 to 12 percent faster "
                  "(benchmarks/README.md)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if not torch.cuda.is_available():  # pinned memory only helps host-to-GPU copies
            self.dataloader_pin_memory = False


@dataclass
class PriorArguments:
    """Which VQ-VAE's codes to model, on which images, and the prior's size (other sizes: the config's defaults)."""

    vqvae: str = field(metadata={"help": "Folder (or Hub id) of the trained VQ-VAE whose codes the prior models."})
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "The VQ-VAE's training images: a Hub id, a local folder, or nothing for the embedded "
                          "digits. They are resized to the VQ-VAE's image_size and num_channels."},
    )
    binarize: bool | None = field(
        default=None,
        metadata={"help": "Threshold pixels at 0.5 before encoding; default: as the VQ-VAE's saved image processor."},
    )
    class_conditional: bool = field(default=False, metadata={"help": "Model p(codes | class label)."})
    hidden_size: int | None = field(default=None, metadata={"help": "Prior channels (default 64)."})
    num_layers: int | None = field(default=None, metadata={"help": "Gated PixelCNN layers (default 8)."})
    kernel_size: int | None = field(default=None, metadata={"help": "Odd kernel width (default 5)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training images."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N test images."})
    code_cache_dir: str | None = field(
        default=None, metadata={"help": f"Where extracted codes are kept (default: <output_dir>/{CODE_CACHE_FOLDER})."}
    )
    num_samples: int = field(default=64, metadata={"help": "Images in samples.png and uniform_samples.png."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing into an output_dir that already holds files."}
    )


def parse_prior_args(argv: list[str] | None = None) -> tuple[PriorArguments, AutoencoderTrainingArguments]:
    """Parse command-line flags into (PriorArguments, AutoencoderTrainingArguments)."""
    parser = HfArgumentParser((PriorArguments, AutoencoderTrainingArguments))
    return parser.parse_args_into_dataclasses(args=argv)


def parse_args(args: list[str] | None = None, model_type: str | None = None):
    """Parse command-line flags into (ModelArguments, DataArguments, AutoencoderTrainingArguments)."""
    parser = HfArgumentParser((ModelArguments, DataArguments, AutoencoderTrainingArguments))
    if model_type is not None:
        parser.set_defaults(model_type=model_type)
    return parser.parse_args_into_dataclasses(args=args)


def parse_overrides(text: str | None) -> dict:
    """'a=1,b=true,levels=[8,5,5,5],name=x' -> {"a": 1, "b": True, "levels": [8, 5, 5, 5], "name": "x"}: values
    are read as JSON where they parse, else kept as strings; commas inside brackets do not split."""
    overrides = {}
    for item in filter(None, (part.strip() for part in re.split(r",(?![^\[]*\])", text or ""))):
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
    from transformers import AutoConfig

    from ..models import autoencoder_classes

    config_class, _ = autoencoder_classes(model_args.model_type)
    if model_args.model_name_or_path is not None:
        config = AutoConfig.from_pretrained(model_args.model_name_or_path)
        if config.model_type != config_class.model_type:
            family = getattr(config, "family", None)
            hint = f"pass --model_type {family}" if family else "pass the folder of an autoencoder"
            raise ValueError(
                f"{model_args.model_name_or_path} holds a {config.model_type!r} model, but --model_type "
                f"{model_args.model_type} trains {config_class.model_type!r}; {hint} or another folder."
            )
        return config
    known = set(config_class.__dataclass_fields__)
    values = {"image_size": image_size, "num_channels": num_channels, "backbone": model_args.backbone}
    for name in ("latent_dim", "hidden_size", "likelihood", "kl_weight", "num_embeddings", "embedding_dim"):
        value = getattr(model_args, name)
        if value is not None:
            if name not in known:
                raise ValueError(f"--{name} does not apply to --model_type {model_args.model_type}.")
            values[name] = value
    for key, value in parse_overrides(model_args.config_overrides).items():
        if key not in known:
            raise ValueError(f"--config_overrides: {key!r} is not a field of {config_class.__name__}.")
        values[key] = value
    return config_class(**values)
