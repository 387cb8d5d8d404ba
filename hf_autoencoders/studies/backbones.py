"""The backbones experiment (`hf-autoencoders experiment backbones`): fully connected (MLP) vs convolutional vs ViT
encoders and decoders, for each family (AE, VAE, VQ-VAE), on the same data (guide section 1, question 2: what
linear, convolutional and transformer layers suit, and their drawbacks).

Two comparisons, each saying what it holds equal:

- **equal training wall-clock** (the headline, over the budget's seeds). Each backbone has its usual width at the
  budget (`SHAPES`). Its step time t_b is calibrated first, in `CALIBRATION_ROUNDS` rounds in which every model in
  turn (`alternate`: the order reversed every other round) trains `WARMUP_STEPS + TIMED_STEPS + 1` steps through
  the same Trainer that trains the runs, a clock read at the end of every step (`step_intervals`): t_b is the median
  of all its rounds' last `TIMED_STEPS` intervals (data loading, forward, backward, optimizer step, logging). The
  conv model is the reference: it trains for the budget's n steps, every other backbone for as many as fit in the
  conv run's time, n_b = round(n t_conv / t_b) (`equal_time_steps`). The calibration is kept with the runs, so
  `--resume` trains the same numbers of steps and reuses the finished runs.
- **equal parameter count**. Each other backbone keeps its depth and takes the `hidden_size` whose parameter count
  is closest to the conv model's (`matched_width`: counted on the meta device, nothing allocated or trained), and
  trains for the budget's n steps, with the first seed (`MATCHED_SEEDS`) against the conv models of every seed.

Per run: test PSNR, SSIM and reconstruction Frechet distance (the `Runner`'s evaluation), training samples/s
(batch / calibrated step time, and over the whole run), parameters, activation memory per sample
(`memory_per_sample`), VAE samples, VQ-VAE codebook usage and perplexity. The drawbacks, measured with
`hf_autoencoders.evaluation.probes`: MLP parameters at 64x64x3 against conv and ViT (counted, not trained); the
locality of a conv latent (`outside_share`: the share of the input-gradient mass of one VQ-VAE latent cell outside
the 3x3 block of cells around it); ViT patch seams (`border_interior_ratio`: the reconstruction error on
patch-border pixels over that on patch interiors, against the conv's on the same pixels). docs/experiments.md gives
what the experiment costs at each budget.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time

import torch
from transformers import set_seed

from ..data import ImageCollator
from ..evaluation.probes import (
    activation_bytes,
    border_interior_ratio,
    error_map,
    latent_cell_gradient,
    outside_share,
    training_memory,
)
from ..evaluation.timing import StepTimer, alternate, equal_time_steps
from ..models import AutoencoderConfig, autoencoder_classes
from ..plots import plot_bars, save_image_grid
from ..training import AutoencoderTrainer
from .report import Report, fmt, fmt_group, markdown_table
from .runner import Group, Runner, as_float_images, display_name, slugify, train_quietly
from .verdicts import FLOORS, Claim, all_of, difference

TITLE = "Experiment: MLP vs conv vs ViT backbones"
QUESTION = (
    "Fully connected, convolutional or transformer layers for the encoder and decoder: which reconstructs best at "
    "equal training time, and at equal parameter count, and what do each one's drawbacks look like in numbers?"
)
REPLICATED = True  # the equal-wall-clock groups are trained over the budget's seeds

FAMILIES = ("ae", "vae", "vqvae")
BACKBONES = ("mlp", "conv", "vit")
NAMES = {"mlp": "MLP", "conv": "conv", "vit": "ViT"}
REFERENCE = "conv"  # the backbone whose training time the others get, and whose parameter count they match
WARMUP_STEPS, TIMED_STEPS = 3, 10  # calibration: intervals dropped, then timed (the median is the step time)
CALIBRATION_ROUNDS = 3  # the models alternate round by round (a model timed once sees only one moment's load)
LARGE_IMAGE = (3, 64)  # channels, size of the images the parameter counts are extrapolated to
ERF_IMAGES = 64  # test images the receptive fields are averaged over
SHARE_FLOOR = 0.05  # the smallest difference of gradient-mass shares read as real (a fraction of the mass)
# The equal-parameter MLPs and ViTs train with the first seed only: on a CPU a ViT as small as the conv model steps
# about as slowly as a wide one, and three seeds of them would double the experiment's time. Their verdicts use the
# one-run floor.
MATCHED_SEEDS = 1

# Each backbone's width and depth at each budget (the equal-wall-clock comparison); the budget's own backbone takes
# the budget's `hidden_size` and `num_hidden_layers` instead (the conv models of `seed` are SEED's and SEED_RGB's:
# 16 and 32 channels). Every other field is the config's default: the ViT's heads, MLPs and output head are those
# of `backbone="vit"` (at `mlp` and `seed` its default width and depth as well). The ViTs have 4x4 patches: their
# latent grid is the conv's (image / 4), so the VQ-VAEs have the same code map. Other budgets (overrides keep the
# name) take the `seed` row.
SHAPES = {
    "quick": {"mlp": {"hidden_size": 128, "num_hidden_layers": 2}, "conv": {"hidden_size": 8, "num_hidden_layers": 0},
              "vit": {"hidden_size": 32, "num_hidden_layers": 1, "patch_size": 4}},
    "mlp": {"mlp": {"hidden_size": 256, "num_hidden_layers": 2}, "conv": {"hidden_size": 16, "num_hidden_layers": 0},
            "vit": {"hidden_size": 64, "num_hidden_layers": 1, "patch_size": 4}},
    "seed": {"mlp": {"hidden_size": 512, "num_hidden_layers": 2}, "conv": {"hidden_size": 16, "num_hidden_layers": 0},
             "vit": {"hidden_size": 64, "num_hidden_layers": 1, "patch_size": 4}},
}


def backbone_fields(budget, backbone: str) -> dict:
    """The config fields of `backbone` at `budget` (see `SHAPES`)."""
    fields = dict(SHAPES.get(budget.name, SHAPES["seed"])[backbone])
    if backbone == budget.backbone:
        fields.update(hidden_size=budget.hidden_size, num_hidden_layers=budget.num_hidden_layers)
    return {"backbone": backbone, **fields}


# ------------------------------------------------------------------------------------------------ parameter counts


def parameter_count(runner: Runner, family: str, fields: dict) -> int:
    """Parameters of the `family` model with config `fields` (on the runner's data shape unless `fields` set
    `image_size` / `num_channels`), built on the meta device: nothing is allocated."""
    config = runner.config(family, **fields)
    with torch.device("meta"):
        model = autoencoder_classes(family)[1](config)
    return sum(p.numel() for p in model.parameters())


def matched_width(count, target: int, step: int = 1, limit: int = 4096) -> tuple[int, int]:
    """The width w (a multiple of `step`, at most `limit`) whose parameter count `count(w)` is closest to `target`,
    by bisection (a count grows with the width). Returns (w, count(w))."""
    lo, hi = 1, max(1, limit // step)  # in units of `step`
    while lo < hi:
        mid = (lo + hi) // 2
        if count(mid * step) < target:
            lo = mid + 1
        else:
            hi = mid
    best = min((k for k in (lo - 1, lo) if k >= 1), key=lambda k: abs(count(k * step) - target))
    return best * step, count(best * step)


def width_step(fields: dict) -> int:
    """The granularity of a backbone's width: a ViT's must divide into its attention heads."""
    if fields["backbone"] != "vit":
        return 1
    return fields.get("num_attention_heads") or AutoencoderConfig(backbone="vit").num_attention_heads


# ----------------------------------------------------------------------------------------------------- calibration


def step_intervals(runner: Runner, family: str, fields: dict, timer=time.perf_counter) -> list[float]:
    """Seconds of the timed training steps of the `family` model with config `fields` under the runner's budget
    (batch size, learning rate, device), trained through the Trainer that trains the runs: the intervals between the
    ends of consecutive steps, after `WARMUP_STEPS` of them."""
    b = runner.budget
    set_seed(runner.seed)
    model = autoencoder_classes(family)[1](runner.config(family, **fields))
    clock = StepTimer(timer)
    train_quietly(AutoencoderTrainer, model, runner.train_set, ImageCollator(), steps=WARMUP_STEPS + TIMED_STEPS + 1,
                  batch_size=b.batch_size, learning_rate=b.learning_rate, seed=runner.seed, callbacks=[clock])
    return clock.intervals(WARMUP_STEPS)


def calibrate(runner: Runner, specs: dict, timer=time.perf_counter) -> dict:
    """Step seconds of every {name: (family, fields)} in `specs`: the median of its `step_intervals` over
    `CALIBRATION_ROUNDS` rounds, the models taking turns (`alternate`). Kept in the run store
    (`calibration/backbones-<key>.json`, the key a hash of what the runs depend on), so that a resumed experiment
    reads the same step times instead of measuring again (and trains the same numbers of steps)."""
    b = runner.budget
    described = {name: {"family": family, "config": runner.config(family, **fields).to_diff_dict()}
                 for name, (family, fields) in sorted(specs.items())}
    spec = {"dataset": runner.data.name, "train_examples": len(runner.train_set), "batch_size": b.batch_size,
            "learning_rate": b.learning_rate, "device": runner.device.type, "seed": runner.seed,
            "warmup_steps": WARMUP_STEPS, "timed_steps": TIMED_STEPS, "rounds": CALIBRATION_ROUNDS,
            "models": described}
    key = hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:10]
    path = runner.store.dir / "calibration" / f"backbones-{key}.json"
    if runner.store.resume and path.is_file():
        return json.loads(path.read_text())["step_seconds"]
    from tqdm.auto import tqdm

    measures = {name: (lambda name=name: step_intervals(runner, *specs[name], timer)) for name in specs}
    with tqdm(total=CALIBRATION_ROUNDS * len(specs), desc="backbones: timing steps", unit="timing",
              disable=not runner.progress) as bar:
        rounds = alternate(measures, CALIBRATION_ROUNDS, bar)
    seconds = {name: statistics.median(t for times in timings for t in times) for name, timings in rounds.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"spec": spec, "step_seconds": seconds}, indent=1, default=str) + "\n")
    return seconds


def memory_per_sample(runner: Runner, family: str, fields: dict) -> dict:
    """Training memory per image of the `family` model with config `fields`, on a batch of the budget's size
    (a freshly initialised model: the sizes do not depend on the weights). `activation_kib_per_sample`:
    `activation_bytes` / batch; on CUDA also `cuda_peak_kib_per_sample`, the growth of the peak memory of a forward
    + backward pass from batch B/2 to B, per image (`training_memory`)."""
    torch.manual_seed(runner.seed)
    model = autoencoder_classes(family)[1](runner.config(family, **fields)).to(runner.device).train()
    x = as_float_images(runner.train_set.images[: runner.budget.batch_size]).to(runner.device)
    result = {"activation_kib_per_sample": activation_bytes(model, x) / len(x) / 1024}
    if runner.device.type == "cuda" and len(x) >= 2:
        result["cuda_peak_kib_per_sample"] = training_memory(model, x)[1] / 1024
    return result


def add_measures(runner: Runner, group: Group, seconds: float, memory: dict, parameters: int, patch: int) -> dict:
    """Per run of `group`: parameters, calibrated step time and samples/s, samples/s and seconds of the whole
    training run, activation memory per sample, the patch-border error ratio on a `patch` grid, and (a spatial
    latent) the share of the centre latent cell's input-gradient mass outside its 3x3 block of cells. Returns the
    first run's maps for the figures: the error by position within a patch, and the receptive field (or None)."""
    b, maps = runner.budget, {}
    for run in group.runs:
        m = run.metrics
        m.update(parameters=parameters, calibrated_step_ms=1000 * seconds, samples_per_second=b.batch_size / seconds,
                 train_seconds=run.train_seconds,
                 train_samples_per_second=run.train_steps * b.batch_size / max(run.train_seconds, 1e-9), **memory)
        errors = error_map(run.model, runner.test_x, seed=runner.seed + 1)
        if patch >= 3:
            m["patch_border_ratio"] = border_interior_ratio(errors, patch)
        gradient = latent_cell_gradient(run.model, runner.test_x[:ERF_IMAGES])
        if gradient is not None:
            m["erf_outside_share"], m["erf_outside_area"] = outside_share(gradient, run.model.config.latent_grid_size)
        if not maps:
            size = errors.shape[-1]
            maps = {"patch_error": errors.view(size // patch, patch, size // patch, patch).mean((0, 2)),
                    "receptive_field": gradient}
    return maps


# ------------------------------------------------------------------------------------------------------ the report


def label(family: str, backbone: str, comparison: str = "") -> str:
    return f"{display_name(family)} {NAMES[backbone]}" + (f" ({comparison})" if comparison else "")


SPEED = [("ms / step (calibrated)", "calibrated_step_ms"), ("samples/s", "samples_per_second"),
         ("train s", "train_seconds"), ("samples/s (whole run)", "train_samples_per_second"),
         ("parameters", "parameters"), ("activation KiB / sample", "activation_kib_per_sample"),
         ("CUDA peak KiB / sample", "cuda_peak_kib_per_sample")]
QUALITY = [("PSNR (dB)", "psnr"), ("SSIM", "ssim"), ("recon. FD", "reconstruction_fd_domain")]
CODES = [("codebook usage", "codebook_usage"), ("perplexity", "codebook_perplexity")]
SAMPLES = [("sample FD", "sample_fd_domain"), ("sample precision", "sample_precision_domain"),
           ("sample recall", "sample_recall_domain")]


def cell(group: Group, key: str) -> str:
    """mean ± std over the group's seeds; a value that is the same for every seed (a count, a calibrated time)
    alone, integers with thousands separators."""
    values = group.values(key)
    if values and len(set(values)) == 1:
        value = group.first.metrics[key]
        return f"{value:,}" if isinstance(value, int) else fmt(value)
    return fmt_group(group, key)


def table(groups: list[Group], columns: list[tuple[str, str]], width: bool = False) -> str:
    """A markdown table of the (header, metric) columns measured on any of `groups` (`cell`), after each group's
    training steps (and width)."""
    columns = [(h, k) for h, k in columns if any(g.values(k) for g in groups)]
    header = ["model", "steps"] + (["width"] if width else []) + [h for h, _ in columns]
    rows = [[g.label, str(g.first.train_steps)] + ([str(g.config.hidden_size)] if width else [])
            + [cell(g, key) for _, key in columns] for g in groups]
    return markdown_table(header, rows)


def crops_figure(report: Report, originals: torch.Tensor, rows: list[Group], patch: int, n: int = 6) -> str:
    """The central 3x3 patches of the first `n` test images, enlarged: the originals, then each group's
    reconstructions (first seed)."""
    size = originals.shape[-1]
    start = max(0, (size // patch // 2 - 1) * patch)
    window = slice(start, min(size, start + 3 * patch))
    images = [originals[:n]] + [g.first.reconstructions[:n] for g in rows]
    return report.image_rows_figure([x[..., window, window] for x in images], "patch_seam_crops.png", nrow=n,
                                    scale=8)


def sections(runner: Runner, report: Report, timed: dict, matched: dict, targets: dict, maps: dict, n: int,
             shapes: dict) -> dict:
    """The report's sections; returns the parameter counts of `parameter_growth`."""
    x = runner.test_x
    report.section(
        "The backbones",
        "The budget's latent sizes, batch, learning rate and data for every model; the backbones differ as below "
        "(every other config field at its default). Equal wall-clock: each at the width in the first column. "
        "Equal parameters: the MLP and the ViT at the width whose parameter count is closest to the conv's.",
        markdown_table(
            ["backbone", "config (equal wall-clock)"] + [f"width at equal params, {display_name(f)}" for f in FAMILIES],
            [[NAMES[bk], ", ".join(f"{k}={v}" for k, v in shapes[bk].items() if k != "backbone")]
             + [str(matched[f][i].config.hidden_size) for f in FAMILIES] for i, bk in enumerate(BACKBONES)]),
    )
    flat_timed = [g for f in FAMILIES for g in timed[f]]
    flat_matched = [g for f in FAMILIES for g in matched[f]]
    bars = plot_bars(
        [(title, [display_name(f) for f in FAMILIES],
          {NAMES[bk]: ([groups[f][i].mean("psnr") for f in FAMILIES], [groups[f][i].std("psnr") for f in FAMILIES])
           for i, bk in enumerate(BACKBONES)})
         for title, groups in (("equal training wall-clock", timed), ("equal parameter count", matched))],
        report.path("psnr_by_backbone.png"), ylabel="test PSNR (dB)")
    report.section(
        "Equal training wall-clock",
        f"Each backbone trains for as long as the conv model's {n} steps take. The step times were measured first "
        f"(median of {CALIBRATION_ROUNDS} rounds of {TIMED_STEPS} steps after {WARMUP_STEPS}, the models taking turns "
        f"round by round, through the Trainer that trains the runs, on {runner.device.type}); a backbone with "
        "steps t_b times the conv's t_conv trains n t_conv / t_b steps. "
        "*samples/s* is the batch over the calibrated step time, *samples/s (whole run)* and *train s* are over the "
        "whole training run (with the Trainer's start-up), which shows how equal the times came out. *Activation "
        "KiB / sample*: the bytes autograd keeps for the backward pass of a training step, per image (the part of "
        "training memory that grows with the batch; weights, gradients and optimizer state come on top).",
        table(flat_timed, SPEED + QUALITY),
        [("Test PSNR by backbone (mean ± std over seeds)", bars.name)],
    )
    report.section(
        "Equal parameter count",
        "Each other backbone keeps its depth and takes the width (hidden size) whose parameter count is closest to "
        "the conv model's (" + ", ".join(f"{display_name(f)}: {targets[f]:,}" for f in FAMILIES) + " parameters), "
        f"all trained for the budget's {n} steps; the MLPs and ViTs with "
        + ("the first seed only" if MATCHED_SEEDS == 1 else f"the first {MATCHED_SEEDS} seeds")
        + " (on a CPU a ViT as small as the conv model steps about as slowly as a wide one).",
        table(flat_matched, SPEED + QUALITY, width=True),
    )
    report.section(
        "Reconstructions",
        "Rows: test images, then the reconstructions of the MLP, conv and ViT models at equal wall-clock (first "
        "seed).",
        figures=[(f"{display_name(f)}: originals, MLP, conv, ViT", report.image_rows_figure(
            [x[:8]] + [g.first.reconstructions for g in timed[f]], f"{slugify(display_name(f))}_reconstructions.png"))
            for f in FAMILIES],
    )
    vae, vq = FAMILIES[1], FAMILIES[2]
    report.section(
        f"{display_name(vae)} samples",
        "Decoded z ~ N(0, I), one row per backbone (MLP, conv, ViT at equal wall-clock, first seed).",
        table(timed[vae] + matched[vae][::2], SAMPLES),
        [(f"{display_name(vae)} samples: MLP, conv, ViT", report.image_rows_figure(
            [g.first.samples for g in timed[vae]], f"{slugify(display_name(vae))}_samples.png"))],
    )
    report.section(
        f"{display_name(vq)} codebook",
        "How many of the codes each backbone's encoder uses on the test images, and the perplexity of their "
        "histogram (exp of its entropy).",
        table(timed[vq] + matched[vq][::2], CODES + QUALITY[:1]),
    )
    growth = parameter_growth(runner, report, shapes)
    patch = timed[vq][2].config.patch_size
    seam_rows = [g for f in FAMILIES for g in (timed[f][1], timed[f][2])]
    tiles = [maps[g.label]["patch_error"].float()[None] for f in FAMILIES for g in (timed[f][1], timed[f][2])]
    save_image_grid(torch.stack([t / t.max().clamp_min(1e-12) for t in tiles]), report.path("patch_error_maps.png"),
                    nrow=2, padding=1, pad_value=0.5, scale=24)
    report.section(
        "Drawbacks: ViT patch seams",
        f"A ViT un-embeds each token into its own {patch}x{patch} patch of pixels. *Border / interior error*: the "
        "mean squared error on the pixels of each patch's outer ring over that on the patch interiors, measured on "
        "every test image; the conv models, which have no patches, are measured on the same pixels (their ratio is "
        "what the image content alone gives).",
        table([g for f in FAMILIES for g in timed[f][1:]] + [matched[f][2] for f in FAMILIES],
              [("border / interior error", "patch_border_ratio")] + QUALITY[:1]),
        [("The central 3x3 patches of test images: originals, then conv and ViT reconstructions of each family "
          "(AE, VAE, VQ-VAE), enlarged", crops_figure(report, x, seam_rows, patch)),
         ("Mean squared error by position within a patch, conv (left) and ViT (right), one row per family "
          "(brighter: larger; each map scaled to its own largest value; a bright ring is a seam)",
          "patch_error_maps.png")],
    )
    fields = [maps[g.label]["receptive_field"] for g in timed[vq]]
    if all(f is not None for f in fields):
        save_image_grid(torch.stack([(f / f.max().clamp_min(1e-12)).sqrt()[None] for f in fields]),
                        report.path("receptive_fields.png"), nrow=len(fields), scale=4)
        grid = timed[vq][1].config.latent_grid_size
        report.section(
            "Drawbacks: conv locality",
            f"The effective receptive field of the centre cell of each {display_name(vq)}'s {grid}x{grid} latent "
            f"(Luo et al., 2016): |d z_e[:, i, j] / dx| summed over the cell's channels and the input channels, "
            f"averaged over {min(ERF_IMAGES, len(x))} test images. *Outside share*: the share of its mass outside "
            "the 3x3 block of latent cells around the cell; *area outside*: the share of the image there (what an "
            "even spread would give). A conv latent sees a neighbourhood of its cell; an MLP's or a ViT's sees the "
            "whole image.",
            table(timed[vq], [("outside share", "erf_outside_share"), ("area outside", "erf_outside_area")]),
            [(f"Receptive field of the centre latent cell: MLP, conv, ViT ({display_name(vq)}, first seed; the "
              "square root of each map over its largest value)", "receptive_fields.png")],
        )
    report.section("Training curves", figures=[("Training loss at equal wall-clock (first seed)",
                                                report.loss_figure(flat_timed))])
    return growth


def parameter_growth(runner: Runner, report: Report, shapes: dict) -> dict:
    """Parameters of every backbone at the data's image shape and at 64x64x3 (counted, nothing trained), with a
    report section."""
    channels, size = LARGE_IMAGE
    data = f"{runner.data.num_channels}x{runner.data.image_size}x{runner.data.image_size}"
    large = f"{channels}x{size}x{size}"
    growth, rows = {}, []
    for f in FAMILIES:
        for bk in BACKBONES:
            here = parameter_count(runner, f, shapes[bk])
            there = parameter_count(runner, f, {**shapes[bk], "num_channels": channels, "image_size": size})
            growth.setdefault(display_name(f), {})[bk] = {"parameters": here, "parameters_large": there,
                                                          "growth": there / here}
            rows.append([label(f, bk), f"{here:,}", f"{there:,}", f"{there / here:.2f}x"])
    report.section(
        "Drawbacks: MLP parameters",
        f"Parameters of each backbone at the widths above, at this data's image shape ({data}) and at {large} "
        "(counted, not trained). A fully connected layer has a weight per input pixel for each unit: the MLP's "
        "first and last layers grow with the pixel count. The conv backbone's weights do not depend on the image "
        "size (only the AE's and VAE's flatten-to-vector layer does); the ViT's grow with the patch size times the "
        "channels and, for the position embeddings, with the number of patches.",
        markdown_table(["model", f"parameters at {data}", f"at {large}", "growth"], rows),
    )
    return {"image_shapes": [data, large], **growth}


def judge(runner: Runner, report: Report, timed: dict, matched: dict, growth: dict) -> None:
    """The guide's claims about the three layer types, checked."""
    for comparison, groups in (("equal_time", timed), ("equal_params", matched)):
        held = "training wall-clock" if comparison == "equal_time" else "parameter count"
        for f in FAMILIES:
            mlp, conv, vit = groups[f]
            d_mlp = difference(conv.values("psnr"), mlp.values("psnr"), FLOORS["psnr"])
            d_vit = difference(conv.values("psnr"), vit.values("psnr"), FLOORS["psnr"])
            order = sorted(groups[f], key=lambda g: -g.mean("psnr"))
            report.claim(Claim(
                f"conv_best_{comparison}_{slugify(display_name(f))}",
                f"convolutional layers suit images best (the guide): at equal {held} the conv {display_name(f)} "
                "reconstructs better than the MLP and the ViT",
                all_of([d_mlp.verdict(+1), d_vit.verdict(+1)]),
                f"PSNR conv vs MLP {d_mlp.text('dB')}; conv vs ViT {d_vit.text('dB')}; steps "
                + ", ".join(f"{NAMES[bk]} {g.first.train_steps}" for bk, g in zip(BACKBONES, groups[f]))
                + "; order " + " > ".join(f"{NAMES[g.config.backbone]} ({g.mean('psnr'):.2f} dB)" for g in order),
                rule="both differences must be confirmed",
            ))
    data, large = growth["image_shapes"]
    parts, evidence = [], []
    for f in FAMILIES:
        g = growth[display_name(f)]
        for other in ("conv", "vit"):
            parts.append(difference([g["mlp"]["growth"]], [g[other]["growth"]],
                                    relative_floor=FLOORS["relative"]).verdict(+1))
        evidence.append(f"{display_name(f)}: MLP {g['mlp']['parameters']:,} -> {g['mlp']['parameters_large']:,} "
                        f"(x{g['mlp']['growth']:.1f}), conv x{g['conv']['growth']:.2f}, ViT x{g['vit']['growth']:.2f}")
    report.claim(Claim(
        "mlp_parameter_growth",
        f"fully connected layers need very many parameters (the guide's drawback of linear layers): from {data} to "
        f"{large} images the MLP's parameter count grows more than the conv's and the ViT's",
        all_of(parts), "; ".join(evidence),
        rule="counts, not measurements: each growth factor must exceed the other's by more than 5%",
    ))
    vq = timed[FAMILIES[2]]
    mlp, conv, vit = (g.values("erf_outside_share") for g in vq)
    if conv:
        d_mlp, d_vit = difference(conv, mlp, SHARE_FLOOR), difference(conv, vit, SHARE_FLOOR)
        report.claim(Claim(
            "conv_locality",
            f"a conv latent cell sees only a neighbourhood of the image: less of its input-gradient mass lies outside "
            f"the 3x3 block of cells around it than for the MLP and the ViT ({display_name(FAMILIES[2])})",
            all_of([d_mlp.verdict(-1), d_vit.verdict(-1)]),
            f"share outside, conv vs MLP {d_mlp.text(digits=3)}; conv vs ViT {d_vit.text(digits=3)}; the share of "
            f"the area outside is {vq[1].mean('erf_outside_area'):.3f}",
            rule=f"both differences must be confirmed (floor {SHARE_FLOOR} of the mass)",
        ))
    seams, evidence = [], []
    for f in FAMILIES:
        conv, vit = timed[f][1], timed[f][2]
        d = difference(vit.values("patch_border_ratio"), conv.values("patch_border_ratio"),
                       relative_floor=FLOORS["relative"])
        seams.append(d.verdict(+1))
        evidence.append(f"{display_name(f)} ViT vs conv {d.text(digits=3)}")
    if all(timed[f][2].values("patch_border_ratio") for f in FAMILIES):
        report.claim(Claim(
            "vit_patch_seams",
            "ViT reconstructions show patch seams: their error on patch-border pixels over that on patch interiors "
            "is higher than the conv's on the same pixels",
            all_of(seams), "border / interior error ratio at equal wall-clock: " + "; ".join(evidence),
            rule="each family's difference must be confirmed (floor 5% of the larger ratio)",
        ))
    for f in FAMILIES:
        mlp, conv, vit = timed[f]
        report.findings.append(
            f"{display_name(f)} at equal wall-clock ({conv.first.train_steps} conv steps): the ViT trained "
            f"{vit.first.train_steps} steps ({vit.mean('calibrated_step_ms'):.0f} ms each against the conv's "
            f"{conv.mean('calibrated_step_ms'):.0f} ms) and reconstructs at {vit.mean('psnr'):.2f} dB, "
            f"{vit.mean('psnr') - conv.mean('psnr'):+.2f} dB from the conv's {conv.mean('psnr'):.2f}; the MLP trained "
            f"{mlp.first.train_steps} steps ({mlp.mean('psnr'):.2f} dB). Whole-run training time against the conv's: "
            f"MLP x{mlp.mean('train_seconds') / conv.mean('train_seconds'):.2f}, "
            f"ViT x{vit.mean('train_seconds') / conv.mean('train_seconds'):.2f}.")
    memory = {NAMES[g.config.backbone]: g.mean("activation_kib_per_sample") for g in timed[FAMILIES[0]]}
    report.findings.append(
        f"Activation memory per training image ({display_name(FAMILIES[0])}, equal wall-clock widths): "
        + ", ".join(f"{name} {fmt(kib)} KiB" for name, kib in memory.items()) + ".")


def run(runner: Runner, report: Report) -> None:
    b = runner.budget
    n = b.train_steps(len(runner.train_set))
    shapes = {backbone: backbone_fields(b, backbone) for backbone in BACKBONES}
    others = [bk for bk in BACKBONES if bk != REFERENCE]

    # equal parameters: each other backbone's width, counted (nothing trained)
    targets = {f: parameter_count(runner, f, shapes[REFERENCE]) for f in FAMILIES}
    fields = {(f, bk, "time"): shapes[bk] for f in FAMILIES for bk in BACKBONES}
    for f in FAMILIES:
        for bk in others:
            width, _ = matched_width(lambda w, f=f, bk=bk: parameter_count(runner, f, {**shapes[bk], "hidden_size": w}),
                                     targets[f], width_step(shapes[bk]))
            fields[f, bk, "params"] = {**shapes[bk], "hidden_size": width}

    # equal time: every model's step time, then the steps that fit in the conv run's time
    seconds = calibrate(runner, {"/".join(key): (key[0], value) for key, value in fields.items()})
    seconds = {tuple(name.split("/")): t for name, t in seconds.items()}
    steps = {}
    for f in FAMILIES:
        times = {bk: seconds[f, bk, "time"] for bk in BACKBONES}
        fitting = equal_time_steps(times, n * times[REFERENCE])
        steps.update({(f, bk, "time"): fitting[bk] for bk in BACKBONES})
        steps.update({(f, bk, "params"): n for bk in others})

    from tqdm.auto import tqdm

    groups, maps = {}, {}
    seeds = {"time": runner.seeds, "params": runner.seeds[:MATCHED_SEEDS]}
    with tqdm(total=sum(len(seeds[key[2]]) for key in fields), desc="backbones: runs", unit="run",
              disable=not runner.progress) as bar:
        for key, values in fields.items():
            f, bk, comparison = key
            name = label(f, bk, "" if bk == REFERENCE else "equal time" if comparison == "time" else "equal params")
            group = runner.train(name, f, values, steps=steps[key], seeds=seeds[comparison], bar=bar)
            maps[name] = add_measures(runner, group, seconds[key], memory_per_sample(runner, f, values),
                                      parameter_count(runner, f, values), shapes["vit"]["patch_size"])
            groups[key] = group
    timed = {f: [groups[f, bk, "time"] for bk in BACKBONES] for f in FAMILIES}
    matched = {f: [groups[f, bk, "params" if bk != REFERENCE else "time"] for bk in BACKBONES] for f in FAMILIES}

    growth = sections(runner, report, timed, matched, targets, maps, n, shapes)
    judge(runner, report, timed, matched, growth)
    report.summary = {
        "reference_backbone": REFERENCE, "reference_steps": n, "shapes": shapes,
        "calibration": {"warmup_steps": WARMUP_STEPS, "timed_steps": TIMED_STEPS, "rounds": CALIBRATION_ROUNDS,
                        "device": runner.device.type,
                        "step_seconds": {groups[key].label: t for key, t in seconds.items()}},
        "equal_time": {display_name(f): {bk: summary(g, seconds[f, bk, "time"]) for bk, g in zip(BACKBONES, timed[f])}
                       for f in FAMILIES},
        "equal_params": {display_name(f): {bk: {**summary(g), "target_parameters": targets[f]}
                                           for bk, g in zip(BACKBONES, matched[f])} for f in FAMILIES},
        "parameter_growth": growth,
    }


def summary(group: Group, step_seconds: float | None = None) -> dict:
    out = {"steps": group.first.train_steps, "hidden_size": group.config.hidden_size,
           "parameters": group.first.metrics["parameters"], "psnr": group.mean("psnr"), "psnr_std": group.std("psnr"),
           "train_seconds": group.mean("train_seconds")}
    return out if step_seconds is None else {**out, "step_seconds": step_seconds}
