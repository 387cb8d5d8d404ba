"""`AutoencoderTrainer`: the transformers Trainer, taught to log every loss term of an autoencoder and to evaluate it
with the library's one evaluation loop.

It runs unchanged under `python`, `accelerate launch` and `torchrun`: the Trainer owns devices, DDP and mixed
precision; the VQ quantizer keeps its EMA statistics identical across processes itself (it all-reduces them).
Gradients are clipped to `max_grad_norm` (1.0 by default, as in `TrainingArguments`). Conv models trained on CPU
keep their weights in channels-last memory order (`channels_last`), which only changes speed.
"""

import json
import logging
import math
from pathlib import Path

import torch
from accelerate.data_loader import BatchSamplerShard
from transformers import Trainer, TrainerCallback, TrainerState
from transformers.trainer_utils import TrainOutput

from ..data import UnreadableImageError
from ..evaluation import EVAL_SEED, evaluate, quality_from_features
from ..evaluation.metrics import unit_images
from ..hub import HubPushCallback, HubUploadError, load_model, push_to_hub
from ..plots import RECONSTRUCTION_ROW_LABELS, image_grid, plot_loss_curves
from ..results import write_json
from .arguments import logging_steps_for
from .checkpoints import checkpoint_problems
from .recipe import RecipeCallback, TokenizerRecipe, check_recipe_resume, uses_recipe

logger = logging.getLogger(__name__)
MAX_CONSECUTIVE_SKIPS = 10  # with --skip_nonfinite_steps, this many skipped steps in a row still stop the run


class TrainingDivergedError(FloatingPointError):
    """The loss or the gradients became NaN or infinite: training stopped before applying the update."""


class StrictJSONMetrics:
    """`save_metrics` as the Trainer's (`<split>_results.json`, and `all_results.json` holding every split this
    trainer saved), in strict JSON: a metric that could not be measured is `null`, never `NaN`; `log_metrics` prints
    the numbers (not descriptions such as `quality_features`, nor what was not measured)."""

    def log_metrics(self, split: str, metrics: dict) -> None:
        super().log_metrics(split, {name: value for name, value in metrics.items()
                                    if value is not None and not isinstance(value, str)})

    def save_metrics(self, split: str, metrics: dict, combined: bool = True) -> None:
        if not self.is_world_process_zero():
            return
        self.saved_metrics = {**getattr(self, "saved_metrics", {}), **metrics}
        write_json(Path(self.args.output_dir) / f"{split}_results.json", metrics)
        if combined:
            write_json(Path(self.args.output_dir) / "all_results.json", self.saved_metrics)


class RunTrainer(StrictJSONMetrics):
    """What a run's Trainer does beyond transformers' (mixed in before `Trainer`, by `AutoencoderTrainer` and the
    prior's `PriorTrainer`):

    - With `args.push_to_hub`, the run folder is pushed by this library (`hub.push_to_hub`: an allow-list of files,
      with its card) rather than by the Trainer (a blank card and every file of the folder, caches included): while
      training as `args.hub_strategy` says (`HubPushCallback`: an upload that fails is reported and retried at the
      next save, and never stops training), and at the end when the run calls `push_to_hub()`. `hub_repo_id` is the
      repository (`--hub_model_id`, or the name of the output folder), or None without `--push_to_hub`.
    - `train(resume_from_checkpoint=...)` from a checkpoint that already holds every step the run asks for (a run
      killed after its last checkpoint, during its final save, evaluation or card) trains nothing: the checkpoint's
      weights and state are loaded, so the run goes on to write what is missing. (The Trainer would take one step
      past max_steps, and save other weights as the final model.)
    """

    def __init__(self, model=None, args=None, *rest, **kwargs):
        self.hub_repo_id = None
        if args is not None and args.push_to_hub:
            self.hub_repo_id, args.push_to_hub = args.hub_model_id or Path(args.output_dir).name, False
        super().__init__(model, args, *rest, **kwargs)
        if self.hub_repo_id and self.args.hub_strategy != "end":
            self.add_callback(HubPushCallback(self.hub_repo_id, self.args.hub_strategy, token=self.args.hub_token,
                                              private=self.args.hub_private_repo))

    def push_to_hub(self, commit_message: str = "Upload a model trained with hf_autoencoders") -> str:
        """Upload the run folder, as it is now, to `hub_repo_id` (`hub.push_to_hub`: the model, its code, processor,
        card and pictures; with --hub_strategy all_checkpoints the checkpoints' weights too). Returns the commit's
        URL; an upload that fails raises `hub.HubUploadError`, saying how to push the folder later."""
        repo_id = self.hub_repo_id or self.args.hub_model_id or Path(self.args.output_dir).name
        try:
            return push_to_hub(self.args.output_dir, repo_id, token=self.args.hub_token,
                               private=self.args.hub_private_repo,
                               include_checkpoints=self.args.hub_strategy == "all_checkpoints",
                               commit_message=commit_message)
        except HubUploadError as err:
            raise HubUploadError(f"{err} The run is complete in {self.args.output_dir}; push it later with "
                                 f"`hf-autoencoders push {self.args.output_dir} {repo_id}`.") from err

    def train_and_save(self, checkpoint: str | None = None) -> dict:
        """With `args.do_train`, train (resuming from `checkpoint`), log and save the training metrics and the
        trainer's state; then save the model (with its code and processor). Returns the training metrics ({}
        without training)."""
        train_metrics = {}
        if self.args.do_train:
            train_metrics = self.train(resume_from_checkpoint=checkpoint).metrics
            self.log_metrics("train", train_metrics)
            self.save_metrics("train", train_metrics)
            self.save_state()
        self.save_model()
        return train_metrics

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if isinstance(resume_from_checkpoint, (str, Path)):
            finished = self._finished_run(Path(resume_from_checkpoint))
            if finished is not None:
                return finished
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _finished_run(self, checkpoint: Path) -> TrainOutput | None:
        """The `TrainOutput` of a run whose `checkpoint` holds every step it asks for, its weights and state loaded;
        None when steps remain to be trained."""
        state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
        max_steps = self.set_initial_training_values(self.args, self.get_train_dataloader())[-1]
        if state.global_step < max_steps:
            return None
        if state.global_step > max_steps:
            raise ValueError(f"--resume_from_checkpoint {checkpoint} has trained {state.global_step} steps, more than "
                             f"the {max_steps} this run asks for: resume with the run's own --max_steps or "
                             "--num_train_epochs, or start a new run.")
        logger.warning("%s holds every step of this run (%d): its model is taken as the run's, without training.",
                       checkpoint, state.global_step)
        self.model.load_state_dict(load_model(checkpoint, f"--resume_from_checkpoint {checkpoint}").state_dict())
        if getattr(self, "recipe", None) is not None:  # its EMA and discriminator, as the checkpoint holds them
            self.recipe.load(checkpoint)
        self.state = state
        saved = Path(self.args.output_dir) / "train_results.json"
        metrics = json.loads(saved.read_text()) if saved.is_file() else {"epoch": state.epoch}
        return TrainOutput(state.global_step, metrics.get("train_loss", math.nan), metrics)


class AutoencoderTrainer(RunTrainer, Trainer):
    """A `Trainer` whose logs carry each loss term and batch statistic of the model's output (train: averaged since
    the last log) and whose `evaluate` is the library's one evaluation loop (`hf_autoencoders.evaluation.evaluate`:
    every loss term, PSNR, SSIM and, for a VQ-VAE, the codebook usage of the whole set, exact across processes),
    optionally with the Fréchet distance and its companions in the same pass.

    A non-finite loss or gradient norm never reaches the weights: before each optimizer step the gradients are
    checked, and training stops with `TrainingDivergedError` (the last checkpoint stays finite), or, with
    `args.skip_nonfinite_steps`, that step is skipped (no parameter or optimizer state changes) and counted in the
    logs as `skipped_steps`. An image that cannot be read stops training with an error that names it, after saving
    a checkpoint of the steps trained.

    Pushes to the Hub and resumes a finished run as every run's trainer does (`RunTrainer`).

    `image_log_pixel_values`: a few images whose reconstructions, and samples of the model, go to the trackers
    `report_to` names (TensorBoard, Weights & Biases, Trackio) at every evaluation.

    The tokenizer recipe (`recipe.TokenizerRecipe`), where the arguments ask for it (`perceptual_weight`,
    `disc_weight`, `use_ema`): a perceptual term (`perceptual_network` gives a built one, else it is built from
    `args.perceptual_network` and the training images), a PatchGAN discriminator trained beside the model with its own
    optimizer and schedule, an EMA of the weights and the collapse guard; every term is logged, and checkpoints hold
    their state. The EMA is evaluated beside the trained weights (`eval_ema_*`) and, unless `args.save_ema_weights`
    is false, it is the model at the end: `train` leaves the EMA weights in the model, which `save_model` writes, and
    `evaluate` then gives the trained weights' metrics beside (`eval_trained_*`).
    """

    def __init__(self, model=None, args=None, *rest, image_log_pixel_values: torch.Tensor | None = None,
                 perceptual_network=None, **kwargs):
        if model is not None and args is not None and uses_channels_last(model, args):
            model.to(memory_format=torch.channels_last)
        if (args is not None and getattr(args, "activation_checkpointing", False)
                and not getattr(model, "supports_gradient_checkpointing", True)):
            raise ValueError("--gradient_checkpointing recomputes the repeated blocks of the conv, vit and ldm "
                             f"backbones; the {model.config.backbone} backbone has none: leave the flag out.")
        super().__init__(model, args, *rest, **kwargs)
        if image_log_pixel_values is not None:
            self.add_callback(ImagesCallback(image_log_pixel_values, self.callback_handler))
        self.recipe = TokenizerRecipe(self, perceptual_network) if uses_recipe(self.args) else None
        if self.recipe is not None:
            self.add_callback(RecipeCallback(self))  # before the guard: it averages the discriminator's gradients
        self.add_callback(NonFiniteGuard(self))
        self._term_sums: dict[str, tuple[torch.Tensor, int]] = {}
        self.nonfinite_loss = False  # since the last optimizer step
        self.skipped_steps = 0
        self.code_histogram = None  # the code counts of the last evaluation (see `evaluate`)

    def train(self, *args, **kwargs):
        """`Trainer.train`. With the tokenizer recipe, its metrics also hold the recipe's settings and the GAN phase's
        record (`TokenizerRecipe.description`); with an EMA saved as the model (`save_ema_weights`), the model then
        holds the EMA weights (what `save_model` writes), the trained ones kept beside for `evaluate`
        (`recipe.trained_weights`)."""
        if not getattr(self.args, "logging_steps_given", True):  # --logging_steps not given: fit it to the run
            self.args.logging_steps = logging_steps_for(self._planned_steps())
        try:
            result = super().train(*args, **kwargs)
        except UnreadableImageError as err:  # a lazy or streamed image, met during training
            raise UnreadableImageError(f"{_original_message(err)} {self._save_progress()}") from err
        if self.recipe is not None:
            self.recipe.finish(self.model)
            result.metrics.update(self.recipe.description())  # the recipe's settings and its GAN phase's record
        return result

    def _planned_steps(self) -> int:
        """The optimizer steps this run will take: --max_steps, or the epochs' steps over every process."""
        args = self.args
        if args.max_steps > 0 or not hasattr(self.train_dataset, "__len__"):
            return max(args.max_steps, 0)
        batches = math.ceil(len(self.train_dataset) / (args.train_batch_size * args.world_size))
        return math.ceil(batches / args.gradient_accumulation_steps * args.num_train_epochs)

    def _save_progress(self) -> str:
        """Save a checkpoint of the steps trained before an error in the data (one process: under several, the
        others are still inside the step), and say how to go on."""
        step = self.state.global_step
        if step == 0 or self.args.world_size > 1:
            return "Checkpoints saved before the error are kept."
        self._save_checkpoint(self.model, trial=None)
        return (f"The {step} steps trained are saved in {Path(self.args.output_dir) / f'checkpoint-{step}'}; go on "
                "with --resume_from_checkpoint latest once the image is fixed (or with --skip_bad_images).")

    def add_training_terms(self, values: dict) -> None:
        """Add scalars to the running means of the next training log (each averaged over the steps it was given)."""
        for name, value in values.items():
            total, count = self._term_sums.get(name, (0.0, 0))
            value = value.detach().float() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
            self._term_sums[name] = (total + value.to(self.args.device), count + 1)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.nonfinite_loss = self.nonfinite_loss or not torch.isfinite(loss).all()
        if self.recipe is not None and self.recipe.pending is not None:
            logs = self.recipe.discriminator_backward(1.0 / self.current_gradient_accumulation_steps)
            self.nonfinite_loss = self.nonfinite_loss or not torch.isfinite(logs["discriminator_loss"])
            self.add_training_terms(logs)
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        loss = outputs.loss
        if model.training:
            self.add_training_terms({name: value for name, value in outputs.items()
                                     if name != "loss" and isinstance(value, torch.Tensor) and value.ndim == 0})
            if self.recipe is not None:
                extra, terms = self.recipe.generator_terms(model, inputs, outputs, self.state.global_step)
                loss = loss + extra
                self.add_training_terms(terms)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._term_sums:  # a training log: add the running means of the terms
            for name, (total, count) in self._term_sums.items():
                mean = self.accelerator.reduce(total / count, reduction="mean")
                logs[name] = round(mean.item(), 6)
            self._term_sums = {}
            if self.skipped_steps:
                logs["skipped_steps"] = self.skipped_steps
        super().log(logs, start_time)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        if self.recipe is not None:
            self.recipe.create_optimizer(num_training_steps)  # the discriminator's, beside the model's
        return scheduler

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        if self.recipe is not None and self.args.should_save:  # before trainer_state.json, which is written last
            self.recipe.save(output_dir)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            if self.recipe is not None:
                self.recipe.load(checkpoint)
            else:
                check_recipe_resume(checkpoint, self.args)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval",
                 num_importance_samples: int = 0, features=None, seed: int = EVAL_SEED) -> dict[str, float]:
        """The metrics of `hf_autoencoders.evaluation.evaluate` over the evaluation set, prefixed, logged and passed
        to the callbacks. `num_importance_samples` K > 0 adds the ELBO and IWAE bounds of a VAE. With `features` (an
        `evaluation.ImageFeatures`), the same pass also gives the Fréchet distance, KID, precision, recall, density
        and coverage of the reconstructions and of as many samples against the evaluation images, on those
        features (the keys of `evaluation.quality_metrics`). The evaluation's draws (a VAE's posterior samples, the
        samples) are seeded by `seed`, not by the training seed: `hf-autoencoders evaluate` gives the same numbers.

        Exact under several processes: the processes' last batches are left uneven instead of being padded with
        repeated images, and the sums (and features) are gathered across processes. For a model with codes (a
        VQ-VAE), `self.code_histogram` then holds the evaluation set's code counts, (depth, K) (`evaluate`'s
        `return_code_histogram`), for the card's usage picture."""
        dataloader = self.get_eval_dataloader(eval_dataset)
        if isinstance(getattr(dataloader, "batch_sampler", None), BatchSamplerShard):
            dataloader.batch_sampler.even_batches = False
        model = self.accelerator.unwrap_model(self.model)
        perceptual = None if self.recipe is None else self.recipe.perceptual

        def run(prefix: str, histogram_of_these_weights: bool) -> dict:
            real, reconstructed = [], []

            def keep_features(pixel_values, output):
                real.append(features.extract(pixel_values))
                reconstructed.append(features.extract(unit_images(model, output.reconstruction)))

            results, histogram = evaluate(
                model, dataloader, num_importance_samples=num_importance_samples, seed=seed,
                accelerator=self.accelerator, forward_context=self.compute_loss_context_manager,
                on_batch=keep_features if features is not None else None, progress=not self.args.disable_tqdm,
                perceptual=perceptual, return_code_histogram=True,
            )
            if histogram_of_these_weights:  # the card's usage picture: the weights evaluated first
                self.code_histogram = histogram if histogram.sum() > 0 else None
            if features is not None:
                real, reconstructed = (self._gather_rows(rows, features.num_features) for rows in (real, reconstructed))
                results.update(self._quality_metrics(model, features, real, reconstructed, seed))
            return {f"{prefix}_{name}": round(value, 6) if isinstance(value, float) else value
                    for name, value in results.items()}

        metrics = run(metric_key_prefix, True)
        other = None if self.recipe is None else self.recipe.other_weights()
        if other is not None:  # the EMA beside the trained weights while training; after it, the other way round
            name, swapped = other
            with swapped(model):
                metrics.update({key: value for key, value in run(f"{metric_key_prefix}_{name}", False).items()
                                if not isinstance(value, str)})
        self.log({name: value for name, value in metrics.items() if not isinstance(value, str)})
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def _gather_rows(self, chunks: list[torch.Tensor], width: int) -> torch.Tensor:
        """The rows of every process's `chunks` (as many as each has, maybe none), concatenated in process order."""
        rows = torch.cat(chunks) if chunks else torch.empty(0, width, dtype=torch.float64)
        if self.accelerator.num_processes == 1:
            return rows
        counts = self.accelerator.gather(torch.tensor([len(rows)], device=self.accelerator.device)).tolist()
        padded = self.accelerator.gather(self.accelerator.pad_across_processes(rows.to(self.accelerator.device)))
        stride = len(padded) // len(counts)
        return torch.cat([padded[i * stride:i * stride + n] for i, n in enumerate(counts)]).cpu()

    def _quality_metrics(self, model, features, real: torch.Tensor, reconstructed: torch.Tensor, seed: int) -> dict:
        """`evaluation.quality_from_features`: from the features of the evaluation images and of their
        reconstructions, with as many samples of the model; empty, with a warning, below the 6 images they need."""
        if len(real) < 6:
            logger.warning("No Fréchet distance: it needs at least 6 evaluation images, got %d.", len(real))
            return {}
        return quality_from_features(model, features, real, reconstructed, seed=seed,
                                     batch_size=self.args.per_device_eval_batch_size)


HYPERPARAMETERS = (
    "learning_rate", "per_device_train_batch_size", "max_steps", "num_train_epochs", "lr_scheduler_type",
    "max_grad_norm", "weight_decay", "seed",
)


def training_summary(training_args, train_metrics: dict) -> dict:
    """What a card's Training section shows: the hyperparameters that shape a run, and the figures its training
    measured (train_loss, train_runtime, ...)."""
    figures = {k: v for k, v in train_metrics.items() if k.startswith("train_") and isinstance(v, float)}
    return {**{k: getattr(training_args, k) for k in HYPERPARAMETERS}, **figures}


def write_loss_curves(log_history, output_dir) -> dict[str, str]:
    """loss_curves.png in `output_dir` when `log_history` (the Trainer's) holds a training loss."""
    if not any("loss" in entry for entry in log_history or []):
        return {}
    plot_loss_curves(log_history, Path(output_dir) / "loss_curves.png")
    return {"Loss curves": "loss_curves.png"}

def uses_channels_last(model, args) -> bool:
    """`args.channels_last` if set; otherwise `channels_last_by_default(model, args.device)`."""
    choice = getattr(args, "channels_last", None)
    return channels_last_by_default(model, args.device) if choice is None else choice


def channels_last_by_default(model, device: torch.device) -> bool:
    """True for the convolutional backbones (conv, ldm) trained on CPU, where oneDNN's convolutions are faster in
    that layout."""
    return getattr(model.config, "backbone", None) in ("conv", "ldm") and device.type == "cpu"


class NonFiniteGuard(TrainerCallback):
    """Before each optimizer step: stop (or skip the step) when the loss or a gradient is NaN or infinite."""

    def __init__(self, trainer: AutoencoderTrainer):
        self.trainer = trainer
        self.consecutive_skips = 0

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        trainer = self.trainer
        # the model's and, with the tokenizer recipe, the discriminator's: a bad step applies to neither
        parameters = [*model.parameters(), *(trainer.recipe.discriminator_parameters() if trainer.recipe else [])]
        grads = [p.grad for p in parameters if p.grad is not None]
        bad_grads = bool(grads) and not torch.isfinite(torch.nn.utils.get_total_norm(grads))
        bad_loss, trainer.nonfinite_loss = trainer.nonfinite_loss, False
        if not (bad_loss or bad_grads):
            self.consecutive_skips = 0
            return
        what = "the loss" if bad_loss else "the gradient norm"
        if getattr(args, "skip_nonfinite_steps", False) and self.consecutive_skips < MAX_CONSECUTIVE_SKIPS:
            for p in parameters:
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
    """At every evaluation, a grid of originals over their reconstructions (labelled rows), and a grid of samples,
    logged as images to every tracker of `report_to` that takes them: TensorBoard, Weights & Biases and Trackio."""

    def __init__(self, pixel_values: torch.Tensor, callback_handler):
        self.pixel_values = pixel_values
        self.callback_handler = callback_handler

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or model is None:
            return
        was_training = model.training
        model.eval()
        with torch.no_grad():
            pixel_values = self.pixel_values.to(model.device)  # in the model's pixel range, as the collator gives
            images = unit_images(model, pixel_values)
            reconstruction = unit_images(model, model(pixel_values, return_loss=False).reconstruction)
            generator = torch.Generator(device=model.device).manual_seed(args.seed)
            samples = unit_images(model, model.sample(len(images), generator=generator))
        model.train(was_training)
        grids = {"reconstructions": image_grid(torch.cat([images, reconstruction]).float().cpu(), nrow=len(images),
                                               row_labels=RECONSTRUCTION_ROW_LABELS),
                 "samples": image_grid(samples.float().cpu(), nrow=len(images))}
        for callback in self.callback_handler.callbacks:
            for name, grid in grids.items():
                if getattr(callback, "tb_writer", None) is not None:  # TensorBoard
                    callback.tb_writer.add_image(name, grid, state.global_step, dataformats="HWC")
                elif getattr(callback, "_wandb", None) is not None and getattr(callback, "_initialized", False):
                    callback._wandb.log({name: callback._wandb.Image(grid), "train/global_step": state.global_step})
                elif getattr(callback, "_trackio", None) is not None and getattr(callback, "_initialized", False):
                    callback._trackio.log({name: callback._trackio.Image(grid), "train/global_step": state.global_step})


def _original_message(err: Exception) -> str:
    """The message of an error raised in a DataLoader worker, without the worker's traceback around it."""
    last = str(err).strip().splitlines()[-1]
    prefix = f"{type(err).__module__}.{type(err).__name__}: "
    return last.removeprefix(prefix) if "Original Traceback" in str(err) else str(err)
