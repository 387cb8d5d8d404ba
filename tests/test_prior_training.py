"""Tests of prior training (hf_autoencoders/training/prior.py): cached code extraction, the end-to-end run, reload,
the `sample --prior` command, and refusals."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModel

import hf_autoencoders as H
from hf_autoencoders.cli import main as cli_main
from hf_autoencoders.data import ImageCollator, ImageTensorDataset, load_image_dataset
from hf_autoencoders.plots import plot_samples
from hf_autoencoders.training import parse_prior_args
from hf_autoencoders.training import prior as P

TINY_VQ = dict(hidden_size=8, num_embeddings=16, embedding_dim=4, num_residual_blocks=1, kmeans_init=True)
PRIOR_FLAGS = ["--prior_type", "pixelcnn", "--hidden_size", "8", "--num_layers", "2", "--max_train_samples", "256",
               "--max_eval_samples", "64",
               "--num_samples", "8", "--max_steps", "4", "--logging_steps", "2", "--save_strategy", "no",
               "--disable_tqdm", "true", "--report_to", "none", "--seed", "3"]


@pytest.fixture(scope="module")
def digits():
    return load_image_dataset(None)


def tiny_vqvae(digits, seed: int = 0) -> H.VQVAEModel:
    """An untrained tiny VQ-VAE whose codebook is k-means-initialised on 128 digits (by one training forward), so
    that the images use several codes."""
    torch.manual_seed(seed)
    vqvae = H.VQVAEModel(H.VQVAEConfig(**TINY_VQ))
    with torch.no_grad():
        vqvae(ImageCollator()([digits.train[i] for i in range(128)])["pixel_values"])
    return vqvae.eval()


@pytest.fixture(scope="module")
def run(tmp_path_factory, digits):
    """A saved tiny VQ-VAE and a prior trained on its codes of the embedded digits by `run_prior_training`."""
    root = tmp_path_factory.mktemp("prior_run")
    tiny_vqvae(digits).save_pretrained(root / "vqvae")
    args = parse_prior_args(["--vqvae", str(root / "vqvae"), "--output_dir", str(root / "prior"), "--do_train",
                               "--do_eval", *PRIOR_FLAGS])
    metrics = P.run_prior_training(*args)
    return root, metrics


def test_extract_codes_equals_encode_indices(digits):
    vqvae = tiny_vqvae(digits)
    dataset = ImageTensorDataset(digits.test.images[:50], digits.test.labels[:50])
    codes, labels = P.extract_codes(vqvae, dataset, batch_size=16, progress=False)
    with torch.no_grad():
        expected = vqvae.encode_indices(ImageCollator()([dataset[i] for i in range(50)])["pixel_values"])
    assert codes.dtype == torch.uint8 and codes.shape == (50, 7, 7)
    assert torch.equal(codes.long(), expected)
    assert len(codes.unique()) > 1
    assert torch.equal(labels, digits.test.labels[:50])
    assert P._code_dtype(512) == torch.int16 and P._code_dtype(256) == torch.uint8


def test_extraction_is_cached_and_keyed_by_weights_and_data(digits, tmp_path, monkeypatch):
    vqvae = tiny_vqvae(digits)
    dataset = ImageTensorDataset(digits.test.images[:40], digits.test.labels[:40])
    codes, labels = P.extract_codes(vqvae, dataset, batch_size=16, cache_dir=tmp_path, progress=False)
    (path,) = tmp_path.glob("codes-*.safetensors")
    mtime = path.stat().st_mtime_ns

    def must_not_encode(*args, **kwargs):
        raise AssertionError("the codes were encoded again instead of read from the cache")

    monkeypatch.setattr(P, "_encode_dataset", must_not_encode)
    cached, cached_labels = P.extract_codes(vqvae, dataset, batch_size=8, cache_dir=tmp_path, progress=False)
    assert torch.equal(cached, codes) and torch.equal(cached_labels, labels)
    assert path.stat().st_mtime_ns == mtime
    # A reloaded copy of the same weights hits the cache; other weights or other images do not.
    vqvae.save_pretrained(tmp_path / "vq")
    P.extract_codes(AutoModel.from_pretrained(tmp_path / "vq"), dataset, cache_dir=tmp_path, progress=False)
    with pytest.raises(AssertionError, match="encoded again"):
        P.extract_codes(tiny_vqvae(digits, seed=1), dataset, cache_dir=tmp_path, progress=False)
    with pytest.raises(AssertionError, match="encoded again"):
        other = ImageTensorDataset(digits.test.images[1:41], digits.test.labels[1:41])
        P.extract_codes(vqvae, other, cache_dir=tmp_path, progress=False)
    with pytest.raises(AssertionError, match="encoded again"):  # binarized pixels give other codes
        P.extract_codes(vqvae, dataset, cache_dir=tmp_path, collator=ImageCollator(binarize=True), progress=False)


def test_training_a_transformer_prior_prints_no_loss_type_warning(tmp_path, capfd):
    """transformers warns "loss_type=None ... unrecognized" at the first loss of a GPT2LMHeadModel (its class name
    matches no loss name) and then uses the causal-LM loss anyway: the prior trainer names that loss, so a new user's
    first run prints no such line."""
    from transformers import AutoModelForCausalLM
    from transformers.utils.logging import warning_once

    from hf_autoencoders.models import code_priors

    prior = AutoModelForCausalLM.from_config(code_priors.transformer_prior_config(16, 4, hidden_size=16, num_layers=1))
    assert prior.loss_type is None  # what transformers leaves, and what warned
    warning_once.cache_clear()
    P.fit_prior(prior, P.CodeDataset(torch.randint(0, 16, (8, 4, 4))), output_dir=tmp_path, max_steps=2,
                per_device_train_batch_size=4, report_to=[])
    assert prior.loss_type == "ForCausalLM"
    assert "loss_type" not in capfd.readouterr().err


def test_code_dataset_items_are_model_inputs():
    codes = torch.randint(0, 16, (5, 7, 7), dtype=torch.uint8)
    batch = P.collate_codes([P.CodeDataset(codes, torch.arange(5))[i] for i in range(3)])
    assert set(batch) == {"input_ids", "class_labels"}
    assert batch["input_ids"].dtype == torch.long and batch["input_ids"].shape == (3, 7, 7)
    assert set(P.collate_codes([P.CodeDataset(codes)[0]])) == {"input_ids"}
    with pytest.raises(ValueError, match="codes"):
        P.CodeDataset(torch.zeros(5, 7))


def test_run_writes_prior_pictures_and_metrics(run):
    root, metrics = run
    prior_dir = root / "prior"
    for name in ("model.safetensors", "config.json", "samples.png", "uniform_samples.png", "README.md",
                 "all_results.json"):
        assert (prior_dir / name).is_file(), name
    results = json.loads((prior_dir / "all_results.json").read_text())
    assert "eval_loss" in results and "train_loss" in results
    assert results["test_bits_per_code"] == pytest.approx(results["test_nll_per_code_nats"] / math.log(2))
    assert results["uniform_nll_per_code_nats"] == pytest.approx(math.log(16))
    assert results["eval_loss"] == pytest.approx(results["test_nll_per_code_nats"], rel=1e-4)  # same test set
    prior = AutoModel.from_pretrained(prior_dir)
    assert isinstance(prior, H.PixelCNNPriorModel)
    assert (prior.config.num_embeddings, prior.config.grid_size, prior.config.hidden_size) == (16, 7, 8)
    assert "PixelCNN prior" in (prior_dir / "README.md").read_text()


def test_reloaded_prior_generates_the_same_samples(run, tmp_path):
    root, _ = run
    vqvae = AutoModel.from_pretrained(root / "vqvae").eval()
    prior = AutoModel.from_pretrained(root / "prior")
    codes = prior.generate(8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(codes, prior.generate(8, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(codes, prior.generate(8, generator=torch.Generator().manual_seed(4)))
    # samples.png was drawn by the prior in memory, before saving, with the run's seed (3).
    with torch.no_grad():
        plot_samples(vqvae.decode_indices(codes).clamp(0, 1), tmp_path / "again.png")
    written, again = (np.asarray(Image.open(path)) for path in (root / "prior" / "samples.png", tmp_path / "again.png"))
    assert written.shape == again.shape and (written == again).all()


def test_sample_command_with_prior(run, tmp_path):
    root, _ = run
    output = tmp_path / "grid.png"
    cli_main(["sample", str(root / "vqvae"), "--prior", str(root / "prior"), "--num_samples", "4",
              "--output", str(output)])
    assert Image.open(output).size[0] > 28


def test_evaluate_command_with_label_metrics(run, tmp_path, capsys):
    root, _ = run
    output = tmp_path / "metrics.json"
    cli_main(["evaluate", str(root / "vqvae"), "--max_eval_samples", "64", "--downstream", "--linear_probe",
              "--sample_quality", "16", "--prior", str(root / "prior"), "--classifier_epochs", "1",
              "--max_train_samples", "300", "--output", str(output)])
    metrics = json.loads(output.read_text())
    assert metrics == json.loads(capsys.readouterr().out)
    assert metrics["num_examples"] == 64 and metrics["sample_num_samples"] == 16
    for key in ("classifier_test_accuracy", "downstream_accuracy", "linear_probe_accuracy",
                "sample_confident_fraction"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["linear_probe_accuracy"] > 0.3  # ten classes: chance is 0.1
    assert 1.0 <= metrics["sample_inception_score"] <= 10.0
    with pytest.raises(SystemExit):
        cli_main(["evaluate", str(root / "vqvae"), "--output", str(output)])
    assert "already exists" in capsys.readouterr().err


def test_second_run_reuses_codes_and_refuses_existing_output(run, monkeypatch):
    root, _ = run
    args = ["--vqvae", str(root / "vqvae"), "--output_dir", str(root / "prior"), "--do_train", *PRIOR_FLAGS]
    with pytest.raises(FileExistsError, match="already holds files"):
        P.run_prior_training(*parse_prior_args(args))
    monkeypatch.setattr(P, "_encode_dataset", lambda *a, **k: pytest.fail("codes were extracted again"))
    args[args.index("--max_steps") + 1] = "1"
    metrics = P.run_prior_training(*parse_prior_args([*args, "--overwrite_output_dir"]))
    assert "train_loss" in metrics and not any(name.startswith(("eval_", "test_")) for name in metrics)


def test_class_conditional_prior(run, tmp_path):
    root, _ = run
    args = ["--vqvae", str(root / "vqvae"), "--output_dir", str(tmp_path / "cond"), "--class_conditional",
            "--code_cache_dir", str(root / "prior" / "code_cache"), "--do_train", *PRIOR_FLAGS]
    args[args.index("--max_steps") + 1] = "1"
    P.run_prior_training(*parse_prior_args(args))
    prior = AutoModel.from_pretrained(tmp_path / "cond")
    assert prior.config.num_classes == 10
    assert (tmp_path / "cond" / "samples.png").is_file()
    assert not (tmp_path / "cond" / "eval_results.json").exists()  # no --do_eval: nothing evaluated
    assert "No test metrics were measured" in (tmp_path / "cond" / "README.md").read_text()


def test_vae_is_refused_with_its_model_type(tmp_path):
    torch.manual_seed(0)
    H.VAEModel(H.VAEConfig(hidden_size=8, latent_dim=2)).save_pretrained(tmp_path / "vae")
    args = parse_prior_args(["--vqvae", str(tmp_path / "vae"), "--output_dir", str(tmp_path / "out")])
    with pytest.raises(ValueError, match="hf_autoencoders_vae.*VQ-VAE"):
        P.run_prior_training(*args)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        P.run_prior_training(*parse_prior_args(["--vqvae", str(tmp_path), "--output_dir", str(tmp_path / "o")]))
    assert not (tmp_path / "out").exists()


def test_vqvae_argument_is_required():
    with pytest.raises(SystemExit):
        parse_prior_args(["--output_dir", "x"])
