"""Evaluation: the one loop over a dataset (`evaluate`), the metrics it reports, and the analyses built on them
(a reference classifier, latent representations, gradient and likelihood estimators).

    from hf_autoencoders.evaluation import evaluate
    metrics = evaluate(model, data.test, num_importance_samples=100)   # psnr, ssim, loss terms, iwae_nll, ...
"""

from .classifier import (
    SmallCNN,
    classifier_accuracy,
    downstream_accuracy,
    linear_probe_accuracy,
    predict_proba,
    sample_quality,
    train_classifier,
)
from .latents import interpolate_latents, representations
from .loop import evaluate, likelihood_bounds
from .metrics import CodebookUsage, codebook_stats, mse, nats_to_bits_per_dim, psnr, ssim

__all__ = [
    "CodebookUsage", "SmallCNN", "classifier_accuracy", "codebook_stats", "downstream_accuracy", "evaluate",
    "interpolate_latents", "likelihood_bounds", "linear_probe_accuracy", "mse", "nats_to_bits_per_dim",
    "predict_proba", "psnr", "representations", "sample_quality", "ssim", "train_classifier",
]
