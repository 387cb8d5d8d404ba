"""Peak memory per sample: the peak bytes held by live tensors during one training step (forward, backward, Adam
step; `hf_autoencoders.evaluation.probes.training_memory`) at batch sizes B/2 and B, and the slope
(peak(B) - peak(B/2)) / (B/2), which leaves out what does not grow with the batch (weights, gradients, Adam state).
Headline `peak_mem_mb_per_sample`, the most memory-hungry model.

    python benchmarks/memory.py [--quick | --smoke]
"""

from __future__ import annotations

import torch
from _common import MiB, build_model, section_main

from hf_autoencoders.evaluation.probes import training_memory

HEADLINES = {"peak_mem_mb_per_sample": "peak_mem_mb_per_sample"}


def memory_per_sample(cfg, models, device="cpu", batch_size=None) -> dict:
    batch_size = batch_size or cfg["batch"]
    rows = {}
    for family, backbone in models:
        model = build_model(family, backbone, cfg["size"]).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
        peak, per_sample = training_memory(model, torch.rand(batch_size, 1, 28, 28, device=device), optimizer)
        rows[f"{family}-{backbone}"] = {"peak_mb": peak / MiB, "mb_per_sample": per_sample / MiB}
    worst = max(rows, key=lambda k: rows[k]["mb_per_sample"])
    return {"batch_size": batch_size, "method": "MemTracker (live tensor storages)" if device == "cpu"
            else "torch.cuda.max_memory_allocated", "models": rows, "peak_mem_mb_per_sample":
            rows[worst]["mb_per_sample"], "worst_model": worst}


def run(bench) -> dict:
    models = bench.cfg["models"] if bench.mode == "full" else [("vae", "conv"), ("vqvae", "vit")]
    return memory_per_sample(bench.cfg, models + ([] if bench.mode == "smoke" else [("vae", "mlp")]))


if __name__ == "__main__":
    section_main("memory", __doc__)
