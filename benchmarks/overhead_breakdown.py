"""Overhead breakdown: microseconds per call of what the Trainer does each step beyond the hand-written loop of
`overhead.py` (and of the model's input check, which both run), for the conv VAE at the mode's batch size.

    python benchmarks/overhead_breakdown.py [--quick | --smoke]
"""

from __future__ import annotations

import tempfile
import time

import torch
from _common import build_model, section_main, trainer_args, unit

from hf_autoencoders.data import ImageCollator
from hf_autoencoders.training import AutoencoderTrainer


def per_call_us(fn, calls: int = 200) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return 1e6 * (time.perf_counter() - start) / calls


def run(bench) -> dict:
    from accelerate.utils import is_lomo_available

    train, batch_size = bench.train, bench.cfg["batch"]
    model = build_model("vae", "conv", bench.cfg["size"])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = AutoencoderTrainer(model=model, args=trainer_args(tmp, batch_size, 1), data_collator=ImageCollator(),
                                     train_dataset=train)
        loader = trainer.get_train_dataloader()
    batches = iter(loader)

    def next_batch():
        nonlocal batches
        try:
            return next(batches)
        except StopIteration:
            batches = iter(loader)
            return next(batches)

    order = torch.randperm(len(train))
    x = next_batch()["pixel_values"]
    return {
        "batch_size": batch_size,
        "dataloader_batch_us (DataLoader + ImageCollator)": per_call_us(next_batch, 50),
        "slice_batch_us (hand-written loop)": per_call_us(lambda: unit(train.images[order[:batch_size]]), 50),
        "floating_point_ops_us (Trainer, every step)": per_call_us(lambda: trainer.floating_point_ops({
            "pixel_values": x})),
        "is_lomo_available_us (accelerate optimizer.step, twice a step)": per_call_us(is_lomo_available),
        "model_train_us (Trainer.training_step, every step)": per_call_us(model.train),
        "check_pixel_values_us (model forward, both arms)": per_call_us(lambda: model.check_pixel_values(x)),
    }


if __name__ == "__main__":
    section_main("overhead_breakdown", __doc__)
