"""Decoding images into uint8 tensors, three ways: all at once up front (`ImageTensorDataset`), per batch in the
DataLoader workers (`LazyImageDataset`), or per batch as a stream goes by (`decode_stream`). All three call
`Decoder`, which calls the image processor's `image_to_uint8`, so a training image and the same image given to the
saved processor at inference become the same pixels."""

import logging
from collections.abc import Callable
from dataclasses import dataclass

import datasets
import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..models.image_processing_autoencoders import image_to_uint8, to_pil_image

logger = logging.getLogger(__name__)
ONE_CHANNEL_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
DECODE_CHUNK = 256  # images per task of the up-front decode


class UnreadableImageError(ValueError):
    """An image that cannot be decoded. The message names the dataset, the split and the row, and the fix."""


@dataclass(frozen=True)
class Decoder:
    """Decodes one image (encoded bytes, a path, a `datasets` image dict, a PIL image or an array) into a uint8
    array (num_channels, image_size, image_size) with `image_to_uint8`; an unreadable one raises
    `UnreadableImageError` naming `where` it is (e.g. "row 12") in split `split` of dataset `name`."""

    image_size: int
    num_channels: int
    resample: int
    name: str
    split: str

    def __call__(self, item, where: str) -> np.ndarray:
        try:
            return image_to_uint8(item, self.image_size, self.num_channels, self.resample)
        except (ValueError, TypeError, OSError) as err:
            raise self.error(err, where) from err

    def error(self, err: Exception, where: str) -> UnreadableImageError:
        return UnreadableImageError(
            f"The image at {where} of split {self.split!r} of {self.name} {err}. Remove or replace it, or pass "
            "--skip_bad_images (skip_bad_images=True) to skip unreadable images."
        )


def native_shape(item, decoder: Decoder, where: str) -> tuple[int, int]:
    """(image_size, num_channels) of one image: its height (when it is not square) and 1 for gray modes, else 3."""
    try:
        image = to_pil_image(item)
    except (ValueError, TypeError) as err:
        raise decoder.error(err, where) from err
    return image.size[1], 1 if image.mode in ONE_CHANNEL_MODES else 3


def image_items(column) -> list:
    """The undecoded images of an Arrow column: encoded bytes or file paths (any other type is read as it is)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_struct(column.type) and {"bytes", "path"} <= {f.name for f in column.type}:
        encoded, paths = column.field("bytes").to_pylist(), column.field("path").to_pylist()
        return [b if b is not None else p for b, p in zip(encoded, paths)]
    return column.to_pylist()


def _decode_or_skip(owner, item, where: str) -> np.ndarray | None:
    """`owner.decoder(item, where)`; for an unreadable image, None when `owner.skip_bad_images` (counted in
    `owner.num_skipped` and logged), else the error."""
    try:
        return owner.decoder(item, where)
    except UnreadableImageError as err:
        if not owner.skip_bad_images:
            raise
        owner.num_skipped += 1
        logger.warning("Skipped an unreadable image (%d so far in split %r of %s, in this process): %s",
                       owner.num_skipped, owner.decoder.split, owner.decoder.name, err)
        return None


# ------------------------------------------------------------------------------------------------- in memory


class ImageTensorDataset(Dataset):
    """
    Images held as a uint8 tensor (N, C, H, W) (in memory, or memory-mapped from the decoded cache), with optional
    long labels (N,).

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


# ------------------------------------------------------------------------------------------------------- lazy


class LazyImageDataset(Dataset):
    """
    Rows of a `datasets.Dataset` (memory-mapped Arrow: nothing is decoded up front), decoded when a batch is
    fetched: the DataLoader calls `__getitems__` with a batch of indices, in its workers when
    `num_workers` > 0 (`--dataloader_num_workers`). Memory does not grow with the number of rows.

    Items are dicts like `ImageTensorDataset`'s. With `skip_bad_images`, a batch leaves out its unreadable images
    (each skip is logged); otherwise the first one raises `UnreadableImageError` naming its row.
    """

    def __init__(self, table: datasets.Dataset, rows, image_column: str, label_column: str | None, decoder: Decoder,
                 skip_bad_images: bool = False):
        columns = [image_column] + ([label_column] if label_column is not None else [])
        self.table = table.select_columns(columns).with_format("arrow")
        self.rows = rows  # row of `table` for each index: a range, or an int array for a carved split
        self.image_column, self.label_column = image_column, label_column
        self.decoder = decoder
        self.skip_bad_images = skip_bad_images
        self.num_skipped = 0

    def __len__(self) -> int:
        return len(self.rows)

    def row(self, index: int) -> int:
        return int(self.rows[index])

    def read(self, indices) -> tuple[list, list | None]:
        """The undecoded images and the labels (None without a label column) of these indices."""
        batch = self.table[[self.row(i) for i in indices]]
        labels = batch[self.label_column].to_pylist() if self.label_column is not None else None
        return image_items(batch[self.image_column]), labels

    def decode(self, indices) -> tuple[list[int], list[np.ndarray], list | None]:
        """(the indices whose image decoded, their uint8 arrays, their labels)."""
        images, labels = self.read(indices)
        kept, arrays = [], []
        for position, (index, item) in enumerate(zip(indices, images)):
            array = _decode_or_skip(self, item, f"row {self.row(index)}")
            if array is not None:
                arrays.append(array)
                kept.append(position)
        return [indices[p] for p in kept], arrays, None if labels is None else [labels[p] for p in kept]

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        _, arrays, labels = self.decode(list(indices))
        if not arrays:
            rows = [self.row(i) for i in indices]
            raise UnreadableImageError(f"Every image of a batch (rows {rows}) of split {self.decoder.split!r} of "
                                       f"{self.decoder.name} is unreadable; check the dataset.")
        items = [{"pixel_values": torch.from_numpy(array)} for array in arrays]
        if labels is not None:
            for item, label in zip(items, labels):
                item["labels"] = torch.tensor(label, dtype=torch.long)
        return items

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} rows")
        return self.__getitems__([index % len(self)])[0]

    @property
    def labels(self) -> torch.Tensor | None:
        """All labels as a long tensor (N,) (read from the Arrow column; no image is decoded)."""
        if self.label_column is None:
            return None
        rows = self.rows
        contiguous = isinstance(rows, range) and rows.step == 1
        table = self.table[rows.start:rows.stop] if contiguous else self.table[[int(r) for r in rows]]
        return torch.from_numpy(np.array(table[self.label_column].to_numpy(), dtype=np.int64))

    def __repr__(self) -> str:
        d = self.decoder
        return (f"LazyImageDataset(num_rows={len(self)}, image_shape={(d.num_channels, d.image_size, d.image_size)}, "
                f"labels={self.label_column is not None}, decoded per batch)")


class _Chunks(Dataset):
    """Chunk k of a `LazyImageDataset`: (start index, kept indices, uint8 array (n, C, H, W)), for the up-front
    decode (one DataLoader task per chunk, so its workers decode in parallel)."""

    def __init__(self, lazy: LazyImageDataset, chunk: int):
        self.lazy, self.chunk = lazy, chunk

    def __len__(self) -> int:
        return -(-len(self.lazy) // self.chunk)

    def __getitem__(self, k: int):
        start = k * self.chunk
        kept, arrays, _ = self.lazy.decode(list(range(start, min(start + self.chunk, len(self.lazy)))))
        shape = (0, self.lazy.decoder.num_channels, self.lazy.decoder.image_size, self.lazy.decoder.image_size)
        return start, kept, np.stack(arrays) if arrays else np.empty(shape, np.uint8)


def _as_is(item):
    return item


def decode_all(lazy: LazyImageDataset, write: Callable[[np.ndarray], None], num_workers: int = 0,
               progress: bool = False) -> list[int]:
    """
    Decode every image of `lazy`, in order, with `num_workers` DataLoader worker processes (0: in this process),
    handing each chunk of decoded images (uint8 (n, C, H, W)) to `write`. Skipped images (with `skip_bad_images`)
    are left out. Returns the indices that were skipped.
    """
    loader = DataLoader(_Chunks(lazy, DECODE_CHUNK), batch_size=None, collate_fn=_as_is, num_workers=num_workers,
                        prefetch_factor=4 if num_workers else None)
    skipped = []
    with tqdm(total=len(lazy), desc=f"Decoding {lazy.decoder.split}", unit="img", disable=not progress) as bar:
        for start, kept, arrays in loader:
            write(arrays)
            stop = min(start + DECODE_CHUNK, len(lazy))
            skipped += sorted(set(range(start, stop)) - set(kept))
            bar.update(stop - start)
    if len(skipped) == len(lazy):
        raise UnreadableImageError(f"No image of split {lazy.decoder.split!r} of {lazy.decoder.name} can be read.")
    if skipped:
        logger.warning("Skipped %d unreadable image(s) of split %r of %s (rows %s%s).", len(skipped),
                       lazy.decoder.split, lazy.decoder.name, [lazy.row(i) for i in skipped[:10]],
                       ", ..." if len(skipped) > 10 else "")
    return skipped


# -------------------------------------------------------------------------------------------------- streaming


class _DecodeBatch:
    """The batched `IterableDataset.map` function of a stream: undecoded rows -> {"pixel_values", ["labels"]}
    (picklable, for DataLoader workers)."""

    def __init__(self, image_column: str, label_column: str | None, decoder: Decoder, skip_bad_images: bool):
        self.image_column, self.label_column = image_column, label_column
        self.decoder, self.skip_bad_images = decoder, skip_bad_images
        self.num_skipped = 0

    def __call__(self, batch: dict, indices: list[int]) -> dict:
        pixel_values, labels = [], []
        for position, (item, index) in enumerate(zip(batch[self.image_column], indices)):
            where = f"example {index} of the stream read by this process" + (
                f" ({item['path']})" if isinstance(item, dict) and item.get("path") else "")
            array = _decode_or_skip(self, item, where)
            if array is None:
                continue
            pixel_values.append(array)
            if self.label_column is not None:
                labels.append(batch[self.label_column][position])
        return {"pixel_values": pixel_values, **({"labels": labels} if self.label_column is not None else {})}


def decode_stream(stream: datasets.IterableDataset, image_column: str, label_column: str | None, decoder: Decoder,
                  skip_bad_images: bool, batch_size: int = 64) -> datasets.IterableDataset:
    """The stream of `{"pixel_values": uint8 (C, H, W), ["labels": int]}` items, decoded `batch_size` rows at a time
    as it is read (in the DataLoader workers). The result is still a `datasets.IterableDataset`, so the Trainer
    (accelerate) splits it across processes by shards and `set_epoch` reshuffles it."""
    columns = list(stream.features) if stream.features is not None else [image_column, label_column]
    return stream.map(_DecodeBatch(image_column, label_column, decoder, skip_bad_images), batched=True,
                      batch_size=batch_size, with_indices=True, remove_columns=[c for c in columns if c])


def undecoded(stream, image_column: str):
    """`stream` with its `datasets.Image` column left encoded ({"bytes", "path"}), so that decoding happens once,
    in `Decoder` (and not at all for the rows a process or a filter skips)."""
    features = stream.features
    if features is not None and isinstance(features.get(image_column), datasets.Image):
        return stream.cast_column(image_column, datasets.Image(decode=False))
    return stream


def first_items(dataset, n: int) -> list:
    """The first `n` items of a dataset, indexable or iterable (a stream)."""
    try:
        length = len(dataset)
    except TypeError:
        items = []
        for item in dataset:
            if len(items) == n:
                break
            items.append(item)
        return items
    return [dataset[i] for i in range(min(n, length))]
