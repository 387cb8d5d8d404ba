"""The kl-weight experiment (`hf-autoencoders experiment kl-weight`): What does the weight on the KL term buy,
against the summed squared error, for a VAE?"""

from __future__ import annotations

from .study import SAMPLE_QUALITY, Study, fmt, markdown_table
from .verdicts import PSNR_TOL, claim, increasing_steps, metric, sample_claim

TITLE = "Experiment: KL weight"
QUESTION = (
    'What does the weight on the KL term buy, against the summed squared error, for a VAE?'
)


def run(study: Study) -> None:
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
