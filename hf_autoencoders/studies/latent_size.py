"""The latent-size experiment (`hf-autoencoders experiment latent-size`): How do reconstruction, samples and the
VAE's use of its latent change with the latent size?"""

from __future__ import annotations

from .study import FIDELITY, SAMPLE_QUALITY, Study, display_name
from .verdicts import LIKELIHOOD, PSNR_TOL, USEFULNESS, claim, increasing_steps, metric

TITLE = "Experiment: latent size"
QUESTION = (
    "How do reconstruction, samples and the VAE's use of its latent change with the latent size?"
)


def run(study: Study) -> None:
    sizes = sorted(study.budget.latent_sizes, reverse=True)
    specs = [(f"{display_name(f)} d={d}", f, {"latent_dim": d}) for f in ("ae", "vae") for d in sizes]
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
        [(f"{display_name(f)} reconstructions, latent sizes {', '.join(map(str, sizes))} (top to bottom after the "
          "originals)", study.image_rows_figure([x] + [r.reconstructions for r in group], f"{f}_reconstructions.png"))
         for f, group in (("ae", ae), ("vae", vae))],
    )
    study.section(
        "Samples against latent size",
        "Rows: decoded z ~ N(0, I) for each latent size (largest first).",
        study.table(runs, SAMPLE_QUALITY),
        [(f"{display_name(f)} samples, latent sizes {', '.join(map(str, sizes))}",
          study.image_rows_figure([r.samples for r in group], f"{f}_samples.png")) for f, group in (("ae", ae),
                                                                                                  ("vae", vae))],
    )
    study.section("Training curves", figures=[("Training loss of each run", study.loss_figure(runs))])

    study.summary = {display_name(f): {str(r.model.config.latent_dim): r.metrics for r in group}
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
