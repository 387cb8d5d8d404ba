"""The latent-autoencoder benchmark and the GPU script run end to end (--smoke) and print what they promise."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEADLINE = ("psnr_gain_over_vqvae_db", "vs_diffusers_ratio", "export_max_abs_diff", "scaled_latent_std",
            "scaled_latent_mean", "tiled_psnr_drop_db", "tiled_peak_memory_ratio")


@pytest.mark.slow
def test_latent_autoencoder_smoke_prints_the_headline_keys_and_its_command():
    pytest.importorskip("diffusers")
    proc = subprocess.run([sys.executable, "benchmarks/latent_autoencoder.py", "--smoke"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # stdout holds exactly one JSON object
    assert result["command"] == "python benchmarks/latent_autoencoder.py --smoke"
    for key in HEADLINE:
        assert isinstance(result[key], float) and math.isfinite(result[key]), key
    assert result["export_max_abs_diff"] <= 1e-5  # exact conversion, trained or not
    assert 0 < result["tiled_peak_memory_ratio"] < 1  # tiles of the training size hold less than the whole image
    assert abs(result["scaled_latent_mean"]) < 0.5 and 0.5 < result["scaled_latent_std"] < 1.5
    assert len(result["quality"]["runs"]) == 3 and result["speed"]["vs_diffusers_ratio"] > 0  # vae, vqvae, vae_conv


@pytest.mark.slow
def test_gpu_script_smoke_writes_every_json(tmp_path):
    pytest.importorskip("diffusers")
    proc = subprocess.run(["bash", "benchmarks/gpu.sh", "--smoke"], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "OUT": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = {path.name: json.loads(path.read_text()) for path in tmp_path.glob("*.json")}
    assert set(written) == {"latent_autoencoder_256_bf16.json", "backbones_cifar_cuda.json", "gpu_section.json"}
    assert written["latent_autoencoder_256_bf16.json"]["vs_diffusers_ratio"] > 0
    assert not list(tmp_path.glob("*.partial"))
