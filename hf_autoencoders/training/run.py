"""One training run, from arguments to a saved, documented model: what `examples/train_*.py` and
`hf-autoencoders train` call.

    model_args, data_args, training_args = parse_args(model_type="vqvae")
    metrics = run_training(model_args, data_args, training_args)
"""

import logging
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModel, set_seed

from ..data import ImageCollator, UnreadableImageError, as_image_split, first_items, load_image_dataset
from ..evaluation import domain_features, evaluate, quality_metrics
from ..hub import HubPushCallback, push_to_hub, write_model_card
from ..models import autoencoder_classes
from ..plots import plot_loss_curves, plot_reconstructions, plot_samples
from ..results import write_json
from .arguments import DataArguments, ModelArguments, build_config, requested_settings, training_arguments
from .checkpoints import check_output_dir, check_resume_settings, resolve_checkpoint
from .trainer import AutoencoderTrainer

logger = logging.getLogger(__name__)
HYPERPARAMETERS = (
    "learning_rate", "per_device_train_batch_size", "max_steps", "num_train_epochs", "lr_scheduler_type",
    "max_grad_norm", "weight_decay", "seed",
)


def fit(model, train_dataset, eval_dataset=None, *, output_dir, collator=None, **training_kwargs):
    """Train `model` on a dataset with `AutoencoderTrainer` and return the trainer, for use from Python (studies,
    benchmarks, notebooks). `training_kwargs` are `TrainingArguments` fields (max_steps, learning_rate, ...);
    nothing is checkpointed unless `save_strategy` says so.

    The datasets may be torch datasets of `{"pixel_values", ["labels"]}` items (what `load_image_dataset` gives), or
    a dataset name, a local folder, or a `datasets` `Dataset`, `DatasetDict`, `IterableDataset` (a stream: pass
    `max_steps`) of raw images, which are loaded at the model's image size (the train split of `train_dataset`,
    the test split of `eval_dataset`).

        trainer = fit(VAEModel(VAEConfig()), data.train, data.test, output_dir="runs/vae", max_steps=500)
        trainer = fit(VAEModel(VAEConfig()), "ylecun/mnist", output_dir="runs/vae", max_steps=500)
    """
    size = (model.config.image_size, model.config.num_channels)
    train_dataset = as_image_split(train_dataset, "train", *size)
    eval_dataset = None if eval_dataset is None else as_image_split(eval_dataset, "test", *size)
    defaults = {}
    if isinstance(train_dataset, torch.utils.data.IterableDataset):
        defaults["accelerator_config"] = {"dispatch_batches": False}  # see `_read_streams_per_process`
    args = training_arguments(output_dir, **{**defaults, **training_kwargs})
    trainer = AutoencoderTrainer(
        model=model, args=args, data_collator=collator or ImageCollator(), train_dataset=train_dataset,
        eval_dataset=eval_dataset,
    )
    trainer.train()
    return trainer


def check_request(model_args: ModelArguments, data_args: DataArguments, training_args) -> str | None:
    """Refuse, before any data is loaded, a run that would write over a user's files, resume from an incomplete or
    foreign checkpoint or with other settings, or evaluate a random model; return the checkpoint to resume from."""
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    check_output_dir(training_args.output_dir, data_args.overwrite_output_dir, resume=checkpoint is not None)
    if training_args.do_eval and not training_args.do_train and model_args.model_name_or_path is None:
        raise ValueError("--do_eval without --do_train evaluates an untrained, random model. Add --do_train, or pass "
                         "--model_name_or_path with a trained model to evaluate it.")
    if checkpoint is not None:
        config_class, _ = autoencoder_classes(model_args.model_type)
        check_resume_settings(checkpoint, config_class.model_type, requested_settings(model_args))
    if data_args.streaming and training_args.do_train and training_args.max_steps <= 0:
        raise ValueError("--streaming needs --max_steps: a stream has no length to count epochs by.")
    return checkpoint


def load_training_data(data_args: DataArguments, training_args):
    """The train and test splits the arguments name. The main process of each machine decodes (into the decoded
    cache) while the others wait, then they map its file."""
    with training_args.main_process_first(local=True, desc="loading and decoding the images"):
        data = load_image_dataset(
            data_args.dataset_name,
            config_name=data_args.dataset_config_name,
            image_size=data_args.image_size,
            num_channels=data_args.num_channels,
            image_column=data_args.image_column,
            label_column=data_args.label_column,
            max_samples={"train": data_args.max_train_samples, "test": data_args.max_eval_samples},
            streaming=data_args.streaming,
            shuffle_seed=training_args.seed,
            shuffle_buffer_size=data_args.shuffle_buffer_size,
            in_memory_max_gb=data_args.in_memory_max_gb,
            num_workers=training_args.dataloader_num_workers,
            skip_bad_images=data_args.skip_bad_images,
            cache=data_args.decoded_cache,
            cache_dir=data_args.decoded_cache_dir,
        )
    if isinstance(data.train, torch.utils.data.IterableDataset):
        _read_streams_per_process(training_args)
    return data


def build_model(model_args: ModelArguments, data, checkpoint: str | None):
    """The model to train: the one a checkpoint holds (resuming), a pretrained one, or a new one of the arguments'
    family and size for the data's image shape."""
    _, model_class = autoencoder_classes(model_args.model_type)
    config = build_config(model_args, data.image_size, data.num_channels)
    if checkpoint is not None:  # the run continues with the model its checkpoint holds
        config = AutoConfig.from_pretrained(checkpoint)
    if (config.image_size, config.num_channels) != (data.image_size, data.num_channels):
        raise ValueError(
            f"The model takes {config.num_channels}x{config.image_size}x{config.image_size} images but the data is "
            f"{data.num_channels}x{data.image_size}x{data.image_size}; pass --image_size {config.image_size} "
            f"--num_channels {config.num_channels}."
        )
    if model_args.model_name_or_path is not None and checkpoint is None:
        return AutoModel.from_pretrained(model_args.model_name_or_path)
    return model_class(config)


def run_training(model_args: ModelArguments, data_args: DataArguments, training_args) -> dict:
    """Train, evaluate and save a model with its image processor, pictures, metrics and model card."""
    transformers.utils.logging.set_verbosity_warning()
    checkpoint = check_request(model_args, data_args, training_args)
    set_seed(training_args.seed)
    data = load_training_data(data_args, training_args)
    train_set, eval_set = data.train, data.test
    model = build_model(model_args, data, checkpoint)
    processor = data.image_processor(do_binarize=data_args.binarize)
    collator = ImageCollator(binarize=data_args.binarize, stochastic_binarization=data_args.stochastic_binarization)

    training_args.remove_unused_columns = False
    # The Trainer would push with transformers' blank card and every file of the folder; this library pushes the
    # allow-listed files with its own card (`hub.HubPushCallback` during training, as --hub_strategy says).
    push, training_args.push_to_hub = training_args.push_to_hub, False
    repo_id = training_args.hub_model_id or Path(training_args.output_dir).name
    example_images = collator(first_items(eval_set, 8))["pixel_values"]
    trainer = AutoencoderTrainer(
        model=model,
        args=training_args,
        data_collator=collator,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=processor,
        image_log_pixel_values=example_images,
    )
    if push and training_args.hub_strategy != "end":
        trainer.add_callback(HubPushCallback(repo_id, training_args.hub_strategy, token=training_args.hub_token,
                                             private=training_args.hub_private_repo))

    metrics = {}
    if training_args.do_train:
        try:
            result = trainer.train(resume_from_checkpoint=checkpoint)
        except UnreadableImageError as err:  # a lazy or streamed image, met during training
            raise UnreadableImageError(f"{_original_message(err)} {_save_progress(trainer)}") from err
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
        write_run_outputs(trainer.model, data.name, eval_set, collator, metrics, output_dir, training_args,
                          train_set=train_set,
                          log_history=trainer.state.log_history)
        if push:
            url = push_to_hub(output_dir, repo_id, token=training_args.hub_token,
                              private=training_args.hub_private_repo,
                              include_checkpoints=training_args.hub_strategy == "all_checkpoints")
            print(f"pushed to {url}")
    return metrics


def write_run_outputs(model, dataset_name, eval_set, collator, metrics, output_dir, training_args,
                      log_history=None, train_set=None) -> dict:
    """Write reconstructions.png, samples.png, loss_curves.png, eval_results.json and README.md (the model card)
    into `output_dir`; return the test metrics: those of `evaluate` and, with `training_args.fid` and labelled
    `train_set` images, the Fréchet distance, KID, precision, recall, density and coverage of the test
    reconstructions and of as many samples, in domain features (`evaluation.quality_metrics`)."""
    output_dir = Path(output_dir)
    loader = torch.utils.data.DataLoader(eval_set, batch_size=256, collate_fn=collator)
    test_metrics = evaluate(model, loader, num_importance_samples=64, seed=training_args.seed)
    if getattr(training_args, "fid", False) and train_set is not None:
        test_metrics.update(_quality_metrics(model, train_set, loader, dataset_name, training_args.seed))
    training_figures = {k: v for k, v in metrics.items() if k.startswith("train_") and isinstance(v, float)}
    pictures = {}
    model.eval()
    with torch.no_grad():
        originals = collator(first_items(eval_set, 16))["pixel_values"].to(model.device)
        reconstructions = model(originals, return_loss=False).reconstruction.clamp(0, 1)
        plot_reconstructions(originals.cpu(), reconstructions.cpu(), output_dir / "reconstructions.png")
        pictures["Reconstructions (top: test images, bottom: reconstructions)"] = "reconstructions.png"
        generator = torch.Generator(device=model.device).manual_seed(training_args.seed)
        plot_samples(model.sample(32, generator=generator).clamp(0, 1).cpu(), output_dir / "samples.png")
        pictures["Samples"] = "samples.png"
    if log_history and any("loss" in entry for entry in log_history):
        plot_loss_curves(log_history, output_dir / "loss_curves.png")
        pictures["Loss curves"] = "loss_curves.png"
    hyperparameters = {k: getattr(training_args, k) for k in HYPERPARAMETERS if hasattr(training_args, k)}
    write_model_card(output_dir, model.config, test_metrics, dataset_name, hyperparameters, pictures,
                     repo_id=getattr(training_args, "hub_model_id", None), training_figures=training_figures,
                     license=getattr(training_args, "hub_license", None))
    write_json(output_dir / "all_results.json", {**metrics, **test_metrics})
    return test_metrics


def _quality_metrics(model, train_set, test_loader, dataset_name, seed: int, max_train_images: int = 10_000) -> dict:
    """`quality_metrics` in domain features (a classifier of up to `max_train_images` labelled training images,
    trained once and cached); empty when the training images carry no labels or the test set is too small."""
    labelled = ImageCollator(return_labels=True)
    first = next(iter(train_set), None)
    if not (isinstance(first, dict) and "labels" in first):
        return {}
    images, labels, count = [], [], 0
    for batch in torch.utils.data.DataLoader(train_set, batch_size=512, collate_fn=labelled):
        images.append(batch["pixel_values"])
        labels.append(batch["labels"])
        count += len(batch["labels"])
        if count >= max_train_images:
            break
    features = domain_features(torch.cat(images)[:max_train_images], torch.cat(labels)[:max_train_images],
                               seed=seed, dataset_name=dataset_name, device=model.device)
    try:
        return quality_metrics(model, test_loader, features=features, seed=seed)
    except ValueError as err:  # fewer than the 6 images density and coverage need
        logger.warning("No Fréchet distance for the card: %s", err)
        return {}


def _read_streams_per_process(training_args) -> None:
    """Let each process read its own part of a stream: accelerate then splits a `datasets.IterableDataset` by its
    shards (`IterableDataset.shard`, as `datasets.distributed.split_dataset_by_node` does) or, with fewer shards than
    processes, by batches, instead of process 0 reading and decoding every batch and sending it on."""
    training_args.accelerator_config.dispatch_batches = False


def _original_message(err: Exception) -> str:
    """The message of an error raised in a DataLoader worker, without the worker's traceback around it."""
    last = str(err).strip().splitlines()[-1]
    prefix = f"{type(err).__module__}.{type(err).__name__}: "
    return last.removeprefix(prefix) if "Original Traceback" in str(err) else str(err)


def _save_progress(trainer) -> str:
    """Save a checkpoint of the steps trained before an error in the data (one process: under several, the others
    are still inside the step), and say how to go on."""
    step = trainer.state.global_step
    if step == 0 or trainer.args.world_size > 1:
        return "Checkpoints saved before the error are kept."
    trainer._save_checkpoint(trainer.model, trial=None)
    return (f"The {step} steps trained are saved in {Path(trainer.args.output_dir) / f'checkpoint-{step}'}; go on "
            "with --resume_from_checkpoint latest once the image is fixed (or with --skip_bad_images).")
