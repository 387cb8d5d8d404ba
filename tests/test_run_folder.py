"""A run and its folder (issue 29): a run owns its output folder for its life, never writes into its own input model,
an overwrite replaces the old run's checkpoints before training, a finished run resumed completes what is missing
without training, and a run that would train nothing is refused. Each test failed on the code before its fix."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

import hf_autoencoders.models  # noqa: F401  (registers the Auto classes)
from hf_autoencoders.training import parse_args, run_training
from hf_autoencoders.training.trainer import AutoencoderTrainer

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--hidden_size", "8", "--per_device_train_batch_size", "32", "--disable_tqdm", "true", "--logging_steps", "2",
        "--max_eval_samples", "32", "--report_to", "none", "--backbone", "mlp", "--latent_dim", "4"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def train(*args: str, model_type: str = "ae") -> dict:
    return run_training(*parse_args([*args, *TINY], model_type=model_type))


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------- one run per folder


def test_a_second_run_into_a_running_runs_folder_is_refused(tmp_path, monkeypatch):
    """Run B starts while run A trains in the same folder (even with --overwrite_output_dir): B is refused, naming
    A's process, and A finishes with its own model; afterwards the folder holds no lock."""
    from hf_autoencoders.training.checkpoints import LOCK_FILE, RunFolderBusyError

    out = tmp_path / "run"
    refusals = []
    run_b = parse_args(["--output_dir", str(out), "--do_train", "--max_steps", "1", "--overwrite_output_dir", *TINY],
                       model_type="ae")  # parsed before run A: new TrainingArguments would reset A's accelerator

    class StartAnotherRun(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1:
                with pytest.raises(RunFolderBusyError) as info:
                    run_training(*run_b)
                refusals.append(str(info.value))

    original = AutoencoderTrainer.__init__
    trainers = []

    def with_callback(self, *args, **kwargs):
        original(self, *args, **kwargs)
        trainers.append(self)
        if len(trainers) == 1:  # run A's trainer only
            self.add_callback(StartAnotherRun())

    monkeypatch.setattr(AutoencoderTrainer, "__init__", with_callback)
    train("--output_dir", str(out), "--do_train", "--max_steps", "3", "--save_steps", "1")
    assert len(refusals) == 1
    assert f"in use by another run (process {os.getpid()} on host" in refusals[0]
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3
    assert not (out / LOCK_FILE).exists()


def test_another_process_is_refused_and_a_killed_runs_lock_blocks_nobody(tmp_path):
    """A lock held here refuses a command in another process with one line naming this process; a process killed
    while holding the lock (its file left behind) does not block the next run."""
    from hf_autoencoders.training.checkpoints import LOCK_FILE, RunFolderLock

    busy = tmp_path / "busy"
    with RunFolderLock(busy):
        result = subprocess.run([sys.executable, "-m", "hf_autoencoders.cli", "train", "--output_dir", str(busy),
                                 "--overwrite_output_dir", "--do_train", "--max_steps", "1"],
                                capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: output_dir {busy} is in use by another run "
                                                              f"(process {os.getpid()} on host")

    killed = tmp_path / "killed"
    subprocess.run([sys.executable, "-c", "import os, signal; from hf_autoencoders.training.checkpoints import "
                    f"RunFolderLock; RunFolderLock({str(killed)!r}).acquire(); os.kill(os.getpid(), signal.SIGKILL)"],
                   env=ENV, timeout=120)
    assert (killed / LOCK_FILE).is_file()  # left behind by the killed process
    train("--output_dir", str(killed), "--do_train", "--max_steps", "1", "--overwrite_output_dir")
    assert (killed / "model.safetensors").is_file() and not (killed / LOCK_FILE).exists()


def test_a_lock_file_no_run_holds_is_no_users_file(tmp_path):
    from hf_autoencoders.training.checkpoints import LOCK_FILE, check_output_dir

    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / LOCK_FILE).write_text('{"pid": 1, "host": "elsewhere"}')
    check_output_dir(stale, overwrite=False)  # a lock no one holds does not make the folder a user's


# ------------------------------------------------------------------------------------- what a run trains and loads


@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "vae"
    train("--output_dir", str(out), "--do_train", "--max_steps", "2", "--save_steps", "2", model_type="vae")
    return out


def test_fine_tuning_applies_the_settings_that_keep_the_architecture(tmp_path, vae_folder):
    """--model_name_or_path with --kl_weight and a likelihood variance: the trained weights, the new settings (before,
    the saved config was kept and the flags were dropped)."""
    out = tmp_path / "tuned"
    train("--output_dir", str(out), "--model_name_or_path", str(vae_folder), "--do_train", "--max_steps", "1",
          "--learning_rate", "0", "--kl_weight", "0.5", "--config_overrides", "gaussian_variance=0.2",
          model_type="vae")
    config = json.loads((out / "config.json").read_text())
    assert (config["kl_weight"], config["gaussian_variance"]) == (0.5, 0.2)
    source, tuned = load_file(vae_folder / "model.safetensors"), load_file(out / "model.safetensors")
    assert source.keys() == tuned.keys() and all(torch.equal(source[k], tuned[k]) for k in source)  # lr 0


def test_evaluating_a_given_model_needs_no_training(tmp_path, vae_folder):
    metrics = train("--output_dir", str(tmp_path / "eval"), "--model_name_or_path", str(vae_folder), "--do_eval",
                    "--num_train_epochs", "0", "--fid", "false", model_type="vae")
    assert metrics["eval_num_examples"] == 32 and "train_loss" not in metrics


# ------------------------------------------------------------------------------------------ resuming, overwriting


def test_resuming_a_finished_run_completes_it_without_training(tmp_path, vae_folder):
    """A run killed after its last checkpoint (during its final save or card) and resumed with `latest`: the model is
    its last checkpoint's, the card and results are written, no step is trained (before: step 3 of 2, and other
    weights)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(vae_folder, run)
    for name in ("model.safetensors", "README.md", "samples.png", "train_results.json"):
        (run / name).unlink()
    metrics = train("--output_dir", str(run), "--do_train", "--max_steps", "2", "--save_steps", "2",
                    "--resume_from_checkpoint", "latest", model_type="vae")
    assert json.loads((run / "trainer_state.json").read_text())["global_step"] == 2
    last, final = load_file(run / "checkpoint-2" / "model.safetensors"), load_file(run / "model.safetensors")
    assert all(torch.equal(last[k], final[k]) for k in last)
    assert (run / "README.md").is_file() and (run / "samples.png").is_file()
    assert metrics["epoch"] > 0
    with pytest.raises(ValueError, match="has trained 2 steps, more than the 1"):
        train("--output_dir", str(run), "--do_train", "--max_steps", "1", "--resume_from_checkpoint", "latest",
              model_type="vae")


def test_an_overwrite_clears_the_run_it_replaces_and_keeps_the_users_files(tmp_path, vae_folder, monkeypatch):
    """--overwrite_output_dir, killed before its first checkpoint: `latest` must not continue the old run (before, it
    picked the old run's checkpoint-2). The old run's checkpoints, model and results are gone; a user's file stays."""
    import shutil

    from hf_autoencoders.training.checkpoints import resolve_checkpoint

    run = tmp_path / "run"
    shutil.copytree(vae_folder, run)
    (run / "notes.txt").write_text("mine")

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(AutoencoderTrainer, "training_step", killed)
    with pytest.raises(KeyboardInterrupt):
        train("--output_dir", str(run), "--do_train", "--max_steps", "4", "--overwrite_output_dir", "--seed", "5",
              model_type="vae")
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        resolve_checkpoint("latest", str(run))
