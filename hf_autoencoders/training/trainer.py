"""`AutoencoderTrainer`: the transformers Trainer, taught to log every loss term of an autoencoder.

It runs unchanged under `python`, `accelerate launch` and `torchrun`: the Trainer owns devices, DDP and mixed
precision; the VQ quantizer keeps its EMA statistics identical across processes itself (it all-reduces them).
Gradients are clipped to `max_grad_norm` (1.0 by default, as in `TrainingArguments`). Conv models trained on CPU
keep their weights in channels-last memory order (`channels_last`), which only changes speed.
"""

from pathlib import Path

import torch
from accelerate.data_loader import BatchSamplerShard
from transformers import Trainer, TrainerCallback

from ..evaluation import evaluate
from ..plots import image_grid
from .checkpoints import checkpoint_problems

MAX_CONSECUTIVE_SKIPS = 10  # with --skip_nonfinite_steps, this many skipped steps in a row still stop the run


class TrainingDivergedError(FloatingPointError):
    """The loss or the gradients became NaN or infinite: training stopped before applying the update."""


class AutoencoderTrainer(Trainer):
    """A `Trainer` whose logs carry each loss term and batch statistic of the model's output (train: averaged since
    the last log) and whose `evaluate` is the library's one evaluation loop (`hf_autoencoders.evaluation.evaluate`:
    every loss term, PSNR, SSIM and, for a VQ-VAE, the codebook usage of the whole set, exact across processes).

    A non-finite loss or gradient norm never reaches the weights: before each optimizer step the gradients are
    checked, and training stops with `TrainingDivergedError` (the last checkpoint stays finite), or, with
    `args.skip_nonfinite_steps`, that step is skipped (no parameter or optimizer state changes) and counted in the
    logs as `skipped_steps`.

    `image_log_pixel_values`: a few images whose reconstructions, and samples of the model, go to the trackers
    `report_to` names (TensorBoard, Weights & Biases, Trackio) at every evaluation.
    """

    def __init__(self, model=None, args=None, *rest, image_log_pixel_values: torch.Tensor | None = None, **kwargs):
        if model is not None and args is not None and uses_channels_last(model, args):
            model.to(memory_format=torch.channels_last)
        super().__init__(model, args, *rest, **kwargs)
        if image_log_pixel_values is not None:
            self.add_callback(ImagesCallback(image_log_pixel_values, self.callback_handler))
        self.add_callback(NonFiniteGuard(self))
        self._term_sums: dict[str, torch.Tensor] = {}
        self._term_steps = 0
        self.nonfinite_loss = False  # since the last optimizer step
        self.skipped_steps = 0

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.nonfinite_loss = self.nonfinite_loss or not torch.isfinite(loss).all()
        return loss

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
            if self.skipped_steps:
                logs["skipped_steps"] = self.skipped_steps
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
    """`args.channels_last` if set; otherwise `channels_last_by_default(model, args.device)`."""
    choice = getattr(args, "channels_last", None)
    return channels_last_by_default(model, args.device) if choice is None else choice


def channels_last_by_default(model, device: torch.device) -> bool:
    """True for a conv backbone trained on CPU: oneDNN's convolutions are 8-12% faster in that layout there (see
    benchmarks/README.md)."""
    return getattr(model.config, "backbone", None) == "conv" and device.type == "cpu"


class NonFiniteGuard(TrainerCallback):
    """Before each optimizer step: stop (or skip the step) when the loss or a gradient is NaN or infinite."""

    def __init__(self, trainer: AutoencoderTrainer):
        self.trainer = trainer
        self.consecutive_skips = 0

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        trainer = self.trainer
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        bad_grads = bool(grads) and not torch.isfinite(torch.nn.utils.get_total_norm(grads))
        bad_loss, trainer.nonfinite_loss = trainer.nonfinite_loss, False
        if not (bad_loss or bad_grads):
            self.consecutive_skips = 0
            return
        what = "the loss" if bad_loss else "the gradient norm"
        if getattr(args, "skip_nonfinite_steps", False) and self.consecutive_skips < MAX_CONSECUTIVE_SKIPS:
            for p in model.parameters():
                p.grad = None  # the optimizer skips parameters without a gradient: no update, no state change
            trainer.skipped_steps += 1
            self.consecutive_skips += 1
            return
        raise TrainingDivergedError(self.message(args, state, what))

    def message(self, args, state, what: str) -> str:
        checkpoints = sorted((c for c in Path(args.output_dir).glob("checkpoint-*") if c.name[11:].isdigit()),
                             key=lambda c: int(c.name[11:]), reverse=True)
        last = next((c for c in checkpoints if not checkpoint_problems(c)), None)
        kept = (f"the last checkpoint, {last}, holds finite weights; after fixing the cause, continue with "
                "--resume_from_checkpoint latest" if last else "no checkpoint was saved before it")
        skips = (f" after {self.consecutive_skips} skipped steps in a row" if self.consecutive_skips else "")
        return (f"training diverged at step {state.global_step + 1}{skips}: {what} is NaN or infinite, so that "
                f"step was not applied and the run stopped. {kept[0].upper()}{kept[1:]}. Lower --learning_rate "
                f"(it is {args.learning_rate:g}), or pass --skip_nonfinite_steps to skip such steps.")


class ImagesCallback(TrainerCallback):
    """At every evaluation, a grid of originals (top) over reconstructions (bottom), and a grid of samples, logged
    as images to every tracker of `report_to` that takes them: TensorBoard, Weights & Biases and Trackio."""

    def __init__(self, pixel_values: torch.Tensor, callback_handler):
        self.pixel_values = pixel_values
        self.callback_handler = callback_handler

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or model is None:
            return
        was_training = model.training
        model.eval()
        with torch.no_grad():
            images = self.pixel_values.to(model.device)
            reconstruction = model(images, return_loss=False).reconstruction.clamp(0, 1)
            generator = torch.Generator(device=model.device).manual_seed(args.seed)
            samples = model.sample(len(images), generator=generator).clamp(0, 1)
        model.train(was_training)
        grids = {"reconstructions": image_grid(torch.cat([images, reconstruction]).float().cpu(), nrow=len(images)),
                 "samples": image_grid(samples.float().cpu(), nrow=len(images))}
        for callback in self.callback_handler.callbacks:
            for name, grid in grids.items():
                if getattr(callback, "tb_writer", None) is not None:  # TensorBoard
                    callback.tb_writer.add_image(name, grid, state.global_step, dataformats="HWC")
                elif getattr(callback, "_wandb", None) is not None and getattr(callback, "_initialized", False):
                    callback._wandb.log({name: callback._wandb.Image(grid), "train/global_step": state.global_step})
                elif getattr(callback, "_trackio", None) is not None and getattr(callback, "_initialized", False):
                    callback._trackio.log({name: callback._trackio.Image(grid), "train/global_step": state.global_step})
