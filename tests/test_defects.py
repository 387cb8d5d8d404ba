"""The defects a hostile test found (issue 15), one test each: lost work, silent damage and misleading results, and
what goes to the Hub. Each test failed on the code before the fix."""

import errno
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from safetensors.torch import load_file

import hf_autoencoders.models as M
from hf_autoencoders.cli import main as cli_main
from hf_autoencoders.hub import HubPushCallback, push_to_hub, upload_files
from hf_autoencoders.training import parse_args, parse_prior_args, run_training
from hf_autoencoders.training.prior import run_prior_training
from hf_autoencoders.training.trainer import AutoencoderTrainer, TrainingDivergedError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--hidden_size", "16", "--per_device_train_batch_size", "32", "--disable_tqdm", "true", "--logging_steps",
        "2", "--max_eval_samples", "32", "--report_to", "none"]
VAE = ["--backbone", "mlp", "--latent_dim", "4"]


def train(args, model_type="vqvae"):
    return run_training(*parse_args(args + TINY, model_type=model_type))


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """A finished VAE run with checkpoints at steps 2 and 4."""
    out = tmp_path_factory.mktemp("runs") / "vae"
    train(["--output_dir", str(out), "--do_train", "--max_steps", "4", "--save_steps", "2", *VAE], "vae")
    return out


# ------------------------------------------------------------------------------------------------------ divergence


def test_a_diverged_run_stops_keeps_finite_checkpoints_and_exits_non_zero(tmp_path):
    out = tmp_path / "diverged"
    with pytest.raises(TrainingDivergedError, match="training diverged at step .* NaN or infinite.*--learning_rate"):
        train(["--output_dir", str(out), "--do_train", "--do_eval", "--max_steps", "40", "--save_steps", "1",
               "--learning_rate", "1e6", "--lr_scheduler_type", "constant", *VAE], "vae")
    assert not (out / "model.safetensors").exists()  # the diverged weights were never saved as the model
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert checkpoints
    for checkpoint in checkpoints:
        assert all(torch.isfinite(t).all() for t in load_file(checkpoint / "model.safetensors").values())
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train_vae.py"), "--output_dir", str(tmp_path / "cli"),
         "--do_train", "--max_steps", "40", "--learning_rate", "1e6", "--lr_scheduler_type", "constant", *VAE, *TINY],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: training diverged")


def test_nonfinite_steps_can_be_skipped(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = AutoencoderTrainer.compute_loss

    def sometimes_nan(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        calls["n"] += 1
        loss = original(self, model, inputs, return_outputs, num_items_in_batch)
        return loss * math.nan if calls["n"] == 3 else loss

    monkeypatch.setattr(AutoencoderTrainer, "compute_loss", sometimes_nan)
    out = tmp_path / "skip"
    train(["--output_dir", str(out), "--do_train", "--max_steps", "6", "--skip_nonfinite_steps", *VAE], "vae")
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert max(entry.get("skipped_steps", 0) for entry in history) == 1
    assert all(torch.isfinite(t).all() for t in load_file(out / "model.safetensors").values())


def test_results_json_never_holds_bare_nan(tmp_path):
    from hf_autoencoders.results import dumps, write_json

    path = write_json(tmp_path / "r.json", {"a": math.nan, "b": [math.inf, 1.0], "c": torch.tensor(2.0)})
    assert json.loads(path.read_text()) == {"a": None, "b": [None, 1.0], "c": 2.0}
    assert "NaN" not in dumps({"x": float("nan")})


# -------------------------------------------------------------------------------------------------------- resuming


def test_the_overwrite_guard_holds_whatever_resume_says(tmp_path, vae_run):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text("my own file")
    before = snapshot(mine)
    for resume in ("false", "False", str(vae_run / "checkpoint-2")):
        with pytest.raises((FileExistsError, ValueError), match="already holds files|belongs to the run"):
            train(["--output_dir", str(mine), "--do_train", "--max_steps", "2", "--resume_from_checkpoint", resume,
                   *VAE], "vae")
    assert snapshot(mine) == before
    run_before = snapshot(vae_run)
    with pytest.raises(ValueError, match="resumes only into its own folder"):
        train(["--output_dir", str(tmp_path / "other"), "--do_train", "--max_steps", "6",
               "--resume_from_checkpoint", str(vae_run / "checkpoint-2"), *VAE], "vae")
    assert snapshot(vae_run) == run_before and not (tmp_path / "other").exists()


@pytest.mark.parametrize("damage", ["optimizer.pt", "scheduler.pt", "rng_state.pth", "truncate"])
def test_latest_skips_an_incomplete_or_corrupt_checkpoint(tmp_path, vae_run, damage):
    import shutil

    from hf_autoencoders.training.checkpoints import resolve_checkpoint

    run = tmp_path / "run"
    shutil.copytree(vae_run, run)
    if damage == "truncate":
        weights = run / "checkpoint-4" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-100])
    else:
        (run / "checkpoint-4" / damage).unlink()
    assert resolve_checkpoint("latest", str(run)) == str(run / "checkpoint-2")
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        resolve_checkpoint(str(run / "checkpoint-4"), str(run))


def test_resume_refuses_settings_that_change_the_model(tmp_path, vae_run):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(vae_run, run)
    before = snapshot(run)
    for flags, named in ((["--kl_weight", "0.5"], "kl_weight=0.5"), (["--likelihood", "bernoulli"], "likelihood")):
        with pytest.raises(ValueError, match=named):
            train(["--output_dir", str(run), "--do_train", "--max_steps", "6", "--resume_from_checkpoint", "latest",
                   *VAE, *flags], "vae")
    with pytest.raises(ValueError, match="holds a 'hf_autoencoders_vae' model"):
        train(["--output_dir", str(run), "--do_train", "--max_steps", "6", "--resume_from_checkpoint", "latest"])
    assert snapshot(run) == before
    train(["--output_dir", str(run), "--do_train", "--max_steps", "6", "--resume_from_checkpoint", "latest", *VAE],
          "vae")  # the same settings resume
    assert json.loads((run / "trainer_state.json").read_text())["global_step"] == 6


def test_train_prior_resumes_latest(tmp_path):
    vqvae = tmp_path / "vqvae"
    train(["--output_dir", str(vqvae), "--do_train", "--max_steps", "2", "--embedding_dim", "4", "--num_embeddings",
           "16"])
    flags = ["--vqvae", str(vqvae), "--output_dir", str(tmp_path / "prior"), "--do_train", "--prior_type", "pixelcnn",
             "--hidden_size", "8", "--num_layers", "2", "--kernel_size", "3", "--save_steps", "2", "--disable_tqdm",
             "true", "--report_to", "none", "--max_train_samples", "64", "--max_eval_samples", "32"]
    run_prior_training(*parse_prior_args([*flags, "--max_steps", "2"]))
    metrics = run_prior_training(*parse_prior_args([*flags, "--max_steps", "4", "--resume_from_checkpoint", "latest",
                                                    "--do_eval"]))
    assert json.loads((tmp_path / "prior" / "trainer_state.json").read_text())["global_step"] == 4
    assert math.isfinite(metrics["test_nll_per_code_nats"])


def test_a_truncated_code_cache_is_rebuilt(tmp_path):
    from hf_autoencoders.data import load_image_dataset
    from hf_autoencoders.training.prior import extract_codes

    torch.manual_seed(0)
    vqvae = M.VQVAEModel(M.VQVAEConfig(hidden_size=8, num_embeddings=16, embedding_dim=4, num_residual_blocks=1))
    data = torch.utils.data.Subset(load_image_dataset(None).test, range(16))
    codes, _ = extract_codes(vqvae, data, cache_dir=tmp_path, progress=False)
    cache = next(tmp_path.glob("codes-*.safetensors"))
    cache.write_bytes(cache.read_bytes()[:50])
    again, _ = extract_codes(vqvae, data, cache_dir=tmp_path, progress=False)
    assert torch.equal(again, codes) and len(load_file(cache)["codes"]) == 16


# ------------------------------------------------------------------------------------------------ misleading results


def test_a_prior_for_another_codebook_or_model_is_refused(tmp_path):
    vqvae = M.VQVAEModel(M.VQVAEConfig(hidden_size=8, num_embeddings=16, embedding_dim=4))
    small = M.PixelCNNPriorModel(M.PixelCNNPriorConfig(num_embeddings=8, grid_size=7, hidden_size=8, num_layers=1))
    with pytest.raises(ValueError, match="8 codes, but this VQ-VAE has 7x7 maps of K = 16"):
        vqvae.sample(2, prior=small)
    vae = M.VAEModel(M.VAEConfig(hidden_size=8))
    with pytest.raises(ValueError, match="prior"):
        vqvae.sample(2, prior=vae)
    vae.save_pretrained(tmp_path / "vae")
    with pytest.raises(ValueError, match="model type 'hf_autoencoders_vae'"):
        M.PixelCNNPriorModel.from_pretrained(tmp_path / "vae")


def test_do_eval_without_a_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="untrained, random model"):
        train(["--output_dir", str(tmp_path / "x"), "--do_eval"])
    assert not (tmp_path / "x").exists()


def test_evaluate_gives_the_same_numbers_for_the_same_seed(tmp_path, vae_run, capsys):
    outputs = []
    for _ in range(2):
        cli_main(["evaluate", str(vae_run), "--max_eval_samples", "32", "--num_importance_samples", "4"])
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1] and "iwae_nll" in outputs[0]


@pytest.mark.parametrize("args, message", [
    (["--max_train_samples", "0"], "--max_train_samples must be a positive number"),
    (["--config_overrides", "gaussian_variance=Infinity"], "gaussian_variance must be a finite number"),
])
def test_training_flags_that_would_be_ignored_or_break_are_refused(tmp_path, args, message):
    with pytest.raises(ValueError, match=message):
        train(["--output_dir", str(tmp_path / "x"), "--do_train", "--max_steps", "1", *args])


def test_fsq_levels_of_ten_or_more_can_be_given_on_the_command_line(tmp_path):
    train(["--output_dir", str(tmp_path / "fsq"), "--do_train", "--max_steps", "1",
           "--config_overrides", "quantizer=fsq,fsq_levels=[12,10]"])
    assert json.loads((tmp_path / "fsq" / "config.json").read_text())["fsq_levels"] == [12, 10]


def test_a_full_disk_is_one_clear_line(tmp_path, monkeypatch, capsys):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x" / "model.safetensors"))

    monkeypatch.setattr(AutoencoderTrainer, "save_model", no_space)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train", "--output_dir", str(tmp_path / "x"), "--do_train", "--max_steps", "1", *TINY])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip().startswith("error: no space left on the device")


def test_an_output_dir_that_cannot_be_written_is_refused_before_loading_data(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr("hf_autoencoders.training.run.load_image_dataset",
                        lambda *a, **k: pytest.fail("data was loaded before the folder was checked"))
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        train(["--output_dir", str(tmp_path / "file" / "run"), "--do_train", "--max_steps", "1"])


# ---------------------------------------------------------------------------------------------------------- sharing


def test_uploads_hold_exactly_the_allow_listed_files(tmp_path):
    out = tmp_path / "run"
    train(["--output_dir", str(out), "--do_train", "--do_eval", "--max_steps", "2", "--save_steps", "1"])
    (out / "code_cache").mkdir()
    (out / "code_cache" / "codes-x.safetensors").write_bytes(b"train set as codes")
    code = {p.name for p in out.glob("*.py")}  # what save_pretrained wrote: the model's and the processor's code
    assert {"modeling_vqvae.py", "configuration_autoencoders.py", "image_processing_autoencoders.py"} <= code
    (out / "notes.txt").write_text("mine")
    (out / "my_script.py").write_text("print('mine')")
    expected = {"model.safetensors", "config.json", "preprocessor_config.json", "README.md", "loss_curves.png",
                "reconstructions.png", "samples.png", "code_usage.png", *code}
    assert set(upload_files(out)) == expected
    with_checkpoints = set(upload_files(out, include_checkpoints=True)) - expected
    assert with_checkpoints and all(name.startswith("checkpoint-") for name in with_checkpoints)
    assert not any(name.endswith((".pt", ".pth", ".bin")) for name in with_checkpoints)

    class RecordingHub:
        def create_repo(self, repo_id, **kwargs):
            pass

        def upload_folder(self, repo_id, folder_path, allow_patterns=None, **kwargs):
            self.allow_patterns = allow_patterns
            return "ok"

    hub = RecordingHub()
    push_to_hub(out, "me/run", api=hub)
    assert set(hub.allow_patterns) == expected

    card = ModelCard.load(out / "README.md")
    metadata = card.data.to_dict()
    assert metadata["library_name"] == "transformers" and "pipeline_tag" not in metadata
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert {"psnr", "ssim", "loss", "sample_fd_domain", "reconstruction_kid_domain"} <= set(results)
    assert "train_loss" not in results and "domain: SmallCNN" in card.text
    assert "transformers>=5" in card.text and "## Training" in card.text


def test_the_card_carries_license_and_a_prior_links_its_vqvae(tmp_path):
    from hf_autoencoders.hub import write_model_card

    config = M.PixelCNNPriorConfig(num_embeddings=16, grid_size=7)
    write_model_card(tmp_path, config, "ylecun/mnist", {"test_nll_per_code_nats": 1.5}, license="mit",
                     base_model="me/vqvae-mnist")
    metadata = yaml.safe_load((tmp_path / "README.md").read_text().split("---")[1])
    assert metadata["license"] == "mit" and metadata["base_model"] == "me/vqvae-mnist"
    assert metadata["datasets"] == ["ylecun/mnist"] and metadata["model-index"][0]["results"]
    assert metadata["model-index"][0]["results"][0]["task"]["type"] == "unconditional-image-generation"


def test_model_push_to_hub_is_transformers_own_and_keeps_the_hub_card(tmp_path, vae_run, monkeypatch):
    """`model.push_to_hub` is transformers' (no private API of its): it uploads what save_pretrained writes and the
    card already on the Hub; a run folder, card and pictures included, goes up with `hub.push_to_hub`."""
    from types import SimpleNamespace

    import transformers.utils.hub as transformers_hub
    from transformers import AutoModel

    uploaded = {}
    monkeypatch.setattr(transformers_hub, "hf_api", lambda: SimpleNamespace(
        create_repo=lambda repo_id, **kwargs: SimpleNamespace(repo_id=repo_id)))
    on_the_hub = (vae_run / "README.md").read_text()
    monkeypatch.setattr(transformers_hub.ModelCard, "load", lambda repo_id, **kwargs: ModelCard(on_the_hub))

    def upload(self, work_dir, repo_id, **kwargs):
        uploaded.update({p.name: p.read_bytes() for p in Path(work_dir).iterdir()})
        return "ok"

    monkeypatch.setattr(transformers_hub.PushToHubMixin, "_upload_modified_files", upload)
    AutoModel.from_pretrained(vae_run).push_to_hub("me/vae")
    assert {"model.safetensors", "config.json", "modeling_vae.py", "README.md"} <= set(uploaded)
    assert ModelCard(uploaded["README.md"].decode()).text == ModelCard(on_the_hub).text
    assert not hasattr(M.VAEModel, "_short_card") and "push_to_hub" not in vars(M.AutoencoderPreTrainedModel)


def test_hub_strategy_pushes_checkpoints_while_training(tmp_path):
    pushes = []

    class RecordingHub:
        def create_repo(self, repo_id, **kwargs):
            pass

        def upload_folder(self, repo_id, folder_path, path_in_repo=None, allow_patterns=None, **kwargs):
            pushes.append((Path(folder_path).name, path_in_repo, sorted(allow_patterns)))
            return "ok"

    from hf_autoencoders.data import ImageCollator, load_image_dataset
    from hf_autoencoders.training import training_arguments

    callback = HubPushCallback("me/run", "checkpoint", api=RecordingHub())
    model = M.VQVAEModel(M.VQVAEConfig(hidden_size=8, num_embeddings=16, embedding_dim=4, num_residual_blocks=1))
    args = training_arguments(tmp_path, max_steps=2, save_strategy="steps", save_steps=1,
                              per_device_train_batch_size=16)
    AutoencoderTrainer(model=model, args=args, train_dataset=load_image_dataset(None).train,
                       data_collator=ImageCollator(), callbacks=[callback]).train()
    assert [(name, where) for name, where, _ in pushes] == [
        ("checkpoint-1", None), ("checkpoint-1", "last-checkpoint"), ("checkpoint-2", None),
        ("checkpoint-2", "last-checkpoint")]
    assert all(not any(f.endswith((".pt", ".pth", ".bin")) for f in files) for _, _, files in pushes)


def test_images_reach_every_tracker(tmp_path):
    from transformers import TrainerCallback

    from hf_autoencoders.data import ImageCollator, load_image_dataset
    from hf_autoencoders.training import training_arguments

    logged = []

    class FakeModule:
        Image = staticmethod(lambda grid: ("image", grid.shape))

        @staticmethod
        def log(values):
            logged.append(sorted(k for k in values if k != "train/global_step"))

    class FakeWandb(TrainerCallback):
        _wandb, _initialized = FakeModule(), True

    class FakeTrackio(TrainerCallback):
        _trackio, _initialized = FakeModule(), True

    data = load_image_dataset(None)
    model = M.AEModel(M.AEConfig(backbone="mlp", hidden_size=16, latent_dim=4))
    trainer = AutoencoderTrainer(model=model, args=training_arguments(
        tmp_path, max_steps=2, eval_strategy="steps", eval_steps=2, per_device_train_batch_size=16),
        train_dataset=data.train, eval_dataset=data.test,
        data_collator=ImageCollator(), callbacks=[FakeWandb(), FakeTrackio()],
        image_log_pixel_values=ImageCollator()([data.test[i] for i in range(4)])["pixel_values"])
    trainer.train()
    assert logged.count(["reconstructions"]) == 2 and logged.count(["samples"]) == 2
