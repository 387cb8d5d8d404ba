"""The flags of a training run, as dataclasses `HfArgumentParser` reads (as in transformers' example scripts):
`ModelArguments` (which model), `DataArguments` (which images) and `AutoencoderTrainingArguments` (the
`TrainingArguments`, with defaults that suit autoencoders); `PriorArguments` for a prior over a VQ-VAE's codes; and
`ArgumentParser`, the parser of every command and example script of this library."""

import json
import re
from dataclasses import dataclass, field

import torch
from transformers import HfArgumentParser, TrainingArguments

CODE_CACHE_FOLDER = "code_cache"  # where a prior run keeps the codes it extracted, inside its output_dir


class ArgumentParser(HfArgumentParser):
    """transformers' `HfArgumentParser` (flags from dataclasses, or added one by one), with every flag spelled with
    underscores as in transformers' scripts also answering to its dash spelling (--output_dir or --output-dir), and
    an error as one `error: ...` line (exit status 2)."""

    def __init__(self, dataclass_types=(), **kwargs):
        super().__init__(dataclass_types, **kwargs)

    def add_argument(self, *names, **kwargs):
        dashed = [name.replace("_", "-") for name in names if name.startswith("--") and "_" in name]
        return super().add_argument(*names, *(name for name in dashed if name not in names), **kwargs)

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


@dataclass
class ModelArguments:
    """Which model to train. Any other config field can be set with --config_overrides."""

    model_type: str = field(default="vqvae", metadata={"help": "ae, vae or vqvae (the model families)."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Start from this trained model (a folder or Hub id) instead of a new one."}
    )
    backbone: str | None = field(
        default=None,
        metadata={"help": "mlp, conv or vit (default: conv). conv, strided convolutions and residual blocks as in "
                          "the VQ-VAE paper, is the sound choice for every family and image size: its cost grows "
                          "only linearly with the pixels. vit, a transformer over patches, is for those who want "
                          "patch tokens or train on GPUs, where it scales; docs/results.md compares it with conv at "
                          "equal training time. mlp suits small images only: its weights grow with the pixels."},
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
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep the first N training images (only those are ever decoded)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep the first N test images (only those are ever decoded)."}
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "The dataset's configuration, as in datasets.load_dataset(name, config)."}
    )
    streaming: bool = field(
        default=False,
        metadata={"help": "Stream the dataset (a Hub id or a large local folder) instead of preparing it: nothing is "
                  "read up front, the train split is shuffled among --shuffle_buffer_size undecoded rows (anew each "
                  "epoch), images are decoded per batch in the DataLoader workers, and each process of a "
                  "multi-process run reads its own shards. Needs --max_steps."},
    )
    shuffle_buffer_size: int = field(
        default=10_000,  # hf_autoencoders.data.SHUFFLE_BUFFER_SIZE
        metadata={"help": "With --streaming: how many undecoded rows the train split is shuffled among."},
    )
    in_memory_max_gb: float = field(
        default=2.0,  # hf_autoencoders.data.IN_MEMORY_MAX_GB
        metadata={"help": "A split whose decoded images (N x C x H x W bytes) take at most this many GB is decoded "
                  "once, up front, into the decoded cache and memory-mapped: the fastest steps, and one copy per "
                  "machine. A larger split is decoded per batch in the DataLoader workers (--dataloader_num_workers), "
                  "so memory does not grow with the dataset. 0 decodes every split per batch."},
    )
    decoded_cache: bool = field(
        default=True,
        metadata={"help": "Keep splits decoded up front on disk (--decoded_cache_dir) and map them; "
                  "--no_decoded_cache decodes them into each process's memory instead, every run."},
    )
    decoded_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Where decoded splits are kept: one uint8 .npy file of N x C x H x W bytes per split, with "
                  "a JSON manifest holding its SHA-256 (checked at every load; a damaged or stale file is rebuilt). "
                  "Default: <HF_DATASETS_CACHE>/hf_autoencoders_decoded "
                  "(~/.cache/huggingface/datasets/hf_autoencoders_decoded). Safe to delete."},
    )
    skip_bad_images: bool = field(
        default=False,
        metadata={"help": "Skip images that cannot be decoded, logging each with its split and row, instead of "
                  "stopping with an error that names the image."},
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing into an output_dir that already holds files."}
    )

    def __post_init__(self):
        if self.in_memory_max_gb < 0:
            raise ValueError(f"--in_memory_max_gb must be >= 0 (0 decodes every split per batch), got "
                             f"{self.in_memory_max_gb}.")
        if self.shuffle_buffer_size < 1:
            raise ValueError(f"--shuffle_buffer_size must be a positive number of rows, got "
                             f"{self.shuffle_buffer_size}.")
        if self.stochastic_binarization and not self.binarize:
            raise ValueError("--stochastic_binarization only applies with --binarize; pass both.")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be a positive number of images, got {value}; leave it out to use "
                                 "the whole split.")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"--image_size must be a positive number of pixels, got {self.image_size}; leave it out "
                             "to keep the images' own size.")
        if self.num_channels not in (None, 1, 3):
            raise ValueError(f"--num_channels must be 1 (grayscale) or 3 (RGB), got {self.num_channels}; leave it out "
                             "to keep the images' own.")


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
    fid: bool = field(
        default=True,
        metadata={"help": "With --do_eval, also measure the Fréchet distance, KID, precision, recall, density and "
                  "coverage of the test reconstructions and of as many samples, in the features of a classifier "
                  "trained on the labelled training images (cached), for the model card. Needs labels; false skips "
                  "it."},
    )
    skip_nonfinite_steps: bool = field(
        default=False,
        metadata={"help": "Skip an optimizer step whose loss or gradient norm is NaN or infinite (and count it in the "
                  "logs) instead of stopping the run; 10 skipped steps in a row still stop it."},
    )
    hub_license: str | None = field(
        default=None,
        metadata={"help": "The license of the model, written into its card (e.g. apache-2.0, mit, cc-by-4.0)."},
    )
    channels_last: bool | None = field(
        default=None,
        metadata={"help": "Keep 4-d weights, and so the convolutions' activations, in channels-last memory order. "
                  "Default: on for the conv backbone on CPU, where oneDNN's convolutions are faster in that layout."},
    )

    def __post_init__(self):
        accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
        if not (accelerator.is_available() if accelerator else torch.cuda.is_available()):
            # Say so to accelerate: without it, processes launched by torchrun on CPUs would each train alone
            # (no DDP, no sharded evaluation).
            self.use_cpu = True
        super().__post_init__()
        if not torch.cuda.is_available():  # pinned memory only helps host-to-GPU copies
            self.dataloader_pin_memory = False
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be a positive integer, got {getattr(self, name)}.")
        if self.do_train and self.max_steps == 0:
            raise ValueError("--max_steps 0 trains nothing; pass a positive number of steps, or leave it out (-1) to "
                             "train for --num_train_epochs.")
        if self.do_train and self.max_steps < 0 and not self.num_train_epochs > 0:
            raise ValueError(f"--num_train_epochs {self.num_train_epochs:g} trains nothing; pass a positive number of "
                             "epochs or --max_steps. (To evaluate a trained model without training, drop --do_train.)")


def training_arguments(output_dir, **fields) -> AutoencoderTrainingArguments:
    """The `AutoencoderTrainingArguments` of a run made from Python (studies, benchmarks, `fit`, notebooks): no
    checkpoints, no progress bar, no trackers, unless `fields` (any `TrainingArguments` field) say otherwise."""
    defaults = dict(save_strategy="no", logging_steps=50, disable_tqdm=True, report_to="none")
    return AutoencoderTrainingArguments(output_dir=str(output_dir), **{**defaults, **fields})


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
    image_column: str | None = field(default=None, metadata={"help": "Image column (found by type if not given)."})
    label_column: str | None = field(
        default=None, metadata={"help": "Label column, integers 0..C-1, for --class_conditional (found by type if not "
                                        "given)."}
    )
    class_conditional: bool = field(default=False, metadata={"help": "Model p(codes | class label)."})
    prior_type: str = field(
        default="pixelcnn",
        metadata={"help": "pixelcnn (a gated PixelCNN) or transformer (a GPT-2 causal LM over code tokens, sampled "
                          "by generate() with the key/value cache; loads with plain AutoModelForCausalLM). Choose the "
                          "transformer: trained for the same time it reaches a lower test NLL and samples much faster "
                          "(benchmarks/README.md). pixelcnn stays the default so that existing commands, scripts and "
                          "their flags (--kernel_size) keep training what they did."},
    )
    hidden_size: int | None = field(
        default=None, metadata={"help": "Prior width: PixelCNN channels (default 64) or transformer n_embd (128)."}
    )
    num_layers: int | None = field(
        default=None, metadata={"help": "Gated PixelCNN layers (default 8) or transformer blocks (default 3)."}
    )
    kernel_size: int | None = field(default=None, metadata={"help": "PixelCNN only: odd kernel width (default 5)."})
    num_heads: int | None = field(
        default=None, metadata={"help": "Transformer only: attention heads, dividing --hidden_size (default 4)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training images."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N test images."})
    code_cache_dir: str | None = field(
        default=None, metadata={"help": f"Where extracted codes are kept (default: <output_dir>/{CODE_CACHE_FOLDER})."}
    )
    num_samples: int = field(default=64, metadata={"help": "Images in samples.png and uniform_samples.png."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing into an output_dir that already holds files."}
    )

    def __post_init__(self):
        if self.prior_type not in ("pixelcnn", "transformer"):
            raise ValueError(f"--prior_type must be pixelcnn or transformer, got {self.prior_type!r}.")
        for name in ("max_train_samples", "max_eval_samples", "num_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be a positive number of images, got {value}.")
        only = {"kernel_size": "pixelcnn", "num_heads": "transformer"}
        for name, kind in only.items():
            if getattr(self, name) is not None and self.prior_type != kind:
                raise ValueError(f"--{name} applies to --prior_type {kind} only, not {self.prior_type}.")


def training_parser(model_type: str | None = None) -> ArgumentParser:
    """The parser of a training run's flags: `ModelArguments`, `DataArguments` and `AutoencoderTrainingArguments`,
    with --model_type defaulting to `model_type` where it is given."""
    parser = ArgumentParser((ModelArguments, DataArguments, AutoencoderTrainingArguments))
    if model_type is not None:
        parser.set_defaults(model_type=model_type)
    return parser


def prior_parser() -> ArgumentParser:
    """The parser of a prior run's flags: `PriorArguments` and `AutoencoderTrainingArguments`."""
    return ArgumentParser((PriorArguments, AutoencoderTrainingArguments))


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
    """A new config of the requested family, shaped for the data; or the config of `model_name_or_path` with the
    requested settings that leave its architecture as it is (`fine_tuning_config`)."""
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
        return fine_tuning_config(config, model_args)
    known = set(config_class.__dataclass_fields__)
    values = {"image_size": image_size, "num_channels": num_channels, "backbone": "conv"}
    for key, value in requested_settings(model_args).items():
        if key not in known:
            raise ValueError(f"--{key} does not apply to --model_type {model_args.model_type}: it is not a field of "
                             f"{config_class.__name__}.")
        values[key] = value
    return config_class(**values)


def fine_tuning_config(config, model_args: ModelArguments):
    """The config of a trained model (`config`, of --model_name_or_path) trained further with the settings this
    command sets (`requested_settings`): those that keep every weight of the model as it is (loss weights such as
    kl_weight or commitment_cost, the likelihood's variance, dead-code restarts, ...) are applied; one that would
    add, drop or reshape a weight (latent_dim, hidden_size, backbone, num_embeddings, quantizer, ...) is refused,
    naming the weights it changes: the trained weights could not be loaded into it."""
    requested = requested_settings(model_args)
    fields = set(type(config).__dataclass_fields__)
    for key in requested:
        if key not in fields:
            raise ValueError(f"{_flag(model_args, key, requested[key])} does not apply to --model_name_or_path "
                             f"{model_args.model_name_or_path}: it is not a field of {type(config).__name__}.")
    changed = {key: value for key, value in requested.items() if _same(getattr(config, key)) != _same(value)}
    if not changed:
        return config
    shapes = _weight_shapes(config)
    for key, value in changed.items():
        alone = _weight_shapes(type(config).from_dict({**config.to_dict(), key: value}))
        if alone != shapes:
            differing = sorted(set(alone) ^ set(shapes) | {k for k in alone.keys() & shapes if alone[k] != shapes[k]})
            shown = ", ".join(differing[:3]) + (f" and {len(differing) - 3} more" if len(differing) > 3 else "")
            raise ValueError(
                f"{_flag(model_args, key, value)} changes the architecture of --model_name_or_path "
                f"{model_args.model_name_or_path} (its weights {shown} would not fit), so it cannot be trained further "
                f"with it. Leave the flag out to fine-tune the model as it is ({key}={getattr(config, key)!r}), or "
                "train a new model without --model_name_or_path."
            )
    return type(config).from_dict({**config.to_dict(), **changed})


def _weight_shapes(config) -> dict[str, tuple]:
    """{name: shape} of every weight and buffer of the model `config` builds (on the meta device: nothing
    allocated)."""
    from transformers import AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def _same(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def _flag(model_args: ModelArguments, key: str, value) -> str:
    """How the command line set `key`: "--latent_dim 8", or "--config_overrides quantizer=fsq"."""
    if key in _MODEL_FLAGS and getattr(model_args, key) is not None:
        return f"--{key} {value}"
    return f"--config_overrides {key}={json.dumps(value) if not isinstance(value, str) else value}"


_MODEL_FLAGS = ("backbone", "latent_dim", "hidden_size", "likelihood", "kl_weight", "num_embeddings", "embedding_dim")


def requested_settings(model_args: ModelArguments) -> dict:
    """The config fields this command sets explicitly: the model flags given and --config_overrides."""
    values = {name: getattr(model_args, name) for name in _MODEL_FLAGS if getattr(model_args, name) is not None}
    overrides = parse_overrides(model_args.config_overrides)
    if "model_type" in overrides:
        raise ValueError("--config_overrides: model_type cannot be overridden; the family is chosen with --model_type "
                         "(ae, vae or vqvae).")
    return {**values, **overrides}
