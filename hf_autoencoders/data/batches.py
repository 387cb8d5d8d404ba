"""`iterate_batches`: (pixel_values, labels) batches from any common container of images, for the evaluation loop."""

from collections.abc import Iterable, Iterator

import numpy as np
import torch


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
        try:
            return len(data)
        except TypeError:  # a stream, or a DataLoader over one
            return None
    return -(-n // batch_size)
