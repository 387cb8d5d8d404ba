"""The estimator study: how gradients reach a VAE's encoder, and how well log p(x) can be estimated by sampling.

Gradients. The ELBO's reconstruction term E_{q(z|x)}[f(z)], f(z) = -log p(x|z), has two unbiased gradient estimators
with respect to the encoder parameters phi:

    pathwise (reparameterization):  E_eps[ df/dz dz/dphi ],            z = mu + sigma * eps
    score function (REINFORCE):     E_q[ (f(z) - b) d/dphi log q(z|x) ],  b a baseline independent of z

`gradient_statistics` draws one estimator's gradient many times on the same parameters and batch and keeps the mean
and variance of every coordinate; `summarize_gradients` turns them into the total variance (trace of the
covariance), the signal-to-noise ratio |mean| / std and the agreement with a reference estimator. For a categorical
latent c the exact expectation over c is a sum over the K categories (`enumerated_loss`), against which the bias of
the Gumbel-softmax relaxation can be measured.

log p(x). Two Monte Carlo estimates with K samples, both of the form log (1/K) sum_k w_k:

    prior sampling:        w_k = p(x|z_k),                     z_k ~ p(z)
    importance sampling:   w_k = p(x|z_k) p(z_k) / q(z_k|x),   z_k ~ q(z|x)    (the IWAE estimate)

Both are consistent and, by Jensen, biased low for finite K; their efficiency is measured by the effective sample
size ESS = (sum_k w_k)^2 / sum_k w_k^2. `LinearGaussianModel` is a toy where log p(x) is exact.

`hf_autoencoders.studies.estimators` runs all of it on small trained VAEs (`hf-autoencoders experiment estimators`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from ..models import DiagonalGaussian, VAEModel, standard_normal_log_prob

# The estimators of the study, as VAEConfig fields; None = `enumerated_loss` (exact sum over the categories).
SF, BASELINE = "score_function", "score_function_baseline"
GAUSSIAN_ESTIMATORS = {
    "reparameterization": {"gradient_estimator": "reparameterization"},
    "score_function (no baseline)": {"gradient_estimator": SF, BASELINE: "none"},
    "score_function (moving average)": {"gradient_estimator": SF, BASELINE: "moving_average"},
    "score_function (leave-one-out)": {"gradient_estimator": SF, BASELINE: "leave_one_out"},
}
CATEGORICAL_ESTIMATORS = {
    "exact sum over c": None,
    "gumbel_softmax": {"categorical_estimator": "gumbel_softmax"},
    "score_function (no baseline)": {"categorical_estimator": SF, BASELINE: "none"},
    "score_function (moving average)": {"categorical_estimator": SF, BASELINE: "moving_average"},
    "score_function (leave-one-out)": {"categorical_estimator": SF, BASELINE: "leave_one_out"},
}


# ------------------------------------------------------------------------------------------- gradient estimators


@dataclass
class GradientStatistics:
    """Per-coordinate mean and (unbiased) variance of `num_draws` gradient draws, flattened over the parameters."""

    mean: torch.Tensor
    variance: torch.Tensor
    num_draws: int


@contextlib.contextmanager
def configured(model: VAEModel, **fields):
    """Temporarily set VAEConfig fields (the estimator) on `model`; the moving-average baseline starts afresh and
    is restored afterwards."""
    old = {name: getattr(model.config, name) for name in fields}
    old_baseline = model.score_baseline.clone()
    for name, value in fields.items():
        setattr(model.config, name, value)
    model.score_baseline.zero_()
    try:
        yield model
    finally:
        for name, value in old.items():
            setattr(model.config, name, value)
        model.score_baseline.copy_(old_baseline)


def enumerated_loss(model: VAEModel, pixel_values: torch.Tensor) -> torch.Tensor:
    r"""The negative ELBO of a categorical VAE with the expectation over c summed exactly,

        sum_k pi_k(x) E_{q(z|x)}[-log p(x | e_k, z)] + KL,

    with z reparameterized (`num_latent_samples` draws): an unbiased gradient estimator with no variance from c, at
    K times the decoder cost. Averaged over the batch, like the model's loss."""
    num_categories, num_samples = model.config.num_categories, model.config.num_latent_samples
    if num_categories == 0:
        raise ValueError("enumerated_loss needs a categorical latent; the model has num_categories=0.")
    posterior = model.encode(pixel_values).latent_dist
    z = posterior.gaussian.sample(num_samples=num_samples)  # (S, B, D)
    one_hot = torch.eye(num_categories, dtype=z.dtype, device=z.device)[:, None, None, :]
    latents = torch.cat([one_hot.expand(-1, *z.shape[:2], -1), z.expand(num_categories, *z.shape)], -1)
    targets = pixel_values.expand(num_categories * num_samples, *pixel_values.shape).flatten(0, 1)
    reconstruction = model.reconstruction_loss(targets, model.decoder(latents.flatten(0, 2)))
    reconstruction = reconstruction.view(num_categories, num_samples, -1).mean(1)  # (K, B)
    expected = (posterior.probs.T * reconstruction).sum(0)
    return (expected + model.config.kl_weight * posterior.kl()).mean()


def gradient_statistics(
    model: VAEModel,
    pixel_values: torch.Tensor,
    num_draws: int,
    parameters=None,
    exact_categories: bool = False,
    warmup: int = 10,
    seed: int = 0,
    **estimator,
) -> GradientStatistics:
    """Draw the gradient of the training loss (negative ELBO, batch mean) with respect to `parameters` (default:
    the encoder's) `num_draws` times on the same parameters and batch, with the estimator given as VAEConfig fields
    (`gradient_estimator`, `score_function_baseline`, `categorical_estimator`, `num_latent_samples`), or
    `enumerated_loss` if `exact_categories`. The first `warmup` draws are not counted (they start the
    moving-average baseline). The caller's random state is left untouched."""
    parameters = list(model.encoder.parameters() if parameters is None else parameters)
    was_training = model.training
    model.train()
    total = shift = total_sq = None
    with configured(model, **estimator), torch.random.fork_rng():
        torch.manual_seed(seed)
        for draw in range(warmup + num_draws):
            loss = enumerated_loss(model, pixel_values) if exact_categories else model(pixel_values).loss
            grads = torch.autograd.grad(loss, parameters, allow_unused=True)
            flat = torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(parameters, grads)])
            if draw < warmup:
                continue
            flat = flat.double()
            if shift is None:  # moments about the first draw, to avoid cancellation
                shift, total, total_sq = flat, torch.zeros_like(flat), torch.zeros_like(flat)
            total += flat - shift
            total_sq += (flat - shift).pow(2)
    model.train(was_training)
    n = num_draws
    mean = shift + total / n
    variance = (total_sq - total.pow(2) / n) / max(n - 1, 1)
    return GradientStatistics(mean=mean, variance=variance.clamp(min=0), num_draws=n)


def summarize_gradients(stats: GradientStatistics, reference: GradientStatistics | None = None) -> dict:
    """Numbers of one estimator: total variance (trace of the covariance of one draw), mean variance per
    coordinate, norm of the mean gradient, average signal-to-noise ratio |mean| / std over coordinates with
    nonzero variance, and against a `reference` estimator: the cosine similarity of the means, the relative
    distance ||mean - mean_ref|| / ||mean_ref||, and the mean of the squared z-scores
    (mean - mean_ref)^2 / (var / n + var_ref / n) over coordinates, which is about 1 if the two agree in
    expectation and much larger if one is biased."""
    std = stats.variance.sqrt()
    moving = std > 0
    summary = {
        "num_draws": stats.num_draws,
        "num_parameters": stats.mean.numel(),
        "total_variance": stats.variance.sum().item(),
        "mean_variance": stats.variance.mean().item(),
        "mean_gradient_norm": stats.mean.norm().item(),
        "snr": (stats.mean[moving].abs() / std[moving]).mean().item() if moving.any() else float("nan"),
    }
    if reference is not None:
        difference = stats.mean - reference.mean
        pooled = stats.variance / stats.num_draws + reference.variance / reference.num_draws
        both = pooled > 0
        summary.update(
            cosine_to_reference=torch.nn.functional.cosine_similarity(stats.mean, reference.mean, dim=0).item(),
            relative_distance_to_reference=(difference.norm() / reference.mean.norm()).item(),
            mean_squared_z=(difference[both].pow(2) / pooled[both]).mean().item(),
        )
    return summary


def compare_gradient_estimators(
    model: VAEModel, pixel_values: torch.Tensor, num_draws: int, num_latent_samples: int = 4, seed: int = 0
) -> dict[str, dict]:
    """Every estimator of `GAUSSIAN_ESTIMATORS` (or `CATEGORICAL_ESTIMATORS` for a categorical VAE, where the
    continuous part stays reparameterized) on the same model and batch, with the same `num_latent_samples`.
    Reference: reparameterization, or the exact sum over c for a categorical VAE."""
    categorical = model.config.num_categories > 0
    estimators = CATEGORICAL_ESTIMATORS if categorical else GAUSSIAN_ESTIMATORS
    stats = {}
    for name, fields in estimators.items():
        exact = fields is None
        fields = dict(fields or {}, num_latent_samples=num_latent_samples)
        if categorical:
            fields["gradient_estimator"] = "reparameterization"
        stats[name] = gradient_statistics(model, pixel_values, num_draws, exact_categories=exact, seed=seed, **fields)
    reference = next(iter(stats.values()))
    return {name: summarize_gradients(s, None if s is reference else reference) for name, s in stats.items()}


# --------------------------------------------------------------------------------------------------- log p(x)


class LinearGaussianModel:
    r"""A toy latent-variable model where log p(x) is exact:

        z ~ N(0, I_d),   x | z ~ N(W z + b, s^2 I_D),   so   p(x) = N(x; b, W W^T + s^2 I_D).

    The true posterior is N(m(x), Lambda^{-1}) with Lambda = I + W^T W / s^2 and m = Lambda^{-1} W^T (x - b) / s^2.
    `encode` returns the best mean-field (diagonal) Gaussian, the one a VAE encoder would learn: mean m(x) and
    variances 1 / Lambda_jj (the reverse-KL optimum), so importance sampling is good but not exact. Same interface
    as `VAEModel` for the log p(x) estimators: `encode`, `log_likelihood`, `log_prior`, `sample_latents`."""

    def __init__(self, latent_dim: int = 2, data_dim: int = 8, noise: float = 0.5, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.W = torch.randn(data_dim, latent_dim, generator=generator, dtype=torch.float64)
        self.b = torch.randn(data_dim, generator=generator, dtype=torch.float64)
        self.noise = noise
        self.precision = torch.eye(latent_dim, dtype=torch.float64) + self.W.T @ self.W / noise**2

    def sample_data(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """x ~ p(x), shape (num_samples, data_dim)."""
        z = self.sample_latents(num_samples, generator)
        eps = torch.randn(num_samples, len(self.b), generator=generator, dtype=torch.float64)
        return z @ self.W.T + self.b + self.noise * eps

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """The exact log p(x) per row."""
        covariance = self.W @ self.W.T + self.noise**2 * torch.eye(len(self.b), dtype=torch.float64)
        return torch.distributions.MultivariateNormal(self.b, covariance).log_prob(x)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        mean = torch.linalg.solve(self.precision, self.W.T @ (x - self.b).T / self.noise**2).T
        return DiagonalGaussian(mean, -self.precision.diagonal().log().expand_as(mean))

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log N(x; W z + b, s^2 I); z (..., d) broadcasts against x (batch, D) like `VAEModel.log_likelihood`."""
        return torch.distributions.Normal(z @ self.W.T + self.b, self.noise).log_prob(x).sum(-1)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        return standard_normal_log_prob(z)

    def log_importance_weights(self, x: torch.Tensor, num_samples: int, generator=None) -> torch.Tensor:
        """log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x), shape (num_samples, batch), as a VAE's."""
        posterior = self.encode(x)
        z = posterior.sample(generator, num_samples)
        return self.log_likelihood(x, z) + self.log_prior(z) - posterior.log_prob(z)

    def sample_latents(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(num_samples, self.W.shape[1], generator=generator, dtype=torch.float64)


@torch.no_grad()
def log_weights(
    model, x: torch.Tensor, num_samples: int, proposal: str = "posterior", generator=None, chunk_pairs: int = 4096
) -> torch.Tensor:
    """Log importance weights, shape (num_samples, batch), float64:
    proposal "prior": log w_k = log p(x|z_k), z_k ~ p(z) (each z_k decoded once and shared by the batch);
    proposal "posterior": log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x).
    `chunk_pairs` bounds the (sample, image) pairs scored at once."""
    if proposal not in ("prior", "posterior"):
        raise ValueError(f"proposal must be 'prior' or 'posterior', got {proposal!r}.")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    chunk = max(1, chunk_pairs // len(x))
    out = []
    for start in range(0, num_samples, chunk):
        k = min(chunk, num_samples - start)
        if proposal == "prior":
            z = model.sample_latents(k, generator)[:, None, :]  # (k, 1, D): each z_k decoded once
            out.append(model.log_likelihood(x, z).double())
        else:
            out.append(model.log_importance_weights(x, k, generator).double())
    if was_training:
        model.train()
    return torch.cat(out)


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/K) sum_k exp(log_w_k): the estimate of log p(x) from K weights."""
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])


def effective_sample_size(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """ESS = (sum_k w_k)^2 / sum_k w_k^2 = 1 / sum_k wbar_k^2 of the normalised weights, between 1 and K."""
    return torch.exp(2 * torch.logsumexp(log_w, dim) - torch.logsumexp(2 * log_w, dim))


def log_marginal_curve(log_w: torch.Tensor, sample_counts, exact: torch.Tensor | None = None, max_groups: int = 1000):
    """The estimate at each K of `sample_counts` from (K_max, batch) log weights, split into disjoint groups of K
    samples (at most `max_groups`): per K the mean estimate over images and groups, the spread (std over groups) of
    one estimate, the mean ESS and ESS / K, and with `exact` log p(x) the bias and the RMSE of one estimate."""
    rows = []
    for k in sample_counts:
        groups = min(len(log_w) // k, max_groups)
        if groups == 0:
            continue
        grouped = log_w[: groups * k].view(groups, k, -1)
        estimate = log_mean_exp(grouped, dim=1)  # (groups, batch)
        ess = effective_sample_size(grouped, dim=1)
        row = {
            "num_samples": k,
            "num_groups": groups,
            "estimate": estimate.mean().item(),
            "estimate_std": estimate.std(0).mean().item() if groups > 1 else None,
            "ess": ess.mean().item(),
            "ess_fraction": ess.mean().item() / k,
        }
        if exact is not None:
            error = estimate - exact.to(estimate)
            row.update(bias=error.mean().item(), rmse=error.pow(2).mean().sqrt().item())
        rows.append(row)
    return rows


def compare_log_marginal_estimators(
    model, x: torch.Tensor, sample_counts=(1, 10, 100, 1000, 10000), exact: torch.Tensor | None = None, seed: int = 0
) -> dict:
    """Prior sampling vs importance sampling of log p(x) on the images (rows) x at growing K: `log_marginal_curve`
    for both. Without `exact` the reference is the importance-sampled estimate with all max(sample_counts) samples
    (reported as `reference`; not exact, a lower bound in expectation)."""
    generator = torch.Generator().manual_seed(seed)
    max_k = max(sample_counts)
    weights = {proposal: log_weights(model, x, max_k, proposal, generator) for proposal in ("prior", "posterior")}
    result = {"num_images": len(x), "sample_counts": list(sample_counts)}
    if exact is not None:
        result["exact"] = exact.double().mean().item()
    else:
        result["reference"] = log_mean_exp(weights["posterior"]).mean().item()
    result["prior"] = log_marginal_curve(weights["prior"], sample_counts, exact)
    result["importance"] = log_marginal_curve(weights["posterior"], sample_counts, exact)
    return result
