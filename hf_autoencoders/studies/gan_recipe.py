"""The gan-recipe experiment (`hf-autoencoders experiment gan-recipe`): the tokenizer recipe's parts added one at a
time to a VQ-VAE trained on pixel loss, over several seeds: a perceptual term, then a PatchGAN discriminator with the
adaptive weight on and off, started early and late. What each part buys in realism (reconstruction and sample
Fréchet distances), what it costs in PSNR, and whether the GAN phase degrades the reconstructions (the collapse
guard's events): the questions taming-transformers #44 and latent-diffusion #350 ask. The guard only watches here
(`gan_guard_action="warn"`), so that each GAN phase runs as it would without it."""

from __future__ import annotations

from ..evaluation import evaluate
from ..evaluation.perceptual import offline_perceptual_network
from .report import FIDELITY, Report
from .runner import Group, Runner
from .verdicts import FLOORS, Claim, all_of, difference

TITLE = "Experiment: the tokenizer recipe (perceptual and adversarial losses)"
QUESTION = (
    "Do a perceptual term and a discriminator make a VQ-VAE's reconstructions and samples closer to the real images "
    "than pixel loss alone, at what cost in PSNR, and when should the discriminator start: early or late, with the "
    "adaptive weight or without?"
)
REPLICATED = True

PERCEPTUAL_WEIGHT, DISC_WEIGHT = 1.0, 0.5  # the recipes' weights (VQGAN, LDM, LlamaGen)
PERCEPTUAL_NETWORK = "rotation"  # needs no labels, and is not kin to the domain features that judge the runs
EARLY, LATE = 0.1, 0.5  # disc_start as a share of the run's steps
PIXEL, PERCEPTUAL = "pixel loss", "+ perceptual"
GAN_COLUMNS = ["gan_collapse_events", "gan_worst_psnr_drop_db"]
COLUMNS = FIDELITY + ["perceptual_rotation", "reconstruction_fd_domain", "prior_sample_fd_domain",
                      "prior_test_bits_per_code", "codebook_usage"] + GAN_COLUMNS


def gan_label(adaptive: bool, start: str) -> str:
    return f"+ perceptual + GAN, {'adaptive' if adaptive else 'fixed'} weight, {start} start"


def settings(steps: int) -> list[tuple[str, dict]]:
    """(label, training fields) of each group: pixel loss, + perceptual, then + GAN in the four combinations of the
    adaptive weight (on, off) and the start (early, late)."""
    perceptual = {"perceptual_weight": PERCEPTUAL_WEIGHT, "perceptual_network": PERCEPTUAL_NETWORK}
    starts = {"late": max(1, round(LATE * steps)), "early": max(1, round(EARLY * steps))}
    groups = [(PIXEL, {}), (PERCEPTUAL, perceptual)]
    for adaptive in (True, False):
        for start, step in starts.items():
            groups.append((gan_label(adaptive, start),
                           {**perceptual, "disc_weight": DISC_WEIGHT, "adaptive_weight": adaptive, "disc_start": step,
                            "gan_guard_steps": max(1, steps // 20), "gan_guard_action": "warn"}))
    return groups


def guard_record(group: Group) -> None:
    """Each run's GAN phase as its metrics: the collapse guard's summary, the last entry of its training log."""
    for run in group.runs:
        summary = next((e for e in reversed(run.log_history) if "gan_collapse_events" in e), None)
        if summary is not None:
            run.metrics.update({k: v for k, v in summary.items() if k.startswith("gan_")})


def run(runner: Runner, report: Report) -> None:
    b = runner.budget
    steps = b.train_steps(len(runner.train_set))
    images, _ = runner.train_images(b.classifier_examples)
    network = offline_perceptual_network(PERCEPTUAL_NETWORK, images, epochs=b.classifier_epochs,
                                         width=b.classifier_width, cache_dir=runner.store.dir / "features",
                                         dataset_name=runner.data.name, device=runner.device, progress=False)
    groups = []
    for label, fields in settings(steps):
        group = runner.train(label, "vqvae", {}, training=fields or None,
                             trainer_kwargs={"perceptual_network": network} if fields else None)
        guard_record(group)
        groups.append(group)
    for group in groups:  # the perceptual distance, and samples from a transformer prior over each VQ-VAE's codes
        for vq_run in group.runs:
            distance = evaluate(vq_run.model, runner.test_x, perceptual=network, seed=runner.seed, progress=False)
            vq_run.metrics["perceptual_rotation"] = distance["perceptual_rotation"]
            prior, stats = runner.train_prior(vq_run, prior_type="transformer")
            vq_run.metrics["prior_test_bits_per_code"] = stats["prior_test_bits_per_code"]
            quality = runner.quality(vq_run.model, prior=prior, reconstructions=False)
            if quality:
                vq_run.metrics["prior_sample_fd_domain"] = quality["sample_fd_domain"]
            if vq_run is group.first:
                vq_run.samples = runner.samples(vq_run.model, prior=prior)
    write_sections(runner, report, groups, steps, network.description)
    judge(report, groups)
    report.summary = {"settings": dict(settings(steps)), "perceptual_network": network.description,
                      "prior": "transformer (code_priors' default size), "
                               f"{b.prior_steps} steps per VQ-VAE"}


def write_sections(runner: Runner, report: Report, groups: list[Group], steps: int, network: str) -> None:
    by_label = {g.label: g for g in groups}
    starts = dict(settings(steps))
    late, early = starts[gan_label(True, "late")]["disc_start"], starts[gan_label(True, "early")]["disc_start"]
    report.section(
        "Reconstructions and samples",
        f"The same VQ-VAE trained {steps} steps with each loss. The perceptual term is the `{PERCEPTUAL_NETWORK}` "
        f"network's distance ({network}), weighted {PERCEPTUAL_WEIGHT:g} per pixel as the reconstruction error; the "
        f"discriminator is a PatchGAN (hinge loss) weighted {DISC_WEIGHT:g}, times the adaptive weight "
        "||grad L_rec|| / ||grad L_G|| at the decoder's last layer where it says *adaptive*, and switched on at "
        f"step {early} (*early*) or {late} (*late*). No EMA of the weights: the losses alone differ. *perceptual_"
        "rotation* is the perceptual distance of the test reconstructions; *recon. FD* and *sample FD* are Fréchet "
        "distances on the domain features (a classifier of the labels, another network than the perceptual one); "
        "the samples decode code maps drawn from a transformer prior trained on each VQ-VAE's codes. "
        "*gan_collapse_events*: checks of the collapse guard at which the PSNR of 64 held-out images was more than "
        "the margin below its value when the discriminator started; *gan_worst_psnr_drop_db* the largest such fall.",
        report.table(groups, COLUMNS),
        [(f"{g.label} reconstructions", report.reconstruction_figure(runner.test_x, g)) for g in groups]
        + [(f"{g.label} samples (transformer prior)", report.samples_figure(g.first.samples, f"{g.slug}_samples.png"))
           for g in (by_label[PIXEL], by_label[gan_label(True, "late")])],
    )
    report.section(
        "The GAN phase",
        "The adversarial weight actually applied (disc_weight x the adaptive weight) and the discriminator's loss, "
        "first seed, against the training step.",
        figures=[("Training curves", report.loss_figure([g for g in groups if "GAN" in g.label],
                                                         terms=("adversarial_weight", "discriminator_loss",
                                                                "guard_psnr"), name="gan_curves.png"))],
    )


def judge(report: Report, groups: list[Group]) -> None:
    g = {group.label: group for group in groups}
    pixel, perceptual = g[PIXEL], g[PERCEPTUAL]
    late, early = g[gan_label(True, "late")], g[gan_label(True, "early")]
    fixed_late, fixed_early = g[gan_label(False, "late")], g[gan_label(False, "early")]
    fd, relative = "reconstruction_fd_domain", FLOORS["relative"]

    d_fd = difference(pixel.values(fd), perceptual.values(fd), relative_floor=relative)
    report.claim(Claim(
        "perceptual_lowers_reconstruction_fd",
        "a perceptual term makes the reconstructions closer to the real images than pixel loss alone (lower "
        "reconstruction FD)",
        d_fd.verdict(+1), f"reconstruction FD pixel loss vs + perceptual {d_fd.text()}",
        rule="pixel loss's FD minus the perceptual run's against max(2 SE, 5% of the larger)",
    ))
    d_psnr = difference(pixel.values("psnr"), perceptual.values("psnr"), FLOORS["psnr"])
    report.claim(Claim(
        "perceptual_costs_psnr",
        "the perceptual term costs PSNR (pixel loss alone optimises exactly the squared error)",
        d_psnr.verdict(+1), f"PSNR pixel loss vs + perceptual {d_psnr.text('dB')}",
    ))
    d_gan = difference(perceptual.values(fd), late.values(fd), relative_floor=relative)
    report.claim(Claim(
        "gan_lowers_reconstruction_fd_further",
        "a discriminator (adaptive weight, late start) lowers the reconstruction FD further than the perceptual "
        "term alone",
        d_gan.verdict(+1), f"reconstruction FD + perceptual vs + GAN {d_gan.text()}",
        rule="the perceptual run's FD minus the GAN run's against max(2 SE, 5% of the larger)",
    ))
    d_late = difference(late.values("psnr"), early.values("psnr"), FLOORS["psnr"])
    d_fixed_late = difference(fixed_late.values("psnr"), fixed_early.values("psnr"), FLOORS["psnr"])
    report.claim(Claim(
        "late_start_is_safer",
        "a discriminator started late keeps better reconstructions than one started early (with the adaptive weight "
        "and without)",
        all_of([d_late.verdict(+1), d_fixed_late.verdict(+1)]),
        f"PSNR late vs early start: adaptive weight {d_late.text('dB')}; fixed weight {d_fixed_late.text('dB')}",
        rule="both differences must be confirmed",
    ))
    d_adaptive = difference(late.values("psnr"), fixed_late.values("psnr"), FLOORS["psnr"])
    d_adaptive_early = difference(early.values("psnr"), fixed_early.values("psnr"), FLOORS["psnr"])
    report.claim(Claim(
        "adaptive_weight_is_safer",
        "the adaptive weight keeps better reconstructions than a fixed adversarial weight (late and early start)",
        all_of([d_adaptive.verdict(+1), d_adaptive_early.verdict(+1)]),
        f"PSNR adaptive vs fixed weight: late start {d_adaptive.text('dB')}; early start "
        f"{d_adaptive_early.text('dB')}",
        rule="both differences must be confirmed",
    ))
    gan_groups = [late, early, fixed_late, fixed_early]
    events = {grp.label: sum(int(v) for v in grp.values("gan_collapse_events")) for grp in gan_groups}
    collapsed = {label: n for label, n in events.items() if n}
    report.findings.append(
        "The collapse guard recorded no fall of the held-out PSNR beyond its margin in any GAN run."
        if not collapsed else
        "The collapse guard fired in " + "; ".join(f"{label} ({n} checks)" for label, n in collapsed.items())
        + ", out of " + str(sum(len(grp.runs) for grp in gan_groups)) + " GAN runs.")
    ranked = sorted((grp for grp in groups if grp.values(fd)), key=lambda grp: grp.mean(fd))
    if ranked:
        report.findings.append("By reconstruction FD (lower is better): " + " < ".join(
            f"{grp.label} ({grp.mean(fd):.3g}, {grp.mean('psnr'):.2f} dB)" for grp in ranked) + ".")
    samples = [grp for grp in groups if grp.values("prior_sample_fd_domain")]
    if samples:
        best = min(samples, key=lambda grp: grp.mean("prior_sample_fd_domain"))
        d_samples = difference(pixel.values("prior_sample_fd_domain"), best.values("prior_sample_fd_domain"),
                               relative_floor=relative)
        report.findings.append(
            f"Samples (transformer prior): the lowest sample FD is {best.label}'s; against pixel loss "
            f"{d_samples.text()} ({d_samples.verdict(+1)}).")
