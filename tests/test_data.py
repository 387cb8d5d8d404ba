import ast
import json
import warnings

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
    collate_fn,
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
    with pytest.raises(DatasetNotFoundError, match="neither a local folder nor reachable on the Hub") as info:
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
        elif isinstance(node, ast.ImportFrom):
            imported.add("." if node.level else node.module.split(".")[0])
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
