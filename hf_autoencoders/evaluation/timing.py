"""Timing training on a shared machine: a clock read at the end of every Trainer step (`StepTimer`), measurements
taken in turns so that a busy spell of the machine slows them alike (`alternate`), and the steps of each model that
fit in the same time (`equal_time_steps`). The backbones experiment and the benchmarks time their models with these.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from transformers import TrainerCallback


class StepTimer(TrainerCallback):
    """Reads `timer` at the end of every training step (after the optimizer step; CUDA work finished first)."""

    def __init__(self, timer=time.perf_counter):
        self.timer, self.times = timer, []

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(self.timer())

    def intervals(self, skip: int = 0) -> list[float]:
        """Seconds between the ends of consecutive steps, the first `skip` of them left out (warm-up)."""
        return [later - earlier for earlier, later in zip(self.times, self.times[1:])][skip:]


def alternate(measures: dict[str, Callable[[], object]], rounds: int, bar=None) -> dict[str, list]:
    """Call every function of `measures` once per round, in turn, the order reversed every other round (A B C, then
    C B A, ...), so that a change of the machine's load hits every one alike. Returns each name's results in round
    order; `bar` (a tqdm bar), if given, advances once per call."""
    names, results = list(measures), {name: [] for name in measures}
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            results[name].append(measures[name]())
            if bar is not None:
                bar.update()
    return results


def equal_time_steps(seconds: dict[str, float], budget: float) -> dict[str, int]:
    """The steps of each model that fit in `budget` seconds: n_b = max(1, round(budget / t_b)) for the step times
    `seconds` = {name: t_b}. Giving a reference model n_ref steps is `budget = n_ref * t_ref`."""
    return {name: max(1, round(budget / t)) for name, t in seconds.items()}


__all__ = ["StepTimer", "alternate", "equal_time_steps"]
