"""The headline figures of a saved `run.py` result as the Markdown table of benchmarks/README.md.

    python benchmarks/readme_table.py benchmarks/results/full.json      # or: python benchmarks/run.py --table FILE
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def markdown_table(result: dict) -> str:
    """The headline figures of a result as the Markdown table of benchmarks/README.md."""
    machine = result["machine"]
    command = result.get("command", "python benchmarks/run.py")
    rows = [("trainer_vs_loop_ratio", ">= 0.95", "Trainer / hand-written loop, samples/s (geo. mean of 6 models)"),
            ("trainer_vs_loop_ratio_min", ">= 0.95", "worst model"),
            ("vs_pythae_ratio", ">= 1.5", "ours / pythae, samples/s (geo. mean of VAE, VQ-VAE)"),
            ("vs_pythae_ceiling_ratio", "-", "hand-written loop / pythae on the same networks: the most any "
             "eager library can reach"),
            ("mfu", "", "model FLOP/s / timed fp32 matmul FLOP/s (geo. mean)"),
            ("peak_mem_mb_per_sample", "", "MB per extra training sample (worst model)"),
            ("data_wait_share", "<= 0.05", "share of step time waiting for data (worst model)")]
    lines = ["| figure | value | target | what |", "|---|---|---|---|"]
    for key, target, what in rows:
        value = result.get(key)
        shown = "skipped: " + str(result.get("vs_pythae_skipped")) if value is None and key == "vs_pythae_ratio" \
            else value
        lines.append(f"| `{key}` | {shown} | {target} | {what} |")
    quality = result.get("quality") or {}
    for name, metric, unit_name in (("vae", "test_nll_nats", "nats (K=1000)"),
                                    ("vae_thresholded", "test_nll_nats", "nats (K=1000)"),
                                    ("ae", "test_psnr_db", "dB"), ("vqvae", "test_psnr_db", "dB")):
        if isinstance(quality.get(name), dict):
            row = quality[name]
            target = "<= 88" if name == "vae" else ""
            lines.append(f"| {name} test {metric.split('_')[1]} after {quality['budget_seconds']:.0f} s | "
                         f"{row[metric]} {unit_name} | {target} | {row['epochs']:.1f} epochs, {row['steps']} steps |")
    load = f"{machine.get('load_average_start')} -> {machine.get('load_average_end')}"
    lines.append("")
    lines.append(f"Command: `{command}`. Machine: {machine['cpu']}, {machine['cpu_count']} cores, "
                 f"{machine['torch_threads']} torch thread(s), torch {machine['torch']}, transformers "
                 f"{machine['transformers']}, CUDA: {machine['cuda']}; load average (1, 5, 15 min) at start -> end: "
                 f"{load}; {result.get('elapsed_s', 0) / 60:.0f} minutes.")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python {sys.argv[0]} RESULT.json")
    print(markdown_table(json.loads(Path(sys.argv[1]).read_text())))
