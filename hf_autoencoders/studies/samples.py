"""The samples experiment (`hf-autoencoders experiment samples`): Which generator makes recognisable, diverse
images: an AE decoding N(0, I), a VAE, a VQ-VAE with uniform codes, or a VQ-VAE with a learned PixelCNN prior?"""

from __future__ import annotations

import math

import torch

from ..data import ImageTensorDataset
from ..evaluation import sample_quality
from ..models import PixelCNNPriorConfig, PixelCNNPriorModel
from .study import FIDELITY, SAMPLE_QUALITY, Run, Study, display_name, train_quietly
from .verdicts import claim, metric, sample_claim

TITLE = "Experiment: samples"
QUESTION = (
    'Which generator makes recognisable, diverse images: an AE decoding N(0, I), a VAE, a VQ-VAE with '
    'uniform codes, or a VQ-VAE with a learned PixelCNN prior?'
)


def train_prior(study: Study, vqvae) -> tuple[PixelCNNPriorModel, dict]:
    """A PixelCNN prior over the VQ-VAE's code maps of the training images; returns it and its test NLL."""
    from ..training.prior import CodeDataset, PriorTrainer, code_nll, collate_codes, extract_codes

    b = study.budget
    train_codes, _ = extract_codes(vqvae, study.train_set, progress=False)
    test_images = (study.test_x * 255).round().to(torch.uint8)
    test_codes, _ = extract_codes(vqvae, ImageTensorDataset(test_images), progress=False)
    config = PixelCNNPriorConfig(num_embeddings=vqvae.config.num_embeddings, grid_size=vqvae.config.latent_grid_size,
                                 hidden_size=b.prior_hidden_size, num_layers=b.prior_layers)
    torch.manual_seed(study.seed)
    prior = PixelCNNPriorModel(config)
    history = train_quietly(PriorTrainer, prior, CodeDataset(train_codes), collate_codes, steps=b.prior_steps,
                            batch_size=b.batch_size, learning_rate=b.learning_rate, seed=study.seed)
    nll = code_nll(prior.eval(), CodeDataset(test_codes))
    return prior, {"prior_test_nll_nats_per_code": nll, "prior_test_bits_per_code": nll / math.log(2),
                   "uniform_bits_per_code": math.log2(config.num_embeddings), "prior_steps": b.prior_steps,
                   "prior_config": {"hidden_size": config.hidden_size, "num_layers": config.num_layers,
                                    "grid_size": config.grid_size}, "prior_loss_curve":
                   [[e["step"], e["loss"]] for e in history if "loss" in e]}


def run(study: Study) -> None:
    runs = study.train_all([(display_name(f), f, {}) for f in ("ae", "vae", "vqvae")])
    ae, vae, vq = runs
    prior, prior_stats = train_prior(study, vq.model)
    prior_samples = study.samples(vq.model, prior=prior)
    scalars = {k: v for k, v in prior_stats.items() if not isinstance(v, (dict, list))}
    with_prior = Run("VQ-VAE + PixelCNN prior", "vqvae", vq.model, scalars, samples=prior_samples.clamp(0, 1).cpu())
    if study.labelled:
        quality = sample_quality(study.classifier, with_prior.samples)
        with_prior.metrics.update({f"sample_{k}": v for k, v in quality.items()})
    study.runs[with_prior.label] = with_prior
    study.summary = prior_stats
    generators = [ae, vae, vq, with_prior]
    labels = ["AE, z ~ N(0, I)", "VAE, z ~ N(0, I)", "VQ-VAE, uniform codes", "VQ-VAE, PixelCNN prior"]
    study.section(
        "Sample quality",
        f"{len(prior_samples)} samples per generator, judged by the reference classifier. The PixelCNN prior "
        f"({prior_stats['prior_config']['num_layers']} gated layers, {prior_stats['prior_steps']} steps) models the "
        f"VQ-VAE's {vq.model.config.latent_grid_size}x{vq.model.config.latent_grid_size} code maps of the training "
        f"images: {prior_stats['prior_test_bits_per_code']:.2f} bits per code on the test images, against "
        f"{prior_stats['uniform_bits_per_code']:.2f} for uniform codes.",
        study.table(generators, SAMPLE_QUALITY, first="generator", labels=labels),
        [(label, study.samples_figure(r, name=f"{r.slug}_samples.png")) for label, r in zip(labels, generators)],
    )
    study.section(
        "The autoencoders behind the samples",
        "Test reconstructions of the three models (the prior does not change the VQ-VAE's reconstructions).",
        study.table(runs, FIDELITY + ["kl_loss", "codebook_usage", "codebook_perplexity"]),
        [(f"{r.label} reconstructions", study.reconstruction_figure(r)) for r in runs]
        + [("Training loss of each model", study.loss_figure(runs))],
    )

    study.findings.append(claim(
        prior_stats["prior_test_bits_per_code"] < prior_stats["uniform_bits_per_code"],
        "the codes of real images are far from uniform, so a learned prior needs fewer bits per code",
        f"the PixelCNN needs {prior_stats['prior_test_bits_per_code']:.2f} bits per code on test images against "
        f"log2 K = {prior_stats['uniform_bits_per_code']:.2f}"))
    if study.labelled:
        study.findings.append(sample_claim(with_prior, vq, "a VQ-VAE generates only with a learned prior over its "
                                           "codes", "PixelCNN codes", "uniform codes"))
        study.findings.append(sample_claim(vae, ae, "decoding z ~ N(0, I) works for a VAE but not for an AE", "VAE",
                                           "AE"))
        def ranking(key: str, digits: int) -> str:
            ranked = sorted(zip(generators, labels), key=lambda pair: -metric(pair[0], key))
            return " > ".join(f"{label} ({metric(run, key):.{digits}f})" for run, label in ranked)

        study.findings.append(
            "By the Inception-like score, which needs samples both recognisable and spread over the classes, the "
            f"generators rank {ranking('sample_inception_score', 2)} (1: a single class or no confidence; 10: "
            f"confident and every digit equally frequent). Confidence alone ranks them "
            f"{ranking('sample_mean_max_prob', 3)}: a small classifier can be sure about blobs.")
