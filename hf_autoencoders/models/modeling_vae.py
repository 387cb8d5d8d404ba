"""The variational autoencoder: q(z|x) = N(mu(x), diag sigma^2(x)), p(z) = N(0, I), decoder p(x|z)."""

import math

import torch
from torch import nn

from .backbones import build_decoder, build_encoder
from .configuration_autoencoders import VAEConfig
from .modeling_base import AutoencoderOutput, AutoencoderPreTrainedModel


class DiagonalGaussian:
    r"""q(z|x) = N(mean, diag(std^2)), with the closed-form KL to the standard normal prior."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor):
        self.mean = mean
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def rsample(self, num_samples: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""The reparameterization trick: z = mu + sigma * eps, eps ~ N(0, I), differentiable in mu and sigma.
        Shape (num_samples, batch, latent_dim)."""
        eps = torch.randn(
            (num_samples, *self.mean.shape), generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * eps

    def sample(self, num_samples: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        """A sample that carries no gradient (for the score-function estimator)."""
        with torch.no_grad():
            return self.rsample(num_samples, generator)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z|x), summed over latent dimensions."""
        return (-0.5 * ((z - self.mean) / self.std).pow(2) - 0.5 * self.logvar - 0.5 * math.log(2 * math.pi)).sum(-1)

    def kl(self) -> torch.Tensor:
        r"""KL(N(mu, sigma^2) || N(0, I)) = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2), per sample."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).sum(-1)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last dimension."""
    return (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)


class VAEModel(AutoencoderPreTrainedModel):
    r"""
    A VAE trained on the negative ELBO, per image:

        -ELBO(x) = E_{q(z|x)}[-log p(x|z)] + KL(q(z|x) || N(0, I))  >=  -log p(x).

    The expectation is estimated with `num_latent_samples` samples z. Its gradient with respect to the encoder
    reaches it through one of two estimators (`config.gradient_estimator`):

    - reparameterization (pathwise): z = mu(x) + sigma(x) * eps, eps ~ N(0, I), so d/dphi E_q[f(z)] = E_eps[f'(z)
      dz/dphi]. Low variance; needs a continuous z and differentiable f.
    - score function (REINFORCE): d/dphi E_q[f(z)] = E_q[(f(z) - b) d/dphi log q(z|x)], for any baseline b that
      does not depend on z. Unbiased for any f and any q, discrete included, but of much higher variance.

    The KL term is in closed form and differentiated directly in both cases. `kl_weight` (beta) multiplies it; with
    the Gaussian likelihood the loss equals (||x - g(z)||^2 + 2c * beta * KL) / 2c, see `GaussianLikelihood`.
    """

    config_class = VAEConfig

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        self.encoder = build_encoder(config, 2 * config.latent_dim)
        self.decoder = build_decoder(config, config.latent_dim)
        self._build_likelihood()
        # Moving-average baseline b of the score-function estimator.
        self.register_buffer("score_baseline", torch.zeros(()), persistent=False)
        self.post_init()

    def encode(self, pixel_values: torch.Tensor) -> DiagonalGaussian:
        """The approximate posterior q(z|x)."""
        self.check_pixel_values(pixel_values)
        return self._posterior(pixel_values)

    def _posterior(self, pixel_values: torch.Tensor) -> DiagonalGaussian:
        mean, logvar = self.encoder(pixel_values).chunk(2, dim=-1)
        return DiagonalGaussian(mean, logvar)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """E[x | z], shape (batch, C, H, W)."""
        return self.likelihood.mean(self.decoder(latents))

    def log_likelihood(self, pixel_values: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """log p(x | z) per sample, in nats with every constant (for ELBO and importance-sampled NLL)."""
        return -self.likelihood.nll(pixel_values, self.decoder(latents))

    def log_prior(self, latents: torch.Tensor) -> torch.Tensor:
        """log p(z) = log N(z; 0, I) per sample."""
        return standard_normal_log_prob(latents)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images decoded from z ~ N(0, I), shape (num_samples, C, H, W)."""
        latents = torch.randn(num_samples, self.config.latent_dim, generator=generator, device=self.device)
        return self.decode(latents.to(self.dtype))

    def forward(
        self,
        pixel_values: torch.Tensor,
        target_pixel_values: torch.Tensor | None = None,
        return_loss: bool = True,
        return_dict: bool | None = None,
        **kwargs,
    ) -> AutoencoderOutput:
        self.check_pixel_values(pixel_values)
        target = self._target(pixel_values, target_pixel_values)
        posterior = self._posterior(self._corrupt(pixel_values))
        num_samples = self.config.num_latent_samples
        score_function = self.config.gradient_estimator == "score_function"
        latents = posterior.sample(num_samples) if score_function else posterior.rsample(num_samples)
        decoder_params = self.decoder(latents.flatten(0, 1))  # (num_samples * batch, ...)
        targets = target.unsqueeze(0).expand(num_samples, *target.shape).flatten(0, 1)
        reconstruction_loss = self.reconstruction_loss(targets, decoder_params).view(num_samples, -1)
        kl_loss = posterior.kl()
        loss = reconstruction_loss.mean(0) + self.config.kl_weight * kl_loss
        if score_function and self.training:
            loss = loss + self._score_function_surrogate(posterior, latents, reconstruction_loss)
        return AutoencoderOutput(
            loss=loss.mean() if return_loss else None,
            reconstruction=self.likelihood.mean(decoder_params[: pixel_values.shape[0]]),
            latents=latents[0],
            reconstruction_loss=reconstruction_loss.mean(),
            kl_loss=kl_loss.mean(),
        )

    def _score_function_surrogate(self, posterior, latents, reconstruction_loss):
        r"""A zero-valued term whose gradient is the REINFORCE estimate for the encoder,
        mean_s (f_s - b_s) d/dphi log q(z_s|x) with f = the reconstruction loss and b the baseline."""
        f = reconstruction_loss.detach()  # (num_samples, batch)
        baseline_kind = self.config.score_function_baseline
        if baseline_kind == "leave_one_out":
            baseline = (f.sum(0, keepdim=True) - f) / (f.shape[0] - 1)
        elif baseline_kind == "moving_average":
            baseline = self.score_baseline.clone()
            first_step = bool(self.score_baseline == 0)
            self.score_baseline.lerp_(f.mean(), 1.0 if first_step else 0.1)
        else:
            baseline = 0.0
        log_q = posterior.log_prob(latents)  # gradient flows to mu, sigma only
        surrogate = ((f - baseline) * log_q).mean(0)
        return surrogate - surrogate.detach()
