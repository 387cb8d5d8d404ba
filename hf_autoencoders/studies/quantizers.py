"""The quantizers experiment (`hf-autoencoders experiment quantizers`): VQ with the straight-through gradient, VQ
with the rotation trick, SimVQ, LFQ and FSQ at matched bits per code, and residual VQ at depths 1, 2 and 4, on the
same data, backbone and budget over several seeds: reconstruction (PSNR, SSIM, reconstruction FD), codebook health
over the whole test set (usage, dead codes, perplexity, per depth), and the bits per image a transformer prior needs
for the codes.

Every quantizer has K = 2^`quantizer_bits` codes (12 bits, K = 4096, at the `mlp` and `seed` budgets; FSQ's levels
multiply to K, LFQ has log2 K channels); residual VQ has K codes at each depth, so depth n spends n times the bits.
The VQ arms use the library's codebook defaults (EMA, k-means initialisation, dead-code restarts); a plain codebook
(the paper's, trained by the codebook loss from a random start) is the collapse reference SimVQ is judged against.
Likewise FSQ is the library's (channels standardised before the bound, `fsq_input_std`), with the paper's FSQ beside
it as a reference. An autoencoder with the same encoder and decoder and no quantizer (its latent map of the VQ-VAE's
z_e shape) gives the PSNR this budget reaches without quantization, to tell what the bits cost from what training
does.
"""

from __future__ import annotations

import math

import torch

from ..evaluation.loop import code_histogram
from ..plots import plot_code_usage
from .report import Report, fmt_spread, markdown_table
from .runner import Group, Runner
from .verdicts import CONFIRMED, CONTRADICTED, FLOORS, WITHIN_NOISE, Claim, all_of, difference

TITLE = "Experiment: quantizers and codebook health"
QUESTION = (
    "At the same bits per code, data, backbone and budget, how do VQ with the straight-through gradient, VQ with the "
    "rotation trick, SimVQ, LFQ and FSQ compare in reconstruction, in how much of their codebook they use over the "
    "whole test set, and in how many bits a prior needs for their codes; and what does residual VQ buy at depths 2 "
    "and 4?"
)
REPLICATED = True  # trained over the budget's seeds
USAGE_TARGET = 0.9  # the fraction of its codes every quantizer should use over the test set
USAGE_FLOOR = 0.01  # the smallest difference in usage read as real for one run: 1% of the codes
DEPTH_GAIN_DB = 1.5  # what residual VQ at depth 4 should gain over depth 1
VQ, ROTATION, SIMVQ, LFQ, FSQ, PLAIN = ("VQ", "VQ + rotation trick", "SimVQ", "LFQ", "FSQ", "VQ, plain codebook")
FSQ_PAPER = "FSQ, paper's bound"  # fsq_input_std=None: the bound applied to the projection as it is
FSQ_FINE = "FSQ, 16 levels per channel"  # the same bits in fewer, finer channels
UNQUANTIZED = "no quantizer (AE)"
# SimVQ as its authors' code trains it: their loss (taming's `legacy` form) weights the encoder's commitment 1.0 and
# the codebook term beta; and the same with the lookup in 8 dimensions (factorized codes)
SIMVQ_COMMIT, SIMVQ_LOW = "SimVQ, commitment 1.0", "SimVQ, commitment 1.0, 8-d lookup"
DEPTH2, DEPTH4 = "residual VQ, depth 2", "residual VQ, depth 4"
MATCHED = [VQ, ROTATION, SIMVQ, LFQ, FSQ]  # K codes each: the comparison at matched bits
QUANTIZERS = MATCHED + [DEPTH2, DEPTH4]  # the quantizers the usage target is for (not the collapse reference)
FIDELITY = ["psnr", "ssim", "reconstruction_fd_domain"]
HEALTH = ["codebook_usage", "codebook_dead_codes", "codebook_perplexity"]
PRIOR = ["prior_bits_per_image", "prior_bits_per_code", "uniform_bits_per_image"]


def fsq_levels(bits: int, channel_bits: int = 3) -> tuple[int, ...]:
    """FSQ levels whose grid holds exactly 2^bits codes: 2^channel_bits levels per channel (8 by default), the rest
    in one channel."""
    rest = bits % channel_bits
    return (2**channel_bits,) * (bits // channel_bits) + ((2**rest,) if rest else ())


def arms(bits: int) -> dict[str, dict]:
    """The VQ-VAE config fields of each quantizer at `bits` bits per code (K = 2^bits). Residual VQ at depth 1 is
    the "VQ" arm itself (the same config, so the same trained runs)."""
    k = 2**bits
    return {
        VQ: {"num_embeddings": k},
        ROTATION: {"num_embeddings": k, "rotation_trick": True},
        SIMVQ: {"quantizer": "simvq", "num_embeddings": k},
        LFQ: {"quantizer": "lfq", "num_embeddings": k},
        FSQ: {"quantizer": "fsq", "fsq_levels": fsq_levels(bits)},
        PLAIN: {"num_embeddings": k, "codebook_ema": False, "kmeans_init": False, "dead_code_threshold": 0},
        FSQ_PAPER: {"quantizer": "fsq", "fsq_levels": fsq_levels(bits), "fsq_input_std": None},
        FSQ_FINE: {"quantizer": "fsq", "fsq_levels": fsq_levels(bits, channel_bits=4)},
        SIMVQ_COMMIT: {"quantizer": "simvq", "num_embeddings": k, "commitment_cost": 1.0},
        SIMVQ_LOW: {"quantizer": "simvq", "num_embeddings": k, "commitment_cost": 1.0, "codebook_dim": 8},
        DEPTH2: {"num_embeddings": k, "num_quantizers": 2},
        DEPTH4: {"num_embeddings": k, "num_quantizers": 4},
    }


@torch.no_grad()
def test_histogram(runner: Runner, group: Group) -> torch.Tensor:
    """The (depth, K) code counts of the first seed's model over the test images."""
    model = group.first.model
    counts = [code_histogram(model.encode_indices(runner.test_x[start:start + 500].to(model.device)),
                             model.config.num_embeddings, model.config.num_quantizers).cpu()
              for start in range(0, len(runner.test_x), 500)]
    return torch.stack(counts).sum(0)


def run(runner: Runner, report: Report) -> None:
    bits = runner.budget.quantizer_bits
    settings = arms(bits)
    specs = [(label, "vqvae", fields) for label, fields in settings.items()]
    vq_config = runner.config("vqvae")
    channels, side = vq_config.embedding_dim, vq_config.latent_grid_size
    specs.append((UNQUANTIZED, "ae", {"latent_channels": channels, "latent_dim": channels * side**2}))
    groups = dict(zip([spec[0] for spec in specs], runner.train_all(specs)))
    unquantized = groups.pop(UNQUANTIZED)
    priors = {}
    for label, group in groups.items():
        for vq_run in group.runs:
            _, stats = runner.train_transformer_prior(vq_run)
            vq_run.metrics.update({k: v for k, v in stats.items() if not isinstance(v, (dict, list))})
            priors.setdefault(label, []).append(stats)
        depth = group.config.num_quantizers
        for run_ in group.runs:
            run_.metrics["bits_per_position"] = depth * bits
    ordered = [groups[label] for label in settings]
    matched = [groups[label] for label in MATCHED + [PLAIN, FSQ_PAPER, FSQ_FINE, SIMVQ_COMMIT, SIMVQ_LOW]]
    depths = [groups[VQ], groups[DEPTH2], groups[DEPTH4]]
    k = 2**bits

    report.section(
        "Reconstruction at matched bits",
        f"Each quantizer codes a position of the {groups[VQ].config.latent_grid_size}x"
        f"{groups[VQ].config.latent_grid_size} map with {bits} bits: VQ, SimVQ and LFQ with K = {k} codes, FSQ with "
        f"levels {fsq_levels(bits)}. *VQ* is the library's default codebook (EMA, k-means initialisation, dead-code "
        "restarts) with the straight-through gradient; *VQ + rotation trick* the same codebook with the gradient of "
        "Fifty et al. (2024); *SimVQ* and *LFQ* start from the first training batch as the VQ codebook does (their "
        "`kmeans_init`: SimVQ's codes take the batch's moments, LFQ's bits are centred); *FSQ* standardises each "
        f"projected channel to standard deviation {groups[FSQ].config.fsq_input_std} before the bound "
        "(`fsq_input_std`); the references are *VQ, "
        "plain codebook*, the paper's codebook trained by the codebook loss from a random start (the collapse "
        f"reference), and *FSQ, paper's bound*, the bound applied to the projection as it is; *{FSQ_FINE}* spends "
        f"the same bits on levels {fsq_levels(bits, channel_bits=4)}; *{SIMVQ_COMMIT}* weights SimVQ's loss as its "
        f"authors' code does (commitment 1.0), and *{SIMVQ_LOW}* also looks codes up in 8 dimensions.",
        report.table(matched, FIDELITY + HEALTH, first="quantizer"),
        [("Training loss of each quantizer (first seed)", report.loss_figure(matched, name="loss_matched.png"))],
    )
    figure = "code_usage.png"
    plot_code_usage({g.label: test_histogram(runner, g) for g in matched}, report.path(figure),
                    title="codebook usage over the test set (first seed)")
    usage_rows = []
    for group in ordered:
        depth = group.config.num_quantizers
        per_depth = [fmt_spread(group.mean(f"codebook_usage_depth{d}"), group.std(f"codebook_usage_depth{d}"))
                     for d in range(1, depth + 1)] if depth > 1 else []
        usage_rows.append([group.label, fmt_spread(group.mean("codebook_usage"), group.std("codebook_usage")),
                           f"{group.mean('codebook_dead_codes'):.0f}", ", ".join(per_depth) or "-"])
    report.section(
        "Codebook health over the whole test set",
        f"Usage is the fraction of the codes that occur at least once in the code maps of all {len(runner.test_x)} "
        "test images (never a batch's); dead codes never occur; for residual VQ, usage over the n K codewords and "
        "per depth. The picture sorts each quantizer's codes by how often they occur (first seed): a line that "
        f"stops short of {k} has dead codes, a flat line is even use.",
        markdown_table(["quantizer", "usage", "dead codes", "usage per depth"], usage_rows),
        [("Codes sorted by use, over the test set (first seed)", figure)],
    )
    depth_figure = "code_usage_residual.png"
    plot_code_usage({g.label: test_histogram(runner, g) for g in depths[1:]}, report.path(depth_figure),
                    title="residual VQ: codebook usage per depth (first seed)")
    report.section(
        "Residual VQ at depths 1, 2 and 4",
        f"Depth n quantizes what the depths before it left, each with its own codebook of K = {k} codes, so a "
        f"position costs {bits} n bits (depth 1 is the *VQ* model above).",
        report.table(depths, ["bits_per_position"] + FIDELITY + HEALTH, first="model",
                     labels=["residual VQ, depth 1 (VQ)", DEPTH2, DEPTH4]),
        [("Codes sorted by use at each depth (first seed)", depth_figure)],
    )
    report.section(
        "How many bits a prior needs for the codes",
        "A transformer prior (GPT-2 over the code tokens, residual codes depth-first within each position; "
        f"{runner.budget.prior_layers} blocks of width {runner.budget.prior_hidden_size}, {runner.budget.prior_steps} "
        "steps, batches of batch_size / n code maps so every depth sees as many codes per step) trained on each "
        "model's codes of the training images, scored on the test images: its NLL in bits per image (the whole code "
        "map), against the bits of uniform codes. Fewer bits for the same reconstruction is a code that is easier "
        "to generate.",
        report.table(ordered, PRIOR + ["psnr"], first="model"),
    )
    judge(report, groups, bits)
    ceiling = unquantized.mean("psnr")
    report.findings.append(
        f"Without a quantizer, the same encoder and decoder (an autoencoder with a {unquantized.config.latent_channels}"
        f"x{side}x{side} latent map) reach {ceiling:.2f} dB at this budget, {ceiling - groups[VQ].mean('psnr'):+.2f} "
        "dB from VQ: where that gap is small, training, not the bits of the code, bounds the reconstruction, and "
        "residual depth has little to add (depth 4: "
        f"{groups[DEPTH4].mean('psnr') - groups[VQ].mean('psnr'):+.2f} dB); a quantizer above it (FSQ: "
        f"{groups[FSQ].mean('psnr') - ceiling:+.2f} dB) trains its encoder and decoder better than the plain "
        "bottleneck does.")
    report.findings.append(
        f"FSQ with the same {bits} bits in fewer, finer channels (levels {fsq_levels(bits, channel_bits=4)}) uses "
        f"{groups[FSQ_FINE].mean('codebook_usage'):.1%} of its grid over the test set at "
        f"{groups[FSQ_FINE].mean('psnr'):.2f} dB, against {groups[FSQ].mean('codebook_usage'):.1%} at "
        f"{groups[FSQ].mean('psnr'):.2f} dB with levels {fsq_levels(bits)}.")
    gains = {label: groups[label].mean("psnr") - groups[VQ].mean("psnr") for label in MATCHED[1:]}
    usage = {label: groups[label].mean("codebook_usage") for label in QUANTIZERS}
    report.summary = {
        "quantizer_bits": bits, "num_embeddings": k, "fsq_levels": list(fsq_levels(bits)),
        "min_test_usage": min(usage.values()), "test_usage": usage,
        "min_psnr_gain_over_vq_db": min(gains.values()), "psnr_gain_over_vq_db": gains,
        "rvq_depth2_gain_db": groups[DEPTH2].mean("psnr") - groups[VQ].mean("psnr"),
        "rvq_depth4_gain_db": groups[DEPTH4].mean("psnr") - groups[VQ].mean("psnr"),
        "unquantized_psnr": ceiling, "unquantized_gain_over_vq_db": ceiling - groups[VQ].mean("psnr"),
        "prior_bits_per_image": {label: groups[label].mean("prior_bits_per_image") for label in settings},
        "priors": {label: [{k_: v for k_, v in s.items() if k_ != "prior_loss_curve"} for s in stats]
                   for label, stats in priors.items()},
    }


def judge(report: Report, groups: dict[str, Group], bits: int) -> None:
    """The verdicts on the targets of the issue and the published claims."""
    usage = {label: difference(groups[label].values("codebook_usage"), [USAGE_TARGET], USAGE_FLOOR)
             for label in QUANTIZERS}
    report.claim(Claim(
        "every_quantizer_uses_its_codes",
        f"every quantizer uses at least {USAGE_TARGET:.0%} of its codes over the test set",
        all_of([d.verdict(+1) for d in usage.values()]),
        "usage minus the target: " + "; ".join(f"{label} {d.text()}" for label, d in usage.items()),
        rule=f"each usage minus {USAGE_TARGET} against max(2 SE, {USAGE_FLOOR}); all must be confirmed",
    ))
    psnr = {label: difference(groups[label].values("psnr"), groups[VQ].values("psnr"), FLOORS["psnr"])
            for label in MATCHED[1:]}
    verdicts = [d.verdict(+1) for d in psnr.values()]
    report.claim(Claim(
        "every_quantizer_reaches_vq",
        "every quantizer reconstructs at least as well as VQ with the straight-through gradient, at the same bits",
        CONTRADICTED if CONTRADICTED in verdicts else CONFIRMED if all(v == CONFIRMED for v in verdicts)
        else WITHIN_NOISE,
        "PSNR minus VQ's: " + "; ".join(f"{label} {d.text('dB')}" for label, d in psnr.items()),
        rule="each PSNR minus VQ's against max(2 SE, 0.3 dB): contradicted if any is lower beyond it, confirmed if "
             "all are higher beyond it, otherwise within noise",
    ))
    fd = "reconstruction_fd_domain"
    rotation = [difference(groups[ROTATION].values("psnr"), groups[VQ].values("psnr"), FLOORS["psnr"]).verdict(+1)]
    rotation_fd = difference(groups[ROTATION].values(fd), groups[VQ].values(fd), relative_floor=FLOORS["relative"])
    if groups[VQ].values(fd):
        rotation.append(rotation_fd.verdict(-1))
    report.claim(Claim(
        "rotation_trick_beats_straight_through",
        "the rotation trick reconstructs better than the straight-through gradient (Fifty et al., 2024)",
        all_of(rotation),
        f"PSNR {psnr[ROTATION].text('dB')}" + (f"; reconstruction FD {rotation_fd.text()}"
                                                if groups[VQ].values(fd) else ""),
        rule="higher PSNR and lower reconstruction FD, each beyond max(2 SE, its floor)",
    ))
    standardized = [difference(groups[FSQ].values(metric), groups[FSQ_PAPER].values(metric), floor)
                    for metric, floor in (("codebook_usage", USAGE_FLOOR), ("psnr", FLOORS["psnr"]))]
    report.claim(Claim(
        "standardized_fsq_beats_the_papers_bound",
        "standardising FSQ's channels before the bound (this library's default) uses more of the grid and "
        "reconstructs better than the paper's FSQ",
        all_of([d.verdict(+1) for d in standardized]),
        f"test usage {standardized[0].text()}; PSNR {standardized[1].text('dB')}",
        rule=f"usage (floor {USAGE_FLOOR}) and PSNR (floor 0.3 dB) both higher beyond max(2 SE, floor)",
    ))
    simvq = difference(groups[SIMVQ].values("codebook_usage"), groups[PLAIN].values("codebook_usage"), USAGE_FLOOR)
    report.claim(Claim(
        "simvq_uses_more_codes_than_a_plain_codebook",
        "SimVQ uses more of its codebook than a plain VQ codebook, which collapses (Zhu et al., 2024)",
        simvq.verdict(+1),
        f"test usage SimVQ vs plain codebook {simvq.text()}",
        rule=f"the difference in usage against max(2 SE, {USAGE_FLOOR})",
    ))
    target = [v + DEPTH_GAIN_DB for v in groups[VQ].values("psnr")]
    deep = difference(groups[DEPTH4].values("psnr"), target, FLOORS["psnr"])
    report.claim(Claim(
        "residual_depth4_gains",
        f"residual VQ at depth 4 reconstructs at least {DEPTH_GAIN_DB} dB better than at depth 1",
        deep.verdict(+1),
        f"PSNR depth 4 vs depth 1 + {DEPTH_GAIN_DB} dB: {deep.text('dB')}",
        rule=f"depth 4's PSNR minus (depth 1's + {DEPTH_GAIN_DB} dB) against max(2 SE, 0.3 dB)",
    ))
    steps = [difference(groups[b].values("psnr"), groups[a].values("psnr"), FLOORS["psnr"])
             for a, b in ((VQ, DEPTH2), (DEPTH2, DEPTH4))]
    report.claim(Claim(
        "residual_depth_improves",
        "each doubling of the depth of residual VQ improves reconstruction",
        all_of([d.verdict(+1) for d in steps]),
        f"PSNR depth 2 vs 1 {steps[0].text('dB')}; depth 4 vs 2 {steps[1].text('dB')}",
        rule="both differences must be confirmed",
    ))
    prior_bits = sorted((groups[label].mean("prior_bits_per_image"), label) for label in MATCHED)
    if all(math.isfinite(value) for value, _ in prior_bits):
        report.findings.append(
            f"At {bits} bits per code ({groups[VQ].mean('uniform_bits_per_image'):.0f} bits per image for uniform "
            "codes), the transformer prior needs " + ", ".join(f"{value:.0f} bits per image for {label}"
                                                               for value, label in prior_bits) + ".")
    report.findings.append(
        "SimVQ's usage depends on the weight of the commitment term, which pulls the encoder onto the fixed cloud of "
        "codes, and on the lookup's dimension: " + "; ".join(
            f"{label} {groups[label].mean('codebook_usage'):.1%} at {groups[label].mean('psnr'):.2f} dB"
            for label in (SIMVQ, SIMVQ_COMMIT, SIMVQ_LOW)) + f" (VQ {groups[VQ].mean('psnr'):.2f} dB).")
    plain = groups[PLAIN]
    report.findings.append(
        f"The plain codebook uses {plain.mean('codebook_usage'):.1%} of its {2**bits} codes over the test set "
        f"({plain.mean('codebook_dead_codes'):.0f} dead) and reaches {plain.mean('psnr'):.2f} dB; the library's "
        f"default VQ codebook (EMA, k-means, restarts) uses {groups[VQ].mean('codebook_usage'):.1%} at "
        f"{groups[VQ].mean('psnr'):.2f} dB.")
