"""The compare experiment (`hf-autoencoders experiment compare`): AE vs VAE vs VQ-VAE on the same data, backbone
and budget, over several seeds: their losses, reconstructions (edges included), samples, interpolations, and the
latent capacity each one has (guide sections 2.4.1, 3.3.1 and 3.3.2)."""

from __future__ import annotations

import math

import torch

from .report import FIDELITY, SAMPLE_QUALITY, Report, markdown_table
from .runner import Group, Runner, display_name, edge_energy
from .verdicts import CONFIRMED, FLOORS, Claim, all_of, difference

TITLE = "Experiment: AE vs VAE vs VQ-VAE"
QUESTION = (
    "The same data, backbone and budget for the three families: how do their losses, reconstructions (edges "
    "included), samples and interpolations differ, and how much information can each latent carry?"
)
REPLICATED = True  # trained over the budget's seeds
LIKELIHOOD = ["loss", "objective_sse_units", "reconstruction_loss", "kl_loss", "commitment_loss", "elbo", "iwae_nll",
              "active_units"]
USEFULNESS = ["downstream_accuracy", "linear_probe_accuracy", "reconstruction_fd_domain"]


def add_objective_and_capacity(group: Group) -> None:
    """Per run: `objective_sse_units`, the model's own loss rescaled to summed squared error (loss x 2c for a
    Gaussian likelihood of variance c: AE SSE; VAE SSE + 2c KL; VQ-VAE SSE + beta x commitment), and the latent's
    capacity: `code_bits` = h w log2 K for a code map (and `code_bits_used` = h w log2 perplexity), `rate_bits` =
    KL / ln 2 for a posterior; an AE's d floats have no fixed budget."""
    config = group.config
    for run in group.runs:
        m = run.metrics
        if config.likelihood == "gaussian":
            m["objective_sse_units"] = m["loss"] * 2 * config.gaussian_variance
        if hasattr(config, "num_embeddings"):
            positions = config.latent_grid_size**2
            m["code_bits"] = positions * math.log2(config.num_embeddings)
            m["code_bits_used"] = positions * math.log2(max(m.get("codebook_perplexity", 1.0), 1.0))
        elif "kl_loss" in m:
            m["rate_bits"] = m["kl_loss"] / math.log(2)


def capacity(group: Group) -> tuple[str, str]:
    config = group.config
    if hasattr(config, "num_embeddings"):
        g = config.latent_grid_size
        return (f"{g}x{g} map of codes from K = {config.num_embeddings}",
                f"{group.mean('code_bits'):.0f} bits (h w log2 K); {group.mean('code_bits_used'):.0f} bits at the "
                "measured code entropy")
    if group.values("rate_bits"):
        return (f"{config.latent_dim} Gaussian dimensions",
                f"rate KL = {group.mean('kl_loss'):.1f} nats = {group.mean('rate_bits'):.0f} bits per image")
    return f"{config.latent_dim} floats", "no fixed budget (continuous values, limited only by precision and noise)"


def edge_crops_figure(report: Report, originals: torch.Tensor, groups: list[Group], n: int = 6) -> str:
    """For each of the first `n` test images, the half-size window with the most edge energy, cropped from the
    original and from each model's reconstruction and enlarged: one row per model, the originals on top."""
    size = max(4, originals.shape[-1] // 2)
    rows = [[] for _ in range(len(groups) + 1)]
    for i in range(min(n, len(originals))):
        x = originals[i]
        best, where = -1.0, (0, 0)
        for top in range(0, x.shape[-2] - size + 1, 2):
            for left in range(0, x.shape[-1] - size + 1, 2):
                energy = edge_energy(x[None, :, top:top + size, left:left + size]).item()
                if energy > best:
                    best, where = energy, (top, left)
        top, left = where
        for row, image in zip(rows, [x] + [g.first.reconstructions[i] for g in groups]):
            row.append(image[:, top:top + size, left:left + size])
    return report.image_rows_figure([torch.stack(r) for r in rows], "edge_crops.png", nrow=len(rows[0]), scale=6)


def run(runner: Runner, report: Report) -> None:
    ae, vae, vq = runner.train_all([(display_name(f), f, {}) for f in ("ae", "vae", "vqvae")])
    groups = [ae, vae, vq]
    # A VQ-VAE at the VAE's rate: K = 2^round(rate / positions) codes carry about as many bits as the VAE's KL.
    positions = vq.config.latent_grid_size**2
    k = max(2, 2 ** round(vae.mean("kl_loss") / math.log(2) / positions))
    matched = None
    if k != vq.config.num_embeddings:
        matched = runner.train(f"VQ-VAE K={k}", "vqvae", {"num_embeddings": k})
        groups.append(matched)
    for group in groups:
        add_objective_and_capacity(group)
    x = runner.test_x
    c = vae.config.gaussian_variance
    report.section(
        "Latent capacity",
        "What each latent can carry per image. The comparisons below hold the data, backbone, width, optimiser and "
        "training length equal, not the capacity: the VQ-VAE's code map has a fixed number of bits, the VAE pays "
        "for every nat of its rate (KL) in its loss, the AE's floats are unbounded."
        + (f" *{matched.label}* is the VQ-VAE with K chosen so that its code map carries about the VAE's rate "
           f"({positions} positions x log2 {k} = {positions * math.log2(k):.0f} bits)." if matched else ""),
        markdown_table(["model", "latent", "capacity"], [[g.label, *capacity(g)] for g in groups]),
    )
    report.section(
        "Test metrics",
        "Each model minimises its own loss: the AE the summed squared error (SSE), the VAE "
        f"SSE / 2c + KL with c = {c:g} (a KL weight of {2 * c:g} relative to the SSE), the VQ-VAE SSE + commitment "
        f"loss. *Objective (SSE units)* rescales each loss to the SSE (loss x 2c): SSE for the AE, SSE + {2 * c:g} KL "
        "for the VAE, SSE + beta x commitment for the VQ-VAE. The SSE, MSE, PSNR, SSIM and edge-sharpness columns "
        "compare reconstructions on equal terms.",
        report.table(groups, FIDELITY + ["sse"] + LIKELIHOOD + ["codebook_usage", "codebook_perplexity"] + USEFULNESS),
        [("Training loss of each model (first seed)", report.loss_figure(groups))],
    )
    report.section(
        "Reconstructions",
        "In each pair of rows: test images above, their reconstructions below (first seed). The crops are the "
        "half-size window of each image with the most edges, enlarged: originals on top, then "
        + ", ".join(g.label for g in groups) + ".",
        figures=[(f"{g.label} reconstructions", report.reconstruction_figure(x, g)) for g in groups]
        + [("Edge crops: original, then each model", edge_crops_figure(report, x, groups))],
    )
    report.section(
        "Samples",
        "AE: decoder of z ~ N(0, I) (an AE has no prior; this is the naive generator). VAE: decoder of z ~ N(0, I), "
        "its prior. VQ-VAE: code maps drawn uniformly, its training prior (the `samples` experiment adds a learned "
        "prior).",
        report.table(groups, SAMPLE_QUALITY),
        [(f"{g.label} samples", report.samples_figure(g.first.samples, f"{g.slug}_samples.png")) for g in groups],
    )
    report.section("Interpolations", "Straight lines in latent space between two test images, decoded.",
                   figures=[(f"{g.label} interpolations", report.interpolation_figure(g, x)) for g in groups[:3]])
    judge(runner, report, ae, vae, vq, matched)
    report.summary = {"vq_at_vae_rate_num_embeddings": k, "code_positions": positions}


def judge(runner: Runner, report: Report, ae: Group, vae: Group, vq: Group, matched: Group | None) -> None:
    """The verdicts on the guide's claims about the three families, and what the capacity-matched VQ-VAE shows."""
    groups = [ae, vae, vq] + ([matched] if matched else [])
    psnr = {g.label: g.values("psnr") for g in groups}
    d_ae_vae = difference(psnr[ae.label], psnr[vae.label], FLOORS["psnr"])
    report.claim(Claim(
        "ae_vs_vae_reconstruction",
        "a VAE reconstructs worse than an AE of the same size (the price of its KL term)",
        d_ae_vae.verdict(+1),
        f"PSNR AE vs VAE {d_ae_vae.text('dB')}; the VAE's rate is {vae.mean('kl_loss'):.1f} nats",
    ))
    objective = {g.label: g.values("objective_sse_units") for g in groups}
    d_vq_ae = difference(objective[vq.label], objective[ae.label], relative_floor=0.02)
    d_vq_vae = difference(objective[vq.label], objective[vae.label], relative_floor=0.02)
    report.claim(Claim(
        "vqvae_losses_higher",
        "the VQ-VAE's losses are higher than the AE's and the VAE's (it adds a quantization term)",
        all_of([d_vq_ae.verdict(+1), d_vq_vae.verdict(+1)]),
        f"test objective in SSE units: VQ-VAE vs AE {d_vq_ae.text()}; VQ-VAE vs VAE {d_vq_vae.text()} "
        f"(VQ-VAE commitment term {vq.mean('commitment_loss'):.2f})",
        rule="both differences must be confirmed (relative floor 2% of the larger objective)",
    ))
    d_ae_vq = difference(psnr[ae.label], psnr[vq.label], FLOORS["psnr"])
    d_vq_vae_psnr = difference(psnr[vq.label], psnr[vae.label], FLOORS["psnr"])
    order = sorted(groups, key=lambda g: -g.mean("psnr"))
    report.claim(Claim(
        "reconstruction_order",
        "reconstructions rank AE > VQ-VAE > VAE",
        all_of([d_ae_vq.verdict(+1), d_vq_vae_psnr.verdict(+1)]),
        f"PSNR AE vs VQ-VAE {d_ae_vq.text('dB')}; VQ-VAE vs VAE {d_vq_vae_psnr.text('dB')}; measured order "
        + " > ".join(f"{g.label} ({g.mean('psnr'):.2f} dB)" for g in order),
        rule="both differences must be confirmed",
    ))
    d_edges = difference(vq.values("edge_sharpness"), vae.values("edge_sharpness"), FLOORS["edge_sharpness"])
    report.claim(Claim(
        "vqvae_sharper_edges",
        "the VQ-VAE's reconstructions have sharper edges than the VAE's",
        d_edges.verdict(+1),
        f"edge sharpness (reconstruction / original gradient energy) VQ-VAE vs VAE {d_edges.text(digits=3)}",
    ))
    if matched is not None:
        d_matched = difference(matched.values("psnr"), psnr[vae.label], FLOORS["psnr"])
        verdict = d_matched.verdict(+1)
        report.findings.append(
            f"At the VAE's rate ({matched.label}, {matched.mean('code_bits'):.0f} bits against the VAE's "
            f"{vae.mean('rate_bits'):.0f}), the VQ-VAE reconstructs "
            + {CONFIRMED: "better than", "contradicted": "worse than"}.get(verdict, "within noise of")
            + f" the VAE: PSNR {d_matched.text('dB')}; with K = {vq.config.num_embeddings} "
            f"({vq.mean('code_bits'):.0f} bits) it reaches {vq.mean('psnr'):.2f} dB.")
    if runner.labelled:
        report.findings.append(
            "Reconstructions keep the class: the reference classifier is "
            + ", ".join(f"{g.mean('downstream_accuracy'):.3f} accurate on {g.label} reconstructions" for g in groups)
            + f" (on the real images: {runner.reference['classifier_test_accuracy']:.3f}); a linear probe on the "
            "latents reaches " + ", ".join(f"{g.mean('linear_probe_accuracy'):.3f} ({g.label})" for g in groups)
            + ".")
