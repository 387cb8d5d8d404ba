"""Image datasets at any scale, decoded exactly as the saved image processor decodes at inference.

`load_image_dataset` reads a Hub dataset (`ylecun/mnist`, `uoft-cs/cifar10`), a local folder (Hub parquet layout, an
`imagefolder` of PNG/JPEG files with class subfolders, or a `save_to_disk` folder), a `datasets` object, or the
embedded default: the scikit-learn digits (no network). Each split takes one of three paths:

- in memory, for splits whose decoded images fit under `in_memory_max_gb` (default 2 GB; MNIST train is 47 MB,
  CIFAR-10 train 150 MB): decoded once into a uint8 (N, C, H, W) array, kept in the decoded cache (`cache`) and
  memory-mapped, so the processes of a machine share one copy and a step only stacks and divides by 255;
- lazy, for larger splits: rows of the memory-mapped Arrow files, decoded per batch in the DataLoader workers;
- streamed (`streaming=True`): a `datasets.IterableDataset`, shuffled with a buffer and decoded per batch as read.

Every path decodes with `image_to_uint8`, the image processor's function, so `processor(image)` equals
`collator([dataset_item])` for the same image, whatever its mode (L, LA, RGB, RGBA, P, I;16, I, F) and size.
`ImageCollator` turns items into batches; `iterate_batches` reads batches from any common container of images.
"""

from .batches import iterate_batches, num_batches
from .cache import default_cache_dir
from .collate import ImageCollator, collate_fn
from .decoding import ImageTensorDataset, LazyImageDataset, UnreadableImageError, first_items
from .loading import (
    IN_MEMORY_MAX_GB,
    MAX_CLASSES,
    SHUFFLE_BUFFER_SIZE,
    ImageData,
    as_image_split,
    check_class_labels,
    load_image_dataset,
)
from .sources import DEFAULT_DATASET, DatasetNotFoundError

__all__ = [
    "DEFAULT_DATASET", "DatasetNotFoundError", "IN_MEMORY_MAX_GB", "ImageCollator", "ImageData", "ImageTensorDataset",
    "LazyImageDataset", "MAX_CLASSES", "SHUFFLE_BUFFER_SIZE", "UnreadableImageError", "as_image_split",
    "check_class_labels", "collate_fn",
    "default_cache_dir", "first_items", "iterate_batches", "load_image_dataset", "num_batches",
]
