"""The denoising experiment (`hf-autoencoders experiment denoising`): trained and tested on noisy inputs with clean
targets, how do an AE and a VAE hold up relative to the no-noise case, and how does that change with the noise weight
(guide section 2.4.3: "Did either of the models relatively improve in the denoising case? ... .25, .50, .75")."""

from __future__ import annotations

from .report import Report, fmt, markdown_table
from .runner import Runner, display_name
from .verdicts import FLOORS, Claim, all_of, difference

TITLE = "Experiment: denoising"
QUESTION = (
    "Trained and tested on noisy inputs with clean targets, how do an AE and a VAE hold up relative to the no-noise "
    "case, and how does that change with the noise level?"
)
MEASURES_QUALITY = False  # no Frechet distances: nothing here reads them
REPLICATED = False


def run(runner: Runner, report: Report) -> None:
    levels = [0.0] + [s for s in runner.budget.noise_levels if s > 0]
    specs = [(f"{display_name(f)} noise={s:g}", f, {"noise_std": s}, s) for f in ("ae", "vae") for s in levels]
    groups = runner.train_all(specs)
    table_rows, figures, summary, per_seed = [], [], {}, {}
    for family in ("ae", "vae"):
        members = [g for g in groups if g.family == family]
        clean = members[0]
        name = display_name(family)
        summary[name], per_seed[name] = {}, {}
        for sigma, group in zip(levels, members):
            # per seed: the clean-trained model of that seed on the same noisy inputs
            baseline = [runner.fidelity(c.model, sigma)[0]["psnr"] for c in clean.runs]
            psnr = group.values("psnr")
            gains = [p - q for p, q in zip(psnr, baseline)]
            drops = [c - p for c, p in zip(clean.values("psnr"), psnr)]
            for run, value in zip(group.runs, baseline):
                run.metrics["clean_trained_psnr_on_this_noise"] = value
            per_seed[name][sigma] = {"gain": gains, "drop": drops}
            entry = {
                "noise_std": sigma,
                "input_psnr": group.mean("input_psnr") if group.values("input_psnr") else None,
                "psnr": group.mean("psnr"), "psnr_std": group.std("psnr"),
                "ssim": group.mean("ssim"), "mse": group.mean("mse"),
                "clean_trained_psnr": sum(baseline) / len(baseline),
                "denoising_gain_db": sum(gains) / len(gains),
                "psnr_drop_db": sum(drops) / len(drops),
                "relative_psnr": group.mean("psnr") / clean.mean("psnr"),
                "mse_ratio": group.mean("mse") / clean.mean("mse"),
                "downstream_accuracy": group.mean("downstream_accuracy") if runner.labelled else None,
            }
            summary[name][f"{sigma:g}"] = entry
            table_rows.append([name, f"{sigma:g}", fmt(entry["input_psnr"]) if sigma else "-", fmt(entry["psnr"]),
                               fmt(entry["clean_trained_psnr"]), f"{entry['denoising_gain_db']:+.2f}",
                               f"{-entry['psnr_drop_db']:+.2f}", f"{entry['relative_psnr']:.3f}",
                               f"{entry['mse_ratio']:.2f}", fmt(entry["ssim"]), fmt(entry["downstream_accuracy"])])
        rows = [runner.test_x[:8]]
        for sigma, group in zip(levels[1:], members[1:]):
            rows += [runner.noisy(runner.test_x[:8], sigma), group.first.reconstructions]
        figures.append((f"{name}: clean images, then for each noise level the noisy input and the denoised output",
                        report.image_rows_figure(rows, f"{family}_denoising.png")))
    report.summary = summary
    noisy = levels[1:]
    psnr_series = {"noisy input": (noisy, [summary["AE"][f"{s:g}"]["input_psnr"] for s in noisy])}
    for name, entries in summary.items():
        psnr_series[f"{name}, trained on noise"] = (levels, [entries[f"{s:g}"]["psnr"] for s in levels])
        psnr_series[f"{name}, trained clean"] = (levels, [entries[f"{s:g}"]["clean_trained_psnr"] for s in levels])
    figures.insert(0, ("Test PSNR against the noise level", report.line_figure(
        "denoising.png", [("test PSNR (dB)", psnr_series)], "noise standard deviation s")))
    report.section(
        "Denoising against noise level",
        "Each model is trained on x + N(0, s^2) inputs with the clean x as target (config `noise_std` = s) and tested "
        "on noisy test images (a fixed noise draw, same s) against the clean ones. *Clean-trained*: the s = 0 model on "
        "the same noisy inputs; *gain*: PSNR of the noise-trained model minus the clean-trained one's. *ΔPSNR vs "
        "s = 0*, PSNR ratio and MSE ratio: relative to the same family's no-noise case.",
        markdown_table(["model", "noise s", "noisy-input PSNR", "PSNR", "clean-trained PSNR", "gain (dB)",
                        "ΔPSNR vs s=0", "PSNR ratio", "MSE ratio", "SSIM", "downstream acc."], table_rows),
        figures,
    )
    report.section("Training curves", figures=[("Training loss of each run", report.loss_figure(groups))])
    if noisy:
        judge(report, summary, per_seed, noisy)


def judge(report: Report, summary: dict, per_seed: dict, noisy: list[float]) -> None:
    """The verdicts: does the gain of denoising training grow with the noise, and does the VAE hold up better?"""
    low, high = noisy[0], noisy[-1]
    if high > low:
        gains = {n: difference(per_seed[n][high]["gain"], per_seed[n][low]["gain"], FLOORS["psnr"]) for n in summary}
        report.claim(Claim(
            "denoising_gain_grows",
            "the gain from training on noisy inputs grows with the noise weight",
            all_of([d.verdict(+1) for d in gains.values()]),
            "gain over the clean-trained model at s = " + f"{high:g} vs s = {low:g}: "
            + "; ".join(f"{n} {d.text('dB')}" for n, d in gains.items()),
            rule="for both models, the gain at the highest noise must exceed that at the lowest by max(2 SE, floor)",
        ))
    top = f"{high:g}"
    drops = difference(per_seed["AE"][high]["drop"], per_seed["VAE"][high]["drop"], FLOORS["psnr"])
    report.claim(Claim(
        "vae_better_denoiser",
        "the VAE holds up better under input noise than the AE (it relatively improves in the denoising case)",
        drops.verdict(+1),
        f"PSNR lost relative to the no-noise model at s = {top}, AE vs VAE: {drops.text('dB')}; in absolute terms "
        f"AE {summary['AE'][top]['psnr']:.2f} dB, VAE {summary['VAE'][top]['psnr']:.2f} dB",
        rule="the AE's drop minus the VAE's, against max(2 SE, floor)",
    ))
    helped = [(n, s) for n, entries in summary.items() for s, e in entries.items()
              if float(s) > 0 and e["denoising_gain_db"] > 0]
    report.findings.append(
        f"Training on noisy inputs beats the clean-trained model on the same noisy inputs in {len(helped)} of "
        f"{len(noisy) * len(summary)} (model, noise) cases; at s = {top} the inputs are at "
        f"{summary['AE'][top]['input_psnr']:.2f} dB and the outputs at "
        + ", ".join(f"{n} {summary[n][top]['psnr']:.2f} dB" for n in summary) + ".")
