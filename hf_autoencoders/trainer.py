"""`AutoencoderTrainer`: the transformers Trainer, taught to log every loss term of an autoencoder.

It runs unchanged under `python`, `accelerate launch` and `torchrun`: the Trainer owns devices, DDP and mixed
precision; the VQ quantizer keeps its EMA statistics identical across processes itself (it all-reduces them).
Gradients are clipped to `max_grad_norm` (1.0 by default, as in `TrainingArguments`).
"""

import math
from collections import defaultdict

import torch
from transformers import Trainer, TrainerCallback
from transformers.integrations import TensorBoardCallback

LOSS_TERMS = ("reconstruction_loss", "kl_loss", "codebook_loss", "commitment_loss", "perplexity", "codebook_usage")


class AutoencoderTrainer(Trainer):
    """A `Trainer` whose logs carry each loss term (train: averaged since the last log; eval: over the whole
    evaluation set, plus the codebook usage and perplexity of the whole set for a VQ-VAE).

    `image_log_pixel_values`: a few images whose reconstructions go to TensorBoard at every evaluation
    (when `report_to` includes tensorboard).
    """

    def __init__(self, *args, image_log_pixel_values: torch.Tensor | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if image_log_pixel_values is not None:
            self.add_callback(ReconstructionImagesCallback(image_log_pixel_values, self.callback_handler))
        self._term_sums: dict[str, torch.Tensor] = {}
        self._term_steps = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        if model.training:
            for name in LOSS_TERMS:
                value = getattr(outputs, name, None)
                if value is not None:
                    value = value.detach().float()
                    self._term_sums[name] = self._term_sums.get(name, 0) + value
            self._term_steps += 1
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._term_steps:  # a training log: add the running means of the terms
            for name, total in self._term_sums.items():
                mean = self.accelerator.reduce(total / self._term_steps, reduction="mean")
                logs[name] = round(mean.item(), 6)
            self._term_sums, self._term_steps = {}, 0
        super().log(logs, start_time)

    @torch.no_grad()
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Every loss term averaged over the evaluation set (weighted by batch size), and for a VQ-VAE the codebook
        perplexity and usage of the whole set's code histogram."""
        dataloader = self.get_eval_dataloader(eval_dataset)
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=self.args.device))
        histogram = None
        num_embeddings = getattr(model.config, "num_embeddings", None)
        for inputs in dataloader:
            inputs = self._prepare_inputs(inputs)
            with self.compute_loss_context_manager():
                outputs = model(**inputs)
            batch_size = inputs["pixel_values"].shape[0]
            sums["count"] += batch_size
            sums["loss"] += outputs.loss.float() * batch_size
            for name in LOSS_TERMS[:4]:
                value = getattr(outputs, name, None)
                if value is not None:
                    sums[name] += value.float() * batch_size
            if outputs.indices is not None and num_embeddings is not None:
                counts = torch.bincount(outputs.indices.flatten(), minlength=num_embeddings)
                histogram = counts if histogram is None else histogram + counts
        model.train(was_training)
        totals = {name: self.accelerator.reduce(value, reduction="sum") for name, value in sums.items()}
        count = totals.pop("count").clamp(min=1)
        metrics = {f"{metric_key_prefix}_{name}": round((value / count).item(), 6) for name, value in totals.items()}
        if histogram is not None:
            histogram = self.accelerator.reduce(histogram, reduction="sum").float()
            probs = histogram / histogram.sum().clamp(min=1)
            entropy = -(probs * probs.clamp(min=1e-12).log()).sum()
            metrics[f"{metric_key_prefix}_perplexity"] = round(math.exp(entropy.item()), 4)
            metrics[f"{metric_key_prefix}_codebook_usage"] = round((histogram > 0).float().mean().item(), 6)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


class ReconstructionImagesCallback(TrainerCallback):
    """Writes a grid of originals (top) over reconstructions (bottom) to TensorBoard at every evaluation."""

    def __init__(self, pixel_values: torch.Tensor, callback_handler):
        self.pixel_values = pixel_values
        self.callback_handler = callback_handler

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or model is None:
            return
        writer = next(
            (cb.tb_writer for cb in self.callback_handler.callbacks if isinstance(cb, TensorBoardCallback)), None
        )
        if writer is None:
            return
        was_training = model.training
        model.eval()
        with torch.no_grad():
            images = self.pixel_values.to(model.device)
            reconstruction = model(images, return_loss=False).reconstruction.clamp(0, 1)
        model.train(was_training)
        writer.add_images("reconstructions", torch.cat([images, reconstruction]).float().cpu(), state.global_step)
