"""Probes of a model beyond its reconstruction metrics: the memory a training step holds (`activation_bytes`,
`peak_training_bytes`, `training_memory`), what one latent cell sees of the image (`latent_cell_gradient`,
`outside_share`), and where within a patch the reconstruction error lies (`error_map`, `border_interior_ratio`).
The backbones experiment and the benchmarks measure with these.
"""

from __future__ import annotations

import torch

from .loop import evaluate

# ---------------------------------------------------------------------------------------------------------- memory


def activation_bytes(model, pixel_values: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one training forward of `pixel_values` (each
    storage counted once, the parameters left out): the memory of a training step that grows with the batch. It
    is a lower bound of the step's peak, which adds the transient buffers of single operations."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(pixel_values).loss
    del loss
    return sum(kept.values())


def peak_training_bytes(model, pixel_values: torch.Tensor, optimizer=None) -> int:
    """Peak bytes held by live tensors (parameters, gradients, optimizer state, activations, temporaries) during one
    training step of `model` on `pixel_values`: forward, backward and, with `optimizer`, its step. One step is taken
    first, so that one-off work (a codebook's k-means initialisation) is done and the optimizer state exists. On CUDA
    `torch.cuda.max_memory_allocated`; on CPU every storage is tracked by torch's `MemTracker` (a
    `TorchDispatchMode`), since the process's resident memory also holds what the allocator keeps after freeing."""

    def step():
        model(pixel_values).loss.backward()
        if optimizer is not None:
            optimizer.step()
        model.zero_grad(set_to_none=True)

    model.train()
    step()
    device = pixel_values.device
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = MemTracker()
    tracker.track_external(model, *([optimizer] if optimizer is not None else []))
    with tracker:
        step()
    return int(tracker.get_tracker_snapshot("peak")[device]["Total"])


def training_memory(model, pixel_values: torch.Tensor, optimizer=None) -> tuple[int, float]:
    """(peak bytes of a training step on the batch B = `pixel_values`, bytes per sample), the second the slope
    (peak(B) - peak(B/2)) / (B - B/2) of `peak_training_bytes`, which leaves out what does not grow with the batch
    (weights, gradients, optimizer state)."""
    full, half = len(pixel_values), len(pixel_values) // 2
    if half < 1:
        raise ValueError(f"the slope of the peak needs a batch of at least 2 images, got {full}")
    small, large = (peak_training_bytes(model, pixel_values[:n], optimizer) for n in (half, full))
    return large, (large - small) / (full - half)


# ------------------------------------------------------------------------------------------ locality and seams


@torch.enable_grad()
def latent_cell_gradient(model, images: torch.Tensor) -> torch.Tensor | None:
    r"""The effective receptive field of the centre cell (i, j) of a spatial latent z_e (Luo et al., 2016):
    E_x |d(sum_c z_e[c, i, j]) / dx| summed over input channels, an (H, W) map. None for a vector latent."""
    x = images.to(model.device).clone().requires_grad_(True)
    z = getattr(model.encode(x), "latents", None)
    if z is None or z.dim() != 4:
        return None
    i, j = z.shape[-2] // 2, z.shape[-1] // 2
    (grad,) = torch.autograd.grad(z[:, :, i, j].sum(), x)
    return grad.abs().sum(1).mean(0).cpu()


def outside_share(gradient_map: torch.Tensor, grid: int, radius_cells: int = 1) -> tuple[float, float]:
    """The share of `gradient_map`'s mass outside the (2 r + 1)^2 block of latent cells around the centre cell of a
    `grid` x `grid` latent over the image, and the share of the image's area outside it (what a gradient spread
    evenly would give). Returns (mass share, area share)."""
    size = gradient_map.shape[-1]
    cell, centre = size // grid, grid // 2
    block = slice(max(0, (centre - radius_cells) * cell), min(size, (centre + radius_cells + 1) * cell))
    inside = gradient_map[block, block]
    return 1 - (inside.sum() / gradient_map.sum()).item(), 1 - inside.numel() / gradient_map.numel()


def patch_border_mask(image_size: int, patch_size: int) -> torch.Tensor:
    """(H, W) booleans: True on the pixels of the outer ring of each `patch_size` x `patch_size` patch."""
    position = torch.arange(image_size) % patch_size
    edge = (position == 0) | (position == patch_size - 1)
    return edge[:, None] | edge[None, :]


def border_interior_ratio(error_map: torch.Tensor, patch_size: int) -> float:
    """Mean of a per-pixel error map (H, W) over patch-border pixels over its mean over patch-interior pixels: 1 when
    the error does not care where a pixel sits in its patch, above 1 when it piles up at patch borders (seams)."""
    if patch_size < 3:
        raise ValueError(f"a patch of size {patch_size} has no interior pixels; the ratio needs patch_size >= 3")
    if error_map.shape[-1] % patch_size or error_map.shape[-2] % patch_size:
        raise ValueError(f"the error map {tuple(error_map.shape)} does not tile into {patch_size}x{patch_size} patches")
    mask = patch_border_mask(error_map.shape[-1], patch_size)[: error_map.shape[-2]]
    return (error_map[mask].mean() / error_map[~mask].mean()).item()


def error_map(model, images: torch.Tensor, batch_size: int = 500, seed: int = 0) -> torch.Tensor:
    """Squared reconstruction error per pixel position (H, W), summed over channels and averaged over `images`
    (float, in [0, 1]), through `evaluate` (seeded by `seed`)."""
    total = torch.zeros(images.shape[-2:], dtype=torch.float64)

    def on_batch(x, out):
        total.add_(((out.reconstruction.float().clamp(0, 1) - x) ** 2).sum((0, 1)).double().cpu())

    evaluate(model, images, batch_size=batch_size, seed=seed, progress=False, on_batch=on_batch)
    return total / len(images)


__all__ = ["activation_bytes", "border_interior_ratio", "error_map", "latent_cell_gradient", "outside_share",
           "patch_border_mask", "peak_training_bytes", "training_memory"]
