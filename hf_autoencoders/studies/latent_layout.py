"""The latent-layout experiment (`hf-autoencoders experiment latent-layout`): How are AE and VAE latents laid out,
and how well do they separate the classes?"""

from __future__ import annotations

import math

from ..evaluation import representations
from ..plots import plot_latent_layout
from .study import Study
from .verdicts import ACCURACY_TOL, SILHOUETTE_TOL, claim, metric, sign

TITLE = "Experiment: latent layout"
NEEDS_LABELS = True  # latents are coloured and scored by class
QUESTION = (
    'How are AE and VAE latents laid out, and how well do they separate the classes?'
)


def run(study: Study) -> None:
    from sklearn.metrics import silhouette_score

    d = study.budget.latent_dim
    specs = [("AE", "ae", {}), ("VAE", "vae", {})]
    if d != 2:
        specs += [("AE d=2", "ae", {"latent_dim": 2}), ("VAE d=2", "vae", {"latent_dim": 2})]
    runs = study.train_all(specs)
    n = min(study.budget.tsne_points, len(study.test_x))
    labels = study.test_y[:n]
    shown = {}  # the latents drawn in the figures, per run
    for run in runs:
        z = representations(run.model, study.test_x)
        mean, std = z.mean(0), z.std(0)
        run.metrics.update(
            latent_silhouette=float(silhouette_score(z[:n].numpy(), labels.numpy())) if n > 10 else math.nan,
            aggregate_mean_abs=mean.abs().mean().item(),  # 0 under the N(0, I) prior
            aggregate_std=std.mean().item(),  # 1 under the N(0, I) prior
            prior_mismatch=(mean.abs() + (std - 1).abs()).mean().item(),
        )
        shown[run.label] = z[:n]
    columns = ["linear_probe_accuracy", "latent_silhouette", "aggregate_mean_abs", "aggregate_std", "prior_mismatch",
               "psnr", "kl_loss", "active_units"]
    main_runs, flat_runs = runs[:2], runs[2:]
    figures = [(f"{r.label} latents ({method.upper()}), coloured by label",
                str(plot_latent_layout(shown[r.label], labels, study.path(f"{r.slug}_{method}.png"), method=method,
                                       title=f"{r.label}, d={r.model.config.latent_dim}, {method.upper()}",
                                       seed=study.seed).name))
               for r in main_runs for method in ("pca", "tsne")]
    study.section(
        f"Latent layouts (d = {d})",
        f"Test-image latents (posterior means for the VAE) projected to 2-D by PCA and t-SNE ({n} points). "
        "Silhouette: of the latents grouped by label, in the latent space (-1..1, higher = better separated "
        "classes). Aggregate mean |mu_j| and std_j over the test set: 0 and 1 under the N(0, I) prior; prior "
        "mismatch = mean_j (|mu_j| + |std_j - 1|).",
        study.table(main_runs, columns), figures)
    if flat_runs:
        study.section(
            "Two-dimensional latents",
            "The same models with a 2-D latent, drawn as they are (no projection).",
            study.table(flat_runs, columns),
            [(f"{r.label} latents, coloured by label",
              str(plot_latent_layout(shown[r.label], labels, study.path(f"{r.slug}_raw.png"),
                                     title=f"{r.label} latents", seed=study.seed).name)) for r in flat_runs])
    study.section("Training curves", figures=[("Training loss of each run", study.loss_figure(runs))])

    for ae, vae in zip(runs[::2], runs[1::2]):
        dims = f"d = {ae.model.config.latent_dim}"
        study.findings.append(claim(
            metric(vae, "prior_mismatch") < metric(ae, "prior_mismatch"),
            "VAE latents follow the N(0, I) prior while AE latents sit at an arbitrary location and scale",
            f"with {dims} the aggregate mean |mu_j| / std_j is {metric(vae, 'aggregate_mean_abs'):.2f} / "
            f"{metric(vae, 'aggregate_std'):.2f} for the VAE and {metric(ae, 'aggregate_mean_abs'):.2f} / "
            f"{metric(ae, 'aggregate_std'):.2f} for the AE"))
        silhouette = metric(vae, "latent_silhouette") - metric(ae, "latent_silhouette")
        probe = metric(vae, "linear_probe_accuracy") - metric(ae, "linear_probe_accuracy")
        votes = {sign(silhouette, SILHOUETTE_TOL), sign(probe, ACCURACY_TOL)}  # +1 / -1 / 0 (noise) per measure
        study.findings.append(claim(
            1 in votes,
            "the VAE's latent space is better organised by class than the AE's",
            f"with {dims} the silhouette by label is {metric(vae, 'latent_silhouette'):.3f} (VAE) vs "
            f"{metric(ae, 'latent_silhouette'):.3f} (AE) and the linear probe "
            f"{metric(vae, 'linear_probe_accuracy'):.3f} vs {metric(ae, 'linear_probe_accuracy'):.3f}"
            + {frozenset({1, -1}): " (the two measures disagree)", frozenset({1, 0}): " (one of them within noise)",
               frozenset({-1, 0}): " (one of them within noise)"}.get(frozenset(votes), ""),
            undecided=votes in ({0}, {1, -1})))
