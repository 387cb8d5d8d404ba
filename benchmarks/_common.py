"""Shared pieces of the benchmarks: the models under test, the machine's description, timing and memory tools.

Every benchmark trains on data held in memory as uint8 (N, C, H, W) tensors, the layout of `ImageTensorDataset`.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from contextlib import contextmanager

import torch
from transformers import TrainerCallback

import hf_autoencoders as H
from hf_autoencoders.data import ImageTensorDataset, load_image_dataset

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


def peak_tensor_bytes(model, optimizer, pixel_values: torch.Tensor) -> int:
    """Peak bytes held by live tensors (parameters, gradients, optimizer state, activations, temporaries) during
    one training step, tracked storage by storage with `torch.distributed._tools.mem_tracker.MemTracker` (a
    `TorchDispatchMode`): the CPU counterpart of `torch.cuda.max_memory_allocated`. The optimizer state exists
    before the step (one step is taken first)."""
    from torch.distributed._tools.mem_tracker import MemTracker

    def step():
        model(pixel_values).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    step()
    device = pixel_values.device
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    tracker = MemTracker()
    tracker.track_external(model, optimizer)
    with tracker:
        step()
    snapshot = tracker.get_tracker_snapshot("peak")
    return int(snapshot[device]["Total"])

