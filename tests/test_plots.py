import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from hf_autoencoders import plots
from hf_autoencoders.plots import (
    plot_interpolations,
    plot_latent_layout,
    plot_loss_curves,
    plot_reconstructions,
    plot_samples,
    save_image_grid,
)


def images(n, c=1, size=28, seed=0):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def load(path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 0
    return np.asarray(Image.open(path))


def tile(grid, row, col, size, padding=2):
    top, left = padding + row * (size + padding), padding + col * (size + padding)
    return grid[top : top + size, left : left + size]


def as_uint8(image):  # (C, H, W) in [0, 1] -> what the PNG stores
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


def test_save_image_grid_grayscale_layout_and_padding(tmp_path):
    x = images(10)
    path = save_image_grid(x, tmp_path / "sub" / "grid.png", nrow=4)  # parent folder is created
    assert path == tmp_path / "sub" / "grid.png"
    grid = load(path)
    assert Image.open(path).mode == "L" and grid.shape == (3 * 30 + 2, 4 * 30 + 2)
    assert np.array_equal(tile(grid, 0, 0, 28), as_uint8(x[0]))
    assert np.array_equal(tile(grid, 2, 1, 28), as_uint8(x[9]))
    assert (grid[0] == 255).all() and (grid[:, 30:32] == 255).all()  # white padding
    assert (tile(grid, 2, 3, 28) == 255).all()  # missing tiles stay blank


def test_save_image_grid_rgb_scale_and_overwrite(tmp_path):
    x = images(3, c=3, size=32)
    path = save_image_grid(x, tmp_path / "rgb.png", nrow=8, padding=0, scale=2)
    grid = load(path)
    assert Image.open(path).mode == "RGB" and grid.shape == (64, 3 * 64, 3)
    assert np.array_equal(grid[::2, ::2][:, 32:64], as_uint8(x[1]))
    save_image_grid(torch.zeros(1, 3, 8, 8), path, padding=0)  # a run directory's plots are simply rewritten
    assert load(path).shape == (8, 8, 3)


def test_save_image_grid_rejects_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match="C = 1 or 3"):
        save_image_grid(torch.rand(2, 2, 8, 8), tmp_path / "x.png")
    with pytest.raises(ValueError, match="empty"):
        save_image_grid(torch.rand(0, 1, 8, 8), tmp_path / "x.png")
    assert load(save_image_grid(torch.rand(2, 8, 8), tmp_path / "hw.png")).shape == (12, 22)  # (N, H, W)


def test_plot_reconstructions_pairs_rows(tmp_path):
    originals, reconstructions = images(8, seed=0), images(8, seed=1)
    grid = load(plot_reconstructions(originals, reconstructions, tmp_path / "rec.png", n=6, nrow=4, scale=1))
    assert grid.shape[0] == 4 * 30 + 2  # two pairs of rows of 4, right of their labels
    grid = grid[:, grid.shape[1] - (4 * 30 + 2):]
    assert np.array_equal(tile(grid, 0, 2, 28), as_uint8(originals[2]))
    assert np.array_equal(tile(grid, 1, 2, 28), as_uint8(reconstructions[2]))
    assert np.array_equal(tile(grid, 2, 1, 28), as_uint8(originals[5]))
    assert np.array_equal(tile(grid, 3, 1, 28), as_uint8(reconstructions[5]))
    assert (tile(grid, 3, 3, 28) == 255).all()
    with pytest.raises(ValueError, match="same shape"):
        plot_reconstructions(originals, reconstructions[:4], tmp_path / "bad.png")


def test_plot_samples_and_interpolations(tmp_path):
    assert load(plot_samples(images(16, c=3, size=64), tmp_path / "samples.png", scale=1)).shape == (
        2 * 66 + 2, 8 * 66 + 2, 3)
    rows = images(21).view(3, 7, 1, 28, 28)
    grid = load(plot_interpolations(rows, tmp_path / "interp.png", scale=1))
    assert grid.shape == (3 * 30 + 2, 7 * 30 + 2)
    assert np.array_equal(tile(grid, 1, 6, 28), as_uint8(rows[1, 6]))
    as_list = load(plot_interpolations(list(rows), tmp_path / "interp_list.png", scale=1))
    assert np.array_equal(as_list, grid)


def clustered_latents(n, dim=16, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    return 4 * torch.randn(classes, dim, generator=g)[labels] + torch.randn(n, dim, generator=g), labels


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_plot_latent_layout(tmp_path, method):
    latents, labels = clustered_latents(150)
    path = plot_latent_layout(latents, labels, tmp_path / f"{method}.png", method=method, title="test")
    assert load(path).shape[:2] == (660, 720)  # 6 x 5.5 inches at 120 dpi


def test_plot_latent_layout_variants(tmp_path):
    latents, labels = clustered_latents(50)
    load(plot_latent_layout(latents, None, tmp_path / "nolabels.png"))
    load(plot_latent_layout(latents, labels.double() / 7, tmp_path / "continuous.png"))  # colorbar
    load(plot_latent_layout(latents[:, :1], labels, tmp_path / "1d.png"))
    load(plot_latent_layout(latents.view(50, 4, 2, 2), labels, tmp_path / "grid_latents.png"))
    with pytest.raises(ValueError, match="method"):
        plot_latent_layout(latents, labels, tmp_path / "x.png", method="umap")
    with pytest.raises(ValueError, match="one entry per latent"):
        plot_latent_layout(latents, labels[:10], tmp_path / "x.png")


def test_plot_latent_layout_subsamples_for_tsne(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(plots, "_embed_2d", lambda z, method, seed: seen.append(len(z)) or z[:, :2])
    latents, labels = clustered_latents(2500)
    plot_latent_layout(latents, labels, tmp_path / "tsne.png", method="tsne")
    plot_latent_layout(latents, labels, tmp_path / "pca.png", method="pca")
    assert seen == [2000, 2500]


def fake_log_history():
    history = []
    for step in range(10, 110, 10):
        history.append({"loss": 100 / step, "reconstruction_loss": 80 / step, "kl_loss": 20 / step,
                        "grad_norm": 1.0, "learning_rate": 1e-3, "epoch": step / 100, "step": step})
        if step % 50 == 0:
            history.append({"eval_loss": 110 / step, "eval_reconstruction_loss": 90 / step, "eval_kl_loss": 20 / step,
                            "eval_runtime": 0.1, "epoch": step / 100, "step": step})
    history.append({"train_runtime": 5.0, "train_loss": 0.5, "total_flos": 0.0, "epoch": 1.0, "step": 100})
    return history


def test_loss_series_picks_loss_terms():
    series = plots._loss_series(fake_log_history())
    assert set(series) == {"loss", "reconstruction_loss", "kl_loss"}
    steps, values = series["loss"]["train"]
    assert steps == list(range(10, 110, 10)) and values[0] == pytest.approx(10.0)
    assert series["kl_loss"]["eval"] == ([50, 100], [0.4, 0.2])
    assert set(plots._loss_series(fake_log_history(), keys=["kl_loss"])) == {"kl_loss"}


def test_plot_loss_curves_from_history_and_trainer_state(tmp_path):
    history = fake_log_history()
    path = plot_loss_curves(history, tmp_path / "curves.png", title="run")
    assert load(path).shape[:2] == (420, 1620)  # one row of three 4.5 x 3.5 inch panels at 120 dpi
    state = tmp_path / "checkpoint-100" / "trainer_state.json"
    state.parent.mkdir()
    state.write_text(json.dumps({"global_step": 100, "log_history": history}))
    assert np.array_equal(load(plot_loss_curves(state, tmp_path / "from_file.png", title="run")), load(path))
    history.append({"loss": -1.0, "commitment_loss": 0.1, "step": 110})  # a negative term: linear y axis
    assert load(plot_loss_curves(history, tmp_path / "more.png")).shape[:2] == (2 * 420, 1620)
    with pytest.raises(ValueError, match="no loss values"):
        plot_loss_curves([{"learning_rate": 1.0, "step": 1}], tmp_path / "empty.png")


def test_reconstruction_rows_are_labelled_on_the_picture(tmp_path):
    """Four rows (input, reconstruction, input, reconstruction) cannot be captioned "top / bottom": each row says
    what it holds, in a label column left of the tiles."""
    originals, reconstructions = images(16, seed=0), images(16, seed=1)
    grid = load(plot_reconstructions(originals, reconstructions, tmp_path / "rec.png", nrow=8, scale=1))
    margin = grid.shape[1] - (8 * 30 + 2)
    assert margin > 20 and grid.shape[0] == 4 * 30 + 2
    for row in range(4):
        band = grid[2 + row * 30 : row * 30 + 30, :margin]
        assert (band < 128).any(), f"row {row} has no label"
    assert np.array_equal(grid[2:30, margin + 2 : margin + 30], as_uint8(originals[0]))
    assert np.array_equal(grid[32:60, margin + 2 : margin + 30], as_uint8(reconstructions[0]))
    top, second = grid[2:30, :margin], grid[32:60, :margin]
    assert not np.array_equal(top, second) and np.array_equal(top, grid[62:90, :margin])  # two labels, alternating


def test_log_axes_read_as_plain_numbers():
    """A loss between 40 and 70 on a log axis: its ticks read 40, 50, 60, not 5.4x10^1."""
    history = [{"loss": 70 - 3 * step, "step": step} for step in range(1, 11)]
    fig = plots.loss_curves_figure(history)
    fig.canvas.draw()
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True) if t.get_text()]
    assert labels and all(re.fullmatch(r"[0-9.]+(e[-+][0-9]+)?", label) for label in labels), labels
    assert {"40", "50", "60"} <= set(labels)
