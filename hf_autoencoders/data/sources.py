"""Where images come from: a Hub id, a local folder or a `datasets` object (the embedded digits are in `loading`);
which splits a run uses, and which columns hold the images and labels."""

import hashlib
import importlib.util
import os
import re
import warnings
from pathlib import Path

import datasets
import numpy as np

DEFAULT_DATASET = "digits"
TEST_SPLIT_NAMES = ("test", "validation", "valid", "val")
LABEL_COLUMN_NAMES = ("label", "labels")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
DATASET_OBJECTS = (datasets.Dataset, datasets.DatasetDict, datasets.IterableDataset, datasets.IterableDatasetDict)


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is neither the embedded default, nor a local folder, nor reachable on the Hub."""


def _offline_variables() -> str | None:
    """'HF_DATASETS_OFFLINE and HF_HUB_OFFLINE', those of the two that are set, or None."""
    offline = [name for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
               if os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE")]
    return " and ".join(offline) or None


def _not_found(name: str, reason: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"Dataset {name!r} {reason}. Pass a Hub id such as 'ylecun/mnist' or 'uoft-cs/cifar10', a local folder "
        "(Hub parquet layout, or an imagefolder of PNG/JPEG files with one subfolder per class), a `datasets` object, "
        f"or omit it to use the embedded default {DEFAULT_DATASET!r} (scikit-learn digits, no network)."
    )


def open_dataset(source, config_name: str | None, streaming: bool, load_kwargs: dict) -> tuple[str, dict]:
    """
    (name, {split: dataset}) for a `datasets` object, a local folder or a Hub id. The datasets are
    `datasets.Dataset`s (memory-mapped Arrow files, nothing decoded), or `datasets.IterableDataset`s when streaming
    (a `Dataset` asked to stream is turned into one) or when `source` is already iterable.
    """
    if isinstance(source, DATASET_OBJECTS):
        name = _object_name(source)
        loaded = source
    else:
        name = str(source)
        kwargs = {**load_kwargs, **({"name": config_name} if config_name else {}), "streaming": streaming}
        loaded = _load(source, name, kwargs)
    splits = {"train": loaded} if isinstance(loaded, (datasets.Dataset, datasets.IterableDataset)) else dict(loaded)
    if not splits:
        raise ValueError(f"{name} has no splits.")
    if streaming:
        splits = {split: _as_stream(dataset) for split, dataset in splits.items()}
    return name, splits


def _object_name(dataset) -> str:
    first = next(iter(dataset.values()), None) if isinstance(dataset, dict) else dataset
    info = getattr(first, "info", None)
    described = getattr(info, "dataset_name", None) or getattr(info, "builder_name", None)
    return described or f"a {type(dataset).__name__} object"


def _load(path_or_id, name: str, kwargs: dict):
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            return datasets.load_from_disk(str(path))  # a `save_to_disk` folder; streamed by `_as_stream`
        try:
            return datasets.load_dataset(str(path), **kwargs)
        except (FileNotFoundError, datasets.exceptions.DataFilesNotFoundError) as err:
            raise _not_found(name, f"is a local folder without data files that `datasets` can read ({err})")
    if path.is_file():
        raise _not_found(name, "is a file, not a folder; put it in a folder and pass the folder")
    if not _HUB_ID.match(name):
        raise _not_found(name, "is neither a local folder nor a valid Hub id")
    try:
        return datasets.load_dataset(name, **kwargs)
    except ValueError as err:
        if "config" not in str(err).lower():
            raise
        hint = "Pass --dataset_config_name (config_name=...) to choose one."  # datasets' message lists them
        raise ValueError(f"Cannot load {name}: {err} {hint}") from err
    except (OSError, datasets.exceptions.DatasetsError) as err:  # ConnectionError, DatasetNotFoundError, ...
        offline = _offline_variables()
        if offline:
            raise _not_found(name, f"is neither a local folder nor reachable: {offline} "
                                   f"{'are' if ' and ' in offline else 'is'} set, so the Hub was not asked, and it is "
                                   "not in the cache of `datasets` (unset it to download the dataset once: it is then "
                                   "cached)") from None
        raise _not_found(name, f"is neither a local folder nor reachable on the Hub ({type(err).__name__}: {err})")


def _as_stream(dataset) -> datasets.IterableDataset:
    """A `datasets.IterableDataset` in as many shards as its files allow (parquet: one per row group), so that
    DataLoader workers and processes each read their own shards."""
    if isinstance(dataset, datasets.Dataset):
        return dataset.to_iterable_dataset(num_shards=max(1, min(64, len(dataset))))
    try:
        return dataset.reshard()
    except (NotImplementedError, AttributeError, ValueError):
        return dataset


# ------------------------------------------------------------------------------------------------------ splits


def choose_splits(tables: dict, split: str | None, test_fraction: float, seed: int, name: str):
    """{"train"/"test" (or `split`): (dataset, row indices)}, and where each came from.

    "train" and "test" are the pair a training run uses (so `split="test"` of a train-only dataset is the carved,
    held-out part); any other `split` is that split of the dataset as it is.
    """
    if split is not None and split not in ("train", "test"):
        if split not in tables:
            raise ValueError(f"{name} has no split {split!r}; its splits are {sorted(tables)}.")
        return {split: (tables[split], np.arange(len(tables[split])))}, {split: split}
    train_name, test_name = _train_test_names(tables, name, warn=split != "test")
    if test_name is not None and train_name is not None:
        chosen = {s: (tables[n], np.arange(len(tables[n]))) for s, n in (("train", train_name), ("test", test_name))}
        sources = {"train": train_name, "test": test_name}
    elif train_name is None:
        both = (tables[test_name], np.arange(len(tables[test_name])))
        chosen, sources = {"train": both, "test": both}, {"train": test_name, "test": test_name}
    else:
        table = tables[train_name]
        if len(table) < 2:
            raise ValueError(f"{name} has only {len(table)} row(s) in {train_name!r}; cannot carve a test split.")
        permutation = np.random.default_rng(seed).permutation(len(table))
        num_test = min(max(1, round(test_fraction * len(table))), len(table) - 1)
        percent = round(100 * test_fraction)
        chosen = {"train": (table, np.sort(permutation[num_test:])), "test": (table, np.sort(permutation[:num_test]))}
        sources = {"train": f"{train_name} ({100 - percent}%)", "test": f"{train_name} ({percent}%, seed {seed})"}
    if split is not None:
        chosen, sources = {split: chosen[split]}, {split: sources[split]}
    return chosen, sources


def choose_stream_splits(streams: dict, split: str | None, test_fraction: float, seed: int, name: str):
    """As `choose_splits`, for streams: {"train"/"test" (or `split`): stream}. A stream without a test split is
    split by content: an image goes to the test split when the hash of its bytes (with `seed`) falls in the lowest
    `test_fraction`, so the two splits are disjoint, the same in every epoch and in every process."""
    if split is not None and split not in ("train", "test"):
        if split not in streams:
            raise ValueError(f"{name} has no split {split!r}; its splits are {sorted(streams)}.")
        return {split: streams[split]}, {split: split}
    train_name, test_name = _train_test_names(streams, name, warn=split != "test")
    if train_name is not None and test_name is not None:
        chosen, sources = {"train": streams[train_name], "test": streams[test_name]}, {"train": train_name,
                                                                                       "test": test_name}
    elif train_name is None:
        chosen, sources = {"train": streams[test_name], "test": streams[test_name]}, {"train": test_name,
                                                                                      "test": test_name}
    else:
        percent = round(100 * test_fraction)
        stream = streams[train_name]
        chosen = {
            "train": stream.filter(_HeldOut(test_fraction, seed, keep=False)),
            "test": stream.filter(_HeldOut(test_fraction, seed, keep=True)),
        }
        sources = {"train": f"{train_name} ({100 - percent}%)", "test": f"{train_name} ({percent}% by content hash, "
                                                                          f"seed {seed})"}
    if split is not None:
        chosen, sources = {split: chosen[split]}, {split: sources[split]}
    return chosen, sources


class _HeldOut:
    """Is an example in the carved test split? (picklable, for DataLoader workers)."""

    def __init__(self, fraction: float, seed: int, keep: bool):
        self.fraction, self.seed, self.keep = fraction, seed, keep

    def __call__(self, example) -> bool:
        return (_content_hash(example, self.seed) < self.fraction) == self.keep


def _content_hash(example: dict, seed: int) -> float:
    """A number in [0, 1) fixed by the example's undecoded image (its bytes, or its path) and `seed`."""
    digest = hashlib.sha1(str(seed).encode())
    for value in example.values():
        if isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
        if isinstance(value, str):
            value = value.encode()
        if isinstance(value, bytes):
            digest.update(value)
    return int.from_bytes(digest.digest()[:8], "big") / 2**64


def _train_test_names(tables: dict, name: str, warn: bool) -> tuple[str | None, str | None]:
    test_name = next((s for s in TEST_SPLIT_NAMES if s in tables), None)
    train_name = "train" if "train" in tables else None
    if train_name is None and test_name is None:  # a single split with another name: treat it as train
        train_name = sorted(tables)[0]
    if train_name is None and warn:
        warnings.warn(
            f"{name} has only a {test_name!r} split: it is used as both the train and the test split, so test "
            "metrics are not held out.",
            stacklevel=5,
        )
    return train_name, test_name


# ----------------------------------------------------------------------------------------------------- columns


def _describe_columns(features: datasets.Features) -> str:
    return ", ".join(f"{column}: {feature!r}" for column, feature in features.items())


def _check_column(features: datasets.Features, argument: str, column: str, name: str) -> str:
    if column not in features:
        raise ValueError(
            f"{argument}={column!r} is not a column of {name}; its columns are: {_describe_columns(features)}."
        )
    return column


def find_image_column(features: datasets.Features, image_column: str | None, name: str) -> str:
    """`image_column` if given (checked), else the first column of type `datasets.Image`."""
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


def find_label_column(features: datasets.Features, label_column: str | None, name: str) -> str | None:
    """`label_column` if given (checked), else the first `ClassLabel` column, else an integer "label"/"labels"."""
    if label_column is not None:
        _check_column(features, "label_column", label_column, name)
        feature = features[label_column]
        if not (isinstance(feature, datasets.ClassLabel) or isinstance(feature, datasets.Value)
                and feature.dtype.startswith(("int", "uint"))):
            kind = f"{feature.dtype} values" if isinstance(feature, datasets.Value) else str(feature)
            kind = "string values" if kind in ("string values", "large_string values") else kind
            raise ValueError(f"label_column={label_column!r} of {name} holds {kind}; class labels must be integers "
                             "0..C-1 (an integer or ClassLabel column). Encode them first, e.g. with "
                             f"dataset.class_encode_column({label_column!r}) and save_to_disk.")
        return label_column
    for column, feature in features.items():
        if isinstance(feature, datasets.ClassLabel):
            return column
    for column in LABEL_COLUMN_NAMES:
        feature = features.get(column)
        if isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint")):
            return column
    return None


def label_names(features: datasets.Features, label_column: str | None) -> tuple[int | None, list[str] | None]:
    """(number of classes, class names) of a `ClassLabel` column; (None, None) otherwise."""
    feature = features.get(label_column) if label_column is not None else None
    if isinstance(feature, datasets.ClassLabel):
        return feature.num_classes, list(feature.names)
    return None, None


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """`load_digits().images, .target`: read from the file scikit-learn ships, without importing it (seconds)."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if path is not None and path.is_file():
        data = np.loadtxt(path, delimiter=",")  # as load_digits reads it: 64 pixels then the digit, per row
        return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target.astype(np.int64)
