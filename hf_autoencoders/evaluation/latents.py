"""The latent space of an autoencoder: the representation of each image, paths between two of them, and the
statistics of its latents that a diffusion model trained on them needs (`scaling_factors`)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data import iterate_batches, num_batches
from ..models import VAEModel, VQVAEModel
from .loop import seeded
from .metrics import as_images, eval_mode, model_and_unit_images, model_device, to_model_range


@torch.no_grad()
def representations(model, images, batch_size: int = 500) -> torch.Tensor:
    """`model.representation` of each image (in [0, 1], or uint8), flattened to (N, features): z = f(x) (AE), the
    posterior mean E_q[z] (VAE), z_q (VQ-VAE). What a linear probe or a latent-layout plot reads."""
    device = model_device(model)
    with eval_mode(model):
        chunks = [model.representation(to_model_range(model, x.to(device))).flatten(1).cpu()
                  for x in as_images(images).split(batch_size)]
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


def encoded_latents(model, pixel_values: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The latents a diffusion model is trained on, as diffusers' training scripts take them from `encode`: a
    sample z ~ q(z|x) of a VAE's posterior (`latent_dist`), z = f(x) of an AE, and z_e(x), the encoder output
    before quantization, of a VQ-VAE (LDM's VQ models are trained so; `decode` quantizes)."""
    output = model.encode(pixel_values)
    return output.latent_dist.sample(generator) if hasattr(output, "latent_dist") else output.latents


@torch.no_grad()
def latent_statistics(model, data, *, batch_size: int = 256, seed: int = 0, progress: bool = True) -> dict:
    r"""Mean and standard deviation of every entry of the latents `encoded_latents` gives over `data` (anything
    `data.iterate_batches` reads: uint8 images, or floats in the model's pixel range), streamed: each batch is
    reduced to its count n_b, mean m_b and sum of squared deviations M_b (float64), and the running totals are
    combined exactly (Chan et al., 1979):

        n = n_a + n_b,   m = m_a + (m_b - m_a) n_b / n,   M = M_a + M_b + (m_b - m_a)^2 n_a n_b / n,

    so memory stays that of one batch whatever the size of the set. Seeded by `seed` (the posterior samples).
    Returns {"mean", "std" (population, sqrt(M / n)), "num_images", "num_values", "latents" (which latents)}."""
    device = model_device(model)
    count, mean, squares, images = 0, 0.0, 0.0, 0
    generator = torch.Generator(device=device).manual_seed(seed)
    batches = tqdm(iterate_batches(data, batch_size), total=num_batches(data, batch_size), desc="latents",
                   disable=not progress, leave=False)
    with eval_mode(model), seeded(seed, device):
        for x, _ in batches:
            pixel_values, _ = model_and_unit_images(model, x)
            z = encoded_latents(model, pixel_values.to(device), generator).double()
            n_b, m_b = z.numel(), z.mean().item()
            m2_b = (z - m_b).pow(2).sum().item()
            total = count + n_b
            delta = m_b - mean
            mean += delta * n_b / total
            squares += m2_b + delta * delta * count * n_b / total
            count, images = total, images + len(z)
    if count == 0:
        raise ValueError("The data yielded no images; pass a non-empty dataset.")
    return {"mean": mean, "std": math.sqrt(squares / count), "num_images": images, "num_values": count,
            "latents": latents_description(model)}


def latents_description(model) -> str:
    """Which latents `encoded_latents` takes of `model`, in words."""
    if isinstance(model, VQVAEModel):
        return "encoder outputs z_e(x) before quantization"
    if isinstance(model, VAEModel):
        return "posterior samples z ~ q(z|x)"
    return "encoder outputs z = f(x)"


def scaling_factors(model, train_data, test_data=None, *, batch_size: int = 256, seed: int = 0,
                    progress: bool = True) -> dict:
    """The factors that bring the latents to zero mean and unit variance, as a diffusion model wants them:
    `shift_factor` = the mean and `scaling_factor` = 1 / the standard deviation of every entry of the latents of
    `train_data` (posterior samples for a VAE, as LDM and diffusers take them: the diffusion model is trained on
    samples, whose variance is that of the means plus the posterior's own), so that (z - shift_factor) *
    scaling_factor is standardised. With `test_data`, the same map applied to held-out latents:
    `scaled_test_mean` and `scaled_test_std` (0 and 1 where the factors carry over)."""
    train = latent_statistics(model, train_data, batch_size=batch_size, seed=seed, progress=progress)
    if not train["std"] > 0:
        raise ValueError("The latents of the training data do not vary (standard deviation 0); the model is "
                         "degenerate, so no scaling factor exists.")
    result = {"shift_factor": train["mean"], "scaling_factor": 1.0 / train["std"], "latents": train["latents"],
              "num_train_images": train["num_images"], "num_train_values": train["num_values"]}
    if test_data is not None:
        test = latent_statistics(model, test_data, batch_size=batch_size, seed=seed + 1, progress=progress)
        result.update(scaled_test_mean=(test["mean"] - train["mean"]) / train["std"],
                      scaled_test_std=test["std"] / train["std"], num_test_images=test["num_images"])
    return result


NO_SCALING_FACTOR = ("The model has no scaling_factor yet: measure it on its training data first (`hf-autoencoders "
                     "scaling-factor RUN --dataset_name ...`, or evaluation.scaling_factors).")


def scaled_latents(model, latents: torch.Tensor) -> torch.Tensor:
    """(z - shift_factor) * scaling_factor: the standardised latents a diffusion model is trained on (decoded with
    `model.decode(latents / scaling_factor + shift_factor)`)."""
    config = model.config
    if config.scaling_factor is None:
        raise ValueError(NO_SCALING_FACTOR)
    return (latents - (config.shift_factor or 0.0)) * config.scaling_factor


@torch.no_grad()
def latents_dataset(model, splits: dict, work_dir, *, label_names: list[str] | None = None, batch_size: int = 256,
                    seed: int = 0, progress: bool = True):
    """The latents of every image of `splits` ({split name: anything `data.iterate_batches` reads}) as a
    `datasets.DatasetDict`, written split by split (memory-mapped Arrow files in `work_dir`, which must outlive the
    result; `save_to_disk` copies them):

    - a model whose `encode` gives a posterior or a latent (VAE, AE): `latents`, float32 (c, h, w), the scaled
      latents `scaled_latents` of a posterior sample z ~ q(z|x) (seeded);
    - a model with codes (VQ-VAE, `encode_indices`): `codes`, int32 (h, w), the code map;

    with `label` (a `ClassLabel` with `label_names`) where the data has labels. The images must have the model's
    size and channels (refused otherwise, before anything is encoded): a resized image would give latents of
    another image than the one in the dataset."""
    import datasets
    from datasets.arrow_writer import ArrowWriter

    config = model.config
    codes = hasattr(model, "encode_indices")
    if not codes and config.scaling_factor is None:
        raise ValueError(NO_SCALING_FACTOR)
    expected = (config.num_channels, config.image_size, config.image_size)
    device = model_device(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    written = {}
    source = model.name_or_path or config.display_name
    if codes:
        description = f"Code maps of {source} (a VQ-VAE); images: model.decode_indices(codes)."
    else:
        description = (f"Latents of {source}: (z - {config.shift_factor or 0.0}) * {config.scaling_factor}, z ~ q(z|x); "
                       f"images: model.decode(latents / {config.scaling_factor} + {config.shift_factor or 0.0}).")
    with eval_mode(model), seeded(seed, device):
        for split, data in splits.items():
            first = next(iter(iterate_batches(data, 1)), None)
            if first is None:
                raise ValueError(f"The {split} split holds no images.")
            if tuple(first[0].shape[1:]) != expected:
                c, h, w = first[0].shape[1:]
                raise ValueError(f"The {split} split's images are {c}x{h}x{w} (channels x height x width), but the "
                                 f"model encodes {expected[0]}x{expected[1]}x{expected[2]} images; encode a dataset "
                                 "of the images the model was trained on, at its size and channels.")
            labelled = first[1] is not None
            shape = (config.latent_grid_size,) * 2 if codes else tuple(config.latent_shape)
            value = (datasets.Array2D(shape, "int32") if codes else datasets.Array3D(shape, "float32"))
            features = {"codes" if codes else "latents": value}
            if labelled:
                features["label"] = datasets.ClassLabel(names=label_names) if label_names else datasets.Value("int64")
            path = Path(work_dir) / f"{split}.arrow"
            with ArrowWriter(features=datasets.Features(features), path=str(path)) as writer:
                batches = tqdm(iterate_batches(data, batch_size), total=num_batches(data, batch_size),
                               desc=f"encoding {split}", disable=not progress, leave=False)
                for x, labels in batches:
                    pixel_values, _ = model_and_unit_images(model, x)
                    pixel_values = pixel_values.to(device)
                    if codes:
                        values = model.encode_indices(pixel_values).int()
                    else:
                        values = scaled_latents(model, encoded_latents(model, pixel_values, generator)).float()
                    batch = {next(iter(features)): list(values.cpu().numpy())}
                    if labelled:
                        batch["label"] = labels.long().tolist()
                    writer.write_batch(batch)
                writer.finalize()
            written[split] = datasets.Dataset.from_file(str(path), info=datasets.DatasetInfo(description=description))
    return datasets.DatasetDict(written)
