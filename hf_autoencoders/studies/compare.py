"""The compare experiment (`hf-autoencoders experiment compare`): The same data, backbone and budget for the three
families: how do losses, reconstructions, samples and interpolations differ?"""

from __future__ import annotations

import math

from .study import FIDELITY, SAMPLE_QUALITY, Study, display_name
from .verdicts import LIKELIHOOD, PSNR_TOL, USEFULNESS, claim, close, metric, sample_claim

TITLE = "Experiment: AE vs VAE vs VQ-VAE"
QUESTION = (
    'The same data, backbone and budget for the three families: how do losses, reconstructions, samples '
    'and interpolations differ?'
)


def run(study: Study) -> None:
    runs = study.train_all([(display_name(f), f, {}) for f in ("ae", "vae", "vqvae")])
    ae, vae, vq = runs
    c, vq_config = vae.model.config.gaussian_variance, vq.model.config
    codebook = ("its codes are moving averages of the encoder outputs (EMA"
                + (", k-means initialised" if vq_config.kmeans_init else "")
                + (", unused codes restarted" if vq_config.dead_code_threshold else "") + ")"
                if vq_config.codebook_ema else "plus the codebook loss")
    study.section(
        "Test metrics",
        "Each model minimises its own loss: the AE the summed squared error (SSE), the VAE "
        f"SSE / 2c + KL with c = {c:g} (a KL weight of {2 * c:g} relative to the SSE), the VQ-VAE SSE + commitment "
        f"loss, {codebook}, with K = {vq_config.num_embeddings} codes of dimension {vq_config.embedding_dim} on a "
        f"{vq_config.latent_grid_size}x{vq_config.latent_grid_size} grid. The SSE, MSE, PSNR and SSIM columns compare "
        "them on equal terms.",
        study.table(runs, FIDELITY + ["sse"] + LIKELIHOOD + ["codebook_usage", "codebook_perplexity"] + USEFULNESS),
        [("Training loss of each model", study.loss_figure(runs))],
    )
    study.section("Reconstructions", "In each pair of rows: test images above, their reconstructions below.",
                  figures=[(f"{r.label} reconstructions", study.reconstruction_figure(r)) for r in runs])
    study.section(
        "Samples",
        "AE: decoder of z ~ N(0, I) (an AE has no prior; this is the naive generator). VAE: decoder of z ~ N(0, I), "
        "its prior. VQ-VAE: code maps drawn uniformly, its training prior (see the `samples` experiment for a "
        "learned prior).",
        study.table(runs, SAMPLE_QUALITY),
        [(f"{r.label} samples", study.samples_figure(r)) for r in runs],
    )
    study.section("Interpolations", "Straight lines in latent space between two test images, decoded.",
                  figures=[(f"{r.label} interpolations", study.interpolation_figure(r)) for r in runs])

    ranked = sorted(runs, key=lambda r: -metric(r, "psnr"))
    study.findings.append("Reconstruction PSNR ranks " + " > ".join(
        f"{r.label} ({metric(r, 'psnr'):.2f} dB, SSIM {metric(r, 'ssim'):.3f})" for r in ranked) + ".")
    study.findings.append(claim(
        metric(vae, "psnr") < metric(ae, "psnr"),
        "a VAE reconstructs worse (blurrier) than an AE of the same size, the price of its KL term",
        f"the VAE reaches {metric(vae, 'psnr'):.2f} dB against {metric(ae, 'psnr'):.2f} dB for the AE "
        f"(KL {metric(vae, 'kl_loss'):.1f} nats, {metric(vae, 'active_units')} active units of "
        f"{vae.model.config.latent_dim})", close(metric(vae, "psnr"), metric(ae, "psnr"), PSNR_TOL)))
    study.findings.append(claim(
        metric(vq, "psnr") > metric(vae, "psnr"),
        "a VQ-VAE's discrete codes avoid the VAE's blur",
        f"the VQ-VAE reaches {metric(vq, 'psnr'):.2f} dB against {metric(vae, 'psnr'):.2f} dB for the VAE, using "
        f"{metric(vq, 'codebook_usage'):.0%} of its {vq.model.config.num_embeddings} codes (perplexity "
        f"{metric(vq, 'codebook_perplexity'):.1f})", close(metric(vq, "psnr"), metric(vae, "psnr"), PSNR_TOL)))
    if study.labelled:
        study.findings.append(sample_claim(
            vae, ae, "decoding z ~ N(0, I) gives recognisable images for a VAE but not for an AE, whose latents need "
            "not lie where N(0, I) puts its mass", "VAE", "AE"))
        entropy, confidence = metric(vq, "sample_class_entropy"), metric(vq, "sample_mean_max_prob")
        study.findings.append(claim(
            entropy < 0.5 * math.log(study.data.num_labels) or confidence < 0.5,
            "uniformly drawn VQ codes do not make digits",
            f"their samples have mean confidence {confidence:.3f} and class entropy {entropy:.2f} nats"
            + (" (the classifier puts nearly all of them in one class)" if entropy < 0.5 else "")))
        study.findings.append(
            "Reconstructions keep the class: the reference classifier is "
            + ", ".join(f"{metric(r, 'downstream_accuracy'):.3f} accurate on {r.label} reconstructions" for r in runs)
            + f" (on the real images: {study.reference['classifier_test_accuracy']:.3f}); a linear probe on the "
            "latents reaches " + ", ".join(f"{metric(r, 'linear_probe_accuracy'):.3f} ({r.label})" for r in runs)
            + ".")
