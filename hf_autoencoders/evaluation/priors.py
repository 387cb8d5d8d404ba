r"""Scoring a prior over a VQ-VAE's code maps, the same way for both kinds (the gated `PixelCNNPriorModel` and the
GPT-2 transformer prior of `models.code_priors`).

Both factorise a (h, w) map of codes c in raster order, c_1 .. c_L with L = h w, given an optional class y:
log p(c | y) = sum_t log p(c_t | c_<t, y) (for the residual codes of depth n of a transformer prior, the L n codes
depth-first within each position, `models.code_priors`). The transformer's probabilities are its softmax over the K
code logits of each code's depth only, the distribution it samples from at temperature 1. (It is trained with
transformers' cross entropy over the whole vocabulary, whose per-code NLL is never below this one: renormalising
over the codes only removes the small mass left on the start and class tokens.)

Test NLL is reported in nats and bits per code, and, where the VQ-VAE's decoder likelihood is discrete (Bernoulli
over binary pixels, discretized logistic over 8-bit pixels), in bits per dimension of the image: with the VQ-VAE's
deterministic encoder, q(c | x) = 1[c = c(x)], the ELBO of the joint model p(x, c) = p(c) p(x | c) is
log p(x | c(x)) + log p(c(x)) (the entropy of a point mass is 0), so

    -log2 p(x) / D <= (-log p(x | c(x)) - log p(c(x))) / (D ln 2),

an upper bound on the image's code length per dimension (D = channels * height * width). The first term is the
decoder's and does not depend on the prior; the prior lowers the second from L log K (uniform codes) to its NLL.
For a Gaussian decoder -log p(x | c) is a density, not a code length, and no bits/dim are reported.
"""

import math

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..data import ImageCollator
from ..models.code_priors import check_codes, code_tokens, num_quantizers, prefix_length, prior_type
from .metrics import eval_mode


def code_logits(prior, codes: torch.LongTensor, class_labels: torch.LongTensor | int | None = None) -> torch.Tensor:
    """The logits of each code given the codes before it in raster order (and the class), shape (batch, h, w, K),
    or (batch, n, h, w, K) for residual codes of depth n > 1, for a prior of either kind (teacher forcing: one pass).
    For the transformer, the logits at sequence position s predict token s+1, so those at P-1 .. P+L-2 predict the L
    codes (L n for residual codes); they are cut to the K code tokens of each code's depth."""
    if prior_type(prior) == "pixelcnn":
        return prior(codes, class_labels=class_labels, return_loss=False).logits
    config = prior.config
    codes = check_codes(config, codes).to(prior.device)
    tokens = code_tokens(config, codes, class_labels)
    logits = prior(input_ids=tokens[:, :-1]).logits[:, prefix_length(config) - 1:]  # the last code is not fed
    size, depth, num_codes = config.grid_size, num_quantizers(config), config.num_embeddings
    if depth == 1:
        return logits[..., :num_codes].reshape(len(codes), size, size, -1)
    logits = logits[..., : depth * num_codes].reshape(len(codes), size, size, depth, depth, num_codes)
    return torch.diagonal(logits, dim1=3, dim2=4).permute(0, 4, 1, 2, 3)  # each code's own depth's K logits


def log_prob_codes(prior, codes: torch.LongTensor, class_labels: torch.LongTensor | int | None = None) -> torch.Tensor:
    """log p(c | y) = sum_t log softmax(logits_t)[c_t] of each code map in nats, shape (batch,), under a prior of
    either kind (for the transformer, the softmax over the K code logits of the code's depth: the distribution it
    samples from); for residual codes (batch, n, h, w) the sum runs over all n h w codes. Gradients flow; wrap in
    `torch.no_grad()` for metrics."""
    logits = code_logits(prior, codes, class_labels)
    log_probs = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    targets = codes.long().to(log_probs.device)[..., None]
    return log_probs.gather(-1, targets).squeeze(-1).flatten(1).sum(1)


def decoder_nll(vqvae, pixel_values: torch.Tensor) -> torch.Tensor:
    """-log p(x | z_q(c(x))) of each image in nats, shape (batch,): the VQ-VAE's decoder likelihood of x given its own
    codes. Only a discrete likelihood (`vqvae.likelihood.discrete`) makes this a code length."""
    if not getattr(vqvae.likelihood, "discrete", False):
        raise ValueError(f"The VQ-VAE's {vqvae.config.likelihood!r} likelihood is a density over continuous pixels: "
                         "its NLL is no code length, so bits/dim are not defined; train the VQ-VAE with "
                         "--likelihood discretized_logistic (8-bit images) or bernoulli (binarized images).")
    x = vqvae.check_pixel_values(pixel_values)
    quantized = vqvae.quantize(vqvae.encode(x).latents).quantized
    return vqvae.likelihood.nll(x, vqvae.decoder(quantized))


def prior_nll_metrics(code_nll: torch.Tensor, config, decoder_nll: torch.Tensor | None = None,
                      num_pixels: int | None = None) -> dict[str, float]:
    """
    Test NLL of a prior, the same way for both kinds, from per-map figures over a test set.

    Args:
        code_nll: (N,) -log p(c_n) in nats, c_n the code map of test image n (`-log_prob_codes`).
        config: the prior's config (for K, the grid size and the depth n of residual codes).
        decoder_nll: (N,) -log p(x_n | c_n) in nats (`decoder_nll`), for a discrete decoder likelihood only.
        num_pixels: D = channels * height * width of the images, needed with `decoder_nll`.

    Returns:
        `nll_per_code_nats` (mean -log p(c_n) / L, L = n grid_size**2 codes per image), `bits_per_code`,
        `nll_per_image_nats` (of the code map), and with `decoder_nll`: `bits_per_dim` =
        mean (decoder_nll + code_nll) / (D ln 2), an upper bound on -log2 p(x) / D (see the module docstring), split
        into `decoder_bits_per_dim` and `prior_bits_per_dim`, and
        `uniform_prior_bits_per_dim` (the same bound with uniform codes, L log K, the VQ-VAE's training prior).
    """
    length = config.grid_size**2 * num_quantizers(config)
    per_map = code_nll.double().mean().item()
    metrics = {"nll_per_code_nats": per_map / length, "bits_per_code": per_map / (length * math.log(2)),
               "nll_per_image_nats": per_map}
    if decoder_nll is not None:
        if num_pixels is None or len(decoder_nll) != len(code_nll):
            raise ValueError("decoder_nll needs num_pixels and one value per code map.")
        scale = num_pixels * math.log(2)
        decoder = decoder_nll.double().mean().item()
        metrics.update(bits_per_dim=(decoder + per_map) / scale, decoder_bits_per_dim=decoder / scale,
                       prior_bits_per_dim=per_map / scale,
                       uniform_prior_bits_per_dim=(decoder + length * math.log(config.num_embeddings)) / scale)
    return metrics


@torch.no_grad()
def code_map_nlls(prior, dataset, batch_size: int = 256) -> torch.Tensor:
    """-log p(c_n | y_n) in nats of every code map of a dataset of `{"input_ids": (h, w) or (n, h, w),
    ["class_labels"]}` items (a `training.prior.CodeDataset`), shape (N,) float64, under a prior of either kind
    (`log_prob_codes`)."""
    nlls = []
    with eval_mode(prior):
        for batch in DataLoader(dataset, batch_size=batch_size):
            labels = batch.get("class_labels")
            log_prob = log_prob_codes(prior, batch["input_ids"].to(prior.device),
                                      None if labels is None else labels.to(prior.device))
            nlls.append(-log_prob.double().cpu())
    return torch.cat(nlls)


def code_nll(prior, dataset, batch_size: int = 256) -> float:
    """Mean negative log-likelihood per code in nats, -(1 / (N h w)) sum_n log p(c_n), over a dataset of code maps
    (`code_map_nlls`)."""
    nlls = code_map_nlls(prior, dataset, batch_size)
    return nlls.mean().item() / dataset[0]["input_ids"].numel()


@torch.no_grad()
def prior_test_metrics(prior, codes, vqvae=None, images=None, collator=None,
                       batch_size: int = 256) -> dict[str, float]:
    """A prior's test NLL on a dataset of code maps (`prior_nll_metrics`): nats and bits per code, and, given the
    VQ-VAE and the `images` the `codes` were extracted from (same order, same `collator`) and where the VQ-VAE's
    likelihood is discrete, bits per dimension of the images, -log p(x | c(x)) - log p(c(x)) over D ln 2, with the
    uniform-prior figure beside it."""
    decoder = None
    if vqvae is not None and images is not None and getattr(vqvae.likelihood, "discrete", False):
        collator = collator or ImageCollator(pixel_range=vqvae.config.pixel_range)
        loader = DataLoader(images, batch_size=batch_size, shuffle=False, collate_fn=collator)
        with eval_mode(vqvae):
            decoder = torch.cat([decoder_nll(vqvae, batch["pixel_values"].to(vqvae.device)).double().cpu()
                                 for batch in loader])
    return prior_nll_metrics(code_map_nlls(prior, codes, batch_size), prior.config, decoder,
                             num_pixels=vqvae.config.num_pixels if decoder is not None else None)
