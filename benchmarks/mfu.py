"""Compute utilisation: MFU = (FLOPs of one forward + backward, counted by `FlopCounterMode`) x (Trainer steps/s,
from the overhead section) / (the throughput of a large matmul, timed on the same device in the same run, next to
each model's runs). Headline `mfu`, the geometric mean over the models.

    python benchmarks/mfu.py [--quick | --smoke]       # times the Trainer once per model first
"""

from __future__ import annotations

import torch
from _common import build_model, geomean, section_main, training_step_flops
from overhead import framework_overhead

HEADLINES = {"mfu": "mfu"}


def compute_utilisation(overhead: dict, cfg, device="cpu", batch_size=None) -> dict:
    """MFU of each model of `overhead` (rows of `framework_overhead`, keyed "family-backbone")."""
    batch_size = batch_size or cfg["batch"]
    rows = {}
    for name, row in overhead.items():
        family, backbone = name.split("-")
        model = build_model(family, backbone, cfg["size"]).to(device)
        flops = training_step_flops(model, torch.rand(batch_size, 1, 28, 28, device=device))
        achieved = flops * row["trainer_samples_per_s"] / batch_size
        rows[name] = {"gflop_per_step": flops / 1e9, "achieved_gflop_per_s": achieved / 1e9,
                      "matmul_gflop_per_s": row["matmul_gflop_per_s"],
                      "mfu": achieved / (row["matmul_gflop_per_s"] * 1e9)}
    return {"batch_size": batch_size, "models": rows, "mfu": geomean([r["mfu"] for r in rows.values()])}


def run(bench) -> dict:
    overhead = bench.results.get("overhead")
    if not overhead or "error" in overhead:  # run alone: one repeat of the overhead section's timings
        overhead = framework_overhead(bench.train, {**bench.cfg, "repeats": 1})
    return compute_utilisation({k: v for k, v in overhead.items() if isinstance(v, dict)}, bench.cfg)


if __name__ == "__main__":
    section_main("compute_utilisation", __doc__)
