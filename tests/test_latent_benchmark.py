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


def test_equal_time_calibration_times_each_model_in_the_layout_the_trainer_trains_it_in(monkeypatch):
    """The VAE and VQ-VAE step times that set the equal-time step counts are taken with channels-last weights on a
    CPU, as the Trainer trains them (NCHW timings gave the ldm VAE fewer steps than its share)."""
    import argparse

    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import latent_autoencoder

    layouts = {}

    def fake_steps(model, images, batch_size, steps, device):
        weight = next(p for p in model.parameters() if p.ndim == 4)
        layouts[model.config.model_type] = weight.is_contiguous(memory_format=torch.channels_last)
        return [0.1] * steps

    monkeypatch.setattr(latent_autoencoder, "manual_step_seconds", fake_steps)
    args = argparse.Namespace(block_out_channels=[8, 8, 8], layers_per_block=1, norm_num_groups=8,
                              gaussian_variance=0.005, vq_hidden_size=16, num_embeddings=16, batch_size=4,
                              calibration_warmup=1, calibration_steps=1, calibration_rounds=2, budget=1.0,
                              device="cpu")
    configs = {"vae": latent_autoencoder.vae_config(args, 16, 3), "vqvae": latent_autoencoder.vqvae_config(args, 16, 3)}
    calibration = latent_autoencoder.calibrate(configs, torch.zeros(8, 3, 16, 16, dtype=torch.uint8), args)
    assert layouts == {"hf_autoencoders_vae": True, "hf_autoencoders_vqvae": True}
    assert calibration["vae"]["steps"] == calibration["vqvae"]["steps"] == 10
