"""The samples experiment (`hf-autoencoders experiment samples`): which generator makes images closest to the real
ones — an AE decoding N(0, I), a VAE, a VQ-VAE with uniform codes, or a VQ-VAE with a learned PixelCNN prior — judged
by the Frechet distance to the test images, over several seeds (guide sections 2.4.4 and 3.2.4)."""

from __future__ import annotations

import math

from .report import FIDELITY, SAMPLE_QUALITY, Report
from .runner import Group, Run, Runner, display_name
from .verdicts import FLOORS, Claim, difference

TITLE = "Experiment: samples"
QUESTION = (
    "Which generator makes images closest to the real ones: an AE decoding N(0, I), a VAE, a VQ-VAE with uniform "
    "codes, or a VQ-VAE with a learned PixelCNN prior?"
)
REPLICATED = True
PRIOR_LABEL = "VQ-VAE + PixelCNN prior"


def run(runner: Runner, report: Report) -> None:
    ae, vae, vq = runner.train_all([(display_name(f), f, {}) for f in ("ae", "vae", "vqvae")],
                                   epochs=runner.budget.sample_epochs)
    prior_runs, stats = [], []
    for vq_run in vq.runs:
        prior, prior_stats = runner.train_prior(vq_run)
        scalars = {k: v for k, v in prior_stats.items() if not isinstance(v, (dict, list))}
        scalars.update(runner.quality(vq_run.model, prior=prior, reconstructions=False))
        prior_runs.append(Run(PRIOR_LABEL, vq_run.family, vq_run.seed, vq_run.model, scalars,
                              samples=runner.samples(vq_run.model, prior=prior)))
        stats.append(prior_stats)
    with_prior = Group(PRIOR_LABEL, vq.family, prior_runs)
    runner.groups[PRIOR_LABEL] = with_prior
    report.summary = {"priors": stats}
    generators = [ae, vae, vq, with_prior]
    labels = ["AE, z ~ N(0, I)", "VAE, z ~ N(0, I)", "VQ-VAE, uniform codes", "VQ-VAE, PixelCNN prior"]
    first = stats[0]
    report.section(
        "Sample quality",
        f"{runner.budget.num_samples} samples per generator and seed against the test images. The PixelCNN prior "
        f"({first['prior_config']['num_layers']} gated layers of {first['prior_config']['hidden_size']} channels, "
        f"{first['prior_steps']} steps) models the VQ-VAE's {vq.config.latent_grid_size}x"
        f"{vq.config.latent_grid_size} code maps of the training images: "
        f"{with_prior.mean('prior_test_bits_per_code'):.2f} ± {with_prior.std('prior_test_bits_per_code'):.2f} bits "
        "per code on the test images, against "
        f"{first['uniform_bits_per_code']:.2f} for uniform codes. Sample grids: first seed.",
        report.table(generators, SAMPLE_QUALITY + ["prior_test_bits_per_code"], first="generator", labels=labels),
        [(label, report.samples_figure(g.first.samples, f"{g.slug}_samples.png"))
         for label, g in zip(labels, generators)],
    )
    report.section(
        "The autoencoders behind the samples",
        "Test reconstructions of the three models (the prior does not change the VQ-VAE's reconstructions).",
        report.table([ae, vae, vq], FIDELITY + ["kl_loss", "codebook_usage", "codebook_perplexity",
                                                "reconstruction_fd_domain"]),
        [(f"{g.label} reconstructions", report.reconstruction_figure(runner.test_x, g)) for g in (ae, vae, vq)]
        + [("Training loss of each model (first seed)", report.loss_figure([ae, vae, vq]))],
    )

    fd = "sample_fd_domain"
    d_vae = difference(ae.values(fd), vae.values(fd), relative_floor=FLOORS["relative"])
    report.claim(Claim(
        "vae_samples_beat_ae",
        "decoding z ~ N(0, I) gives better samples for a VAE than for an AE, whose latents need not lie where "
        "N(0, I) puts its mass",
        d_vae.verdict(+1),
        f"sample Frechet distance AE vs VAE {d_vae.text()}",
        rule="the AE's FD minus the VAE's against max(2 SE, 5% of the larger)",
    ))
    d_prior = difference(vq.values(fd), with_prior.values(fd), relative_floor=FLOORS["relative"])
    report.claim(Claim(
        "prior_beats_uniform_codes",
        "a VQ-VAE generates well only with a learned prior over its codes: PixelCNN codes beat uniformly drawn codes",
        d_prior.verdict(+1),
        f"sample Frechet distance uniform vs PixelCNN codes {d_prior.text()}; the prior needs "
        f"{with_prior.mean('prior_test_bits_per_code'):.2f} bits per code against log2 K = "
        f"{first['uniform_bits_per_code']:.2f}",
        rule="uniform codes' FD minus the prior's against max(2 SE, 5% of the larger)",
    ))
    measured = [(g, label) for g, label in zip(generators, labels) if g.values(fd)]
    if measured:
        ranked = sorted(measured, key=lambda pair: pair[0].mean(fd))
        report.findings.append("By the Frechet distance to the test images (lower is better) the generators rank "
                               + " < ".join(f"{label} ({g.mean(fd):.3g})" for g, label in ranked) + ".")
    bits = [s["prior_test_bits_per_code"] for s in stats]
    report.findings.append(
        f"The codes of real images are far from uniform: the PixelCNN needs {sum(bits) / len(bits):.2f} bits per "
        f"code on the test images against log2 K = {first['uniform_bits_per_code']:.2f}, i.e. a code map carries "
        f"about {sum(bits) / len(bits) * vq.config.latent_grid_size**2:.0f} bits where uniform codes would spend "
        f"{first['uniform_bits_per_code'] * vq.config.latent_grid_size**2:.0f}."
        if all(math.isfinite(b) for b in bits) else "The prior's test NLL is not finite.")
