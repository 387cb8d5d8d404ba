"""Every experiment end to end on the embedded digits with a tiny budget, and sanity checks of what it writes."""

import json
import math
import re
from pathlib import Path

import pytest

from hf_autoencoders.cli import cmd_experiment
from hf_autoencoders.cli import main as cli_main
from hf_autoencoders.studies import EXPERIMENTS, run_experiment
from hf_autoencoders.studies import study as study_module
from hf_autoencoders.studies.study import QUICK


def main(argv):
    """`hf-autoencoders experiment ARGV` as the command runs it (user errors end in SystemExit)."""
    return cli_main(["experiment", *argv])

# Tiny models, a few steps and few test images: each experiment takes seconds.
TINY = dict(
    max_steps=5, batch_size=32, hidden_size=32, num_hidden_layers=1, latent_dim=4, num_embeddings=16, embedding_dim=4,
    max_train_examples=300, max_test_examples=64, iwae_samples=4, iwae_examples=32, probe_examples=200,
    classifier_examples=300, classifier_epochs=1, classifier_width=8, num_samples=32, tsne_points=64, prior_steps=5,
    prior_hidden_size=16, prior_layers=2, latent_sizes=(8, 2), kl_weights=(1.0, 0.001), noise_levels=(0.5,),
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
    assert written["findings"] and all(isinstance(f, str) and f for f in written["findings"])
    report = (folder / "report.md").read_text()
    sections = re.split(r"^## ", report, flags=re.M)[1:]
    assert sections, "report.md has no sections"
    for section in sections:
        title = section.splitlines()[0]
        figures = re.findall(r"\]\(([^)]+\.png)\)", section)
        assert figures, f"section {title!r} shows no figure"
        for name in figures:
            assert (folder / name).is_file(), f"section {title!r} refers to a missing {name}"
    assert "What the numbers show" in report
    for name in written["figures"]:
        assert (folder / name).stat().st_size > 0
    return written


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Runs an experiment once per test module (tiny budget) and returns (folder, results)."""
    done = {}

    def run(name):
        if name not in done:
            folder = tmp_path_factory.mktemp("studies") / name
            done[name] = folder, run_experiment(name, folder, quick=True, progress=False, **TINY)
        return done[name]

    return run


@pytest.mark.parametrize("name", [n for n in EXPERIMENTS if n != "estimators"])
def test_experiment_runs_end_to_end(study, name):
    folder, results = study(name)
    written = check_outputs(folder, results)
    runs = written["runs"]
    assert runs
    for label, run in runs.items():
        metrics = run["metrics"]
        if run["family"] == "vae" and "kl_loss" in metrics:
            assert metrics["kl_loss"] > 0, f"{label}: KL must be positive"
        if "psnr" in metrics:
            assert 0 < metrics["ssim"] <= 1 and metrics["psnr"] > 0 and metrics["mse"] > 0
        if "downstream_accuracy" in metrics:
            assert 0 <= metrics["downstream_accuracy"] <= 1 and 0 <= metrics["linear_probe_accuracy"] <= 1
    assert written["budget"]["max_steps"] == 5
    assert written["reference"]["classifier_test_accuracy"] > 0.1  # above chance even after one epoch


def test_experiment_specific_contents(study):
    _, results = study("kl-weight")
    configs = {label: run["config"] for label, run in results["runs"].items()}
    assert configs["w=0.001"]["gaussian_variance"] == pytest.approx(0.0005)  # c = w / 2
    assert configs["w=1"]["gaussian_variance"] == pytest.approx(0.5)

    _, results = study("denoising")
    clean, noisy = results["summary"]["AE"]["0"], results["summary"]["AE"]["0.5"]
    assert clean["clean_trained_psnr"] == pytest.approx(clean["psnr"])  # the s = 0 model is the clean-trained one
    assert noisy["input_psnr"] > 10 * math.log10(1 / 0.5**2)  # clamping to [0, 1] only removes error
    assert noisy["relative_psnr"] == pytest.approx(noisy["psnr"] / results["summary"]["AE"]["0"]["psnr"])
    assert results["runs"]["VAE noise=0.5"]["config"]["noise_std"] == 0.5

    _, results = study("samples")
    prior = results["runs"]["VQ-VAE + PixelCNN prior"]["metrics"]
    assert prior["uniform_bits_per_code"] == pytest.approx(math.log2(16))
    assert 0 <= prior["sample_class_entropy"] <= math.log(10) + 1e-9


def test_existing_folder_is_refused_and_never_emptied(tmp_path, capsys):
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="already holds files"):
        run_experiment("compare", folder, quick=True, progress=False, **TINY)
    with pytest.raises(SystemExit):
        main(["compare", "--output-dir", str(folder), "--quick"])
    assert "already holds files" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    run_experiment("compare", folder, quick=True, overwrite=True, progress=False, **TINY)
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "report.md").is_file()


def test_bad_requests_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="not known"):
        run_experiment("nonsense", tmp_path / "a")
    with pytest.raises(ValueError, match="unknown budget field"):
        run_experiment("compare", tmp_path / "b", quick=True, max_stepz=3)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        run_experiment("compare", tmp_path / "file", quick=True)


def test_command_line(tmp_path, monkeypatch):
    monkeypatch.setattr(study_module, "QUICK", QUICK.replace(**TINY))
    results = cmd_experiment(["latent-layout", "--output-dir", str(tmp_path / "cli"), "--quick", "--max_steps", "3",
                              "--seed", "1", "--no-progress"])
    assert results["budget"]["max_steps"] == 3 and results["seed"] == 1
    check_outputs(tmp_path / "cli", results)
    with pytest.raises(SystemExit):
        main(["nonsense", "--output-dir", str(tmp_path / "x")])


def test_estimators_delegates(tmp_path, monkeypatch):
    import hf_autoencoders.studies.estimators as estimators

    calls = []

    def fake_study(output_dir, quick=False, dataset_name=None, seed=0):
        calls.append((Path(output_dir), quick, dataset_name, seed))
        return {"experiment": "estimators"}

    monkeypatch.setattr(estimators, "run_standalone", fake_study)
    assert run_experiment("estimators", tmp_path / "est", quick=True, seed=3) == {"experiment": "estimators"}
    assert calls == [(tmp_path / "est", True, None, 3)]
    (tmp_path / "est" / "report.md").write_text("old")
    with pytest.raises(ValueError, match="already holds files"):
        run_experiment("estimators", tmp_path / "est", quick=True)


def test_sample_verdict_weighs_confidence_and_diversity():
    from hf_autoencoders.studies.study import Run
    from hf_autoencoders.studies.verdicts import claim, sample_verdict

    def run(confidence, entropy, score):
        metrics = {"sample_mean_max_prob": confidence, "sample_class_entropy": entropy,
                   "sample_inception_score": score}
        return Run("r", "vae", None, metrics)

    digits, blob = run(0.80, 2.2, 5.0), run(0.95, 0.0, 1.0)  # one sure class for every sample: a blob
    assert sample_verdict(digits, blob) == 1 and sample_verdict(blob, digits) == -1
    assert sample_verdict(run(0.8, 2.0, 3.0), run(0.7, 1.9, 2.5)) == 1  # better on one, as good on the other
    assert sample_verdict(run(0.80, 2.0, 3.0), run(0.81, 2.05, 3.0)) == 0  # within noise
    assert claim(True, "x", "y").startswith("As the textbook says")
    assert "Contrary" in claim(False, "x", "y") and "do not settle" in claim(True, "x", "y", undecided=True)
