"""The latent-layout experiment (`hf-autoencoders experiment latent-layout`): how AE and VAE latents are laid out,
and how well they separate the classes (guide section 2.4.2)."""

from __future__ import annotations

import math

import torch

from ..evaluation import aggregate_posterior, representations
from ..plots import plot_latent_layout
from .report import Report
from .runner import Runner
from .verdicts import FLOORS, Claim, all_of, difference

TITLE = "Experiment: latent layout"
NEEDS_LABELS = True  # latents are coloured and scored by class
MEASURES_QUALITY = False  # no Frechet distances: nothing here reads them
REPLICATED = False
QUESTION = "How are AE and VAE latents laid out, and how well do they separate the classes?"


def layout_metrics(model, images: torch.Tensor, labels: torch.Tensor, num_points: int) -> tuple[dict, torch.Tensor]:
    """How a model lays out the latents of `images`, and the first `num_points` representations (posterior means
    for a VAE) for the figures:

    - `latent_silhouette`: of the first `num_points` representations grouped by `labels` (-1..1);
    - `aggregate_mean_abs`, `aggregate_std`: mean_j |m_j| and mean_j s_j of the aggregate posterior q(z) = E_x q(z|x)
      (`evaluation.aggregate_posterior`: m_j = E[mu_j], s_j^2 = Var(mu_j) + E[sigma_j^2]), 0 and 1 when q(z) fills
      the N(0, I) prior; `prior_mismatch` = mean_j (|m_j| + |s_j - 1|);
    - `posterior_mean_std`: mean_j of the std of the posterior means alone, which understates s_j by the width of
      the posteriors (equal to `aggregate_std` for an AE)."""
    from sklearn.metrics import silhouette_score

    z = representations(model, images)
    n = min(num_points, len(z))
    mean, variance = aggregate_posterior(model, images)
    std = variance.sqrt()
    metrics = {
        "latent_silhouette": float(silhouette_score(z[:n].numpy(), labels[:n].numpy())) if n > 10 else math.nan,
        "aggregate_mean_abs": mean.abs().mean().item(),
        "aggregate_std": std.mean().item(),
        "posterior_mean_std": z.double().std(0).mean().item(),
        "prior_mismatch": (mean.abs() + (std - 1).abs()).mean().item(),
    }
    return metrics, z[:n]


def run(runner: Runner, report: Report) -> None:
    d = runner.budget.latent_dim
    specs = [(f"AE d={d}", "ae", {}), (f"VAE d={d}", "vae", {})]
    if d != 2:
        specs += [("AE d=2", "ae", {"latent_dim": 2}), ("VAE d=2", "vae", {"latent_dim": 2})]
    groups = runner.train_all(specs)
    n = min(runner.budget.tsne_points, len(runner.test_x))
    labels = runner.test_y[:n]
    shown = {}  # the latents drawn in the figures: the first seed's
    for group in groups:
        for run in group.runs:
            metrics, z = layout_metrics(run.model, runner.test_x, runner.test_y, n)
            run.metrics.update(metrics)
            shown.setdefault(group.label, z)
    columns = ["linear_probe_accuracy", "latent_silhouette", "aggregate_mean_abs", "aggregate_std",
               "posterior_mean_std", "prior_mismatch", "psnr", "kl_loss", "active_units"]
    main, flat = groups[:2], groups[2:]
    figures = [(f"{g.label} latents ({method.upper()}), coloured by label",
                str(plot_latent_layout(shown[g.label], labels, report.path(f"{g.slug}_{method}.png"), method=method,
                                       title=f"{g.label}, {method.upper()}", seed=runner.seed).name))
               for g in main for method in ("pca", "tsne")]
    report.section(
        f"Latent layouts (d = {d})",
        f"Test-image latents (posterior means for the VAE) projected to 2-D by PCA and t-SNE ({n} points). "
        "Silhouette: of the latents grouped by label, in the latent space (-1..1, higher = better separated "
        "classes). The aggregate posterior q(z) = E_x q(z|x) over the test set, the latents the decoder is fed: "
        "mean m_j = E[mu_j] and std s_j = sqrt(Var(mu_j) + E[sigma_j^2]) (the VAE's posterior widths included; the "
        "AE's s_j is the spread of z_j), 0 and 1 when q(z) fills the N(0, I) prior; prior mismatch = "
        "mean_j (|m_j| + |s_j - 1|). Std of means: the spread of the posterior means alone, which understates a "
        "VAE's s_j.",
        report.table(main, columns), figures)
    if flat:
        report.section(
            "Two-dimensional latents",
            "The same models with a 2-D latent, drawn as they are (no projection).",
            report.table(flat, columns),
            [(f"{g.label} latents, coloured by label",
              str(plot_latent_layout(shown[g.label], labels, report.path(f"{g.slug}_raw.png"),
                                     title=f"{g.label} latents", seed=runner.seed).name)) for g in flat])
    report.section("Training curves", figures=[("Training loss of each run", report.loss_figure(groups))])

    pairs = list(zip(groups[::2], groups[1::2]))
    mismatch = [difference(ae.values("prior_mismatch"), vae.values("prior_mismatch"), FLOORS["prior_mismatch"])
                for ae, vae in pairs]
    report.claim(Claim(
        "latent_layout_prior",
        "VAE latents fill the N(0, I) prior (centred, unit spread) while AE latents sit at an arbitrary location and "
        "scale",
        all_of([m.verdict(+1) for m in mismatch]),
        "prior mismatch of the aggregate posterior, AE vs VAE: " + "; ".join(
            f"{ae.config.latent_dim}-d {m.text()} (mean |m_j| / s_j: AE {ae.mean('aggregate_mean_abs'):.2f} / "
            f"{ae.mean('aggregate_std'):.2f}, VAE {vae.mean('aggregate_mean_abs'):.2f} / "
            f"{vae.mean('aggregate_std'):.2f}; the VAE's posterior means alone spread "
            f"{vae.mean('posterior_mean_std'):.2f})" for (ae, vae), m in zip(pairs, mismatch)),
        rule="at every latent size the AE's mismatch must exceed the VAE's by max(2 SE, floor), both measured on the "
             "aggregate posterior (mean E[mu], variance Var(mu) + E[sigma^2])",
    ))
    separation = [difference(vae.values("latent_silhouette"), ae.values("latent_silhouette"), FLOORS["silhouette"])
                  for ae, vae in pairs]
    report.claim(Claim(
        "latent_layout_classes",
        "the VAE's latent space is better organised by class than the AE's",
        all_of([s.verdict(+1) for s in separation]),
        "silhouette by label VAE vs AE: " + "; ".join(f"{ae.config.latent_dim}-d {s.text(digits=3)}"
                                                      for (ae, _), s in zip(pairs, separation))
        + "; linear probe VAE vs AE: " + "; ".join(
            f"{ae.config.latent_dim}-d {vae.mean('linear_probe_accuracy'):.3f} vs "
            f"{ae.mean('linear_probe_accuracy'):.3f}" for ae, vae in pairs),
        rule="at every latent size the VAE's silhouette must exceed the AE's by max(2 SE, floor)",
    ))
