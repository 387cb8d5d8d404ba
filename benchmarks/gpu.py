"""The GPU section, when CUDA is present: Trainer samples/s of the conv VQ-VAE, conv VAE and ViT VAE in fp32 at
batch 128 and in bf16 autocast at batch 512, the Trainer/loop ratio in bf16 at batch 512, MFU against a timed
8192x8192 bf16 matmul, and peak memory per sample from `torch.cuda.max_memory_allocated`. Without CUDA it says it
was skipped.

    python benchmarks/gpu.py [--quick | --smoke]
"""

from __future__ import annotations

import torch
from _common import build_model, error_row, section_main
from memory import memory_per_sample
from mfu import compute_utilisation
from overhead import framework_overhead, trainer_samples_per_second

MODELS = [("vqvae", "conv"), ("vae", "conv"), ("vae", "vit")]


def attempt(measure) -> dict:
    """`measure()`, or its error: one failing measurement must not hide the others."""
    try:
        return measure()
    except Exception as err:  # noqa: BLE001
        return error_row(err)


def gpu_section(train, cfg) -> dict:
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    device = "cuda"
    cfg = {**cfg, "size": "default", "repeats": max(cfg["repeats"], 2), "steps": max(cfg["steps"], 20),
           "matmul_size": 8192}

    def throughput(family, backbone):
        model = build_model(family, backbone, "default").to(device)
        return {"fp32_b128_samples_per_s": trainer_samples_per_second(model, train, 128, cfg["steps"], cfg["warmup"],
                                                                      device),
                "bf16_b512_samples_per_s": trainer_samples_per_second(model, train, 512, cfg["steps"], cfg["warmup"],
                                                                      device, bf16=True)}

    out = {"device": torch.cuda.get_device_name(0),
           "throughput": {f"{f}-{b}": attempt(lambda f=f, b=b: throughput(f, b)) for f, b in MODELS}}
    out["trainer_vs_loop_bf16_b512"] = attempt(lambda: framework_overhead(train, cfg, device, bf16=True, models=MODELS,
                                                                          batch_size=512))
    overhead = {name: row for name, row in out["trainer_vs_loop_bf16_b512"].items() if isinstance(row, dict)}
    out["mfu_bf16_b512"] = attempt(lambda: compute_utilisation(overhead, cfg, device, batch_size=512))
    out["memory_fp32"] = attempt(lambda: memory_per_sample(cfg, MODELS, device, batch_size=512))
    return out


def run(bench) -> dict:
    return gpu_section(bench.train, bench.cfg)


if __name__ == "__main__":
    section_main("gpu", __doc__)
