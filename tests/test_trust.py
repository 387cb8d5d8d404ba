"""Results a user can trust (issue 29): a damaged code cache is never read, evaluate preprocesses as the model was
trained, a class-conditional prior is measured with the data's classes, and an upload that fails never stops a
run or loses its work. Each test failed on the code before its fix."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import hf_autoencoders.models as M
from hf_autoencoders.cli import main as cli_main
from hf_autoencoders.data import load_image_dataset
from hf_autoencoders.training import parse_args, parse_prior_args, run_training
from hf_autoencoders.training.prior import extract_codes, run_prior_training


def vqvae():
    torch.manual_seed(0)
    return M.VQVAEModel(M.VQVAEConfig(hidden_size=8, num_embeddings=16, embedding_dim=4, num_residual_blocks=1))


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        cli_main([str(a) for a in args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------------------------------------------- the code cache


def test_codes_edited_on_disk_are_never_read(tmp_path, caplog):
    """The prior's code cache carries the SHA-256 of its codes and labels: codes edited on disk (a test NLL near 0)
    are detected and extracted again, as the decoded-image cache is."""
    model = vqvae()
    data = torch.utils.data.Subset(load_image_dataset(None).test, range(16))
    codes, _ = extract_codes(model, data, cache_dir=tmp_path, progress=False)
    cache = next(tmp_path.glob("codes-*.safetensors"))
    from safetensors import safe_open

    with safe_open(cache, "pt") as f:
        metadata = f.metadata()
    save_file({"codes": torch.zeros_like(codes)}, cache, metadata=metadata)  # every code 0, as if edited
    with caplog.at_level("WARNING"):
        again, _ = extract_codes(model, data, cache_dir=tmp_path, progress=False)
    assert torch.equal(again, codes)
    assert "does not match its SHA-256" in caplog.text
    assert torch.equal(load_file(cache)["codes"], codes)  # rewritten


# ---------------------------------------------------------------------------------------- evaluate as trained


def test_evaluate_binarizes_as_the_model_was_trained(tmp_path, capsys):
    """A model trained on binarized images (its saved processor says do_binarize): evaluate binarizes without being
    told, so its figures are those of the card (before, they were measured on gray images)."""
    model = M.VAEModel(M.VAEConfig(backbone="mlp", hidden_size=16, latent_dim=4, likelihood="bernoulli"))
    model.save_pretrained(tmp_path / "vae")
    M.AutoencoderImageProcessor(image_size=28, num_channels=1, do_binarize=True).save_pretrained(tmp_path / "vae")
    common = ["evaluate", tmp_path / "vae", "--max_eval_samples", "16", "--num_importance_samples", "2"]
    results = {}
    for name, flags in (("saved", []), ("binarized", ["--binarize"]), ("gray", ["--binarize", "false"])):
        code, out, err = run_cli([*common, *flags], capsys)
        assert code == 0, err[-2000:]
        results[name] = json.loads(out)["loss"]
    assert results["saved"] == results["binarized"] != results["gray"]


# ------------------------------------------------------------------------------- a class-conditional prior's FD


def test_a_class_conditional_prior_is_sampled_with_the_test_labels(tmp_path, capsys):
    """evaluate --fid --prior (class-conditional): the samples are drawn with the test images' classes, so samples
    and test images have the same class balance."""
    model = vqvae()
    model.save_pretrained(tmp_path / "vqvae")
    prior = M.PixelCNNPriorModel(M.PixelCNNPriorConfig(num_embeddings=16, grid_size=7, hidden_size=8, num_layers=1,
                                                       num_classes=10))
    prior.save_pretrained(tmp_path / "prior")
    code, out, err = run_cli(["evaluate", tmp_path / "vqvae", "--prior", tmp_path / "prior", "--fid",
                              "--max_eval_samples", "24", "--max_train_samples", "64", "--classifier_epochs", "1",
                              "--sample_quality", "12"], capsys)
    assert code == 0, err[-3000:]
    metrics = json.loads(out)
    assert metrics["quality_num_samples"] == 24 and metrics["sample_num_samples"] == 12


# ------------------------------------------------------------------------------------------- failing uploads


class FlakyHub:
    """A Hub that refuses the first `failures` uploads (no network), then takes them; records what it got."""

    def __init__(self, failures: int):
        self.failures, self.pushed = failures, []

    def __call__(self, token=None):
        return self

    def create_repo(self, repo_id, **kwargs):
        pass

    def upload_folder(self, repo_id, folder_path, path_in_repo=None, allow_patterns=None, **kwargs):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("no network")
        self.pushed.append((Path(folder_path).name, path_in_repo, sorted(allow_patterns)))
        return f"https://hub/{repo_id}"


TINY = ["--hidden_size", "8", "--per_device_train_batch_size", "32", "--disable_tqdm", "true", "--logging_steps", "2",
        "--max_eval_samples", "32", "--report_to", "none"]


def test_a_failed_upload_never_stops_training_and_is_retried(tmp_path, monkeypatch, caplog):
    import hf_autoencoders.hub as hub

    flaky = FlakyHub(failures=1)
    monkeypatch.setattr(hub, "HfApi", flaky)
    out = tmp_path / "run"
    with caplog.at_level("WARNING"):
        run_training(*parse_args(["--output_dir", str(out), "--do_train", "--max_steps", "3", "--save_steps", "1",
                                  "--push_to_hub", "--hub_model_id", "me/run", "--hub_strategy", "every_save",
                                  "--backbone", "mlp", *TINY], model_type="ae"))
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3
    assert "could not upload" in caplog.text and "next save" in caplog.text
    assert [name for name, _, _ in flaky.pushed] == ["checkpoint-2", "checkpoint-3", "run"]


def test_a_failed_final_upload_keeps_the_finished_run_and_says_how_to_push(tmp_path, monkeypatch):
    import hf_autoencoders.hub as hub

    monkeypatch.setattr(hub, "HfApi", FlakyHub(failures=10))
    out = tmp_path / "run"
    with pytest.raises(hub.HubUploadError, match=f"hf-autoencoders push {out} me/run"):
        run_training(*parse_args(["--output_dir", str(out), "--do_train", "--max_steps", "1", "--push_to_hub",
                                  "--hub_model_id", "me/run", "--backbone", "mlp", *TINY], model_type="ae"))
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()


def test_a_prior_run_pushes_through_the_library(tmp_path, monkeypatch):
    """train-prior --push_to_hub: the allow-listed files and the card, as an autoencoder run (before, the Trainer's
    own push of the whole folder, the code cache included, which failed offline at the Trainer's creation)."""
    import hf_autoencoders.hub as hub

    flaky = FlakyHub(failures=0)
    monkeypatch.setattr(hub, "HfApi", flaky)
    vqvae().save_pretrained(tmp_path / "vqvae")
    run_prior_training(*parse_prior_args([
        "--vqvae", str(tmp_path / "vqvae"), "--output_dir", str(tmp_path / "prior"), "--do_train", "--max_steps", "1",
        "--hidden_size", "8", "--num_layers", "1", "--prior_type", "pixelcnn", "--kernel_size", "3",
        "--max_train_samples", "32",
        "--max_eval_samples", "16", "--disable_tqdm", "true", "--report_to", "none", "--push_to_hub",
        "--hub_model_id", "me/prior"]))
    assert [name for name, _, _ in flaky.pushed] == ["checkpoint-1", "prior"]  # --hub_strategy every_save
    assert {"README.md", "config.json", "model.safetensors", "samples.png"} <= set(flaky.pushed[-1][2])
    assert not any(name.startswith("code_cache") or name.endswith(".pt") for _, _, files in flaky.pushed
                   for name in files)
