"""The one evaluation loop: every metric of an autoencoder over a dataset, exact over the whole set and across
processes. `AutoencoderTrainer.evaluate`, `hf-autoencoders evaluate`, the studies and the benchmarks all call
`evaluate`; what a model contributes comes from the model contract (`loss_terms`, `output.indices`,
`log_importance_weights`), never from its family's name.
"""

from __future__ import annotations

import contextlib
import math

import torch
from tqdm.auto import tqdm

from ..data import iterate_batches, num_batches
from ..models import code_statistics
from .metrics import eval_mode, model_and_unit_images, model_device, mse, nats_to_bits_per_dim, psnr, ssim, unit_images

# The seed of an evaluation's draws unless told otherwise: `hf-autoencoders evaluate`'s and a training run's (whatever
# seed it trained with), so that both give a model the same numbers.
EVAL_SEED = 0

# The largest K of the IWAE bound: twice the 5000 the IWAE paper evaluates with. The work grows as images x K decoder
# passes, so a larger K costs far more time while the bound moves by less than its own noise.
MAX_IMPORTANCE_SAMPLES = 10_000


def likelihood_bounds(model, pixel_values: torch.Tensor, num_samples: int, generator=None, max_pairs: int = 4096):
    r"""The two bounds on log p(x) per image, in nats, from K = `num_samples` importance weights
    w_k = p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x) (`model.log_importance_weights`):

        ELBO(x) ~= (1/K) sum_k log w_k,      IWAE_K(x) = log (1/K) sum_k w_k   (Burda et al., 2016),

    both <= log p(x) (the first in expectation), IWAE tightening as K grows. The weights are drawn in chunks of at
    most `max_pairs` (sample, image) pairs. Returns (elbo, iwae), each of shape (batch,), float64."""
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples (K of the IWAE bound) must be a positive integer, got {num_samples!r}.")
    chunk = max(1, max_pairs // len(pixel_values))
    log_w = torch.cat([
        model.log_importance_weights(pixel_values, min(chunk, num_samples - start), generator).double()
        for start in range(0, num_samples, chunk)
    ])
    return log_w.mean(0), torch.logsumexp(log_w, 0) - math.log(num_samples)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device):
    """Run a block with the global RNGs seeded (the VAE's posterior samples), restoring their state afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def evaluate(
    model,
    data,
    *,
    batch_size: int = 256,
    num_importance_samples: int = 0,
    noise_std: float = 0.0,
    max_examples: int | None = None,
    seed: int = EVAL_SEED,
    accelerator=None,
    forward_context=contextlib.nullcontext,
    on_batch=None,
    progress: bool = True,
    return_code_histogram: bool = False,
    perceptual=None,
) -> dict[str, float] | tuple[dict[str, float], torch.Tensor]:
    """
    Every metric of an autoencoder over `data` (anything `data.iterate_batches` reads: a dataset, a DataLoader, a
    tensor, ...), as a dict of floats (and the integer counts `num_examples`, `iwae_num_samples`).

    - Every model: `loss` and each of `model.loss_terms` (set averages of the per-image values), `mse` (per pixel),
      `psnr` (dB) and `ssim`, per image on the reconstruction mapped to [0, 1] and clamped, averaged over the set.
      The batches are uint8 images (mapped into the model's pixel range) or floats in the model's range.
    - A model whose output has a code map (`indices`), codebook health over the whole set, from the set's code
      histogram (never a batch's): `codebook_usage` (fraction of the `config.num_embeddings` codes used at least
      once), `codebook_dead_codes` (how many were never used), `codebook_perplexity` and `codebook_entropy`
      (`models.code_statistics`). With residual quantization of depth n = `config.num_quantizers` > 1, each depth d
      has its own codebook and its own `codebook_usage_depth{d}`, `codebook_dead_codes_depth{d}`,
      `codebook_perplexity_depth{d}` and `codebook_entropy_depth{d}` (d = 1 .. n); the unsuffixed figures are then
      over all n codebooks: usage of the n K codewords, dead codewords in all, mean perplexity and entropy.
      `return_code_histogram=True` returns `(results, histogram)`, the (n, K) counts of every code at each depth
      (n = 1 without residual quantization), summed over processes, on the CPU.
    - With `num_importance_samples` K > 0 and a model with `log_importance_weights` (VAE): `elbo` and `iwae_nll`
      (nats per image, `likelihood_bounds`) and `iwae_num_samples`; with a discrete likelihood
      (`model.likelihood.discrete`) also `elbo_bits_per_dim` and `iwae_bits_per_dim` (of the negated bounds).
    - With `noise_std` s > 0 the model reads x + s * eps (a fixed draw) and is scored against the clean x (a
      denoising test); `input_psnr` and `input_ssim` score the noisy input itself.
    - With a `perceptual` network (`perceptual.PerceptualDistance`): `perceptual_<its name>`, the perceptual
      distance of each reconstruction (clamped) to its image, averaged.

    Seeded (`seed`), so the same call gives the same numbers. With an `accelerate` `accelerator`, each process
    evaluates its shard and the sums are added across processes (fixed-size tensors, so a process without a batch
    still joins every collective); `forward_context` wraps each model call (e.g. the Trainer's autocast), and
    `on_batch(images, output)` sees every batch's clean images, in [0, 1], and model output (e.g. to keep
    reconstructions).
    """
    if not 0 <= num_importance_samples <= MAX_IMPORTANCE_SAMPLES:
        raise ValueError(f"num_importance_samples must lie in [0, {MAX_IMPORTANCE_SAMPLES}] (0 skips the IWAE bound), "
                         f"got {num_importance_samples}.")
    device = model_device(model)
    rank = accelerator.process_index if accelerator is not None else 0
    bounds = num_importance_samples > 0 and hasattr(model, "log_importance_weights")
    names = ["loss", *model.loss_terms, "mse", "psnr", "ssim"]
    names += ["input_psnr", "input_ssim"] if noise_std > 0 else []
    names += ["elbo", "iwae_nll"] if bounds else []
    names += [f"perceptual_{perceptual.name}"] if perceptual is not None else []
    sums = torch.zeros(len(names), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    num_codes = getattr(model.config, "num_embeddings", None)
    depth = getattr(model.config, "num_quantizers", 1) if num_codes else 0
    histogram = torch.zeros(depth, num_codes or 0, dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(seed + 1 + rank)
    noise_generator = torch.Generator(device=device).manual_seed(seed + 2 + rank)
    batches = iterate_batches(data, batch_size)
    total = num_batches(data, batch_size)
    bar = tqdm(batches, desc="evaluating", total=total, disable=not progress or rank != 0, leave=False)
    with eval_mode(model), seeded(seed + rank, device):
        for index, (x, _) in enumerate(bar):
            # Reseeded per batch: a DataLoader draws from the global RNG when it starts, so the model's own draws
            # (a VAE's posterior samples) must not depend on what delivers the images.
            torch.manual_seed(seed + rank + 7919 * index)
            if max_examples is not None:
                if count >= max_examples:
                    break
                x = x[: max_examples - int(count)]
            x, unit = (images.to(device) for images in model_and_unit_images(model, x))
            inputs = x + noise_std * torch.randn(x.shape, generator=noise_generator, device=device) if noise_std else x
            with forward_context():
                output = model(inputs, target_pixel_values=x if noise_std else None)
            if on_batch is not None:
                on_batch(unit, output)
            reconstruction = unit_images(model, output.reconstruction)
            values = {name: getattr(output, name) * len(x) for name in ["loss", *model.loss_terms]}
            values.update(
                mse=mse(unit, reconstruction, reduction="none").sum(),
                psnr=psnr(unit, reconstruction, reduction="none").sum(),
                ssim=ssim(unit, reconstruction, reduction="none").sum(),
            )
            if noise_std > 0:
                noisy = unit_images(model, inputs)
                values.update(input_psnr=psnr(unit, noisy, reduction="none").sum(),
                              input_ssim=ssim(unit, noisy, reduction="none").sum())
            if perceptual is not None:
                values[f"perceptual_{perceptual.name}"] = perceptual(reconstruction, unit).sum()
            if bounds:
                elbo, iwae = likelihood_bounds(model, x, num_importance_samples, generator)
                values.update(elbo=elbo.sum(), iwae_nll=-iwae.sum())
            sums += torch.stack([torch.as_tensor(values[name], dtype=torch.float64, device=device) for name in names])
            count += len(x)
            indices = getattr(output, "indices", None)
            if indices is not None and num_codes:
                histogram += code_histogram(indices, num_codes, depth)
    if accelerator is not None:
        sums, count = accelerator.reduce(sums, reduction="sum"), accelerator.reduce(count, reduction="sum")
        if num_codes:
            histogram = accelerator.reduce(histogram, reduction="sum")
    if count == 0:
        raise ValueError("The evaluation data yielded no images; pass a non-empty dataset.")
    results: dict[str, float] = {"num_examples": int(count)}
    results.update({name: (total / count).item() for name, total in zip(names, sums)})
    if bounds:
        results["iwae_num_samples"] = num_importance_samples
        if getattr(model.likelihood, "discrete", False):
            num_dims = model.config.num_pixels
            results["elbo_bits_per_dim"] = nats_to_bits_per_dim(-results["elbo"], num_dims)
            results["iwae_bits_per_dim"] = nats_to_bits_per_dim(results["iwae_nll"], num_dims)
    if histogram.sum() > 0:
        results.update(codebook_health(histogram))
    if return_code_histogram:
        return results, histogram.cpu()
    return results


def code_histogram(indices: torch.Tensor, num_codes: int, depth: int = 1) -> torch.Tensor:
    """Counts (depth, K) of each code at each depth in `indices` of shape (batch, h, w) (depth 1) or
    (batch, depth, h, w) (residual quantization), with one bincount."""
    if depth == 1:
        return torch.bincount(indices.flatten(), minlength=num_codes)[None]
    offsets = torch.arange(depth, device=indices.device).view(1, depth, 1, 1) * num_codes
    return torch.bincount((indices + offsets).flatten(), minlength=depth * num_codes).view(depth, num_codes)


def codebook_health(histogram: torch.Tensor) -> dict[str, float]:
    """Codebook usage, dead codes, perplexity and entropy of a (depth, K) histogram of codes (see `evaluate`)."""
    per_depth = [code_statistics(counts) for counts in histogram]
    results = {"codebook_perplexity": sum(s["perplexity"].item() for s in per_depth) / len(per_depth),
               "codebook_usage": sum(s["usage"].item() for s in per_depth) / len(per_depth),
               "codebook_entropy": sum(s["entropy"].item() for s in per_depth) / len(per_depth) + 0.0,
               "codebook_dead_codes": sum(int(s["dead_codes"]) for s in per_depth)}
    if len(per_depth) > 1:
        for d, stats in enumerate(per_depth, start=1):
            results.update({f"codebook_usage_depth{d}": stats["usage"].item(),
                            f"codebook_dead_codes_depth{d}": int(stats["dead_codes"]),
                            f"codebook_perplexity_depth{d}": stats["perplexity"].item(),
                            f"codebook_entropy_depth{d}": stats["entropy"].item() + 0.0})
    return results
