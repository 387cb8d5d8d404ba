"""One training run, from arguments to a saved, documented model: the public steps that `examples/train_autoencoder.py`
shows in order, and `run_training`, which takes them for `hf-autoencoders train`.

    model_args, data_args, training_args = parse_args(model_type="vqvae")
    metrics = run_training(model_args, data_args, training_args)
"""

import logging
from pathlib import Path

import torch
from transformers import AutoConfig, set_seed

from ..data import ImageCollator, as_image_split, check_class_labels, first_items, load_image_dataset
from ..evaluation import domain_features
from ..hub import load_model, write_model_card
from ..models import autoencoder_classes
from ..plots import plot_loss_curves, plot_reconstructions, plot_samples
from .arguments import DataArguments, ModelArguments, build_config, requested_settings, training_arguments
from .checkpoints import (
    check_not_input,
    check_output_dir,
    check_resume_settings,
    clear_previous_run,
    output_dir_lock,
    resolve_checkpoint,
)
from .trainer import AutoencoderTrainer

logger = logging.getLogger(__name__)
HYPERPARAMETERS = (
    "learning_rate", "per_device_train_batch_size", "max_steps", "num_train_epochs", "lr_scheduler_type",
    "max_grad_norm", "weight_decay", "seed",
)
FID_TRAIN_IMAGES = 10_000  # labelled training images the classifier of the domain features learns from


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
    """Refuse, before any data is loaded, a run that would write over a user's files or into its own input model or
    into a folder another run owns, resume from an incomplete or foreign checkpoint or with other settings, or
    evaluate a random model; return the checkpoint to resume from."""
    if not (training_args.do_train or training_args.do_eval):
        raise ValueError("nothing to do: pass --do_train to train a model (and --do_eval to evaluate it), or --do_eval "
                         "with --model_name_or_path to evaluate a trained one.")
    check_not_input(training_args.output_dir, {"--model_name_or_path": model_args.model_name_or_path})
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
    labels = getattr(data.train, "labels", None)
    if training_args.do_eval and training_args.fid and labels is not None:  # checked now, not after training
        check_class_labels(labels[:FID_TRAIN_IMAGES], data.name, "pass --fid false to evaluate without the Fréchet "
                           "distance (its features are a classifier of the labelled training images)")
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
        return load_model(model_args.model_name_or_path, "--model_name_or_path", config=config).train()
    return model_class(config)


def fid_features(data, training_args):
    """The features a run's Fréchet distance and its companions are measured in: a SmallCNN trained on the first
    `FID_TRAIN_IMAGES` labelled training images of `data` (by the main process of each machine, then read from the
    cache by the others: `evaluation.domain_features`); None when the training images carry no labels."""
    first = next(iter(data.train), None)
    if not (isinstance(first, dict) and "labels" in first):
        return None
    images, labels, count = [], [], 0
    for batch in torch.utils.data.DataLoader(data.train, batch_size=512, collate_fn=ImageCollator(return_labels=True)):
        images.append(batch["pixel_values"])
        labels.append(batch["labels"])
        count += len(batch["labels"])
        if count >= FID_TRAIN_IMAGES:
            break
    labels = check_class_labels(torch.cat(labels)[:FID_TRAIN_IMAGES], data.name, "pass --fid false")
    with training_args.main_process_first(local=True, desc="training the classifier of the Fréchet distance"):
        return domain_features(torch.cat(images)[:FID_TRAIN_IMAGES], labels,
                               seed=training_args.seed, dataset_name=data.name, device=training_args.device)


def write_pictures(model, test_set, collator, output_dir, log_history=None, seed: int = 0) -> dict[str, str]:
    """reconstructions.png (16 test images over their reconstructions), samples.png (32 samples) and, when the run
    logged a training loss, loss_curves.png, in `output_dir`; returns {title on the card: file}."""
    output_dir = Path(output_dir)
    model.eval()
    with torch.no_grad():
        originals = collator(first_items(test_set, 16))["pixel_values"].to(model.device)
        reconstructions = model(originals, return_loss=False).reconstruction.clamp(0, 1)
        plot_reconstructions(originals.cpu(), reconstructions.cpu(), output_dir / "reconstructions.png")
        generator = torch.Generator(device=model.device).manual_seed(seed)
        plot_samples(model.sample(32, generator=generator).clamp(0, 1).cpu(), output_dir / "samples.png")
    pictures = {"Reconstructions (top: test images, bottom: reconstructions)": "reconstructions.png",
                "Samples": "samples.png"}
    return {**pictures, **write_loss_curves(log_history, output_dir)}


def write_loss_curves(log_history, output_dir) -> dict[str, str]:
    """loss_curves.png in `output_dir` when `log_history` (the Trainer's) holds a training loss."""
    if not any("loss" in entry for entry in log_history or []):
        return {}
    plot_loss_curves(log_history, Path(output_dir) / "loss_curves.png")
    return {"Loss curves": "loss_curves.png"}


def training_summary(training_args, train_metrics: dict) -> dict:
    """What a card's Training section shows: the hyperparameters that shape a run, and the figures its training
    measured (train_loss, train_runtime, ...)."""
    figures = {k: v for k, v in train_metrics.items() if k.startswith("train_") and isinstance(v, float)}
    return {**{k: getattr(training_args, k) for k in HYPERPARAMETERS}, **figures}


def run_training(model_args: ModelArguments, data_args: DataArguments, training_args) -> dict:
    """Train a model, evaluate it once (with --do_eval) and save it with its image processor, pictures, metrics and
    model card; push it (with --push_to_hub). The steps of `examples/train_autoencoder.py`. Returns the metrics."""
    checkpoint = check_request(model_args, data_args, training_args)
    with output_dir_lock(training_args.output_dir, training_args):  # the run owns its folder until it ends
        set_seed(training_args.seed)
        data = load_training_data(data_args, training_args)
        model = build_model(model_args, data, checkpoint)
        if data_args.overwrite_output_dir and checkpoint is None and training_args.should_save:
            clear_previous_run(training_args.output_dir)  # the folder never mixes two runs
        processor = data.image_processor(do_binarize=data_args.binarize)
        collator = ImageCollator(binarize=data_args.binarize, stochastic_binarization=data_args.stochastic_binarization)
        trainer = AutoencoderTrainer(
            model=model, args=training_args, data_collator=collator, train_dataset=data.train, eval_dataset=data.test,
            processing_class=processor, image_log_pixel_values=collator(first_items(data.test, 8))["pixel_values"],
        )
        train_metrics, metrics = {}, {}
        if training_args.do_train:
            train_metrics = trainer.train(resume_from_checkpoint=checkpoint).metrics
            trainer.log_metrics("train", train_metrics)
            trainer.save_metrics("train", train_metrics)
            trainer.save_state()
        trainer.save_model()
        if training_args.do_eval:
            features = fid_features(data, training_args) if training_args.fid else None
            metrics = trainer.evaluate(num_importance_samples=64, features=features)
            trainer.log_metrics("eval", metrics)
            trainer.save_metrics("eval", metrics)
        if trainer.is_world_process_zero():
            pictures = write_pictures(model, data.test, collator, training_args.output_dir, trainer.state.log_history,
                                      training_args.seed)
            training = training_summary(training_args, train_metrics) if training_args.do_train else None
            write_model_card(training_args.output_dir, model.config, data.name, metrics, pictures=pictures,
                             training=training, repo_id=training_args.hub_model_id, license=training_args.hub_license)
            if trainer.hub_repo_id:
                print(f"pushed to {trainer.push_to_hub()}")
        return {**train_metrics, **metrics}


def _read_streams_per_process(training_args) -> None:
    """Let each process read its own part of a stream: accelerate then splits a `datasets.IterableDataset` by its
    shards (`IterableDataset.shard`, as `datasets.distributed.split_dataset_by_node` does) or, with fewer shards than
    processes, by batches, instead of process 0 reading and decoding every batch and sending it on."""
    training_args.accelerator_config.dispatch_batches = False
