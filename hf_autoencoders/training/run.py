"""One training run, from arguments to a saved, documented model: what `examples/train_*.py` and
`hf-autoencoders train` call.

    model_args, data_args, training_args = parse_args(model_type="vqvae")
    metrics = run_training(model_args, data_args, training_args)
"""

import json
from pathlib import Path

import torch
import transformers
from transformers import AutoModel, set_seed

from ..data import ImageCollator, load_image_dataset
from ..evaluation import evaluate
from ..hub import push_to_hub, write_model_card
from ..models import autoencoder_classes
from ..plots import plot_loss_curves, plot_reconstructions, plot_samples
from .arguments import AutoencoderTrainingArguments, DataArguments, ModelArguments, build_config
from .checkpoints import check_output_dir, resolve_checkpoint
from .trainer import AutoencoderTrainer

HYPERPARAMETERS = (
    "learning_rate", "per_device_train_batch_size", "max_steps", "num_train_epochs", "lr_scheduler_type",
    "max_grad_norm", "weight_decay", "seed",
)


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


def run_training(model_args: ModelArguments, data_args: DataArguments, training_args) -> dict:
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
        model = autoencoder_classes(model_args.model_type)[1](config)
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
        write_run_outputs(trainer.model, data.name, eval_set, collator, metrics, output_dir, training_args,
                          log_history=trainer.state.log_history)
        if push:
            repo_id = training_args.hub_model_id or output_dir.name
            url = push_to_hub(output_dir, repo_id, token=training_args.hub_token,
                              private=training_args.hub_private_repo)
            print(f"pushed to {url}")
    return metrics


def write_run_outputs(model, dataset_name, eval_set, collator, metrics, output_dir, training_args,
                      log_history=None) -> dict:
    """Write reconstructions.png, samples.png, loss_curves.png, eval_results.json and README.md (the model card)
    into `output_dir`; return the test metrics."""
    output_dir = Path(output_dir)
    loader = torch.utils.data.DataLoader(eval_set, batch_size=256, collate_fn=collator)
    test_metrics = evaluate(model, loader, num_importance_samples=64, seed=training_args.seed)
    test_metrics.update({k: v for k, v in metrics.items() if k.startswith("train_") and isinstance(v, float)})
    pictures = {}
    model.eval()
    with torch.no_grad():
        originals = collator([eval_set[i] for i in range(min(16, len(eval_set)))])["pixel_values"].to(model.device)
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
                     repo_id=getattr(training_args, "hub_model_id", None))
    (output_dir / "all_results.json").write_text(json.dumps({**metrics, **test_metrics}, indent=2) + "\n")
    return test_metrics
