"""Training a prior over the codes of a trained VQ-VAE: what `examples/train_prior.py` and `hf-autoencoders
train-prior` call. The prior is a GPT-2 causal language model over code tokens (`--prior_type transformer`, the
default, `models/code_priors.py`) or a gated PixelCNN (`--prior_type pixelcnn`). A class-conditional transformer
prior is trained with label dropout (`--class_dropout`), so that it can be sampled with classifier-free guidance.
Every prior records the identity of its VQ-VAE (`code_priors.vqvae_identity`), which is checked wherever the two
meet, resuming a run included.

The VQ-VAE is frozen: every image is encoded once into its (h, w) code map, and the code maps are kept on disk
(`extract_codes`), so a second run with the same VQ-VAE and images reads them back instead of encoding again. The
prior p(c) = prod_{i,j} p(c[i, j] | c[< (i, j)]) is then trained with the transformers `Trainer` on those maps; its
loss is the mean negative log-likelihood per code in nats (log K for the uniform prior the VQ-VAE was trained with).
With `--do_eval`, both kinds are scored the same way on the test codes (`evaluation.priors.prior_test_metrics`):
nats and bits per code, and bits per dimension of the image through the VQ-VAE's decoder where its likelihood is
discrete.

    prior_args, training_args = parse_prior_args(["--vqvae", "outputs/vqvae", "--output_dir", "outputs/prior",
                                                  "--do_train", "--do_eval"])
    metrics = run_prior_training(prior_args, training_args)
"""

import json
import logging
import math
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, PreTrainedConfig, Trainer, set_seed

from ..data import ImageCollator, ImageTensorDataset, check_class_labels, load_image_dataset
from ..evaluation.metrics import unit_images
from ..evaluation.priors import prior_test_metrics
from ..hub import load_model, load_processor, write_model_card
from ..models import PixelCNNPriorConfig, PixelCNNPriorModel, VQVAEConfig, code_priors
from ..plots import plot_labelled_rows, plot_samples
from ..results import fingerprint, partial_path, remove_stale_partials
from .arguments import CODE_CACHE_FOLDER, PriorArguments, training_arguments
from .checkpoints import (
    check_not_input,
    check_output_dir,
    clear_previous_run,
    output_dir_lock,
    resolve_checkpoint,
)
from .trainer import RunTrainer, training_summary, write_loss_curves

logger = logging.getLogger(__name__)

_CODE_CACHE_VERSION = 2  # bump when extraction changes (2: the file carries the SHA-256 of its codes)


# ----------------------------------------------------------------------------------------------- code extraction


def _code_dtype(num_embeddings: int) -> torch.dtype:
    """The smallest integer type holding codes in [0, K): uint8, int16 or int32."""
    if num_embeddings <= 256:
        return torch.uint8
    return torch.int16 if num_embeddings <= 2**15 else torch.int32


def _config_fields(config) -> dict:
    """The fields a config class and its parents declare below `PreTrainedConfig` (what shapes the model), without
    bookkeeping such as `_name_or_path` or `transformers_version` that changes on save/load."""
    names = set()
    for cls in type(config).__mro__:
        if cls is PreTrainedConfig:
            break
        names |= set(vars(cls).get("__annotations__", {}))
    return {name: getattr(config, name, None) for name in sorted(names)}


def model_fingerprint(model) -> str:
    """`fingerprint` of a model's type, architecture fields and every weight and buffer (the codebook included)."""
    weights = [part for name, tensor in sorted(model.state_dict().items()) for part in (name, tensor)]
    return fingerprint(model.config.model_type, _config_fields(model.config), *weights)


def dataset_fingerprint(dataset) -> str:
    """`fingerprint` of a dataset's images and labels: of the tensors of an `ImageTensorDataset` (or a `Subset` of
    one), else of every item's pixel_values / labels in turn."""
    if isinstance(dataset, torch.utils.data.Subset) and isinstance(dataset.dataset, ImageTensorDataset):
        return fingerprint(dataset_fingerprint(dataset.dataset), torch.as_tensor(dataset.indices, dtype=torch.long))
    if isinstance(dataset, ImageTensorDataset):
        return fingerprint(dataset.images, dataset.labels)
    items = (dataset[i] for i in range(len(dataset)))
    return fingerprint([fingerprint(*(torch.as_tensor(value) for value in (item.values() if isinstance(item, dict)
                                                                             else [item]))) for item in items])


@torch.no_grad()
def _encode_dataset(vqvae, dataset, batch_size: int, collator, progress: bool):
    """Code maps (N, h, w), or (N, n, h, w) for residual codes of depth n, in the smallest integer dtype, and labels
    (N,) or None, in dataset order."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=lambda items: items)
    dtype = _code_dtype(vqvae.config.num_embeddings)
    codes, labels = [], []
    for items in tqdm(loader, desc="Extracting VQ codes", unit="batch", disable=not progress):
        pixel_values = collator(items)["pixel_values"].to(vqvae.device)
        codes.append(vqvae.encode_indices(pixel_values).cpu().to(dtype))
        if isinstance(items[0], dict) and "labels" in items[0]:
            labels.append(torch.stack([torch.as_tensor(item["labels"]) for item in items]).long())
    return torch.cat(codes), (torch.cat(labels) if labels else None)


def extract_codes(
    vqvae,
    dataset,
    batch_size: int = 256,
    cache_dir: str | os.PathLike | None = None,
    collator=None,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """
    Encode every image of `dataset` into its VQ-VAE code map, c = argmin_k ||z_e(x)[i, j] - e_k||.

    Args:
        vqvae: a `VQVAEModel`; it is used in eval mode (no codebook updates, nearest-neighbour codes) and left in the
            mode it was in.
        dataset: items `{"pixel_values": uint8 or float (C, H, W), ["labels"]}`, e.g. an `ImageTensorDataset`.
        batch_size: images per encoder pass.
        cache_dir: if given, the codes are kept there as `codes-<hash>.safetensors`, the hash being that of the
            VQ-VAE (architecture fields, weights, codebook), of the dataset's images and labels and of the collator's
            settings, so a later call with the same model and data reads the file instead of encoding. The file records
            the SHA-256 of its codes and labels, checked at every read: one that was changed or damaged is extracted
            again and rewritten, never read. None: no cache.
        collator: turns a list of items into float pixel_values in the VQ-VAE's pixel range; default
            `ImageCollator(pixel_range=vqvae.config.pixel_range)`.
        progress: show a tqdm progress bar while encoding.

    Returns:
        `(codes, labels)`: codes of shape (N, h, w), or (N, n, h, w) for a VQ-VAE with residual quantization of depth
        n > 1 (`VQVAEModel.encode_indices`), as uint8 (K <= 256), int16 (K <= 32768) or int32, in dataset order;
        labels long (N,), or None when the items carry no "labels".
    """
    if getattr(vqvae.config, "model_type", None) != VQVAEConfig.model_type:
        raise ValueError(f"extract_codes needs a VQ-VAE ({VQVAEConfig.model_type}), got a "
                         f"{getattr(vqvae.config, 'model_type', type(vqvae).__name__)!r} model.")
    if len(dataset) == 0:
        raise ValueError("extract_codes got an empty dataset.")
    collator = collator or ImageCollator(pixel_range=vqvae.config.pixel_range)
    path = None
    if cache_dir is not None:
        key = fingerprint("codes", _CODE_CACHE_VERSION, model_fingerprint(vqvae), dataset_fingerprint(dataset),
                          repr(collator))[:20]
        path = Path(cache_dir) / f"codes-{key}.safetensors"
        cached = _read_code_cache(path, len(dataset), vqvae.config.num_embeddings)
        if cached is not None:
            return cached

    was_training = vqvae.training
    vqvae.eval()
    try:
        codes, labels = _encode_dataset(vqvae, dataset, batch_size, collator, progress)
    finally:
        vqvae.train(was_training)

    if path is not None:
        tensors = {"codes": codes} if labels is None else {"codes": codes, "labels": labels}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_partials(path.parent)
            partial = partial_path(path)
            save_file(tensors, partial, metadata={"num_embeddings": str(vqvae.config.num_embeddings),
                                                  "num_quantizers": str(getattr(vqvae.config, "num_quantizers", 1)),
                                                  "num_images": str(len(codes)), "sha256": fingerprint(codes, labels)})
            os.replace(partial, path)  # atomic: a reader never sees half a file
        except OSError as err:  # a read-only or full disk: the codes are used all the same, not kept
            logger.warning("The codes could not be written to the code cache in %s (%s); they are used without being "
                           "kept, and extracted again next time (--code_cache_dir chooses a writable folder).",
                           path.parent, err)
    return codes, labels


def _read_code_cache(path: Path, num_images: int, num_embeddings: int):
    """(codes, labels) from the code cache file `path` if it is whole and unchanged: the SHA-256 of its codes and
    labels must be the one recorded when it was written, and every code must lie in [0, K); else None (and a
    warning for a file that exists), so that the codes are extracted again and the file rewritten, never read."""
    if not path.is_file():
        return None
    try:
        with safe_open(path, "pt") as file:
            recorded = (file.metadata() or {}).get("sha256")
        tensors = load_file(path)
        codes, labels = tensors["codes"], tensors.get("labels")
    except Exception as err:  # a truncated or corrupt file (safetensors raises its own error type)
        logger.warning("The code cache %s is unreadable (%s); extracting the codes again.", path, err)
        return None
    if len(codes) != num_images:
        problem = f"holds {len(codes)} code maps, not {num_images}"
    elif recorded != fingerprint(codes, labels):
        problem = "does not match its SHA-256 (changed since it was written)"
    elif codes.numel() and not 0 <= int(codes.min()) <= int(codes.max()) < num_embeddings:
        problem = f"holds codes outside [0, {num_embeddings})"
    else:
        logger.info("Read %d code maps from %s", len(codes), path)
        return codes, labels
    logger.warning("The code cache %s %s; extracting the codes again.", path, problem)
    return None


class CodeDataset(Dataset):
    """Code maps as prior training examples: `{"input_ids": long (h, w)}` (or (n, h, w), the residual codes of
    depth n), plus `"class_labels"` (long scalar) when `labels` are given (for a class-conditional prior)."""

    def __init__(self, codes: torch.Tensor, labels: torch.Tensor | None = None):
        if codes.ndim not in (3, 4) or codes.dtype.is_floating_point:
            raise ValueError(f"codes must be an integer tensor (N, h, w), or (N, n, h, w) for residual codes, got "
                             f"{codes.dtype} {tuple(codes.shape)}.")
        if labels is not None and tuple(labels.shape) != (len(codes),):
            raise ValueError(f"labels must have shape ({len(codes)},), got {tuple(labels.shape)}.")
        self.codes = codes
        self.labels = labels

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {"input_ids": self.codes[index].long()}
        if self.labels is not None:
            item["class_labels"] = self.labels[index].long()
        return item


def collate_codes(features: list[dict]) -> dict[str, torch.Tensor]:
    """Stack `CodeDataset` items into the prior's inputs: input_ids (B, h, w) and, if present, class_labels (B,)."""
    batch = {"input_ids": torch.stack([f["input_ids"] for f in features])}
    if "class_labels" in features[0]:
        batch["class_labels"] = torch.stack([f["class_labels"] for f in features])
    return batch


class CodeTokenCollator:
    """Stack `CodeDataset` items into a transformer prior's inputs: the token sequences [BOS, (class), codes] and the
    `labels` of the causal LM's loss (the same tokens, the prefix ignored), see `code_priors.code_tokens`."""

    def __init__(self, config):
        self.config = config

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = collate_codes(features)
        tokens = code_priors.code_tokens(self.config, batch["input_ids"], batch.get("class_labels"))
        return {"input_ids": tokens, "labels": code_priors.language_model_labels(self.config, tokens)}


def prior_collator(prior):
    """The data collator that turns `CodeDataset` items into `prior`'s training inputs."""
    return collate_codes if code_priors.prior_type(prior) == "pixelcnn" else CodeTokenCollator(prior.config)


class PriorTrainer(RunTrainer, Trainer):
    """The `Trainer`, with label dropout while training a prior that has a null class (each training map is shown
    with the null class with probability `class_dropout`, `code_priors.drop_class_tokens`; evaluation always sees the
    true classes), evaluating the prior's loss only: the targets are the inputs themselves, so there are no "labels"
    for the Trainer to find, and the (N, h, w, K) logits of a test set are never gathered. Pushes to the Hub and
    resumes a finished run as every run's trainer does (`RunTrainer`)."""

    def __init__(self, model=None, *args, **kwargs):
        # GPT2LMHeadModel's class name matches none of transformers' loss names, so its first loss would warn
        # "loss_type=None ... unrecognized" before using the causal-LM loss, the right one: name it.
        if model is not None and code_priors.prior_type(model) == "transformer" and model.loss_type is None:
            model.loss_type = "ForCausalLM"
        super().__init__(model, *args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            config = self.accelerator.unwrap_model(model).config
            inputs = {**inputs, "input_ids": code_priors.drop_class_tokens(config, inputs["input_ids"])}
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = model(**inputs).loss
        return loss.detach(), None, None


def fit_prior(prior, train_dataset, eval_dataset=None, *, output_dir, **training_kwargs) -> PriorTrainer:
    """Train a prior of either kind on a `CodeDataset` and return the trainer, for use from Python (benchmarks,
    notebooks). `training_kwargs` are `TrainingArguments` fields; nothing is checkpointed unless asked."""
    trainer = PriorTrainer(model=prior, args=training_arguments(output_dir, **training_kwargs),
                           data_collator=prior_collator(prior), train_dataset=train_dataset, eval_dataset=eval_dataset)
    trainer.train()
    return trainer


def vqvae_hub_id(name_or_path: str) -> str | None:
    """The Hub id of the VQ-VAE at `name_or_path`: the id itself, or that of a snapshot folder of the Hub's cache
    (.../models--owner--name/snapshots/<revision>); None for any other local folder."""
    if code_priors.is_hub_id(name_or_path):
        return name_or_path
    parts = Path(name_or_path).resolve().parts
    for folder, child in zip(parts, parts[1:]):
        if folder.startswith("models--") and child == "snapshots" and folder.count("--") == 2:
            return "/".join(folder.split("--")[1:])
    return None


def build_prior(prior_args: PriorArguments, vqvae, num_classes: int, label_names: list[str] | None = None):
    """A new prior of `--prior_type` for the codes of `vqvae`: a `PixelCNNPriorModel`, or a GPT-2 causal LM (with a
    null class for classifier-free guidance when class-conditional, `--class_dropout`). Its config records the
    VQ-VAE's identity and Hub id (`vqvae_hub_id`), K, the grid size, the depth n of residual codes and the class
    names (`id2label`)."""
    check_prior_depth(prior_args.prior_type, vqvae.config)
    sizes = {k: getattr(prior_args, k) for k in ("hidden_size", "num_layers", "kernel_size", "num_heads")}
    sizes = {k: v for k, v in sizes.items() if v is not None}
    vqvae_config = vqvae.config
    layout = dict(num_embeddings=vqvae_config.num_embeddings, grid_size=vqvae_config.latent_grid_size,
                  num_classes=num_classes, vqvae_identity=vqvae.identity(),
                  vqvae_name_or_path=vqvae_hub_id(prior_args.vqvae))
    if prior_args.prior_type == "pixelcnn":
        prior = PixelCNNPriorModel(PixelCNNPriorConfig(**layout, **sizes))
    else:
        config = code_priors.transformer_prior_config(**layout, class_dropout=prior_args.class_dropout,
                                                      num_quantizers=getattr(vqvae_config, "num_quantizers", 1),
                                                      **sizes)
        prior = AutoModelForCausalLM.from_config(config)
    if num_classes and label_names and len(label_names) == num_classes:
        prior.config.id2label = dict(enumerate(str(name) for name in label_names))
    return prior


def check_prior_checkpoint(checkpoint: str, prior, vqvae) -> None:
    """Refuse to resume a prior run from a checkpoint of another kind or layout of prior than the one this run
    builds (another --prior_type, --class_conditional, --class_dropout or size), or trained on the codes of another
    VQ-VAE (its recorded identity differs from this --vqvae's)."""
    saved = json.loads((Path(checkpoint) / "config.json").read_text())
    ours = prior.config.to_dict()
    recorded = saved.get("vqvae_identity")
    if recorded and recorded != ours.get("vqvae_identity"):
        raise ValueError(f"{checkpoint} was trained on the codes of another VQ-VAE (identity {recorded}) than "
                         f"--vqvae {vqvae.name_or_path} ({ours.get('vqvae_identity')}): the VQ-VAE changed since the "
                         "run started (retrained in place?). Resume with the VQ-VAE the run started with, or start a "
                         "new run (--overwrite_output_dir).")
    fields = ("model_type", "vocab_size", "num_embeddings", "grid_size", "num_classes", "n_embd", "n_layer",
              "hidden_size", "num_layers", "kernel_size")
    differ = {k: (saved.get(k), ours.get(k)) for k in fields if saved.get(k) != ours.get(k)}
    if differ:
        found = ", ".join(f"{k} {a!r} there, {b!r} here" for k, (a, b) in differ.items())
        raise ValueError(f"{checkpoint} holds another prior than this run builds ({found}); resume with the flags the "
                         "run started with (--prior_type, --class_conditional, --class_dropout, the sizes).")


def check_prior_depth(prior_type: str, vqvae_config) -> None:
    """Refuse a PixelCNN prior for the residual codes of a VQ-VAE with `num_quantizers` > 1: it models one code per
    position; the transformer prior models the n codes of each position depth-first."""
    depth = getattr(vqvae_config, "num_quantizers", 1)
    if prior_type == "pixelcnn" and depth > 1:
        raise ValueError(f"This VQ-VAE gives {depth} codes per position (residual quantization, num_quantizers="
                         f"{depth}), but a PixelCNN prior models one code per position; pass --prior_type "
                         "transformer, which models the codes of each position depth-first.")


# ------------------------------------------------------------------------------------------------- command line


def load_vqvae(name_or_path: str):
    """The VQ-VAE at `name_or_path`, in eval mode; a clear error for anything else."""
    vqvae = load_model(name_or_path, "--vqvae")
    if vqvae.config.model_type != VQVAEConfig.model_type:
        raise ValueError(f"--vqvae {name_or_path} holds a {vqvae.config.model_type!r} model, but a prior needs a "
                         f"VQ-VAE ({VQVAEConfig.model_type!r}); pass the folder of a model trained with --model_type "
                         "vqvae.")
    return vqvae


def run_prior_training(prior_args: PriorArguments, training_args) -> dict:
    """Extract (cached) codes with the VQ-VAE, train the prior, evaluate it (with --do_eval: its loss and
    `prior_test_metrics` on the test codes), and save it with samples.png, uniform_samples.png, loss_curves.png, the
    results files and a model card. Returns the metrics."""
    check_not_input(training_args.output_dir, {"--vqvae": prior_args.vqvae})
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    check_output_dir(training_args.output_dir, prior_args.overwrite_output_dir, resume=checkpoint is not None)
    vqvae = load_vqvae(prior_args.vqvae)
    check_prior_depth(prior_args.prior_type, vqvae.config)
    if not training_args.do_train:
        raise ValueError("train-prior trains a new prior: pass --do_train (and --do_eval to score it on the test "
                         "codes). To score a trained prior, use `hf-autoencoders evaluate VQVAE --prior PRIOR`.")
    with output_dir_lock(training_args.output_dir, training_args):  # the run owns its folder until it ends
        set_seed(training_args.seed)
        output_dir = Path(training_args.output_dir)
        vqvae.to(training_args.device)

        config = vqvae.config
        processor = load_processor(prior_args.vqvae, config)  # the VQ-VAE's own preprocessing
        max_samples = {"train": prior_args.max_train_samples, "test": prior_args.max_eval_samples}
        data = load_image_dataset(prior_args.dataset_name, image_size=config.image_size,
                                  num_channels=config.num_channels, resample=processor.resample,
                                  image_column=prior_args.image_column, label_column=prior_args.label_column,
                                  max_samples=max_samples)
        train_set, test_set = data.train, data.test
        if prior_args.class_conditional:
            if data.num_labels is None:
                raise ValueError(f"--class_conditional needs labels, but {data.name} has no label column (name it "
                                 "with --label_column).")
            for split in (train_set, test_set):
                check_class_labels(split.labels, data.name, "train an unconditional prior (without "
                                   "--class_conditional)", num_classes=data.num_labels)
        binarize = processor.do_binarize if prior_args.binarize is None else prior_args.binarize
        cache_dir = prior_args.code_cache_dir or output_dir / CODE_CACHE_FOLDER
        batch_size = training_args.per_device_eval_batch_size
        collator = ImageCollator(binarize=binarize, binarize_threshold=processor.binarize_threshold,
                                 pixel_range=config.pixel_range)
        train_codes, train_labels = extract_codes(vqvae, train_set, batch_size, cache_dir, collator)
        test_codes, test_labels = extract_codes(vqvae, test_set, batch_size, cache_dir, collator)
        conditional = prior_args.class_conditional
        train_codes = CodeDataset(train_codes, train_labels if conditional else None)
        test_codes = CodeDataset(test_codes, test_labels if conditional else None)

        prior = build_prior(prior_args, vqvae, data.num_labels if conditional else 0, data.label_names)
        if checkpoint is not None:
            check_prior_checkpoint(checkpoint, prior, vqvae)
        if prior_args.overwrite_output_dir and checkpoint is None and training_args.should_save:
            clear_previous_run(output_dir)  # the folder never mixes two runs (its code cache stays)
        training_args.remove_unused_columns = False
        trainer = PriorTrainer(model=prior, args=training_args, data_collator=prior_collator(prior),
                               train_dataset=train_codes, eval_dataset=test_codes)
        train_metrics, metrics = trainer.train_and_save(checkpoint), {}
        if training_args.do_eval:
            scores = prior_test_metrics(prior, test_codes, vqvae, test_set, collator, batch_size)
            metrics = {"eval_loss": trainer.evaluate()["eval_loss"], **{f"test_{k}": v for k, v in scores.items()},
                       "uniform_nll_per_code_nats": math.log(config.num_embeddings)}
            trainer.log_metrics("eval", metrics)
            trainer.save_metrics("eval", metrics)
        if trainer.is_world_process_zero():
            pictures = _write_pictures(vqvae, prior, output_dir, prior_args.num_samples, training_args.seed)
            pictures.update(write_loss_curves(trainer.state.log_history, output_dir))
            training = {"vqvae": prior.config.vqvae_name_or_path or Path(prior_args.vqvae).name,
                        "vqvae_identity": prior.config.vqvae_identity, "prior_type": prior_args.prior_type,
                        "class_conditional": conditional, "num_train_code_maps": len(train_codes),
                        **({"class_dropout": prior.config.class_dropout} if conditional and prior_args.prior_type ==
                           "transformer" else {}),
                        **training_summary(training_args, train_metrics)}
            write_model_card(output_dir, prior.config, data.name, metrics, pictures=pictures,
                             training=training if training_args.do_train else None,
                             repo_id=training_args.hub_model_id, license=training_args.hub_license,
                             base_model=prior.config.vqvae_name_or_path)
            if trainer.hub_repo_id:
                print(f"pushed to {trainer.push_to_hub()}")
        return {**train_metrics, **metrics}


def sample_grid_labels(prior, num_samples: int) -> tuple[torch.LongTensor | None, list[str] | None]:
    """The labels of a grid of about `num_samples` samples with one row per class (the first 16 classes of a prior
    with more), and the rows' names (`id2label` where the prior records class names): (labels, names), or
    (None, None) for an unconditional prior."""
    num_classes = prior.config.num_classes
    if num_classes == 0:
        return None, None
    classes = list(range(min(num_classes, 16)))
    per_row = max(1, math.ceil(num_samples / len(classes)))
    names = getattr(prior.config, "id2label", None) or {}
    rows = [f"{y} {names[y]}" if str(names.get(y, y)) != str(y) and not str(names.get(y, "")).startswith("LABEL_")
            else str(y) for y in classes]
    return torch.tensor(classes).repeat_interleave(per_row), rows


def sampling_title(prior, guidance_scale: float, temperature: float, top_k, top_p) -> str:
    """How samples were drawn, for a picture's title."""
    knobs = [f"guidance {guidance_scale:g}"] if prior.config.num_classes else []
    knobs.append(f"temperature {temperature:g}")
    if top_k is not None:
        knobs.append(f"top-k {top_k}")
    if top_p is not None and top_p < 1:
        knobs.append(f"top-p {top_p:g}")
    rows = ", one row per class" if prior.config.num_classes else ""
    return f"Samples of the prior{rows} ({', '.join(knobs)})"


@torch.no_grad()
def _write_pictures(vqvae, prior, output_dir: Path, num_samples: int, seed: int) -> dict[str, str]:
    """samples.png (codes drawn from the prior with the library's sampling defaults, decoded; a class-conditional
    prior's with one labelled row per class) and uniform_samples.png (uniformly random codes, decoded: the VQ-VAE
    without a prior)."""
    prior.eval()
    generator = torch.Generator(device=prior.device).manual_seed(seed)
    labels, rows = sample_grid_labels(prior, num_samples)
    guidance = code_priors.resolve_guidance_scale(prior, None)
    samples = vqvae.sample(num_samples if labels is None else len(labels), generator=generator, prior=prior,
                           class_labels=labels)
    samples = unit_images(vqvae, samples).cpu()
    title = sampling_title(prior, guidance, code_priors.default_temperature(prior), None, None)
    if rows is None:
        plot_samples(samples, output_dir / "samples.png")
    else:
        plot_labelled_rows(samples, rows, output_dir / "samples.png", title=title)
    generator = torch.Generator(device=vqvae.device).manual_seed(seed)
    plot_samples(unit_images(vqvae, vqvae.sample(num_samples, generator=generator)).cpu(),
                 output_dir / "uniform_samples.png")
    return {f"{title}, decoded by the VQ-VAE": "samples.png",
            "Baseline: uniformly random codes, decoded (the VQ-VAE without a prior)": "uniform_samples.png"}
