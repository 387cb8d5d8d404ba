"""Figures of an autoencoder run: image grids, reconstructions, samples, interpolations, latent layouts, loss curves.

Every function writes one PNG (creating parent folders, replacing a file already there) and returns its path.
Images are (N, C, H, W) tensors or arrays with values in [0, 1] (C = 1 or 3); (N, H, W) is read as grayscale.
Grids are written directly with PIL as uint8 PNGs; scatter plots and curves are drawn by matplotlib's Agg canvas
on standalone Figures (pyplot and its global backend are never touched).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def figure(**kwargs):
    """A matplotlib Figure drawn by the Agg canvas, without pyplot: no global state, no backend switch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _prepare_path(path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _to_uint8_images(images, name: str = "images") -> np.ndarray:
    """(N, C, H, W) or (N, H, W) in [0, 1] -> uint8 array (N, H, W, C) with C in {1, 3}."""
    images = torch.as_tensor(images).detach().cpu().float()
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"{name} must have shape (N, C, H, W) with C = 1 or 3, or (N, H, W); got {tuple(images.shape)}"
        )
    if len(images) == 0:
        raise ValueError(f"{name} is empty; at least one image is needed")
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def image_grid(images, nrow: int = 8, padding: int = 2, pad_value: float = 1.0, scale: int = 1,
               row_labels=None) -> np.ndarray:
    """Tile ``images`` into a uint8 grid (H, W, C) of ``nrow`` images per row with ``padding`` pixels of
    ``pad_value`` between and around the tiles, upscaled ``scale`` times (nearest neighbour). ``row_labels`` (one
    string per row of tiles) are written in a column left of the tiles, so the picture says what each row holds."""
    if nrow < 1 or padding < 0 or scale < 1:
        raise ValueError(
            f"nrow and scale must be >= 1 and padding >= 0; got nrow={nrow}, padding={padding}, scale={scale}"
        )
    tiles = _to_uint8_images(images)
    n, h, w, c = tiles.shape
    ncol, nrows = min(nrow, n), math.ceil(n / nrow)
    grid = np.full(
        (nrows * (h + padding) + padding, ncol * (w + padding) + padding, c), round(pad_value * 255), dtype=np.uint8
    )
    for i, tile in enumerate(tiles):
        top, left = padding + (i // nrow) * (h + padding), padding + (i % nrow) * (w + padding)
        grid[top : top + h, left : left + w] = tile
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    if row_labels is not None:
        if len(row_labels) != nrows:
            raise ValueError(f"row_labels needs one label per row of tiles ({nrows}); got {len(row_labels)}")
        grid = _label_rows(grid, list(map(str, row_labels)), (h + padding) * scale, padding * scale)
    return grid


def _label_rows(grid: np.ndarray, labels: list[str], row_height: int, top: int) -> np.ndarray:
    """`grid` with a column on its left holding `labels`, one per band of `row_height` pixels from `top` down, dark
    text on the grid's background."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default(size=max(8, min(14, row_height // 3)))
    background = tuple(int(v) for v in grid[0, 0])
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    margin = max(probe.textbbox((0, 0), label, font=font)[2] for label in labels) + 8
    canvas = Image.new("RGB", (grid.shape[1] + margin, grid.shape[0]), background * (3 // len(background)))
    canvas.paste(Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).convert("RGB"), (margin, 0))
    draw = ImageDraw.Draw(canvas)
    ink = (0, 0, 0) if sum(background) / len(background) > 127 else (255, 255, 255)
    for i, label in enumerate(labels):
        draw.text((margin - 4, top + i * row_height + (row_height - top) // 2), label, fill=ink, font=font, anchor="rm")
    labelled = np.asarray(canvas)
    return labelled[..., :1] if grid.shape[-1] == 1 else labelled


def save_image_grid(images, path, nrow: int = 8, padding: int = 2, pad_value: float = 1.0, scale: int = 1,
                    row_labels=None) -> Path:
    """`image_grid` saved as a grayscale or RGB PNG."""
    grid = image_grid(images, nrow, padding, pad_value, scale, row_labels)
    path = _prepare_path(path)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)  # (H, W) -> "L", (H, W, 3) -> "RGB"
    return path


RECONSTRUCTION_ROW_LABELS = ("original", "reconstruction")


def plot_reconstructions(originals, reconstructions, path, n: int = 16, nrow: int = 8, scale: int = 2) -> Path:
    """The first ``n`` originals and their reconstructions as pairs of rows: ``nrow`` originals above their
    ``nrow`` reconstructions, repeated until ``n`` images are shown; each row labelled on the picture
    (`RECONSTRUCTION_ROW_LABELS`)."""
    originals, reconstructions = torch.as_tensor(originals), torch.as_tensor(reconstructions)
    if originals.shape != reconstructions.shape:
        raise ValueError(
            f"originals and reconstructions must have the same shape; got {tuple(originals.shape)} and "
            f"{tuple(reconstructions.shape)}"
        )
    n = min(n, len(originals))
    nrow = min(nrow, n)
    rows = []
    for start in range(0, n, nrow):
        block = slice(start, min(start + nrow, n))
        pad = nrow - (block.stop - block.start)  # fill the last pair of rows with blank tiles
        for images in (originals[block], reconstructions[block]):
            rows.append(torch.cat([images.cpu().float(), torch.ones(pad, *images.shape[1:])]))
    return save_image_grid(torch.cat(rows), path, nrow=nrow, scale=scale,
                           row_labels=RECONSTRUCTION_ROW_LABELS * (len(rows) // 2))


def plot_samples(samples, path, nrow: int = 8, scale: int = 2) -> Path:
    """A grid of generated samples."""
    return save_image_grid(samples, path, nrow=nrow, scale=scale)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable where Pillow has FreeType
    except (TypeError, OSError):
        return ImageFont.load_default()


def plot_labelled_rows(images, row_labels, path, title: str | None = None, scale: int = 2) -> Path:
    """A grid with one row per entry of ``row_labels``, each written left of its row, and ``title`` above: the
    ``len(images) / len(row_labels)`` images of row r are ``images[r * ncol : (r + 1) * ncol]`` (e.g. the samples
    of one class per row)."""
    from PIL import ImageDraw

    row_labels = [str(label) for label in row_labels]
    if not row_labels or len(images) % len(row_labels):
        raise ValueError(f"images ({len(images)}) must hold the same number of images for each of the "
                         f"{len(row_labels)} row labels")
    ncol = len(images) // len(row_labels)
    grid = image_grid(images, nrow=ncol, scale=scale)
    if grid.shape[-1] == 1:
        grid = grid.repeat(3, axis=-1)
    font = _font(6 * scale + 2)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    margin = int(max(measure.textlength(label, font=font) for label in row_labels)) + 4 * scale
    title_width = int(measure.textlength(title, font=font)) + 8 if title else 0
    title_height = 8 * scale + 6 if title else 0
    canvas = Image.new("RGB", (max(grid.shape[1] + margin, title_width), grid.shape[0] + title_height), "white")
    canvas.paste(Image.fromarray(grid), (margin, title_height))
    draw = ImageDraw.Draw(canvas)
    row_height = (grid.shape[0] - 2 * scale) / len(row_labels)
    for r, label in enumerate(row_labels):
        y = title_height + 2 * scale + (r + 0.5) * row_height
        draw.text((margin - 2 * scale, y), label, fill="black", font=font, anchor="rm")
    if title:
        draw.text((canvas.width / 2, title_height / 2), title, fill="black", font=font, anchor="mm")
    path = _prepare_path(path)
    canvas.save(path)
    return path


def plot_interpolations(rows_of_images, path, scale: int = 2) -> Path:
    """One interpolation sequence per row: ``rows_of_images`` is (rows, steps, C, H, W) or a list of (steps, C, H, W)
    sequences of equal length, e.g. the decoded output of ``metrics.interpolate_latents``."""
    rows = torch.stack([torch.as_tensor(r).cpu().float() for r in rows_of_images])
    if rows.dim() not in (4, 5):
        raise ValueError(
            f"rows_of_images must be (rows, steps, C, H, W) or (rows, steps, H, W); got {tuple(rows.shape)}"
        )
    return save_image_grid(rows.flatten(0, 1), path, nrow=rows.shape[1], scale=scale)


def _embed_2d(latents: np.ndarray, method: str, seed: int) -> np.ndarray:
    if latents.shape[1] == 1:
        return np.concatenate([latents, np.zeros_like(latents)], axis=1)
    if latents.shape[1] == 2:
        return latents
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(latents)
    from sklearn.manifold import TSNE

    perplexity = min(30.0, max(1.0, (len(latents) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(latents)


def plot_latent_layout(
    latents,
    labels,
    path,
    method: str = "pca",
    title: str | None = None,
    max_points: int | None = None,
    seed: int = 0,
) -> Path:
    """Scatter plot of latents (N, ...) projected to 2-d by PCA or t-SNE, coloured by ``labels``.

    Latents are flattened per sample; 1-d and 2-d latents are drawn as they are. At most ``max_points`` random points
    are shown (default 2000 for t-SNE, whose cost grows quadratically, and 10000 for PCA). Integer labels with at most
    20 distinct values get a legend; other labels a colorbar; ``labels=None`` draws one colour.
    """
    if method not in ("pca", "tsne"):
        raise ValueError(f"method must be 'pca' or 'tsne'; got {method!r}")
    latents = torch.as_tensor(latents).detach().cpu()
    latents = latents.reshape(len(latents), -1).double().numpy()
    labels = None if labels is None else torch.as_tensor(labels).detach().cpu().flatten().numpy()
    if labels is not None and len(labels) != len(latents):
        raise ValueError(f"labels must have one entry per latent ({len(latents)}); got {len(labels)}")
    max_points = max_points or (2000 if method == "tsne" else 10000)
    if len(latents) > max_points:
        keep = np.random.default_rng(seed).choice(len(latents), max_points, replace=False)
        latents, labels = latents[keep], None if labels is None else labels[keep]
    points = _embed_2d(latents, method, seed)

    from matplotlib import colormaps

    fig = figure(figsize=(6, 5.5))
    ax = fig.subplots()
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=4, alpha=0.7)
    elif np.issubdtype(labels.dtype, np.integer) and len(np.unique(labels)) <= 20:
        classes = np.unique(labels)
        cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
        for i, c in enumerate(classes):
            mask = labels == c
            ax.scatter(points[mask, 0], points[mask, 1], s=4, alpha=0.7, color=cmap(i), label=str(c))
        ax.legend(markerscale=3, fontsize="small", loc="best", title="label")
    else:
        scatter = ax.scatter(points[:, 0], points[:, 1], s=4, alpha=0.7, c=labels, cmap="viridis")
        fig.colorbar(scatter, ax=ax, label="label")
    axis_name = {"pca": "PC", "tsne": "t-SNE "}[method] if latents.shape[1] > 2 else "z"
    ax.set_xlabel(f"{axis_name}1")
    ax.set_ylabel(f"{axis_name}2")
    ax.set_title(title or f"latents ({method.upper() if latents.shape[1] > 2 else 'raw'}, n={len(points)})")
    fig.tight_layout()
    path = _prepare_path(path)
    fig.savefig(path, dpi=120)
    return path


_NOT_TERMS = ("train_loss",)  # the Trainer's end-of-training summary (the mean training loss), not a curve


def _loss_series(log_history: list[dict], keys=None) -> dict[str, dict[str, tuple[list, list]]]:
    """{term: {"train"|"eval": (steps, values)}} from a Trainer log history."""
    series: dict[str, dict[str, tuple[list, list]]] = {}
    for i, entry in enumerate(log_history):
        step = entry.get("step", i)
        for key, value in entry.items():
            if key in _NOT_TERMS or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            split, term = ("eval", key[len("eval_") :]) if key.startswith("eval_") else ("train", key)
            if (keys is None and not term.endswith("loss")) or (keys is not None and term not in keys):
                continue
            if not math.isfinite(value):
                continue
            steps, values = series.setdefault(term, {}).setdefault(split, ([], []))
            steps.append(step)
            values.append(float(value))
    return series


def _plain_log_formatter(**kwargs):
    """A formatter of log-axis ticks that writes plain numbers (50, 0.2, 1e-05) instead of 5x10^1, on the ticks
    matplotlib chooses to label."""
    from matplotlib import ticker

    class PlainLogFormatter(ticker.LogFormatter):
        def __call__(self, x, pos=None):
            return f"{x:g}" if super().__call__(x, pos) else ""

    return PlainLogFormatter(**kwargs)


def log_axis(ax, axis: str = "y") -> None:
    """Give `ax` a logarithmic `axis` ("x" or "y") whose ticks read as plain numbers."""
    getattr(ax, f"set_{axis}scale")("log")
    target = getattr(ax, f"{axis}axis")
    target.set_major_formatter(_plain_log_formatter())
    target.set_minor_formatter(_plain_log_formatter(labelOnlyBase=False))


def loss_curves_figure(log_history, keys: list[str] | None = None, title: str | None = None):
    """The Figure of `plot_loss_curves`."""
    if isinstance(log_history, (str, Path)):
        log_history = json.loads(Path(log_history).read_text())["log_history"]
    series = _loss_series(log_history, keys)
    if not series:
        raise ValueError("log_history has no loss values to plot (no keys ending in 'loss' with numeric values)")
    terms = sorted(series, key=lambda t: (t != "loss", t))  # the total loss first
    ncols = min(3, len(terms))
    nrows = math.ceil(len(terms) / ncols)
    fig = figure(figsize=(4.5 * ncols, 3.5 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, term in zip(axes.flat, terms):
        all_values = []
        for split in ("train", "eval"):
            if split not in series[term]:
                continue
            steps, values = series[term][split]
            marker = "o" if split == "eval" or len(steps) == 1 else None  # sparse series: show the points
            ax.plot(steps, values, label=split, lw=1.5 if split == "eval" else 1, marker=marker, ms=3)
            all_values += values
        if all(v > 0 for v in all_values):
            log_axis(ax)
        ax.set_title(term)
        ax.set_xlabel("step")
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(terms) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_loss_curves(log_history, path, keys: list[str] | None = None, title: str | None = None) -> Path:
    """Train and eval curves of every loss term against the global step, one subplot per term.

    ``log_history`` is a transformers ``Trainer.state.log_history`` (a list of dicts with keys such as ``loss``,
    ``reconstruction_loss``, ``kl_loss``, ``eval_loss``, ``eval_reconstruction_loss`` and ``step``) or the path of a
    ``trainer_state.json``. Terms are the keys ending in ``loss`` (``eval_`` stripped), or ``keys`` if given. A
    subplot uses a log y-axis (`log_axis`) when all its values are positive.
    """
    fig = loss_curves_figure(log_history, keys, title)
    path = _prepare_path(path)
    fig.savefig(path, dpi=120)
    return path


def plot_bars(panels, path, ylabel: str = "") -> Path:
    """Grouped bar charts side by side, one per panel. Each panel is ``(title, group names, {series: (values,
    errors)})``: one cluster of bars per group name, one bar per series (its ``values`` one per group, each written
    above its bar), with error bars of ``errors`` (None, or one per group; e.g. standard deviations over seeds).
    Missing values are NaN."""
    if not panels:
        raise ValueError("panels is empty; give at least one (title, groups, series) panel")
    fig = figure(figsize=((1.5 + 0.45 * max(len(p[1]) * len(p[2]) for p in panels)) * len(panels), 3.8))
    for ax, (title, groups, series) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        width = 0.8 / max(1, len(series))
        for k, (name, (values, errors)) in enumerate(series.items()):
            if len(values) != len(groups) or (errors is not None and len(errors) != len(groups)):
                raise ValueError(f"series {name!r} of panel {title!r} needs one value (and error) per group "
                                 f"({len(groups)}); got {len(values)}")
            xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(groups))]
            bars = ax.bar(xs, values, width, yerr=errors, capsize=3, label=name)
            ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=2)
        ax.set_xticks(range(len(groups)), groups)
        ax.set(title=title, ylabel=ylabel)
        ax.set_ylim(top=ax.get_ylim()[1] * 1.15)  # room for the legend above the bars
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize="small", loc="upper center", ncols=len(series))
    fig.tight_layout()
    path = _prepare_path(path)
    fig.savefig(path, dpi=120)
    return path


def plot_code_usage(histograms, path, title: str | None = None) -> Path:
    """Codebook usage: each codebook's codes sorted from the most to the least used, against the fraction of the
    positions that chose each (log scale), one line per codebook. A codebook in full, even use is a flat line at 1/K
    reaching the right edge; dead codes are where a line stops short of it (their count is in the legend).

    ``histograms`` is a (K,) histogram of code counts, or (depth, K) for residual quantization (one line per depth),
    or a dict {name: histogram} to compare several models, one line per model and depth."""
    if not isinstance(histograms, dict):
        histograms = {"": histograms}
    fig = figure(figsize=(6.4, 3.8))
    ax = fig.subplots()
    num_codes = 1
    for name, histogram in histograms.items():
        counts = torch.as_tensor(histogram).detach().cpu().double()
        counts = counts[None] if counts.dim() == 1 else counts
        if counts.dim() != 2 or counts.shape[1] < 1 or (counts < 0).any() or (counts.sum(1) == 0).any():
            raise ValueError(f"histogram {name!r} must hold non-negative code counts of shape (K,) or (depth, K) "
                             f"with at least one count per depth; got shape {tuple(counts.shape)}")
        num_codes = max(num_codes, counts.shape[1])
        for depth, row in enumerate(counts, start=1):
            used = row[row > 0].sort(descending=True).values / row.sum()
            label = " ".join(part for part in (name, f"depth {depth}" if len(counts) > 1 else "") if part)
            dead = int((row == 0).sum())
            label = f"{label}{': ' if label else ''}{len(used)}/{len(row)} used, {dead} dead"
            ax.plot(np.arange(1, len(used) + 1), used.numpy(), lw=1.2, label=label)
    ax.axhline(1 / num_codes, color="grey", ls=":", lw=1, label=f"even use of {num_codes} codes")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1, num_codes)
    ax.set(xlabel="code rank (most used first)", ylabel="fraction of positions", title=title or "codebook usage")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    fig.tight_layout()
    path = _prepare_path(path)
    fig.savefig(path, dpi=120)
    return path
