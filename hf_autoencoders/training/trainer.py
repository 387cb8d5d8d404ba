"""`AutoencoderTrainer`: the transformers Trainer, taught to log every loss term of an autoencoder.

It runs unchanged under `python`, `accelerate launch` and `torchrun`: the Trainer owns devices, DDP and mixed
precision; the VQ quantizer keeps its EMA statistics identical across processes itself (it all-reduces them).
Gradients are clipped to `max_grad_norm` (1.0 by default, as in `TrainingArguments`). Conv models trained on CPU
keep their weights in channels-last memory order (`channels_last`), which only changes speed.
"""

import torch
from accelerate.data_loader import BatchSamplerShard
from transformers import Trainer, TrainerCallback
from transformers.integrations import TensorBoardCallback

from ..evaluation import evaluate


class AutoencoderTrainer(Trainer):
    """A `Trainer` whose logs carry each loss term and batch statistic of the model's output (train: averaged since
    the last log) and whose `evaluate` is the library's one evaluation loop (`hf_autoencoders.evaluation.evaluate`:
    every loss term, PSNR, SSIM and, for a VQ-VAE, the codebook usage of the whole set, exact across processes).

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
            for name, value in outputs.items():
                if name != "loss" and isinstance(value, torch.Tensor) and value.ndim == 0:
                    self._term_sums[name] = self._term_sums.get(name, 0) + value.detach().float()
            self._term_steps += 1
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._term_steps:  # a training log: add the running means of the terms
            for name, total in self._term_sums.items():
                mean = self.accelerator.reduce(total / self._term_steps, reduction="mean")
                logs[name] = round(mean.item(), 6)
            self._term_sums, self._term_steps = {}, 0
        super().log(logs, start_time)

    def evaluate(
        self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval", num_importance_samples: int = 0
    ) -> dict[str, float]:
        """The metrics of `hf_autoencoders.evaluation.evaluate` over the evaluation set, prefixed, logged and passed
        to the callbacks. `num_importance_samples` K > 0 adds the ELBO and IWAE bounds of a VAE.

        Exact under several processes: the processes' last batches are left uneven instead of being padded with
        repeated images, and the sums are added across processes."""
        dataloader = self.get_eval_dataloader(eval_dataset)
        if isinstance(getattr(dataloader, "batch_sampler", None), BatchSamplerShard):
            dataloader.batch_sampler.even_batches = False
        model = self.accelerator.unwrap_model(self.model)
        results = evaluate(
            model, dataloader, num_importance_samples=num_importance_samples, seed=self.args.seed,
            accelerator=self.accelerator, forward_context=self.compute_loss_context_manager,
            progress=not self.args.disable_tqdm,
        )
        metrics = {f"{metric_key_prefix}_{name}": value if isinstance(value, int) else round(value, 6)
                   for name, value in results.items()}
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
