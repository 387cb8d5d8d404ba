"""The variational autoencoder: q(z|x) = N(mu(x), diag sigma^2(x)), p(z) = N(0, I), decoder p(x|z).

With `config.num_categories = K > 0` the latent also has a categorical part c (e.g. meant to capture the digit):
q(c, z|x) = Cat(c; pi(x)) N(z; mu(x), diag sigma^2(x)), p(c, z) = Uniform(K) N(0, I), and the decoder reads the
concatenated latent [one_hot(c), z] of size K + latent_dim.
"""

import math

import torch
from torch import nn

from .backbones import build_decoder, build_encoder
from .configuration_autoencoders import VAEConfig
from .modeling_base import AutoencoderOutput, AutoencoderPreTrainedModel, PosteriorOutput


def standard_normal_log_prob(z: torch.Tensor, event_dims: int = 1) -> torch.Tensor:
    """log N(z; 0, I), summed over the last `event_dims` dimensions (those of one latent)."""
    return (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(tuple(range(-event_dims, 0)))


class DiagonalGaussian:
    r"""q(z|x) = N(mean, diag(std^2)), with the closed-form KL to the standard normal prior (diffusers'
    `DiagonalGaussianDistribution`: `sample`, `mode`, `mean`, `std`, `var`, `logvar`, `kl`, `nll`).

    One latent is everything after the batch dimension of `mean`: a vector (batch, latent_dim) or a map (batch, c, h,
    w). `sample` returns one draw of the mean's shape when `num_samples` is None, else (num_samples, *mean.shape);
    `log_prob`, `nll` and `kl` sum over the latent's dimensions and accept any leading sample dimensions."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor):
        self.mean = mean
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = self.std.pow(2)
        self.event_dims = mean.ndim - 1

    def _sum(self, values: torch.Tensor) -> torch.Tensor:
        return values.sum(tuple(range(-self.event_dims, 0)))

    def sample(self, generator: torch.Generator | None = None, num_samples: int | None = None) -> torch.Tensor:
        r"""The reparameterization trick: z = mu + sigma * eps, eps ~ N(0, I), differentiable in mu and sigma.
        `.detach()` it for the score-function estimator, whose samples carry no gradient."""
        shape = self.mean.shape if num_samples is None else (num_samples, *self.mean.shape)
        device = generator.device if generator is not None else self.mean.device
        eps = torch.randn(shape, generator=generator, device=device, dtype=self.mean.dtype).to(self.mean.device)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        """The most likely z, mu."""
        return self.mean

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z|x) = log N((z - mu) / sigma; 0, I) - sum log sigma, summed over the latent's dimensions."""
        return standard_normal_log_prob((z - self.mean) / self.std, self.event_dims) - self._sum(0.5 * self.logvar)

    def nll(self, z: torch.Tensor) -> torch.Tensor:
        """-log q(z|x), summed over latent dimensions (diffusers' name)."""
        return -self.log_prob(z)

    def kl(self, other: "DiagonalGaussian | None" = None) -> torch.Tensor:
        r"""KL(q || N(0, I)) = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2) per sample, or with `other`
        KL(q || other) = 1/2 sum_j ((mu_j - m_j)^2 / s_j^2 + sigma_j^2 / s_j^2 - 1 - log sigma_j^2 + log s_j^2)."""
        if other is None:
            return 0.5 * self._sum(self.mean.pow(2) + self.var - 1.0 - self.logvar)
        return 0.5 * self._sum((self.mean - other.mean).pow(2) / other.var + self.var / other.var - 1.0 - self.logvar
                               + other.logvar)


class CategoricalGaussianPosterior:
    r"""q(c, z|x) = Cat(c; pi) N(z; mu, diag sigma^2) over the latent [one_hot(c), z] (first K entries: c).

    Samples are one-hot in c (`sample`, no gradient through c) or Gumbel-softmax relaxed (`relaxed_sample`, Jang et
    al. 2017; Maddison et al. 2017): with g_k = -log(-log u_k), u_k ~ U(0, 1),

        hard:    c = one_hot(argmax_k (log pi_k + g_k))        (an exact draw from Cat(pi), the Gumbel-max trick)
        relaxed: c = softmax((log pi + g) / tau)               (differentiable in pi; tends to the hard c as tau -> 0)

    `log_prob` is log Cat(c; pi) + log N(z; mu, sigma^2) = sum_k c_k log pi_k + log N(z), exact for one-hot c (it is
    not the density of a relaxed sample). Shapes follow `DiagonalGaussian`.
    """

    def __init__(self, logits: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor):
        self.log_probs = logits.log_softmax(-1)
        self.probs = self.log_probs.exp()
        self.num_categories = logits.shape[-1]
        self.gaussian = DiagonalGaussian(mean, logvar)

    @property
    def mean(self) -> torch.Tensor:
        """E_q[one_hot(c), z] = [pi, mu]."""
        return torch.cat([self.probs, self.gaussian.mean], -1)

    def split(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[one_hot(c), z] -> (one_hot(c), z)."""
        return latents[..., : self.num_categories], latents[..., self.num_categories :]

    def _gumbel_logits(self, generator, num_samples):
        shape = self.log_probs.shape if num_samples is None else (num_samples, *self.log_probs.shape)
        device = generator.device if generator is not None else self.probs.device
        u = torch.rand(shape, generator=generator, device=device, dtype=self.probs.dtype).to(self.probs.device)
        gumbel = -torch.log((-torch.log(u.clamp(min=1e-20))).clamp(min=1e-20))
        return self.log_probs + gumbel

    def sample_categories(self, generator=None, num_samples=None) -> torch.Tensor:
        """One-hot draws of c ~ Cat(pi), no gradient."""
        with torch.no_grad():
            index = self._gumbel_logits(generator, num_samples).argmax(-1)
            return nn.functional.one_hot(index, self.num_categories).to(self.probs.dtype)

    def relaxed_categories(self, generator=None, num_samples=None, temperature: float = 1.0) -> torch.Tensor:
        """Gumbel-softmax relaxed one-hot draws, differentiable in pi."""
        return (self._gumbel_logits(generator, num_samples) / temperature).softmax(-1)

    def sample(self, generator: torch.Generator | None = None, num_samples: int | None = None) -> torch.Tensor:
        """[one_hot(c), z] with c ~ Cat(pi) (no gradient through c) and z = mu + sigma * eps (reparameterized)."""
        categories = self.sample_categories(generator, num_samples)
        return torch.cat([categories, self.gaussian.sample(generator, num_samples)], -1)

    def relaxed_sample(
        self, generator: torch.Generator | None = None, num_samples: int | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        """[relaxed c, z], differentiable in pi (Gumbel-softmax with `temperature`) and in mu, sigma."""
        categories = self.relaxed_categories(generator, num_samples, temperature)
        return torch.cat([categories, self.gaussian.sample(generator, num_samples)], -1)

    def mode(self) -> torch.Tensor:
        """[one_hot(argmax pi), mu]: the most likely category and z."""
        index = self.probs.argmax(-1)
        categories = nn.functional.one_hot(index, self.num_categories).to(self.probs.dtype)
        return torch.cat([categories, self.gaussian.mean], -1)

    def categorical_log_prob(self, categories: torch.Tensor) -> torch.Tensor:
        """log Cat(c; pi) = sum_k c_k log pi_k for one-hot c."""
        return (categories * self.log_probs).sum(-1)

    def log_prob(self, latents: torch.Tensor) -> torch.Tensor:
        """log q(c, z|x) = log Cat(c; pi) + log N(z; mu, sigma^2), for one-hot c."""
        categories, z = self.split(latents)
        return self.categorical_log_prob(categories) + self.gaussian.log_prob(z)

    def categorical_kl(self) -> torch.Tensor:
        r"""KL(Cat(pi) || Uniform(K)) = sum_k pi_k log(pi_k K), per sample (between 0 and log K)."""
        return (self.probs * (self.log_probs + math.log(self.num_categories))).sum(-1)

    def nll(self, latents: torch.Tensor) -> torch.Tensor:
        """-log q(c, z|x)."""
        return -self.log_prob(latents)

    def kl(self) -> torch.Tensor:
        """KL(q(c, z|x) || p(c) p(z)) = KL(Cat(pi) || Uniform) + KL(N(mu, sigma^2) || N(0, I)), per sample."""
        return self.categorical_kl() + self.gaussian.kl()


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

    Categorical + continuous latent (`num_categories` K > 0): the encoder also outputs logits of pi(x), the
    posterior is a `CategoricalGaussianPosterior`, the prior Uniform(K) x N(0, I), and

        -ELBO(x) = E_{q(c|x) q(z|x)}[-log p(x|c, z)] + sum_k pi_k log(pi_k K) + KL(N(mu, sigma^2) || N(0, I)).

    The gradient reaches pi through `config.categorical_estimator`, independently of how it reaches (mu, sigma):

    - "score_function": c is drawn one-hot and the REINFORCE term (f - b) d/dphi log pi_c, with the configured
      baseline, is added (unbiased).
    - "gumbel_softmax": while training, the decoder reads the relaxed sample softmax((log pi + g) / tau) with
      tau = `gumbel_temperature` (no straight-through: the decoder sees the soft vector, and the gradient is the
      pathwise gradient of that relaxed objective, biased but of low variance). In eval mode c is drawn one-hot, so
      the reported loss is an estimate of the true (discrete) negative ELBO.
    """

    config_class = VAEConfig
    loss_terms = ("reconstruction_loss", "kl_loss")
    diffusers_class = "AutoencoderKL"

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        if config.latent_channels is not None:  # a latent map: the encoder gives [means; log-variances] channels
            self.encoder = build_encoder(config, 2 * config.latent_channels, spatial=True)
            self.decoder = build_decoder(config, config.latent_channels, spatial=True)
        else:
            self.encoder = build_encoder(config, config.num_categories + 2 * config.latent_dim)
            self.decoder = build_decoder(config, config.num_categories + config.latent_dim)
        self._build_likelihood()
        # Moving-average baseline b of the score-function estimator.
        self.register_buffer("score_baseline", torch.zeros(()), persistent=False)
        self.post_init()

    @property
    def latent_size(self) -> int:
        """Size of the decoder's input: num_categories (one-hot c) + latent_dim (z)."""
        return self.config.num_categories + self.config.latent_dim

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one decoder input: (latent_size,), or (latent_channels, h, w) for a latent map."""
        return self.config.latent_shape if self.config.latent_channels is not None else (self.latent_size,)

    def encode(self, pixel_values: torch.Tensor, return_dict: bool = True) -> PosteriorOutput | tuple:
        """`latent_dist`: the approximate posterior q(z|x), a `DiagonalGaussian` (of shape (batch, latent_channels,
        h, w) for a latent map; a `CategoricalGaussianPosterior` q(c, z|x) with a categorical part);
        `encode(x).latent_dist.sample()` is differentiable."""
        pixel_values = self.check_pixel_values(pixel_values, any_size=True)
        posterior = self._posterior(self._encode_pixels(pixel_values))
        return PosteriorOutput(latent_dist=posterior) if return_dict else (posterior,)

    def _posterior(self, out: torch.Tensor) -> DiagonalGaussian | CategoricalGaussianPosterior:
        """q(z|x) from the encoder's output."""
        if self.config.latent_channels is not None:
            return DiagonalGaussian(*out.chunk(2, dim=1))
        num_categories = self.config.num_categories
        mean, logvar = out[:, num_categories:].chunk(2, dim=-1)
        if num_categories == 0:
            return DiagonalGaussian(mean, logvar)
        return CategoricalGaussianPosterior(out[:, :num_categories], mean, logvar)

    def classify(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """q(c|x) = pi(x), shape (batch, num_categories); `.argmax(-1)` is the image's cluster."""
        if self.config.num_categories == 0:
            raise ValueError("classify needs a categorical latent; this model has num_categories=0.")
        return self.encode(pixel_values).latent_dist.probs

    def decode(self, latents: torch.Tensor, return_dict: bool = True):
        """`sample` E[x | z], shape (batch, C, H, W); latents (batch, latent_size) = [one_hot(c), z] with a
        categorical part, (batch, latent_channels, h, w) for a latent map."""
        latents = self._check_latents(latents, self.latent_shape)
        return self._decoded(self._decode_latents(latents), return_dict)

    def representation(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The posterior mean E_q[z] ([pi, mu] with a categorical part)."""
        return self.encode(pixel_values).latent_dist.mean

    def log_likelihood(self, pixel_values: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """log p(x | z) in nats with every constant (for ELBO and importance-sampled NLL).

        latents (batch, *latent_shape) gives (batch,); leading sample dimensions broadcast against the batch:
        (S, batch, *latent_shape) gives (S, batch), and (S, 1, *latent_shape) decodes each of the S latents once and
        scores every image under it."""
        event = self.latent_shape
        lead = latents.shape[: latents.ndim - len(event)]
        params = self.decoder(latents.reshape(-1, *event))
        params = params.view(*lead, *params.shape[1:])
        shape = torch.broadcast_shapes(lead, pixel_values.shape[:1])
        x = pixel_values.expand(*shape, *pixel_values.shape[1:]).flatten(0, len(shape) - 1)
        params = params.expand(*shape, *params.shape[len(lead) :]).flatten(0, len(shape) - 1)
        return -self.likelihood.nll(x, params).view(shape)

    def log_prior(self, latents: torch.Tensor) -> torch.Tensor:
        """log p(z) = log N(z; 0, I) per sample; with a categorical part log p(c, z) = -log K + log N(z; 0, I)."""
        num_categories = self.config.num_categories
        if num_categories == 0:
            return standard_normal_log_prob(latents, len(self.latent_shape))
        return standard_normal_log_prob(latents[..., num_categories:]) - math.log(num_categories)

    def sample_latents(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draws from the prior, shape (num_samples, *latent_shape): z ~ N(0, I), and c ~ Uniform(K) one-hot
        first."""
        device = generator.device if generator is not None else self.device
        latents = torch.randn(num_samples, *self.config.latent_shape, generator=generator, device=device)
        if self.config.num_categories > 0:
            index = torch.randint(self.config.num_categories, (num_samples,), generator=generator, device=device)
            categories = nn.functional.one_hot(index, self.config.num_categories).to(latents.dtype)
            latents = torch.cat([categories, latents], -1)
        return latents.to(device=self.device, dtype=self.dtype)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None, prior=None) -> torch.Tensor:
        """Images decoded from prior latents (`sample_latents`), shape (num_samples, C, H, W)."""
        self._check_num_samples(num_samples)
        if prior is not None:
            raise ValueError("A VAE samples from its prior N(0, I); a learned prior over codes applies to a VQ-VAE. "
                             "Pass prior=None.")
        return self.decode(self.sample_latents(num_samples, generator)).sample

    def log_importance_weights(
        self, pixel_values: torch.Tensor, num_samples: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        r"""log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x) for z_k ~ q(z|x), shape (num_samples, batch), in nats
        with every constant. The two bounds on log p(x) are read off them:

            ELBO(x) = E_q[log w],    IWAE_K(x) = log (1/K) sum_k w_k   (Burda et al., 2016),

        with ELBO <= IWAE_K <= log p(x), the IWAE bound tightening as K grows."""
        pixel_values = self.check_pixel_values(pixel_values)
        posterior = self._posterior(self.encoder(pixel_values))
        z = posterior.sample(generator, num_samples)
        return self.log_likelihood(pixel_values, z) + self.log_prior(z) - posterior.log_prob(z)

    def forward(
        self,
        pixel_values: torch.Tensor,
        target_pixel_values: torch.Tensor | None = None,
        return_loss: bool = True,
        return_dict: bool | None = None,
        **kwargs,
    ) -> AutoencoderOutput | tuple:
        config = self.config
        pixel_values, target = self._inputs(pixel_values, target_pixel_values)
        posterior = self._posterior(self.encoder(self._corrupt(pixel_values)))
        num_samples = config.num_latent_samples
        gaussian = posterior if config.num_categories == 0 else posterior.gaussian
        score_function = config.gradient_estimator == "score_function"
        latents = gaussian.sample(num_samples=num_samples)
        log_q = None
        if score_function:  # the samples carry no gradient; log q of the score-function parts does
            latents = latents.detach()
            log_q = gaussian.log_prob(latents)
        if config.num_categories > 0:
            if config.categorical_estimator == "gumbel_softmax" and self.training:
                categories = posterior.relaxed_categories(
                    num_samples=num_samples, temperature=config.gumbel_temperature
                )
            else:
                categories = posterior.sample_categories(num_samples=num_samples)
                if config.categorical_estimator == "score_function":
                    log_q_c = posterior.categorical_log_prob(categories)
                    log_q = log_q_c if log_q is None else log_q + log_q_c
            latents = torch.cat([categories, latents], -1)
        decoder_params = self.decoder(latents.flatten(0, 1))  # (num_samples * batch, ...)
        targets = target.unsqueeze(0).expand(num_samples, *target.shape).flatten(0, 1)
        reconstruction_loss = self.reconstruction_loss(targets, decoder_params).view(num_samples, -1)
        kl_loss = posterior.kl()
        loss = reconstruction_loss.mean(0) + config.kl_weight * kl_loss
        if log_q is not None and self.training:
            loss = loss + self._score_function_surrogate(log_q, reconstruction_loss)
        output = AutoencoderOutput(
            loss=loss.mean() if return_loss else None,
            reconstruction=self.likelihood.mean(decoder_params[: pixel_values.shape[0]]),
            latents=latents[0],
            reconstruction_loss=reconstruction_loss.mean(),
            kl_loss=kl_loss.mean(),
        )
        return self._return(output, return_dict)

    def _score_function_surrogate(self, log_q: torch.Tensor, reconstruction_loss: torch.Tensor) -> torch.Tensor:
        r"""A zero-valued term whose gradient is the REINFORCE estimate for the encoder,
        mean_s (f_s - b_s) d/dphi log q(z_s|x) with f = the reconstruction loss, b the baseline and log_q (samples,
        batch) the log-density of the sampled latents (gradient flows to the posterior's parameters only)."""
        f = reconstruction_loss.detach()  # (num_samples, batch)
        baseline_kind = self.config.score_function_baseline
        if baseline_kind == "leave_one_out":
            baseline = (f.sum(0, keepdim=True) - f) / (f.shape[0] - 1)
        elif baseline_kind == "moving_average":
            baseline = self.score_baseline.clone()
            weight = torch.where(self.score_baseline == 0, 1.0, 0.1)  # the first step sets it; no host sync
            self.score_baseline.lerp_(f.mean(), weight)
        else:
            baseline = 0.0
        surrogate = ((f - baseline) * log_q).mean(0)
        return surrogate - surrogate.detach()
