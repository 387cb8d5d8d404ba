"""Evaluation: the one loop over a dataset (`evaluate`), the metrics it reports, and the analyses built on them
(a reference classifier, latent representations, gradient and likelihood estimators, sample and reconstruction
quality on fixed features: Fréchet distance, KID, precision/recall/density/coverage).

    from hf_autoencoders.evaluation import evaluate
    metrics = evaluate(model, data.test, num_importance_samples=100)   # psnr, ssim, loss terms, iwae_nll, ...
    features = domain_features(train_images, train_labels)             # or inception_features(weights_path)
    quality = quality_metrics(model, test_images, features=features)   # sample_fd_domain, reconstruction_kid_..., ...
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
from .features import (
    FEATURE_SEED,
    FEATURE_TRAIN_IMAGES,
    FID_WEIGHTS_URL,
    DomainFeatures,
    FIDInceptionV3,
    ImageFeatures,
    InceptionFeatures,
    dataset_features,
    domain_features,
    inception_features,
    weights_sha256,
)
from .frechet import (
    feature_metrics,
    frechet_distance,
    kernel_inception_distance,
    precision_recall_density_coverage,
    quality_from_features,
    quality_metrics,
    sample_features,
)
from .latents import (
    aggregate_posterior,
    encoded_latents,
    interpolate_latents,
    latent_statistics,
    latents_dataset,
    representations,
    scaled_latents,
    scaling_factors,
)
from .loop import EVAL_SEED, evaluate, likelihood_bounds
from .metrics import CodebookUsage, codebook_stats, mse, nats_to_bits_per_dim, psnr, ssim

__all__ = [
    "EVAL_SEED", "CodebookUsage", "SmallCNN", "aggregate_posterior", "classifier_accuracy", "codebook_stats",
    "downstream_accuracy", "evaluate",
    "interpolate_latents", "likelihood_bounds", "linear_probe_accuracy", "mse", "nats_to_bits_per_dim",
    "predict_proba", "psnr", "representations", "sample_quality", "ssim", "train_classifier",
    "FEATURE_SEED", "FEATURE_TRAIN_IMAGES", "FID_WEIGHTS_URL", "DomainFeatures", "FIDInceptionV3", "ImageFeatures",
    "InceptionFeatures", "dataset_features", "domain_features", "feature_metrics", "frechet_distance",
    "inception_features", "kernel_inception_distance", "precision_recall_density_coverage", "quality_from_features",
    "quality_metrics", "sample_features", "weights_sha256",
    "encoded_latents", "latent_statistics", "latents_dataset", "scaled_latents", "scaling_factors",
]
