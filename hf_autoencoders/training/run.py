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
from ..diffusers_compat import from_diffusers, read_diffusers_config
from ..evaluation import FEATURE_TRAIN_IMAGES, dataset_features, scaling_factors
from ..evaluation.metrics import unit_images
from ..hub import load_model, public_name, write_latent_scale, write_model_card
from ..models import autoencoder_classes
from ..models.image_processing_autoencoders import normalization
from ..plots import plot_code_usage, plot_reconstructions, plot_samples
from .arguments import DataArguments, ModelArguments, build_config, requested_settings, training_arguments
from .checkpoints import (
    check_not_input,
    check_output_dir,
    check_resume_settings,
    clear_previous_run,
    output_dir_lock,
    resolve_checkpoint,
)
from .recipe import check_recipe_resume
from .trainer import AutoencoderTrainer, training_summary, write_loss_curves

logger = logging.getLogger(__name__)


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
        model=model, args=args, data_collator=collator or ImageCollator(pixel_range=model.config.pixel_range),
        train_dataset=train_dataset,
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
    if model_args.train_decoder_only and model_args.model_name_or_path is None and checkpoint is None:
        raise ValueError("--train_decoder_only fine-tunes the decoder of a trained model: pass --model_name_or_path "
                         "(a run folder, or a diffusers AutoencoderKL / VQModel folder such as a Stable Diffusion VAE "
                         "saved locally).")
    if checkpoint is not None:
        config_class, _ = autoencoder_classes(model_args.model_type)
        check_resume_settings(checkpoint, config_class.model_type, requested_settings(model_args))
        check_recipe_resume(checkpoint, training_args)
    if training_args.generability:
        if not hasattr(autoencoder_classes(model_args.model_type)[1], "check_prior"):  # no codes to generate
            raise ValueError(f"--generability measures how well a VQ-VAE's codes can be generated; --model_type "
                             f"{model_args.model_type} has no codes. Drop --generability.")
        if not training_args.do_eval:
            raise ValueError("--generability is measured with the evaluation: add --do_eval.")
        if training_args.world_size > 1:
            raise ValueError("--generability trains a prior, which a multi-process run cannot do inside its "
                             "evaluation; measure it after training: hf-autoencoders evaluate OUTPUT_DIR "
                             "--generability.")
        if data_args.streaming:
            raise ValueError("--generability needs the training images in memory to extract their codes; drop "
                             "--streaming, or measure it after training on a prepared dataset.")
    if data_args.streaming and training_args.do_train and training_args.max_steps <= 0:
        raise ValueError("--streaming needs --max_steps: a stream has no length to count epochs by.")
    return checkpoint


def load_training_data(data_args: DataArguments, training_args):
    """The train and test splits the arguments name. The main process of each machine decodes (into the decoded
    cache) while the others wait, then they map its file."""
    name_or_path, load_kwargs = data_args.source()
    with training_args.main_process_first(local=True, desc="loading and decoding the images"):
        data = load_image_dataset(
            name_or_path,
            load_kwargs=load_kwargs,
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
        check_class_labels(labels[:FEATURE_TRAIN_IMAGES], data.name, "pass --fid false to evaluate without the Fréchet "
                           "distance (its features are a classifier of the labelled training images)")
    return data


def build_model(model_args: ModelArguments, data, checkpoint: str | None):
    """The model to train: the one a checkpoint holds (resuming), a pretrained one (a run folder, or a diffusers
    AutoencoderKL / VQModel folder, converted), or a new one of the arguments' family and size for the data's image
    shape; its encoder frozen with --train_decoder_only."""
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
        path = model_args.model_name_or_path
        if read_diffusers_config(path) is not None:
            model = from_diffusers(path)
        else:
            model = load_model(path, "--model_name_or_path", config=config).train()
    else:
        model = model_class(config)
    if model_args.train_decoder_only:
        model.freeze_encoder()
    return model


def fid_features(data, training_args):
    """The features a run's Fréchet distance and its companions are measured in: the dataset's feature network
    (`evaluation.dataset_features`, the one `hf-autoencoders evaluate` uses too), trained by the main process of each
    machine and read from the cache by the others; None when the training images carry no labels."""
    with training_args.main_process_first(local=True, desc="training the classifier of the Fréchet distance"):
        return dataset_features(data.train, num_classes=data.num_labels, dataset_name=public_name(data.name),
                                device=training_args.device)


def write_pictures(model, test_set, collator, output_dir, log_history=None, seed: int = 0,
                   code_histogram=None) -> dict[str, str]:
    """reconstructions.png (16 test images and their reconstructions, in labelled rows), samples.png (32 samples; a
    VQ-VAE's are uniformly random codes, and titled so), when the run logged a training loss loss_curves.png, and
    with the evaluation's `code_histogram` (a model with codes, `AutoencoderTrainer.code_histogram`) code_usage.png,
    in `output_dir`; returns {title on the card: file}."""
    output_dir = Path(output_dir)
    model.eval()
    with torch.no_grad():
        originals = collator(first_items(test_set, 16))["pixel_values"].to(model.device)  # in the model's range
        reconstructions = unit_images(model, model(originals, return_loss=False).reconstruction)
        plot_reconstructions(unit_images(model, originals).cpu(), reconstructions.cpu(),
                             output_dir / "reconstructions.png")
        generator = torch.Generator(device=model.device).manual_seed(seed)
        plot_samples(unit_images(model, model.sample(32, generator=generator)).cpu(), output_dir / "samples.png")
    samples = "Samples"
    if hasattr(model, "check_prior"):  # a VQ-VAE samples uniformly random codes: say so, they are no real samples
        samples = ("Uniformly random codes, decoded (the VQ-VAE without a prior; a prior over its codes, "
                   "`hf-autoencoders train-prior`, generates)")
    pictures = {"Reconstructions": "reconstructions.png",
                samples: "samples.png"}
    return {**pictures, **write_loss_curves(log_history, output_dir), **write_code_usage(code_histogram, output_dir)}


def write_code_usage(histogram, output_dir) -> dict[str, str]:
    """code_usage.png in `output_dir`: the evaluation set's codes sorted by use, one line per codebook (per depth of
    residual quantization), when the model has codes (`histogram`, (depth, K), not None)."""
    if histogram is None:
        return {}
    plot_code_usage(histogram, Path(output_dir) / "code_usage.png", title="codebook usage over the test set")
    return {"Codebook usage over the test set (codes sorted by use; dead codes where a line stops short)":
            "code_usage.png"}


def measure_latent_scale(model, data, model_args: ModelArguments, training_args) -> dict | None:
    """The scaling and shift factors of a model whose latent a diffusion model trains on (a latent map: the ldm
    backbone, or `latent_channels`), measured on the whole training split and checked on the test split
    (`evaluation.scaling_factors`), set in its config and written into the saved config.json (atomically); what
    the card states. A decoder-only run keeps the factors the model had (its latents did not change: a diffusion
    model trained on them stays valid). None for other models, or when nothing was trained."""
    config = model.config
    spatial = config.backbone == "ldm" or getattr(config, "latent_channels", None) is not None
    if not (spatial and training_args.do_train):
        return None
    if model_args.train_decoder_only and config.scaling_factor is not None:
        return None
    factors = scaling_factors(model, data.train, data.test, batch_size=training_args.per_device_eval_batch_size,
                              seed=training_args.seed, progress=not training_args.disable_tqdm)
    config.scaling_factor, config.shift_factor = factors["scaling_factor"], factors["shift_factor"]
    write_latent_scale(training_args.output_dir, factors)
    logger.info("scaling_factor %.6g, shift_factor %.6g (scaled test latents: mean %.3g, std %.3g)",
                factors["scaling_factor"], factors["shift_factor"], factors.get("scaled_test_mean", float("nan")),
                factors.get("scaled_test_std", float("nan")))
    return factors


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
        pixel_range = model.config.pixel_range
        processor = data.image_processor(do_binarize=data_args.binarize, **normalization(pixel_range))
        collator = ImageCollator(binarize=data_args.binarize, stochastic_binarization=data_args.stochastic_binarization,
                                 pixel_range=pixel_range)
        trainer = AutoencoderTrainer(
            model=model, args=training_args, data_collator=collator, train_dataset=data.train, eval_dataset=data.test,
            processing_class=processor, image_log_pixel_values=collator(first_items(data.test, 8))["pixel_values"],
        )
        train_metrics, metrics = trainer.train_and_save(checkpoint), {}
        if training_args.do_eval:
            features = fid_features(data, training_args) if training_args.fid or training_args.generability else None
            metrics = trainer.evaluate(num_importance_samples=64, features=features if training_args.fid else None)
            if training_args.generability:
                from .generability import generability  # it trains a prior: prior.py imports this module

                metrics.update(generability(model, data.train, data.test, features=[features] if features else [],
                                            collator=collator, seed=training_args.seed))
            trainer.log_metrics("eval", metrics)
            trainer.save_metrics("eval", metrics)
        if trainer.is_world_process_zero():
            latent_scale = measure_latent_scale(model, data, model_args, training_args)
            pictures = write_pictures(model, data.test, collator, training_args.output_dir, trainer.state.log_history,
                                      training_args.seed, trainer.code_histogram)
            write_model_card(training_args.output_dir, model.config, data.name, metrics, pictures=pictures,
                             training=training_summary(training_args, train_metrics) if training_args.do_train else None,
                             repo_id=training_args.hub_model_id, license=training_args.hub_license,
                             latent_scale=latent_scale,
                             recipe=trainer.recipe.description() if trainer.recipe else None)
            if trainer.hub_repo_id:
                print(f"pushed to {trainer.push_to_hub()}")
        return {**train_metrics, **metrics}


def _read_streams_per_process(training_args) -> None:
    """Let each process read its own part of a stream: accelerate then splits a `datasets.IterableDataset` by its
    shards (`IterableDataset.shard`, as `datasets.distributed.split_dataset_by_node` does) or, with fewer shards than
    processes, by batches, instead of process 0 reading and decoding every batch and sending it on."""
    training_args.accelerator_config.dispatch_batches = False
