r"""An exponential moving average of a model's weights (Polyak averaging), as the tokenizer recipes keep one:

    theta_ema <- d_n theta_ema + (1 - d_n) theta,     d_n = min(decay, (1 + n) / (10 + n))

after the n-th optimizer step (n = 1, 2, ...). The warm-up cap (1 + n) / (10 + n), TensorFlow's
`ExponentialMovingAverage(num_updates=...)` and diffusers' `EMAModel`, keeps a short run's average from being
dominated by its random initialisation.

Every floating-point entry of the state dict is averaged, buffers included (a VQ-VAE's EMA codebook, a likelihood's
learned scale), so the averaged model is a consistent whole; integer buffers (counters) are copied.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


class ModelEMA:
    """The moving average of `model`'s weights, kept beside it on the same device (`decay` d, see the module
    docstring). `update(model)` after each optimizer step; `swapped(model)` runs a block with the averaged weights in
    the model (e.g. to evaluate them) and puts the trained ones back exactly; `copy_to(model)` keeps them there."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"the EMA decay must lie in [0, 1), got {decay}.")
        self.decay = decay
        self.num_updates = 0
        self.shadow = {name: value.detach().clone() for name, value in model.state_dict().items()}

    def current_decay(self) -> float:
        """d_n for the next update."""
        n = self.num_updates + 1
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        averaged, model_values, copied = [], [], []
        for name, value in model.state_dict().items():
            shadow = self.shadow[name]
            if value.is_floating_point():
                averaged.append(shadow)
                model_values.append(value.detach().to(shadow.dtype))
            else:
                copied.append((shadow, value))
        if averaged:
            torch._foreach_lerp_(averaged, model_values, 1.0 - decay)
        for shadow, value in copied:
            shadow.copy_(value)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Put the averaged weights into `model` (kept there)."""
        model.load_state_dict(self.shadow)

    def swapped(self, model: nn.Module):
        """Run a block with the averaged weights in `model`, then restore the trained ones bit for bit."""
        return swapped_weights(model, self.shadow)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights under the model's own names (what `ema.safetensors` holds)."""
        return {name: value.detach().contiguous() for name, value in self.shadow.items()}

    @torch.no_grad()
    def load_state_dict(self, state_dict: dict[str, torch.Tensor], num_updates: int) -> None:
        missing, unexpected = set(self.shadow) - set(state_dict), set(state_dict) - set(self.shadow)
        if missing or unexpected:
            raise ValueError(f"The EMA weights do not fit the model: missing {sorted(missing)[:5]}, unexpected "
                             f"{sorted(unexpected)[:5]}.")
        for name, value in state_dict.items():
            self.shadow[name].copy_(value)
        self.num_updates = int(num_updates)


__all__ = ["ModelEMA"]


@contextlib.contextmanager
def swapped_weights(model: nn.Module, state_dict: dict):
    """Run a block with `state_dict` loaded into `model`, then put its own weights back bit for bit."""
    own = {name: value.detach().clone() for name, value in model.state_dict().items()}
    with torch.no_grad():
        model.load_state_dict(state_dict)
    try:
        yield model
    finally:
        with torch.no_grad():
            model.load_state_dict(own)
