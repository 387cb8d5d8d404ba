"""The decoded-image cache (`hf_autoencoders.data.cache`) against `datasets`' own way of keeping decoded images:
`Dataset.map(decode, batched=True, num_proc=W)` into an Arrow cache file, read through `with_format("torch")`.

    OMP_NUM_THREADS=1 python benchmarks/decoded_cache.py > benchmarks/results/decoded_cache.json
    python benchmarks/decoded_cache.py --smoke      # seconds: the first 1,000 CIFAR-10 training images

Both arms decode with the same function (the library's `Decoder`, i.e. the image processor's `image_to_uint8`, via
the streaming path's batched map function), from the same Arrow table (loaded once before any timing), with `W`
processes (`--num_proc`); the two results are checked to hold the same pixels. For each training split
(`--datasets`, default MNIST and CIFAR-10 under ../shared/data) it measures, in fresh cache folders:

- `cold_s`: the first load, which decodes and writes the cache (ours: `load_image_dataset(...,
  cache_dir=...)`; theirs: the `map` call with a `cache_file_name`);
- `warm_s`: the second load of the same thing from its cache (ours maps the `.npy` file and checks its SHA-256;
  theirs finds the map's fingerprint and maps the Arrow file);
- `batch_ms`: one training batch (`--batch_size` images in random order, labels included) through a
  `torch.utils.data.DataLoader` with the library's `ImageCollator`, as the Trainer reads them: the median over
  `--batches` batches, after 5 untimed;
- `cache_mb`: the bytes the cache holds on disk.

`no_cache_s` is our decode into memory without a cache (what every run would pay without one). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import load_average, log, machine_info

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20


def batch_ms(dataset, batch_size: int, batches: int) -> float:
    """Median milliseconds per batch of a shuffled DataLoader over `dataset` with the library's collator."""
    from torch.utils.data import DataLoader

    from hf_autoencoders.data import ImageCollator

    epoch = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, collate_fn=ImageCollator(),
                        generator=torch.Generator().manual_seed(0))

    def forever():
        while True:
            yield from epoch

    loader, times = forever(), []
    for i in range(5 + batches):
        start = time.perf_counter()
        batch = next(loader)
        if i >= 5:
            times.append(time.perf_counter() - start)
    assert batch["pixel_values"].shape[0] == batch_size
    return 1e3 * statistics.median(times)


def ours(path: str, limit: int | None, num_proc: int, cache_dir: Path) -> tuple[dict, object]:
    from hf_autoencoders.data import load_image_dataset

    def load(**kwargs):
        start = time.perf_counter()
        data = load_image_dataset(path, split="train", max_samples=limit, num_workers=num_proc, progress=False,
                                  **kwargs)
        return time.perf_counter() - start, data

    cold, _ = load(cache_dir=cache_dir)
    warm, data = load(cache_dir=cache_dir)
    no_cache, _ = load(cache=False)
    return {"cold_s": cold, "warm_s": warm, "no_cache_s": no_cache, "cache_mb": folder_mb(cache_dir)}, data.train


def theirs(path: str, limit: int | None, num_proc: int, cache_dir: Path, shape) -> tuple[dict, object]:
    import datasets
    from PIL import Image

    from hf_autoencoders.data.decoding import Decoder, _DecodeBatch
    from hf_autoencoders.data.loading import find_image_column, find_label_column
    from hf_autoencoders.data.sources import choose_splits, open_dataset

    name, tables = open_dataset(path, None, False, {})
    table, rows = choose_splits(tables, "train", 0.1, 0, name)[0]["train"]  # the rows ours decodes (defaults)
    table = table.select(rows[:limit])
    image_column = find_image_column(table.features, None, name)
    label_column = find_label_column(table.features, None, name)
    channels, size = shape[0], shape[1]
    decoder = Decoder(size, channels, int(Image.Resampling.BILINEAR), name, "train")
    decode = _DecodeBatch(image_column, label_column, decoder, False)
    features = datasets.Features({"pixel_values": datasets.Array3D(tuple(shape), "uint8"),
                                  "labels": datasets.Value("int64")})
    table = table.cast_column(image_column, datasets.Image(decode=False))

    def load():
        start = time.perf_counter()
        mapped = table.map(decode, batched=True, with_indices=True, num_proc=num_proc if num_proc > 1 else None,
                           remove_columns=table.column_names, features=features,
                           cache_file_name=str(cache_dir / "decoded.arrow"), desc=None)
        mapped = mapped.with_format("torch")
        return time.perf_counter() - start, mapped

    datasets.disable_progress_bars()
    cold, _ = load()
    warm, mapped = load()
    return {"cold_s": cold, "warm_s": warm, "cache_mb": folder_mb(cache_dir)}, mapped


def measure(path: str, limit: int | None, num_proc: int, batch_size: int, batches: int) -> dict:
    from hf_autoencoders.data.sources import open_dataset

    open_dataset(path, None, False, {})  # the Arrow table both arms read, built before either is timed
    log(f"{path}: ours (load {load_average()})")
    with tempfile.TemporaryDirectory() as ours_dir, tempfile.TemporaryDirectory() as theirs_dir:
        row_ours, train = ours(path, limit, num_proc, Path(ours_dir))
        log(f"{path}: datasets' map (load {load_average()})")
        row_theirs, mapped = theirs(path, limit, num_proc, Path(theirs_dir), tuple(train.images.shape[1:]))
        check = torch.randint(len(train), (256,), generator=torch.Generator().manual_seed(1)).tolist()
        same = bool(torch.equal(train.images[check], mapped[check]["pixel_values"]))
        if not same:
            raise SystemExit(f"{path}: the two arms decoded different pixels; the comparison is void")
        log(f"{path}: batches (load {load_average()})")
        row_ours["batch_ms"] = batch_ms(train, batch_size, batches)
        row_theirs["batch_ms"] = batch_ms(mapped, batch_size, batches)
    return {"images": len(train), "image_shape": list(train.images.shape[1:]), "same_pixels": same,
            "ours": row_ours, "datasets_map": row_theirs,
            "warm_ratio": row_theirs["warm_s"] / row_ours["warm_s"],
            "batch_ratio": row_theirs["batch_ms"] / row_ours["batch_ms"]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=[str(SHARED / "mnist"), str(SHARED / "cifar10")])
    parser.add_argument("--num_proc", type=int, default=2, help="Decoding processes of both arms.")
    parser.add_argument("--max_samples", type=int, default=None, help="First training images (default: all).")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--smoke", action="store_true", help="The first 1,000 CIFAR-10 images, 1 process.")
    args = parser.parse_args(argv)
    command = "python benchmarks/decoded_cache.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.smoke:
        args.datasets, args.max_samples, args.num_proc, args.batches = [str(SHARED / "cifar10")], 1000, 1, 5
    missing = [d for d in args.datasets if not Path(d).is_dir()]
    if missing:
        raise SystemExit(f"error: no dataset folder at {', '.join(missing)}; pass --datasets with local folders "
                         "in the Hub parquet layout (see ../shared/data/README)")
    torch.set_num_threads(1)
    result = {"command": command, "machine": machine_info(), "num_proc": args.num_proc,
              "batch_size": args.batch_size, "max_samples": args.max_samples,
              "datasets": {Path(d).name: measure(d, args.max_samples, args.num_proc, args.batch_size, args.batches)
                           for d in args.datasets}}
    result["machine"]["load_average_end"] = load_average()
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
