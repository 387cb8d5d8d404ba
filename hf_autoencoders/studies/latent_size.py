"""The latent-size experiment (`hf-autoencoders experiment latent-size`): how reconstruction, samples and the VAE's
use of its latent change with the latent size (guide section 2.4.1: "play around with the latent dimension size")."""

from __future__ import annotations

from .report import FIDELITY, SAMPLE_QUALITY, Report
from .runner import Runner, display_name
from .verdicts import CONFIRMED, CONTRADICTED, FLOORS, Claim, difference

TITLE = "Experiment: latent size"
QUESTION = "How do reconstruction, samples and the VAE's use of its latent change with the latent size?"
REPLICATED = False  # one seed per setting; differences are judged against the one-run floor
LIKELIHOOD = ["loss", "reconstruction_loss", "kl_loss", "elbo", "iwae_nll", "active_units"]
USEFULNESS = ["downstream_accuracy", "linear_probe_accuracy", "reconstruction_fd_domain"]


def run(runner: Runner, report: Report) -> None:
    sizes = sorted(runner.budget.latent_sizes, reverse=True)
    specs = [(f"{display_name(f)} d={d}", f, {"latent_dim": d}) for f in ("ae", "vae") for d in sizes]
    groups = runner.train_all(specs)
    ae, vae = groups[: len(sizes)], groups[len(sizes):]
    families = (("AE", ae), ("VAE", vae))
    x = runner.test_x[:8]

    def series(key, members):
        return sizes, [g.mean(key) for g in members], [g.std(key) for g in members]

    report.section(
        "Reconstruction against latent size",
        "Rows: test images, then the reconstructions with latent sizes " + ", ".join(map(str, sizes)) + ".",
        report.table(groups, FIDELITY + LIKELIHOOD + USEFULNESS),
        [("PSNR, active units (VAE) and linear-probe accuracy against latent size", report.line_figure(
            "latent_size.png",
            [("test PSNR (dB)", {n: series("psnr", g) for n, g in families}),
             ("VAE active units", {"VAE": series("active_units", vae)}),
             ("linear-probe accuracy", {n: series("linear_probe_accuracy", g) for n, g in families})],
            "latent size", logx=True))] +
        [(f"{name} reconstructions, latent sizes {', '.join(map(str, sizes))} (top to bottom after the originals)",
          report.image_rows_figure([x] + [g.first.reconstructions for g in members],
                                   f"{name.lower()}_reconstructions.png"))
         for name, members in families],
    )
    report.section(
        "Samples against latent size",
        "Rows: decoded z ~ N(0, I) for each latent size (largest first).",
        report.table(groups, SAMPLE_QUALITY),
        [(f"{name} samples, latent sizes {', '.join(map(str, sizes))}",
          report.image_rows_figure([g.first.samples for g in members], f"{name.lower()}_samples.png"))
         for name, members in families],
    )
    report.section("Training curves", figures=[("Training loss of each run", report.loss_figure(groups))])

    report.summary = {name: {str(g.config.latent_dim): {"psnr": g.mean("psnr"), "kl_loss": g.mean("kl_loss"),
                                                          "active_units": g.mean("active_units")} for g in members}
                      for name, members in families}
    largest, smallest = sizes[0], sizes[-1]
    d_ae = difference(ae[0].values("psnr"), ae[-1].values("psnr"), FLOORS["psnr"])
    report.claim(Claim(
        "latent_size_ae",
        f"a larger latent gives the AE better reconstructions (d = {largest} vs d = {smallest})",
        d_ae.verdict(+1),
        "PSNR " + d_ae.text("dB") + "; by size "
        + ", ".join(f"{g.config.latent_dim}: {g.mean('psnr'):.2f}" for g in ae),
    ))
    if len(vae) > 1:
        best = max(vae[1:], key=lambda g: g.mean("psnr"))  # the best of the smaller latents
        d_vae = difference(best.values("psnr"), vae[0].values("psnr"), FLOORS["psnr"])
        report.claim(Claim(
            "latent_size_vae",
            f"beyond a moderate size the VAE's reconstructions stop improving: its largest latent (d = {largest}) "
            "reconstructs no better than a smaller one (the guide: the relationship is not clear-cut)",
            CONTRADICTED if d_vae.verdict(+1) == CONTRADICTED else CONFIRMED,
            f"PSNR of the best smaller latent (d = {best.config.latent_dim}) vs d = {largest}: " + d_vae.text("dB")
            + "; by size " + ", ".join(f"{g.config.latent_dim}: {g.mean('psnr'):.2f}" for g in vae),
            rule="a claim of no gain: contradicted if the largest latent beats the best smaller one by more than "
                 "max(2 SE, floor), otherwise confirmed",
        ))
    units = vae[0].mean("active_units")
    report.findings.append(
        "Active units of the VAE (posterior-mean variance > 0.01): "
        + ", ".join(f"{g.mean('active_units'):.0f} of {g.config.latent_dim}" for g in vae)
        + "; its KL (nats per image): " + ", ".join(f"{g.mean('kl_loss'):.1f} at d={g.config.latent_dim}" for g in vae)
        + f", i.e. {vae[0].mean('kl_loss') / largest:.3f} nats per dimension at d={largest}"
        + (" — it switches off the dimensions it does not need." if units < 0.5 * largest else
           " — at this budget it does not switch its extra dimensions off."))
    if runner.labelled:
        report.findings.append(
            "Linear-probe accuracy by latent size: " + "; ".join(
                name + " " + ", ".join(f"{g.config.latent_dim}: {g.mean('linear_probe_accuracy'):.3f}" for g in members)
                for name, members in families) + ".")
