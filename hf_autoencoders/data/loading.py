"""`load_image_dataset`: any image dataset -> train/test splits of uint8 images of one shape, on the path that suits
its size (in memory, lazy, or streamed)."""

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import datasets
import numpy as np
import torch
from PIL import Image

from ..models.image_processing_autoencoders import AutoencoderImageProcessor, image_to_uint8
from .cache import DecodedCache, default_cache_dir
from .decoding import (
    Decoder,
    ImageTensorDataset,
    LazyImageDataset,
    decode_all,
    decode_stream,
    image_items,
    native_shape,
    undecoded,
)
from .sources import (
    DATASET_OBJECTS,
    DEFAULT_DATASET,
    choose_splits,
    choose_stream_splits,
    digits_arrays,
    find_image_column,
    find_label_column,
    label_names,
    open_dataset,
)

logger = logging.getLogger(__name__)
DIGITS_NUM_TEST = 297  # the last 297 of the 1,797 scikit-learn digits; the first 1,500 train
PROGRESS_MIN_IMAGES = 10_000  # show a progress bar from this many images on
IN_MEMORY_MAX_GB = 2.0  # splits whose decoded images take more are decoded per batch (lazy)
SHUFFLE_BUFFER_SIZE = 10_000  # undecoded rows a stream shuffles among


MAX_CLASSES = 100_000  # more classes than any labelled image dataset has: larger labels are ids, not classes


def check_class_labels(labels, source: str, remedy: str, num_classes: int | None = None) -> torch.Tensor:
    """`labels` (N,) as class indices 0..C-1 in a long tensor, or a ValueError that names `source` (the dataset), the
    offending values and the way out (`remedy`, what else the user can do): labels that are not integers, negative
    labels (-1 often marks unlabelled rows), labels of `num_classes` or more, or labels too large to index classes
    (ids rather than classes)."""
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"the labels of {source} are {labels.dtype} values; class labels must be integers 0..C-1. "
                         f"Encode them as classes, or {remedy}.")
    labels = labels.long().flatten()
    if not len(labels):
        return labels
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        count = int((labels < 0).sum())
        raise ValueError(f"the labels of {source} include {low} ({count} of {len(labels)} rows; -1 often marks "
                         "unlabelled rows), but class labels must be integers 0..C-1. Keep only the labelled rows "
                         f"(e.g. dataset.filter(lambda row: row['label'] >= 0)), or {remedy}.")
    if high >= MAX_CLASSES:
        raise ValueError(f"the labels of {source} go up to {high}: as class indices 0..C-1 that would be {high + 1} "
                         f"classes (at most {MAX_CLASSES} are taken), so they look like ids rather than classes. "
                         f"Encode them as classes (dataset.class_encode_column), or {remedy}.")
    if num_classes is not None and high >= num_classes:
        raise ValueError(f"the labels of {source} include {high}, but it has {num_classes} classes "
                         f"(0..{num_classes - 1}); fix its labels, or {remedy}.")
    return labels


@dataclass
class ImageData:
    """
    A dataset ready for training: `splits` maps "train" / "test" to datasets of images of one shape, whose items
    are `{"pixel_values": uint8 (C, H, W), ["labels"]}`: `ImageTensorDataset` (decoded up front),
    `LazyImageDataset` (decoded per batch) or a `datasets.IterableDataset` (streamed, decoded per batch).

    `source_splits` says where each split came from, e.g. {"train": "train", "test": "test"}, or
    {"train": "train (90%)", "test": "train (10%)"} for a test split carved from train.
    """

    name: str
    splits: dict
    image_size: int
    num_channels: int
    num_labels: int | None = None
    label_names: list[str] | None = None
    image_column: str | None = None
    label_column: str | None = None
    source_splits: dict[str, str] = field(default_factory=dict)
    num_skipped: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, split: str):
        if split not in self.splits:
            raise KeyError(f"{self.name} has no split {split!r} loaded; loaded: {sorted(self.splits)}.")
        return self.splits[split]

    @property
    def train(self):
        return self["train"]

    @property
    def test(self):
        return self["test"]

    def image_processor(self, **kwargs) -> AutoencoderImageProcessor:
        """The processor that maps any new image to the same pixel_values as this data (kwargs override)."""
        kwargs = {"image_size": self.image_size, "num_channels": self.num_channels, **kwargs}
        return AutoencoderImageProcessor(**kwargs)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={_size(v)}" for k, v in self.splits.items())
        return (
            f"ImageData({self.name!r}: {sizes}; {self.num_channels}x{self.image_size}x{self.image_size}, "
            f"num_labels={self.num_labels}, image_column={self.image_column!r}, label_column={self.label_column!r})"
        )


def _size(dataset) -> str:
    try:
        return str(len(dataset))
    except TypeError:
        return "stream"


def load_image_dataset(
    name_or_path=None,
    *,
    split: str | None = None,
    config_name: str | None = None,
    image_size: int | None = None,
    num_channels: int | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    max_samples: int | Mapping[str, int | None] | None = None,
    test_fraction: float = 0.1,
    seed: int = 0,
    resample: int = Image.Resampling.BILINEAR,
    streaming: bool = False,
    shuffle_seed: int | None = None,
    shuffle_buffer_size: int = SHUFFLE_BUFFER_SIZE,
    in_memory_max_gb: float = IN_MEMORY_MAX_GB,
    num_workers: int = 0,
    skip_bad_images: bool = False,
    progress: bool | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    load_kwargs: dict | None = None,
) -> ImageData:
    """
    Load an image dataset as train/test splits of uint8 images of one shape, on one of three paths:

    - **in memory** (a split whose decoded images, N x C x H x W bytes, take at most `in_memory_max_gb`): every
      image is decoded once, up front (with `num_workers` processes), into an `ImageTensorDataset`. For datasets
      stored on disk the decoded array is kept in the decoded cache (see `hf_autoencoders.data.cache`) and
      memory-mapped, so the next run, and every process of this machine, maps the same file instead of decoding.
    - **lazy** (a larger split): a `LazyImageDataset` over the memory-mapped Arrow rows, decoded per batch in the
      DataLoader workers; memory does not grow with the number of images.
    - **streamed** (`streaming=True`, or a `datasets.IterableDataset` given): a `datasets.IterableDataset` read
      shard by shard, the train split shuffled among `shuffle_buffer_size` undecoded rows (reshuffled each epoch
      by `set_epoch`), decoded per batch as it is read; under several processes the Trainer gives each its own
      shards. Nothing is read up front but the first image (for its shape).

    Every path decodes with the image processor's `image_to_uint8` (any PIL mode, any size), so
    `processor(image)` equals `collator([dataset_item])` for the same image.

    Args:
        name_or_path: None or "digits" for the embedded scikit-learn digits (1,797 8x8 images upscaled to 28x28;
            the last 297 are the test split); a local folder (Hub parquet layout, imagefolder with class
            subfolders, or `save_to_disk` output); a Hub dataset id such as "ylecun/mnist"; or a `datasets`
            `Dataset`, `DatasetDict`, `IterableDataset` or `IterableDatasetDict`.
        split: load only this split; default: "train" and "test". These two are always the pair training uses (a
            carved test split included); any other name (e.g. "validation") is that split of the dataset as is.
        config_name: the dataset's configuration (`datasets.load_dataset(name, config_name)`).
        image_size: resize to image_size x image_size (PIL, `resample`); default: the first image's size.
        num_channels: 1 (grayscale) or 3 (RGB); default: that of the first image's mode.
        image_column / label_column: override the detection, which takes the first column of type `datasets.Image`
            and the first `datasets.ClassLabel` column (else an integer column named "label" or "labels").
        max_samples: keep only the first max_samples rows of each split (an int), or of the splits a dict names
            ({"train": 512, "test": 64}); only those images are ever decoded.
        test_fraction, seed: when only a train split exists, a random test_fraction of it (chosen with `seed`)
            becomes the test split (a stream is split by a hash of each image's bytes); both keep the original row
            order. A dataset with only a test split (KMNIST) uses it as train and test, with a warning.
        streaming, shuffle_seed, shuffle_buffer_size: stream the dataset (see above); the shuffle uses
            `shuffle_seed` (default: `seed`).
        in_memory_max_gb: the largest decoded split, in GB, that is decoded up front; 0 makes every split lazy.
        num_workers: processes that decode an in-memory split up front (0: this process).
        skip_bad_images: skip unreadable images (and log each) instead of raising an error naming the split and row.
        progress: show a progress bar while decoding up front; default: for splits of at least 10,000 images.
        cache, cache_dir: keep the decoded arrays of in-memory splits of datasets stored on disk as memory-mapped
            `.npy` files in `cache_dir` (default: `<HF_DATASETS_CACHE>/hf_autoencoders_decoded`); `cache=False`
            decodes into this process's memory instead.
        load_kwargs: extra arguments for `datasets.load_dataset` (e.g. {"revision": ...}).

    Raises:
        DatasetNotFoundError (a FileNotFoundError): the dataset cannot be found.
        UnreadableImageError (a ValueError): an image cannot be decoded (the message names the split and row).
        ValueError: no image column, an unknown column or split, or a bad argument.
    """
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}.")
    if num_channels not in (None, 1, 3):
        raise ValueError(f"num_channels must be 1 (grayscale), 3 (RGB) or None (native), got {num_channels!r}.")
    limits = max_samples if isinstance(max_samples, Mapping) else {"": max_samples}
    for value in limits.values():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"max_samples must be a positive int or None, got {value!r}.")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}.")
    if in_memory_max_gb < 0:
        raise ValueError(f"in_memory_max_gb must be >= 0, got {in_memory_max_gb!r}.")
    if shuffle_buffer_size < 1:
        raise ValueError(f"shuffle_buffer_size must be a positive int, got {shuffle_buffer_size!r}.")

    def limit(split_name: str) -> int | None:
        return limits.get(split_name) if isinstance(max_samples, Mapping) else max_samples

    if name_or_path is None or (isinstance(name_or_path, str) and name_or_path == DEFAULT_DATASET):
        return _load_digits(split, image_size or 28, num_channels or 1, limit, resample)
    iterable = isinstance(name_or_path, (datasets.IterableDataset, datasets.IterableDatasetDict))
    name, tables = open_dataset(name_or_path, config_name, streaming or iterable, load_kwargs or {})
    options = dict(split=split, image_size=image_size, num_channels=num_channels, image_column=image_column,
                   label_column=label_column, limit=limit, test_fraction=test_fraction, seed=seed, resample=resample,
                   skip_bad_images=skip_bad_images)
    if streaming or iterable:
        return _load_streams(name, tables, shuffle_seed=seed if shuffle_seed is None else shuffle_seed,
                             shuffle_buffer_size=shuffle_buffer_size, **options)
    cache_dir = None if not cache else (cache_dir or default_cache_dir())
    return _load_tables(name, tables, in_memory_max_gb=in_memory_max_gb, num_workers=num_workers, progress=progress,
                        cache_dir=cache_dir, **options)


def _load_tables(name, tables, *, split, image_size, num_channels, image_column, label_column, limit, test_fraction,
                 seed, resample, skip_bad_images, in_memory_max_gb, num_workers, progress, cache_dir) -> ImageData:
    chosen, source_splits = choose_splits(tables, split, test_fraction, seed, name)
    features = next(iter(chosen.values()))[0].features
    image_column = find_image_column(features, image_column, name)
    label_column = find_label_column(features, label_column, name)

    splits, decoded, num_skipped = {}, {}, {}
    for split_name, (table, rows) in chosen.items():
        rows = rows[: limit(split_name)]
        if len(rows) == 0:
            raise ValueError(f"Split {split_name!r} of {name} is empty.")
        if image_size is None or num_channels is None:  # the first image fixes the default shape
            first = table.select_columns([image_column]).with_format("arrow")[[int(rows[0])]][image_column]
            probe = Decoder(1, 1, resample, name, split_name)
            native_size, native_channels = native_shape(image_items(first)[0], probe, f"row {rows[0]}")
            image_size, num_channels = image_size or native_size, num_channels or native_channels
        decoder = Decoder(image_size, num_channels, int(resample), name, split_name)
        contiguous = rows[-1] - rows[0] + 1 == len(rows)
        lazy = LazyImageDataset(table, range(int(rows[0]), int(rows[-1]) + 1) if contiguous else rows, image_column,
                                label_column, decoder, skip_bad_images)
        shape = (len(rows), num_channels, image_size, image_size)
        if np.prod(shape) > in_memory_max_gb * 1e9:
            splits[split_name] = lazy
            continue
        key = (table._fingerprint, hashlib.sha1(np.asarray(rows, np.int64).tobytes()).hexdigest())
        if key not in decoded:  # a split used twice (train = test) is decoded once
            show = progress if progress is not None else len(rows) >= PROGRESS_MIN_IMAGES
            what = dict(fingerprint=key[0], rows=key[1], column=image_column, shape=shape, resample=int(resample),
                        skip_bad_images=skip_bad_images)
            decoded[key] = _decode_up_front(lazy, shape, cache_dir if table.cache_files else None, what, num_workers,
                                            show)
        images, skipped = decoded[key]
        labels = lazy.labels
        if skipped:
            labels = None if labels is None else labels[torch.from_numpy(np.setdiff1d(np.arange(len(rows)), skipped))]
            num_skipped[split_name] = len(skipped)
        splits[split_name] = ImageTensorDataset(images, labels)

    num_labels, names = label_names(features, label_column)
    if label_column is not None and num_labels is None:
        num_labels = int(max(int(s.labels.max()) for s in splits.values())) + 1
    return ImageData(name=name, splits=splits, image_size=image_size, num_channels=num_channels,
                     num_labels=num_labels, label_names=names, image_column=image_column, label_column=label_column,
                     source_splits=source_splits, num_skipped=num_skipped)


def _decode_up_front(lazy: LazyImageDataset, shape, cache_dir, what: dict, num_workers: int, progress: bool):
    """(uint8 tensor (N', C, H, W), skipped indices): from the decoded cache (mapped; built first if needed) or,
    without a cache, decoded into this process's memory."""

    def decode(write) -> list[int]:
        return decode_all(lazy, write, num_workers, progress)

    if cache_dir is not None:
        entry = DecodedCache(cache_dir, what)
        try:
            images, skipped = entry.load() or entry.build(shape, decode, lazy.decoder.name)
        except OSError as err:  # a read-only or full disk: decode into memory instead
            logger.warning("Could not use the decoded-image cache in %s (%s); decoding into memory.", cache_dir, err)
        else:
            return torch.from_numpy(images), skipped
    images, filled = np.empty(shape, dtype=np.uint8), 0

    def write(arrays: np.ndarray) -> None:
        nonlocal filled
        images[filled:filled + len(arrays)] = arrays
        filled += len(arrays)

    skipped = decode(write)
    return torch.from_numpy(images[:filled]), skipped


def _load_streams(name, streams, *, split, image_size, num_channels, image_column, label_column, limit,
                  test_fraction, seed, resample, skip_bad_images, shuffle_seed, shuffle_buffer_size) -> ImageData:
    features = next(iter(streams.values())).features
    if features is None:  # a stream that does not announce its columns: read them off the first row
        features = datasets.Features({k: _feature_of(v) for k, v in next(iter(next(iter(streams.values())))).items()})
    image_column = find_image_column(features, image_column, name)
    label_column = find_label_column(features, label_column, name)
    streams = {s: undecoded(stream, image_column) for s, stream in streams.items()}
    chosen, source_splits = choose_stream_splits(streams, split, test_fraction, seed, name)
    if image_size is None or num_channels is None:  # the first image fixes the default shape
        first_split = next(iter(chosen))
        first = next(iter(chosen[first_split]), None)
        if first is None:
            raise ValueError(f"Split {first_split!r} of {name} is empty.")
        probe = Decoder(1, 1, resample, name, first_split)
        native_size, native_channels = native_shape(first[image_column], probe, "the first example")
        image_size, num_channels = image_size or native_size, num_channels or native_channels

    splits = {}
    for split_name, stream in chosen.items():
        if limit(split_name) is not None:
            stream = stream.take(limit(split_name))
        if split_name == "train":  # shards in a random order (anew each epoch), rows shuffled among a buffer;
            # one shard feeds the buffer at a time: no reader threads in the DataLoader workers
            stream = stream.shuffle(seed=shuffle_seed, buffer_size=shuffle_buffer_size, max_buffer_input_shards=1)
        decoder = Decoder(image_size, num_channels, int(resample), name, split_name)
        splits[split_name] = decode_stream(stream, image_column, label_column, decoder, skip_bad_images)
    num_labels, names = label_names(features, label_column)
    return ImageData(name=name, splits=splits, image_size=image_size, num_channels=num_channels,
                     num_labels=num_labels, label_names=names, image_column=image_column, label_column=label_column,
                     source_splits=source_splits)


def _feature_of(value):
    if isinstance(value, (dict, bytes, Image.Image)):
        return datasets.Image()
    return datasets.Value("int64") if isinstance(value, int) else datasets.Value("string")


def _load_digits(split, image_size: int, num_channels: int, limit, resample) -> ImageData:
    """scikit-learn's digits: 17 gray levels 0..16 scaled to 0..255, resized from 8x8; the last 297 are test."""
    digits, targets = digits_arrays()
    pixels = np.rint(digits * (255.0 / 16.0)).astype(np.uint8)
    num_train = len(pixels) - DIGITS_NUM_TEST
    ranges = {"train": slice(0, num_train), "test": slice(num_train, len(pixels))}
    if split is not None and split not in ranges:
        raise ValueError(f"{DEFAULT_DATASET} has no split {split!r}; its splits are ['test', 'train'].")
    splits = {}
    for split_name, rows in ranges.items():
        if split in (None, split_name):
            rows = np.arange(len(pixels))[rows][: limit(split_name)]
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


def as_image_split(data, split: str, image_size: int, num_channels: int, **kwargs):
    """`data` ready to train on: a name, a path or a `datasets` object holding raw images becomes its `split`
    ("train" or "test") loaded with `load_image_dataset` at this size (kwargs go to it); anything else (a torch
    dataset, or a `datasets` object that already has "pixel_values") is returned as it is."""
    if isinstance(data, DATASET_OBJECTS):
        first = next(iter(data.values())) if isinstance(data, dict) else data
        columns = first.column_names
        if columns is None:  # a stream after `map` (as `load_image_dataset` makes them) does not know its columns
            columns = list(next(iter(first.take(1)), {}))
        if "pixel_values" in columns:
            return data[split] if isinstance(data, dict) else data
    elif not isinstance(data, (str, os.PathLike)):
        return data
    return load_image_dataset(data, split=split, image_size=image_size, num_channels=num_channels, **kwargs)[split]
