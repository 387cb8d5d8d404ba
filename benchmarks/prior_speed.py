"""Benchmark of issue 17: the transformer prior (a GPT-2 over code tokens, sampled by `generate()` with the key/value
cache) against the gated PixelCNN prior, each trained for the same wall-clock time on the codes of the same VQ-VAE.

    python benchmarks/prior_speed.py --mnist_vqvae /work/runs/prior/vqvae-mnist \
        --cifar10_vqvae /work/runs/prior/vqvae-cifar10 --budget 600 > benchmarks/results/prior_speed.json
    python benchmarks/prior_speed.py --smoke      # seconds: a tiny untrained VQ-VAE on the embedded digits

For each dataset (MNIST: 7x7 codes; CIFAR-10: 8x8 codes, K = 512), the training and test images are encoded once by
the VQ-VAE (`extract_codes`, cached in --cache_dir); then each prior, at its library default size, trains with
`PriorTrainer` (AdamW, lr 1e-3, batch 128, 100 warm-up steps, then a cosine over the elapsed share of the budget) until
--budget seconds have passed, and is scored the same way (`prior_test_metrics`): test NLL in nats and bits per code,
and bits/dim of the test images through the VQ-VAE's decoder (an upper bound, see `models/code_priors.py`).
Sampling throughput: code maps per second of `sample_codes(prior, 64, generator)` (the decoder not included), the
median of --repeats timed draws after one warm-up, the two priors alternating so that both see the same load
(the CPU seconds of the same draws are reported beside them; the target is judged on wall-clock).
`samples_<dataset>.png` (in --figures_dir, default benchmarks/results/prior_speed/) shows the 64 samples of each
prior's first draw (seed 0), decoded by the VQ-VAE: PixelCNN left, transformer right.

Prints one JSON object (stdout; progress and Trainer logs go to stderr). Target: the transformer samples at least 10x
faster at equal or better test NLL per code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import TimeBudget, load_average, log, machine_info, rounded, wall_and_cpu_seconds
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PRIOR_TYPES = ("pixelcnn", "transformer")
WARMUP_STEPS = 100


def warmup_cosine(optimizer, budget: TimeBudget, warmup_steps: int):
    """lr(step, t) = lr0 * min(1, (step + 1) / warmup) * (1 + cos(pi t / T)) / 2, t the elapsed share of the budget."""

    def factor(step):
        return min(1.0, (step + 1) / warmup_steps) * 0.5 * (1 + math.cos(math.pi * budget.fraction()))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_for(prior, train_codes, seconds: float, batch_size: int, lr: float, seed: int) -> dict:
    """Train `prior` with the project's `PriorTrainer` until `seconds` of wall-clock time have passed."""
    from hf_autoencoders.training import training_arguments
    from hf_autoencoders.training.prior import PriorTrainer, prior_collator

    budget = TimeBudget(seconds)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=lr, weight_decay=0.0)
    with tempfile.TemporaryDirectory() as tmp:
        args = training_arguments(tmp, per_device_train_batch_size=batch_size, num_train_epochs=100_000,
                                  logging_steps=200, seed=seed, use_cpu=True)
        trainer = PriorTrainer(model=prior, args=args, data_collator=prior_collator(prior),
                               train_dataset=train_codes, callbacks=[budget],
                               optimizers=(optimizer, warmup_cosine(optimizer, budget, WARMUP_STEPS)))
        trainer.train()
    steps = trainer.state.global_step
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"steps": steps, "epochs": steps * batch_size / len(train_codes), "train_seconds": budget.elapsed,
            "last_logged_train_loss": losses[-1] if losses else None}


def time_sampling(priors: dict, batch: int, repeats: int) -> tuple[dict, dict, dict]:
    """Wall-clock and CPU seconds (this process) per `sample_codes(prior, batch)` for each prior, alternating priors,
    after one warm-up draw each; also returns the warm-up draws (seed 0), for the pictures. On a shared machine the
    CPU seconds show how much of a wall-clock difference is the other processes' load."""
    from hf_autoencoders.evaluation.timing import alternate
    from hf_autoencoders.models import sample_codes

    def draw(prior, seed):
        return sample_codes(prior, batch, generator=torch.Generator().manual_seed(seed), progress=False)

    first = {name: draw(prior, 0) for name, prior in priors.items()}
    seeds = {name: iter(range(1, repeats + 1)) for name in priors}  # draw r of every prior has seed r
    rounds = alternate({name: lambda name=name: wall_and_cpu_seconds(lambda: draw(priors[name], next(seeds[name])))
                        for name in priors}, repeats)
    seconds = {name: [wall for wall, _ in times] for name, times in rounds.items()}
    return seconds, {name: [cpu for _, cpu in times] for name, times in rounds.items()}, first


def side_by_side(left: torch.Tensor, right: torch.Tensor, path: Path, gap: int = 12) -> Path:
    """Two 8-column grids of images in [0, 1], left and right of a white gap, as one PNG."""
    from hf_autoencoders.plots import image_grid

    grids = [image_grid(images.clamp(0, 1).cpu(), nrow=8, scale=2) for images in (left, right)]  # (H, W, C) uint8
    height = max(grid.shape[0] for grid in grids)
    grids = [np.pad(grid, ((0, height - grid.shape[0]), (0, 0), (0, 0)), constant_values=255) for grid in grids]
    spacer = np.full((height, gap, grids[0].shape[2]), 255, dtype=np.uint8)
    picture = np.concatenate([grids[0], spacer, grids[1]], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture[..., 0] if picture.shape[2] == 1 else picture).save(path)
    return path


def run_dataset(name: str, vqvae_path: str, data_path: str | None, args, figures_dir: Path) -> dict:
    from hf_autoencoders.data import ImageCollator, ImageTensorDataset, load_image_dataset
    from hf_autoencoders.evaluation.priors import prior_test_metrics
    from hf_autoencoders.hub import load_processor
    from hf_autoencoders.training.arguments import PriorArguments
    from hf_autoencoders.training.prior import CodeDataset, build_prior, extract_codes, load_vqvae

    vqvae = load_vqvae(vqvae_path)
    config = vqvae.config
    data = load_image_dataset(data_path, image_size=config.image_size, num_channels=config.num_channels,
                              progress=False)
    train, test = data.train, data.test
    if args.max_train_samples:
        labels = None if train.labels is None else train.labels[:args.max_train_samples]
        train = ImageTensorDataset(train.images[:args.max_train_samples], labels)
    if args.max_eval_samples:
        labels = None if test.labels is None else test.labels[:args.max_eval_samples]
        test = ImageTensorDataset(test.images[:args.max_eval_samples], labels)
    processor = load_processor(vqvae_path, config)
    collator = ImageCollator(binarize=processor.do_binarize, binarize_threshold=processor.binarize_threshold)
    train_codes, _ = extract_codes(vqvae, train, 500, args.cache_dir, collator, progress=False)
    test_codes, _ = extract_codes(vqvae, test, 500, args.cache_dir, collator, progress=False)
    train_codes, test_codes = CodeDataset(train_codes), CodeDataset(test_codes)
    log(f"{name}: {len(train_codes)} train / {len(test_codes)} test maps of {config.latent_grid_size}x"
        f"{config.latent_grid_size} codes, K = {config.num_embeddings}")

    result = {"vqvae": vqvae_path, "dataset": data_path or "digits (embedded)", "num_embeddings":
              config.num_embeddings, "latent_grid": config.latent_grid_size, "likelihood": config.likelihood,
              "train_code_maps": len(train_codes), "test_code_maps": len(test_codes)}
    priors = {}
    for kind in PRIOR_TYPES:
        torch.manual_seed(args.seed)
        prior = build_prior(PriorArguments(vqvae=vqvae_path, prior_type=kind), vqvae, 0)
        row = {"parameters": sum(p.numel() for p in prior.parameters()),
               "size": {k: getattr(prior.config, k) for k in ("hidden_size", "num_layers", "kernel_size",
                                                               "num_hidden_layers", "num_attention_heads")
                        if getattr(prior.config, k, None) is not None},
               "load_average_before": load_average()}
        row.update(train_for(prior, train_codes, args.budget, args.batch_size, args.learning_rate, args.seed))
        prior.eval()
        start = time.perf_counter()
        row.update(prior_test_metrics(prior, test_codes, vqvae, test, collator, batch_size=500))
        row["eval_seconds"] = time.perf_counter() - start
        log(f"{name} {kind}: {row['steps']} steps, test NLL {row['nll_per_code_nats']:.4f} nats/code")
        result[kind], priors[kind] = row, prior

    seconds, cpu_seconds, samples = time_sampling(priors, args.sample_batch, args.repeats)
    for kind in PRIOR_TYPES:
        median, cpu_median = statistics.median(seconds[kind]), statistics.median(cpu_seconds[kind])
        result[kind]["sampling"] = {"batch_size": args.sample_batch, "seconds": seconds[kind],
                                    "median_seconds": median, "maps_per_second": args.sample_batch / median,
                                    "cpu_seconds": cpu_seconds[kind], "median_cpu_seconds": cpu_median,
                                    "maps_per_cpu_second": args.sample_batch / cpu_median}
    with torch.no_grad():
        images = {kind: vqvae.decode_indices(samples[kind]) for kind in PRIOR_TYPES}
    picture = side_by_side(images["pixelcnn"], images["transformer"], figures_dir / f"samples_{name}.png")
    pixelcnn, transformer = result["pixelcnn"], result["transformer"]
    result["speedup"] = transformer["sampling"]["maps_per_second"] / pixelcnn["sampling"]["maps_per_second"]
    result["speedup_cpu_seconds"] = (transformer["sampling"]["maps_per_cpu_second"]
                                     / pixelcnn["sampling"]["maps_per_cpu_second"])
    result["nll_difference_nats_per_code"] = transformer["nll_per_code_nats"] - pixelcnn["nll_per_code_nats"]
    result["target_met"] = result["speedup"] >= 10 and result["nll_difference_nats_per_code"] <= 0
    result["samples_png"] = picture.name
    result["uniform_nll_per_code_nats"] = math.log(config.num_embeddings)
    log(f"{name}: transformer {result['speedup']:.1f}x faster, NLL difference "
        f"{result['nll_difference_nats_per_code']:+.4f} nats/code")
    return result


def smoke_vqvae(folder: Path) -> str:
    """A tiny VQ-VAE (k-means-initialised codebook, untrained otherwise) on the embedded digits, saved in `folder`."""
    import hf_autoencoders as H
    from hf_autoencoders.data import ImageCollator, load_image_dataset

    digits = load_image_dataset(None)
    torch.manual_seed(0)
    vqvae = H.VQVAEModel(H.VQVAEConfig(hidden_size=8, num_embeddings=16, embedding_dim=4, num_residual_blocks=1,
                                       kmeans_init=True, likelihood="discretized_logistic"))
    with torch.no_grad():
        vqvae(ImageCollator()([digits.train[i] for i in range(128)])["pixel_values"])
    vqvae.eval().save_pretrained(folder)
    return str(folder)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist_vqvae", default=None, help="A VQ-VAE trained on MNIST (7x7 codes).")
    parser.add_argument("--mnist_data", default=str(SHARED / "mnist"))
    parser.add_argument("--cifar10_vqvae", default=None, help="A VQ-VAE trained on CIFAR-10 (8x8 codes, K = 512).")
    parser.add_argument("--cifar10_data", default=str(SHARED / "cifar10"))
    parser.add_argument("--budget", type=float, default=600.0, help="Training seconds per prior.")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--sample_batch", type=int, default=64, help="Code maps per timed draw.")
    parser.add_argument("--repeats", type=int, default=9, help="Timed draws per prior.")
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--max_eval_samples", type=int, default=None)
    parser.add_argument("--cache_dir", default=None, help="Where extracted codes are kept (default: none).")
    parser.add_argument("--figures_dir", default=str(ROOT / "benchmarks" / "results" / "prior_speed"),
                        help="Where samples_<dataset>.png go.")
    parser.add_argument("--smoke", action="store_true", help="A tiny VQ-VAE on the embedded digits, 2 s budgets.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {"budget_seconds": args.budget, "machine": machine_info()}
    with contextlib.redirect_stdout(sys.stderr), tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            args.budget, args.sample_batch, args.repeats, args.max_train_samples = 2.0, 8, 1, 512
            args.max_eval_samples = args.max_eval_samples or 128
            results["budget_seconds"] = args.budget
            figures = Path(tmp) if args.figures_dir == parser.get_default("figures_dir") else Path(args.figures_dir)
            results["digits"] = run_dataset("digits", smoke_vqvae(Path(tmp) / "vqvae"), None, args, figures)
        else:
            for name, vqvae, data in (("mnist", args.mnist_vqvae, args.mnist_data),
                                      ("cifar10", args.cifar10_vqvae, args.cifar10_data)):
                if vqvae is None:
                    results[name] = {"skipped": f"no --{name}_vqvae given"}
                elif not Path(data).is_dir():
                    results[name] = {"skipped": f"{data} is not a folder"}
                else:
                    results[name] = run_dataset(name, vqvae, data, args, Path(args.figures_dir))
    results["machine"]["load_average_end"] = load_average()
    text = json.dumps(rounded(results), indent=2)
    print(text)
    return results


if __name__ == "__main__":
    main()
