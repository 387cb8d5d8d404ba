"""Data at scale: memory, data wait and start-up time of the three data paths as the dataset grows.

Builds synthetic Hub-layout parquet datasets of 64x64 RGB PNG images (flat backgrounds with a few flat rectangles:
distinct, but compressible, about 0.4 KB each) at 10k, 50k and 200k images under --root (not in the repository),
then, for each size and each path of `load_image_dataset`,

- in_memory (cold): decoded up front into the decoded cache (built in this run), then memory-mapped;
- in_memory (warm): the same, the cache already built (the second run of a user);
- lazy: memory-mapped Arrow rows decoded per batch in the DataLoader workers (`in_memory_max_gb=0`);
- streaming: `streaming=True`, decoded per batch as read;

trains the conv VQ-VAE (default size) for --steps steps with the Trainer, batch 128, --workers DataLoader workers,
in a fresh process (so its memory is clean), and reports

- peak_rss_mb: the peak resident memory (RSS) of the training process, sampled every 50 ms; and, as its DataLoader
  workers are separate processes that share pages with it, peak_total_pss_mb: the peak of the summed proportional
  set sizes of the training process and its workers (each page in memory counted once; this includes the pages of
  the decoded cache that the workers map);
- data_wait_share: the share of the step time spent waiting for the batch (`Trainer.get_batch_samples`), over the
  steps after the first;
- time_to_first_step_s: from the call to `load_image_dataset` to the end of the first optimizer step.

Targets (issue 12): lazy and streaming peak RSS grows by at most 20% from 10k to 200k images; data wait at most 5% of
the step with 2 workers; streaming time to first step does not grow with size. Prints one JSON object.

    python benchmarks/data_scale.py --output benchmarks/results/data_scale.json     # ~40 minutes on 1 core
    python benchmarks/data_scale.py --sizes 2000 --steps 5 --root /tmp/data_scale    # a minute
"""

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

PATHS = ("in_memory_cold", "in_memory_warm", "lazy", "streaming")
FILE_ROWS = 10_000  # rows per parquet file
ROW_GROUP = 1_000  # rows per parquet row group (the shards a stream is read by)
NUM_TEST = 1_000
IMAGE_SIZE = 64


# ------------------------------------------------------------------------------------------------------ datasets


def synthetic_image(rng, size: int = IMAGE_SIZE) -> bytes:
    """A PNG of a flat background with three flat rectangles of random colors and places."""
    import numpy as np
    from PIL import Image

    pixels = np.empty((size, size, 3), np.uint8)
    pixels[:] = rng.integers(0, 256, 3, dtype=np.uint8)
    for _ in range(3):
        y, x = rng.integers(0, size - 8, 2)
        h, w = rng.integers(4, size // 2, 2)
        pixels[y:y + h, x:x + w] = rng.integers(0, 256, 3, dtype=np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, format="PNG")
    return encoded.getvalue()


def build_dataset(root: Path, num_images: int) -> Path:
    """<root>/images_<n>/data/{train,test}-0000k-of-0000m.parquet, written once (a marker file says it is whole)."""
    import datasets
    import numpy as np

    folder = root / f"images_{num_images}"
    if (folder / "complete").is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    rng = np.random.default_rng(num_images)
    for split, count in (("train", num_images), ("test", NUM_TEST)):
        files = -(-count // FILE_ROWS)
        for k in range(files):
            rows = range(k * FILE_ROWS, min(count, (k + 1) * FILE_ROWS))
            images = [{"bytes": synthetic_image(rng), "path": None} for _ in rows]
            table = datasets.Dataset.from_dict({"image": images, "label": [r % 10 for r in rows]}, features=features)
            table.to_parquet(str(folder / "data" / f"{split}-{k:05d}-of-{files:05d}.parquet"), batch_size=ROW_GROUP)
    (folder / "complete").write_text("")
    return folder


def prepare(folder: Path) -> float:
    """`datasets`' one-time conversion of the parquet files to its Arrow cache (what a non-streamed load reads)."""
    import datasets

    start = time.perf_counter()
    datasets.load_dataset(str(folder))
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------------------- measurement


class MemorySampler(threading.Thread):
    """Samples, every `interval` s, the resident memory (RSS) of this process and the proportional set size (PSS:
    each shared page divided among the processes that map it) of this process plus its children (the DataLoader
    workers), which counts every page in memory once, however many processes map it."""

    def __init__(self, interval: float = 0.05):
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.peak_rss = self.peak_total_pss = self.peak_workers_pss = 0
        self.running = True

    def sample(self):
        self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)
        workers = 0
        for child in self.process.children(recursive=True):
            try:
                workers += child.memory_full_info().pss
            except Exception:  # noqa: BLE001 - a worker that just exited
                pass
        self.peak_workers_pss = max(self.peak_workers_pss, workers)
        self.peak_total_pss = max(self.peak_total_pss, self.process.memory_full_info().pss + workers)

    def run(self):
        while self.running:
            self.sample()
            time.sleep(self.interval)


def measure(spec: dict) -> dict:
    """Train `spec["steps"]` steps on `spec["path"]` of `spec["folder"]`, in this (fresh) process."""
    import torch

    torch.set_num_threads(1)
    from _common import DataWaitTrainer

    from hf_autoencoders.data import ImageCollator, load_image_dataset
    from hf_autoencoders.evaluation.timing import StepTimer
    from hf_autoencoders.models import VQVAEConfig, VQVAEModel
    from hf_autoencoders.training import training_arguments

    sampler = MemorySampler()
    sampler.sample()
    baseline = sampler.peak_rss
    sampler.start()
    path, workers = spec["path"], spec["workers"]
    start = time.perf_counter()
    data = load_image_dataset(
        spec["folder"], split="train", image_size=IMAGE_SIZE, num_channels=3, streaming=path == "streaming",
        in_memory_max_gb=0 if path == "lazy" else float("inf"), num_workers=workers, cache_dir=spec["cache_dir"],
        progress=False,
    )
    loaded = time.perf_counter() - start
    clock = StepTimer()
    torch.manual_seed(0)
    model = VQVAEModel(VQVAEConfig(image_size=IMAGE_SIZE, num_channels=3))
    args = training_arguments(
        spec["output_dir"], max_steps=spec["steps"], dataloader_num_workers=workers, logging_steps=10_000, seed=0,
        accelerator_config={"dispatch_batches": False} if path == "streaming" else None,
    )
    trainer = DataWaitTrainer(model=model, args=args, data_collator=ImageCollator(), train_dataset=data.train,
                              callbacks=[clock])
    trainer.train()
    waits, ends = trainer.waits, clock.times
    sampler.running = False
    sampler.join()
    sampler.sample()
    steps = len(ends)
    step_seconds = ends[-1] - ends[0]
    return {
        "path": path, "num_images": spec["num_images"], "workers": workers, "steps": steps,
        "peak_rss_mb": round(sampler.peak_rss / 2**20, 1),
        "peak_workers_pss_mb": round(sampler.peak_workers_pss / 2**20, 1),
        "peak_total_pss_mb": round(sampler.peak_total_pss / 2**20, 1),
        "rss_at_start_mb": round(baseline / 2**20, 1),
        "data_wait_share": round(sum(waits[1:steps]) / step_seconds, 4),
        "step_ms": round(1e3 * step_seconds / (steps - 1), 1),
        "data_wait_ms_per_step": round(1e3 * sum(waits[1:steps]) / (steps - 1), 2),
        "time_to_first_step_s": round(ends[0] - start, 2),
        "load_s": round(loaded, 2),
    }


def run_measurement(spec: dict) -> dict:
    """`measure(spec)` in a fresh Python process (clean memory), with one torch thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, __file__, "--_measure", json.dumps(spec)]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    line = next((x for x in result.stdout.splitlines() if x.startswith("MEASURED")), None)
    if result.returncode != 0 or line is None:
        raise RuntimeError(f"measuring {spec} failed:\n{result.stderr[-3000:]}")
    return json.loads(line.removeprefix("MEASURED"))


def growth(rows: list[dict], path: str, key: str, sizes: list[int]) -> float | None:
    """value at the largest size / value at the smallest size, for one path."""
    by_size = {r["num_images"]: r[key] for r in rows if r["path"] == path}
    if min(sizes) not in by_size or max(sizes) not in by_size or not by_size[min(sizes)]:
        return None
    return round(by_size[max(sizes)] / by_size[min(sizes)], 3)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,50000,200000", help="Dataset sizes (images), comma-separated.")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"Which of {', '.join(PATHS)}.")
    parser.add_argument("--steps", type=int, default=50, help="Training steps per measurement.")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers.")
    parser.add_argument("--root", default="/work/runs/data_scale", help="Where the datasets and caches are built.")
    parser.add_argument("--output", help="Also write the JSON here.")
    parser.add_argument("--_measure", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._measure:
        print("MEASURED" + json.dumps(measure(json.loads(args._measure))))
        return {}

    root = Path(args.root).expanduser()
    os.environ["HF_DATASETS_CACHE"] = str(root / "hf_cache")  # datasets' Arrow cache, for this and the children
    sizes = sorted(int(s) for s in args.sizes.split(","))
    paths = [p for p in args.paths.split(",") if p]
    if args.steps < 2 or not set(paths) <= set(PATHS):
        parser.error(f"--steps must be >= 2 and --paths among {PATHS}")
    rows, datasets_info = [], {}
    for num_images in sizes:
        start = time.perf_counter()
        folder = build_dataset(root, num_images)
        built = time.perf_counter() - start
        files = sorted((folder / "data").glob("*.parquet"))
        # build_s and arrow_conversion_s are the seconds spent in this run: about 0 when an earlier run did the work
        datasets_info[num_images] = {"build_s": round(built, 1), "arrow_conversion_s": round(prepare(folder), 1),
                                     "parquet_mb": round(sum(f.stat().st_size for f in files) / 2**20, 1),
                                     "decoded_mb": round(num_images * 3 * IMAGE_SIZE**2 / 2**20, 1)}
        print(f"dataset {num_images}: {datasets_info[num_images]}", file=sys.stderr)
        cache_dir = root / "decoded" / str(num_images)
        for path in paths:
            if path == "in_memory_cold":
                shutil.rmtree(cache_dir, ignore_errors=True)
            spec = {"folder": str(folder), "path": path.removesuffix("_cold").removesuffix("_warm"),
                    "num_images": num_images, "workers": args.workers, "steps": args.steps,
                    "cache_dir": str(cache_dir), "output_dir": str(root / "trainer_output")}
            row = {**run_measurement(spec), "path": path}
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
    import torch

    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": 1, "torch": torch.__version__},
        "model": "VQVAEConfig(image_size=64, num_channels=3) (conv, default size), batch 128, Adam lr 1e-3",
        "steps": args.steps, "workers": args.workers, "datasets": datasets_info, "rows": rows,
        "rss_growth_smallest_to_largest": {p: growth(rows, p, "peak_rss_mb", sizes) for p in paths},
        "total_pss_growth_smallest_to_largest": {p: growth(rows, p, "peak_total_pss_mb", sizes) for p in paths},
        "streaming_time_to_first_step_growth": growth(rows, "streaming", "time_to_first_step_s", sizes),
        "max_data_wait_share": {p: max((r["data_wait_share"] for r in rows if r["path"] == p), default=None)
                                for p in paths},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
