"""The latent space of an autoencoder: the representation of each image, and paths between two of them."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .metrics import as_images, eval_mode, model_device


@torch.no_grad()
def representations(model, images, batch_size: int = 500) -> torch.Tensor:
    """`model.representation` of each image, flattened to (N, features): z = f(x) (AE), the posterior mean E_q[z]
    (VAE), z_q (VQ-VAE). What a linear probe or a latent-layout plot reads."""
    device = model_device(model)
    with eval_mode(model):
        chunks = [model.representation(x.to(device)).flatten(1).cpu() for x in as_images(images).split(batch_size)]
    return torch.cat(chunks)


def interpolate_latents(z0, z1, steps: int, method: str = "linear") -> torch.Tensor:
    """Points between batches of latents ``z0`` and ``z1`` of shape (batch, *latent_shape).

    Returns (batch, steps, *latent_shape), including both end points. ``"linear"``: (1 - t) z0 + t z1.
    ``"slerp"``: spherical interpolation of each flattened latent, sin((1 - t) w) / sin(w) z0 + sin(t w) / sin(w) z1
    with w the angle between z0 and z1 (Shoemake, 1985; White, 2016), which keeps Gaussian latents at a typical
    norm; it falls back to linear where the two are (anti)parallel. To interpolate a single pair, pass ``z[None]``.
    """
    z0, z1 = torch.as_tensor(z0), torch.as_tensor(z1)
    if z0.shape != z1.shape or z0.dim() < 2:
        raise ValueError(
            f"z0 and z1 must share a shape (batch, *latent_shape); got {tuple(z0.shape)} and {tuple(z1.shape)}"
        )
    if steps < 2:
        raise ValueError(f"steps must be at least 2 (the two end points); got {steps}")
    if method not in ("linear", "slerp"):
        raise ValueError(f"method must be 'linear' or 'slerp'; got {method!r}")
    t = torch.linspace(0, 1, steps, dtype=torch.float64, device=z0.device).view(1, steps, 1)
    a, b = z0.flatten(1).double().unsqueeze(1), z1.flatten(1).double().unsqueeze(1)  # (batch, 1, D)
    out = (1 - t) * a + t * b
    if method == "slerp":
        cos = F.cosine_similarity(a, b, dim=-1).clamp(-1, 1).unsqueeze(-1)  # (batch, 1, 1)
        omega = torch.arccos(cos)
        sin = torch.sin(omega)
        spherical = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / sin.clamp_min(1e-12)
        out = torch.where(sin > 1e-6, spherical, out)
    return out.view(z0.shape[0], steps, *z0.shape[1:]).to(z0.dtype)
