"""Benchmark of issue 16: the ViT backbone against the conv backbone, VQ-VAEs on CIFAR-10 at equal training
wall-clock, over several seeds.

    OMP_NUM_THREADS=1 python benchmarks/backbones_cifar.py --budget 420 --seeds 0,1,2 \
        > benchmarks/results/backbones_cifar.json
    OMP_NUM_THREADS=1 python benchmarks/backbones_cifar.py --reference_steps 2344 --seeds 0,1,2 --models conv,vit \
        > benchmarks/results/backbones_cifar_6epochs.json
    OMP_NUM_THREADS=1 python benchmarks/backbones_cifar.py --reference_steps 2344 --seeds 0,1,2 --models conv,vit \
        --learning_rate 3e-3 > benchmarks/results/backbones_cifar_6epochs_lr3e-3.json
    python benchmarks/backbones_cifar.py --smoke      # seconds: the embedded digits, tiny budgets

With a GPU the models train and are timed on it (`--device`); there attention and matmuls are cheap next to small
convolutions, so the equal-time verdict need not be the CPU's.

Models: VQ-VAEs with K = 512 codes of d = 64 on an 8x8 code map, the library's defaults otherwise (EMA codebook,
k-means initialisation, dead-code restarts, commitment 0.25, Gaussian likelihood):
- `conv`: the default conv backbone (hidden 64, two stride-2 stages, two residual blocks), with channels-last
  weights as the library's Trainer trains it on CPU;
- `vit`: the default ViT, `backbone="vit"` (hidden 64, 1 encoder + 1 decoder block, 2 heads, MLPs 2x wide, a
  16-channel pixel-shuffle output head), patch 4;
- `vit_2x2`: the default ViT before it (hidden 64, 2 + 2 blocks, 4 heads, 4x MLPs, a 32-channel pixel-shuffle head);
- `vit_legacy`: the ViT as it was before its design options (linear output head) at the same width and depth
  (hidden 64, 2 + 2 blocks, 4 heads, 4x MLPs).

Equal wall-clock on a shared machine. First the step time t_m of every model is calibrated in one process: each model
takes `--calibration_warmup` untimed steps (k-means initialisation, allocator), then `--calibration_rounds` rounds in
which every model in turn (the order reversed every other round) takes `--calibration_steps` timed training steps
(batch 128, Adam); t_m is the median of all its timed steps (wall-clock, `time.perf_counter`; the CPU time of the
process is recorded beside it). Because the models alternate within seconds, a busy period of the machine slows all
of them alike. Then every model trains, for each seed, for n_m = round(budget / t_m) steps: the same budget of
calibrated time for each, whatever the load at the time of the run. `--budget` is seconds of this machine, so how far
the models train depends on its speed and load; `--reference_steps n` fixes that horizon instead: the reference (the
first of --models) trains n steps and every other model n_m = round(n t_ref / t_m), the same calibrated time. The
wall-clock and CPU seconds each run actually took are recorded, and the load averages before it.

Training: Adam (lr 1e-3, no weight decay), batch 128 drawn without replacement from a fresh permutation of the
training images every epoch (a generator seeded by the seed), and transformers' `get_cosine_schedule_with_warmup`
(the schedule of the library Trainer's `lr_scheduler_type="cosine"`): a linear warm-up over the first
`--warmup_steps` steps, then a cosine decay to 0 at step n_m. Initialisation from `torch.manual_seed(seed)`.

Evaluation on the whole test split (CIFAR-10: 10,000 images) with `hf_autoencoders.evaluation.evaluate`: test PSNR =
the mean over images of 10 log10(1 / MSE) of the reconstruction clamped to [0, 1], SSIM, codebook usage (the fraction
of the K codes that occur in the test code maps) and code perplexity exp(H) of the test code histogram. Per model,
mean and sample standard deviation (n - 1) over the seeds. Target (issue 16): the ViT's mean test PSNR is within
0.3 dB of the conv's, or better, at equal or better mean codebook usage.

`reconstructions.png` (in --figures_dir, default benchmarks/results/backbones_cifar/): the first 8 test images (top
row), then their reconstructions by each model of the first seed, one row per model in the order of --models.

Prints one JSON object (stdout; progress and per-run rows go to stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import load_average, log, machine_info, num_parameters, rounded, unit, wall_and_cpu_seconds
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TARGET_PSNR_GAP_DB = 0.3  # issue 16: the ViT within 0.3 dB of the conv backbone, or better
PICTURE_IMAGES = 8


def model_settings() -> dict[str, dict]:
    """The models under test, as `VQVAEConfig` fields on top of the shared ones (K, d, image shape)."""
    return {
        "conv": {"backbone": "conv"},
        "vit": {"backbone": "vit"},
        "vit_legacy": {"backbone": "vit", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "vit_mlp_ratio": 4.0, "vit_output_head": "linear"},
        # the default ViT before the current one: 2 + 2 blocks with 4-wide MLPs and a 32-channel pixel-shuffle head
        "vit_2x2": {"backbone": "vit", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                    "vit_mlp_ratio": 4.0, "vit_output_head": "pixel_shuffle", "vit_conv_channels": 32},
    }


def build_model(name: str, image_shape: tuple[int, int], seed: int, codes: dict, device: str = "cpu"):
    """A freshly initialised VQ-VAE `name` (see `model_settings`) for images of (channels, size) on `device`, in the
    memory layout the library's Trainer gives it there (`channels_last_by_default`: channels-last weights for the
    conv backbone on CPU)."""
    import hf_autoencoders as H
    from hf_autoencoders.training.trainer import channels_last_by_default

    num_channels, image_size = image_shape
    torch.manual_seed(seed)
    config = H.VQVAEConfig(image_size=image_size, num_channels=num_channels, **codes, **model_settings()[name])
    model = H.VQVAEModel(config).train().to(device)
    if channels_last_by_default(model, torch.device(device)):
        model.to(memory_format=torch.channels_last)
    return model


class Batches:
    """Endless training batches: float images in [0, 1], `batch_size` at a time, drawn without replacement from a
    fresh permutation of `images` (uint8, N x C x H x W) every epoch."""

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int):
        if len(images) < batch_size:
            raise ValueError(f"{len(images)} training images cannot fill a batch of {batch_size}; pass a smaller "
                             "--batch_size or more data.")
        self.images, self.batch_size = images, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order, self.cursor = torch.randperm(len(images), generator=self.generator), 0

    def __next__(self) -> torch.Tensor:
        if self.cursor + self.batch_size > len(self.order):
            self.order, self.cursor = torch.randperm(len(self.images), generator=self.generator), 0
        index = self.order[self.cursor:self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return unit(self.images[index])


def train_step(model, optimizer, pixel_values: torch.Tensor, scheduler=None) -> float:
    output = model(pixel_values)
    optimizer.zero_grad(set_to_none=True)
    output.loss.backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return output.loss.item()


def calibrate(names, train_images, image_shape, codes, args) -> dict:
    """Step seconds of each model: the median of its timed steps, the models alternating round by round
    (`alternate`), and the steps each gets (`equal_time_steps`: the budget, or the reference's steps' time)."""
    from hf_autoencoders.evaluation.timing import alternate, equal_time_steps

    models = {name: build_model(name, image_shape, 0, codes, args.device) for name in names}
    optimizers = {name: torch.optim.Adam(model.parameters(), lr=args.learning_rate) for name, model in models.items()}
    batches = Batches(train_images, args.batch_size, seed=12345)
    for name in names:
        for _ in range(args.calibration_warmup):
            train_step(models[name], optimizers[name], next(batches))

    def timed_steps(name) -> list[tuple[float, float]]:
        """(wall, CPU) seconds of each of `calibration_steps` training steps of model `name`."""
        times = []
        for _ in range(args.calibration_steps):
            x = next(batches)
            times.append(wall_and_cpu_seconds(lambda: train_step(models[name], optimizers[name], x)))
        return times

    with tqdm(total=args.calibration_rounds * len(names), desc="calibrating", file=sys.stderr, leave=False) as bar:
        rounds = alternate({name: lambda name=name: timed_steps(name) for name in names}, args.calibration_rounds, bar)
    wall = {name: statistics.median(w for times in rounds[name] for w, _ in times) for name in names}
    cpu = {name: statistics.median(c for times in rounds[name] for _, c in times) for name in names}
    reference = names[0]
    budget = args.budget if args.reference_steps is None else args.reference_steps * wall[reference]
    steps = equal_time_steps(wall, budget)
    result = {}
    for name in names:
        result[name] = {
            "step_seconds": wall[name], "cpu_step_seconds": cpu[name],
            "round_median_step_seconds": [statistics.median(w for w, _ in times) for times in rounds[name]],
            "ratio_to_reference": wall[name] / wall[reference], "cpu_ratio_to_reference": cpu[name] / cpu[reference],
            "steps": steps[name],
        }
        log(f"calibrated {name}: {wall[name]:.3f} s/step wall ({cpu[name]:.3f} CPU), "
            f"{result[name]['ratio_to_reference']:.2f}x {reference} -> {steps[name]} steps")
    result["reference"] = reference
    return result


def train_and_evaluate(name, seed, steps, train_images, test_images, image_shape, codes, args):
    """One run: model `name` trained for `steps` steps from seed `seed`, then evaluated on `test_images`. Returns
    the run's row and the reconstructions of the first `PICTURE_IMAGES` test images."""
    from transformers import get_cosine_schedule_with_warmup

    from hf_autoencoders.evaluation import evaluate

    model = build_model(name, image_shape, seed, codes, args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    scheduler = get_cosine_schedule_with_warmup(optimizer, min(args.warmup_steps, steps // 2), steps)
    batches = Batches(train_images, args.batch_size, seed)
    row = {"model": name, "seed": seed, "steps": steps, "epochs": steps * args.batch_size / len(train_images),
           "load_average_before": load_average()}
    losses = []
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    for _ in tqdm(range(steps), desc=f"{name} seed {seed}", file=sys.stderr, mininterval=30, leave=False):
        losses.append(train_step(model, optimizer, next(batches), scheduler))
    row["train_seconds"] = time.perf_counter() - start_wall
    row["train_cpu_seconds"] = time.process_time() - start_cpu
    tail = losses[-max(1, len(losses) // 20):]
    row["final_train_loss"] = sum(tail) / len(tail)  # mean over the last 5% of the steps

    kept = []

    def keep_first(pixel_values, output):
        if not kept:
            kept.append(output.reconstruction[:PICTURE_IMAGES].float().clamp(0, 1).cpu())

    start = time.perf_counter()
    metrics = evaluate(model, test_images, batch_size=500, on_batch=keep_first, progress=False)
    row["eval_seconds"] = time.perf_counter() - start
    row.update({"test_psnr_db": metrics["psnr"], "test_ssim": metrics["ssim"], "test_mse": metrics["mse"],
                "codebook_usage": metrics["codebook_usage"], "codebook_perplexity": metrics["codebook_perplexity"],
                "test_images": metrics["num_examples"]})
    log(json.dumps(rounded(row)))
    return row, kept[0]


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def summarize(runs: list[dict], names: list[str]) -> dict:
    summary = {}
    for name in names:
        rows = [row for row in runs if row["model"] == name]
        summary[name] = {key: mean_std([row[key] for row in rows])
                         for key in ("test_psnr_db", "test_ssim", "codebook_usage", "codebook_perplexity",
                                     "train_seconds", "train_cpu_seconds")}
        summary[name]["steps"] = rows[0]["steps"]
        summary[name]["seeds"] = [row["seed"] for row in rows]
    return summary


def verdicts(summary: dict, reference: str) -> dict:
    """The target of issue 16 for each other model: mean test PSNR >= the reference's - 0.3 dB, and mean codebook
    usage >= the reference's."""
    conv = summary[reference]
    result = {"rule": f"mean test PSNR >= {reference}'s - {TARGET_PSNR_GAP_DB} dB, at mean codebook usage >= "
                      f"{reference}'s (equal calibrated training time)"}
    for name, row in summary.items():
        if name == reference:
            continue
        gap = row["test_psnr_db"]["mean"] - conv["test_psnr_db"]["mean"]
        usage_gap = row["codebook_usage"]["mean"] - conv["codebook_usage"]["mean"]
        met = gap >= -TARGET_PSNR_GAP_DB and usage_gap >= 0
        psnr, ref_psnr = row["test_psnr_db"], conv["test_psnr_db"]
        usage, ref_usage = row["codebook_usage"], conv["codebook_usage"]
        result[name] = {
            "psnr_difference_db": gap, "usage_difference": usage_gap, "met": met,
            "verdict": (f"{'met' if met else 'not met'}: {name} {psnr['mean']:.2f} ± {psnr['std']:.2f} dB vs "
                        f"{reference} {ref_psnr['mean']:.2f} ± {ref_psnr['std']:.2f} dB ({gap:+.2f} dB, target >= "
                        f"-{TARGET_PSNR_GAP_DB} dB); usage {usage['mean']:.3f} vs {ref_usage['mean']:.3f}"),
        }
    return result


def save_picture(originals: torch.Tensor, reconstructions: dict, path: Path) -> Path:
    from hf_autoencoders.plots import save_image_grid

    rows = [originals, *reconstructions.values()]
    return save_image_grid(torch.cat([images.cpu() for images in rows]), path, nrow=PICTURE_IMAGES, scale=3)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_name", default=str(SHARED / "cifar10"),
                        help="A local dataset folder or a Hub id (e.g. uoft-cs/cifar10), read by load_image_dataset.")
    parser.add_argument("--models", default="conv,vit,vit_2x2,vit_legacy",
                        help="Comma-separated, from conv, vit, vit_2x2, vit_legacy; the first is the reference of "
                             "the target.")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budget", type=float, default=420.0, help="Calibrated training seconds per run.")
    parser.add_argument("--reference_steps", type=int, default=None,
                        help="Instead of --budget: the first model of --models trains this many steps, the others "
                             "as many as fit in the same calibrated time (a horizon that does not depend on the "
                             "machine's speed or load; CIFAR-10 has 391 steps of 128 per epoch).")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--warmup_steps", type=int, default=100)
    parser.add_argument("--calibration_warmup", type=int, default=3, help="Untimed steps per model first.")
    parser.add_argument("--calibration_rounds", type=int, default=10)
    parser.add_argument("--calibration_steps", type=int, default=5, help="Timed steps per model per round.")
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--max_eval_samples", type=int, default=None, help="Default: the whole test split.")
    parser.add_argument("--figures_dir", default=str(ROOT / "benchmarks" / "results" / "backbones_cifar"),
                        help="Where reconstructions.png goes.")
    parser.add_argument("--smoke", action="store_true",
                        help="The embedded digits, a small codebook, 1 s budgets, 2 seeds: checks the script runs.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default=None,
                        help="cpu or cuda (default: cuda when there is one). The step times, and so the steps each "
                             "model gets, are calibrated on it; the loss's .item() every step waits for the GPU.")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    known = model_settings()
    unknown = [name for name in names if name not in known]
    if unknown or len(names) < 2 or len(set(names)) != len(names):
        parser.error(f"--models needs at least two distinct names from {', '.join(known)}; got {args.models!r}")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    if args.reference_steps is not None and args.reference_steps < 1:
        parser.error(f"--reference_steps must be at least 1, got {args.reference_steps}")
    torch.set_num_threads(args.threads)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU here; leave --device out to run on the CPU.")
    command = "python benchmarks/backbones_cifar.py " + " ".join(sys.argv[1:] if argv is None else argv)

    from hf_autoencoders.data import load_image_dataset

    codes = {"num_embeddings": 512, "embedding_dim": 64}
    with contextlib.redirect_stdout(sys.stderr), tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            args.budget, args.batch_size, args.warmup_steps = 1.0, 32, 2
            args.reference_steps = args.reference_steps and min(args.reference_steps, 4)
            args.calibration_warmup, args.calibration_rounds, args.calibration_steps = 1, 2, 1
            args.max_eval_samples = args.max_eval_samples or 64
            seeds, codes = seeds[:2], {"num_embeddings": 32, "embedding_dim": 8}
            data, dataset = load_image_dataset(None), "digits (embedded)"
            default_figures = args.figures_dir == parser.get_default("figures_dir")
            figures_dir = Path(tmp) if default_figures else Path(args.figures_dir)
        else:
            data, dataset = load_image_dataset(args.dataset_name, progress=False), args.dataset_name
            figures_dir = Path(args.figures_dir)
        if not all(hasattr(split, "images") for split in (data.train, data.test)):
            raise ValueError(f"{dataset} was not loaded into memory (too large, or streamed); this benchmark indexes "
                             "uint8 image tensors: pass --max_train_samples or a smaller dataset.")
        train_images = data.train.images[:args.max_train_samples].to(args.device)  # uint8; batches index it there
        test_images = data.test.images[:args.max_eval_samples]
        image_shape = (train_images.shape[1], train_images.shape[2])
        log(f"{dataset}: {len(train_images)} train / {len(test_images)} test images of {tuple(train_images.shape[1:])}")

        results = {
            "command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "dataset": dataset,
            "train_images": len(train_images), "test_images": len(test_images),
            "budget_seconds": args.budget if args.reference_steps is None else None,
            "reference_steps": args.reference_steps,
            "seeds": seeds, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
            "optimizer": "Adam (no weight decay)",
            "schedule": f"get_cosine_schedule_with_warmup: linear warm-up {args.warmup_steps} steps, cosine to 0",
            "machine": machine_info(), "device": args.device, "models": {},
        }
        for name in names:
            model = build_model(name, image_shape, 0, codes)
            results["models"][name] = {
                "settings": model_settings()[name], "parameters": num_parameters(model),
                "encoder_parameters": num_parameters(model.encoder),
                "decoder_parameters": num_parameters(model.decoder),
                "latent_grid": model.config.latent_grid_size, **codes,
            }
        results["calibration"] = calibrate(names, train_images, image_shape, codes, args)

        runs, pictures = [], {}
        for seed in seeds:  # seed-major, so that a change of the machine's load hits every model alike
            for name in names:
                row, picture = train_and_evaluate(name, seed, results["calibration"][name]["steps"], train_images,
                                                  test_images, image_shape, codes, args)
                runs.append(row)
                if seed == seeds[0]:
                    pictures[name] = picture
        results["runs"] = runs
        results["summary"] = summarize(runs, names)
        results["target"] = verdicts(results["summary"], names[0])
        for name in names[1:]:
            log(results["target"][name]["verdict"])
        path = save_picture(unit(test_images[:PICTURE_IMAGES]), pictures, figures_dir / "reconstructions.png")
        results["reconstructions_png"] = {"file": path.name, "rows": ["test images", *names]}
    results["machine"]["load_average_end"] = load_average()
    print(json.dumps(rounded(results), indent=2, ensure_ascii=False))
    return results


if __name__ == "__main__":
    main()
