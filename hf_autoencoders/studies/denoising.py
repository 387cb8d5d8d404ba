"""The denoising experiment (`hf-autoencoders experiment denoising`): Trained and tested on noisy inputs with clean
targets, how do an AE and a VAE hold up relative to the no-noise case?"""

from __future__ import annotations

from .study import Study, display_name, fmt, markdown_table
from .verdicts import PSNR_TOL, claim, close, metric

TITLE = "Experiment: denoising"
QUESTION = (
    'Trained and tested on noisy inputs with clean targets, how do an AE and a VAE hold up relative to '
    'the no-noise case?'
)


def run(study: Study) -> None:
    levels = [0.0] + [s for s in study.budget.noise_levels if s > 0]
    specs = [(f"{display_name(f)} noise={s:g}", f, {"noise_std": s}, s) for f in ("ae", "vae") for s in levels]
    runs = study.train_all(specs)
    table_rows, figures, summary = [], [], {}
    for family in ("ae", "vae"):
        group = [r for r in runs if r.family == family]
        clean = group[0]
        name = display_name(family)
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
