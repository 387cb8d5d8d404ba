r"""Perceptual distances between images: the LPIPS construction (Zhang et al., 2018) on a fixed network, used as a
training loss (the tokenizer recipe's perceptual term) and as a metric.

A network gives feature maps f_l(x) of C_l channels at L depths. Each is normalised to unit length over its channels
at every position, f^_l = f_l / (||f_l||_2 + eps), and the two images are compared position by position:

    LPIPS:               d(x, y) = sum_l  mean_{h,w} sum_c w_{l,c} (f^_l(x) - f^_l(y))^2_{c,h,w}
    offline networks:    d(x, y) = (1/L) sum_l mean_{h,w} ||f^_l(x) - f^_l(y)||^2

with LPIPS's learned non-negative channel weights w (its "linear heads"); without them each depth's term is
2 - 2 cos(f_l(x), f_l(y)), between 0 and 4, averaged over positions and depths. d(x, x) = 0.

The networks (`perceptual_network(name, ...)`), each named in every figure it gives (`perceptual_<name>`):

- ``"lpips"``: the published LPIPS-VGG (v0.1): torchvision's ImageNet VGG16 trunk, taps relu1_2, relu2_2, relu3_3,
  relu4_3 and relu5_3, and lpips' linear heads. Its weights come from a local path (`load_lpips_weights`) or are
  downloaded into torch's hub cache (`VGG16_URL`, `LPIPS_VGG_URL`), and are checked key by key: a file with missing
  or unexpected keys is refused, never partly loaded.
- ``"rotation"``: the library's SmallCNN (`classifier.SmallCNN`) trained to tell which of four rotations (0, 90,
  180, 270 degrees) an image of the training set was turned by (Gidaris et al., 2018): self-supervised, so it needs
  no labels and no download; taps after its two ReLUs.
- ``"domain"``: the same CNN trained to classify the labelled training images. It is close kin to the network the
  domain Fréchet distances are measured with (`features.domain_features`, same architecture and data, another
  seed), so a model trained through it is partly judged by its own teacher: prefer ``"rotation"`` when the domain
  FD is the figure of merit.

The offline networks are trained once per dataset and cached (as the domain features are). Their distances are
not LPIPS values and are not comparable with published LPIPS figures, nor across datasets; LPIPS-VGG values of
small images are not comparable with the figures papers give at 256 x 256 either.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .classifier import SmallCNN, _default_device
from .metrics import as_images

PERCEPTUAL_NETWORKS = ("rotation", "domain", "lpips")
# The offline networks are trained with this seed, whatever the run's: a loss is the same for every seed of an
# experiment (as LPIPS's weights are), and it is never the domain features' own network.
PERCEPTUAL_SEED = 1_000_003
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
LPIPS_VGG_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth"
VGG16_FILE, LPIPS_HEADS_FILE = "vgg16-397923af.pth", "vgg.pth"
EPS = 1e-10  # of the unit normalisation, as lpips'


class UnitDistance(torch.autograd.Function):
    r"""The distance between rows f (N, C) and g (N, C, no gradient), each normalised to unit length, with channel
    weights w (C,), or None for w = 1: with S(a, b) = sum_c w_c a_c b_c, n = ||f||_2 + eps and m = ||g||_2 + eps,

        d = S(f / n - g / m, f / n - g / m) = S(f, f) / n^2 - 2 S(f, g) / (n m) + S(g, g) / m^2
        dd/df = 2 w f / n^2 + 2 (S(f, g) / m - S(f, f) / n) f / (n^2 ||f||) - 2 w g / (n m)

    (rounding can leave d a hair below 0: it is clamped), and dd/df = 0 on a row with f = 0, where autograd's
    square root gives NaN (after a ReLU nothing flows back from such a row anyway). Written out because the
    expanded form needs no normalised copies of the maps and the gradient is two passes over them, where autograd's
    graph of the same expression keeps and revisits several. Always in float32, autocast or not: d is a small
    difference of terms near 1."""

    @staticmethod
    def forward(ctx, f, g, weight):
        norm = torch.linalg.vector_norm(f, dim=-1)
        n, m = norm + EPS, torch.linalg.vector_norm(g, dim=-1) + EPS
        wg = g if weight is None else g * weight
        with torch.autocast(f.device.type, enabled=False):
            s_ff = norm.square() if weight is None else row_dot(f * weight, f)
            s_gg = (m - EPS).square() if weight is None else row_dot(wg, g)
            s_fg = row_dot(f, wg)
        ctx.save_for_backward(f, wg, norm, m, s_ff, s_fg, weight)
        return (s_ff / n.square() - 2 * s_fg / (n * m) + s_gg / m.square()).clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        f, wg, norm, m, s_ff, s_fg, weight = ctx.saved_tensors
        n, live = norm + EPS, norm > 0
        along_wf = torch.where(live, 2 * grad / n.square(), 0).unsqueeze(-1)
        along_f = torch.where(live, 2 * grad * (s_fg / m - s_ff / n) / (n.square() * norm.clamp_min(EPS)), 0)
        along_wg = torch.where(live, -2 * grad / (n * m), 0).unsqueeze(-1)
        if weight is not None:  # w f is recomputed here rather than kept from the forward: one map less in memory
            out = f * (weight * along_wf)
            out.addcmul_(f, along_f.unsqueeze(-1))
        else:
            out = f * (along_wf + along_f.unsqueeze(-1))
        return out.addcmul_(wg, along_wg), None, None


def row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_c a_c b_c per row, as a batched matrix product (on a CPU, faster than linalg.vecdot's multiply-and-sum)."""
    return torch.einsum("nc,nc->n", a, b)


def channel_rows(maps: torch.Tensor) -> torch.Tensor:
    """(batch, C, h, w) -> (batch h w, C): one row per position (a view of channels-last maps)."""
    return maps.float().permute(0, 2, 3, 1).reshape(-1, maps.shape[1])


class PerceptualDistance(nn.Module):
    """d(x, y), one value per image pair, for images (batch, C, H, W) in [0, 1]; a frozen network, always in eval
    mode. Subclasses give `features(x)` (the maps f_l at each depth) and, where the channels are weighted, the
    weights (`channel_weights`).

    `name` ends every figure computed with it (`perceptual_<name>`); `description` says what the network is."""

    name: str
    description: str
    reduction = "mean"  # over depths: "mean" (offline networks) or "sum" (LPIPS, as published)

    def features(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def channel_weights(self, depth: int) -> torch.Tensor | None:
        """w (C,) of the maps at `depth`; None: w = 1."""
        return None

    def forward(self, pixel_values: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """d(pixel_values, target) per image, (batch,). The target's features are computed without a graph; the
        gradient flows to `pixel_values` (a reconstruction)."""
        with torch.no_grad():
            targets = [channel_rows(g) for g in self.features(target)]
        terms = []
        for depth, (f, g) in enumerate(zip(self.features(pixel_values), targets)):
            weight = self.channel_weights(depth)
            weight = None if weight is None else weight.float()
            terms.append(UnitDistance.apply(channel_rows(f), g, weight).view(len(f), -1).mean(1))
        distance = torch.stack(terms).sum(0)
        return distance / len(terms) if self.reduction == "mean" else distance

    def train(self, mode: bool = True):
        return super().train(False)  # a fixed network: no dropout, no statistics updates


# ------------------------------------------------------------------------------------------------- offline networks


class CNNPerceptual(PerceptualDistance):
    """The perceptual distance on a trained `SmallCNN`'s features: the maps after each of its two ReLUs."""

    def __init__(self, cnn: SmallCNN, name: str, description: str):
        super().__init__()
        # conv, ReLU, pool, conv, ReLU; channels-last: oneDNN's and cuDNN's faster layout (the values are the same)
        self.trunk = cnn.features[:5].eval().requires_grad_(False).to(memory_format=torch.channels_last)
        self.taps = (1, 4)
        self.name, self.description = name, description
        self.num_channels = cnn.features[0].in_channels

    def features(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        if pixel_values.shape[1] != self.num_channels:
            raise ValueError(f"The {self.name} perceptual network was trained on {self.num_channels}-channel images; "
                             f"got {pixel_values.shape[1]} channels. Build it from this dataset's training images.")
        hidden, maps = 2 * pixel_values - 1, []  # [0, 1] -> [-1, 1], as SmallCNN.forward does
        for index, layer in enumerate(self.trunk):
            hidden = layer(hidden)
            if index in self.taps:
                maps.append(hidden)
        return maps


def rotations(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image turned by 0, 90, 180 and 270 degrees, and which turn it was (0-3): the pretext task of Gidaris et
    al. (2018). Square images only."""
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"The rotation task needs square images; got {tuple(images.shape[-2:])}.")
    turned = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(4)])
    return turned, torch.arange(4).repeat_interleave(len(images))


def offline_perceptual_network(
    name: str,
    train_images,
    train_labels=None,
    *,
    num_classes: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    epochs: int = 5,
    width: int = 32,
    dataset_name: str | None = None,
    device=None,
    progress: bool = True,
) -> CNNPerceptual:
    """The ``"rotation"`` or ``"domain"`` network for a dataset, from its training images (N, C, H, W) in [0, 1]
    (uint8 pixels k read as k / 255), and labels for ``"domain"``: a SmallCNN trained with `train_classifier`
    (seed `PERCEPTUAL_SEED`) on the rotation task or the labels, cached on disk as the domain features are
    (`features.domain_features`), so a second call with the same images loads it."""
    from .features import domain_features

    images = as_images(train_images, "train_images").detach().float().cpu()
    where = f" of {dataset_name}" if dataset_name else ""
    c, h, w = images.shape[1:]
    if name == "rotation":
        inputs, targets = rotations(images)
        num_classes, task = 4, f"to predict which of 4 rotations turned {len(images)} {c}x{h}x{w} training images{where}"
    elif name == "domain":
        if train_labels is None:
            raise ValueError("The domain perceptual network is a classifier of the training labels, and these images "
                             "have none; use --perceptual_network rotation (self-supervised, no labels needed).")
        inputs, targets = images, train_labels
        task = f"to classify {len(images)} labelled {c}x{h}x{w} training images{where}"
    else:
        raise ValueError(f"{name!r} is not an offline perceptual network; use rotation or domain (or lpips).")
    cnn = domain_features(inputs, targets, num_classes=num_classes, cache_dir=cache_dir, seed=PERCEPTUAL_SEED,
                          epochs=epochs, width=width, device=device, progress=progress).classifier
    description = (f"{name}: SmallCNN (width {width}, {epochs} epochs, seed {PERCEPTUAL_SEED}) trained {task}; "
                   "unit-normalised features after its 2 ReLUs, averaged; not comparable with published LPIPS")
    return CNNPerceptual(cnn, name, description).to(_default_device(device))


# ------------------------------------------------------------------------------------------------------- LPIPS-VGG

_VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_VGG16_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in torchvision's `features`
_LPIPS_CHANNELS = (64, 128, 256, 512, 512)


class VGG16Features(nn.Module):
    """VGG16's convolutional trunk up to relu5_3, as `features[0:30]` of torchvision's `vgg16()`: the same module
    indices, so its weights load under the same keys (`features.{i}.weight`, `features.{i}.bias`)."""

    def __init__(self):
        super().__init__()
        layers, channels = [], 3
        for width in _VGG16_LAYERS:
            if width == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
                channels = width
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in _VGG16_TAPS:
                maps.append(x)
        return maps


class LinearHead(nn.Module):
    """lpips' `NetLinLayer`: a 1 x 1 convolution to one channel without bias, at index 1 of `model` as in lpips'
    weight files (index 0 is lpips' dropout, unused here: the network is frozen)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(PerceptualDistance):
    """LPIPS-VGG v0.1 (Zhang et al., 2018): images in [0, 1] are mapped to [-1, 1], shifted and scaled per channel
    by lpips' constants, grey images repeated to RGB; the five VGG16 taps are compared through the linear heads and
    summed over depths. Built with random weights; `load_lpips_weights` (or `lpips_network`) gives the published
    ones.

    Keys: `net.features.{i}.weight|bias` (torchvision's `features.{i}.*`) and `lin{k}.model.1.weight` (lpips')."""

    name = "lpips"
    reduction = "sum"

    def __init__(self, description: str = "lpips: LPIPS-VGG v0.1 (random weights: not loaded)"):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.net = VGG16Features()
        for k, channels in enumerate(_LPIPS_CHANNELS):
            self.add_module(f"lin{k}", LinearHead(channels))
        self.description = description
        self.requires_grad_(False)

    def features(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        if pixel_values.shape[1] not in (1, 3):
            raise ValueError(f"LPIPS compares grey or RGB images; got {pixel_values.shape[1]} channels.")
        x = (2 * pixel_values - 1).expand(-1, 3, -1, -1)
        return self.net((x - self.shift) / self.scale)

    def channel_weights(self, depth: int) -> torch.Tensor:
        return getattr(self, f"lin{depth}").model[1].weight.view(-1)


def lpips_state_dict(state_dict: dict) -> dict:
    """Map the published files' keys to `LPIPS`'s, as documented there and in docs/models.md:

    - torchvision's VGG16 (`vgg16-397923af.pth`): `features.{i}.*` -> `net.features.{i}.*`; its `classifier.*`
      (the ImageNet classifier, unused) is left out;
    - lpips' heads (`lpips/weights/v0.1/vgg.pth`, also taming-transformers' `vgg.pth`): `lin{k}.model.1.weight`
      as is;
    - a whole `lpips.LPIPS(net="vgg").state_dict()`: `net.slice{s}.{i}.*` -> `net.features.{i}.*`,
      `lins.{k}.*` -> `lin{k}.*`, and its constants `scaling_layer.shift|scale` left out.

    Anything else is kept under its own name, for `load_lpips_weights` to refuse."""
    mapped = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] == "classifier" or parts[0] == "scaling_layer":
            continue
        if parts[0] == "features":
            key = f"net.{key}"
        elif parts[0] == "net" and len(parts) > 2 and parts[1].startswith("slice"):
            key = ".".join(["net", "features", *parts[2:]])
        elif parts[0] == "lins" and len(parts) > 1:
            key = ".".join([f"lin{parts[1]}", *parts[2:]])
        if key in mapped and not torch.equal(mapped[key], value):
            raise ValueError(f"The LPIPS weights hold two different values for {key}.")
        mapped[key] = value
    return mapped


def _read_state_dict(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state_dict = load_file(path)
    else:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state_dict, dict) and isinstance(state_dict.get("state_dict"), dict):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors).")
    return state_dict


def load_lpips_weights(network: LPIPS, state_dict: dict, source: str) -> LPIPS:
    """Load `state_dict` (published keys, mapped by `lpips_state_dict`) into `network`, strictly: every parameter
    must be there with its shape and nothing else may be; otherwise ValueError naming the keys (a partial load would
    give a silently wrong distance)."""
    state_dict = lpips_state_dict(state_dict)
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = sorted(f"{k} {tuple(state_dict[k].shape)} (expected {tuple(expected[k].shape)})"
                         for k in set(expected) & set(state_dict) if state_dict[k].shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        problems = []
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("of the wrong shape", wrong_shape)):
            if keys:
                shown = ", ".join(keys[:6]) + (f", ... ({len(keys)} in all)" if len(keys) > 6 else "")
                problems.append(f"{len(keys)} {what}: {shown}")
        raise ValueError(
            f"The LPIPS weights from {source} do not fit LPIPS-VGG ({'; '.join(problems)}), so none were loaded. LPIPS "
            f"needs torchvision's VGG16 ({VGG16_FILE}) and lpips' v0.1 linear heads ({LPIPS_HEADS_FILE}): pass a "
            "folder holding both files, or one file with both sets of keys (e.g. a saved lpips.LPIPS(net='vgg') "
            "state dict).")
    network.load_state_dict({k: v.to(expected[k].dtype) for k, v in state_dict.items()})
    return network


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def lpips_network(weights_path: str | os.PathLike | None = None, *, device=None, progress: bool = True) -> LPIPS:
    """LPIPS-VGG with the published weights, from `weights_path` (a folder holding torchvision's `vgg16-397923af.pth`
    and lpips' v0.1 `vgg.pth`, or one file holding both sets of keys, `.pth` or `.safetensors`) or, without it,
    downloaded once into torch's hub cache (`VGG16_URL`, `LPIPS_VGG_URL`; never while HF_HUB_OFFLINE is set).

    Raises FileNotFoundError when the weights can be neither read nor downloaded, ValueError for weights that do
    not fit (`load_lpips_weights`)."""
    how_to = (f"download {VGG16_URL} and {LPIPS_VGG_URL} on a machine with internet and pass the folder holding "
              "them with --lpips_weights PATH, or use an offline network (--perceptual_network rotation)")
    if weights_path is not None:
        path = Path(weights_path)
        if path.is_dir():
            files = [path / VGG16_FILE, path / LPIPS_HEADS_FILE]
            absent = [f.name for f in files if not f.is_file()]
            if absent:
                raise FileNotFoundError(f"--lpips_weights {path} is a folder without {' and '.join(absent)}; {how_to}.")
        elif path.is_file():
            files = [path]
        else:
            raise FileNotFoundError(f"--lpips_weights {path} does not exist; {how_to}.")
        state_dict = {}
        for file in files:
            state_dict.update(_read_state_dict(file))
        source = str(path)
    else:
        state_dict = {}
        for url, name in ((VGG16_URL, VGG16_FILE), (LPIPS_VGG_URL, LPIPS_HEADS_FILE)):
            cached = Path(torch.hub.get_dir()) / "checkpoints" / name
            if _offline() and not cached.is_file():
                raise FileNotFoundError(f"LPIPS needs {name}, which is not in {cached.parent} and HF_HUB_OFFLINE "
                                        f"forbids downloading it: {how_to}.")
            try:
                state_dict.update(torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=progress,
                                                                     check_hash=name == VGG16_FILE, file_name=name))
            except Exception as err:  # no network, a proxy, a truncated file: all mean the same to the user
                raise FileNotFoundError(f"LPIPS needs {name}, which could not be downloaded ({type(err).__name__}: "
                                        f"{err}): {how_to}.") from None
        source = f"{VGG16_URL} and {LPIPS_VGG_URL}"
    network = load_lpips_weights(LPIPS(), state_dict, source)
    network.description = (f"lpips: LPIPS-VGG v0.1 (torchvision's ImageNet VGG16, lpips' linear heads) from {source}; "
                           "at this image size, not comparable with LPIPS figures published at 256 x 256")
    return network.to(_default_device(device))


def perceptual_network(
    name: str,
    train_images=None,
    train_labels=None,
    *,
    lpips_weights: str | os.PathLike | None = None,
    num_classes: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    dataset_name: str | None = None,
    device=None,
    progress: bool = True,
) -> PerceptualDistance:
    """The perceptual network called `name` (one of `PERCEPTUAL_NETWORKS`): `lpips_network(lpips_weights)` for
    ``"lpips"``, else `offline_perceptual_network` trained on `train_images` (and `train_labels` for ``"domain"``)."""
    if name not in PERCEPTUAL_NETWORKS:
        raise ValueError(f"perceptual network {name!r} is not known; use one of {', '.join(PERCEPTUAL_NETWORKS)}.")
    if name == "lpips":
        return lpips_network(lpips_weights, device=device, progress=progress)
    if train_images is None:
        raise ValueError(f"The {name} perceptual network is trained on the dataset's images; pass train_images.")
    return offline_perceptual_network(name, train_images, train_labels, num_classes=num_classes, cache_dir=cache_dir,
                                      dataset_name=dataset_name, device=device, progress=progress)


__all__ = ["CNNPerceptual", "LPIPS", "LPIPS_VGG_URL", "PERCEPTUAL_NETWORKS", "PERCEPTUAL_SEED", "PerceptualDistance",
           "VGG16Features", "VGG16_URL", "load_lpips_weights", "lpips_network", "lpips_state_dict",
           "offline_perceptual_network", "perceptual_network", "rotations"]
