"""Shared pieces of the benchmarks: the models under test, the modes and command line of the sections of
`run.py` (each also runnable alone), the machine's description, timing and FLOP tools.

Every benchmark trains on data held in memory as uint8 (N, C, H, W) tensors, the layout of `ImageTensorDataset`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

import hf_autoencoders as H  # noqa: E402
from hf_autoencoders.data import ImageTensorDataset, load_image_dataset  # noqa: E402
from hf_autoencoders.training import AutoencoderTrainer, training_arguments  # noqa: E402

MiB = 2**20

# Model sizes: "default" is what the configs give (what users train); "small" keeps --quick near a minute; "tiny"
# is for the smoke test.
SIZES = {
    "default": {"conv": {}, "vit": {}, "mlp": {}},
    "small": {"conv": {"hidden_size": 32}, "vit": {"hidden_size": 64, "num_hidden_layers": 2}, "mlp": {}},
    "quick": {"conv": {"hidden_size": 32}, "vit": {"hidden_size": 48, "num_hidden_layers": 1}, "mlp": {}},
    "tiny": {
        "conv": {"hidden_size": 16, "num_residual_blocks": 1},
        "vit": {"hidden_size": 32, "num_hidden_layers": 1},
        "mlp": {"hidden_size": 64},
    },
}


def build_model(family: str, backbone: str, size: str = "default", seed: int = 0, **overrides):
    """A freshly initialised AE / VAE / VQ-VAE for 28x28x1 images (MNIST)."""
    config_class, model_class = H.autoencoder_classes(family)
    torch.manual_seed(seed)
    kwargs = {"image_size": 28, "num_channels": 1, "backbone": backbone, **SIZES[size][backbone], **overrides}
    if size == "tiny":  # a small codebook for the VQ-VAE's smoke runs
        tiny_codes = {"num_embeddings": 64, "embedding_dim": 16}
        kwargs = {**{k: v for k, v in tiny_codes.items() if k in config_class.__dataclass_fields__}, **kwargs}
    return model_class(config_class(**kwargs))


def num_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def geomean(values) -> float:
    values = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def median(values) -> float:
    return statistics.median(values) if values else float("nan")


def rounded(value, digits: int = 4):
    """Round floats (recursively) so the JSON stays readable; NaN/inf become None (JSON has neither)."""
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    if isinstance(value, float):
        return round(value, digits) if math.isfinite(value) else None
    return value


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict:
    """What the numbers were measured on. The 1-minute load average says how contended the CPUs were."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_start": load_average(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    import transformers

    info["transformers"] = transformers.__version__
    return info


def wall_and_cpu_seconds(fn) -> tuple[float, float]:
    """Wall-clock and CPU seconds (of this process) of `fn()`. On a shared machine the CPU seconds show how much of a
    wall-clock difference is the other processes' load."""
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start_wall, time.process_time() - start_cpu


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def load_images(data_path: str | None, smoke: bool = False):
    """(train, test) `ImageTensorDataset`s of 28x28 grey images: MNIST from `data_path`, or the embedded digits."""
    if smoke or data_path is None or not os.path.isdir(data_path):
        data = load_image_dataset("digits")
        return data.train, data.test, "digits (embedded, 1500 train / 297 test)"
    data = load_image_dataset(data_path, progress=False)
    return data.train, data.test, f"mnist ({data_path}, {len(data.train)} train / {len(data.test)} test)"


def unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1]."""
    return images.float().div_(255)


def binarized(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> {0, 1} float32, thresholded at 0.5 as `ImageCollator(binarize=True)` does."""
    return (unit(images) > 0.5).float()


def subset(dataset: ImageTensorDataset, n: int | None) -> ImageTensorDataset:
    if n is None or n >= len(dataset):
        return dataset
    labels = None if dataset.labels is None else dataset.labels[:n]
    return ImageTensorDataset(dataset.images[:n], labels)


class WindowTimer(TrainerCallback):
    """Wall-clock time of the optimizer steps `warmup + 1 .. warmup + steps` of a Trainer run (the device is
    synchronised at both ends only, so asynchronous execution is not disturbed in between)."""

    def __init__(self, warmup: int, steps: int, device="cpu"):
        self.warmup, self.steps, self.device = warmup, steps, device
        self.start = self.end = None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            sync(self.device)
            self.start = time.perf_counter()
        elif state.global_step == self.warmup + self.steps:
            sync(self.device)
            self.end = time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.end - self.start


class DataWaitTrainer(AutoencoderTrainer):
    """`AutoencoderTrainer` that records how long each optimizer step waits for its batch (`waits`, seconds in
    `get_batch_samples`: the DataLoader's sampler, dataset reads and collation)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.waits = []

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        start = time.perf_counter()
        batches = super().get_batch_samples(epoch_iterator, num_batches, device)
        self.waits.append(time.perf_counter() - start)
        return batches


class TimeBudget(TrainerCallback):
    """Stops training once `seconds` of wall-clock time have passed since the first step began, and exposes the
    elapsed fraction for a time-based learning-rate schedule."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = None
        self.elapsed = 0.0

    def fraction(self) -> float:
        if self.start is None:
            return 0.0
        return min(1.0, (time.perf_counter() - self.start) / self.seconds)

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.elapsed = time.perf_counter() - self.start
        if self.elapsed >= self.seconds:
            control.should_training_stop = True


def time_cosine_scheduler(optimizer, budget: TimeBudget, floor: float = 0.0):
    """lr(t) = lr0 * (floor + (1 - floor) * (1 + cos(pi t / T)) / 2) with t the elapsed share of the time budget:
    a cosine decay that ends when the budget does, however fast the steps turn out to be."""

    def factor(_step):
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * budget.fraction()))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@contextmanager
def threads(n: int | None):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def matmul_flops_per_second(device="cpu", size: int = 2048, dtype=torch.float32, min_seconds: float = 1.0) -> float:
    """Measured dense matmul throughput (FLOP/s) of one size x size @ size x size product, best of repeated runs:
    the machine's practical peak, the denominator of MFU."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    best, total, start = float("inf"), 0.0, time.perf_counter()
    while time.perf_counter() - start < min_seconds or total == 0:
        t = time.perf_counter()
        a @ b
        sync(device)
        elapsed = time.perf_counter() - t
        best, total = min(best, elapsed), total + elapsed
    return 2 * size**3 / best


def training_step_flops(model, pixel_values: torch.Tensor) -> int:
    """FLOPs of one forward + backward pass (matmuls and convolutions, as counted by `FlopCounterMode`), after one
    uncounted step (so one-off work such as a VQ codebook's k-means initialisation is left out)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    model(pixel_values).loss.backward()
    with FlopCounterMode(display=False) as counter:
        model(pixel_values).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def trainer_args(output_dir, batch_size: int, max_steps: int, device="cpu", **fields):
    """`training_arguments` of a timed Trainer run: batch `batch_size` for `max_steps` steps on `device`, seed 0,
    logging every 10 steps (so that the Trainer's logging falls inside the timed window); `fields` override."""
    defaults = dict(per_device_train_batch_size=batch_size, max_steps=max_steps, logging_steps=10, seed=0,
                    use_cpu=device == "cpu")
    return training_arguments(output_dir, **{**defaults, **fields})


def log(*args):
    print(f"[{time.strftime('%H:%M:%S')}]", *args, file=sys.stderr, flush=True)


def error_row(err: Exception) -> dict:
    return {"error": f"{type(err).__name__}: {str(err)[:300]}"}


# ------------------------------------------------------------------------------------- the sections of run.py

DEFAULT_DATA = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")
OVERHEAD_MODELS = [(f, b) for b in ("conv", "vit") for f in ("ae", "vae", "vqvae")]

# Settings per mode: model size, batch size, measured steps, warm-up steps, repeats, ...
MODES = {
    "smoke": dict(size="tiny", batch=32, steps=3, warmup=1, repeats=1, models=[("vae", "conv"), ("vqvae", "vit")],
                  pythae_steps=3, pythae_size="tiny", pythae_iwae=(20, 32), budget_s=1.0, iwae_k=20, iwae_n=32,
                  eval_n=64, quality=("vae", "ae", "vqvae"), matmul_size=512, wait_steps=3),
    "quick": dict(size="quick", batch=64, steps=6, warmup=2, repeats=2, models=OVERHEAD_MODELS,
                  pythae_steps=10, pythae_size="small", pythae_iwae=(20, 200), budget_s=15.0, iwae_k=1000,
                  iwae_n=100, eval_n=1000, quality=("vae",), matmul_size=1024, wait_steps=15),
    "full": dict(size="default", batch=128, steps=20, warmup=3, repeats=5, models=OVERHEAD_MODELS,
                 pythae_steps=None, pythae_size="small", pythae_iwae=(100, 1000), budget_s=900.0, iwae_k=1000,
                 iwae_n=None, eval_n=None, quality=("vae", "vae_thresholded", "ae", "vqvae"), matmul_size=2048,
                 wait_steps=60),
}

# The sections, in the order `run.py` runs them: name -> the module holding its `run(bench) -> dict`. A module's
# `HEADLINES` ({top-level key: key of its result}) are the figures lifted into the top level of the JSON.
SECTIONS = {"overhead": "overhead", "overhead_breakdown": "overhead_breakdown", "vs_pythae": "vs_pythae",
            "compute_utilisation": "mfu", "memory": "memory", "data_pipeline": "data_wait",
            "quality": "quality_budget", "speedups": "speedups", "quantizer_distances": "quantizer_distances",
            "gpu": "gpu"}
ALIASES = {"mfu": "compute_utilisation", "pythae": "vs_pythae", "data_wait": "data_pipeline"}


@dataclass
class Bench:
    """What a section measures on: the mode and its settings, the data, and the results of the sections before."""

    mode: str  # smoke, quick or full
    cfg: dict
    train: ImageTensorDataset
    test: ImageTensorDataset
    data_path: str | None  # MNIST's folder, None for the embedded digits
    threads: int = 1
    compile: bool = False  # torch.compile in the speed-ups section outside full mode too
    results: dict = field(default_factory=dict)


def mode_parser(description: str) -> argparse.ArgumentParser:
    """The flags every section takes: the mode, the data and the threads."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="Small models, few steps, 15 s budgets.")
    mode.add_argument("--smoke", action="store_true", help="Tiny models on the embedded digits (seconds).")
    parser.add_argument("--data", default=DEFAULT_DATA, help="MNIST in the Hub parquet layout.")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared machine threads that fight over cores are "
                             "slower than one; the speed-ups section measures it).")
    return parser


def measure(args, sections, argv=None, script: str = "run.py", **cfg_overrides) -> dict:
    """Run `sections` (names of `SECTIONS`) in this process under the flags `args` of `mode_parser` and return one
    result: the mode, command, machine and data, each section's result (with its `seconds`; a section that fails
    gives its error and does not stop the others) and their `HEADLINES`."""
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()
    started = time.perf_counter()
    command = f"python benchmarks/{script} " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {"mode": mode, "command": command.strip(), "machine": machine_info()}
    train, test, result["data"] = load_images(args.data, smoke=args.smoke)
    bench = Bench(mode, {**MODES[mode], **cfg_overrides}, train, test, None if args.smoke else args.data,
                  args.threads, getattr(args, "compile", False), result)
    for name in sections:
        module = importlib.import_module(SECTIONS[name])
        log(f"section {name} ...")
        start = time.perf_counter()
        try:
            value = module.run(bench)
        except Exception as err:  # noqa: BLE001 - one failing section must not hide the others
            traceback.print_exc(file=sys.stderr)
            value = {"error": f"{type(err).__name__}: {err}"}
        value["seconds"] = time.perf_counter() - start
        result[name] = value
        for key, inner in getattr(module, "HEADLINES", {}).items():
            result[key] = value.get(inner)
    result["machine"]["load_average_end"] = load_average()
    result["elapsed_s"] = time.perf_counter() - started
    return rounded(result)


def section_main(name: str, description: str, argv=None) -> dict:
    """`python benchmarks/<section>.py [--quick | --smoke] [--data PATH] [--threads N]`: the section `name` alone,
    printed as the JSON `run.py --only name` prints (stdout; progress and the Trainer's logs go to stderr)."""
    args = mode_parser(description).parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):
        result = measure(args, [name], argv, f"{SECTIONS[name]}.py")
    print(json.dumps(result, indent=1))
    return result
