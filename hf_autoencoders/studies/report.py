"""Writing what an experiment found: `report.md` (setup, verdicts, sections with tables and figures), the figures,
and `results.json` (every number, every claim with its verdict, the timing)."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch

from ..plots import (
    figure,
    log_axis,
    plot_interpolations,
    plot_loss_curves,
    plot_reconstructions,
    plot_samples,
    save_image_grid,
)
from ..results import write_json
from .runner import Group, Runner
from .verdicts import RULE, Claim

COLUMN_NAMES = {
    "mse": "MSE", "psnr": "PSNR (dB)", "ssim": "SSIM", "sse": "SSE", "loss": "loss", "reconstruction_loss": "rec. loss",
    "kl_loss": "KL (nats)", "elbo": "ELBO (nats)", "iwae_nll": "IWAE NLL (nats)", "active_units": "active units",
    "codebook_usage": "codebook usage", "codebook_perplexity": "perplexity", "downstream_accuracy": "downstream acc.",
    "linear_probe_accuracy": "probe acc.", "input_psnr": "noisy-input PSNR", "latent_silhouette": "silhouette",
    "aggregate_mean_abs": "mean abs(m_j)", "aggregate_std": "mean s_j", "posterior_mean_std": "std of means",
    "prior_mismatch": "prior mismatch",
    "edge_sharpness": "edge sharpness", "objective_sse_units": "objective (SSE units)",
    "reconstruction_fd_domain": "recon. FD", "commitment_loss": "commitment", "codebook_loss": "codebook loss",
    "sample_fd_domain": "sample FD", "sample_kid_domain": "sample KID",
    "sample_precision_domain": "sample precision", "sample_recall_domain": "sample recall",
    "codebook_dead_codes": "dead codes", "prior_bits_per_image": "prior bits / image",
    "prior_bits_per_code": "prior bits / code", "uniform_bits_per_image": "uniform bits / image",
    "bits_per_position": "bits / position",
}
FIDELITY = ["mse", "psnr", "ssim", "edge_sharpness"]
SAMPLE_QUALITY = ["sample_fd_domain", "sample_kid_domain", "sample_precision_domain", "sample_recall_domain"]
GLOSSARY = """**Glossary.** *MSE*: mean squared error per pixel; *PSNR*: 10 log10(1 / MSE) per image, averaged;
*SSIM*: structural similarity (Gaussian window); *edge sharpness*: the gradient energy (sum of absolute differences
of neighbouring pixels) of the reconstructions over that of the originals, 1 for as sharp, below 1 for blurred.
*ELBO* and *IWAE NLL* are in nats per image under the model's own Gaussian likelihood with fixed variance c
(comparable only between models with the same c). *Active units*: latent dimensions whose posterior mean varies over
the test images (variance > 0.01). *Downstream acc.*: the reference classifier's accuracy on the reconstructions of
the test images. *Probe acc.*: a logistic regression on the latents (posterior means for the VAE, quantized vectors
for the VQ-VAE) fitted on training images. *FD*: Frechet distance between the test images and the reconstructions
(recon. FD) or generated samples (sample FD), on the features of a classifier trained on the dataset's training
images (`domain` features, not Inception: comparable within this page, not with published FIDs); lower is better.
*KID*, *precision*, *recall*: on the same features. Numbers are mean ± standard deviation over seeds where an
experiment has several. VAE reconstructions decode one posterior sample z ~ q(z|x)."""


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
        return f"{value:.3g}"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def fmt_group(group: Group, key: str) -> str:
    """`mean ± std` over the group's seeds (the value alone for one run, - where not measured)."""
    values = group.values(key)
    if not values:
        return "-"
    if len(values) == 1:
        return fmt(group.runs[0].metrics[key])
    return fmt_spread(group.mean(key), group.std(key))


def fmt_spread(mean: float, std: float) -> str:
    """`mean ± std`, the spread given to the mean's decimals (two significant digits for tiny or huge means)."""
    shown = fmt(mean)
    if "e" in shown or "." not in shown:
        return f"{shown} ± {std:.2g}"
    return f"{shown} ± {std:.{len(shown.split('.')[1])}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


class Report:
    """The report of one experiment: findings, claims with verdicts, sections, figures, and the summary numbers that
    go to results.json."""

    def __init__(self, name: str, title: str, question: str, output_dir):
        self.name, self.title, self.question, self.dir = name, title, question, Path(output_dir)
        self.sections: list[str] = []
        self.findings: list[str] = []
        self.claims: list[Claim] = []
        self.figures: list[str] = []
        self.summary: dict = {}
        self.started = time.time()

    # --------------------------------------------------------------------------------------------- content

    def claim(self, claim: Claim) -> Claim:
        self.claims.append(claim)
        return claim

    def section(self, title: str, text: str = "", table: str = "", figures: list[tuple[str, str]] = ()):
        """A `## title` section: text, a markdown table and figures given as (caption, file name)."""
        parts = [f"## {title}", text, table]
        parts += [f"![{caption}]({name})\n*{caption}*" for caption, name in figures]
        self.sections.append("\n\n".join(p for p in parts if p))

    def table(self, groups: list[Group], columns: list[str], first: str = "model", labels=None) -> str:
        """A markdown table of the groups' metrics, mean ± std over seeds (absent values shown as -)."""
        columns = [c for c in columns if any(g.values(c) for g in groups)]
        labels = labels or [g.label for g in groups]
        rows = [[label] + [fmt_group(g, c) for c in columns] for label, g in zip(labels, groups)]
        return markdown_table([first] + [COLUMN_NAMES.get(c, c) for c in columns], rows)

    # --------------------------------------------------------------------------------------------- figures

    def path(self, filename: str) -> Path:
        self.figures.append(filename)
        return self.dir / filename

    def reconstruction_figure(self, originals: torch.Tensor, group: Group) -> str:
        name = f"{group.slug}_reconstructions.png"
        recon = group.first.reconstructions
        plot_reconstructions(originals[: len(recon)], recon, self.path(name))
        return name

    def samples_figure(self, samples: torch.Tensor, name: str) -> str:
        plot_samples(samples[:32], self.path(name))
        return name

    def loss_figure(self, groups: list[Group], terms: tuple[str, ...] = ("loss",), name: str = "loss_curves.png"):
        """One subplot per group and term: the first seed's training curves side by side."""
        history = [{"step": entry["step"], f"{g.label} {term}": entry[term]}
                   for g in groups for entry in g.first.log_history for term in terms if term in entry]
        plot_loss_curves(history, self.path(name), title="training loss (per image, averaged since the last log)")
        return name

    @torch.no_grad()
    def interpolation_figure(self, group: Group, images: torch.Tensor, pairs: int = 4, steps: int = 10) -> str:
        """Decoded straight lines in latent space between images i and i + pairs: between posterior means for a
        VAE, between encoder outputs z_e for a VQ-VAE (whose `decode` quantizes every point)."""
        from ..evaluation import interpolate_latents

        model = group.first.model
        x = images[: 2 * pairs].to(model.device)
        encoded = model.encode(x)
        z = encoded.latent_dist.mode() if hasattr(encoded, "latent_dist") else encoded.latents
        path = interpolate_latents(z[:pairs], z[pairs:], steps)
        decoded = model.decode(path.flatten(0, 1).to(z.dtype)).sample.clamp(0, 1).cpu()
        name = f"{group.slug}_interpolations.png"
        plot_interpolations(decoded.view(pairs, steps, *decoded.shape[1:]), self.path(name))
        return name

    def image_rows_figure(self, rows: list[torch.Tensor], name: str, nrow: int = 8, scale: int = 2) -> str:
        """Rows of images stacked into one grid (each row `nrow` images)."""
        save_image_grid(torch.cat([r[:nrow].clamp(0, 1) for r in rows]), self.path(name), nrow=nrow, scale=scale)
        return name

    def line_figure(self, name: str, panels: list[tuple[str, dict]], xlabel: str, logx: bool = False) -> str:
        """One panel per (y label, {series name: (xs, ys[, errors])}), drawn as lines with markers (and error bars
        of one standard deviation where given)."""
        fig = figure(figsize=(4.2 * len(panels), 3.6))
        for ax, (ylabel, series) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
            for label, (xs, ys, *errors) in series.items():
                ax.errorbar(xs, ys, yerr=errors[0] if errors and any(errors[0]) else None, marker="o", ms=4,
                            capsize=3, label=label)
            if logx:
                log_axis(ax, "x")
            ax.set(xlabel=xlabel, ylabel=ylabel)
            ax.grid(alpha=0.3)
            if len(series) > 1:
                ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(self.path(name), dpi=120)
        return name

    # ----------------------------------------------------------------------------------------------- write

    def write(self, runner: Runner) -> dict:
        """Write report.md and results.json; return the results."""
        b, data = runner.budget, runner.data
        seconds = time.time() - self.started
        t = runner.timing
        timing = {**t, "wall_clock_seconds": seconds, "evaluation_seconds": seconds - t["train_seconds_this_pass"],
                  "models_seconds": t["train_seconds_this_pass"] + t["train_seconds_of_reused_runs"]}
        steps = sorted({r.train_steps for g in runner.groups.values() for r in g.runs} - {0})
        length = (f"{b.max_steps} Adam steps" if b.max_steps is not None else
                  f"{b.epochs:g} epochs" + (f" ({b.sample_epochs:g} in this experiment)"
                                            if self.name == "samples" and b.sample_epochs else ""))
        seeds = ", ".join(map(str, runner.seeds))
        setup = (
            f"**Setup.** Data: `{data.name}` ({len(runner.train_set)} training images, {len(runner.test_x)} test "
            f"images, {data.num_channels}x{data.image_size}x{data.image_size}). Budget `{b.name}`: `{b.backbone}` "
            f"backbone (hidden size {b.hidden_size}"
            + (f", hidden layers {b.num_hidden_layers}" if b.backbone != "conv" else "")
            + f"), {length} of batch {b.batch_size} at learning rate {b.learning_rate:g} (cosine schedule)"
            + (f" = {', '.join(map(str, steps))} steps" if steps else "")
            + f", seed{'s' if len(runner.seeds) > 1 else ''} {seeds} (the sections say where a model departs from "
            "this). Losses are per image (sums over pixels), "
            f"averaged over the test images. Wall clock of this pass: {seconds / 60:.1f} min "
            f"({timing['train_seconds_this_pass'] / 60:.1f} min training {timing['runs_trained']} models"
            + (f"; {timing['runs_reused']} finished models reused, trained in "
               f"{timing['train_seconds_of_reused_runs'] / 60:.1f} min" if timing["runs_reused"] else "")
            + f"). Device: {runner.device.type}."
        )
        if "classifier_test_accuracy" in runner.reference:
            setup += (
                " The judge of reconstructions (downstream accuracy) is a small CNN trained on "
                f"{runner.reference['classifier_examples']} real training images; its accuracy on the real test "
                f"images is {runner.reference['classifier_test_accuracy']:.3f}."
            )
        verdicts = "\n".join(f"- {c.sentence()}" for c in self.claims)
        findings = "\n".join(f"- {f}" for f in self.findings)
        show = ["**Verdicts.** " + RULE[0].upper() + RULE[1:] + ".\n\n" + verdicts if self.claims else "",
                "**Other findings.**\n\n" + findings if self.findings else ""]
        report = "\n\n".join([f"# {self.title}", self.question, setup, "## What the numbers show",
                              *[s for s in show if s], *self.sections, GLOSSARY]) + "\n"
        (self.dir / "report.md").write_text(report)
        results = {
            "experiment": self.name,
            "question": self.question,
            "dataset": {"name": data.name, "train_examples": len(runner.train_set),
                        "test_examples": len(runner.test_x), "image_size": data.image_size,
                        "num_channels": data.num_channels},
            "budget": dataclasses.asdict(b),
            "seeds": runner.seeds,
            "reference": runner.reference,
            "groups": {
                label: {
                    "family": group.family,
                    "config": {k: v for k, v in group.config.to_diff_dict().items()
                               if k not in ("transformers_version", "model_type")},
                    "runs": [{"seed": r.seed, "metrics": r.metrics, "train_steps": r.train_steps,
                              "train_seconds": r.train_seconds,
                              "train_loss_curve": [[e["step"], e["loss"]] for e in r.log_history if "loss" in e]}
                             for r in group.runs],
                    "mean": {k: group.mean(k) for k in group.first.metrics if group.values(k)},
                    "std": {k: group.std(k) for k in group.first.metrics if group.values(k)},
                }
                for label, group in runner.groups.items()
            },
            "summary": self.summary,
            "claims": [c.to_dict() for c in self.claims],
            "findings": self.findings,
            "figures": self.figures,
            "timing": timing,
        }
        write_json(self.dir / "results.json", results)
        return results


__all__ = ["COLUMN_NAMES", "FIDELITY", "GLOSSARY", "SAMPLE_QUALITY", "Report", "fmt", "fmt_group", "fmt_spread",
           "markdown_table"]
