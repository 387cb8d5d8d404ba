"""Every experiment end to end with a tiny budget (the quick budget's code paths), on the embedded digits and on
MNIST and CIFAR-10 subsets; resuming an interrupted experiment; the verdict rules; the command line."""

import json
import math
import re
from pathlib import Path

import pytest
import torch

from hf_autoencoders.cli import cmd_experiment
from hf_autoencoders.cli import main as cli_main
from hf_autoencoders.studies import EXPERIMENTS, budgets, run_experiment
from hf_autoencoders.studies import runner as runner_module
from hf_autoencoders.studies.verdicts import (
    CONFIRMED,
    CONTRADICTED,
    NOT_MEASURED,
    WITHIN_NOISE,
    all_of,
    difference,
    within_margin,
)

VERDICTS = {CONFIRMED, CONTRADICTED, WITHIN_NOISE, NOT_MEASURED}


def main(argv):
    """`hf-autoencoders experiment ARGV` as the command runs it (user errors end in SystemExit)."""
    return cli_main(["experiment", *argv])


# Tiny models, a few steps and few test images: each experiment takes seconds. Two seeds, so that the replicated
# experiments (compare, samples, linear-pca) exercise means, spreads and verdicts over seeds.
TINY = dict(
    max_steps=5, batch_size=32, hidden_size=32, num_hidden_layers=1, latent_dim=4, num_embeddings=16, embedding_dim=4,
    max_train_examples=300, max_test_examples=64, iwae_samples=4, iwae_examples=32, probe_examples=200,
    classifier_examples=300, classifier_epochs=1, classifier_width=8, num_samples=32, tsne_points=64, prior_steps=5,
    prior_hidden_size=16, prior_layers=2, latent_sizes=(8, 2), kl_weights=(1.0, 0.001), noise_levels=(0.25, 0.5),
    num_seeds=2, quantizer_bits=4,
)


def numbers(value, where="results"):
    """Every number in a JSON value, with where it sits."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from numbers(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from numbers(item, f"{where}[{i}]")


def check_outputs(folder: Path, results: dict) -> dict:
    written = json.loads((folder / "results.json").read_text())
    assert written["experiment"] == results["experiment"]
    bad = [(where, v) for where, v in numbers(written) if not math.isfinite(v)]
    assert not bad, f"non-finite numbers: {bad[:5]}"
    assert written["claims"], "an experiment checks at least one claim"
    for claim in written["claims"]:
        assert claim["verdict"] in VERDICTS and claim["claim"] and claim["evidence"] and claim["rule"]
    report = (folder / "report.md").read_text()
    sections = re.split(r"^## ", report, flags=re.M)[1:]
    assert sections, "report.md has no sections"
    for section in sections[1:]:  # the first is "What the numbers show"
        title = section.splitlines()[0]
        for name in re.findall(r"\]\(([^)]+\.png)\)", section):
            assert (folder / name).is_file(), f"section {title!r} refers to a missing {name}"
    assert "What the numbers show" in report and "**Verdicts.**" in report
    for name in written["figures"]:
        assert (folder / name).stat().st_size > 0
    timing = written["timing"]
    assert timing["runs_trained"] + timing["runs_reused"] >= 1 and timing["wall_clock_seconds"] > 0
    return written


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Runs an experiment once per test module (tiny budget) and returns (folder, results)."""
    done = {}

    def run(name):
        if name not in done:
            folder = tmp_path_factory.mktemp("studies") / name
            done[name] = folder, run_experiment(name, folder, budget="quick", progress=False, **TINY)
        return done[name]

    return run


# backbones: its equal-wall-clock runs train for different numbers of steps; tests/test_backbones_experiment.py
@pytest.mark.parametrize("name", [n for n in EXPERIMENTS if n not in ("estimators", "backbones")])
def test_experiment_runs_end_to_end(study, name):
    folder, results = study(name)
    written = check_outputs(folder, results)
    groups = written["groups"]
    assert groups
    replicated = runner_module_of(name).REPLICATED
    for label, group in groups.items():
        assert len(group["runs"]) == (2 if replicated else 1), label
        for run in group["runs"]:
            metrics = run["metrics"]
            if "kl_loss" in metrics:
                assert metrics["kl_loss"] > 0, f"{label}: KL must be positive"
            if "psnr" in metrics:
                assert 0 < metrics["ssim"] <= 1 and metrics["psnr"] > 0 and metrics["mse"] > 0
                assert metrics["edge_sharpness"] > 0
            if "downstream_accuracy" in metrics:
                assert 0 <= metrics["downstream_accuracy"] <= 1 and 0 <= metrics["linear_probe_accuracy"] <= 1
        if replicated and "psnr" in group["mean"]:
            values = [r["metrics"]["psnr"] for r in group["runs"]]
            assert group["mean"]["psnr"] == pytest.approx(sum(values) / 2)
            assert group["std"]["psnr"] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))
    assert written["budget"]["max_steps"] == 5 and written["seeds"] == ([0, 1] if replicated else [0])
    assert all(r["train_steps"] == 5 for g in groups.values() for r in g["runs"] if "psnr" in r["metrics"])


def runner_module_of(name):
    from hf_autoencoders.studies import experiment_module

    return experiment_module(name)


def test_experiment_specific_contents(study):
    _, results = study("kl-weight")
    configs = {label: group["config"] for label, group in results["groups"].items()}
    assert configs["w=0.001"]["gaussian_variance"] == pytest.approx(0.0005)  # c = w / 2
    assert configs["w=1"]["gaussian_variance"] == pytest.approx(0.5)

    _, results = study("denoising")
    clean, noisy = results["summary"]["AE"]["0"], results["summary"]["AE"]["0.5"]
    assert clean["clean_trained_psnr"] == pytest.approx(clean["psnr"])  # the s = 0 model is the clean-trained one
    assert clean["denoising_gain_db"] == pytest.approx(0)
    assert noisy["input_psnr"] > 10 * math.log10(1 / 0.5**2)  # clamping to [0, 1] only removes error
    assert noisy["relative_psnr"] == pytest.approx(noisy["psnr"] / clean["psnr"])
    assert results["groups"]["VAE noise=0.5"]["config"]["noise_std"] == 0.5
    assert {c["key"] for c in results["claims"]} == {"denoising_gain_grows", "vae_better_denoiser"}

    _, results = study("samples")
    prior = results["groups"]["VQ-VAE + PixelCNN prior"]
    assert len(prior["runs"]) == 2 and len(results["summary"]["priors"]) == 2
    assert prior["runs"][0]["metrics"]["uniform_bits_per_code"] == pytest.approx(math.log2(16))

    _, results = study("compare")
    vq = results["groups"]["VQ-VAE"]["runs"][0]["metrics"]
    assert vq["code_bits"] == pytest.approx(49 * 4)  # a 7x7 map of codes from K = 16
    vae = results["groups"]["VAE"]["runs"][0]["metrics"]
    assert vae["rate_bits"] == pytest.approx(vae["kl_loss"] / math.log(2))
    ae = results["groups"]["AE"]["runs"][0]["metrics"]
    assert ae["objective_sse_units"] == pytest.approx(ae["loss"])  # an AE's loss is its SSE (c = 0.5)
    k = results["summary"]["vq_at_vae_rate_num_embeddings"]
    assert k >= 2 and (k == 16 or f"VQ-VAE K={k}" in results["groups"])
    assert "edge_crops.png" in results["figures"]

    _, results = study("linear-pca")
    run = results["groups"]["linear AE d=4"]["runs"][0]["metrics"]
    assert 0 <= run["subspace_overlap"] <= 1 + 1e-6 and run["mse_over_pca"] > 0.99  # PCA's error is the floor


def test_quantizers_experiment_contents(study):
    """Matched bits for every quantizer, residual VQ spending n times them, codebook health per depth over the test
    set, a transformer prior's bits per image for every run, and the issue's figures in the summary."""
    folder, results = study("quantizers")
    groups = results["groups"]
    assert set(groups) == {"VQ", "VQ + rotation trick", "SimVQ", "LFQ", "FSQ", "VQ, plain codebook",
                           "FSQ, paper's bound", "FSQ, 16 levels per channel", "residual VQ, depth 2",
                           "residual VQ, depth 4", "no quantizer (AE)", "SimVQ, commitment 1.0",
                           "SimVQ, commitment 1.0, 8-d lookup"}
    assert groups["SimVQ, commitment 1.0, 8-d lookup"]["config"]["codebook_dim"] == 8
    assert groups["FSQ"]["config"]["fsq_input_std"] == 0.8
    assert "fsq_input_std" not in groups["FSQ, paper's bound"]["config"]
    ceiling = groups["no quantizer (AE)"]
    assert ceiling["config"]["latent_channels"] == groups["VQ"]["config"]["embedding_dim"]
    assert groups["FSQ"]["config"]["num_embeddings"] == groups["LFQ"]["config"]["num_embeddings"] == 16
    assert groups["VQ + rotation trick"]["config"]["rotation_trick"] is True
    deep = groups["residual VQ, depth 4"]["runs"][0]["metrics"]
    assert deep["bits_per_position"] == 16 and 0 <= deep["codebook_usage_depth4"] <= 1
    assert deep["uniform_bits_per_image"] == pytest.approx(49 * 4 * 4)  # 7x7 positions, 4 depths, 4 bits
    for label, group in groups.items():
        if label == "no quantizer (AE)":
            continue
        for run in group["runs"]:
            m = run["metrics"]
            assert 0 < m["prior_bits_per_image"] and 0 <= m["codebook_usage"] <= 1, label
            assert m["codebook_dead_codes"] == round((1 - m["codebook_usage"]) * 16 * m["bits_per_position"] / 4)
    summary = results["summary"]
    assert summary["min_test_usage"] == min(summary["test_usage"].values())
    assert summary["rvq_depth4_gain_db"] == pytest.approx(groups["residual VQ, depth 4"]["mean"]["psnr"]
                                                          - groups["VQ"]["mean"]["psnr"])
    assert summary["min_psnr_gain_over_vq_db"] == pytest.approx(min(summary["psnr_gain_over_vq_db"].values()))
    assert summary["unquantized_gain_over_vq_db"] == pytest.approx(ceiling["mean"]["psnr"]
                                                                   - groups["VQ"]["mean"]["psnr"])
    assert {c["key"] for c in results["claims"]} >= {"every_quantizer_uses_its_codes", "every_quantizer_reaches_vq",
                                                     "residual_depth4_gains", "rotation_trick_beats_straight_through",
                                                     "standardized_fsq_beats_the_papers_bound"}
    assert {"code_usage.png", "code_usage_residual.png"} <= set(results["figures"])


def test_gan_recipe_contents(study):
    """The gan-recipe experiment: six groups, each GAN run's collapse record, samples from a transformer prior, the
    recipe's settings in the run keys (each group trained its own models)."""
    folder, results = study("gan-recipe")
    groups = results["groups"]
    assert len(groups) == 6 and "pixel loss" in groups and "+ perceptual" in groups
    gan = [label for label in groups if "GAN" in label]
    assert len(gan) == 4
    for label, group in groups.items():
        metrics = group["runs"][0]["metrics"]
        assert metrics["prior_sample_fd_domain"] >= 0 and metrics["perceptual_rotation"] >= 0, label
        assert ("gan_collapse_events" in metrics) == (label in gan), label
    settings = results["summary"]["settings"]
    assert settings["+ perceptual + GAN, adaptive weight, early start"]["disc_start"] == 1
    assert settings["+ perceptual + GAN, fixed weight, late start"]["adaptive_weight"] is False
    assert len(list((folder / "runs").glob("vqvae_s0-*"))) == 6
    assert {c["key"] for c in results["claims"]} == {
        "perceptual_lowers_reconstruction_fd", "perceptual_costs_psnr", "gan_lowers_reconstruction_fd_further",
        "late_start_is_safer", "adaptive_weight_is_safer"}
    assert "rotation" in results["summary"]["perceptual_network"]


def test_frechet_distance_judges_samples(study):
    """Sample quality is the Frechet distance on domain features."""
    _, results = study("samples")
    for label, group in results["groups"].items():
        assert group["runs"][0]["metrics"]["sample_fd_domain"] >= 0, label
    claims = {c["key"]: c for c in results["claims"]}
    assert claims["vae_samples_beat_ae"]["verdict"] in {CONFIRMED, CONTRADICTED, WITHIN_NOISE}
    assert "Frechet" in claims["vae_samples_beat_ae"]["evidence"]
    assert "domain" in results["reference"]["quality_features"]


def without_timing(value):
    """results.json without what a clock measured (the timing section, each run's training seconds)."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k != "timing" and not k.endswith("train_seconds")}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def test_killed_and_resumed_experiment_writes_the_same_results(study, tmp_path, monkeypatch):
    """An experiment killed after its first run continues from it with --resume, and writes the results.json of one
    that ran through."""
    straight, _ = study("compare")

    real = runner_module.train_quietly
    calls = []

    def killed_after_one(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt("killed")
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(runner_module, "train_quietly", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        run_experiment("compare", tmp_path / "resumed", budget="quick", progress=False, **TINY)
    monkeypatch.setattr(runner_module, "train_quietly", real)
    finished = [p for p in (tmp_path / "resumed" / "runs").iterdir() if (p / "COMPLETE").is_file()]
    assert len(finished) == 1
    resumed = run_experiment("compare", tmp_path / "resumed", budget="quick", resume=True, progress=False, **TINY)
    assert resumed["timing"]["runs_reused"] == 1 and resumed["timing"]["runs_trained"] >= 2
    on_disk = json.loads((tmp_path / "resumed" / "results.json").read_text())
    assert without_timing(on_disk) == without_timing(json.loads((straight / "results.json").read_text()))

    # a run folder without its marker is an interrupted run: trained again, not read
    (finished[0] / "COMPLETE").unlink()
    again = run_experiment("compare", tmp_path / "resumed", budget="quick", resume=True, progress=False, **TINY)
    assert again["timing"]["runs_trained"] == 1 and (finished[0] / "COMPLETE").is_file()
    assert without_timing(json.loads((tmp_path / "resumed" / "results.json").read_text())) == without_timing(on_disk)


def test_shared_runs_dir_reuses_identical_runs(tmp_path):
    """Experiments that share a runs_dir share the runs whose data, config, length and seed are the same."""
    budget = dict(TINY, num_seeds=1)
    runs = tmp_path / "runs"
    run_experiment("latent-size", tmp_path / "size", budget="quick", runs_dir=runs, progress=False, **budget)
    layout = run_experiment("latent-layout", tmp_path / "layout", budget="quick", runs_dir=runs, resume=True,
                            progress=False, **dict(budget, latent_dim=8))
    assert layout["timing"]["runs_reused"] == 4 and layout["timing"]["runs_trained"] == 0  # d = 8 and d = 2
    with pytest.raises(ValueError, match="already holds trained runs"):
        run_experiment("latent-layout", tmp_path / "other", budget="quick", runs_dir=runs, progress=False, **budget)


def test_existing_folder_is_refused_and_never_emptied(tmp_path, capsys):
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already holds files"):
        run_experiment("compare", folder, budget="quick", progress=False, **TINY)
    with pytest.raises(SystemExit):
        main(["compare", "--output-dir", str(folder), "--quick"])
    assert "already holds files" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    run_experiment("kl-weight", folder, budget="quick", overwrite=True, progress=False, **TINY)
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "report.md").is_file()


def test_bad_requests_are_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(ValueError, match="not known"):
        run_experiment("nonsense", tmp_path / "a")
    with pytest.raises(ValueError, match="unknown budget field"):
        run_experiment("compare", tmp_path / "b", budget="quick", max_stepz=3)
    with pytest.raises(ValueError, match="budget 'huge' is not known"):
        run_experiment("compare", tmp_path / "c", budget="huge")
    with pytest.raises(ValueError, match="max_steps must be a positive integer"):
        run_experiment("compare", tmp_path / "d", budget="seed", max_steps=0)
    with pytest.raises(ValueError, match="seeds must be a positive integer"):
        run_experiment("compare", tmp_path / "e", budget="quick", seeds=0)
    assert not any((tmp_path / n).exists() for n in "abcde")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        run_experiment("compare", tmp_path / "file", budget="quick")
    for argv, message in ((["--max_steps", "-1"], "--max_steps must be a positive integer"),
                          (["--seeds", "0"], "--seeds must be a positive integer"),
                          (["--quick", "--budget", "seed"], "contradicts --budget seed"),
                          (["--budget", "huge"], "invalid choice")):
        with pytest.raises(SystemExit):
            main(["compare", "--output_dir", str(tmp_path / "cli"), *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert message in err[-1] and err[-1].startswith(("error:", "hf-autoencoders experiment: error:")), err
        assert not (tmp_path / "cli").exists()


def test_budgets():
    seed = budgets.budget_named("seed")
    assert seed.backbone == "conv" and seed.epochs == 5 and seed.sample_epochs == 25 and seed.num_seeds == 3
    assert seed.latent_sizes == (512, 256, 128, 16, 2) and seed.kl_weights == (1.0, 0.01, 0.001, 0.0001)
    assert seed.noise_levels == (0.25, 0.5, 0.75)
    assert seed.train_steps(60_000) == 5 * 469 and seed.train_steps(60_000, epochs=25) == 25 * 469
    assert seed.replace(max_steps=7).train_steps(60_000, epochs=25) == 7  # max_steps wins, as in TrainingArguments
    rgb = budgets.budget_named("seed", num_channels=3)
    assert (rgb.num_embeddings, rgb.embedding_dim) == (512, 64) and rgb.sample_epochs == rgb.epochs
    assert budgets.budget_named("quick") == budgets.QUICK and budgets.budget_named("mlp").max_steps == 800


def test_command_line(tmp_path, monkeypatch):
    monkeypatch.setitem(budgets.BUDGETS, "quick", budgets.QUICK.replace(**TINY))
    results = cmd_experiment(["latent-layout", "--output-dir", str(tmp_path / "cli"), "--quick", "--max_steps", "3",
                              "--seed", "1", "--no-progress"])
    assert results["budget"]["max_steps"] == 3 and results["seeds"] == [1]
    check_outputs(tmp_path / "cli", results)
    results = cmd_experiment(["linear-pca", "--output-dir", str(tmp_path / "cli2"), "--budget", "quick", "--seeds",
                              "1", "--no-progress"])
    assert results["seeds"] == [0]
    with pytest.raises(SystemExit):
        main(["nonsense", "--output-dir", str(tmp_path / "x")])


def test_estimators_delegates(tmp_path, monkeypatch):
    import hf_autoencoders.studies.estimators as estimators

    calls = []

    def fake_study(output_dir, budget="mlp", dataset_name=None, seed=0):
        calls.append((Path(output_dir), budget, dataset_name, seed))
        return {"experiment": "estimators"}

    monkeypatch.setattr(estimators, "run_standalone", fake_study)
    assert run_experiment("estimators", tmp_path / "est", budget="seed", seed=3) == {"experiment": "estimators"}
    assert run_experiment("estimators", tmp_path / "est2", quick=True) == {"experiment": "estimators"}
    assert calls == [(tmp_path / "est", "seed", None, 3), (tmp_path / "est2", "quick", None, 0)]
    (tmp_path / "est" / "report.md").write_text("old")
    with pytest.raises(FileExistsError, match="already holds files"):
        run_experiment("estimators", tmp_path / "est", budget="quick")


def test_verdict_rules():
    # three seeds each: the difference must exceed twice its standard error
    clear = difference([20.0, 20.1, 19.9], [19.0, 19.1, 18.9], floor=0.1)
    assert clear.verdict(+1) == CONFIRMED and clear.verdict(-1) == CONTRADICTED
    assert clear.standard_error == pytest.approx(math.sqrt(2 * 0.01 / 3))
    noisy = difference([20.0, 21.0, 19.0], [19.5, 20.5, 18.5], floor=0.1)
    assert noisy.verdict(+1) == WITHIN_NOISE
    single = difference([20.0], [19.8], floor=0.3)  # one run each: the floor decides
    assert single.threshold == 0.3 and single.verdict(+1) == WITHIN_NOISE
    assert difference([10.0], [9.0], relative_floor=0.05).threshold == pytest.approx(0.5)
    assert difference([], [1.0]).verdict() == NOT_MEASURED
    assert all_of([CONFIRMED, CONFIRMED]) == CONFIRMED and all_of([CONFIRMED, WITHIN_NOISE]) == WITHIN_NOISE
    assert all_of([CONFIRMED, CONTRADICTED]) == CONTRADICTED and all_of([NOT_MEASURED, CONFIRMED]) == NOT_MEASURED
    assert within_margin([1.001, 0.999, 1.0], 1.0, 0.02)[0] == CONFIRMED
    assert within_margin([1.2, 1.21, 1.19], 1.0, 0.02)[0] == CONTRADICTED
    assert within_margin([1.0, 1.1, 0.9], 1.0, 0.02)[0] == WITHIN_NOISE


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_real_data_subsets(shared_data, tmp_path, dataset):
    """The seed budget's code paths (conv backbone; on CIFAR-10 the RGB budget with its 8x8 code map) on subsets of
    the real datasets."""
    if not (shared_data / dataset).is_dir():
        pytest.skip(f"../shared/data/{dataset} is not present")
    small = dict(TINY, hidden_size=16, latent_dim=8, num_embeddings=32, embedding_dim=8)
    small.pop("num_hidden_layers")
    for name in ("compare", "samples"):
        results = run_experiment(name, tmp_path / name, budget="seed", dataset_name=str(shared_data / dataset),
                                 progress=False, **small)
        check_outputs(tmp_path / name, results)
        assert results["budget"]["backbone"] == "conv" and len(results["seeds"]) == 2
    grid = 8 if dataset == "cifar10" else 7
    assert results["summary"]["priors"][0]["prior_config"]["grid_size"] == grid


class _WidePosteriorVAE(torch.nn.Module):
    """A VAE encoder whose posterior means are tight (std 0.3 per dimension) but whose posteriors are wide
    (variance 0.91): its aggregate posterior q(z) = E_x q(z|x) has variance 0.3^2 + 0.91 = 1, so it fills N(0, I),
    though the means alone look four times too narrow in variance."""

    def __init__(self, latent_dim: int = 4):
        super().__init__()
        self.projection = torch.nn.Linear(28 * 28, latent_dim, bias=False)
        self.latent_dim = latent_dim

    def encode(self, pixel_values):
        from hf_autoencoders.models import DiagonalGaussian, PosteriorOutput

        codes = self.projection(pixel_values.flatten(1))
        mean = 0.3 * (codes - codes.mean(0)) / codes.std(0)  # std 0.3 over the batch
        return PosteriorOutput(latent_dist=DiagonalGaussian(mean, torch.full_like(mean, math.log(0.91))))

    def representation(self, pixel_values):
        return self.encode(pixel_values).latent_dist.mean


def test_a_vae_with_wide_posteriors_fills_the_prior_by_its_aggregate_moments():
    """"VAE latents fill N(0, I)" is judged on the aggregate posterior, mean E[mu] and variance Var(mu) + E[sigma^2]:
    the std of the posterior means alone (0.3 here) would call this VAE three times too narrow."""
    from hf_autoencoders.evaluation import aggregate_posterior
    from hf_autoencoders.studies.latent_layout import layout_metrics

    torch.manual_seed(0)
    images = torch.rand(2000, 1, 28, 28)
    mean, variance = aggregate_posterior(_WidePosteriorVAE(), images, batch_size=2000)
    assert mean.abs().max() < 1e-5 and torch.allclose(variance, torch.ones(4, dtype=torch.float64), atol=0.01)
    metrics, _ = layout_metrics(_WidePosteriorVAE(), images, torch.arange(2000) % 10, num_points=0)
    assert metrics["aggregate_std"] == pytest.approx(1.0, abs=0.01) and metrics["prior_mismatch"] < 0.01
    assert metrics["posterior_mean_std"] == pytest.approx(0.3, abs=0.01)  # what the means alone would say
