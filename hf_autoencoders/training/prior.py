"""Training a prior over the codes of a trained VQ-VAE: what `examples/train_prior.py` and `hf-autoencoders
train-prior` call. The prior is a gated PixelCNN (`--prior_type pixelcnn`, the default) or a GPT-2 causal language
model over code tokens (`--prior_type transformer`, `models/code_priors.py`).

The VQ-VAE is frozen: every image is encoded once into its (h, w) code map, and the code maps are kept on disk
(`extract_codes`), so a second run with the same VQ-VAE and images reads them back instead of encoding again. The
prior p(c) = prod_{i,j} p(c[i, j] | c[< (i, j)]) is then trained with the transformers `Trainer` on those maps; its
loss is the mean negative log-likelihood per code in nats (log K for the uniform prior the VQ-VAE was trained with).
Both kinds are scored the same way on the test codes (`prior_test_metrics`): nats and bits per code, and bits per
dimension of the image through the VQ-VAE's decoder where its likelihood is discrete.

    prior_args, training_args = parse_prior_args(["--vqvae", "outputs/vqvae", "--output_dir", "outputs/prior",
                                                  "--do_train", "--do_eval"])
    metrics = run_prior_training(prior_args, training_args)
"""

import copy
import hashlib
import json
import logging
import math
import os
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PreTrainedConfig, Trainer, set_seed

from ..data import ImageCollator, ImageTensorDataset, load_image_dataset
from ..hub import write_model_card
from ..models import PixelCNNPriorConfig, PixelCNNPriorModel, VQVAEConfig, code_priors
from ..plots import plot_loss_curves, plot_samples
from ..results import write_json
from .arguments import CODE_CACHE_FOLDER, PriorArguments, training_arguments
from .checkpoints import check_output_dir, resolve_checkpoint

logger = logging.getLogger(__name__)

_CODE_CACHE_VERSION = 1  # bump when extraction changes
_HYPERPARAMETERS = (
    "learning_rate", "per_device_train_batch_size", "max_steps", "num_train_epochs", "lr_scheduler_type",
    "weight_decay", "seed",
)


# ----------------------------------------------------------------------------------------------- code extraction


def _code_dtype(num_embeddings: int) -> torch.dtype:
    """The smallest integer type holding codes in [0, K): uint8, int16 or int32."""
    if num_embeddings <= 256:
        return torch.uint8
    return torch.int16 if num_embeddings <= 2**15 else torch.int32


def _update_with_tensor(digest, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous().reshape(-1)
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    digest.update(tensor.view(torch.uint8).numpy().tobytes())


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
    """sha1 of a model's type, architecture fields and every weight and buffer (the codebook included)."""
    digest = hashlib.sha1(f"v{_CODE_CACHE_VERSION}{model.config.model_type}".encode())
    digest.update(json.dumps(_config_fields(model.config), sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        _update_with_tensor(digest, tensor)
    return digest.hexdigest()


def dataset_fingerprint(dataset) -> str:
    """sha1 of a dataset's images and labels: of the tensors of an `ImageTensorDataset` (or a `Subset` of one), else
    of every item's pixel_values / labels in turn."""
    digest = hashlib.sha1(f"n={len(dataset)}".encode())
    if isinstance(dataset, torch.utils.data.Subset) and isinstance(dataset.dataset, ImageTensorDataset):
        digest.update(dataset_fingerprint(dataset.dataset).encode())
        _update_with_tensor(digest, torch.as_tensor(dataset.indices, dtype=torch.long))
    elif isinstance(dataset, ImageTensorDataset):
        _update_with_tensor(digest, dataset.images)
        if dataset.labels is not None:
            _update_with_tensor(digest, dataset.labels)
    else:
        for i in range(len(dataset)):
            item = dataset[i]
            _update_with_tensor(digest, torch.as_tensor(item["pixel_values"] if isinstance(item, dict) else item))
            if isinstance(item, dict) and "labels" in item:
                _update_with_tensor(digest, torch.as_tensor(item["labels"]))
    return digest.hexdigest()


@torch.no_grad()
def _encode_dataset(vqvae, dataset, batch_size: int, collator, progress: bool):
    """Code maps (N, h, w) in the smallest integer dtype, and labels (N,) or None, in dataset order."""
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
            settings, so a later call with the same model and data reads the file instead of encoding. None: no
            cache.
        collator: turns a list of items into float pixel_values in [0, 1]; default `ImageCollator()`.
        progress: show a tqdm progress bar while encoding.

    Returns:
        `(codes, labels)`: codes of shape (N, h, w) as uint8 (K <= 256), int16 (K <= 32768) or int32, in dataset
        order; labels long (N,), or None when the items carry no "labels".
    """
    if getattr(vqvae.config, "model_type", None) != VQVAEConfig.model_type:
        raise ValueError(f"extract_codes needs a VQ-VAE ({VQVAEConfig.model_type}), got a "
                         f"{getattr(vqvae.config, 'model_type', type(vqvae).__name__)!r} model.")
    if len(dataset) == 0:
        raise ValueError("extract_codes got an empty dataset.")
    collator = collator or ImageCollator()
    path = None
    if cache_dir is not None:
        key = f"{model_fingerprint(vqvae)}/{dataset_fingerprint(dataset)}/{collator!r}"
        key = hashlib.sha1(key.encode()).hexdigest()[:20]
        path = Path(cache_dir) / f"codes-{key}.safetensors"
        if path.is_file():
            try:
                tensors = load_file(path)
                if len(tensors["codes"]) == len(dataset):
                    logger.info("Read %d code maps from %s", len(tensors["codes"]), path)
                    return tensors["codes"], tensors.get("labels")
            except Exception as err:  # a truncated or corrupt cache (safetensors raises its own error type)
                logger.warning("The code cache %s is unreadable (%s); extracting the codes again.", path, err)

    was_training = vqvae.training
    vqvae.eval()
    try:
        codes, labels = _encode_dataset(vqvae, dataset, batch_size, collator, progress)
    finally:
        vqvae.train(was_training)

    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"codes": codes} if labels is None else {"codes": codes, "labels": labels}
        partial = path.with_name(path.name + f".{os.getpid()}.tmp")
        save_file(tensors, partial, metadata={"num_embeddings": str(vqvae.config.num_embeddings),
                                              "num_images": str(len(codes))})
        os.replace(partial, path)  # atomic: a reader never sees half a file
    return codes, labels


class CodeDataset(Dataset):
    """Code maps as prior training examples: `{"input_ids": long (h, w)}`, plus `"class_labels"` (long scalar)
    when `labels` are given (for a class-conditional prior)."""

    def __init__(self, codes: torch.Tensor, labels: torch.Tensor | None = None):
        if codes.ndim != 3 or codes.dtype.is_floating_point:
            raise ValueError(f"codes must be an integer tensor (N, h, w), got {codes.dtype} {tuple(codes.shape)}.")
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


class PriorTrainer(Trainer):
    """The `Trainer`, evaluating the prior's loss only: the targets are the inputs themselves, so there are no
    "labels" for the Trainer to find, and the (N, h, w, K) logits of a test set are never gathered."""

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = model(**inputs).loss
        return loss.detach(), None, None


def fit_prior(prior, train_dataset, eval_dataset=None, *, output_dir, **training_kwargs) -> PriorTrainer:
    """Train a prior of either kind on a `CodeDataset` and return the trainer, for use from Python (benchmarks,
    notebooks). `training_kwargs` are `TrainingArguments` fields; nothing is checkpointed unless asked."""
    trainer = PriorTrainer(model=prior, args=training_arguments(output_dir, **training_kwargs), data_collator=prior_collator(prior), train_dataset=train_dataset,
                           eval_dataset=eval_dataset)
    trainer.train()
    return trainer


@torch.no_grad()
def code_map_nlls(prior, dataset: CodeDataset, batch_size: int = 256) -> torch.Tensor:
    """-log p(c_n | y_n) in nats of every code map of a `CodeDataset`, shape (N,) float64, under a prior of either
    kind (`code_priors.log_prob_codes`)."""
    was_training = prior.training
    prior.eval()
    nlls = []
    try:
        for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_codes):
            labels = batch.get("class_labels")
            log_prob = code_priors.log_prob_codes(prior, batch["input_ids"].to(prior.device),
                                                  None if labels is None else labels.to(prior.device))
            nlls.append(-log_prob.double().cpu())
    finally:
        prior.train(was_training)
    return torch.cat(nlls)


def code_nll(prior, dataset: CodeDataset, batch_size: int = 256) -> float:
    """Mean negative log-likelihood per code in nats, -(1 / (N h w)) sum_n log p(c_n), over a `CodeDataset`."""
    return code_map_nlls(prior, dataset, batch_size).mean().item() / dataset.codes[0].numel()


@torch.no_grad()
def prior_test_metrics(prior, codes: CodeDataset, vqvae=None, images=None, collator=None,
                       batch_size: int = 256) -> dict[str, float]:
    """A prior's test NLL, the same way for both kinds (`code_priors.prior_nll_metrics`): nats and bits per code,
    and, given the VQ-VAE and the `images` the `codes` were extracted from (same order, same `collator`) and where
    the VQ-VAE's likelihood is discrete, bits per dimension of the images, -log p(x | c(x)) - log p(c(x)) over
    D ln 2, with the uniform-prior figure beside it."""
    decoder = None
    if vqvae is not None and images is not None and getattr(vqvae.likelihood, "discrete", False):
        loader = DataLoader(images, batch_size=batch_size, shuffle=False, collate_fn=collator or ImageCollator())
        was_training = vqvae.training
        vqvae.eval()
        try:
            decoder = torch.cat([code_priors.decoder_nll(vqvae, batch["pixel_values"].to(vqvae.device)).double().cpu()
                                 for batch in loader])
        finally:
            vqvae.train(was_training)
    return code_priors.prior_nll_metrics(code_map_nlls(prior, codes, batch_size), prior.config, decoder,
                                         num_pixels=vqvae.config.num_pixels if decoder is not None else None)


def build_prior(prior_args: PriorArguments, vqvae_config, num_classes: int):
    """A new prior of `--prior_type` for the codes of the VQ-VAE with `vqvae_config`: a `PixelCNNPriorModel`, or a
    GPT-2 causal LM whose config records the VQ-VAE (`--vqvae`, K, grid size)."""
    sizes = {k: getattr(prior_args, k) for k in ("hidden_size", "num_layers", "kernel_size", "num_heads")}
    sizes = {k: v for k, v in sizes.items() if v is not None}
    layout = dict(num_embeddings=vqvae_config.num_embeddings, grid_size=vqvae_config.latent_grid_size,
                  num_classes=num_classes)
    if prior_args.prior_type == "pixelcnn":
        return PixelCNNPriorModel(PixelCNNPriorConfig(**layout, **sizes))
    vqvae = prior_args.vqvae
    recorded = str(Path(vqvae).resolve()) if Path(vqvae).exists() else vqvae  # a folder, absolute; or a Hub id
    config = code_priors.transformer_prior_config(**layout, vqvae_name_or_path=recorded, **sizes)
    return AutoModelForCausalLM.from_config(config)


# ------------------------------------------------------------------------------------------------- command line


def load_vqvae(name_or_path: str):
    """The VQ-VAE at `name_or_path`, in eval mode; a clear ValueError for anything else."""
    if Path(name_or_path).exists() and not (Path(name_or_path) / "config.json").is_file():
        raise ValueError(f"--vqvae {name_or_path} is not a model folder (no config.json); pass the --output_dir of "
                         "a VQ-VAE training run (hf-autoencoders train --model_type vqvae).")
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except OSError as err:
        raise FileNotFoundError(f"--vqvae {name_or_path} is neither a model folder nor a model on the Hub that can be "
                                f"reached ({err}).") from None
    if config.model_type != VQVAEConfig.model_type:
        raise ValueError(f"--vqvae {name_or_path} holds a {config.model_type!r} model, but a prior needs a VQ-VAE "
                         f"({VQVAEConfig.model_type!r}); pass the folder of a model trained with --model_type vqvae.")
    return AutoModel.from_pretrained(name_or_path).eval()


def _saved_binarize(name_or_path: str) -> bool:
    path = Path(name_or_path) / "preprocessor_config.json"
    return bool(json.loads(path.read_text()).get("do_binarize", False)) if path.is_file() else False


def run_prior_training(prior_args: PriorArguments, training_args) -> dict:
    """Extract (cached) codes with the VQ-VAE, train and evaluate the prior, and save it with samples.png,
    uniform_samples.png, loss_curves.png, all_results.json and a model card. Returns the metrics."""
    transformers.utils.logging.set_verbosity_warning()
    vqvae = load_vqvae(prior_args.vqvae)
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    check_output_dir(training_args.output_dir, prior_args.overwrite_output_dir, resume=checkpoint is not None)
    set_seed(training_args.seed)
    output_dir = Path(training_args.output_dir)
    vqvae.to(training_args.device)

    config = vqvae.config
    data = load_image_dataset(prior_args.dataset_name, image_size=config.image_size, num_channels=config.num_channels,
                              max_samples={"train": prior_args.max_train_samples, "test": prior_args.max_eval_samples})
    train_set, test_set = data.train, data.test
    if prior_args.class_conditional and data.num_labels is None:
        raise ValueError(f"--class_conditional needs labels, but {data.name} has no label column.")

    binarize = _saved_binarize(prior_args.vqvae) if prior_args.binarize is None else prior_args.binarize
    cache_dir = prior_args.code_cache_dir or output_dir / CODE_CACHE_FOLDER
    batch_size = training_args.per_device_eval_batch_size
    collator = ImageCollator(binarize=binarize)
    train_codes, train_labels = extract_codes(vqvae, train_set, batch_size, cache_dir, collator)
    test_codes, test_labels = extract_codes(vqvae, test_set, batch_size, cache_dir, collator)
    conditional = prior_args.class_conditional
    train_codes = CodeDataset(train_codes, train_labels if conditional else None)
    test_codes = CodeDataset(test_codes, test_labels if conditional else None)

    prior = build_prior(prior_args, config, data.num_labels if conditional else 0)
    training_args.remove_unused_columns = False
    trainer = PriorTrainer(model=prior, args=training_args, data_collator=prior_collator(prior),
                           train_dataset=train_codes, eval_dataset=test_codes)

    metrics = {}
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=checkpoint)
        metrics.update(result.metrics)
    if training_args.do_eval:
        metrics.update(trainer.evaluate())
    test_metrics = {f"test_{k}": v for k, v in
                    prior_test_metrics(prior, test_codes, vqvae, test_set, collator, batch_size).items()}
    test_metrics["uniform_nll_per_code_nats"] = math.log(config.num_embeddings)
    metrics.update(test_metrics)

    trainer.save_model()
    if training_args.do_train:
        trainer.save_state()
    if trainer.is_world_process_zero():
        pictures = _write_pictures(vqvae, prior, output_dir, prior_args.num_samples, training_args.seed)
        if any("loss" in entry for entry in trainer.state.log_history):
            plot_loss_curves(trainer.state.log_history, output_dir / "loss_curves.png")
            pictures["Loss curves"] = "loss_curves.png"
        hyperparameters = {"vqvae": prior_args.vqvae, "prior_type": prior_args.prior_type,
                           "class_conditional": conditional, "num_train_code_maps": len(train_codes)}
        hyperparameters.update({k: getattr(getattr(training_args, k), "value", getattr(training_args, k))
                                for k in _HYPERPARAMETERS})  # enums (lr_scheduler_type) as their value
        card_metrics = {**test_metrics, **{k: v for k, v in metrics.items() if k == "eval_loss"}}
        card_config, usage = prior.config, prior_usage
        if prior_args.prior_type == "transformer":  # a GPT2Config: the card's name and backbone, not saved with it
            card_config = copy.deepcopy(prior.config)
            card_config.display_name, card_config.backbone = "transformer prior", "GPT-2"
            usage = transformer_prior_usage
        write_model_card(output_dir, card_config, card_metrics, data.name, hyperparameters, pictures,
                         repo_id=getattr(training_args, "hub_model_id", None), usage=usage,
                         license=training_args.hub_license, base_model=prior_args.vqvae,
                         task_type="unconditional-image-generation")
        write_json(output_dir / "all_results.json", {**metrics, "vqvae": prior_args.vqvae, "dataset": data.name})
    return metrics


@torch.no_grad()
def _write_pictures(vqvae, prior, output_dir: Path, num_samples: int, seed: int) -> dict[str, str]:
    """samples.png (codes drawn from the prior; for a conditional prior, class k in column k when there are at most
    16 classes) and uniform_samples.png (uniformly random codes)."""
    prior.eval()
    generator = torch.Generator(device=prior.device).manual_seed(seed)
    class_labels, nrow = None, 8
    if prior.config.num_classes > 0:
        class_labels = torch.arange(num_samples, device=prior.device) % prior.config.num_classes
        nrow = prior.config.num_classes if prior.config.num_classes <= 16 else 8
    samples = vqvae.sample(num_samples, generator=generator, prior=prior, class_labels=class_labels)
    plot_samples(samples.clamp(0, 1).cpu(), output_dir / "samples.png", nrow=nrow)
    generator = torch.Generator(device=vqvae.device).manual_seed(seed)
    plot_samples(vqvae.sample(num_samples, generator=generator).clamp(0, 1).cpu(), output_dir / "uniform_samples.png")
    return {"Samples (codes from the prior, decoded by the VQ-VAE)": "samples.png",
            "Baseline (uniformly random codes, decoded)": "uniform_samples.png"}


def prior_usage(name: str) -> list[str]:
    """The card's usage snippet for a prior repository `name`."""
    return [
        "```python",
        "import torch",
        "from transformers import AutoModel",
        "",
        f'prior = AutoModel.from_pretrained("{name}", trust_remote_code=True)',
        'vqvae = AutoModel.from_pretrained("path/to/the/vqvae", trust_remote_code=True)  # the one it was trained on',
        "images = vqvae.sample(16, generator=torch.Generator().manual_seed(0), prior=prior)",
        "```",
    ]


def transformer_prior_usage(name: str) -> list[str]:
    """The card's usage snippet for a transformer prior repository `name` (plain transformers loads it)."""
    return [
        "```python",
        "import torch",
        "from transformers import AutoModel, AutoModelForCausalLM",
        "",
        f'prior = AutoModelForCausalLM.from_pretrained("{name}")  # a GPT-2 over code tokens: no remote code',
        "vqvae = AutoModel.from_pretrained(prior.config.vqvae_name_or_path, trust_remote_code=True)",
        "images = vqvae.sample(16, generator=torch.Generator().manual_seed(0), prior=prior, top_k=100)",
        "```",
        "",
        "Tokens 0 .. K-1 are the VQ-VAE's codes in raster order, K is the start token and K+1+y the token of class y "
        "(`hf_autoencoders.models.code_priors`).",
    ]
