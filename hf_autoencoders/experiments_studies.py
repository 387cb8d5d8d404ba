"""The six classic experiments on top of the shared runner in `experiments.py`.

Each function gets a `Study` (data, budget, classifier), trains its runs, adds report sections and states its
findings: every finding is computed from the numbers and checked against the usual textbook claim, saying so where
the numbers contradict it.
"""

from __future__ import annotations

import math

import torch

from .data import ImageTensorDataset
from .experiments import FAMILY_NAMES, FIDELITY, SAMPLE_QUALITY, Run, Study, fmt, markdown_table, train_quietly
from .metrics import representations, sample_quality
from .models import PixelCNNPriorConfig, PixelCNNPriorModel
from .plots import plot_latent_layout
from .reports import generate_samples

LIKELIHOOD = ["loss", "reconstruction_loss", "kl_loss", "elbo", "iwae_nll", "active_units"]
USEFULNESS = ["downstream_accuracy", "linear_probe_accuracy"]


def claim(holds: bool, textbook: str, observed: str, undecided: bool = False) -> str:
    """A finding that states whether the numbers agree with a textbook claim (`undecided`: too close to call)."""
    if undecided:
        return f"The numbers do not settle the textbook claim that {textbook}: {observed}."
    if holds:
        return f"As the textbook says, {textbook}: {observed}."
    return f"**Contrary to the textbook claim** that {textbook}, {observed}."


def close(a: float, b: float, tolerance: float) -> bool:
    return abs(a - b) <= tolerance


# Smaller differences than these (dB, probability, nats, score, silhouette, accuracy) are read as noise.
PSNR_TOL, CONFIDENCE_TOL, ENTROPY_TOL, SCORE_TOL, SILHOUETTE_TOL, ACCURACY_TOL = 0.1, 0.02, 0.1, 0.1, 0.005, 0.005


def sign(difference: float, tolerance: float) -> int:
    return (difference > tolerance) - (difference < -tolerance)


def sample_differences(a: Run, b: Run) -> tuple[float, float, float]:
    """a minus b in mean max p(y|x), class entropy and the Inception-like score of their samples."""
    return tuple(metric(a, key) - metric(b, key)
                 for key in ("sample_mean_max_prob", "sample_class_entropy", "sample_inception_score"))


def sample_verdict(a: Run, b: Run) -> int:
    """+1 if a's samples beat b's, -1 if they lose, 0 if too close to call. Samples beat others when they are at
    least as recognisable (mean max p(y|x)) and as diverse (entropy of the predicted classes) and clearly better on
    one; when each wins on one, the Inception-like score exp E_x KL(p(y|x) || p(y)), which needs both, decides.
    Confidence alone would reward a generator that always draws the same blob."""
    dc, de, di = sample_differences(a, b)
    if dc >= -CONFIDENCE_TOL and de >= -ENTROPY_TOL and (dc > CONFIDENCE_TOL or de > ENTROPY_TOL):
        return 1
    if dc <= CONFIDENCE_TOL and de <= ENTROPY_TOL and (dc < -CONFIDENCE_TOL or de < -ENTROPY_TOL):
        return -1
    if abs(dc) > CONFIDENCE_TOL and abs(de) > ENTROPY_TOL and abs(di) > SCORE_TOL:
        return 1 if di > 0 else -1
    return 0


def sample_claim(a: Run, b: Run, textbook: str, a_name: str, b_name: str) -> str:
    """The claim that a's samples are better than b's, judged by `sample_verdict`."""
    verdict = sample_verdict(a, b)
    dc, de, _ = sample_differences(a, b)
    note = ""
    if abs(dc) > CONFIDENCE_TOL and abs(de) > ENTROPY_TOL and dc * de < 0:
        note = " (one is more recognisable, the other more diverse: the Inception-like score decides" + (
            ", and is too close to call)" if verdict == 0 else ")")
    return claim(verdict > 0, textbook, f"{a_name}: {sample_summary(a)}; {b_name}: {sample_summary(b)}{note}",
                 undecided=verdict == 0)


def sample_summary(run: Run) -> str:
    return (f"mean confidence {metric(run, 'sample_mean_max_prob'):.3f}, "
            f"{metric(run, 'sample_confident_fraction'):.2f} confident, class entropy "
            f"{metric(run, 'sample_class_entropy'):.2f} nats, IS-like score "
            f"{metric(run, 'sample_inception_score'):.2f}")


def metric(run: Run, key: str) -> float:
    return run.metrics.get(key, math.nan)


def increasing_steps(values: list[float], tolerance: float = 0.0) -> int:
    """How many consecutive pairs increase (by more than -tolerance)."""
    return sum(b >= a - tolerance for a, b in zip(values, values[1:]))


# ------------------------------------------------------------------------------------------------------- compare


def compare(study: Study) -> None:
    runs = study.train_all([(FAMILY_NAMES[f], f, {}) for f in ("ae", "vae", "vqvae")])
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


# --------------------------------------------------------------------------------------------------- latent size


def latent_size(study: Study) -> None:
    sizes = sorted(study.budget.latent_sizes, reverse=True)
    specs = [(f"{FAMILY_NAMES[f]} d={d}", f, {"latent_dim": d}) for f in ("ae", "vae") for d in sizes]
    runs = study.train_all(specs)
    ae, vae = runs[: len(sizes)], runs[len(sizes):]
    x = study.test_x[:8]
    study.section(
        "Reconstruction against latent size",
        "Rows: test images, then the reconstructions with latent sizes " + ", ".join(map(str, sizes)) + ".",
        study.table(runs, FIDELITY + LIKELIHOOD + USEFULNESS),
        [("PSNR, active units (VAE) and linear-probe accuracy against latent size", study.line_figure(
            "latent_size.png",
            [("test PSNR (dB)", {n: (sizes, [metric(r, "psnr") for r in g]) for n, g in (("AE", ae), ("VAE", vae))}),
             ("VAE active units", {"VAE": (sizes, [metric(r, "active_units") for r in vae])}),
             ("linear-probe accuracy", {n: (sizes, [metric(r, "linear_probe_accuracy") for r in g])
                                        for n, g in (("AE", ae), ("VAE", vae))})],
            "latent size", logx=True))] +
        [(f"{FAMILY_NAMES[f]} reconstructions, latent sizes {', '.join(map(str, sizes))} (top to bottom after the "
          "originals)", study.image_rows_figure([x] + [r.reconstructions for r in group], f"{f}_reconstructions.png"))
         for f, group in (("ae", ae), ("vae", vae))],
    )
    study.section(
        "Samples against latent size",
        "Rows: decoded z ~ N(0, I) for each latent size (largest first).",
        study.table(runs, SAMPLE_QUALITY),
        [(f"{FAMILY_NAMES[f]} samples, latent sizes {', '.join(map(str, sizes))}",
          study.image_rows_figure([r.samples for r in group], f"{f}_samples.png")) for f, group in (("ae", ae),
                                                                                                  ("vae", vae))],
    )
    study.section("Training curves", figures=[("Training loss of each run", study.loss_figure(runs))])

    study.summary = {FAMILY_NAMES[f]: {str(r.model.config.latent_dim): r.metrics for r in group}
                     for f, group in (("ae", ae), ("vae", vae))}
    ascending = list(reversed(sizes))
    for name, group in (("AE", ae), ("VAE", vae)):
        psnrs = [metric(r, "psnr") for r in reversed(group)]
        best = ascending[max(range(len(psnrs)), key=psnrs.__getitem__)]
        gain = psnrs[-1] - psnrs[0]
        study.findings.append(claim(
            increasing_steps(psnrs, PSNR_TOL) == len(psnrs) - 1 and gain > PSNR_TOL,
            f"a larger latent gives the {name} better reconstructions",
            "PSNR by latent size " + ", ".join(f"{d}: {p:.2f} dB" for d, p in zip(ascending, psnrs))
            + f" (best: {best})", undecided=abs(gain) <= PSNR_TOL))
    biggest = vae[0]
    units = metric(biggest, "active_units")
    study.findings.append(claim(
        units < 0.5 * sizes[0],
        "a VAE switches off the latent dimensions it does not need (their posterior collapses to the prior)",
        f"with {sizes[0]} dimensions {units} are active (posterior-mean variance > 0.01); active units by size: "
        + ", ".join(f"{r.model.config.latent_dim}: {metric(r, 'active_units')}" for r in vae)))
    study.findings.append(
        "The information the VAE puts in its latent hardly follows its size: the KL (nats per image) is "
        + ", ".join(f"{metric(r, 'kl_loss'):.1f} at d={r.model.config.latent_dim}" for r in vae)
        + f", i.e. {metric(biggest, 'kl_loss') / sizes[0]:.3f} nats per dimension at d={sizes[0]}.")
    if len(sizes) > 2:
        small = min((d for d in sizes if d >= 8), default=sizes[-1])
        vae_small = next(r for r in vae if r.model.config.latent_dim == small)
        gain = metric(biggest, "psnr") - metric(vae_small, "psnr")
        study.findings.append(claim(
            gain < 0.5,
            "a VAE's reconstructions stop improving once the latent is large enough",
            f"going from {small} to {sizes[0]} dimensions changes the VAE's PSNR by {gain:+.2f} dB, the AE's by "
            f"{metric(ae[0], 'psnr') - metric(next(r for r in ae if r.model.config.latent_dim == small), 'psnr'):+.2f}"
            " dB"))
    if study.labelled:
        study.findings.append(
            "Linear-probe accuracy by latent size: AE " + ", ".join(
                f"{r.model.config.latent_dim}: {metric(r, 'linear_probe_accuracy'):.3f}" for r in ae) + "; VAE "
            + ", ".join(f"{r.model.config.latent_dim}: {metric(r, 'linear_probe_accuracy'):.3f}" for r in vae) + ".")


# ----------------------------------------------------------------------------------------------------- kl weight


def kl_weight(study: Study) -> None:
    weights = list(study.budget.kl_weights)
    specs = [(f"w={w:g}", "vae", {"gaussian_variance": w / 2, "kl_weight": 1.0}) for w in weights]
    runs = study.train_all(specs)
    x = study.test_x[:8]
    rows = [[f"{w:g}", f"{w / 2:g}"] + [fmt(r.metrics.get(k)) for k in
                                         ["sse", "mse", "psnr", "ssim", "kl_loss", "active_units",
                                          "downstream_accuracy", "linear_probe_accuracy"]]
            for w, r in zip(weights, runs)]
    study.section(
        "Rate and distortion",
        "Each row is a VAE trained on SSE + w KL, i.e. the Gaussian likelihood with variance c = w / 2 "
        "(its loss SSE / 2c + KL equals (SSE + w KL) / w). KL is the rate (nats per image), SSE the distortion.",
        markdown_table(["w", "c", "SSE", "MSE", "PSNR (dB)", "SSIM", "KL (nats)", "active units", "downstream acc.",
                        "probe acc."], rows),
        [("Distortion, rate and sample confidence against the KL weight", study.line_figure(
            "kl_weight.png",
            [("test PSNR (dB)", {"VAE": (weights, [metric(r, "psnr") for r in runs])}),
             ("KL (nats per image)", {"VAE": (weights, [metric(r, "kl_loss") for r in runs])}),
             ("samples: mean max p(y|x)", {"VAE": (weights, [metric(r, "sample_mean_max_prob") for r in runs])})],
            "KL weight w (relative to the SSE)", logx=True))],
    )
    study.section(
        "Reconstructions",
        "Rows: test images, then reconstructions for w = " + ", ".join(f"{w:g}" for w in weights) + ".",
        figures=[("Reconstructions by KL weight", study.image_rows_figure(
            [x] + [r.reconstructions for r in runs], "reconstructions.png"))])
    study.section(
        "Samples",
        "Rows: decoded z ~ N(0, I) for w = " + ", ".join(f"{w:g}" for w in weights) + ".",
        study.table(runs, SAMPLE_QUALITY),
        [("Samples by KL weight", study.image_rows_figure([r.samples for r in runs], "samples.png"))])
    study.section(
        "Losses and likelihood bounds",
        "The ELBO and the IWAE bound are log-densities under each model's own c, so they are not comparable "
        "across rows (a smaller c rewards exact reconstructions with larger densities).",
        study.table(runs, ["loss", "reconstruction_loss", "elbo", "iwae_nll"]),
        [("Training loss and KL of each run", study.loss_figure(runs, terms=("loss", "kl_loss")))],
    )

    by_weight = sorted(zip(weights, runs), key=lambda p: -p[0])  # strongest KL weight first
    w_hi, hi = by_weight[0]
    w_lo, lo = by_weight[-1]
    psnrs = [metric(r, "psnr") for _, r in by_weight]
    kls = [metric(r, "kl_loss") for _, r in by_weight]
    study.findings.append(
        "Weight w on KL relative to the summed squared error: the VAE loss SSE / 2c + KL with c = w / 2 is "
        "(SSE + w KL) / w, so each run sets c = w / 2 and kl_weight = 1.")
    gain = psnrs[-1] - psnrs[0]
    study.findings.append(claim(
        increasing_steps(psnrs, PSNR_TOL) == len(psnrs) - 1 and gain > PSNR_TOL and kls[-1] > kls[0],
        "lowering the KL weight trades rate for distortion: more nats of KL, better reconstructions",
        "from w = " + " to ".join(f"{w:g}" for w, _ in by_weight) + ", the KL goes "
        + " -> ".join(f"{k:.1f}" for k in kls) + " nats and the PSNR " + " -> ".join(f"{p:.2f}" for p in psnrs)
        + f" dB (the KL {'rises' if increasing_steps(kls) == len(kls) - 1 else 'does not rise'} monotonically; the "
        f"PSNR peaks at w = {by_weight[max(range(len(psnrs)), key=psnrs.__getitem__)][0]:g})",
        undecided=abs(gain) <= PSNR_TOL))
    study.findings.append(claim(
        metric(hi, "active_units") < metric(lo, "active_units"),
        "a strong KL weight switches latent dimensions off",
        f"{metric(hi, 'active_units')} of {hi.model.config.latent_dim} dimensions are active at w = {w_hi:g}, "
        f"{metric(lo, 'active_units')} at w = {w_lo:g}"))
    if study.labelled:
        study.findings.append(sample_claim(
            hi, lo, "a weak KL term spoils the samples, since the aggregate posterior drifts away from the N(0, I) "
            "prior that samples are drawn from", f"w = {w_hi:g}", f"w = {w_lo:g}"))


# ----------------------------------------------------------------------------------------------------- denoising


def denoising(study: Study) -> None:
    levels = [0.0] + [s for s in study.budget.noise_levels if s > 0]
    specs = [(f"{FAMILY_NAMES[f]} noise={s:g}", f, {"noise_std": s}, s) for f in ("ae", "vae") for s in levels]
    runs = study.train_all(specs)
    table_rows, figures, summary = [], [], {}
    for family in ("ae", "vae"):
        group = [r for r in runs if r.family == family]
        clean = group[0]
        name = FAMILY_NAMES[family]
        summary[name] = {}
        for sigma, run in zip(levels, group):
            baseline, _ = study.fidelity(clean.model, sigma)  # the model trained without noise, on noisy input
            entry = {
                "noise_std": sigma,
                "input_psnr": run.metrics.get("input_psnr"),  # None without noise
                "psnr": metric(run, "psnr"),
                "ssim": metric(run, "ssim"),
                "mse": metric(run, "mse"),
                "clean_trained_psnr": baseline["psnr"],
                "psnr_drop_db": metric(clean, "psnr") - metric(run, "psnr"),
                "relative_psnr": metric(run, "psnr") / metric(clean, "psnr"),
                "mse_ratio": metric(run, "mse") / metric(clean, "mse"),
                "downstream_accuracy": run.metrics.get("downstream_accuracy"),
            }
            run.metrics["clean_trained_psnr_on_this_noise"] = baseline["psnr"]
            summary[name][f"{sigma:g}"] = entry
            table_rows.append([name, f"{sigma:g}", fmt(entry["input_psnr"]) if sigma else "-", fmt(entry["psnr"]),
                               fmt(entry["clean_trained_psnr"]), f"{-entry['psnr_drop_db']:+.2f}",
                               f"{entry['relative_psnr']:.3f}", f"{entry['mse_ratio']:.2f}", fmt(entry["ssim"]),
                               fmt(entry["downstream_accuracy"])])
        rows = [study.test_x[:8]]
        for sigma, run in zip(levels[1:], group[1:]):
            rows += [study.noisy(study.test_x[:8], sigma), run.reconstructions]
        figures.append((f"{name}: clean images, then for each noise level the noisy input and the denoised output",
                        study.image_rows_figure(rows, f"{family}_denoising.png")))
    study.summary = summary
    psnr_series = {"noisy input": (levels[1:], [summary["AE"][f"{s:g}"]["input_psnr"] for s in levels[1:]])}
    for name, entries in summary.items():
        psnr_series[f"{name}, trained on noise"] = (levels, [entries[f"{s:g}"]["psnr"] for s in levels])
        psnr_series[f"{name}, trained clean"] = (levels, [entries[f"{s:g}"]["clean_trained_psnr"] for s in levels])
    figures.insert(0, ("Test PSNR against the noise level", study.line_figure(
        "denoising.png", [("test PSNR (dB)", psnr_series)], "noise standard deviation s")))
    study.section(
        "Denoising against noise level",
        "Each model is trained on x + N(0, s^2) inputs with the clean x as target (config `noise_std` = s) and tested "
        "on noisy test images (a fixed noise draw, same s) against the clean ones. *Clean-trained*: the s = 0 model on "
        "the same noisy inputs. Relative to the no-noise case: ΔPSNR (dB), PSNR ratio and MSE ratio.",
        markdown_table(["model", "noise s", "noisy-input PSNR", "PSNR", "clean-trained PSNR", "ΔPSNR vs s=0",
                        "PSNR ratio", "MSE ratio", "SSIM", "downstream acc."], table_rows),
        figures,
    )
    study.section("Training curves", figures=[("Training loss of each run", study.loss_figure(runs))])

    top = f"{levels[-1]:g}"
    helped = [(n, s) for n, entries in summary.items() for s, e in entries.items()
              if float(s) > 0 and e["psnr"] > e["clean_trained_psnr"]]
    total = sum(float(s) > 0 for entries in summary.values() for s in entries)
    study.findings.append(claim(
        len(helped) == total,
        "training on noisy inputs (a denoising autoencoder) beats a model trained on clean images when the test "
        "inputs are noisy",
        f"it does in {len(helped)} of {total} (model, noise) cases; at s = {top}: "
        + ", ".join(f"{n} {summary[n][top]['psnr']:.2f} dB vs {summary[n][top]['clean_trained_psnr']:.2f} dB"
                    for n in summary)))
    study.findings.append(claim(
        all(e["psnr"] > e["input_psnr"] for entries in summary.values() for s, e in entries.items() if float(s) > 0),
        "the outputs are much cleaner than the noisy inputs",
        "at s = " + top + " the input PSNR is " + f"{summary['AE'][top]['input_psnr']:.2f} dB, the outputs "
        + ", ".join(f"{n} {summary[n][top]['psnr']:.2f} dB" for n in summary)))
    ae_drop, vae_drop = summary["AE"][top]["psnr_drop_db"], summary["VAE"][top]["psnr_drop_db"]
    study.findings.append(claim(
        vae_drop < ae_drop,
        "a VAE, already trained to decode from noisy latents, degrades less under input noise than an AE",
        f"relative to its no-noise PSNR the AE loses {ae_drop:.2f} dB at s = {top} (PSNR ratio "
        f"{summary['AE'][top]['relative_psnr']:.3f}), the VAE {vae_drop:.2f} dB (ratio "
        f"{summary['VAE'][top]['relative_psnr']:.3f}); in absolute terms the AE is at "
        f"{summary['AE'][top]['psnr']:.2f} dB and the VAE at {summary['VAE'][top]['psnr']:.2f} dB",
        close(vae_drop, ae_drop, PSNR_TOL)))


# ------------------------------------------------------------------------------------------------- latent layout


def latent_layout(study: Study) -> None:
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


# ------------------------------------------------------------------------------------------------------- samples


def train_prior(study: Study, vqvae) -> tuple[PixelCNNPriorModel, dict]:
    """A PixelCNN prior over the VQ-VAE's code maps of the training images; returns it and its test NLL."""
    from .prior_training import CodeDataset, PriorTrainer, code_nll, collate_codes, extract_codes

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


def samples(study: Study) -> None:
    runs = study.train_all([(FAMILY_NAMES[f], f, {}) for f in ("ae", "vae", "vqvae")])
    ae, vae, vq = runs
    prior, prior_stats = train_prior(study, vq.model)
    prior_samples = generate_samples(vq.model, max(study.budget.num_samples, 32), seed=study.seed, prior=prior)
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


STUDIES = {
    "compare": ("Experiment: AE vs VAE vs VQ-VAE",
                "The same data, backbone and budget for the three families: how do losses, reconstructions, samples "
                "and interpolations differ?", compare),
    "latent-size": ("Experiment: latent size",
                    "How do reconstruction, samples and the VAE's use of its latent change with the latent size?",
                    latent_size),
    "kl-weight": ("Experiment: KL weight",
                  "What does the weight on the KL term buy, against the summed squared error, for a VAE?",
                  kl_weight),
    "denoising": ("Experiment: denoising",
                  "Trained and tested on noisy inputs with clean targets, how do an AE and a VAE hold up relative to "
                  "the no-noise case?", denoising),
    "latent-layout": ("Experiment: latent layout",
                      "How are AE and VAE latents laid out, and how well do they separate the classes?",
                      latent_layout),
    "samples": ("Experiment: samples",
                "Which generator makes recognisable, diverse images: an AE decoding N(0, I), a VAE, a VQ-VAE with "
                "uniform codes, or a VQ-VAE with a learned PixelCNN prior?", samples),
}
