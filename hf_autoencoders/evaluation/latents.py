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


@torch.no_grad()
def aggregate_posterior(model, images, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The mean and the variance, per latent dimension (flattened), of the aggregate posterior over `images`,
    q(z) = (1/N) sum_n q(z|x_n): the distribution of the latents the decoder is fed, which a VAE's prior should
    match. With q(z|x_n) = N(mu_n, diag sigma_n^2) (`model.encode(x).latent_dist`), by the law of total variance

        E_q[z_j] = mean_n mu_nj,        Var_q[z_j] = var_n mu_nj + mean_n sigma_nj^2,

    so the spread of the posterior means alone understates it by the posteriors' own widths. A model without a
    posterior (AE, VQ-VAE) has sigma = 0: the moments of `model.representation(x)`. Float64 tensors (D,)."""
    device = model_device(model)
    count, total, squares, widths = 0, 0.0, 0.0, 0.0
    with eval_mode(model):
        for x in as_images(images).split(batch_size):
            x = x.to(device)
            posterior = getattr(model.encode(x), "latent_dist", None)
            mean = (model.representation(x) if posterior is None else posterior.mean).flatten(1).double().cpu()
            variance = getattr(posterior, "var", None)
            count += len(mean)
            total, squares = total + mean.sum(0), squares + mean.pow(2).sum(0)
            widths = widths + (0.0 if variance is None else variance.flatten(1).double().cpu().sum(0))
    mean = total / count
    return mean, (squares / count - mean.pow(2)).clamp_min(0) + widths / count


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
