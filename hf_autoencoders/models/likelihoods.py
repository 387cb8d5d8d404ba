"""Decoder likelihoods p(x | z): the decoder outputs the parameters, these modules score images under them.

Each likelihood gives the exact negative log-likelihood `nll(x, params)` of one image per row (nats, summed over
pixels), the parameter-free additive `constant` in it, and the `mean` image E[x | z]. The training reconstruction
loss is `nll - constant`, which has the same gradients as the NLL and reads like the textbook formula.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_autoencoders import AutoencoderConfig


class GaussianLikelihood(nn.Module):
    r"""p(x|z) = N(x; g(z), c I) with a fixed variance c over D pixels:

        -log p(x|z) = ||x - g(z)||^2 / 2c + (D/2) log(2 pi c).

    In a VAE the per-sample loss is ||x - g(z)||^2 / 2c + KL(q(z|x) || p(z)); multiplying by 2c, which changes no
    minimiser, gives ||x - g(z)||^2 + 2c * KL. So "MSE + beta * KL" is this model with beta = 2c: the KL weight is the
    decoder variance, not a free knob. With c = 0.5 the reconstruction loss is exactly the summed squared error of
    the plain AE, ||x - g(f(x))||^2.
    """

    discrete = False  # a density over continuous pixels: its NLL is not a code length

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.variance = config.gaussian_variance
        self.constant = 0.5 * config.num_pixels * math.log(2 * math.pi * self.variance)

    def nll(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        squared_error = (x - params).pow(2).flatten(1).sum(1)
        return squared_error / (2 * self.variance) + self.constant

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params


class BernoulliLikelihood(nn.Module):
    r"""p(x|z) = prod_i Bernoulli(x_i; sigmoid(l_i)) with logits l = g(z), for binarized images (x in {0, 1}):

        -log p(x|z) = sum_i BCE(l_i, x_i).

    On grey-level targets in [0, 1] this is the cross-entropy loss used by Kingma & Welling (2014), not a likelihood.
    """

    constant = 0.0
    discrete = True  # a probability mass over binary pixels: its NLL is a code length (bits/dim)

    def __init__(self, config: AutoencoderConfig):
        super().__init__()

    def nll(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(params, x, reduction="none").flatten(1).sum(1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)


class DiscretizedLogisticLikelihood(nn.Module):
    r"""8-bit pixels x in {0, 1/255, ..., 1} under a logistic with mean g(z) and a learned scale s per channel,
    integrated over each pixel's bin of width 1/255 (Salimans et al., 2017, PixelCNN++):

        P(x) = sigmoid((x + 1/510 - mu) / s) - sigmoid((x - 1/510 - mu) / s),

    with the edge bins extended to -inf (x = 0) and +inf (x = 1). This is a proper probability mass, so
    -log P / (D ln 2) is the bits/dim figure quoted for image models. In the pixel range (-1, 1) the 256 levels are
    2/255 apart, with the edge bins at -1 and 1 (as PixelCNN++ has them).
    """

    constant = 0.0
    discrete = True  # a probability mass over 8-bit pixels: its NLL is a code length (bits/dim)

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.low, self.high = config.pixel_range
        initial_scale = 0.1 * (self.high - self.low)
        self.log_scale = nn.Parameter(torch.full((1, config.num_channels, 1, 1), math.log(initial_scale)))

    def nll(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        half_bin = 0.5 * (self.high - self.low) / 255
        low, high = self.low, self.high
        inv_scale = torch.exp(-self.log_scale.clamp(min=-7.0))
        upper = (x + half_bin - params) * inv_scale
        lower = (x - half_bin - params) * inv_scale
        log_cdf_upper = F.logsigmoid(upper)  # log P(X <= upper), used at x = 0
        log_survival_lower = F.logsigmoid(-lower)  # log P(X > lower), used at x = 1
        # log(sigmoid(a) - sigmoid(b)) = log(sigmoid(a)) + log(1 - exp(log sigmoid(b) - log sigmoid(a))), stable:
        log_bin = log_cdf_upper + torch.log(-torch.expm1(F.logsigmoid(lower) - log_cdf_upper).clamp(max=-1e-12))
        log_prob = torch.where(x < low + half_bin, log_cdf_upper,
                               torch.where(x > high - half_bin, log_survival_lower, log_bin))
        return -log_prob.flatten(1).sum(1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params.clamp(self.low, self.high)


_LIKELIHOODS = {
    "gaussian": GaussianLikelihood,
    "bernoulli": BernoulliLikelihood,
    "discretized_logistic": DiscretizedLogisticLikelihood,
}


def build_likelihood(config: AutoencoderConfig) -> nn.Module:
    return _LIKELIHOODS[config.likelihood](config)
