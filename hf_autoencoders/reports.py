"""What a finished training run leaves beside its weights: pictures, test metrics and the model card."""

import json
from pathlib import Path

import torch

from .hub import write_model_card
from .metrics import evaluate_model
from .plots import plot_loss_curves, plot_reconstructions, plot_samples

HYPERPARAMETERS = (
    "learning_rate", "per_device_train_batch_size", "max_steps", "num_train_epochs", "lr_scheduler_type",
    "max_grad_norm", "weight_decay", "seed",
)


def generate_samples(model, num_samples: int, seed: int = 0, prior=None) -> torch.Tensor:
    """Images from the model's generator: N(0, I) decoded (AE, VAE), codes from `prior` or uniform (VQ-VAE)."""
    generator = torch.Generator(device=model.device).manual_seed(seed)
    if prior is not None:
        return model.sample(num_samples, generator=generator, prior=prior)
    return model.sample(num_samples, generator=generator)


def write_run_outputs(model, data, eval_set, collator, metrics, output_dir, model_args, data_args, training_args,
                      log_history=None, prior=None) -> dict:
    """Write reconstructions.png, samples.png, loss_curves.png, eval_results.json and README.md (the model card)
    into `output_dir`; return the test metrics."""
    output_dir = Path(output_dir)
    model.eval()
    test_metrics = evaluate_model(model, _pixel_batches(eval_set, collator), num_importance_samples=64,
                                  progress=False)
    test_metrics.update({k: v for k, v in metrics.items() if k.startswith("train_") and isinstance(v, float)})
    pictures = {}
    with torch.no_grad():
        originals = collator([eval_set[i] for i in range(min(16, len(eval_set)))])["pixel_values"].to(model.device)
        reconstructions = model(originals, return_loss=False).reconstruction.clamp(0, 1)
        plot_reconstructions(originals.cpu(), reconstructions.cpu(), output_dir / "reconstructions.png")
        pictures["Reconstructions (top: test images, bottom: reconstructions)"] = "reconstructions.png"
        plot_samples(generate_samples(model, 32, seed=training_args.seed, prior=prior).clamp(0, 1).cpu(),
                     output_dir / "samples.png")
        pictures["Samples"] = "samples.png"
    if log_history and any("loss" in entry for entry in log_history):
        plot_loss_curves(log_history, output_dir / "loss_curves.png")
        pictures["Loss curves"] = "loss_curves.png"
    hyperparameters = {k: getattr(training_args, k) for k in HYPERPARAMETERS if hasattr(training_args, k)}
    write_model_card(output_dir, model.config, test_metrics, data.name, hyperparameters, pictures,
                     repo_id=getattr(training_args, "hub_model_id", None))
    (output_dir / "all_results.json").write_text(json.dumps({**metrics, **test_metrics}, indent=2) + "\n")
    return test_metrics


def _pixel_batches(dataset, collator, batch_size: int = 256):
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collator)
