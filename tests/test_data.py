import ast
import io
import json
import warnings
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from hf_autoencoders.data import (
    DatasetNotFoundError,
    ImageCollator,
    ImageTensorDataset,
    LazyImageDataset,
    UnreadableImageError,
    collate_fn,
    first_items,
    iterate_batches,
    load_image_dataset,
)
from hf_autoencoders.models.image_processing_autoencoders import AutoencoderImageProcessor


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if anything calls datasets.load_dataset."""

    def fail(*args, **kwargs):
        raise AssertionError(f"datasets.load_dataset was called with {args} {kwargs}")

    monkeypatch.setattr(datasets, "load_dataset", fail)


def _imagefolder(root, sizes=(10, 12)):
    """Two classes of flat-gray images whose level encodes the class (dark=0, light=1); two sizes, RGB and L."""
    rng = np.random.default_rng(0)
    paths = []
    for label, (name, low) in enumerate([("dark", 0), ("light", 160)]):
        (root / name).mkdir(parents=True)
        for i in range(10):
            size = sizes[i % len(sizes)]
            pixels = rng.integers(low, low + 90, (size, size, 3), dtype=np.uint8)
            image = Image.fromarray(pixels) if i % 3 else Image.fromarray(pixels[..., 0])  # mixed RGB and L
            path = root / name / f"{i:02d}.png"
            image.save(path)
            paths.append((path, label))
    return paths


def _load_kwargs(tmp_path):
    return {"cache_dir": str(tmp_path / "hf_cache")}


# ----------------------------------------------------------------------------------------------- embedded default


def test_embedded_digits_default(no_network):
    data = load_image_dataset()
    assert data.name == "digits" and (data.image_size, data.num_channels) == (28, 1)
    assert len(data.train) == 1500 and len(data.test) == 297
    assert data.train.images.shape == (1500, 1, 28, 28) and data.train.images.dtype == torch.uint8
    assert data.num_labels == 10 and data.label_names == [str(d) for d in range(10)]
    assert data.train.labels.dtype == torch.long and set(data.train.labels.tolist()) == set(range(10))
    assert data.train.labels[:10].tolist() == list(range(10))  # load_digits' first ten targets
    assert data.train.images.max() == 255 and data.train.images.min() == 0

    batch = collate_fn([data.train[i] for i in range(16)])
    assert list(batch) == ["pixel_values"]
    assert batch["pixel_values"].shape == (16, 1, 28, 28) and batch["pixel_values"].dtype == torch.float32
    assert 0.0 <= batch["pixel_values"].min() and batch["pixel_values"].max() <= 1.0


def test_embedded_digits_options(no_network):
    data = load_image_dataset("digits", split="test", image_size=16, num_channels=3, max_samples=5)
    assert list(data.splits) == ["test"] and data.test.images.shape == (5, 3, 16, 16)
    assert torch.equal(data.test.images[:, 0], data.test.images[:, 1])  # gray replicated into RGB
    with pytest.raises(KeyError, match="no split 'train' loaded"):
        data.train
    with pytest.raises(ValueError, match="no split 'validation'"):
        load_image_dataset(split="validation")
    with pytest.raises(ValueError, match="num_channels"):
        load_image_dataset(num_channels=2)
    with pytest.raises(ValueError, match="max_samples"):
        load_image_dataset(max_samples=0)


# ------------------------------------------------------------------------------------------------------ real data


def test_mnist_folder(shared_data, tmp_path):
    data = load_image_dataset(shared_data / "mnist", max_samples=64, cache_dir=tmp_path)
    assert (data.image_column, data.label_column) == ("image", "label")
    assert (data.image_size, data.num_channels, data.num_labels) == (28, 1, 10)
    assert data.train.images.shape == (64, 1, 28, 28) and len(data.test) == 64
    assert data.train.labels[0].item() == 5  # MNIST's first training digit
    assert data.source_splits == {"train": "train", "test": "test"}

    # the second load reads the decoded cache and gives identical tensors
    assert len(list(tmp_path.glob("*.npy"))) == 2
    again = load_image_dataset(shared_data / "mnist", max_samples=64, cache_dir=tmp_path)
    assert torch.equal(again.train.images, data.train.images)
    uncached = load_image_dataset(shared_data / "mnist", split="train", max_samples=64, cache=False)
    assert torch.equal(uncached.train.images, data.train.images)


def test_cifar10_img_column_detected_by_type(shared_data):
    data = load_image_dataset(shared_data / "cifar10", max_samples=8, cache=False)
    assert data.image_column == "img" and data.label_column == "label"
    assert (data.image_size, data.num_channels) == (32, 3) and data.train.images.shape == (8, 3, 32, 32)
    assert data.test.labels[:4].tolist() == [3, 8, 8, 0]
    assert data.label_names[0] == "airplane" and data.label_names[-1] == "truck"

    gray = load_image_dataset(
        shared_data / "cifar10", split="test", image_size=16, num_channels=1, max_samples=8, cache=False
    )
    assert gray.test.images.shape == (8, 1, 16, 16)
    expected = AutoencoderImageProcessor(image_size=16, num_channels=1).to_uint8(list(data.test.images))
    assert torch.equal(gray.test.images, expected)


def test_kmnist_only_test_split(shared_data):
    with pytest.warns(UserWarning, match="only a 'test' split"):
        data = load_image_dataset(shared_data / "kmnist", max_samples=16, cache=False)
    assert data.train.images is data.test.images  # decoded once
    assert data.source_splits == {"train": "test", "test": "test"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # evaluating on the test split alone needs no warning
        assert len(load_image_dataset(shared_data / "kmnist", split="test", max_samples=4, cache=False).test) == 4


# ---------------------------------------------------------------------------------------------------- imagefolder


def test_imagefolder_labels_carved_split_and_processor_match(tmp_path):
    paths = _imagefolder(tmp_path / "images")
    kwargs = dict(image_size=8, num_channels=3, cache_dir=tmp_path / "decoded", load_kwargs=_load_kwargs(tmp_path))
    data = load_image_dataset(tmp_path / "images", **kwargs)
    assert data.label_names == ["dark", "light"] and data.num_labels == 2
    assert (len(data.train), len(data.test)) == (18, 2)  # 10% carved from the only split
    assert data.source_splits["test"].startswith("train (10%")
    for split in data.splits.values():  # the gray level encodes the class
        assert torch.equal(split.images.float().mean((1, 2, 3)) > 127, split.labels.bool())

    again = load_image_dataset(tmp_path / "images", **kwargs)  # deterministic split, now from the decoded cache
    assert torch.equal(again.test.images, data.test.images) and torch.equal(again.test.labels, data.test.labels)
    all_images = torch.cat([data.train.images, data.test.images])
    assert len(torch.unique(all_images.flatten(1), dim=0)) == 20  # a partition: no image in both splits

    # The processor, given the original files, reproduces the collated dataset exactly (mode conversion + resize).
    processor = data.image_processor()
    from_files = processor([str(path) for path, _ in paths]).pixel_values
    collated = ImageCollator()([{"pixel_values": image} for image in all_images])["pixel_values"]
    assert sorted(from_files.flatten(1).tolist()) == sorted(collated.flatten(1).tolist())  # same images, any order


def test_imagefolder_native_shape_and_corrupt_image(tmp_path):
    _imagefolder(tmp_path / "images", sizes=(12,))
    data = load_image_dataset(tmp_path / "images", cache=False, load_kwargs=_load_kwargs(tmp_path))
    assert (data.image_size, data.num_channels) == (12, 1)  # the first image (dark/00.png) is L, 12x12

    (tmp_path / "images" / "light" / "05.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=r"row \d+ of split 'train'.*cannot be read.*light/05\.png"):
        load_image_dataset(tmp_path / "images", cache=False, load_kwargs=_load_kwargs(tmp_path))


# ---------------------------------------------------------------------------------------------- errors and mocks


def test_missing_dataset_clear_error(monkeypatch, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="without data files"):
        load_image_dataset(tmp_path / "empty", load_kwargs=_load_kwargs(tmp_path))

    def offline(name, **kwargs):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DatasetNotFoundError, match="neither a local folder nor reachable") as info:
        load_image_dataset("no-such-user/no-such-dataset")
    assert "ylecun/mnist" in str(info.value) and "omit it" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(DatasetNotFoundError, match="neither a local folder"):
        load_image_dataset(tmp_path / "does" / "not" / "exist")


def test_hub_id_is_loaded_and_columns_found_by_type(monkeypatch):
    features = datasets.Features(
        {"id": datasets.Value("int64"), "photo": datasets.Image(), "fine": datasets.ClassLabel(names=["a", "b"])}
    )
    rng = np.random.default_rng(0)
    rows = {
        "id": list(range(20)),
        "photo": [Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)) for _ in range(20)],
        "fine": [i % 2 for i in range(20)],
    }
    calls = []

    def fake_load_dataset(name, **kwargs):
        calls.append(name)
        return datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=features)})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = load_image_dataset("uoft-cs/cifar10")
    assert calls == ["uoft-cs/cifar10"]
    assert (data.image_column, data.label_column, data.label_names) == ("photo", "fine", ["a", "b"])
    assert (data.image_size, data.num_channels, len(data.train), len(data.test)) == (6, 3, 18, 2)
    held_out = load_image_dataset("uoft-cs/cifar10", split="test")  # the carved test split, as in training
    assert list(held_out.splits) == ["test"] and torch.equal(held_out.test.images, data.test.images)
    overridden = load_image_dataset("uoft-cs/cifar10", label_column="id", max_samples=3)
    assert overridden.train.labels.tolist() == [0, 1, 2] and overridden.label_names is None


def test_config_name_and_streaming_reach_load_dataset(monkeypatch):
    calls = []

    def fake_load_dataset(path, **kwargs):
        calls.append(kwargs)
        if "name" not in kwargs:
            raise ValueError("Config name is missing. Please pick one among the available configs: ['a', 'b']")
        rows = {"image": [Image.fromarray(np.zeros((4, 4), np.uint8))] * 4, "label": [0, 1, 0, 1]}
        table = datasets.Dataset.from_dict(rows, features=datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(names=["x", "y"])}))
        return datasets.DatasetDict({"train": table, "test": table})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    with pytest.raises(ValueError, match=r"available configs: \['a', 'b'\].*--dataset_config_name"):
        load_image_dataset("someone/images")
    assert len(load_image_dataset("someone/images", config_name="a").train) == 4
    assert calls[-1] == {"name": "a", "streaming": False}
    streamed = load_image_dataset("someone/images", config_name="b", streaming=True)
    assert calls[-1] == {"name": "b", "streaming": True}
    assert isinstance(streamed.train, datasets.IterableDataset) and len(list(streamed.test)) == 4


def test_dataset_without_image_column(tmp_path):
    folder = tmp_path / "tabular" / "data"
    folder.mkdir(parents=True)
    table = pa.table({"pixels": [[0] * 4, [255] * 4], "label": [0, 1]})
    pq.write_table(table, folder / "train-00000-of-00001.parquet")
    with pytest.raises(ValueError, match="no image column") as info:
        load_image_dataset(tmp_path / "tabular", load_kwargs=_load_kwargs(tmp_path))
    message = str(info.value)
    assert "pixels: List(Value('int64'))" in message and "label: Value('int64')" in message
    assert "image_column" in message
    with pytest.raises(ValueError, match="image_column='picture' is not a column"):
        load_image_dataset(tmp_path / "tabular", image_column="picture", load_kwargs=_load_kwargs(tmp_path))


# ---------------------------------------------------------------------------------------------------- collator


def test_collator_labels_and_binarization():
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).reshape(2, 1, 4, 4) * 8
    dataset = ImageTensorDataset(images, torch.tensor([3, 7]))
    items = [dataset[0], dataset[1]]
    assert set(ImageCollator()(items)) == {"pixel_values"}
    batch = ImageCollator(return_labels=True)(items)
    assert batch["labels"].tolist() == [3, 7] and torch.equal(batch["pixel_values"], images.float() / 255)
    binary = ImageCollator(binarize=True)(items)["pixel_values"]
    assert set(binary.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(binary, (images > 127).float())
    with pytest.raises(ValueError, match="no 'labels'"):
        ImageCollator(return_labels=True)([{"pixel_values": images[0]}])


def test_stochastic_binarization_draws_bernoulli_pixels():
    """Dynamic binarization: each batch draws x' ~ Bernoulli(x) afresh, so E[x'] = x (checked on 4,000 draws)."""
    intensities = torch.tensor([0, 64, 128, 191, 255], dtype=torch.uint8).view(1, 1, 1, 5)
    collator = ImageCollator(binarize=True, stochastic_binarization=True)
    torch.manual_seed(0)
    draws = torch.cat([collator([intensities[0]] * 400)["pixel_values"] for _ in range(10)])
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    frequency = draws.mean(0).flatten()
    assert torch.allclose(frequency, intensities.flatten().float() / 255, atol=0.03)
    assert frequency[0] == 0 and frequency[-1] == 1  # black stays black, white stays white
    first, second = (collator([intensities[0]] * 64)["pixel_values"] for _ in range(2))
    assert not torch.equal(first, second)  # a fresh draw per batch


# ------------------------------------------------------------------------------------------------------ processor


def test_processor_save_load_round_trip(tmp_path):
    processor = AutoencoderImageProcessor(image_size=32, num_channels=3, do_binarize=True, binarize_threshold=0.25)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_size"] == 32 and saved["num_channels"] == 3 and saved["binarize_threshold"] == 0.25
    loaded = AutoencoderImageProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict()
    assert AutoencoderImageProcessor.from_pretrained(tmp_path, image_size=16).image_size == 16
    assert processor.model_input_names == ["pixel_values"]


def test_processor_travels_as_remote_code(tmp_path, monkeypatch):
    from transformers import AutoImageProcessor

    monkeypatch.setattr(AutoencoderImageProcessor, "_auto_class", "AutoImageProcessor")
    AutoencoderImageProcessor(image_size=12, num_channels=3).save_pretrained(tmp_path)
    code = (tmp_path / "image_processing_autoencoders.py").read_text()  # the code travels with the checkpoint
    imported = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level:  # a sibling: it must travel too
            assert (tmp_path / f"{node.module}.py").is_file(), node.module
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported <= {"io", "os", "numpy", "PIL", "torch", "transformers"}, imported
    loaded = AutoImageProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(loaded).__name__ == "AutoencoderImageProcessor"
    assert loaded(np.zeros((5, 5), dtype=np.uint8)).pixel_values.shape == (1, 3, 12, 12)


def test_processor_inputs_agree_with_collator(no_network):
    data = load_image_dataset(split="test", max_samples=6)
    processor = data.image_processor()
    images = data.test.images  # uint8 (6, 1, 28, 28)
    expected = collate_fn([data.test[i] for i in range(len(images))])["pixel_values"]
    pil = [Image.fromarray(image[0].numpy()) for image in images]
    numpy_hw = [image[0].numpy() for image in images]
    numpy_hwc = [image.permute(1, 2, 0).numpy() for image in images]
    for inputs in (pil, numpy_hw, numpy_hwc, list(images), images):
        pixel_values = processor(inputs, return_tensors="pt").pixel_values
        assert pixel_values.dtype == torch.float32 and torch.equal(pixel_values, expected)
    assert torch.equal(processor(pil[0]).pixel_values, expected[:1])
    assert isinstance(processor(pil, return_tensors="np").pixel_values, np.ndarray)

    # RGB: a PIL image, an HWC array and a CHW tensor of the same pixels agree; floats in [0, 1] are quantized.
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    processor = AutoencoderImageProcessor(image_size=32, num_channels=3)
    outs = [processor(x).pixel_values for x in (Image.fromarray(rgb), rgb, torch.from_numpy(rgb).permute(2, 0, 1))]
    assert all(torch.equal(out, outs[0]) for out in outs)
    assert torch.equal(outs[0][0], torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    assert torch.equal(processor(outs[0][0]).pixel_values, outs[0])  # idempotent on its own output

    # postprocess inverts preprocess exactly for 8-bit images
    (back,) = processor.postprocess(outs[0])
    assert back.mode == "RGB" and np.array_equal(np.asarray(back), rgb)


def test_processor_binarization_matches_collator(no_network):
    data = load_image_dataset(split="train", max_samples=8)
    processor = data.image_processor(do_binarize=True)
    pixel_values = processor(list(data.train.images)).pixel_values
    assert set(pixel_values.unique().tolist()) == {0.0, 1.0}
    collated = ImageCollator(binarize=True)([data.train[i] for i in range(8)])["pixel_values"]
    assert torch.equal(pixel_values, collated)
    plain = processor(list(data.train.images), do_binarize=False).pixel_values
    assert torch.equal(plain, collate_fn([data.train[i] for i in range(8)])["pixel_values"])


def test_processor_errors_name_the_item():
    processor = AutoencoderImageProcessor()
    good = np.zeros((28, 28), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"images\[1\] has type int"):
        processor([good, 3])
    with pytest.raises(ValueError, match=r"images\[2\] cannot be read as an image"):
        processor([good, good, b"garbage"])
    with pytest.raises(ValueError, match=r"images\[0\] is a float array with values in \[0, 2\]"):
        processor([np.linspace(0, 2, 16).reshape(4, 4)])
    with pytest.raises(ValueError, match=r"images\[0\] has shape \(5, 5, 5\)"):
        processor([np.zeros((5, 5, 5), dtype=np.uint8)])
    with pytest.raises(ValueError, match="num_channels must be 1"):
        AutoencoderImageProcessor(num_channels=2)
    with pytest.raises(ValueError, match="return_tensors"):
        processor(good, return_tensors="tf")


# ------------------------------------------------------------------------------------------- batches of anything


def test_iterate_batches_accepts_common_containers():
    images, labels = torch.rand(10, 1, 4, 4, generator=torch.Generator().manual_seed(0)), torch.arange(10)

    def gather(data, batch_size=4):
        batches = list(iterate_batches(data, batch_size))
        pixel_values = torch.cat([p for p, _ in batches])
        return pixel_values, None if batches[0][1] is None else torch.cat([lab for _, lab in batches])

    assert torch.equal(gather(images)[0], images) and gather(images)[1] is None
    assert torch.equal(gather([images[:4], images[4:]])[0], images)  # a list of unlabelled batches
    for data in (
        (images, labels),
        {"pixel_values": images, "labels": labels},
        [{"pixel_values": img, "label": lab} for img, lab in zip(images, labels)],
        torch.utils.data.TensorDataset(images, labels),
        torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=3),
        ({"pixel_values": img, "labels": lab} for img, lab in zip(images, labels)),  # a stream of examples
        [(images[:4], labels[:4]), (images[4:], labels[4:])],  # a list of batches
    ):
        pixel_values, got_labels = gather(data)
        assert torch.equal(pixel_values, images) and torch.equal(got_labels, labels)
    with pytest.raises(ValueError, match="pixel_values"):
        list(iterate_batches({"image": images}))


def test_iterate_batches_accepts_hf_dataset():
    datasets = pytest.importorskip("datasets")
    images, labels = torch.rand(10, 1, 4, 4, generator=torch.Generator().manual_seed(0)), torch.arange(10)
    ds = datasets.Dataset.from_dict({"pixel_values": images.numpy(), "label": labels.numpy()})
    transformed = ds.with_transform(  # a transform returning lists of tensors, as image processors do
        lambda batch: {"pixel_values": [torch.tensor(p) for p in batch["pixel_values"]], "label": batch["label"]}
    )
    for data in (ds.with_format("torch"), transformed):
        batches = list(iterate_batches(data, 4))
        assert [len(p) for p, _ in batches] == [4, 4, 2]
        assert torch.allclose(torch.cat([p for p, _ in batches]), images)
        assert torch.equal(torch.cat([lab for _, lab in batches]), labels)


# ------------------------------------------------------------------------------------------ data at any scale


def _parquet_folder(root, num_train=48, num_test=8, size=8, files=1, row_group=6, bad_rows=(), mode="RGB"):
    """A Hub-layout parquet dataset (data/{split}-0000k-of-0000n.parquet) of distinct random images whose label is
    their row number (`ClassLabel`), so a test can tell which rows a process saw; `bad_rows` of train hold bytes
    that are not an image."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=num_train)})
    rng = np.random.default_rng(0)
    for split, count in (("train", num_train), ("test", num_test)):
        if not count:
            continue
        images = []
        for row in range(count):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            image = Image.fromarray(pixels).convert(mode)
            encoded = io.BytesIO()
            image.save(encoded, format="PNG")
            images.append({"bytes": b"not an image" if split == "train" and row in bad_rows else encoded.getvalue(),
                           "path": None})
        per_file = -(-count // files)
        for k in range(files):
            rows = range(k * per_file, min(count, (k + 1) * per_file))
            table = datasets.Dataset.from_dict(
                {"image": [images[r] for r in rows], "label": [r % num_train for r in rows]}, features=features)
            table.to_parquet(str(root / "data" / f"{split}-{k:05d}-of-{files:05d}.parquet"), batch_size=row_group)
    return root


@pytest.fixture
def count_decodes(monkeypatch):
    """A list that gets one entry per image decoded by the data module (in this process)."""
    import hf_autoencoders.data.decoding as decoding

    calls, decode = [], decoding.image_to_uint8

    def counted(*args, **kwargs):
        calls.append(1)
        return decode(*args, **kwargs)

    monkeypatch.setattr(decoding, "image_to_uint8", counted)
    return calls


def test_max_samples_decode_only_the_images_used(tmp_path, count_decodes):
    folder = _parquet_folder(tmp_path / "pq", num_train=40, num_test=10)
    kwargs = dict(cache_dir=tmp_path / "decoded", load_kwargs=_load_kwargs(tmp_path))
    data = load_image_dataset(folder, max_samples={"train": 7, "test": 3}, **kwargs)
    assert (len(data.train), len(data.test)) == (7, 3) and len(count_decodes) == 10
    assert data.train.labels.tolist() == list(range(7))

    count_decodes.clear()
    lazy = load_image_dataset(folder, max_samples=5, in_memory_max_gb=0, **kwargs)
    assert isinstance(lazy.train, LazyImageDataset) and len(lazy.train) == 5 and not count_decodes
    assert len(lazy.train.__getitems__([0, 3, 4])) == 3 and len(count_decodes) == 3

    count_decodes.clear()
    streamed = load_image_dataset(folder, max_samples={"train": 6}, streaming=True, load_kwargs=_load_kwargs(tmp_path))
    assert sorted(int(item["labels"]) for item in streamed.train) == list(range(6)) and len(count_decodes) == 6


def test_max_train_samples_decodes_that_many_images_in_a_run(tmp_path, count_decodes):
    from hf_autoencoders.training import parse_args, run_training

    folder = _parquet_folder(tmp_path / "pq", num_train=64, num_test=16, size=8)
    run_training(*parse_args([
        "--dataset_name", str(folder), "--output_dir", str(tmp_path / "run"), "--do_train", "--max_steps", "1",
        "--max_train_samples", "12", "--max_eval_samples", "5", "--hidden_size", "8", "--disable_tqdm", "true",
        "--per_device_train_batch_size", "4", "--decoded_cache_dir", str(tmp_path / "decoded"), "--report_to", "none",
    ]))
    assert len(count_decodes) == 12 + 5


def _maps(path) -> bool:
    """Is `path` memory-mapped into this process?"""
    return str(path) in Path("/proc/self/maps").read_text()


def test_decoded_cache_is_mapped_verified_and_rebuilt(tmp_path, count_decodes, caplog):
    folder = _parquet_folder(tmp_path / "pq", num_train=30, num_test=6)
    kwargs = dict(split="train", cache_dir=tmp_path / "decoded", load_kwargs=_load_kwargs(tmp_path))
    reference = load_image_dataset(folder, **kwargs).train.images.clone()
    (entry,) = (tmp_path / "decoded").glob("*.npy")
    manifest = json.loads(entry.with_suffix(".json").read_text())
    assert manifest["shape"] == [30, 3, 8, 8] and len(manifest["sha256"]) == 64 and len(count_decodes) == 30
    assert sorted(p.name for p in entry.parent.iterdir() if not p.name.endswith(".lock")) == sorted(
        [entry.name, entry.with_suffix(".json").name])  # nothing half-written is left behind

    count_decodes.clear()
    again = load_image_dataset(folder, **kwargs)  # a cache hit: mapped, not decoded, not read into memory
    assert not count_decodes and torch.equal(again.train.images, reference)
    if Path("/proc/self/maps").exists():
        assert _maps(entry)

    size = entry.stat().st_size
    damages = {
        "truncated": lambda: entry.write_bytes(entry.read_bytes()[:-100]),
        "corrupted": lambda: entry.write_bytes(entry.read_bytes()[:-1] + bytes([entry.read_bytes()[-1] ^ 1])),
        "stale": lambda: entry.with_suffix(".json").write_text(json.dumps({**manifest, "version": 1})),
        "missing its manifest": lambda: entry.with_suffix(".json").unlink(),
    }
    for problem, damage in damages.items():
        del again
        damage()
        count_decodes.clear()
        caplog.clear()
        with caplog.at_level("WARNING"):
            again = load_image_dataset(folder, **kwargs)
        assert problem in caplog.text and "rebuilt" in caplog.text, problem
        assert len(count_decodes) == 30 and torch.equal(again.train.images, reference), problem  # never read
        assert entry.stat().st_size == size


def test_dataset_objects_and_a_streamed_folder_train(tmp_path):
    from hf_autoencoders.models import VQVAEConfig, VQVAEModel
    from hf_autoencoders.training import fit

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (10, 10), dtype=np.uint8)) for _ in range(24)]
    table = datasets.Dataset.from_dict({"image": images, "label": [i % 2 for i in range(24)]}, features=features)
    for source in (table, datasets.DatasetDict({"train": table, "test": table.select(range(4))}),
                   table.to_iterable_dataset(num_shards=3)):
        data = load_image_dataset(source, image_size=8, num_channels=1)
        item = first_items(data.train, 1)[0]
        assert tuple(torch.as_tensor(item["pixel_values"]).shape) == (1, 8, 8) and data.label_names == ["a", "b"]
    assert isinstance(load_image_dataset(table.to_iterable_dataset()).train, datasets.IterableDataset)

    folder = _parquet_folder(tmp_path / "pq", num_train=32, num_test=8, size=8, files=2)
    stream = load_image_dataset(folder, streaming=True, load_kwargs=_load_kwargs(tmp_path))
    assert isinstance(stream.train, datasets.IterableDataset) and (stream.image_size, stream.num_channels) == (8, 3)
    for train, eval_set, channels in ((table, None, 1), (stream.train, stream.test, 3), (str(folder), None, 3)):
        model = VQVAEModel(VQVAEConfig(image_size=8, num_channels=channels, hidden_size=8, num_embeddings=8,
                                       embedding_dim=4, num_residual_blocks=1))
        before = [p.detach().clone() for p in model.parameters()]
        trainer = fit(model, train, eval_set, output_dir=tmp_path / "fit", max_steps=3,
                      per_device_train_batch_size=8)
        assert trainer.state.global_step == 3
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def _mixed_folder(root):
    """An imagefolder mixing RGBA, P, L, LA and 16-bit images of different sizes."""
    rng = np.random.default_rng(1)
    (root / "things").mkdir(parents=True)
    rgb = lambda size: rng.integers(0, 256, (size, size + 3, 3), dtype=np.uint8)  # noqa: E731
    images = {
        "rgba.png": Image.fromarray(np.dstack([rgb(20), rng.integers(0, 256, (20, 23), dtype=np.uint8)])),
        "p.png": Image.fromarray(rgb(9)).convert("P"),
        "l.png": Image.fromarray(rgb(31)[..., 0]),
        "la.png": Image.fromarray(rgb(7)[..., :2], "LA"),
        "sixteen.png": Image.fromarray(rng.integers(0, 65536, (12, 12), dtype=np.uint16)),
        "rgb.jpg": Image.fromarray(rgb(16)),
    }
    for name, image in images.items():
        image.save(root / "things" / name)
    return sorted((root / "things").iterdir())


def test_mixed_modes_and_sizes_train_at_the_configured_size(tmp_path):
    from hf_autoencoders.training import parse_args, run_training

    paths = _mixed_folder(tmp_path / "mixed")
    modes = {Image.open(p).mode for p in paths}
    assert {"RGBA", "P", "L", "LA", "I;16", "RGB"} <= modes
    data = load_image_dataset(tmp_path / "mixed", image_size=16, num_channels=3, split="train", test_fraction=0.2,
                              cache_dir=tmp_path / "decoded", load_kwargs=_load_kwargs(tmp_path))
    assert data.train.images.shape[1:] == (3, 16, 16)
    everything = load_image_dataset(tmp_path / "mixed", image_size=16, num_channels=3, split="train",
                                    test_fraction=0.2, in_memory_max_gb=0, load_kwargs=_load_kwargs(tmp_path))
    lazy = torch.stack([everything.train[i]["pixel_values"] for i in range(len(everything.train))])
    assert torch.equal(lazy, data.train.images)  # the lazy path decodes exactly as the in-memory one
    from_files = {tuple(x.flatten().tolist()) for x in data.image_processor().to_uint8([str(p) for p in paths])}
    assert {tuple(x.flatten().tolist()) for x in data.train.images} <= from_files  # as the processor decodes

    out = tmp_path / "run"
    run_training(*parse_args([
        "--dataset_name", str(tmp_path / "mixed"), "--image_size", "16", "--num_channels", "3", "--output_dir",
        str(out), "--do_train", "--max_steps", "2", "--hidden_size", "8", "--per_device_train_batch_size", "2",
        "--disable_tqdm", "true", "--decoded_cache_dir", str(tmp_path / "decoded"), "--report_to", "none",
    ]))
    saved = json.loads((out / "config.json").read_text())
    assert (saved["image_size"], saved["num_channels"]) == (16, 3)
    assert json.loads((out / "preprocessor_config.json").read_text())["image_size"] == 16


def test_sixteen_bit_float_and_nan_images_are_scaled_or_refused(tmp_path):
    processor = AutoencoderImageProcessor(image_size=2, num_channels=1)
    levels = np.array([[0, 257], [32896, 65535]], dtype=np.uint16)  # k / 257 = 0, 1, 128, 255
    expected = torch.tensor([[[[0, 1], [128, 255]]]], dtype=torch.uint8)
    png = tmp_path / "sixteen.png"
    Image.fromarray(levels).save(png)
    assert Image.open(png).mode == "I;16"
    for image in (png, Image.open(png), levels, Image.fromarray(levels.astype(np.int32))):  # I;16, uint16, "I"
        assert torch.equal(processor.to_uint8(image), expected), image
    unit = np.array([[0.0, 0.5], [0.25, 1.0]], dtype=np.float32)
    assert processor.to_uint8(Image.fromarray(unit)).tolist() == [[[[0, 128], [64, 255]]]]  # mode "F"
    assert processor.to_uint8(unit).tolist() == [[[[0, 128], [64, 255]]]]
    nan = np.full((2, 2), np.nan, dtype=np.float32)
    for image, message in ((Image.fromarray(nan), "'F' \\(float\\) image with NaN"), (nan, "float array with NaN"),
                           (Image.fromarray(unit * 255), r"values in \[0, 255\]; expected \[0, 1\]"),
                           (Image.fromarray(np.full((2, 2), -5, np.int32)), "expected 16-bit values")):
        with pytest.raises(ValueError, match=message):
            processor(image)

    # the loader decodes the same files the same way, and refuses a NaN image naming its row
    for split in ("train", "test"):
        (tmp_path / "images" / split / "c").mkdir(parents=True)
        Image.fromarray(levels).save(tmp_path / "images" / split / "c" / "a.png")
    Image.fromarray(nan).save(tmp_path / "images" / "train" / "c" / "b.tiff")
    kwargs = dict(image_size=2, num_channels=1, cache=False, load_kwargs=_load_kwargs(tmp_path))
    with pytest.raises(UnreadableImageError, match=r"row 1 of split 'train' .* NaN"):
        load_image_dataset(tmp_path / "images", **kwargs)
    data = load_image_dataset(tmp_path / "images", skip_bad_images=True, **kwargs)
    assert torch.equal(data.train.images, expected) and torch.equal(data.test.images, expected)


def test_unreadable_images_name_their_row_or_are_skipped(tmp_path, caplog):
    folder = _parquet_folder(tmp_path / "pq", num_train=20, num_test=4, bad_rows=(5,))
    kwargs = dict(split="train", cache_dir=tmp_path / "decoded", load_kwargs=_load_kwargs(tmp_path))
    with pytest.raises(UnreadableImageError, match=r"row 5 of split 'train' of .*pq cannot be read.*skip_bad_images"):
        load_image_dataset(folder, **kwargs)
    assert not list((tmp_path / "decoded").glob("*.npy"))  # nothing half-written is kept

    lazy = load_image_dataset(folder, in_memory_max_gb=0, **kwargs).train
    assert len(lazy.__getitems__([0, 1])) == 2  # good rows decode; the bad one fails when it is met
    with pytest.raises(UnreadableImageError, match=r"row 5 of split 'train'"):
        lazy.__getitems__([4, 5, 6])

    with caplog.at_level("WARNING"):
        skipped = load_image_dataset(folder, skip_bad_images=True, **kwargs)
    assert len(skipped.train) == 19 and skipped.num_skipped == {"train": 1} and "rows [5]" in caplog.text
    assert skipped.train.labels.tolist() == [r for r in range(20) if r != 5]  # labels stay with their images
    skipped_again = load_image_dataset(folder, skip_bad_images=True, **kwargs)  # from the cache, skips and all
    assert torch.equal(skipped_again.train.labels, skipped.train.labels)
    lazy = load_image_dataset(folder, in_memory_max_gb=0, skip_bad_images=True, **kwargs).train
    assert [int(x["labels"]) for x in lazy.__getitems__([4, 5, 6])] == [4, 6]
    stream = load_image_dataset(folder, streaming=True, skip_bad_images=True, **kwargs).train
    assert sorted(int(x["labels"]) for x in stream) == [r for r in range(20) if r != 5]
    with pytest.raises(UnreadableImageError, match="split 'train'.*cannot be read"):
        list(load_image_dataset(folder, streaming=True, **kwargs).train)


def test_streams_shuffle_each_epoch_and_carve_a_disjoint_test_split(tmp_path):
    folder = _parquet_folder(tmp_path / "pq", num_train=60, num_test=0, files=2, row_group=5)
    data = load_image_dataset(folder, streaming=True, shuffle_buffer_size=20, load_kwargs=_load_kwargs(tmp_path))
    train = [int(x["labels"]) for x in data.train]
    test = [int(x["labels"]) for x in data.test]
    assert sorted(train + test) == list(range(60)) and 0 < len(test) < 20  # about 10% held out by content
    assert test == sorted(test) and train != sorted(train)  # the train split is shuffled, the test split is not
    data.train.set_epoch(1)
    assert sorted(x["labels"] for x in data.train) == sorted(train)
    assert [int(x["labels"]) for x in data.train] != train  # reshuffled for the next epoch
    again = load_image_dataset(folder, streaming=True, load_kwargs=_load_kwargs(tmp_path))
    assert [int(x["labels"]) for x in again.test] == test  # the same split every time


def test_an_unreadable_image_met_during_training_keeps_the_steps_done(tmp_path):
    from hf_autoencoders.training import parse_args, run_training

    folder = _parquet_folder(tmp_path / "pq", num_train=48, num_test=8, bad_rows=(40,))
    out = tmp_path / "run"
    args = ["--dataset_name", str(folder), "--output_dir", str(out), "--do_train", "--max_steps", "12",
            "--hidden_size", "8", "--per_device_train_batch_size", "4", "--disable_tqdm", "true",
            "--in_memory_max_gb", "0", "--save_strategy", "no", "--report_to", "none"]
    with pytest.raises(UnreadableImageError, match=r"row 40 of split 'train'.*saved in .*checkpoint-(\d+)") as info:
        run_training(*parse_args(args))
    step = int(str(info.value).split("checkpoint-")[1].split(";")[0])
    assert 0 < step < 12 and (out / f"checkpoint-{step}" / "model.safetensors").is_file()
    run_training(*parse_args(args + ["--skip_bad_images", "--resume_from_checkpoint", "latest"]))
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 12


def test_an_error_from_a_dataloader_worker_reads_as_one_line():
    import sys

    from torch._utils import ExceptionWrapper

    from hf_autoencoders.training.trainer import _original_message

    try:
        raise UnreadableImageError("The image at row 3 of split 'train' of x cannot be read.")
    except UnreadableImageError:
        wrapped = ExceptionWrapper(sys.exc_info(), where="in DataLoader worker process 0")
    with pytest.raises(UnreadableImageError) as info:
        wrapped.reraise()
    assert "Traceback" in str(info.value)
    assert _original_message(info.value) == "The image at row 3 of split 'train' of x cannot be read."


def test_help_states_the_threshold_and_the_cache():
    from hf_autoencoders.data import IN_MEMORY_MAX_GB, SHUFFLE_BUFFER_SIZE, default_cache_dir
    from hf_autoencoders.training.arguments import DataArguments

    assert DataArguments().in_memory_max_gb == IN_MEMORY_MAX_GB
    assert DataArguments().shuffle_buffer_size == SHUFFLE_BUFFER_SIZE
    assert default_cache_dir().name == "hf_autoencoders_decoded"
    fields = DataArguments.__dataclass_fields__
    assert "N x C x H x W" in fields["in_memory_max_gb"].metadata["help"]
    assert "hf_autoencoders_decoded" in fields["decoded_cache_dir"].metadata["help"]
    assert "--no_decoded_cache" in fields["decoded_cache"].metadata["help"]
    with pytest.raises(ValueError, match="in_memory_max_gb"):
        DataArguments(in_memory_max_gb=-1)


TWO_PROCESS_SCRIPT = """
import json, os, sys
import torch
from pathlib import Path

import hf_autoencoders.data.decoding as decoding
import hf_autoencoders.training.run as run
from hf_autoencoders.data import ImageCollator, load_image_dataset
from hf_autoencoders.models import VQVAEConfig, VQVAEModel
from hf_autoencoders.training import fit, parse_args, run_training

folder, out, cache = sys.argv[1:4]
decodes, decode = [], decoding.image_to_uint8
decoding.image_to_uint8 = lambda *args, **kwargs: decodes.append(1) or decode(*args, **kwargs)
mapped, load = [], run.load_image_dataset


def load_and_record_maps(*args, **kwargs):
    data = load(*args, **kwargs)
    for line in Path("/proc/self/maps").read_text().splitlines():  # address perms offset device inode path
        if cache in line and line.split()[-1] not in [m[0] for m in mapped]:
            mapped.append((line.split()[-1], line.split()[4]))
    return data


run.load_image_dataset = load_and_record_maps
run_training(*parse_args(["--dataset_name", folder, "--output_dir", out + "/run", "--do_train", "--max_steps", "2",
                          "--hidden_size", "8", "--per_device_train_batch_size", "4", "--disable_tqdm", "true",
                          "--decoded_cache_dir", cache, "--ddp_backend", "gloo", "--report_to", "none"]))
result = {"rank": int(os.environ["RANK"]), "decodes": len(decodes), "mapped": sorted(mapped), "seen": {}}


class Recorder(ImageCollator):
    def __call__(self, features):
        self.seen.extend(int(f["labels"]) for f in features)
        return super().__call__(features)


for path in ("stream", "memory"):
    data = load_image_dataset(folder, streaming=path == "stream", cache_dir=cache)
    collator = Recorder()
    collator.seen = []
    model = VQVAEModel(VQVAEConfig(image_size=8, num_channels=3, hidden_size=8, num_embeddings=8, embedding_dim=4,
                                   num_residual_blocks=1))
    fit(model, data.train, output_dir=out + "/" + path, collator=collator, max_steps=12, per_device_train_batch_size=4,
        ddp_backend="gloo")
    result["seen"][path] = collator.seen
Path(out, f"result-{result['rank']}.json").write_text(json.dumps(result))  # a file per rank: no shared pipe
if torch.distributed.is_initialized():  # a gloo group left alive can abort the process at exit
    torch.distributed.destroy_process_group()
"""


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/self/maps to see what is mapped")
def test_two_processes_decode_once_share_the_cache_and_see_disjoint_shards(tmp_path):
    """torchrun, 2 processes: the main process decodes (48 train + 8 test images) into the cache while the other
    waits, then both map the same file; in every epoch, in memory and streamed, the two see disjoint halves."""
    import os
    import subprocess
    import sys

    folder = _parquet_folder(tmp_path / "pq", num_train=48, num_test=8, files=2, row_group=6)
    (tmp_path / "two.py").write_text(TWO_PROCESS_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(tmp_path / "hf_cache")}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29547",
               str(tmp_path / "two.py"), str(folder), str(tmp_path / "out"), str(tmp_path / "decoded")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    files = [tmp_path / "out" / f"result-{rank}.json" for rank in (0, 1)]
    assert all(f.is_file() for f in files), (result.stdout[-2000:], result.stderr[-4000:])
    ranks = [json.loads(f.read_text()) for f in files]
    assert [r["decodes"] for r in ranks] == [48 + 8, 0]  # decoded once, by the main process
    entries = sorted(str(p) for p in (tmp_path / "decoded").glob("*.npy"))
    assert len(entries) == 2 and [path for path, _ in ranks[0]["mapped"]] == entries
    assert ranks[0]["mapped"] == ranks[1]["mapped"]  # the same files (same inodes): mapped, not rebuilt
    for path in ("stream", "memory"):
        for epoch in range(2):  # 12 steps of 2 x 4 images = 2 epochs of 48
            halves = [set(r["seen"][path][24 * epoch: 24 * (epoch + 1)]) for r in ranks]
            assert len(halves[0]) == len(halves[1]) == 24, (path, epoch)
            assert halves[0].isdisjoint(halves[1]) and halves[0] | halves[1] == set(range(48)), (path, epoch)
