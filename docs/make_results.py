"""Build docs/results.md from the committed experiment results (docs/results/<budget>/<dataset>/<experiment>/
results.json, with each folder's report.md and figures).

    python docs/make_results.py            # rewrites docs/results.md
    python docs/make_results.py --check    # exits 1 if docs/results.md is not what the results give
    python docs/make_results.py --copy_from /work/runs/studies/seed --budget seed   # first copy the results in

`--copy_from ROOT` copies ROOT/<dataset>/<experiment>/{report.md, results.json, *.png} (never the trained runs) into
docs/results/<budget>/<dataset>/<experiment>/ before building the page.

Every number and verdict on the page comes from those results.json files; nothing is typed by hand except the
order of the claims and the guide section each answers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hf_autoencoders.models import autoencoder_classes
from hf_autoencoders.studies.verdicts import FLOORS

DOCS = Path(__file__).resolve().parent
RESULTS = DOCS / "results"

# The claims in the order of the guide (docs/experiments.md names its sections), with the section they come from.
CLAIMS = [
    ("linear_ae_is_pca", "1.1"),
    ("conv_best_equal_time_ae", "1.2"),
    ("conv_best_equal_time_vae", "1.2"),
    ("conv_best_equal_time_vq_vae", "1.2"),
    ("conv_best_equal_params_ae", "1.2"),
    ("conv_best_equal_params_vae", "1.2"),
    ("conv_best_equal_params_vq_vae", "1.2"),
    ("mlp_parameter_growth", "1.2"),
    ("conv_locality", "1.2"),
    ("vit_patch_seams", "1.2"),
    ("ae_vs_vae_reconstruction", "2.4.1"),
    ("latent_size_ae", "2.4.1"),
    ("latent_size_vae", "2.4.1"),
    ("smallest_kl_weight_best", "2.4.1"),
    ("kl_weight_rate", "2.4.1"),
    ("latent_layout_prior", "2.4.2"),
    ("latent_layout_classes", "2.4.2"),
    ("denoising_gain_grows", "2.4.3"),
    ("vae_better_denoiser", "2.4.3"),
    ("vae_samples_beat_ae", "2.4.4"),
    ("vqvae_losses_higher", "3.3.1"),
    ("reconstruction_order", "3.3.2"),
    ("vqvae_sharper_edges", "3.3.2"),
    ("prior_beats_uniform_codes", "3.2.4"),
    ("prior_sampling_wastes_samples", "estimators"),
    ("score_function_variance", "estimators"),
    ("every_quantizer_uses_its_codes", "quantizers"),
    ("every_quantizer_reaches_vq", "quantizers"),
    ("rotation_trick_beats_straight_through", "quantizers"),
    ("simvq_uses_more_codes_than_a_plain_codebook", "quantizers"),
    ("standardized_fsq_beats_the_papers_bound", "quantizers"),
    ("residual_depth4_gains", "quantizers"),
    ("residual_depth_improves", "quantizers"),
    ("perceptual_lowers_reconstruction_fd", "recipe"),
    ("perceptual_costs_psnr", "recipe"),
    ("gan_lowers_reconstruction_fd_further", "recipe"),
    ("late_start_is_safer", "recipe"),
    ("adaptive_weight_is_safer", "recipe"),
]
ORDER = ["linear-pca", "backbones", "compare", "latent-size", "kl-weight", "latent-layout", "denoising", "samples",
         "estimators", "quantizers", "gan-recipe"]
# The figures each experiment's section shows (the rest are in its report.md).
FIGURES = {
    "linear-pca": ["pca_vs_linear_ae.png"],
    "compare": ["edge_crops.png", "ae_reconstructions.png", "vae_reconstructions.png", "vq_vae_reconstructions.png",
                "ae_samples.png", "vae_samples.png", "vq_vae_samples.png"],
    "latent-size": ["latent_size.png", "vae_reconstructions.png"],
    "kl-weight": ["kl_weight.png", "reconstructions.png", "samples.png"],
    "latent-layout": ["ae_d_16_tsne.png", "vae_d_16_tsne.png", "ae_d_2_raw.png", "vae_d_2_raw.png"],
    "denoising": ["denoising.png", "vae_denoising.png"],
    "samples": ["ae_samples.png", "vae_samples.png", "vq_vae_samples.png", "vq_vae_pixelcnn_prior_samples.png"],
    "estimators": ["gradient_variance.png", "log_px_vs_samples.png"],
    "backbones": ["psnr_by_backbone.png", "patch_seam_crops.png", "patch_error_maps.png", "receptive_fields.png"],
    "quantizers": ["code_usage.png", "code_usage_residual.png"],
    "gan-recipe": ["pixel_loss_reconstructions.png", "perceptual_reconstructions.png",
                   "perceptual_gan_adaptive_weight_late_start_reconstructions.png", "gan_curves.png"],
}


def load() -> list[dict]:
    """Every results.json under docs/results, with where it lies."""
    found = []
    for path in sorted(RESULTS.glob("*/*/*/results.json")):
        results = json.loads(path.read_text())
        budget, dataset, name = path.parent.relative_to(RESULTS).parts
        found.append({"path": path.parent, "budget": budget, "dataset": dataset, "name": name, "results": results})
    return sorted(found, key=lambda r: (r["budget"] != "seed", r["budget"], r["dataset"] != "mnist",
                                        ORDER.index(r["name"]) if r["name"] in ORDER else 99))


def where(e: dict) -> str:
    """The data an entry ran on, with its budget where that is not the seed budget."""
    return e["dataset"] if e["budget"] == "seed" else f"{e['dataset']}, {e['budget']} budget"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def minutes(seconds) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f}"


def wall_clock_rows(entries: list[dict]) -> list[str]:
    rows = []
    for e in entries:
        r = e["results"]
        timing = r.get("timing")
        if timing is None:  # the estimator study times itself
            rows.append(f"| {where(e)} | {e['name']} | 2 | - | {minutes(r.get('runtime_seconds'))} | "
                        f"{minutes(r.get('runtime_seconds'))} |")
            continue
        models = timing["runs_trained"] + timing["runs_reused"]
        alone = timing["models_seconds"] + timing["evaluation_seconds"]
        rows.append(f"| {where(e)} | {e['name']} | {models} ({timing['runs_reused']} shared) | "
                    f"{minutes(timing['models_seconds'])} | {minutes(timing['evaluation_seconds'])} | "
                    f"{minutes(alone)} |")
    return rows


def claim_rows(entries: list[dict]) -> list[str]:
    rows = []
    claims = [(e, c) for e in entries for c in e["results"].get("claims", [])]
    rank = {key: i for i, (key, _) in enumerate(CLAIMS)}
    sections = dict(CLAIMS)
    for e, c in sorted(claims, key=lambda ec: (rank.get(ec[1]["key"], 99), ec[0]["dataset"] != "mnist")):
        link = f"results/{e['budget']}/{e['dataset']}/{e['name']}/report.md"
        rows.append(f"| {sections.get(c['key'], '-')} | {c['claim']} | {where(e)} ([{e['name']}]({link})) | "
                    f"**{c['verdict']}** | {c['evidence']} |")
    return rows


VIT_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vit_mlp_ratio", "vit_output_head",
              "vit_conv_channels")


def vit_note(r: dict) -> str:
    """Where a study's ViT runs (at their usual width) used other settings than today's default ViT, say so."""
    used = set()
    for name, group in r.get("groups", {}).items():
        if group.get("config", {}).get("backbone") == "vit" and "equal params" not in name:
            config = autoencoder_classes(group["family"])[0](**group["config"])
            used.add(tuple((k, getattr(config, k)) for k in VIT_FIELDS))
    default = autoencoder_classes("vqvae")[0](backbone="vit")
    current = tuple((k, getattr(default, k)) for k in VIT_FIELDS)
    if not used or used == {current}:
        return ""
    settings = "; ".join(", ".join(f"{k}={v}" for k, v in u) for u in sorted(used))
    return (f"*These ViT runs used {settings}: the default ViT when they ran. The default ViT is "
            f"now {', '.join(f'{k}={v}' for k, v in current)} (docs/models.md). Rerunning the experiment with "
            "`--resume` retrains the ViT runs and every equal-time run, since the step times of all backbones are "
            "calibrated together.*")


def calibration_note(r: dict) -> str:
    """Where a backbones study's equal-time step counts came from one timing per model (before the calibration took
    alternating rounds), say so."""
    calibration = r.get("summary", {}).get("calibration")
    if r.get("experiment") != "backbones" or not calibration or "rounds" in calibration:
        return ""
    return ("*The step times of this study were calibrated once per model, one after another (before 2026-12-02, "
            "when the calibration became rounds in which the models take turns): a busy spell of the machine "
            "during one model's timing changes its equal-time step count. Rerunning it with `--resume` "
            "recalibrates and retrains every equal-time run.*")


def experiment_section(e: dict) -> str:
    r = e["results"]
    folder = f"results/{e['budget']}/{e['dataset']}/{e['name']}"
    title = f"## {e['name']} ({where(e)})"
    question = r.get("question", "")
    claims = "\n".join(f"- **{c['verdict']}**: {c['claim']}. {c['evidence']}." for c in r.get("claims", []))
    findings = "\n".join(f"- {f}" for f in r.get("findings", []))
    report = (e["path"] / "report.md").read_text() if (e["path"] / "report.md").is_file() else ""
    tables = [block for block in report.split("\n\n") if block.startswith("| ")]
    table = tables[0] if tables and e["name"] != "estimators" else ""
    if e["name"] == "samples" and tables:
        table = tables[0]
    shown = [name for name in FIGURES.get(e["name"], []) if (e["path"] / name).is_file()]
    figures = "\n".join(f"![{name}]({folder}/{name})" for name in shown)
    link = f"Full report: [{folder}/report.md]({folder}/report.md)."
    parts = [title, question, vit_note(r), calibration_note(r), claims, findings, table, figures, link]
    return "\n\n".join(p for p in parts if p)


def build() -> str:
    entries = load()
    if not entries:
        raise SystemExit(f"no results under {RESULTS}; copy report.md, results.json and PNGs there first")
    budgets = sorted({e["budget"] for e in entries})
    setups, described = [], set()
    for e in entries:
        r = e["results"]
        if "budget" not in r or (e["budget"], e["dataset"]) in described:
            continue
        b = r["budget"]
        length = f"{b['epochs']:g} epochs" if b.get("max_steps") is None else f"{b['max_steps']} steps"
        if e["budget"] != "seed":  # a cut run: described experiment by experiment
            setups.append(
                f"- **{e['name']}, {e['dataset']}** (`{e['budget']}` budget: the `{b['name']}` models cut to "
                f"{length} of batch {b['batch_size']}, {plural(len(r.get('seeds', [])) or b['num_seeds'], 'seed')}, "
                f"{r['dataset']['test_examples']} test images, priors of {b['prior_steps']} steps): a first "
                "reading, not the seed budget's verdict.")
            continue
        described.add((e["budget"], e["dataset"]))
        setups.append(
            f"- **{e['dataset']}** (`{e['budget']}` budget): `{b['backbone']}` backbone of width "
            f"{b['hidden_size']}, latent d = {b['latent_dim']}, VQ-VAE K = {b['num_embeddings']} codes of "
            f"d = {b['embedding_dim']}; {length} of batch {b['batch_size']} at learning rate "
            f"{b['learning_rate']:g} (samples: {b.get('sample_epochs') or b['epochs']:g} epochs); "
            f"{b['num_seeds']} seeds for compare, samples and linear-pca, one per setting for the sweeps; "
            f"{r['dataset']['test_examples']} test images; Frechet distances from {b['num_samples']} samples.")
    lines = [
        "# Results",
        "The classic questions of the autoencoder guide (`../shared/reference/autoencoders-conceptual-guide.txt`, "
        "sections 1.1, 1.2, 2.4 and 3.3), answered at the budget they were posed for: convolutional models trained for "
        "epochs on MNIST (5, and 25 for samples), and the VQ-VAE questions on CIFAR-10. Every number comes from "
        "the results.json files under [results/](results/) (" + ", ".join(f"`{b}`" for b in budgets) + " budget), "
        "each next to its report.md and figures; this page is built from them by `python docs/make_results.py`. "
        "The earlier MLP results (800 steps) are kept in [results-mlp.md](results-mlp.md)."
        + ("" if budgets == ["seed"] else " Experiments not yet run at the seed budget appear from cut runs, each "
           "marked with its budget wherever it appears: read their verdicts as a first reading."),
        "**Setup.**\n\n" + "\n".join(setups),
        "**Verdicts.** Each claim is *confirmed*, *contradicted* or *within noise*: the difference of the means over "
        "seeds is judged against max(2 SE, floor), SE = sqrt(s_a^2/n_a + s_b^2/n_b) from the seed-to-seed spread. "
        "For a single run (the sweeps train one seed per setting) the floor stands for that spread: about twice the "
        "seed-to-seed standard deviation `compare` measured (" + ", ".join(f"{k} {v:g}" for k, v in FLOORS.items())
        + "; `relative`: a fraction of the larger value, used for Frechet distances; see "
        "`hf_autoencoders/studies/verdicts.py`). Each claim's own rule is in its report. Sample quality is judged by "
        "the Frechet distance (FD) on domain features (a classifier trained on the dataset), not by classifier "
        "confidence.",
        "## Claims",
        "| guide | claim | data (experiment) | verdict | numbers |\n|---|---|---|---|---|\n"
        + "\n".join(claim_rows(entries)),
        "## Wall clock",
        "Measured on the 2-core CPU machine these docs were written on, one experiment at a time, one torch thread "
        "(`OMP_NUM_THREADS=1`), beside other jobs. *Models*: how many the experiment evaluates, of which shared "
        "with another experiment through `--runs_dir` (trained once). *Alone*: what the experiment costs run on its "
        "own, its models' training time plus its evaluation time.",
        "| data | experiment | models | training (min) | evaluation (min) | alone (min) |\n|---|---|---|---|---|---|\n"
        + "\n".join(wall_clock_rows(entries)),
        "## Reproduce",
        "```bash\nexport OMP_NUM_THREADS=1\nfor data in mnist cifar10; do\n"
        "  names=\"linear-pca backbones compare latent-size kl-weight latent-layout denoising samples estimators\"\n"
        "  [ $data = cifar10 ] && names=\"backbones compare samples quantizers gan-recipe\"\n"
        "  for name in $names; do\n"
        "    hf-autoencoders experiment $name --budget seed --dataset_name ../shared/data/$data \\\n"
        "      --output_dir runs/seed/$data/$name --runs_dir runs/seed/$data/runs --resume\n"
        "  done\ndone\n```\n\n"
        "`--resume` makes an interrupted experiment continue from its finished runs; `--runs_dir` lets experiments "
        "share identical runs (the compare models are the latent-size d = 16 ones, and so on). With a GPU the "
        "experiments run on it.",
    ]
    lines += [experiment_section(e) for e in entries]
    return "\n\n".join(lines) + "\n"


def copy_results(root: Path, budget: str) -> None:
    """Copy each finished experiment's report, results and figures from `root` into docs/results/<budget>/."""
    import shutil

    for results in sorted(Path(root).glob("*/*/results.json")):
        source = results.parent
        target = RESULTS / budget / source.parent.name / source.name
        target.mkdir(parents=True, exist_ok=True)
        for path in [source / "report.md", results, *sorted(source.glob("*.png"))]:
            if path.is_file():
                shutil.copy2(path, target / path.name)
        print(f"copied {source} -> {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Only check that docs/results.md is up to date.")
    parser.add_argument("--copy_from", type=Path, default=None,
                        help="A folder of experiment outputs, <dataset>/<experiment>/, to copy in first.")
    parser.add_argument("--budget", default="seed", help="The budget the copied results ran with.")
    args = parser.parse_args()
    if args.copy_from is not None:
        copy_results(args.copy_from, args.budget)
    text = build()
    target = DOCS / "results.md"
    if args.check:
        sys.exit(0 if target.is_file() and target.read_text() == text else 1)
    target.write_text(text)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
