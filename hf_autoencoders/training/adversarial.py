r"""The adversarial half of the tokenizer recipe (VQGAN, Esser et al. 2021; LDM, Rombach et al. 2022; LlamaGen, Sun et
al. 2024): a PatchGAN discriminator, its losses, the adaptive weight, LeCAM and R1 regularisation, and the guard
that watches reconstructions while the discriminator is on.

With D(x) the discriminator's map of logits (one per patch), x a real image and x^ its reconstruction:

    hinge:           L_D = 1/2 (E[relu(1 - D(x))] + E[relu(1 + D(x^))]),      L_G = -E[D(x^)]
    non_saturating:  L_D = 1/2 (E[softplus(-D(x))] + E[softplus(D(x^))]),   L_G = E[softplus(-D(x^))]

The generator's adversarial term is lambda w_adv L_G, with the adaptive weight (Esser et al., 2021)

    lambda = ||grad_W L_rec|| / (||grad_W L_G|| + 1e-4),  clamped to [0, 1e4], without gradient,

W the decoder's last layer, so that the adversarial gradient reaching the image is w_adv times as large as the
reconstruction's, whatever the scale of either (lambda = 1 without it).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)
GAN_LOSSES = ("hinge", "non_saturating")
GUARD_ACTIONS = ("warn", "lower", "stop")
ADAPTIVE_WEIGHT_MAX = 1e4


def default_disc_channels(image_size: int) -> int:
    """The discriminator's first-layer width for images of `image_size` pixels when none is given: half the image
    size, between 16 and 64 (the recipes' 64 is for images of 128 pixels and more)."""
    return min(64, max(16, image_size // 2))


class PatchDiscriminator(nn.Module):
    """The PatchGAN discriminator of pix2pix (Isola et al., 2017) as the tokenizer recipes use it: `num_layers`
    stride-2 4 x 4 convolutions (channels `base_channels` x 1, 2, 4, 8 at most), a stride-1 4 x 4 convolution,
    then a 4 x 4 convolution to one logit per patch, LeakyReLU(0.2) between them (2 x 2 patches of a 32 x 32
    image). GroupNorm instead of BatchNorm: no running statistics, so it behaves the same on real and fake
    batches, in training and evaluation, and under DDP without syncing. Images too small for `num_layers`
    downsamplings get fewer (at least 3 x 3 positions remain before the last two convolutions).

    It always computes in float32: under bf16 or fp16 autocast its input is cast up and autocast is off inside it,
    so the adversarial signal keeps full precision whatever the autoencoder runs in."""

    def __init__(self, num_channels: int, image_size: int, base_channels: int = 64, num_layers: int = 3):
        super().__init__()
        if base_channels < 1 or num_layers < 1:
            raise ValueError(f"base_channels and num_layers must be positive, got {base_channels} and {num_layers}.")
        if image_size < 6:
            raise ValueError(f"The PatchGAN discriminator needs images of at least 6 x 6 pixels, got {image_size}.")
        self.num_layers = num_layers = min(num_layers, int(math.log2(image_size / 3)))
        widths = [base_channels * min(2**n, 8) for n in range(num_layers + 1)]
        layers = [nn.Conv2d(num_channels, widths[0], 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        for n in range(1, num_layers + 1):  # the last of these keeps the resolution
            layers += [nn.Conv2d(widths[n - 1], widths[n], 4, stride=2 if n < num_layers else 1, padding=1,
                                 bias=False),
                       nn.GroupNorm(math.gcd(32, widths[n]), widths[n]), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(widths[-1], 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        for module in self.modules():  # pix2pix's initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.GroupNorm):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Logits (batch, 1, h, w), one per patch, in float32, for images in [0, 1] (read as [-1, 1])."""
        with torch.autocast(device_type=pixel_values.device.type, enabled=False):
            return self.main(2 * pixel_values.float() - 1)


def discriminator_loss(kind: str, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """L_D of `kind` ("hinge" or "non_saturating"), see the module docstring."""
    if kind == "hinge":
        return 0.5 * (F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean())
    if kind == "non_saturating":
        return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())
    raise ValueError(f"GAN loss {kind!r} is not known; use one of {', '.join(GAN_LOSSES)}.")


def generator_loss(kind: str, logits_fake: torch.Tensor) -> torch.Tensor:
    """L_G of `kind`: -E[D(x^)] (hinge) or E[softplus(-D(x^))] (non_saturating)."""
    if kind == "hinge":
        return -logits_fake.mean()
    if kind == "non_saturating":
        return F.softplus(-logits_fake).mean()
    raise ValueError(f"GAN loss {kind!r} is not known; use one of {', '.join(GAN_LOSSES)}.")


def adaptive_weight(pixel_loss: torch.Tensor, reconstruction: torch.Tensor, last_layer: torch.Tensor,
                    perceptual_gradient: torch.Tensor | None, adversarial_gradient: torch.Tensor,
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """lambda = ||grad_W L_rec|| / (||grad_W L_G|| + 1e-4), clamped to [0, 1e4] and detached, with W = `last_layer`
    (the decoder's last weight) and L_rec = `pixel_loss` + w_p d the per-pixel reconstruction loss (VQGAN's).

    The perceptual and adversarial terms enter through their gradients at the reconstruction x^ (`perceptual_gradient`
    = w_p dd/dx^, or None without a perceptual term; `adversarial_gradient` = dL_G/dx^), so grad_W of each is one
    backward through W alone: grad_W L = (dL/dx^) dx^/dW. Leaves the graph for the backward that follows. Returns
    (lambda, ||grad_W L_rec||, ||grad_W L_G||)."""
    grad_outputs = None if perceptual_gradient is None else [torch.ones_like(pixel_loss), perceptual_gradient]
    outputs = [pixel_loss] if perceptual_gradient is None else [pixel_loss, reconstruction.float()]
    rec_grad, = torch.autograd.grad(outputs, last_layer, grad_outputs=grad_outputs, retain_graph=True)
    adv_grad, = torch.autograd.grad(reconstruction.float(), last_layer, grad_outputs=adversarial_gradient,
                                    retain_graph=True)
    rec_norm, adv_norm = rec_grad.float().norm(), adv_grad.float().norm()
    weight = (rec_norm / (adv_norm + 1e-4)).clamp(0.0, ADAPTIVE_WEIGHT_MAX)
    return weight.detach(), rec_norm.detach(), adv_norm.detach()


class LeCAM(nn.Module):
    r"""LeCAM regularisation of the discriminator (Tseng et al., 2021), as in its reference code:

        R_LC = E[relu(D(x) - alpha_fake)^2] + E[relu(alpha_real - D(x^))^2],

    alpha_real and alpha_fake moving averages (`decay`) of the mean logits on real and fake images. It keeps the
    discriminator's predictions from drifting apart, which helps where data are few. The averages are buffers, so
    they are saved and restored with the discriminator's state."""

    def __init__(self, decay: float = 0.99):
        super().__init__()
        self.decay = decay
        self.register_buffer("real_ema", torch.zeros(()))
        self.register_buffer("fake_ema", torch.zeros(()))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, mean_real: torch.Tensor, mean_fake: torch.Tensor) -> None:
        """Move the averages toward this step's mean logits (the first step sets them)."""
        weight = 1.0 if self.num_updates == 0 else 1 - self.decay
        self.real_ema.lerp_(mean_real.float(), weight)
        self.fake_ema.lerp_(mean_fake.float(), weight)
        self.num_updates += 1

    def forward(self, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
        return (F.relu(logits_real - self.fake_ema).pow(2).mean()
                + F.relu(self.real_ema - logits_fake).pow(2).mean())


def r1_penalty(discriminator: nn.Module, real: torch.Tensor) -> torch.Tensor:
    r"""The R1 penalty (Mescheder et al., 2018) without its weight: E[||grad_x sum D(x)||^2] / 2 over real images
    (per image, averaged); differentiable in the discriminator's weights."""
    real = real.detach().float().requires_grad_(True)
    logits = discriminator(real)
    gradient, = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return 0.5 * gradient.pow(2).flatten(1).sum(1).mean()


def discriminator_accuracy(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The fraction of patches the discriminator gets right: D(x) > 0 on real images, D(x^) < 0 on fakes."""
    return (logits_real > 0).float().mean(), (logits_fake < 0).float().mean()


@dataclass
class CollapseEvent:
    """One check of the guard at which reconstructions had fallen more than the margin below their value when the
    discriminator started."""

    step: int
    psnr: float
    reference_psnr: float
    drop_db: float
    action: str
    adversarial_scale: float


@dataclass
class CollapseGuard:
    r"""Watches reconstruction quality while the discriminator is on. The PSNR of a fixed held-out batch is
    measured when the discriminator starts (the reference) and at every check after; a check more than `margin_db`
    below the reference is a collapse event:

    - ``"warn"``: it is logged (once when the fall starts, once when it recovers) and recorded;
    - ``"lower"``: the adversarial weight is also halved at every such check (`adversarial_scale`), until the
      reconstructions recover;
    - ``"stop"``: training stops, and the weights of the last check that passed are the ones kept.

    Every event is recorded (`events`) for the results and the model card."""

    margin_db: float
    action: str = "lower"
    reference_psnr: float | None = None
    reference_step: int | None = None
    last_good_step: int | None = None
    adversarial_scale: float = 1.0
    collapsed: bool = False  # the last check was below the margin
    events: list = field(default_factory=list)

    def __post_init__(self):
        if self.action not in GUARD_ACTIONS:
            raise ValueError(f"collapse guard action {self.action!r} is not known; use one of "
                             f"{', '.join(GUARD_ACTIONS)}.")
        if not self.margin_db > 0:
            raise ValueError(f"the collapse guard's margin must be a positive number of dB, got {self.margin_db}.")

    def start(self, step: int, psnr: float) -> None:
        """The reference: the PSNR when the discriminator starts."""
        self.reference_psnr, self.reference_step, self.last_good_step = float(psnr), step, step
        logger.info("GAN phase starts at step %d; collapse guard reference PSNR %.2f dB (margin %.2f dB, action %s)",
                    step, psnr, self.margin_db, self.action)

    def check(self, step: int, psnr: float) -> CollapseEvent | None:
        """Judge one measurement; returns the event when it is one (the caller acts on `action`)."""
        if self.reference_psnr is None:
            raise RuntimeError("CollapseGuard.check before start: the reference PSNR is measured first.")
        drop = self.reference_psnr - psnr
        if not (drop > self.margin_db or math.isnan(psnr)):
            if self.collapsed:
                logger.warning("step %d: reconstructions recovered (PSNR %.2f dB, reference %.2f dB)", step, psnr,
                               self.reference_psnr)
            self.collapsed, self.last_good_step = False, step
            return None
        if self.action == "lower":
            self.adversarial_scale *= 0.5
        event = CollapseEvent(step, float(psnr), self.reference_psnr, float(drop), self.action,
                              self.adversarial_scale)
        self.events.append(event)
        if not self.collapsed or self.action != "warn":
            what = {"warn": "training goes on (--gan_guard_action lower or stop acts on it)",
                    "lower": f"the adversarial weight is now x{self.adversarial_scale:g}",
                    "stop": f"training stops; the weights of step {self.last_good_step} are kept"}[self.action]
            logger.warning("step %d: the GAN phase is degrading the reconstructions: held-out PSNR %.2f dB, %.2f dB "
                           "below its %.2f dB at the discriminator's start (step %d, margin %.2f dB); %s.", step, psnr,
                           drop, self.reference_psnr, self.reference_step, self.margin_db, what)
        self.collapsed = True
        return event

    def state_dict(self) -> dict:
        state = asdict(self)
        state["events"] = [asdict(e) if isinstance(e, CollapseEvent) else e for e in self.events]
        return state

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            if key == "events":
                value = [CollapseEvent(**e) for e in value]
            setattr(self, key, value)

    def summary(self) -> dict:
        """What the results and the card say about the GAN phase: the number of events, the first one, the worst
        drop, the reference."""
        worst = max((e.drop_db for e in self.events), default=None)
        return {"gan_collapse_events": len(self.events),
                "gan_first_collapse_step": self.events[0].step if self.events else None,
                "gan_worst_psnr_drop_db": worst,
                "gan_reference_psnr": self.reference_psnr, "gan_reference_step": self.reference_step,
                "gan_guard_margin_db": self.margin_db, "gan_guard_action": self.action}


__all__ = ["ADAPTIVE_WEIGHT_MAX", "GAN_LOSSES", "GUARD_ACTIONS", "CollapseEvent", "CollapseGuard", "LeCAM",
           "PatchDiscriminator", "adaptive_weight", "discriminator_accuracy", "discriminator_loss", "generator_loss",
           "r1_penalty"]
