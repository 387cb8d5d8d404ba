"""The backbones experiment: end to end on the embedded digits (and a CIFAR-10 subset where ../shared/data has it),
resuming, the equal-parameter width search, the calibration's arithmetic with a fake clock, and the drawback
measures on cases whose answer is known."""

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from hf_autoencoders.data import ImageTensorDataset, load_image_dataset
from hf_autoencoders.evaluation.timing import equal_time_steps
from hf_autoencoders.models import autoencoder_classes
from hf_autoencoders.studies import backbones, budgets, run_experiment
from hf_autoencoders.studies.runner import Runner
from hf_autoencoders.studies.verdicts import CONFIRMED, CONTRADICTED, NOT_MEASURED, WITHIN_NOISE

ROOT = Path(__file__).resolve().parents[1]
# Tiny models and evaluations: the quick budget's code paths in seconds (one seed: 30 Trainer runs already).
SMALL = dict(
    max_steps=4, batch_size=32, latent_dim=4, num_embeddings=16, embedding_dim=4, max_train_examples=256,
    max_test_examples=48, iwae_samples=2, iwae_examples=16, probe_examples=128, classifier_examples=256,
    classifier_epochs=1, classifier_width=8, num_samples=24, num_seeds=1,
)
FIGURES = {"psnr_by_backbone.png", "ae_reconstructions.png", "vae_samples.png", "patch_seam_crops.png",
           "patch_error_maps.png", "receptive_fields.png", "loss_curves.png"}
CLAIMS = {"conv_best_equal_time_ae", "conv_best_equal_time_vae", "conv_best_equal_time_vq_vae",
          "conv_best_equal_params_ae", "conv_best_equal_params_vae", "conv_best_equal_params_vq_vae",
          "mlp_parameter_growth", "conv_locality", "vit_patch_seams"}


def without_timing(value):
    """results.json without what a clock measured in this pass."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k != "timing"}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def check_written(folder, results, labels_steps):
    written = json.loads((folder / "results.json").read_text())
    assert written == json.loads(json.dumps(written))  # plain JSON
    bad = [v for v in _numbers(written) if not math.isfinite(v)]
    assert not bad
    report = (folder / "report.md").read_text()
    for title in ("Equal training wall-clock", "Equal parameter count", "Drawbacks: MLP parameters",
                  "Drawbacks: conv locality", "Drawbacks: ViT patch seams", "VAE samples", "VQ-VAE codebook"):
        assert f"## {title}" in report, title
    for name in re.findall(r"\]\(([^)]+\.png)\)", report):
        assert (folder / name).stat().st_size > 0, name
    assert FIGURES <= set(written["figures"])
    for label, steps in labels_steps.items():
        assert all(r["train_steps"] == steps for r in written["groups"][label]["runs"]), label
    return written


def _numbers(value):
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)


@pytest.fixture
def short_calibration(monkeypatch):
    monkeypatch.setattr(backbones, "WARMUP_STEPS", 1)
    monkeypatch.setattr(backbones, "TIMED_STEPS", 2)
    monkeypatch.setattr(backbones, "CALIBRATION_ROUNDS", 2)


def test_quick_budget_end_to_end_and_resume(tmp_path, short_calibration):
    folder = tmp_path / "backbones"
    results = run_experiment("backbones", folder, budget="quick", progress=False, **SMALL)
    summary = results["summary"]
    assert set(summary) >= {"calibration", "equal_time", "equal_params", "parameter_growth", "shapes"}
    assert summary["reference_steps"] == 4 and results["seeds"] == [0]
    assert summary["calibration"]["timed_steps"] == 2 and summary["calibration"]["rounds"] == 2
    assert len(results["groups"]) == 15  # 3 families x (3 at equal time + 2 at equal parameters)
    assert {c["key"] for c in results["claims"]} == CLAIMS
    assert all(c["verdict"] in {CONFIRMED, CONTRADICTED, WITHIN_NOISE, NOT_MEASURED} for c in results["claims"])
    assert {c["key"]: c["verdict"] for c in results["claims"]}["mlp_parameter_growth"] == CONFIRMED  # counted

    steps = {}
    for family, row in summary["equal_time"].items():
        conv = row["conv"]
        assert conv["steps"] == 4
        for backbone, entry in row.items():  # the steps that fit in the conv run's time
            assert entry["steps"] == max(1, round(4 * conv["step_seconds"] / entry["step_seconds"]))
            name = f"{family} {backbones.NAMES[backbone]}" + ("" if backbone == "conv" else " (equal time)")
            steps[name] = entry["steps"]
            assert results["groups"][name]["config"].get("backbone", "conv") == backbone
        for backbone in ("mlp", "vit"):
            assert summary["equal_params"][family][backbone]["steps"] == 4
            steps[f"{family} {backbones.NAMES[backbone]} (equal params)"] = 4
    written = check_written(folder, results, steps)

    for label, group in written["groups"].items():
        assert len(group["runs"]) == 1, label
        for run in group["runs"]:
            m = run["metrics"]
            assert m["psnr"] > 0 and -1 <= m["ssim"] <= 1 and m["reconstruction_fd_domain"] >= 0
            assert m["parameters"] > 0 and m["samples_per_second"] > 0 and m["activation_kib_per_sample"] > 0
            assert m["patch_border_ratio"] > 0
            if "codebook_usage" in m:  # the VQ-VAEs' spatial latents: the receptive field of a latent cell
                assert 0 < m["codebook_usage"] <= 1 and m["codebook_perplexity"] >= 1
                assert 0 <= m["erf_outside_share"] <= 1 and 0 < m["erf_outside_area"] < 1
    vae_conv = written["groups"]["VAE conv"]["runs"][0]["metrics"]
    assert vae_conv["sample_fd_domain"] >= 0

    # killed or not: --resume reads the calibration back, trains nothing and writes the same results
    resumed = run_experiment("backbones", folder, budget="quick", progress=False, resume=True, **SMALL)
    assert resumed["timing"]["runs_trained"] == 0 and resumed["timing"]["runs_reused"] == 15
    assert without_timing(json.loads((folder / "results.json").read_text())) == without_timing(written)


def test_width_search_matches_the_conv_parameter_count():
    # a count known in closed form: the closest width is found, among multiples of the step
    assert backbones.matched_width(lambda w: 3 * w * w, 3 * 40 * 40 + 50) == (40, 4800)
    assert backbones.matched_width(lambda w: 3 * w * w, 3 * 41 * 41, step=4) == (40, 4800)  # 40 beats 44
    assert backbones.matched_width(lambda w: 10 * w, 5) == (1, 10)  # below the smallest width

    data = load_image_dataset(None)
    for name in ("quick", "seed"):
        runner = Runner("backbones", data, budgets.budget_named(name), [0], "unused", progress=False)
        shapes = {bk: backbones.backbone_fields(runner.budget, bk) for bk in backbones.BACKBONES}
        assert shapes[runner.budget.backbone]["hidden_size"] == runner.budget.hidden_size
        for family in backbones.FAMILIES:
            target = backbones.parameter_count(runner, family, shapes["conv"])
            config_class, model_class = autoencoder_classes(family)
            built = model_class(runner.config(family, **shapes["conv"]))
            assert target == sum(p.numel() for p in built.parameters())  # the meta-device count is the real one
            for bk in ("mlp", "vit"):
                step = backbones.width_step(shapes[bk])

                def count(w, bk=bk):
                    return backbones.parameter_count(runner, family, {**shapes[bk], "hidden_size": w})

                width, found = backbones.matched_width(count, target, step)
                assert width % step == 0 and found == count(width)
                neighbours = [count(w) for w in (width - step, width + step) if w >= step]
                assert all(abs(found - target) <= abs(c - target) for c in neighbours), (name, family, bk)
                # the grid of widths brackets the target (a ViT's width moves in steps of its heads, and its fixed
                # parts make those steps coarse at small widths)
                assert width == step or count(width - step) <= target <= count(width + step), (name, family, bk)


class FakeClock:
    """Reads the times of a list of step intervals, one per call."""

    def __init__(self, intervals):
        self.intervals, self.now, self.calls = list(intervals), 0.0, 0

    def __call__(self):
        if self.calls:
            self.now += self.intervals[self.calls - 1]
        self.calls += 1
        return self.now


def test_calibration_gives_steps_inversely_proportional_to_step_time(tmp_path, monkeypatch):
    monkeypatch.setattr(backbones, "WARMUP_STEPS", 2)
    monkeypatch.setattr(backbones, "TIMED_STEPS", 3)
    budget = budgets.budget_named("quick", max_steps=40, batch_size=16, max_train_examples=64, max_test_examples=16)
    runner = Runner("backbones", load_image_dataset(None), budget, [0], tmp_path, progress=False)
    costs = {"mlp": 0.01, "conv": 0.04, "vit": 0.16}
    seconds = {}
    for bk, cost in costs.items():  # two slow warm-up steps, then the timed steps
        clock = FakeClock([5.0, 5.0, cost, 3 * cost, cost / 2])
        timed = backbones.step_intervals(runner, "ae", backbones.backbone_fields(budget, bk), timer=clock)
        assert clock.calls == 2 + 3 + 1  # read once at the end of every step
        assert timed == pytest.approx([cost, 3 * cost, cost / 2])
        seconds[bk] = cost
    assert equal_time_steps(seconds, 40 * seconds["conv"]) == {"mlp": 160, "conv": 40, "vit": 10}


def test_calibration_alternates_rounds_pools_their_steps_and_is_kept(tmp_path, monkeypatch):
    budget = budgets.budget_named("quick", max_steps=40, batch_size=16, max_train_examples=64, max_test_examples=16)
    runner = Runner("backbones", load_image_dataset(None), budget, [0], tmp_path, progress=False)
    monkeypatch.setattr(backbones, "CALIBRATION_ROUNDS", 3)
    specs = {name: ("ae", backbones.backbone_fields(budget, name)) for name in ("conv", "vit")}
    # a busy spell in the second round slows both models alike; one model timed only then would look slow
    rounds = {"conv": [[0.1, 0.1], [0.5, 0.5], [0.1, 0.12]], "vit": [[0.2, 0.2], [1.0, 1.0], [0.2, 0.22]]}
    order = []

    def fake_intervals(runner_, family, fields, timer):
        name = fields["backbone"]
        order.append(name)
        return rounds[name][order.count(name) - 1]

    monkeypatch.setattr(backbones, "step_intervals", fake_intervals)
    seconds = backbones.calibrate(runner, specs)
    assert order == ["conv", "vit", "vit", "conv", "conv", "vit"]  # the order reversed every other round
    assert seconds == {"conv": pytest.approx(0.11), "vit": pytest.approx(0.21)}  # the median of all 6 steps
    assert equal_time_steps(seconds, 40 * seconds["conv"])["vit"] == round(40 * 0.11 / 0.21)

    # kept with the runs: a resumed experiment reads the step times back instead of timing again
    runner.store.resume = True

    def no_timing(*args):
        raise AssertionError("a resumed calibration must not time again")

    monkeypatch.setattr(backbones, "step_intervals", no_timing)
    assert backbones.calibrate(runner, specs) == seconds
    assert len(list((runner.store.dir / "calibration").iterdir())) == 1


@pytest.mark.slow
def test_cifar10_subset(shared_data, tmp_path, short_calibration):
    """The seed budget's RGB path (conv 32 wide, 8x8 code maps) on a CIFAR-10 subset."""
    if not (shared_data / "cifar10").is_dir():
        pytest.skip("../shared/data/cifar10 is not present")
    small = {k: v for k, v in SMALL.items() if k not in ("latent_dim", "embedding_dim")}
    results = run_experiment("backbones", tmp_path / "cifar", budget="seed", dataset_name=str(shared_data / "cifar10"),
                             progress=False, **dict(small, max_steps=2))
    assert results["dataset"]["num_channels"] == 3 and results["budget"]["hidden_size"] == 32
    conv = results["groups"]["VQ-VAE conv"]
    assert conv["config"]["hidden_size"] == 32 and conv["runs"][0]["metrics"]["parameters"] > 0
    vit = results["groups"]["VQ-VAE ViT (equal time)"]
    assert vit["config"]["image_size"] == 32 and vit["config"]["patch_size"] == 4  # an 8x8 code map, as the conv's
    assert results["summary"]["parameter_growth"]["image_shapes"] == ["3x32x32", "3x64x64"]


def test_bar_chart(tmp_path):
    from hf_autoencoders.plots import plot_bars

    panel = ("equal time", ["AE", "VAE"], {"MLP": ([20.0, 19.0], [0.1, 0.2]), "conv": ([21.0, float("nan")], None)})
    path = plot_bars([panel, panel], tmp_path / "bars.png", ylabel="PSNR")
    assert path.stat().st_size > 0
    with pytest.raises(ValueError, match="one value"):
        plot_bars([("t", ["AE", "VAE"], {"MLP": ([1.0], None)})], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="empty"):
        plot_bars([], tmp_path / "none.png")


# Run folders of the seed budget's models in docs/results/seed (results.md), named when the ViT's settings were
# given explicitly (before they became the ViT's defaults): (dataset, label, steps, folder).
SEED_RUN_FOLDERS = [
    ("mnist", "VQ-VAE ViT (equal time)", 655, "vqvae_s0-60115805cc"),
    ("mnist", "AE ViT (equal time)", 524, "ae_s0-5680082573"),
    ("mnist", "VQ-VAE conv", 2345, "vqvae_s0-9c5ca51682"),
    ("mnist", "VAE MLP (equal time)", 3225, "vae_s0-56f6b57315"),
    ("cifar10", "VQ-VAE ViT (equal time)", 514, "vqvae_s0-7279f6a247"),
]


@pytest.mark.parametrize(("dataset", "label", "steps", "folder"), SEED_RUN_FOLDERS)
def test_the_seed_runs_keep_their_keys(dataset, label, steps, folder):
    """A run's key is a hash of what determines its weights: the same settings give the same key whether the study
    names them or they are the config's defaults, so a `--resume` of the seed experiments reuses the runs behind
    docs/results.md. Checked on the folders those runs were trained in, from the study's own fields and from the
    config recorded in their results.json."""
    recorded = json.loads((ROOT / "docs" / "results" / "seed" / dataset / "backbones" / "results.json").read_text())
    shape = recorded["dataset"]
    images = torch.zeros(1, shape["num_channels"], shape["image_size"], shape["image_size"], dtype=torch.uint8)
    train = ImageTensorDataset(images.expand(shape["train_examples"], *images.shape[1:]), None)
    data = SimpleNamespace(name=shape["name"], train=train, test=train, image_size=shape["image_size"],
                           num_channels=shape["num_channels"], num_labels=None)
    runner = Runner("backbones", data, budgets.budget_named("seed", shape["num_channels"]), [0], "unused",
                    progress=False)
    group = recorded["groups"][label]
    assert group["runs"][0]["train_steps"] == steps
    backbone = group["config"]["backbone"]
    from_study = runner.config(group["family"], **backbones.backbone_fields(runner.budget, backbone))
    from_record = runner.config(group["family"], **group["config"])
    for config in (from_study, from_record):
        assert runner.run_folder(group["family"], config, 0, steps)[0].name == folder
