"""The features that sample and reconstruction quality are measured on (see `frechet`).

Two kinds, and every figure says which one it used:

- ``inception_features(weights_path=None)``: the 2048-d pool3 features of the InceptionV3 network that Heusel et al.
  (2017) took from TensorFlow's 2015-12-05 graph. Fréchet distances on them are the "FID" of the literature. The
  weights are the ones pytorch-fid and torch-fidelity use (`FID_WEIGHTS_URL`): downloaded once into torch's hub
  cache, or read from a local file.
- ``domain_features(train_images, train_labels)``: a SmallCNN (`classifier.SmallCNN`) trained on the dataset's own
  labelled training images, its last convolutional features pooled to a 2x2 grid. Works offline, on any dataset with
  labels; comparable between models evaluated on the same dataset with the same features, as the MNIST literature
  compares LeNet-feature FIDs, never with Inception FIDs. Trained once per dataset, seed and image shape, then read
  from a cache on disk. ``dataset_features(train_split)`` is the one network of a dataset that a training run's
  evaluation and `hf-autoencoders evaluate` both measure in (`FEATURE_SEED`, the first `FEATURE_TRAIN_IMAGES`
  labelled training images).

Every feature network says what it is (``description``) and carries its ``identity`` (its kind, settings and the
SHA-256 of its weights), which stands beside every figure measured in it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data import ImageCollator, iterate_batches
from ..results import fingerprint, partial_path, remove_stale_partials
from .classifier import SmallCNN, _default_device, _labels, train_classifier
from .metrics import as_images

FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
logger = logging.getLogger(__name__)
FEATURE_SEED = 0  # the seed of a dataset's feature network, wherever a model is evaluated (`dataset_features`)
FEATURE_TRAIN_IMAGES = 10_000  # the labelled training images it learns from


def weights_sha256(module: nn.Module) -> str:
    """The SHA-256 (hex) of a network's weights: every tensor of its state dict, by name (`results.fingerprint`)."""
    return fingerprint("weights", *(part for name, tensor in sorted(module.state_dict().items())
                                    for part in (name, tensor)))


class ImageFeatures(nn.Module):
    """Maps images (N, C, H, W) in [0, 1] to feature vectors (N, num_features).

    ``name`` ("domain" or "inception") ends every metric key computed on these features; ``description`` says in
    words what they are (the `quality_features` of a report).
    """

    name: str
    description: str
    identity: dict
    num_features: int
    max_batch_size: int = 1024

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def extract(self, data, batch_size: int = 256, progress: bool = False, desc: str = "features") -> torch.Tensor:
        """Features of every image of ``data`` (a tensor or anything `data.iterate_batches` reads), as a float64
        CPU tensor (N, num_features)."""
        chunks = []
        batches = iterate_batches(data, batch_size)
        for x, _ in tqdm(batches, desc=desc, disable=not progress, leave=False):
            for part in as_images(x, "images").float().split(self.max_batch_size):
                chunks.append(self(part.to(self.device)).double().cpu())
        if not chunks:
            raise ValueError("No images to extract features from; pass a non-empty set of images.")
        return torch.cat(chunks)


# ------------------------------------------------------------------------------------------------ domain features


class DomainFeatures(ImageFeatures):
    """The last convolutional features of a trained SmallCNN, average-pooled to a 2x2 grid: 8 * width features
    (256 for the default width 32).

    The classifier's penultimate layer proper is the flattened 7x7 map (2 * width * 49 = 3136 values): too many
    dimensions for the covariance of a few thousand images (the bias of the Fréchet distance grows with
    dimension / N) and for a fast matrix square root. Pooling keeps coarse position, as Inception's pool3 pools its
    last block, and a linear probe on the pooled features still reads the class (docs/metrics.md).
    """

    name = "domain"

    def __init__(self, classifier: SmallCNN, image_shape: tuple[int, int, int], description: str,
                 identity: dict | None = None):
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.image_shape = tuple(image_shape)
        self.description = description
        self.identity = identity or {"features": "domain", "sha256": weights_sha256(classifier)}
        self.num_features = 4 * classifier.classifier.in_features // 49

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if tuple(pixel_values.shape[1:]) != self.image_shape:
            c, h, w = self.image_shape
            raise ValueError(
                f"These domain features were trained on {c}x{h}x{w} images; got images of shape "
                f"{tuple(pixel_values.shape[1:])}. Build domain_features from the training images of this dataset."
            )
        maps = self.classifier.features(2 * pixel_values - 1)  # [0, 1] -> [-1, 1], as SmallCNN.forward does
        return F.adaptive_avg_pool2d(maps, 2).flatten(1)

    def train(self, mode: bool = True):
        return super().train(False)  # a fixed feature map, always in eval mode


def default_cache_dir() -> Path:
    """Where trained domain classifiers are kept: <HF_DATASETS_CACHE>/hf_autoencoders_domain_features."""
    import datasets

    return Path(datasets.config.HF_DATASETS_CACHE) / "hf_autoencoders_domain_features"


def domain_features(
    train_images,
    train_labels,
    *,
    num_classes: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    epochs: int = 5,
    width: int = 32,
    dataset_name: str | None = None,
    device=None,
    progress: bool = True,
) -> DomainFeatures:
    """Offline features for a dataset: a SmallCNN trained (`train_classifier`, Adam, cross-entropy) on its labelled
    training images (N, C, H, W) in [0, 1] (uint8 pixels k read as k / 255).

    The trained weights are cached in ``cache_dir`` (default `default_cache_dir()`) under a key (`fingerprint`) of
    the images and labels, the image shape, ``seed``, ``epochs``, ``width`` and ``num_classes``, so a second call
    with the same data and settings loads them instead of training again. ``dataset_name`` only goes into the
    description.
    """
    from safetensors.torch import load_file, save_file

    images = as_images(train_images, "train_images").detach().float().cpu()
    labels = _labels(train_labels, len(images), "train_labels").cpu()
    num_classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    shape = tuple(images.shape[1:])
    settings = {"shape": list(shape), "seed": seed, "epochs": epochs, "width": width, "num_classes": num_classes}
    key = fingerprint("domain features", settings, images, labels)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache_dir / f"smallcnn-{'x'.join(map(str, shape))}-seed{seed}-{key[:16]}.safetensors"
    device = _default_device(device)
    if path.is_file():
        with torch.random.fork_rng(devices=[]):
            classifier = SmallCNN(shape[0], num_classes, width)
        classifier.load_state_dict(load_file(path))
        classifier = classifier.to(device).eval()
    else:
        with torch.enable_grad():  # callers often sit under no_grad (an evaluation)
            classifier = train_classifier(images, labels, num_classes, epochs, width=width, seed=seed, device=device,
                                          progress=progress)
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_partials(cache_dir)
            partial = partial_path(path)
            save_file({k: v.detach().cpu().contiguous() for k, v in classifier.state_dict().items()}, partial,
                      metadata={k: json.dumps(v) for k, v in settings.items()})
            os.replace(partial, path)  # atomic: a concurrent reader sees the whole file or none
        except OSError as err:  # a read-only or full disk: the classifier is used all the same, not kept
            logger.warning("The domain classifier could not be written to its cache in %s (%s); it is used without "
                           "being kept, and trained again next time (pass cache_dir= a writable folder, or set "
                           "HF_DATASETS_CACHE).", cache_dir, err)
    c, h, w = shape
    identity = {"features": "domain", "network": "SmallCNN", **settings, "train_images": len(images),
                "sha256": weights_sha256(classifier)}
    description = (
        f"domain: SmallCNN (width {width}, {epochs} epochs, seed {seed}) trained on {len(images)} labelled {c}x{h}x{w} "
        f"training images{f' of {dataset_name}' if dataset_name else ''}, weights sha256 {identity['sha256'][:16]}; "
        f"last conv features pooled to 2x2 ({8 * width}-d); comparable only with domain figures in the same network"
    )
    return DomainFeatures(classifier, shape, description, identity)


def dataset_features(
    train_split,
    *,
    num_classes: int | None = None,
    dataset_name: str | None = None,
    max_images: int = FEATURE_TRAIN_IMAGES,
    epochs: int = 5,
    cache_dir: str | os.PathLike | None = None,
    device=None,
    progress: bool = True,
) -> DomainFeatures | None:
    """The feature network of a dataset: `domain_features` trained with `FEATURE_SEED` on the first `max_images`
    labelled images of its train split (a dataset of `{"pixel_values", "labels"}` items, as `load_image_dataset`
    gives), as the dataset holds them (never binarized), and `num_classes` (default: the largest label + 1). A
    training run's evaluation and `hf-autoencoders evaluate` both call it, so a model gets the same figures in both
    (their seeds apart). None when the split carries no labels."""
    first = next(iter(train_split), None)
    if not (isinstance(first, dict) and "labels" in first):
        return None
    images, labels, count = [], [], 0
    for batch in torch.utils.data.DataLoader(train_split, batch_size=512, collate_fn=ImageCollator(return_labels=True)):
        images.append(batch["pixel_values"])
        labels.append(batch["labels"])
        count += len(batch["labels"])
        if count >= max_images:
            break
    return domain_features(torch.cat(images)[:max_images], torch.cat(labels)[:max_images], num_classes=num_classes,
                           cache_dir=cache_dir, seed=FEATURE_SEED, epochs=epochs, dataset_name=dataset_name,
                           device=device, progress=progress)


# ---------------------------------------------------------------------------------------------- Inception features


class BasicConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x):  # TensorFlow's average pool leaves the zero padding out of the mean
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x):
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool(x)),
        ], 1)


class InceptionB(nn.Module):
    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], 1)


class InceptionC(nn.Module):
    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x):
        double = x
        for i in range(1, 6):
            double = getattr(self, f"branch7x7dbl_{i}")(double)
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            double,
            self.branch_pool(_avg_pool(x)),
        ], 1)


class InceptionD(nn.Module):
    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3_2(self.branch3x3_1(x)),
            self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x)))),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], 1)


class InceptionE(nn.Module):
    """The last two blocks; in the FID graph the second pools its fourth branch with a max instead of a mean."""

    def __init__(self, in_channels: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x):
        single = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(single), self.branch3x3_2b(single),
            self.branch3x3dbl_3a(double), self.branch3x3dbl_3b(double),
            self.branch_pool(pooled),
        ], 1)


class FIDInceptionV3(nn.Module):
    """InceptionV3 as in the TensorFlow graph FID was defined with (pytorch-fid's and torch-fidelity's port): input
    (N, 3, 299, 299) scaled to [-1, 1], output the 2048-d pool3 features. Parameter names follow torchvision's
    Inception3, so the FID weights file loads as is (its 1008-way `fc` is not needed for features)."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean((2, 3))


def resize_bilinear_tf1(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resizing as TensorFlow 1.x did it (align_corners=False, no half-pixel centres): output pixel i reads
    input coordinate i * in_size / size. The reference FID code resized this way; torch's own bilinear mode does not."""

    def axis(n_in: int):
        position = torch.arange(size, dtype=x.dtype, device=x.device) * torch.tensor(n_in / size, dtype=x.dtype)
        low = position.long()
        return low, (low + 1).clamp_max(n_in - 1), position - low.to(x.dtype)

    y_low, y_high, dy = axis(x.shape[2])
    x_low, x_high, dx = axis(x.shape[3])
    top, bottom = x[:, :, y_low], x[:, :, y_high]
    top = top[..., x_low] + (top[..., x_high] - top[..., x_low]) * dx
    bottom = bottom[..., x_low] + (bottom[..., x_high] - bottom[..., x_low]) * dx
    return top + (bottom - top) * dy.view(-1, 1)


class InceptionFeatures(ImageFeatures):
    """FID's pool3 features of images in [0, 1]: pixels quantized to 8 bits (as a PNG would hold them), grey
    images repeated to RGB, resized to 299x299 as TensorFlow 1.x did, scaled to [-1, 1] by (k - 128) / 128."""

    name = "inception"
    num_features = 2048
    max_batch_size = 50

    def __init__(self, network: FIDInceptionV3, description: str, identity: dict | None = None):
        super().__init__()
        self.network = network.eval().requires_grad_(False)
        self.description = description
        self.identity = identity or {"features": "inception", "sha256": weights_sha256(network)}

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.shape[1] not in (1, 3):
            raise ValueError(f"Inception features need grey or RGB images; got {pixel_values.shape[1]} channels.")
        pixels = (pixel_values.float().clamp(0, 1) * 255).round().expand(-1, 3, -1, -1)
        return self.network((resize_bilinear_tf1(pixels, 299) - 128) / 128)

    def train(self, mode: bool = True):
        return super().train(False)  # BatchNorm must keep its running statistics


def _writable(folder: Path) -> bool:
    """Whether files can be created in `folder` (made if missing): tried, since permission bits do not say it for
    root or read-only file systems."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def inception_features(weights_path: str | os.PathLike | None = None, *, device=None,
                       progress: bool = True) -> InceptionFeatures:
    """Standard FID features: `FIDInceptionV3` with the FID weights, from ``weights_path`` (a state dict saved by
    torch, e.g. pytorch-fid's pt_inception-2015-12-05-6726825d.pth or torch-fidelity's
    weights-inception-2015-12-05-6726825d.pth) or, without it, from `FID_WEIGHTS_URL` (downloaded once into
    torch's hub cache; never downloaded when HF_HUB_OFFLINE is set).

    Raises FileNotFoundError when the weights can be neither read nor downloaded, and ValueError for a file that
    does not hold them.
    """
    how_to = (f"download {FID_WEIGHTS_URL} on a machine with internet and pass the file with --inception_weights "
              "PATH (inception_features(weights_path=PATH)), or use the offline domain features (--features domain)")
    if weights_path is not None:
        weights_path = Path(weights_path)
        if not weights_path.is_file():
            raise FileNotFoundError(f"The Inception weights file {weights_path} does not exist; {how_to}.")
        state_dict = torch.load(weights_path, map_location="cpu", weights_only=True)
        source = str(weights_path)
    else:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_URL.rsplit("/", 1)[-1]
        if _offline() and not cached.is_file():
            raise FileNotFoundError(f"Standard FID needs the InceptionV3 FID weights, which are not in {cached.parent} "
                                    f"and HF_HUB_OFFLINE forbids downloading them: {how_to}.")
        model_dir = cached.parent if cached.is_file() or _writable(cached.parent) else None
        if model_dir is None:  # a read-only home: download into a temporary folder, not kept
            model_dir = Path(tempfile.mkdtemp(prefix="fid-inception-"))
            logger.warning("The InceptionV3 FID weights cannot be kept in %s (not writable); they are downloaded into "
                           "%s for this run only (set TORCH_HOME to a writable folder, or pass --inception_weights "
                           "PATH).", cached.parent, model_dir)
        try:
            state_dict = torch.hub.load_state_dict_from_url(FID_WEIGHTS_URL, model_dir=str(model_dir),
                                                            map_location="cpu", progress=progress, check_hash=True)
        except Exception as err:  # no network, a proxy, a truncated file: all mean the same to the user
            raise FileNotFoundError(f"Standard FID needs the InceptionV3 FID weights, which could not be downloaded "
                                    f"({type(err).__name__}: {err}): {how_to}.") from None
        source = FID_WEIGHTS_URL
    if isinstance(state_dict, dict) and isinstance(state_dict.get("state_dict"), dict):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict):
        raise ValueError(f"{source} does not hold a state dict of InceptionV3 weights.")
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(("fc.", "AuxLogits."))}
    network = FIDInceptionV3()
    missing, unexpected = network.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise ValueError(f"{source} does not hold the FID InceptionV3 weights: {len(missing)} parameters missing "
                         f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}).")
    identity = {"features": "inception", "network": "FIDInceptionV3", "sha256": weights_sha256(network)}
    description = (f"inception: InceptionV3 pool3 (2048-d), FID weights from {source}, sha256 "
                   f"{identity['sha256'][:16]}; the FID of the literature")
    return InceptionFeatures(network, description, identity).to(_default_device(device))
