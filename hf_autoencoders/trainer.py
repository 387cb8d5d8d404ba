"""`AutoencoderTrainer`: the transformers Trainer, taught to log every loss term of an autoencoder.

It runs unchanged under `python`, `accelerate launch` and `torchrun`: the Trainer owns devices, DDP and mixed
precision; the VQ quantizer keeps its EMA statistics identical across processes itself (it all-reduces them).
Gradients are clipped to `max_grad_norm` (1.0 by default, as in `TrainingArguments`). Conv models trained on CPU
keep their weights in channels-last memory order (`channels_last`), which only changes speed.
"""

import math

import torch
from accelerate.data_loader import BatchSamplerShard
from transformers import Trainer, TrainerCallback
from transformers.integrations import TensorBoardCallback

LOSS_TERMS = ("reconstruction_loss", "kl_loss", "codebook_loss", "commitment_loss", "perplexity", "codebook_usage")


class AutoencoderTrainer(Trainer):
    """A `Trainer` whose logs carry each loss term (train: averaged since the last log; eval: over the whole
    evaluation set, plus the codebook usage and perplexity of the whole set for a VQ-VAE).

    `image_log_pixel_values`: a few images whose reconstructions go to TensorBoard at every evaluation
    (when `report_to` includes tensorboard).
    """

    def __init__(self, model=None, args=None, *rest, image_log_pixel_values: torch.Tensor | None = None, **kwargs):
        if model is not None and args is not None and uses_channels_last(model, args):
            model.to(memory_format=torch.channels_last)
        super().__init__(model, args, *rest, **kwargs)
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
        perplexity and usage of the whole set's code histogram.

        Exact under several processes: the processes' last batches are left uneven instead of being padded with
        repeated images, and the sums (fixed-size tensors, so every process joins the same collectives even with
        no batch at all) are added across processes."""
        dataloader = self.get_eval_dataloader(eval_dataset)
        if isinstance(getattr(dataloader, "batch_sampler", None), BatchSamplerShard):
            dataloader.batch_sampler.even_batches = False
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        names = ("loss",) + LOSS_TERMS[:4]
        device = self.args.device
        sums = torch.zeros(len(names), device=device, dtype=torch.float64)
        present = torch.zeros(len(names), device=device)
        count = torch.zeros((), device=device, dtype=torch.float64)
        num_embeddings = getattr(model.config, "num_embeddings", None)
        histogram = torch.zeros(num_embeddings, device=device, dtype=torch.long) if num_embeddings else None
        for inputs in dataloader:
            inputs = self._prepare_inputs(inputs)
            with self.compute_loss_context_manager():
                outputs = model(**inputs)
            batch_size = inputs["pixel_values"].shape[0]
            count += batch_size
            for k, name in enumerate(names):
                value = getattr(outputs, name, None)
                if value is not None:
                    sums[k] += value.double() * batch_size
                    present[k] = 1
            if histogram is not None and outputs.indices is not None:
                histogram += torch.bincount(outputs.indices.flatten(), minlength=num_embeddings)
        model.train(was_training)
        sums, present, count = (self.accelerator.reduce(t, reduction="sum") for t in (sums, present, count))
        means = sums / count.clamp(min=1)
        metrics = {f"{metric_key_prefix}_{name}": round(means[k].item(), 6)
                   for k, name in enumerate(names) if present[k] > 0}
        if histogram is not None and (histogram := self.accelerator.reduce(histogram, reduction="sum")).sum() > 0:
            probs = histogram.double() / histogram.sum()
            entropy = -(probs * probs.clamp(min=1e-12).log()).sum()
            metrics[f"{metric_key_prefix}_perplexity"] = round(math.exp(entropy.item()), 4)
            metrics[f"{metric_key_prefix}_codebook_usage"] = round((histogram > 0).double().mean().item(), 6)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def uses_channels_last(model, args) -> bool:
    """`args.channels_last` if set; otherwise True for a conv backbone trained on CPU (oneDNN's convolutions are
    8-12% faster in that layout there; see benchmarks/README.md)."""
    choice = getattr(args, "channels_last", None)
    if choice is not None:
        return choice
    return getattr(model.config, "backbone", None) == "conv" and args.device.type == "cpu"


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
