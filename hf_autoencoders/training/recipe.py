r"""The tokenizer recipe inside the `Trainer`: a perceptual term, a PatchGAN discriminator with the adaptive weight and
a warm-up, an EMA of the weights, and a guard over the GAN phase, for every autoencoder with a decoder.

The generator (the autoencoder) minimises, per image of D = C H W values,

    L = L_model + D (w_p d(x^, x) + [step >= disc_start] lambda w_adv s L_G(x^))

with L_model the model's own loss (a per-image sum over pixels: squared error, ELBO, VQ terms), d the perceptual
distance (`evaluation.perceptual`), L_G the generator's adversarial loss and lambda the adaptive weight
(`adversarial`), computed on the per-pixel reconstruction loss L_model / D + w_p d so that w_p and w_adv mean what
they mean in the recipes' code (a per-pixel mean plus w_p LPIPS, as LlamaGen writes it); s is the guard's scale (1
unless it lowered it). The discriminator minimises L_D (+ LeCAM, + R1) on the same batch, with the reconstruction
detached.

How it runs in the Trainer (`AutoencoderTrainer` calls into `TokenizerRecipe`):

- the generator's terms are added in `compute_loss`, the discriminator's loss is backpropagated in `training_step`
  right after the generator's (scaled for gradient accumulation like it), and its optimizer (Adam, the Trainer's
  betas) steps in `on_optimizer_step` with its own schedule (the Trainer's `lr_scheduler_type` over the steps after
  `disc_start`), its gradients clipped to `max_grad_norm` and, under DDP, averaged across processes first;
- `disc_start` counts optimizer steps: from that step on, the discriminator trains and the adversarial term is on
  (by default halfway through the run);
- the EMA (`ema.ModelEMA`) is updated after each optimizer step;
- the collapse guard (`adversarial.CollapseGuard`) measures the PSNR of a fixed held-out batch at `disc_start` and
  every `gan_guard_steps` after;
- checkpoints hold the discriminator (and LeCAM's averages), its optimizer and scheduler, the EMA weights and the
  guard's state (`RECIPE_FILES`), so a run resumes exactly; the model saved never holds the discriminator.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback
from transformers.optimization import get_scheduler

from ..data import iterate_batches
from ..data.decoding import first_items
from ..evaluation.loop import seeded
from ..evaluation.metrics import psnr, unit_images
from ..evaluation.perceptual import PerceptualDistance, lpips_network, offline_perceptual_network
from .adversarial import (
    CollapseGuard,
    LeCAM,
    PatchDiscriminator,
    adaptive_weight,
    default_disc_channels,
    discriminator_accuracy,
    discriminator_loss,
    generator_loss,
    r1_penalty,
)
from .ema import ModelEMA, swapped_weights

logger = logging.getLogger(__name__)

DISCRIMINATOR_FILE, DISCRIMINATOR_OPTIMIZER_FILE = "discriminator.safetensors", "discriminator_optimizer.pt"
DISCRIMINATOR_SCHEDULER_FILE, EMA_FILE, GUARD_FILE = "discriminator_scheduler.pt", "ema.safetensors", "last_good.pt"
RECIPE_STATE_FILE = "recipe_state.json"
RECIPE_FILES = (DISCRIMINATOR_FILE, DISCRIMINATOR_OPTIMIZER_FILE, DISCRIMINATOR_SCHEDULER_FILE, EMA_FILE, GUARD_FILE,
                RECIPE_STATE_FILE)
# The training arguments that define the objective: a run resumes only with the values it was started with.
RECIPE_SETTINGS = ("perceptual_weight", "perceptual_network", "disc_weight", "disc_start", "disc_loss",
                   "adaptive_weight", "disc_channels", "disc_num_layers", "disc_learning_rate", "lecam_weight",
                   "r1_weight", "use_ema", "model_ema_decay", "gan_guard_margin", "gan_guard_action",
                   "gan_guard_steps")
PERCEPTUAL_TRAINING_IMAGES = 10_000  # training images the offline perceptual networks learn from
GUARD_IMAGES = 64  # held-out images the collapse guard watches


def uses_recipe(args) -> bool:
    """Whether the training arguments ask for any part of the recipe."""
    return (getattr(args, "perceptual_weight", 0) > 0 or getattr(args, "disc_weight", 0) > 0
            or getattr(args, "use_ema", False))


def recipe_settings(args) -> dict:
    return {name: getattr(args, name, None) for name in RECIPE_SETTINGS}


def check_recipe_resume(checkpoint: str | Path, args) -> None:
    """Refuse to resume `checkpoint` with recipe settings other than those it was trained with (they would change
    the objective mid-run), or without the recipe it was trained with, or with one it was trained without."""
    state_file = Path(checkpoint) / RECIPE_STATE_FILE
    if not state_file.is_file():
        if uses_recipe(args):
            raise ValueError(f"--resume_from_checkpoint {checkpoint} was trained without the tokenizer recipe "
                             "(perceptual, adversarial or EMA terms); resume it without those flags, or start a new "
                             "run from its weights with --model_name_or_path.")
        return
    saved = json.loads(state_file.read_text())["settings"]
    requested = recipe_settings(args)
    differing = [f"--{name} {requested[name]!r} (the checkpoint has {saved.get(name)!r})" for name in RECIPE_SETTINGS
                 if saved.get(name) != requested[name]]
    if differing:
        raise ValueError(f"--resume_from_checkpoint {checkpoint} was trained with other recipe settings: "
                         f"{', '.join(differing)}. Resume with the checkpoint's settings, or start a new run from its "
                         "weights with --model_name_or_path.")


def decoder_output_layer(model) -> torch.Tensor:
    """The weight of the decoder's last layer, where the adaptive weight compares gradients: the decoder's
    `output_layer` where it names one, else the last module registered in it that holds a weight of 2 or more
    dimensions."""
    decoder = getattr(model, "decoder", None)
    if decoder is None:
        raise ValueError(f"{type(model).__name__} has no decoder: the adversarial loss needs an autoencoder.")
    layer = getattr(decoder, "output_layer", None)
    if layer is None:
        layers = [m for m in decoder.modules() if isinstance(getattr(m, "weight", None), torch.nn.Parameter)
                  and m.weight.ndim >= 2]
        if not layers:
            raise ValueError(f"The decoder of {type(model).__name__} has no layer with a weight matrix for the "
                             "adaptive weight; give it an `output_layer`, or pass --adaptive_weight false.")
        layer = layers[-1]
    return layer.weight


def first_images(dataset, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first `n` images of a training set (and their labels, None when it has none)."""
    images, labels = [], []
    for x, y in iterate_batches(dataset, 512):
        images.append(x)
        labels.append(y)
        if sum(len(i) for i in images) >= n:
            break
    if not images:
        raise ValueError("The training set yielded no images to train the perceptual network on.")
    return (torch.cat(images)[:n],
            None if any(y is None for y in labels) else torch.cat([torch.as_tensor(y) for y in labels])[:n])


def build_perceptual(args, train_dataset, device) -> PerceptualDistance:
    """The perceptual network `args.perceptual_network` names, for the training set (offline networks are trained
    on its first images once, on the main process first, then read from the cache)."""
    if args.perceptual_network == "lpips":
        return lpips_network(args.lpips_weights, device=device, progress=not args.disable_tqdm)
    if train_dataset is None:
        raise ValueError(f"The {args.perceptual_network} perceptual network is trained on the training images; "
                         "give the Trainer a train_dataset (or a perceptual_network).")
    with args.main_process_first(desc=f"training the {args.perceptual_network} perceptual network"):
        images, labels = first_images(train_dataset, PERCEPTUAL_TRAINING_IMAGES)
        return offline_perceptual_network(args.perceptual_network, images, labels, device=device,
                                          progress=not args.disable_tqdm)


class TokenizerRecipe:
    """The recipe's state beside one `AutoencoderTrainer`: the perceptual network, the discriminator with its
    optimizer, scheduler and LeCAM averages, the EMA of the weights and the collapse guard; and what the Trainer's
    methods call. Built from the training arguments (`perceptual_weight`, `disc_weight`, `use_ema`, ...)."""

    def __init__(self, trainer, perceptual: PerceptualDistance | None = None):
        args, model = trainer.args, trainer.model
        self.trainer, self.args = trainer, args
        self.device = args.device
        self.num_pixels = model.config.num_pixels
        self.perceptual = None
        if args.perceptual_weight > 0:
            self.perceptual = perceptual or build_perceptual(args, trainer.train_dataset, self.device)
            self.perceptual.to(self.device).requires_grad_(False)
        self.discriminator = self.lecam = self.guard = self.optimizer = self.scheduler = None
        self.disc_start = args.disc_start  # None: halfway, resolved when the run's length is known
        if args.disc_weight > 0:
            if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
                raise ValueError("The discriminator trains beside the model under DDP (or on one device); DeepSpeed "
                                 "and FSDP are not supported with --disc_weight.")
            with torch.random.fork_rng(devices=[]):  # the same initial weights on every process
                torch.manual_seed(args.seed)
                size = model.config.image_size
                self.disc_channels = args.disc_channels or default_disc_channels(size)
                self.discriminator = PatchDiscriminator(model.config.num_channels, size, self.disc_channels,
                                                        args.disc_num_layers)
            self.discriminator.to(self.device)
            self.lecam = LeCAM().to(self.device) if args.lecam_weight > 0 else None
            self.guard = CollapseGuard(args.gan_guard_margin, args.gan_guard_action)
            if args.adaptive_weight:
                decoder_output_layer(model)  # refuse a model without one now, not at disc_start
        self.ema = ModelEMA(model, args.model_ema_decay) if args.use_ema else None
        self.pending = None  # (real images, D(x^)) of the last generator step, for the discriminator's
        self.last_good = None  # the weights (and EMA) at the guard's last passed check
        self.trained_weights = None  # after training, when the model took the EMA weights: the trained ones
        self.guard_images = None

    # ------------------------------------------------------------------------------------------- the losses

    def discriminator_on(self, step: int) -> bool:
        return self.discriminator is not None and step >= self.disc_start

    def generator_terms(self, model, inputs: dict, outputs, step: int) -> tuple[torch.Tensor, dict]:
        """The recipe's terms of the generator's loss for one batch (in the model's units, see the module
        docstring), and the values to log.

        Both terms reach the model only through the reconstruction x^, so each is backpropagated once, through its
        own network (perceptual, discriminator), to g = dterm / dx^. The adaptive weight takes the gradients at the
        decoder's last layer W from g (dterm / dW = g dx^/dW, a backward through W alone), and the returned term is
        the surrogate sum(x^ sg(G)) with G = D (w_p g_p + lambda w_adv s g_adv), valued as the terms themselves:
        the same gradient for the model, without a second pass through either network."""
        args, logs = self.args, {}
        target = inputs.get("target_pixel_values", inputs["pixel_values"])
        reconstruction = outputs.reconstruction
        # the perceptual network and the discriminator read [0, 1] images, whatever the model's pixel range
        unit = getattr(self.trainer.accelerator.unwrap_model(model), "to_unit_range", lambda images: images)
        value = reconstruction.new_zeros((), dtype=torch.float32)
        gradient = perceptual_gradient = None  # G = dL_recipe / dx^, and the perceptual term's part of it
        if self.perceptual is not None:
            distance = self.perceptual(unit(reconstruction), unit(target.to(reconstruction.dtype))).mean()
            logs[f"perceptual_{self.perceptual.name}"] = distance.detach()
            perceptual_gradient, = torch.autograd.grad(distance, reconstruction)
            perceptual_gradient = args.perceptual_weight * perceptual_gradient.float()
            value = value + self.num_pixels * args.perceptual_weight * distance.detach().float()
            gradient = self.num_pixels * perceptual_gradient
        if self.discriminator_on(step):
            # one pass of the discriminator over the reconstructions serves both losses: the generator's takes its
            # gradient with respect to the images here, the discriminator's with respect to its weights later
            fake = reconstruction.detach().requires_grad_(True)
            logits_fake = self.discriminator(unit(fake))
            adversarial = generator_loss(args.disc_loss, logits_fake)
            adversarial_gradient, = torch.autograd.grad(adversarial, fake, retain_graph=True)
            if args.adaptive_weight:
                layer = decoder_output_layer(self.trainer.accelerator.unwrap_model(model))
                weight, rec_norm, adv_norm = adaptive_weight(
                    outputs.loss.float() / self.num_pixels, reconstruction, layer,
                    perceptual_gradient, adversarial_gradient.float())
                logs.update(adaptive_weight=weight, last_layer_rec_grad_norm=rec_norm,
                            last_layer_gan_grad_norm=adv_norm)
            else:
                weight = torch.ones((), device=adversarial.device)
            weight = weight * args.disc_weight * self.guard.adversarial_scale
            value = value + self.num_pixels * weight * adversarial.detach().float()
            adversarial_gradient = self.num_pixels * weight * adversarial_gradient.float()
            gradient = adversarial_gradient if gradient is None else gradient + adversarial_gradient
            logs.update(generator_loss=adversarial.detach(), adversarial_weight=weight)
            self.pending = (unit(target.detach()), logits_fake)
        if gradient is None:
            return value, logs
        surrogate = (reconstruction.float() * gradient).sum()
        return surrogate + (value - surrogate).detach(), logs

    def discriminator_backward(self, scale: float) -> dict:
        """Backpropagate the discriminator's loss on the last generator batch, times `scale` (1 / the gradient
        accumulation steps), into its gradients; return the values to log."""
        if self.pending is None:
            return {}
        args = self.args
        real, logits_fake = self.pending
        self.pending = None
        logits_real = self.discriminator(real)
        gan = discriminator_loss(args.disc_loss, logits_real, logits_fake)
        accuracy_real, accuracy_fake = discriminator_accuracy(logits_real.detach(), logits_fake.detach())
        logs = {"discriminator_loss": gan.detach(), "logits_real": logits_real.detach().mean(),
                "logits_fake": logits_fake.detach().mean(), "disc_accuracy_real": accuracy_real,
                "disc_accuracy_fake": accuracy_fake}
        loss = gan
        if self.lecam is not None:
            regulariser = self.lecam(logits_real, logits_fake)
            loss = loss + args.lecam_weight * regulariser
            means = torch.stack([logits_real.detach().mean(), logits_fake.detach().mean()])
            means = self.trainer.accelerator.reduce(means, reduction="mean")  # the same averages on every process
            self.lecam.update(means[0], means[1])
            logs["lecam_loss"] = regulariser.detach()
        if args.r1_weight > 0:
            penalty = r1_penalty(self.discriminator, real)
            loss = loss + args.r1_weight * penalty
            logs["r1_penalty"] = penalty.detach()
        (loss * scale).backward(inputs=self.discriminator_parameters())
        return logs

    # ------------------------------------------------------------------------------------- the optimizer

    def create_optimizer(self, num_training_steps: int) -> None:
        """The discriminator's Adam (the Trainer's betas and epsilon, `disc_learning_rate` or the model's learning
        rate, no weight decay) and its schedule (`lr_scheduler_type`, `warmup` as the Trainer's) over the steps
        after `disc_start`."""
        if self.discriminator is None or self.optimizer is not None:
            return
        args = self.args
        self.disc_start = num_training_steps // 2 if args.disc_start is None else args.disc_start
        if self.disc_start >= num_training_steps:
            logger.warning("--disc_start %d is not before the run's last step (%d): the discriminator never starts.",
                           self.disc_start, num_training_steps)
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(),
                                          lr=args.disc_learning_rate or args.learning_rate,
                                          betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
        steps = max(1, num_training_steps - self.disc_start)
        self.scheduler = get_scheduler(args.lr_scheduler_type, optimizer=self.optimizer,
                                       num_warmup_steps=args.get_warmup_steps(steps), num_training_steps=steps,
                                       scheduler_specific_kwargs=args.lr_scheduler_kwargs)

    def discriminator_parameters(self) -> list[torch.nn.Parameter]:
        return [] if self.discriminator is None else list(self.discriminator.parameters())

    def reduce_discriminator_gradients(self) -> None:
        """Average the discriminator's gradients across processes (it is not wrapped in DDP: it trains beside)."""
        grads = [p.grad for p in self.discriminator_parameters() if p.grad is not None]
        if not grads or self.trainer.accelerator.num_processes == 1:
            return
        flat = torch.cat([g.flatten() for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.trainer.accelerator.num_processes
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def discriminator_step(self) -> dict:
        """One optimizer step of the discriminator, if it has gradients (none before `disc_start`, or after a
        skipped step): clip to `max_grad_norm`, step, advance its schedule."""
        params = [p for p in self.discriminator_parameters() if p.grad is not None]
        if not params:
            return {}
        max_norm = self.args.max_grad_norm if self.args.max_grad_norm > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"disc_grad_norm": norm.detach()}

    # ------------------------------------------------------------------------------------- the guard

    def held_out_images(self) -> torch.Tensor:
        """The guard's fixed batch: the first images of the evaluation set (of the training set, with a warning,
        where there is none)."""
        if self.guard_images is None:
            trainer = self.trainer
            dataset = trainer.eval_dataset
            if dataset is None:
                logger.warning("The collapse guard has no evaluation set to watch; it watches the first training "
                               "images instead, which the model trains on.")
                dataset = trainer.train_dataset
            if isinstance(dataset, dict):
                dataset = next(iter(dataset.values()))
            batch = trainer.data_collator(first_items(dataset, GUARD_IMAGES))
            self.guard_images = batch["pixel_values"].to(self.device)
        return self.guard_images

    @torch.no_grad()
    def guard_psnr(self, model) -> float:
        """PSNR of the model's reconstructions of the held-out batch, in eval mode, seeded (a VAE's draw), without
        touching the training's random streams."""
        images = self.held_out_images()
        was_training = model.training
        model.eval()
        try:
            with seeded(self.args.seed, images.device), self.trainer.compute_loss_context_manager():
                reconstruction = unit_images(model, model(images, return_loss=False).reconstruction)
        finally:
            model.train(was_training)
        return psnr(unit_images(model, images), reconstruction)

    def snapshot(self, model) -> None:
        """Remember the current weights (and EMA) as the last good ones."""
        self.last_good = {"model": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
                          "ema": None if self.ema is None else {k: v.to("cpu", copy=True)
                                                                for k, v in self.ema.shadow.items()}}

    def restore_last_good(self, model) -> None:
        if self.last_good is None:
            return
        with torch.no_grad():
            model.load_state_dict(self.last_good["model"])
            if self.ema is not None and self.last_good["ema"] is not None:
                for name, value in self.last_good["ema"].items():
                    self.ema.shadow[name].copy_(value)

    def watch(self, model, step: int, control) -> dict:
        """The guard's work at the end of optimizer step `step` (the reference at `disc_start`, a check every
        `gan_guard_steps` after); returns the values to log."""
        if self.guard is None or step < self.disc_start:
            return {}
        every = self.args.gan_guard_steps or max(1, int(self.args.logging_steps))
        if step == self.disc_start and self.guard.reference_psnr is None:
            value = self.guard_psnr(model)
            self.guard.start(step, value)
            self.snapshot(model)
            return {"guard_psnr": value}
        if self.guard.reference_psnr is None or (step - self.disc_start) % every:
            return {}
        value = self.guard_psnr(model)
        event = self.guard.check(step, value)
        if event is None:
            self.snapshot(model)
        elif event.action == "stop":
            self.restore_last_good(model)
            control.should_training_stop = True
        return {"guard_psnr": value}

    def finish(self, model) -> None:
        """At the end of training, with the EMA saved as the model (`save_ema_weights`): the model takes the EMA
        weights, so that the model in memory is the model saved, and the trained weights are kept beside
        (`trained_weights`, on the CPU) for their own evaluation."""
        if self.ema is None or not self.args.save_ema_weights or self.trained_weights is not None:
            return
        self.trained_weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self.ema.copy_to(model)

    def other_weights(self):
        """(name, context manager) of the weights evaluated beside the model's own: the EMA during training, the
        trained weights after it (when the model took the EMA's); None without an EMA."""
        if self.ema is None:
            return None
        if self.trained_weights is None:
            return "ema", self.ema.swapped
        return "trained", lambda model: swapped_weights(model, self.trained_weights)

    # ------------------------------------------------------------------------------------- checkpoints

    def save(self, folder) -> None:
        """Write the recipe's state into a checkpoint folder (before the Trainer writes trainer_state.json)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.discriminator is not None:
            state = {f"discriminator.{k}": v for k, v in self.discriminator.state_dict().items()}
            if self.lecam is not None:
                state.update({f"lecam.{k}": v for k, v in self.lecam.state_dict().items()})
            save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, folder / DISCRIMINATOR_FILE)
            if self.optimizer is not None:
                torch.save(self.optimizer.state_dict(), folder / DISCRIMINATOR_OPTIMIZER_FILE)
                torch.save(self.scheduler.state_dict(), folder / DISCRIMINATOR_SCHEDULER_FILE)
            if self.args.gan_guard_action == "stop" and self.last_good is not None:
                torch.save(self.last_good, folder / GUARD_FILE)
        if self.ema is not None:
            save_file({k: v.cpu() for k, v in self.ema.state_dict().items()}, folder / EMA_FILE)
        state = {"settings": recipe_settings(self.args),
                 "ema_num_updates": None if self.ema is None else self.ema.num_updates,
                 "guard": None if self.guard is None else self.guard.state_dict()}
        (folder / RECIPE_STATE_FILE).write_text(json.dumps(state, indent=1, default=str) + "\n")

    def load(self, folder) -> None:
        """Restore what `save` wrote (after the Trainer restored the model, its optimizer and scheduler)."""
        folder = Path(folder)
        check_recipe_resume(folder, self.args)
        state = json.loads((folder / RECIPE_STATE_FILE).read_text())
        if self.discriminator is not None:
            tensors = load_file(folder / DISCRIMINATOR_FILE, device=str(self.device))
            self.discriminator.load_state_dict({k.removeprefix("discriminator."): v for k, v in tensors.items()
                                                if k.startswith("discriminator.")})
            if self.lecam is not None:
                self.lecam.load_state_dict({k.removeprefix("lecam."): v for k, v in tensors.items()
                                            if k.startswith("lecam.")})
            if self.optimizer is not None and (folder / DISCRIMINATOR_OPTIMIZER_FILE).is_file():
                self.optimizer.load_state_dict(torch.load(folder / DISCRIMINATOR_OPTIMIZER_FILE,
                                                          map_location=self.device, weights_only=True))
                self.scheduler.load_state_dict(torch.load(folder / DISCRIMINATOR_SCHEDULER_FILE, weights_only=True))
            if state["guard"] is not None:
                self.guard.load_state_dict(state["guard"])
            if (folder / GUARD_FILE).is_file():
                self.last_good = torch.load(folder / GUARD_FILE, map_location="cpu", weights_only=True)
        if self.ema is not None:
            self.ema.load_state_dict(load_file(folder / EMA_FILE, device=str(self.device)), state["ema_num_updates"])

    # ------------------------------------------------------------------------------------- what it reports

    def description(self) -> dict:
        """The recipe's settings and networks, for the results and the model card."""
        args, info = self.args, {}
        if self.perceptual is not None:
            info.update(perceptual_weight=args.perceptual_weight, perceptual_network=self.perceptual.name,
                        perceptual_network_description=self.perceptual.description)
        if self.discriminator is not None:
            info.update(disc_weight=args.disc_weight, disc_start=self.disc_start, disc_loss=args.disc_loss,
                        adaptive_weight=args.adaptive_weight, disc_channels=self.disc_channels,
                        disc_num_layers=self.discriminator.num_layers, lecam_weight=args.lecam_weight,
                        r1_weight=args.r1_weight, **self.guard.summary())
        if self.ema is not None:
            info.update(model_ema_decay=args.model_ema_decay, ema_num_updates=self.ema.num_updates,
                        saved_weights="ema" if args.save_ema_weights else "trained")
        return info


class RecipeCallback(TrainerCallback):
    """The recipe's moments in the training loop: the discriminator's gradients averaged across processes before the
    non-finite check (`on_pre_optimizer_step`), its step and the EMA update after the model's (`on_optimizer_step`),
    the guard's reference and checks (`on_train_begin`, `on_step_end`)."""

    def __init__(self, trainer):
        self.trainer = trainer

    @property
    def recipe(self) -> TokenizerRecipe:
        return self.trainer.recipe

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0:
            self.trainer.add_training_terms(self.recipe.watch(model, 0, control))

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.recipe.discriminator is not None:
            self.recipe.reduce_discriminator_gradients()

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        recipe = self.recipe
        if recipe.discriminator is not None:
            self.trainer.add_training_terms(recipe.discriminator_step())
        if recipe.ema is not None:
            recipe.ema.update(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step > 0:
            self.trainer.add_training_terms(self.recipe.watch(model, state.global_step, control))

    def on_train_end(self, args, state, control, **kwargs):
        """The GAN phase's record (`CollapseGuard.summary`) as the last entry of the log history."""
        if self.recipe.guard is not None:
            summary = {k: v for k, v in self.recipe.guard.summary().items() if isinstance(v, (int, float))}
            state.log_history.append({**summary, "step": state.global_step})


__all__ = ["RECIPE_FILES", "RECIPE_SETTINGS", "RecipeCallback", "TokenizerRecipe", "build_perceptual",
           "check_recipe_resume", "decoder_output_layer", "recipe_settings", "uses_recipe"]
