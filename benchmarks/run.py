"""Benchmarks of hf_autoencoders: framework overhead, speed and quality against pythae, compute utilisation, memory,
data-pipeline waits, quality per CPU budget, speed-ups and a GPU section. Prints ONE JSON object.

    python benchmarks/run.py --quick             # about a minute (on an idle 2-core CPU)
    python benchmarks/run.py                     # everything; about 1.5 hours on 2 CPU cores
    python benchmarks/run.py --smoke             # seconds; for the test suite
    python benchmarks/run.py --only overhead,mfu # some sections only

See benchmarks/README.md for what each figure means and the latest results.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import transformers  # noqa: E402

from _common import (  # noqa: E402
    MiB,
    WindowTimer,
    build_model,
    geomean,
    load_average,
    load_images,
    machine_info,
    matmul_flops_per_second,
    median,
    num_parameters,
    peak_tensor_bytes,
    rounded,
    subset,
    sync,
    training_step_flops,
    unit,
)
from hf_autoencoders.data import ImageCollator  # noqa: E402
from hf_autoencoders.trainer import AutoencoderTrainer  # noqa: E402
from hf_autoencoders.training import AutoencoderTrainingArguments  # noqa: E402

DEFAULT_DATA = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")
OVERHEAD_MODELS = [(f, b) for b in ("conv", "vit") for f in ("ae", "vae", "vqvae")]

# Settings per mode: model size, batch size, measured steps, warm-up steps, repeats, ...
MODES = {
    "smoke": dict(size="tiny", batch=32, steps=3, warmup=1, repeats=1, models=[("vae", "conv"), ("vqvae", "vit")],
                  pythae_steps=3, pythae_size="tiny", budget_s=2.0, iwae_k=20, iwae_n=32, eval_n=64),
    "quick": dict(size="small", batch=64, steps=8, warmup=2, repeats=3, models=OVERHEAD_MODELS,
                  pythae_steps=20, pythae_size="small", budget_s=20.0, iwae_k=1000, iwae_n=200, eval_n=1000),
    "full": dict(size="default", batch=128, steps=20, warmup=3, repeats=5, models=OVERHEAD_MODELS,
                 pythae_steps=None, pythae_size="small", budget_s=900.0, iwae_k=1000, iwae_n=None, eval_n=None),
}


def log(*args):
    print(f"[{time.strftime('%H:%M:%S')}]", *args, file=sys.stderr, flush=True)


def training_args(output_dir, batch_size, max_steps, device="cpu", **kwargs):
    """The arguments `hf_autoencoders.training.fit` uses (no checkpoints, no tqdm, no reporting), for `max_steps`."""
    defaults = dict(save_strategy="no", logging_steps=10, disable_tqdm=True, report_to="none", seed=0,
                    per_device_train_batch_size=batch_size, max_steps=max_steps, use_cpu=device == "cpu")
    return AutoencoderTrainingArguments(output_dir=str(output_dir), **{**defaults, **kwargs})


# ------------------------------------------------------------------------------------------- framework overhead


def trainer_samples_per_second(model, dataset, batch_size, steps, warmup, device="cpu", **kwargs) -> float:
    """Steady-state samples/s of `AutoencoderTrainer.train()` over steps warmup+1..warmup+steps (everything
    between two optimizer steps counts: data loading, collation, logging, callbacks, clipping)."""
    timer = WindowTimer(warmup, steps, device)
    with tempfile.TemporaryDirectory() as tmp:
        args = training_args(tmp, batch_size, warmup + steps, device, **kwargs)
        trainer = AutoencoderTrainer(model=model, args=args, data_collator=ImageCollator(), train_dataset=dataset,
                                     callbacks=[timer])
        trainer.train()
    return steps * batch_size / timer.seconds


def loop_samples_per_second(model, images, batch_size, steps, warmup, device="cpu", bf16=False,
                            max_grad_norm=1.0) -> float:
    """The same training written by hand: shuffled batches sliced from the in-memory uint8 tensor, the optimizer
    the Trainer builds (AdamW, weight decay 0 = Adam, lr 1e-3), the same gradient clipping."""
    args = training_args(tempfile.gettempdir(), batch_size, 1, device)
    optimizer_class, optimizer_kwargs = transformers.Trainer.get_optimizer_cls_and_kwargs(args, model)
    model.to(device).train()
    optimizer = optimizer_class(model.parameters(), **optimizer_kwargs)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    start = None
    for step in range(warmup + steps):
        index = order[(step * batch_size) % len(images):][:batch_size]
        pixel_values = unit(images[index]).to(device, non_blocking=True)
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
    """Trainer vs hand-written loop, alternated in one process (A B, then B A, ...), per model: the median of the
    per-repeat ratios of samples/s, and the medians of each side."""
    batch_size = batch_size or cfg["batch"]
    results = {}
    for family, backbone in models or cfg["models"]:
        name = f"{family}-{backbone}"
        model = build_model(family, backbone, cfg["size"]).to(device)
        ours, loop, ratios = [], [], []
        for repeat in range(cfg["repeats"]):
            arms = ["trainer", "loop"] if repeat % 2 == 0 else ["loop", "trainer"]
            result = {}
            for arm in arms:
                if arm == "trainer":
                    result[arm] = trainer_samples_per_second(
                        model, train, batch_size, cfg["steps"], cfg["warmup"], device, bf16=bf16)
                else:
                    result[arm] = loop_samples_per_second(
                        model, train.images, batch_size, cfg["steps"], cfg["warmup"], device, bf16=bf16)
            ours.append(result["trainer"])
            loop.append(result["loop"])
            ratios.append(result["trainer"] / result["loop"])
        results[name] = {
            "trainer_samples_per_s": median(ours),
            "loop_samples_per_s": median(loop),
            "ratio": median(ratios),
            "ratios": ratios,
            "parameters": num_parameters(model),
        }
        log(f"overhead {name}: ratio {median(ratios):.3f} ({median(ours):.0f} vs {median(loop):.0f} samples/s)")
        del model
    return results
