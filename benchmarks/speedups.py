"""Speed-ups, each measured against its alternative in the same run (alternated, medians): 1 torch thread vs all
cores, channels-last weights for the conv backbone, `torch.compile` (inductor; full mode or --compile in `run.py`),
and the data path (pre-decoded uint8 tensors in memory vs decoding the parquet PNGs per item; per-item vs batched
fetching). benchmarks/README.md says which of them are on by default and why.

    python benchmarks/speedups.py [--quick | --smoke]
"""

from __future__ import annotations

import os
import time

import torch
from _common import build_model, error_row, log, median, section_main, threads, unit
from overhead import loop_samples_per_second

from hf_autoencoders.data import ImageCollator
from hf_autoencoders.evaluation.timing import alternate


def medians(measures: dict, repeats: int) -> dict:
    """The median of each zero-argument function's results (samples/s), the functions alternated `repeats` times."""
    return {name: median(values) for name, values in alternate(measures, repeats).items()}


def loader_samples_per_second(dataset, collator, batch_size, batches) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collator)
    iterator, start = iter(loader), time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


class BatchedImageDataset(torch.utils.data.Dataset):
    """An `ImageTensorDataset` with `__getitems__`: the DataLoader fetches a whole batch with one index operation
    (the change proposed for hf_autoencoders/data.py), yielding {"pixel_values": uint8 (B, C, H, W)}."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return {"pixel_values": self.images[index]}

    def __getitems__(self, indices):
        return {"pixel_values": self.images[torch.as_tensor(indices)]}


def batched_collator(batch):
    return {"pixel_values": unit(batch["pixel_values"])}



def speedups(train, cfg, data_path, quick: bool, compile_models: bool) -> dict:
    out = {}
    steps, warmup, batch_size = cfg["steps"], cfg["warmup"], cfg["batch"]
    repeats = 1 if quick else cfg["repeats"]
    images = train.images

    def loop(family, backbone, size, channels_last=False, num_threads=None, num_steps=None):
        model = build_model(family, backbone, size)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        with threads(num_threads):
            return loop_samples_per_second(model, images, batch_size, num_steps or steps, warmup,
                                           channels_last=channels_last)

    # threads: 1 vs all cores
    cores = os.cpu_count() or 1
    if quick:
        out["threads_samples_per_s"] = {"skipped": "quick mode"}
    elif cores > 1:
        rows = {}
        for family, backbone in (("vae", "mlp"), ("vqvae", "conv")):
            rows[f"{family}-{backbone}"] = medians({  # small models, few steps: oversubscribed runs crawl
                "1": lambda: loop(family, backbone, "small", num_threads=1, num_steps=5),
                str(cores): lambda: loop(family, backbone, "small", num_threads=cores, num_steps=5),
            }, 2)
        out["threads_samples_per_s"] = rows
        log(f"speedups threads: {rows}")

    # channels_last on the conv backbone
    out["channels_last_samples_per_s"] = {
        f"{family}-conv": medians({
            "contiguous": lambda: loop(family, "conv", cfg["size"]),
            "channels_last": lambda: loop(family, "conv", cfg["size"], channels_last=True),
        }, repeats) for family in ("vae", "vqvae")}
    log(f"speedups channels_last: {out['channels_last_samples_per_s']}")

    # torch.compile (inductor; needs a C compiler on CPU)
    if compile_models:
        rows = {}
        for family, backbone in (("vae", "mlp"), ("vqvae", "conv")):
            try:
                start = time.perf_counter()
                model = torch.compile(build_model(family, backbone, cfg["size"]))
                loop_samples_per_second(model, images, batch_size, 1, 1)  # compiles forward and backward
                compile_s = time.perf_counter() - start
                result = medians({
                    "eager": lambda: loop(family, backbone, cfg["size"]),
                    "compiled": lambda: loop_samples_per_second(model, images, batch_size, steps, warmup),
                }, repeats)
                rows[f"{family}-{backbone}"] = {**result, "compile_seconds": compile_s}
            except Exception as err:  # noqa: BLE001
                rows[f"{family}-{backbone}"] = error_row(err)
        out["compile_samples_per_s"] = rows
        log(f"speedups compile: {rows}")
    else:
        out["compile_samples_per_s"] = {"skipped": "quick mode (compiling takes minutes per model on a CPU)"}

    # data path: pre-decoded uint8 in memory vs decoding PNGs per item; per-item vs batched fetch
    batches = 10 if quick else 100
    rows = medians({
        "uint8_in_memory": lambda: loader_samples_per_second(train, ImageCollator(), 128, batches),
        "uint8_in_memory_batched_getitems": lambda: loader_samples_per_second(
            BatchedImageDataset(images), batched_collator, 128, batches),
    }, repeats)
    if data_path and os.path.isdir(data_path):
        import datasets

        table = datasets.load_dataset(data_path, split="train")
        image_column = next(k for k, v in table.features.items() if isinstance(v, datasets.Image))

        def decode(example_batch):
            import numpy as np

            arrays = [np.asarray(im.convert("L"), dtype=np.uint8)[None] for im in example_batch[image_column]]
            return {"pixel_values": [torch.from_numpy(a) for a in arrays]}

        rows["decode_png_per_item"] = loader_samples_per_second(table.with_transform(decode), ImageCollator(), 128,
                                                                max(batches // 4, 5))
    out["data_loader_samples_per_s"] = rows
    log(f"speedups data: {rows}")
    return out


def run(bench) -> dict:
    return speedups(bench.train, bench.cfg, bench.data_path, bench.mode != "full",
                    compile_models=bench.mode == "full" or bench.compile)


if __name__ == "__main__":
    section_main("speedups", __doc__)
