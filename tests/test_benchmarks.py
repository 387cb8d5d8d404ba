"""The benchmark scripts run end to end (--smoke), alone and through run.py, and their helpers measure what they
claim."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import SECTIONS, TimeBudget, geomean, rounded, time_cosine_scheduler  # noqa: E402


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@pytest.mark.slow
def test_smoke_run_prints_one_json_object_with_the_headline_figures():
    sections = "overhead,vs_pythae,mfu,memory,data_pipeline,quality,gpu"
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--smoke", "--only", sections],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # stdout holds exactly one JSON object (Trainer logs go to stderr)
    for key in ("trainer_vs_loop_ratio", "mfu", "data_wait_share", "peak_mem_mb_per_sample"):
        assert _finite(result[key]), (key, result.get(key), result.get(key.split("_")[0]))
    assert 0.2 < result["trainer_vs_loop_ratio"] < 5
    assert 0 < result["mfu"] <= 1.5  # measured against a timed matmul, so a little above 1 is possible, not more
    assert 0 <= result["data_wait_share"] < 1
    assert result["peak_mem_mb_per_sample"] > 0
    if result["vs_pythae_ratio"] is None:
        assert isinstance(result["vs_pythae_skipped"], str) and result["vs_pythae_skipped"]
    else:
        assert result["vs_pythae_ratio"] > 0
        # identical networks and weights before training: both libraries' VAEs give the same NLL estimate
        assert result["vs_pythae"]["vae"]["initial_nll_max_abs_diff"] < 1e-3
    quality = result["quality"]
    assert _finite(quality["vae"]["test_nll_nats"]) and quality["vae"]["test_nll_nats"] > 0
    assert _finite(quality["ae"]["test_psnr_db"]) and _finite(quality["vqvae"]["test_psnr_db"])
    assert quality["vae"]["steps"] >= 1
    gpu = result["gpu"]
    assert "skipped" in gpu if not torch.cuda.is_available() else "throughput" in gpu
    assert not any(isinstance(v, dict) and "error" in v for v in result.values()), result


def test_each_section_has_its_own_script_that_runs_alone():
    assert {path.stem for path in (ROOT / "benchmarks").glob("*.py")} >= set(SECTIONS.values())
    proc = subprocess.run([sys.executable, "benchmarks/quantizer_distances.py", "--smoke"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # the JSON `run.py --only quantizer_distances` prints
    assert result["mode"] == "smoke" and result["command"] == "python benchmarks/quantizer_distances.py --smoke"
    assert result["quantizer_distances"]["same_codes"] and result["quantizer_distances"]["seconds"] > 0
    assert set(result) == {"mode", "command", "machine", "data", "quantizer_distances", "elapsed_s"}
    refused = subprocess.run([sys.executable, "benchmarks/run.py", "--smoke", "--only", "overhead,speed"], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "unknown section(s) speed" in refused.stderr


def test_quality_budget_script_prints_only_json(tmp_path):
    proc = subprocess.run(
        [sys.executable, "benchmarks/quality_budget.py", "--data", str(tmp_path / "absent"), "--budget", "1",
         "--iwae_k", "4", "--iwae_n", "16", "--models", "vae,vae_thresholded"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # the Trainer's logs went to stderr
    assert result["vae"]["binarization"] == "stochastic" and result["vae_thresholded"]["binarization"] == "threshold"
    for name in ("vae", "vae_thresholded"):
        assert _finite(result[name]["test_nll_nats"]) and result[name]["test_images"] == 16
        # the importance-weighted bound is at least as tight as the ELBO (K = 4 >= 1, same model)
        assert result[name]["test_nll_nats"] <= result[name]["test_neg_elbo_nats"] + 1.0


@pytest.mark.slow
def test_backbones_cifar_smoke_trains_each_model_for_its_calibrated_steps(tmp_path):
    import numpy as np
    from PIL import Image

    from hf_autoencoders.data import load_image_dataset

    proc = subprocess.run(
        [sys.executable, "benchmarks/backbones_cifar.py", "--smoke", "--models", "conv,vit", "--seeds", "0,1",
         "--figures_dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    calibration, summary = result["calibration"], result["summary"]
    assert [(row["model"], row["seed"]) for row in result["runs"]] == [("conv", 0), ("vit", 0), ("conv", 1),
                                                                         ("vit", 1)]
    for row in result["runs"]:
        # every model trains for its share of the same budget: steps = budget / calibrated step time
        step_seconds = calibration[row["model"]]["step_seconds"]
        # (the JSON rounds the step time, so the recorded figures give the steps to within one)
        assert row["steps"] >= 1 and abs(row["steps"] - result["budget_seconds"] / step_seconds) <= 1
        assert _finite(row["test_psnr_db"]) and row["test_psnr_db"] > 0 and row["test_images"] == 64
        assert 0 < row["codebook_usage"] <= 1 and 1 <= row["codebook_perplexity"] <= 32
    assert calibration["conv"]["ratio_to_reference"] == pytest.approx(1.0)
    psnrs = [row["test_psnr_db"] for row in result["runs"] if row["model"] == "vit"]
    assert summary["vit"]["test_psnr_db"]["mean"] == pytest.approx(sum(psnrs) / 2, abs=1e-3)
    assert summary["vit"]["test_psnr_db"]["std"] == pytest.approx(abs(psnrs[0] - psnrs[1]) / 2**0.5, abs=1e-3)
    gap = summary["vit"]["test_psnr_db"]["mean"] - summary["conv"]["test_psnr_db"]["mean"]
    usage_gap = summary["vit"]["codebook_usage"]["mean"] - summary["conv"]["codebook_usage"]["mean"]
    assert result["target"]["vit"]["met"] == (gap >= -0.3 and usage_gap >= 0)
    # the picture: the first 8 test images on top, then one row of reconstructions per model (28x28 digits, x3)
    picture = np.asarray(Image.open(tmp_path / "reconstructions.png"))
    assert picture.shape == ((3 * 30 + 2) * 3, (8 * 30 + 2) * 3)
    first = load_image_dataset(None).test.images[0, 0].numpy()
    assert np.array_equal(picture[6:6 + 84:3, 6:6 + 84:3], first)


@pytest.mark.slow
def test_backbones_cifar_reference_steps_fix_the_horizon_in_reference_steps(tmp_path):
    proc = subprocess.run(
        [sys.executable, "benchmarks/backbones_cifar.py", "--smoke", "--models", "vit,conv", "--seeds", "0",
         "--reference_steps", "4", "--device", "cpu", "--figures_dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    calibration = result["calibration"]
    assert result["reference_steps"] == 4 and result["budget_seconds"] is None and result["device"] == "cpu"
    assert calibration["vit"]["steps"] == 4  # the first of --models is the reference
    expected = max(1, round(4 * calibration["vit"]["step_seconds"] / calibration["conv"]["step_seconds"]))
    assert calibration["conv"]["steps"] == expected
    assert {row["model"]: row["steps"] for row in result["runs"]} == {"vit": 4, "conv": expected}


@pytest.mark.slow
def test_quantizers_smoke_prints_the_issue_figures_and_its_table(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/quantizers.py", "--smoke"], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # the Trainer's logs went to stderr
    assert result["command"] == "python benchmarks/quantizers.py --smoke"
    for key in ("min_test_usage", "min_psnr_gain_over_vq_db", "rvq_depth4_gain_db", "ddp_max_abs_diff"):
        assert _finite(result[key]), key
    assert 0 <= result["min_test_usage"] <= 1 and result["min_test_usage"] == min(result["test_usage"].values())
    assert result["ddp_max_abs_diff"] <= 1e-6  # two gloo processes train the codebooks of one on the global batch
    assert all(q["processes_identical"] and q["finite"] for q in result["ddp"]["quantizers"].values())
    assert result["arms"]["residual VQ, depth 4"]["bits_per_position"] == 4 * result["quantizer_bits"]
    (tmp_path / "result.json").write_text(proc.stdout)
    table = subprocess.run([sys.executable, "benchmarks/quantizers.py", "--table", str(tmp_path / "result.json")],
                           cwd=ROOT, capture_output=True, text=True, timeout=120).stdout
    assert table.startswith("| quantizer | bits / position | PSNR (dB) |") and "| residual VQ, depth 2 | 8 |" in table


def test_time_budget_stops_training_and_drives_a_cosine_schedule(monkeypatch):
    import time

    from transformers import TrainerControl, TrainerState

    clock = [100.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    budget = TimeBudget(10.0)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = time_cosine_scheduler(optimizer, budget)
    state, control = TrainerState(), TrainerControl()
    budget.on_train_begin(None, state, control)
    clock[0] = 105.0
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)  # half the budget: cos(pi/2) -> 1/2
    budget.on_step_end(None, state, control)
    assert not control.should_training_stop
    clock[0] = 110.5
    budget.on_step_end(None, state, control)
    assert control.should_training_stop
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_quantizer_distance_variants_pick_the_same_codes():
    from quantizer_distances import quantizer_distances

    result = quantizer_distances(quick=True, n=256, k=64, d=16)
    assert result["same_codes"]
    assert set(result["ms"]) == {"ours_addmm", "cdist", "broadcast", "pythae_style"}
    assert all(t > 0 for t in result["ms"].values())


def test_helpers_round_and_average():
    assert rounded({"a": float("nan"), "b": [1.234567, float("inf")]}) == {"a": None, "b": [1.2346, None]}
    assert geomean([1.0, 4.0]) == pytest.approx(2.0)
    assert math.isnan(geomean([]))


def test_studies_and_benchmarks_build_training_arguments_through_the_one_factory():
    """`hf_autoencoders.training.training_arguments` is the one home of a Python run's TrainingArguments: no study
    or benchmark calls a TrainingArguments class itself."""
    import ast

    files = sorted((ROOT / "benchmarks").glob("*.py")) + sorted((ROOT / "hf_autoencoders" / "studies").glob("*.py"))
    calls = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            name = getattr(getattr(node, "func", None), "id", None) or getattr(getattr(node, "func", None), "attr", "")
            if isinstance(node, ast.Call) and name.endswith("TrainingArguments"):
                calls.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not calls, calls


TARGET_KEYS = ("fd_reduction", "psnr_cost_db", "collapsed_seeds", "ema_fd_ratio", "step_cost_ratio")


def test_tokenizer_recipe_smoke_prints_the_issue_keys_and_its_command(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/tokenizer_recipe.py", "--smoke", "--cache_dir",
                           str(tmp_path / "cache"), "--output", str(tmp_path / "out.json")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result == json.loads((tmp_path / "out.json").read_text())
    assert result["command"] == (f"python benchmarks/tokenizer_recipe.py --smoke --cache_dir {tmp_path / 'cache'} "
                                 f"--output {tmp_path / 'out.json'}")
    for key in ("fd_reduction", "psnr_cost_db", "ema_fd_ratio", "step_cost_ratio"):
        assert _finite(result[key]), key
    assert result["collapsed_seeds"] in (0, 1) and result["step_cost_ratio"] > 0
    assert set(result["targets_met"]) == set(TARGET_KEYS)
    arms = {run["arm"] for run in result["runs"]}
    assert arms == {"pixel", "recipe", "perceptual_rotation", "perceptual_domain"}
    recipe = next(run for run in result["runs"] if run["arm"] == "recipe")
    assert recipe["raw"]["psnr"] != recipe["psnr"] and recipe["disc_start"] == 3 and recipe["ema_num_updates"] == 6
    assert "rotation" in result["perceptual_networks"]["rotation"]
    timing = subprocess.run([sys.executable, "benchmarks/tokenizer_recipe.py", "--smoke", "--timing_only",
                             "--cache_dir", str(tmp_path / "cache")], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert timing.returncode == 0, timing.stderr[-3000:]
    timing = json.loads(timing.stdout)
    assert timing["step_cost_ratio"] > 0 and set(timing["targets_met"]) == {"step_cost_ratio"}
    assert timing["runs"] == [] and "fd_reduction" not in timing
    other = json.loads(json.dumps(result))  # seed 1, its recipe trained with other settings
    other["arms"]["recipe"] = {**other["arms"]["recipe"], "disc_weight": 0.25}
    for run in other["runs"]:
        run["seed"] = 1
    for name, value in (("other.json", other), ("timing.json", timing)):
        (tmp_path / name).write_text(json.dumps(value))
    merged = subprocess.run([sys.executable, "benchmarks/tokenizer_recipe.py", "--merge", str(tmp_path / "out.json"),
                             str(tmp_path / "other.json"), str(tmp_path / "timing.json")], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert merged.returncode == 0, merged.stderr[-3000:]
    merged = json.loads(merged.stdout)
    seeds = {}
    for run in merged["runs"]:
        seeds.setdefault(run["arm"], set()).add(run["seed"])
    assert seeds["pixel"] == {0, 1} and seeds["recipe"] == {1}  # seed 0's recipe had other settings: left out
    assert merged["step_cost_ratio"] == timing["step_cost_ratio"] and set(merged["targets_met"]) == set(TARGET_KEYS)
    assert merged["summary"]["pixel"]["psnr"] == pytest.approx(result["summary"]["pixel"]["psnr"], abs=1e-4)
    refused = subprocess.run([sys.executable, "benchmarks/tokenizer_recipe.py", "--data", str(tmp_path / "absent")],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "is not a folder" in refused.stderr


def test_decoded_cache_benchmark_compares_both_arms_on_the_same_pixels(tmp_path):
    from PIL import Image

    rng = torch.Generator().manual_seed(0)
    for label in ("a", "b"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(24):
            pixels = torch.randint(0, 256, (8, 8, 3), generator=rng, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / "images" / label / f"{i:02d}.png")
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, "benchmarks/decoded_cache.py", "--datasets", str(tmp_path / "images"),
                           "--num_proc", "1", "--batch_size", "8", "--batches", "2"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads(proc.stdout)["datasets"]["images"]
    assert row["same_pixels"] and 40 <= row["images"] < 48 and row["image_shape"] == [3, 8, 8]
    for arm in ("ours", "datasets_map"):
        assert all(_finite(row[arm][key]) and row[arm][key] > 0 for key in ("cold_s", "warm_s", "batch_ms",
                                                                           "cache_mb")), arm
    refused = subprocess.run([sys.executable, "benchmarks/decoded_cache.py", "--datasets", str(tmp_path / "absent")],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "no dataset folder" in refused.stderr
