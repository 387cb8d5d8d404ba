"""Image datasets, decoded once into uint8 tensors held in memory.

`load_image_dataset` reads a Hub dataset (`ylecun/mnist`, `uoft-cs/cifar10`), a local folder (Hub parquet layout, an
`imagefolder` of PNG/JPEG files with class subfolders, or a `save_to_disk` folder), or the embedded default: the
scikit-learn digits (no network). Every image is decoded once, up front, with the very function the image processor
uses (`image_to_uint8`), into a (N, C, H, W) uint8 tensor; an `ImageCollator` then only stacks and divides by 255, so
loading never dominates a training step, and `processor(image)` equals `collator([dataset_item])` for the same image.

CIFAR-10 train is 50,000 x 3 x 32 x 32 bytes = 150 MB; MNIST train is 47 MB.
"""

import hashlib
import importlib.util
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .models.image_processing_autoencoders import (
    AutoencoderImageProcessor,
    binarize,
    image_to_uint8,
    to_pil_image,
    uint8_to_unit,
)

DEFAULT_DATASET = "digits"
DIGITS_NUM_TEST = 297  # the last 297 of the 1,797 scikit-learn digits; the first 1,500 train
TEST_SPLIT_NAMES = ("test", "validation", "valid", "val")
LABEL_COLUMN_NAMES = ("label", "labels")
PROGRESS_MIN_IMAGES = 10_000  # show a progress bar from this many images on
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_CACHE_VERSION = 1  # bump when decoding changes
_ONE_CHANNEL_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is neither the embedded default, nor a local folder, nor reachable on the Hub."""


class ImageTensorDataset(Dataset):
    """
    Images held in memory as a uint8 tensor (N, C, H, W), with optional long labels (N,).

    Items are dicts `{"pixel_values": uint8 (C, H, W), "labels": long scalar}` (no "labels" key without labels);
    `ImageCollator` turns a list of them into float pixel_values in [0, 1].
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be a uint8 tensor (N, C, H, W), got {images.dtype} {tuple(images.shape)}.")
        if labels is not None and labels.shape != (len(images),):
            raise ValueError(f"labels must have shape ({len(images)},), got {tuple(labels.shape)}.")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {"pixel_values": self.images[index]}
        if self.labels is not None:
            item["labels"] = self.labels[index]
        return item

    def __repr__(self) -> str:
        return (
            f"ImageTensorDataset(num_rows={len(self)}, image_shape={tuple(self.images.shape[1:])}, "
            f"labels={self.labels is not None})"
        )


@dataclass
class ImageCollator:
    """
    Stacks dataset items into `{"pixel_values": float32 (B, C, H, W)}`, x = k / 255 for uint8 pixels k
    (float pixels are taken as already in [0, 1]); `binarize` maps x to 1[x > binarize_threshold], or, with
    `stochastic_binarization`, draws a fresh x' ~ Bernoulli(x) for every batch (the dynamic binarization of MNIST used
    by the IWAE paper and most VAE likelihood results). Items may be dicts with "pixel_values" or bare tensors.
    "labels" (long (B,)) is emitted only with `return_labels=True`.
    """

    return_labels: bool = False
    binarize: bool = False
    binarize_threshold: float = 0.5
    stochastic_binarization: bool = False

    def __call__(self, features: list) -> dict[str, torch.Tensor]:
        if len(features) == 0:
            raise ValueError("Cannot collate an empty batch.")
        images = [f["pixel_values"] if isinstance(f, dict) else f for f in features]
        images = torch.stack([torch.as_tensor(image) for image in images])
        pixel_values = uint8_to_unit(images) if images.dtype == torch.uint8 else images.float()
        if self.binarize and self.stochastic_binarization:
            pixel_values = torch.bernoulli(pixel_values)
        elif self.binarize:
            pixel_values = binarize(pixel_values, self.binarize_threshold)
        batch = {"pixel_values": pixel_values}
        if self.return_labels:
            if not all(isinstance(f, dict) and "labels" in f for f in features):
                raise ValueError("return_labels=True, but some items have no 'labels' (the dataset has no labels).")
            batch["labels"] = torch.stack([torch.as_tensor(f["labels"]) for f in features]).long()
        return batch


def collate_fn(features: list) -> dict[str, torch.Tensor]:
    """`ImageCollator()` as a plain function: uint8 items -> {"pixel_values": float in [0, 1]}."""
    return ImageCollator()(features)


@dataclass
class ImageData:
    """
    A dataset ready for training: `splits` maps "train" / "test" to `ImageTensorDataset`s of one shape.

    `source_splits` says where each split came from, e.g. {"train": "train", "test": "test"}, or
    {"train": "train (90%)", "test": "train (10%)"} for a test split carved from train.
    """

    name: str
    splits: dict[str, ImageTensorDataset]
    image_size: int
    num_channels: int
    num_labels: int | None = None
    label_names: list[str] | None = None
    image_column: str | None = None
    label_column: str | None = None
    source_splits: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, split: str) -> ImageTensorDataset:
        if split not in self.splits:
            raise KeyError(f"{self.name} has no split {split!r} loaded; loaded: {sorted(self.splits)}.")
        return self.splits[split]

    @property
    def train(self) -> ImageTensorDataset:
        return self["train"]

    @property
    def test(self) -> ImageTensorDataset:
        return self["test"]

    def image_processor(self, **kwargs) -> AutoencoderImageProcessor:
        """The processor that maps any new image to the same pixel_values as this data (kwargs override)."""
        kwargs = {"image_size": self.image_size, "num_channels": self.num_channels, **kwargs}
        return AutoencoderImageProcessor(**kwargs)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits.items())
        return (
            f"ImageData({self.name!r}: {sizes}; {self.num_channels}x{self.image_size}x{self.image_size}, "
            f"num_labels={self.num_labels}, image_column={self.image_column!r}, label_column={self.label_column!r})"
        )


def load_image_dataset(
    name_or_path: str | os.PathLike | None = None,
    *,
    split: str | None = None,
    image_size: int | None = None,
    num_channels: int | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    max_samples: int | None = None,
    test_fraction: float = 0.1,
    seed: int = 0,
    resample: int = Image.Resampling.BILINEAR,
    progress: bool | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    load_kwargs: dict | None = None,
) -> ImageData:
    """
    Load an image dataset and decode it into memory.

    Args:
        name_or_path: None or "digits" for the embedded scikit-learn digits (1,797 8x8 images upscaled to 28x28;
            the last 297 are the test split); a local folder (Hub parquet layout, imagefolder with class
            subfolders, or `save_to_disk` output); or a Hub dataset id such as "ylecun/mnist".
        split: load only this split; default: "train" and "test". These two are always the pair training uses (a
            carved test split included); any other name (e.g. "validation") is that split of the dataset as is.
        image_size: resize to image_size x image_size (PIL, `resample`); default: the first image's size.
        num_channels: 1 (grayscale) or 3 (RGB); default: that of the first image's mode.
        image_column / label_column: override the detection, which takes the first column of type `datasets.Image`
            and the first `datasets.ClassLabel` column (else an integer column named "label" or "labels").
        max_samples: keep only the first max_samples rows of each split.
        test_fraction, seed: when only a train split exists, a random test_fraction of it (chosen with `seed`)
            becomes the test split; both keep the original row order. A dataset with only a test split (KMNIST)
            uses it as train and test, with a warning.
        progress: show a progress bar while decoding; default: for splits of at least 10,000 images.
        cache, cache_dir: keep the decoded uint8 arrays of datasets that live in `datasets`' cache (Hub and local
            folders) as .npy files in cache_dir (default: <HF_DATASETS_CACHE>/hf_autoencoders_decoded), keyed by the
            dataset fingerprint, rows, column, size, channels and filter, so a second load skips decoding.
        load_kwargs: extra arguments for `datasets.load_dataset` (e.g. {"name": ..., "revision": ...}).

    Raises:
        DatasetNotFoundError (a FileNotFoundError): the dataset cannot be found.
        ValueError: no image column, an unknown column or split, an unreadable image, or a bad argument.
    """
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}.")
    if num_channels not in (None, 1, 3):
        raise ValueError(f"num_channels must be 1 (grayscale), 3 (RGB) or None (native), got {num_channels!r}.")
    if max_samples is not None and (not isinstance(max_samples, int) or max_samples < 1):
        raise ValueError(f"max_samples must be a positive int or None, got {max_samples!r}.")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}.")

    if name_or_path is None or str(name_or_path) == DEFAULT_DATASET:
        return _load_digits(split, image_size or 28, num_channels or 1, max_samples, resample)
    name = str(name_or_path)
    tables = _load_datasets(name_or_path, load_kwargs or {})
    chosen, source_splits = _choose_splits(tables, split, test_fraction, seed, name)
    features = next(iter(chosen.values()))[0].features
    image_column = _find_image_column(features, image_column, name)
    label_column = _find_label_column(features, label_column, name)
    if not cache:
        cache_dir = None
    elif cache_dir is None:
        cache_dir = Path(datasets.config.HF_DATASETS_CACHE) / "hf_autoencoders_decoded"

    splits, decoded = {}, {}
    for split_name, (table, rows) in chosen.items():
        rows = rows[:max_samples]
        if len(rows) == 0:
            raise ValueError(f"Split {split_name!r} of {name} is empty.")
        subset = table.select(rows) if len(rows) < len(table) else table
        column = _image_column_items(subset, image_column)
        if image_size is None or num_channels is None:  # the first image fixes the default shape
            native_size, native_channels = _native_shape(column[0], features[image_column], name, split_name, rows[0])
            image_size, num_channels = image_size or native_size, num_channels or native_channels
        key = (table._fingerprint, hashlib.sha1(rows.astype(np.int64).tobytes()).hexdigest())
        if key not in decoded:  # a split used twice (train = test) is decoded once
            path = _cache_path(cache_dir, table, key, image_column, image_size, num_channels, resample)
            decoded[key] = _decode(column, rows, image_size, num_channels, resample, name, split_name, progress, path)
        labels = None
        if label_column is not None:
            values = subset.with_format("arrow")[label_column].to_numpy()
            labels = torch.from_numpy(np.array(values, dtype=np.int64))
        splits[split_name] = ImageTensorDataset(decoded[key], labels)

    num_labels, label_names = None, None
    if label_column is not None:
        label_feature = features[label_column]
        if isinstance(label_feature, datasets.ClassLabel):
            num_labels, label_names = label_feature.num_classes, list(label_feature.names)
        else:
            num_labels = int(max(int(s.labels.max()) for s in splits.values())) + 1
    return ImageData(
        name=name,
        splits=splits,
        image_size=image_size,
        num_channels=num_channels,
        num_labels=num_labels,
        label_names=label_names,
        image_column=image_column,
        label_column=label_column,
        source_splits=source_splits,
    )


def _load_digits(split, image_size: int, num_channels: int, max_samples: int | None, resample) -> ImageData:
    """scikit-learn's digits: 17 gray levels 0..16 scaled to 0..255, resized from 8x8; the last 297 are test."""
    digits, targets = _digits_arrays()
    pixels = np.rint(digits * (255.0 / 16.0)).astype(np.uint8)
    num_train = len(pixels) - DIGITS_NUM_TEST
    ranges = {"train": slice(0, num_train), "test": slice(num_train, len(pixels))}
    if split is not None and split not in ranges:
        raise ValueError(f"{DEFAULT_DATASET} has no split {split!r}; its splits are ['test', 'train'].")
    splits = {}
    for split_name, rows in ranges.items():
        if split in (None, split_name):
            rows = np.arange(len(pixels))[rows][:max_samples]
            images = np.stack([image_to_uint8(pixels[i], image_size, num_channels, resample) for i in rows])
            labels = torch.from_numpy(targets[rows])
            splits[split_name] = ImageTensorDataset(torch.from_numpy(images), labels)
    return ImageData(
        name=DEFAULT_DATASET,
        splits=splits,
        image_size=image_size,
        num_channels=num_channels,
        num_labels=10,
        label_names=[str(d) for d in range(10)],
        image_column="images",
        label_column="target",
        source_splits={k: k for k in splits},
    )


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """`load_digits().images, .target`: read from the file scikit-learn ships, without importing it (seconds)."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if path is not None and path.is_file():
        data = np.loadtxt(path, delimiter=",")  # as load_digits reads it: 64 pixels then the digit, per row
        return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target.astype(np.int64)


def _not_found(name: str, reason: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"Dataset {name!r} {reason}. Pass a Hub id such as 'ylecun/mnist' or 'uoft-cs/cifar10', a local folder "
        "(Hub parquet layout, or an imagefolder of PNG/JPEG files with one subfolder per class), or omit it to use "
        f"the embedded default {DEFAULT_DATASET!r} (scikit-learn digits, no network)."
    )


def _load_datasets(name_or_path, load_kwargs: dict) -> dict[str, datasets.Dataset]:
    path = Path(name_or_path).expanduser()
    name = str(name_or_path)
    if path.is_dir():
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            loaded = datasets.load_from_disk(str(path))
        else:
            try:
                loaded = datasets.load_dataset(str(path), **load_kwargs)
            except (FileNotFoundError, datasets.exceptions.DataFilesNotFoundError) as err:
                raise _not_found(name, f"is a local folder without data files that `datasets` can read ({err})")
    elif path.is_file():
        raise _not_found(name, "is a file, not a folder; put it in a folder and pass the folder")
    elif not _HUB_ID.match(name):
        raise _not_found(name, "is neither a local folder nor a valid Hub id")
    else:
        try:
            loaded = datasets.load_dataset(name, **load_kwargs)
        except (OSError, datasets.exceptions.DatasetsError) as err:  # ConnectionError, DatasetNotFoundError, ...
            raise _not_found(name, f"is neither a local folder nor reachable on the Hub ({type(err).__name__}: {err})")
    if isinstance(loaded, datasets.Dataset):
        return {"train": loaded}
    return dict(loaded)


def _choose_splits(tables: dict, split: str | None, test_fraction: float, seed: int, name: str):
    """{"train"/"test" (or `split`): (dataset, row indices)}, and where each came from.

    "train" and "test" are the pair a training run uses (so `split="test"` of a train-only dataset is the carved,
    held-out part); any other `split` is that split of the dataset as it is.
    """
    if split is not None and split not in ("train", "test"):
        if split not in tables:
            raise ValueError(f"{name} has no split {split!r}; its splits are {sorted(tables)}.")
        return {split: (tables[split], np.arange(len(tables[split])))}, {split: split}
    chosen, sources = _train_test_splits(tables, test_fraction, seed, name, warn=split != "test")
    if split is not None:
        chosen, sources = {split: chosen[split]}, {split: sources[split]}
    return chosen, sources


def _train_test_splits(tables: dict, test_fraction: float, seed: int, name: str, warn: bool):
    test_name = next((s for s in TEST_SPLIT_NAMES if s in tables), None)
    train_name = "train" if "train" in tables else None
    if train_name is None and test_name is None:  # a single split with another name: treat it as train
        train_name = sorted(tables)[0]
    if train_name is not None and test_name is not None:
        chosen = {s: (tables[n], np.arange(len(tables[n]))) for s, n in (("train", train_name), ("test", test_name))}
        return chosen, {"train": train_name, "test": test_name}
    if train_name is None:
        if warn:
            warnings.warn(
                f"{name} has only a {test_name!r} split: it is used as both the train and the test split, so test "
                "metrics are not held out.",
                stacklevel=4,
            )
        both = (tables[test_name], np.arange(len(tables[test_name])))
        return {"train": both, "test": both}, {"train": test_name, "test": test_name}
    table = tables[train_name]
    if len(table) < 2:
        raise ValueError(f"{name} has only {len(table)} row(s) in {train_name!r}; cannot carve a test split.")
    permutation = np.random.default_rng(seed).permutation(len(table))
    num_test = min(max(1, round(test_fraction * len(table))), len(table) - 1)
    percent = round(100 * test_fraction)
    chosen = {"train": (table, np.sort(permutation[num_test:])), "test": (table, np.sort(permutation[:num_test]))}
    return chosen, {"train": f"{train_name} ({100 - percent}%)", "test": f"{train_name} ({percent}%, seed {seed})"}


def _describe_columns(features: datasets.Features) -> str:
    return ", ".join(f"{column}: {feature!r}" for column, feature in features.items())


def _check_column(features: datasets.Features, argument: str, column: str, name: str) -> str:
    if column not in features:
        raise ValueError(
            f"{argument}={column!r} is not a column of {name}; its columns are: {_describe_columns(features)}."
        )
    return column


def _find_image_column(features: datasets.Features, image_column: str | None, name: str) -> str:
    if image_column is not None:
        return _check_column(features, "image_column", image_column, name)
    for column, feature in features.items():
        if isinstance(feature, datasets.Image):
            return column
    raise ValueError(
        f"{name} has no image column (no column of type datasets.Image); its columns are: "
        f"{_describe_columns(features)}. Pass image_column=... (--image_column) to name the column that holds the "
        "images (encoded bytes or file paths)."
    )


def _find_label_column(features: datasets.Features, label_column: str | None, name: str) -> str | None:
    if label_column is not None:
        return _check_column(features, "label_column", label_column, name)
    for column, feature in features.items():
        if isinstance(feature, datasets.ClassLabel):
            return column
    for column in LABEL_COLUMN_NAMES:
        feature = features.get(column)
        if isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint")):
            return column
    return None


def _image_column_items(table: datasets.Dataset, column: str) -> list:
    """The undecoded images of a column: encoded bytes or file paths (any other column type is read as it is)."""
    array = table.with_format("arrow")[column]
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_struct(array.type) and {"bytes", "path"} <= {f.name for f in array.type}:
        encoded, paths = array.field("bytes").to_pylist(), array.field("path").to_pylist()
        return [b if b is not None else p for b, p in zip(encoded, paths)]
    return array.to_pylist()


def _unreadable(err: Exception, name: str, split: str, row: int) -> ValueError:
    return ValueError(f"The image at row {row} of split {split!r} of {name} {err}.")


def _native_shape(item, feature, name: str, split: str, row: int) -> tuple[int, int]:
    """(image_size, num_channels) of the first image; its height when it is not square."""
    try:
        image = to_pil_image(item)
    except (ValueError, TypeError) as err:
        raise _unreadable(err, name, split, row) from err
    mode = getattr(feature, "mode", None) or image.mode
    return image.size[1], 1 if mode in _ONE_CHANNEL_MODES else 3


def _cache_path(cache_dir, table, key, column, image_size, num_channels, resample) -> Path | None:
    """Where the decoded images of these rows are kept; None for in-memory datasets or when caching is off."""
    if cache_dir is None or not table.cache_files:
        return None
    digest = hashlib.sha1(repr((_CACHE_VERSION, key, column, image_size, num_channels, int(resample))).encode())
    return Path(cache_dir) / f"{digest.hexdigest()[:24]}.npy"


def _decode(column, rows, image_size, num_channels, resample, name, split, progress, path=None) -> torch.Tensor:
    """Decode every image into one preallocated uint8 array (N, C, H, W), or read it back from the .npy at `path`."""
    shape = (len(column), num_channels, image_size, image_size)
    if path is not None and path.is_file():
        try:
            images = np.load(path)
            if images.shape == shape and images.dtype == np.uint8:
                return torch.from_numpy(images)
        except (OSError, ValueError):  # a damaged cache file is rebuilt
            pass
    images = np.empty(shape, dtype=np.uint8)
    show = progress if progress is not None else len(column) >= PROGRESS_MIN_IMAGES
    for i, item in enumerate(tqdm(column, desc=f"Decoding {split}", unit="img", disable=not show)):
        try:
            images[i] = image_to_uint8(item, image_size, num_channels, resample)
        except (ValueError, TypeError) as err:
            raise _unreadable(err, name, split, rows[i]) from err
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npy")
            np.save(partial, images)
            os.replace(partial, path)  # atomic: a concurrent reader never sees half a file
        except OSError as err:
            warnings.warn(f"Could not cache the decoded images at {path}: {err}", stacklevel=3)
    return torch.from_numpy(images)


# ------------------------------------------------------------------------------------------- batches of anything


def _to_tensor(value) -> torch.Tensor:
    if isinstance(value, (list, tuple)) and value and (torch.is_tensor(value[0]) or isinstance(value[0], np.ndarray)):
        return torch.stack([torch.as_tensor(v) for v in value])
    return torch.as_tensor(value)


def _pixel_values_of(item, where: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Split one batch (tensor, tuple/list, or dict) into pixel values and labels (``None`` when absent)."""
    if isinstance(item, dict) or hasattr(item, "keys"):
        if "pixel_values" not in item:
            raise ValueError(f"{where} has keys {list(item.keys())}; a 'pixel_values' key is required")
        labels = item.get("labels", item.get("label"))
        return _to_tensor(item["pixel_values"]), None if labels is None else _to_tensor(labels)
    if isinstance(item, (tuple, list)):
        labels = _to_tensor(item[1]) if len(item) > 1 else None
        return _to_tensor(item[0]), labels
    return _to_tensor(item), None


def _stack_examples(examples: list[tuple[torch.Tensor, torch.Tensor | None]]):
    labels = [lab for _, lab in examples]
    return (
        torch.stack([p for p, _ in examples]),
        None if any(lab is None for lab in labels) else torch.stack(labels),
    )


def _group_examples(items: Iterable, batch_size: int):
    """Pass batches (4-d pixel values) through and group single examples (3-d) into batches of ``batch_size``."""
    examples = []
    for item in items:
        pixel_values, labels = _pixel_values_of(item, "an item of the data")
        if pixel_values.dim() != 3:
            yield pixel_values, labels
            continue
        examples.append((pixel_values, labels))
        if len(examples) == batch_size:
            yield _stack_examples(examples)
            examples = []
    if examples:
        yield _stack_examples(examples)


def iterate_batches(data, batch_size: int = 256) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Yield ``(pixel_values, labels_or_None)`` batches from any common container of images.

    Accepted: a tensor (N, C, H, W); a tuple ``(images, labels)`` of tensors; a dict with ``"pixel_values"`` (and
    optionally ``"labels"``/``"label"``); a ``datasets.Dataset`` whose rows have ``"pixel_values"`` (e.g. after
    ``set_transform``); or any indexable or iterable container (a torch ``Dataset``, a ``DataLoader``, a list, a
    ``datasets.IterableDataset``) of batches or of single examples, each a tensor, a tuple ``(pixel_values, label)``
    or a dict; single examples (3-d pixel values) are grouped into batches of ``batch_size``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size}")
    if torch.is_tensor(data) or isinstance(data, np.ndarray):
        data = (torch.as_tensor(data),)
    if isinstance(data, dict):
        if "pixel_values" not in data:
            raise ValueError(f"a dict of data needs a 'pixel_values' key; got keys {list(data.keys())}")
        data = (data["pixel_values"], data.get("labels", data.get("label")))
    if isinstance(data, tuple) and (torch.is_tensor(data[0]) or isinstance(data[0], np.ndarray)):
        images = torch.as_tensor(data[0])
        labels = data[1] if len(data) > 1 else None
        for start in range(0, len(images), batch_size):
            stop = start + batch_size
            yield images[start:stop], None if labels is None else torch.as_tensor(labels[start:stop])
        return
    if hasattr(data, "column_names") and hasattr(data, "__len__"):  # datasets.Dataset: slicing is batched
        for start in range(0, len(data), batch_size):
            batch = data[start : start + batch_size]
            yield _pixel_values_of(batch, "the dataset batch")
        return
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        yield from _group_examples((data[i] for i in range(len(data))), batch_size)
        return
    if isinstance(data, Iterable):
        yield from _group_examples(data, batch_size)
        return
    raise ValueError(
        f"data of type {type(data).__name__} is not supported; pass a tensor, (images, labels), a dict with "
        "'pixel_values', a datasets.Dataset, an indexable dataset or an iterable of batches"
    )


def _num_items(data) -> int | None:
    if torch.is_tensor(data) or isinstance(data, np.ndarray):
        return len(data)
    if isinstance(data, tuple) and (torch.is_tensor(data[0]) or isinstance(data[0], np.ndarray)):
        return len(data[0])
    if isinstance(data, dict) and "pixel_values" in data:
        return len(data["pixel_values"])
    try:
        return len(data.dataset) if hasattr(data, "dataset") else len(data)
    except TypeError:
        return None


def num_batches(data, batch_size: int) -> int | None:
    """How many batches `iterate_batches(data, batch_size)` yields, when it can be known (for progress bars)."""
    n = _num_items(data)
    if n is None or hasattr(data, "batch_size"):  # a DataLoader yields its own batches
        return len(data) if hasattr(data, "__len__") else None
    return -(-n // batch_size)


__all__ = [
    "DatasetNotFoundError",
    "ImageCollator",
    "ImageData",
    "ImageTensorDataset",
    "collate_fn",
    "iterate_batches",
    "load_image_dataset",
    "num_batches",
]
