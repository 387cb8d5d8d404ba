"""The kl-weight experiment (`hf-autoencoders experiment kl-weight`): what the weight on the KL term buys, against
the summed squared error, for a VAE (guide section 2.4.1: "the regularization weight for the VAE (e.g. .01, .001,
.0001) ... students should find the smallest option given performs the best")."""

from __future__ import annotations

from .report import SAMPLE_QUALITY, Report, fmt_group, markdown_table
from .runner import Runner
from .verdicts import FLOORS, Claim, all_of, difference

TITLE = "Experiment: KL weight"
QUESTION = "What does the weight on the KL term buy, against the summed squared error, for a VAE?"
REPLICATED = False


def run(runner: Runner, report: Report) -> None:
    weights = list(runner.budget.kl_weights)
    specs = [(f"w={w:g}", "vae", {"gaussian_variance": w / 2, "kl_weight": 1.0}) for w in weights]
    groups = runner.train_all(specs)
    x = runner.test_x[:8]
    columns = ["sse", "mse", "psnr", "ssim", "edge_sharpness", "kl_loss", "active_units", "downstream_accuracy",
               "linear_probe_accuracy", "sample_fd_domain"]
    columns = [c for c in columns if any(g.values(c) for g in groups)]
    rows = [[f"{w:g}", f"{w / 2:g}"] + [fmt_group(g, k) for k in columns] for w, g in zip(weights, groups)]
    names = {"sse": "SSE", "mse": "MSE", "psnr": "PSNR (dB)", "ssim": "SSIM", "edge_sharpness": "edge sharpness",
             "kl_loss": "KL (nats)", "active_units": "active units", "downstream_accuracy": "downstream acc.",
             "linear_probe_accuracy": "probe acc.", "sample_fd_domain": "sample FD"}

    def series(key):
        return weights, [g.mean(key) for g in groups], [g.std(key) for g in groups]

    panels = [("test PSNR (dB)", {"VAE": series("psnr")}), ("KL (nats per image)", {"VAE": series("kl_loss")})]
    if any(g.values("sample_fd_domain") for g in groups):
        panels.append(("sample FD (domain features)", {"VAE": series("sample_fd_domain")}))
    report.section(
        "Rate and distortion",
        "Each row is a VAE trained on SSE + w KL, i.e. the Gaussian likelihood with variance c = w / 2 "
        "(its loss SSE / 2c + KL equals (SSE + w KL) / w). KL is the rate (nats per image), SSE the distortion.",
        markdown_table(["w", "c"] + [names[c] for c in columns], rows),
        [("Distortion, rate and sample quality against the KL weight",
          report.line_figure("kl_weight.png", panels, "KL weight w (relative to the SSE)", logx=True))],
    )
    report.section(
        "Reconstructions",
        "Rows: test images, then reconstructions for w = " + ", ".join(f"{w:g}" for w in weights) + ".",
        figures=[("Reconstructions by KL weight", report.image_rows_figure(
            [x] + [g.first.reconstructions for g in groups], "reconstructions.png"))])
    report.section(
        "Samples",
        "Rows: decoded z ~ N(0, I) for w = " + ", ".join(f"{w:g}" for w in weights) + ".",
        report.table(groups, SAMPLE_QUALITY),
        [("Samples by KL weight", report.image_rows_figure([g.first.samples for g in groups], "samples.png"))])
    report.section(
        "Losses and likelihood bounds",
        "The ELBO and the IWAE bound are log-densities under each model's own c, so they are not comparable "
        "across rows (a smaller c rewards exact reconstructions with larger densities).",
        report.table(groups, ["loss", "reconstruction_loss", "elbo", "iwae_nll"]),
        [("Training loss and KL of each run", report.loss_figure(groups, terms=("loss", "kl_loss")))],
    )

    by_weight = sorted(zip(weights, groups), key=lambda p: p[0])  # smallest weight first
    w_lo, lo = by_weight[0]
    comparisons = [(w, difference(lo.values("psnr"), g.values("psnr"), FLOORS["psnr"])) for w, g in by_weight[1:]]
    best_w, best = max(by_weight, key=lambda p: p[1].mean("psnr"))
    report.claim(Claim(
        "smallest_kl_weight_best",
        f"the smallest KL weight (w = {w_lo:g}) reconstructs best",
        all_of([d.verdict(+1) for _, d in comparisons]),
        "PSNR at w = " + f"{w_lo:g} against " + "; ".join(f"w = {w:g}: {d.text('dB')}" for w, d in comparisons)
        + f"; the best PSNR is at w = {best_w:g} ({best.mean('psnr'):.2f} dB)",
        rule="the smallest weight must beat every other weight by more than max(2 SE, floor)",
    ))
    w_hi, hi = by_weight[-1]
    kl = difference(lo.values("kl_loss"), hi.values("kl_loss"), relative_floor=FLOORS["relative"])
    report.claim(Claim(
        "kl_weight_rate",
        "lowering the KL weight buys rate: more nats of KL",
        kl.verdict(+1),
        f"KL at w = {w_lo:g} vs w = {w_hi:g}: {kl.text('nats', 1)}; by weight "
        + ", ".join(f"{w:g}: {g.mean('kl_loss'):.1f}" for w, g in by_weight),
    ))
    report.findings.append(
        f"Active units: {hi.mean('active_units'):.0f} of {hi.config.latent_dim} at w = {w_hi:g}, "
        f"{lo.mean('active_units'):.0f} at w = {w_lo:g}.")
