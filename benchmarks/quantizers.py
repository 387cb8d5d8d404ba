"""Benchmark of issue 26: the quantizers at matched bits per code on CIFAR-10 (the `quantizers` experiment), and
codebooks trained by two processes against one.

    OMP_NUM_THREADS=1 python benchmarks/quantizers.py --dataset_name ../shared/data/cifar10 \
        --output_dir runs/quantizers > benchmarks/results/quantizers.json          # hours on 2 CPU cores
    python benchmarks/quantizers.py --smoke                                        # seconds: the embedded digits
    python benchmarks/quantizers.py --table benchmarks/results/quantizers.json    # the README table

It runs `hf-autoencoders experiment quantizers` (hf_autoencoders/studies/quantizers.py) at the `seed` budget (3
seeds, 3 epochs, conv backbone; `--max_steps`, `--seeds` and the other flags reduce it) into `--output_dir` (its
report.md, figures and trained runs; `--resume` continues an interrupted one): VQ with the straight-through gradient,
VQ with the rotation trick, SimVQ, LFQ and FSQ with 2^12 = 4096 codes each (FSQ levels (8, 8, 8, 8)), the paper's
plain VQ codebook as the collapse reference, and residual VQ at depths 2 and 4 (depth 1 is the VQ arm); PSNR,
reconstruction FD, codebook usage over the whole test set and a transformer prior's NLL in bits per image.

Then `ddp`: a tiny VQ-VAE of each kind with state or batch statistics (EMA codebook with k-means initialisation and
dead-code restarts, SimVQ, LFQ with its batch entropy, residual VQ, FSQ with its batch standardisation),
K = 2^bits codes, is trained for a few SGD steps by 2 gloo processes under DistributedDataParallel, each with half of
a global batch of real training images, and by one process on the whole batch; `ddp_max_abs_diff` is the largest
|difference| between the two runs' codebooks (the code vectors of VQ and SimVQ, LFQ's and FSQ's projections),
`ddp.ddp_max_rel_diff_state` the largest difference of any weight or buffer relative to its largest value (the EMA
sums grow with the counts).

Prints one JSON object (stdout; progress and the Trainer's logs go to stderr) holding the command that made it and
the issue's figures: `min_test_usage` (the lowest test usage over the quantizers), `min_psnr_gain_over_vq_db` (the
lowest PSNR minus VQ's, over the quantizers at matched bits), `rvq_depth4_gain_db` and `ddp_max_abs_diff`, the
experiment's verdicts, and each arm's means and standard deviations over the seeds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch
from _common import log, machine_info, rounded

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
COLUMNS = [("psnr", "PSNR (dB)", 2), ("reconstruction_fd_domain", "recon. FD", 2), ("codebook_usage", "test usage", 3),
           ("codebook_dead_codes", "dead codes", 0), ("prior_bits_per_image", "prior bits / image", 0)]
# The smoke run: tiny models, a few steps and images, one seed (seconds).
SMOKE = dict(max_steps=3, batch_size=32, hidden_size=32, num_hidden_layers=1, embedding_dim=8,
             max_train_examples=200, max_test_examples=48, probe_examples=100, classifier_examples=200,
             classifier_epochs=1, classifier_width=8, num_samples=24, prior_steps=2, prior_hidden_size=16,
             prior_layers=1, quantizer_bits=4)


# ------------------------------------------------------------------------------------------------ two processes


def ddp_configs(bits: int) -> dict[str, dict]:
    """The quantizers whose state or statistics come from the batch, as VQ-VAE config fields."""
    k = 2**bits
    return {
        "vq_ema_kmeans_restarts": {"num_embeddings": k, "dead_code_threshold": 1},
        "simvq": {"quantizer": "simvq", "num_embeddings": k},
        "lfq": {"quantizer": "lfq", "num_embeddings": k, "lfq_entropy_temperature": 1.0},
        "residual_vq_depth2": {"num_embeddings": k, "num_quantizers": 2, "dead_code_threshold": 1},
        "fsq": {"quantizer": "fsq", "fsq_levels": (2,) * bits},
    }


def codebooks(model) -> dict[str, torch.Tensor]:
    """What each quantizer (each depth of a residual one) looks codes up in: the code vectors of VQ and SimVQ
    (`codes()`), the projections of LFQ and FSQ, which have no codebook."""
    found = {}
    for name, module in model.quantizer.named_modules():
        if hasattr(module, "codes") and callable(module.codes):
            found[f"{name or 'quantizer'}.codes"] = module.codes().detach().clone()
        elif hasattr(module, "levels") or hasattr(module, "num_bits"):  # FSQ, LFQ
            for part in ("project_in", "project_out"):
                found[f"{name or 'quantizer'}.{part}"] = getattr(module, part).weight.detach().clone()
    return found


def train_steps(options: dict, images: torch.Tensor, steps: int, wrap=None) -> dict[str, dict[str, torch.Tensor]]:
    """`steps` SGD steps of a small conv VQ-VAE with `options` on `images` (one process's batch); its state dict and
    codebooks. The model and the quantizers' random draws are seeded alike in every process (DDP starts from rank
    0's weights, and rank 0 draws the k-means starts and restarts as one process would)."""
    from hf_autoencoders.models import VQVAEConfig, VQVAEModel

    torch.manual_seed(0)
    config = VQVAEConfig(image_size=images.shape[-1], num_channels=images.shape[1], hidden_size=16,
                         num_residual_blocks=1, embedding_dim=16, **options)
    model = VQVAEModel(config).train()
    trained = wrap(model) if wrap else model
    # SGD, so that a difference of float rounding in a gradient stays one in the weights (Adam divides tiny gradients
    # by their own size); a learning rate small enough for the per-image sums of the loss.
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    torch.manual_seed(1)
    for _ in range(steps):
        optimizer.zero_grad()
        trained(images).loss.backward()
        optimizer.step()
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    return {"state": state, "codebooks": codebooks(model)}


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str, images: torch.Tensor, bits: int,
                steps: int) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=600))
    try:
        shard = images.chunk(world_size)[rank]
        runs = {name: train_steps(options, shard, steps, wrap=DistributedDataParallel)
                for name, options in ddp_configs(bits).items()}
        torch.save(runs, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[key].double() - value.double()).abs().max().item()
               for key, value in b.items() if value.is_floating_point())


def ddp_check(images: torch.Tensor, bits: int, steps: int = 3) -> dict:
    """Two gloo processes (half of `images` each) against one process (all of them), per quantizer: the largest
    |difference| of the codebooks (`codebooks`), of every weight and buffer relative to its largest value (EMA sums
    grow with the counts), and whether the two processes hold identical states."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        start_method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        mp.start_processes(_ddp_worker, args=(2, f"{tmp}/init", tmp, images, bits, steps), nprocs=2, join=True,
                           start_method=start_method)
        ranks = [torch.load(f"{tmp}/rank{rank}.pt") for rank in range(2)]
    per_quantizer = {}
    for name, options in ddp_configs(bits).items():
        single, double = train_steps(options, images, steps), ranks[0][name]
        relative = max(((double["state"][k].double() - v.double()).abs().max()
                        / v.double().abs().max().clamp_min(1e-12)).item()
                       for k, v in single["state"].items() if v.is_floating_point())
        per_quantizer[name] = {
            "codebook_max_abs_diff": _max_abs_diff(double["codebooks"], single["codebooks"]),
            "state_max_rel_diff": relative,
            "finite": all(torch.isfinite(v).all().item() for v in single["state"].values() if v.is_floating_point()),
            "processes_identical": all(torch.equal(double["state"][k], ranks[1][name]["state"][k])
                                       for k in single["state"]),
        }
    return {"steps": steps, "global_batch": len(images), "num_embeddings": 2**bits, "quantizers": per_quantizer,
            "ddp_max_abs_diff": max(q["codebook_max_abs_diff"] for q in per_quantizer.values()),
            "ddp_max_rel_diff_state": max(q["state_max_rel_diff"] for q in per_quantizer.values())}


# --------------------------------------------------------------------------------------------------- the table


def markdown_table(result: dict) -> str:
    """The README table of a result: one row per arm, mean ± standard deviation over the seeds."""
    header = ["quantizer", "bits / position"] + [title for _, title, _ in COLUMNS]
    rows = []
    for label, arm in result["arms"].items():
        cells = [label, "-" if arm["bits_per_position"] is None else str(arm["bits_per_position"])]
        for key, _, digits in COLUMNS:
            mean, std = arm["mean"].get(key), arm["std"].get(key)
            cells.append("-" if mean is None else f"{mean:.{digits}f} ± {std:.{digits}f}")
        rows.append(cells)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


# ---------------------------------------------------------------------------------------------------------- main


def main(argv=None) -> dict | str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_name", default=str(SHARED / "cifar10"),
                        help="A local dataset folder or a Hub id (e.g. uoft-cs/cifar10), read by load_image_dataset.")
    parser.add_argument("--output_dir", default=str(ROOT / "runs" / "quantizers"),
                        help="The experiment's folder: report.md, figures, and the trained runs under runs/.")
    parser.add_argument("--budget", default="seed", help="The experiment's budget (quick, mlp or seed).")
    parser.add_argument("--seeds", type=int, default=None, help="Seeds (default: the budget's, 3 at seed).")
    parser.add_argument("--max_steps", type=int, default=None, help="Training steps of every model (default: "
                                                                        "the budget's epochs).")
    parser.add_argument("--max_test_examples", type=int, default=None, help="Test images (default: the budget's).")
    parser.add_argument("--prior_steps", type=int, default=None, help="Training steps of each transformer prior.")
    parser.add_argument("--resume", action="store_true", help="Continue an interrupted run in --output_dir.")
    parser.add_argument("--ddp_steps", type=int, default=3, help="SGD steps of the two-process check.")
    parser.add_argument("--smoke", action="store_true",
                        help="The embedded digits, tiny models, a few steps, one seed: checks the script runs.")
    parser.add_argument("--table", default=None, help="Print the README table of a saved JSON result and exit.")
    args = parser.parse_args(argv)
    if args.table:
        return markdown_table(json.loads(Path(args.table).read_text()))
    command = "python benchmarks/quantizers.py " + " ".join(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)

    from hf_autoencoders.data import load_image_dataset
    from hf_autoencoders.studies import run_experiment

    overrides = {k: v for k, v in (("max_steps", args.max_steps), ("max_test_examples", args.max_test_examples),
                                   ("prior_steps", args.prior_steps)) if v is not None}
    started = time.time()
    with contextlib.ExitStack() as stack:
        if args.smoke:
            output_dir = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "quantizers"
            dataset, budget, seeds, overrides = None, "quick", 1, {**SMOKE, **overrides}
        else:
            output_dir, dataset, budget, seeds = Path(args.output_dir), args.dataset_name, args.budget, args.seeds
        log(f"quantizers experiment ({budget} budget) into {output_dir}")
        results = run_experiment("quantizers", output_dir, budget=budget, dataset_name=dataset, seeds=seeds,
                                 resume=args.resume, progress=False, **overrides)
        summary = results["summary"]
        bits = summary["quantizer_bits"]
        log("two processes against one")
        if args.smoke:  # random images: the digits' flat backgrounds repeat vectors, where float rounding breaks ties
            images = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        else:
            images = load_image_dataset(dataset, progress=False).train.images[:16].float() / 255
        ddp = ddp_check(images, bits, args.ddp_steps)
    arms = {label: {"bits_per_position": group["config"].get("num_quantizers", 1) * bits  # None: no quantizer
                    if "quantizer" in group["config"] else None,
                    "config": group["config"],
                    "mean": {key: group["mean"].get(key) for key, _, _ in COLUMNS},
                    "std": {key: group["std"].get(key) for key, _, _ in COLUMNS}}
            for label, group in results["groups"].items()}
    return rounded({
        "command": command.strip(),
        "min_test_usage": summary["min_test_usage"],
        "min_psnr_gain_over_vq_db": summary["min_psnr_gain_over_vq_db"],
        "rvq_depth4_gain_db": summary["rvq_depth4_gain_db"],
        "ddp_max_abs_diff": ddp["ddp_max_abs_diff"],
        "dataset": results["dataset"],
        "budget": results["budget"]["name"],
        "seeds": results["seeds"],
        "quantizer_bits": bits,
        "test_usage": summary["test_usage"],
        "psnr_gain_over_vq_db": summary["psnr_gain_over_vq_db"],
        "rvq_depth2_gain_db": summary["rvq_depth2_gain_db"],
        "arms": arms,
        "claims": {claim["key"]: claim["verdict"] for claim in results["claims"]},
        "ddp": ddp,
        "experiment_output_dir": None if args.smoke else str(output_dir),
        "elapsed_s": time.time() - started,
        "machine": machine_info(),
    }, digits=6)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    real_stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs; stdout carries only the JSON
        output = main()
    print(output if isinstance(output, str) else json.dumps(output, indent=1), file=real_stdout)
