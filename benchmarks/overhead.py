"""Framework overhead: samples/s of `AutoencoderTrainer.train()` against a hand-written loop on the same model
object, alternated in one process, per model (AE, VAE, VQ-VAE with the conv and ViT backbones); headline
`trainer_vs_loop_ratio`, the geometric mean of the per-model median ratios (target >= 0.95).

    python benchmarks/overhead.py [--quick | --smoke]      # this section alone; `run.py` runs it with the others
"""

from __future__ import annotations

import tempfile
import time

import torch
import transformers
from _common import (
    WindowTimer,
    build_model,
    geomean,
    log,
    matmul_flops_per_second,
    median,
    num_parameters,
    section_main,
    sync,
    trainer_args,
    unit,
)

from hf_autoencoders.data import ImageCollator
from hf_autoencoders.evaluation.timing import alternate
from hf_autoencoders.training import AutoencoderTrainer

HEADLINES = {"trainer_vs_loop_ratio": "trainer_vs_loop_ratio", "trainer_vs_loop_ratio_min": "trainer_vs_loop_ratio_min"}


def trainer_samples_per_second(model, dataset, batch_size, steps, warmup, device="cpu", **fields) -> float:
    """Steady-state samples/s of `AutoencoderTrainer.train()` over steps warmup+1..warmup+steps (everything
    between two optimizer steps counts: data loading, collation, logging, callbacks, clipping)."""
    timer = WindowTimer(warmup, steps, device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = AutoencoderTrainer(model=model, args=trainer_args(tmp, batch_size, warmup + steps, device, **fields),
                                     data_collator=ImageCollator(), train_dataset=dataset, callbacks=[timer])
        trainer.train()
    return steps * batch_size / timer.seconds


def loop_samples_per_second(model, images, batch_size, steps, warmup, device="cpu", bf16=False, max_grad_norm=1.0,
                            channels_last=False) -> float:
    """The same training written by hand: shuffled batches sliced from the in-memory uint8 tensor (channels-last
    with `channels_last`), the optimizer the Trainer builds (AdamW, weight decay 0 = Adam, lr 1e-3), the same
    gradient clipping."""
    args = trainer_args(tempfile.gettempdir(), batch_size, 1, device)
    optimizer_class, optimizer_kwargs = transformers.Trainer.get_optimizer_cls_and_kwargs(args, model)
    model.to(device).train()
    optimizer = optimizer_class(model.parameters(), **optimizer_kwargs)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    start = None
    for step in range(warmup + steps):
        index = order[(step * batch_size) % len(images):][:batch_size]
        pixel_values = unit(images[index]).to(device, non_blocking=True).contiguous(memory_format=layout)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(pixel_values).loss
        loss.backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step + 1 == warmup:
            sync(device)
            start = time.perf_counter()
    sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def framework_overhead(train, cfg, device="cpu", bf16=False, models=None, batch_size=None) -> dict:
    """Trainer vs hand-written loop per model, alternated (`alternate`: A B, then B A, ...) next to a timed matmul
    (the peak MFU is measured against, timed beside the runs so that both see the same load): the median of the
    per-repeat ratios of samples/s, and the medians of each side."""
    batch_size = batch_size or cfg["batch"]
    results = {}
    for family, backbone in models or cfg["models"]:
        name = f"{family}-{backbone}"
        model = build_model(family, backbone, cfg["size"]).to(device)
        times = alternate({
            "matmul": lambda: matmul_flops_per_second(device, cfg["matmul_size"], min_seconds=0.3,
                                                      dtype=torch.bfloat16 if bf16 else torch.float32),
            "trainer": lambda: trainer_samples_per_second(model, train, batch_size, cfg["steps"], cfg["warmup"],
                                                          device, bf16=bf16),
            "loop": lambda: loop_samples_per_second(model, train.images, batch_size, cfg["steps"], cfg["warmup"],
                                                    device, bf16=bf16),
        }, cfg["repeats"])
        ratios = [ours / loop for ours, loop in zip(times["trainer"], times["loop"])]
        results[name] = {
            "trainer_samples_per_s": median(times["trainer"]), "loop_samples_per_s": median(times["loop"]),
            "ratio": median(ratios), "ratios": ratios, "parameters": num_parameters(model),
            "matmul_gflop_per_s": median(times["matmul"]) / 1e9,
        }
        log(f"overhead {name}: ratio {median(ratios):.3f} ({median(times['trainer']):.0f} vs "
            f"{median(times['loop']):.0f} samples/s)")
    return results


def run(bench) -> dict:
    rows = framework_overhead(bench.train, bench.cfg)
    ratios = [row["ratio"] for row in rows.values()]
    return {**rows, "trainer_vs_loop_ratio": geomean(ratios), "trainer_vs_loop_ratio_min": min(ratios)}


if __name__ == "__main__":
    section_main("overhead", __doc__)
