"""Training runs: the example scripts, resume after SIGKILL, output safety, multi-process, sharing offline, and one
evaluation per run, only with --do_eval."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForCausalLM

import hf_autoencoders.models  # noqa: F401  (registers the Auto classes)
from hf_autoencoders import VAEConfig, VAEModel
from hf_autoencoders.data import DatasetNotFoundError
from hf_autoencoders.evaluation import evaluate
from hf_autoencoders.hub import push_to_hub
from hf_autoencoders.plots import image_grid
from hf_autoencoders.training import parse_args, run_training

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--hidden_size", "16", "--per_device_train_batch_size", "32", "--disable_tqdm", "true",
        "--logging_steps", "2", "--max_eval_samples", "64"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false"}


def train(args: list[str], model_type: str = "vqvae"):
    return run_training(*parse_args(args + TINY, model_type=model_type))


def script(name: str, *args: str, launcher: list[str] | None = None, timeout: int = 600):
    command = (launcher or [sys.executable]) + [str(ROOT / "examples" / name), *args]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=timeout)


def test_example_script_on_the_embedded_default(tmp_path):
    out = tmp_path / "vqvae"
    result = script("train_vqvae.py", "--output_dir", str(out), "--do_train", "--do_eval", "--max_steps", "4", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "README.md",
                 "reconstructions.png", "samples.png", "all_results.json"):
        assert (out / name).is_file(), name
    model = AutoModel.from_pretrained(out)
    assert model.config.model_type == "hf_autoencoders_vqvae"
    results = json.loads((out / "all_results.json").read_text())
    assert {"eval_reconstruction_loss", "eval_psnr", "eval_codebook_usage", "train_loss"} <= set(results)
    card = (out / "README.md").read_text()
    assert "| psnr |" in card and "reconstructions.png" in card and "trust_remote_code" in card


@pytest.mark.parametrize("model_type", ["ae", "vae"])
def test_every_loss_term_is_logged_for_train_and_eval(tmp_path, model_type):
    metrics = train(["--output_dir", str(tmp_path / model_type), "--do_train", "--do_eval", "--max_steps", "4",
                     "--backbone", "mlp"], model_type)
    assert "eval_reconstruction_loss" in metrics
    history = json.loads((tmp_path / model_type / "trainer_state.json").read_text())["log_history"]
    train_logs = [entry for entry in history if "loss" in entry]
    assert train_logs and all("reconstruction_loss" in entry for entry in train_logs)
    if model_type == "vae":
        assert all(entry["kl_loss"] > 0 for entry in train_logs) and metrics["eval_kl_loss"] > 0


def test_existing_output_dir_is_never_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("user work")
    with pytest.raises(FileExistsError, match="overwrite_output_dir"):
        train(["--output_dir", str(out), "--do_train", "--max_steps", "2"])
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]
    train(["--output_dir", str(out), "--do_train", "--max_steps", "2", "--overwrite_output_dir"])
    assert (out / "model.safetensors").is_file() and (out / "precious.txt").read_text() == "user work"


def test_bad_inputs_fail_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(DatasetNotFoundError, match="neither a local folder nor reachable"):
        train(["--output_dir", str(out), "--do_train", "--max_steps", "2", "--dataset_name", "no-such/dataset"])
    assert not out.exists()
    vae_dir = tmp_path / "vae"
    VAEModel(VAEConfig(hidden_size=16)).save_pretrained(vae_dir)
    before = {p.name: p.stat().st_mtime_ns for p in vae_dir.iterdir()}
    with pytest.raises(ValueError, match="hf_autoencoders_vae.*--model_type vae"):
        train(["--output_dir", str(out), "--do_train", "--max_steps", "2", "--model_name_or_path", str(vae_dir)])
    assert not out.exists()
    assert {p.name: p.stat().st_mtime_ns for p in vae_dir.iterdir()} == before
    with pytest.raises(ValueError, match="not a field of VQVAEConfig"):
        train(["--output_dir", str(out), "--do_train", "--config_overrides", "latent_dim=3"])
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        train(["--output_dir", str(out), "--do_train", "--resume_from_checkpoint", "latest"])


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    """A run killed with SIGKILL and resumed ends with exactly the weights of a run that was never interrupted."""
    common = ["--do_train", "--max_steps", "60", "--save_steps", "4", "--seed", "3", *TINY,
              "--config_overrides", "dead_code_threshold=2"]
    reference = tmp_path / "reference"
    result = script("train_vqvae.py", "--output_dir", str(reference), *common)
    assert result.returncode == 0, result.stderr[-3000:]

    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, str(ROOT / "examples" / "train_vqvae.py"), "--output_dir",
                                str(killed), *common], env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 300

    def first_checkpoint_written() -> bool:  # trainer_state.json comes last, and may be caught half-written
        try:
            return json.loads((killed / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4
        except (OSError, ValueError, KeyError):
            return False

    while not first_checkpoint_written():
        assert process.poll() is None and time.time() < deadline, "training ended before its first checkpoint"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "model.safetensors").exists()  # it really was cut off before the end

    result = script("train_vqvae.py", "--output_dir", str(killed), *common, "--resume_from_checkpoint", "latest")
    assert result.returncode == 0, result.stderr[-3000:]
    expected, actual = load_file(reference / "model.safetensors"), load_file(killed / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)


def test_mnist_example_command(shared_data, tmp_path):
    result = script("train_vqvae.py", "--dataset_name", str(shared_data / "mnist"), "--output_dir",
                    str(tmp_path / "out"), "--max_steps", "20", "--do_train", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert AutoModel.from_pretrained(tmp_path / "out").config.image_size == 28


def test_torchrun_two_processes(shared_data, tmp_path):
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    result = script("train_vqvae.py", "--dataset_name", str(shared_data / "mnist"), "--output_dir", str(out),
                    "--max_steps", "20", "--do_train", "--ddp_backend", "gloo", *TINY, launcher=launcher)
    assert result.returncode == 0, result.stderr[-4000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 20
    assert AutoModel.from_pretrained(out).config.model_type == "hf_autoencoders_vqvae"


@pytest.mark.parametrize("backbone, channels_last, expected", [
    ("conv", None, True), ("conv", False, False), ("mlp", None, False), ("vit", True, True)])
def test_channels_last_default_is_on_for_conv_on_cpu(tmp_path, backbone, channels_last, expected):
    from hf_autoencoders.data import load_image_dataset
    from hf_autoencoders.training import fit

    model = VAEModel(VAEConfig(backbone=backbone, hidden_size=8, num_hidden_layers=1, latent_dim=2))
    weights = [p for p in model.parameters() if p.dim() == 4]
    if backbone == "mlp":
        assert not weights
    before = [p.detach().clone() for p in model.parameters()]
    fit(model, load_image_dataset("digits").train, output_dir=tmp_path, max_steps=1, channels_last=channels_last,
        per_device_train_batch_size=8)
    layout = torch.channels_last if expected else torch.contiguous_format
    assert all(p.is_contiguous(memory_format=layout) for p in weights)
    if expected and backbone == "conv":
        assert any(not p.is_contiguous() for p in weights)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # trained, in either layout
    loaded = VAEModel.from_pretrained(_saved(model, tmp_path / "saved"))  # saves and loads in either layout
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def _saved(model, path):
    model.save_pretrained(path)
    return path


EVAL_SCRIPT = """
import json, os, sys, torch
import hf_autoencoders as H
from hf_autoencoders.data import ImageCollator, ImageTensorDataset, load_image_dataset
from hf_autoencoders.evaluation import domain_features
from hf_autoencoders.training import AutoencoderTrainer, training_arguments
torch.manual_seed(0)
model = H.VQVAEModel(H.VQVAEConfig(hidden_size=8, num_embeddings=16, embedding_dim=4, num_residual_blocks=1))
digits = load_image_dataset("digits")
eval_set = ImageTensorDataset(digits.test.images[:61])
features = domain_features(digits.train.images[:200], digits.train.labels[:200], epochs=1, width=4,
                           cache_dir=sys.argv[1], progress=False)
args = training_arguments(sys.argv[1], per_device_eval_batch_size=8, use_cpu=True,
                          ddp_backend="gloo" if "WORLD_SIZE" in os.environ else None)
trainer = AutoencoderTrainer(model=model, args=args, data_collator=ImageCollator(), eval_dataset=eval_set)
metrics = trainer.evaluate(features=features)
if trainer.is_world_process_zero():
    print("METRICS" + json.dumps(metrics))
if torch.distributed.is_initialized():  # a gloo group left alive can abort the process at exit
    torch.distributed.destroy_process_group()
"""


def test_evaluation_is_exact_under_two_processes(tmp_path):
    """61 images over 2 processes in batches of 8: no image is counted twice, so the metrics equal one process's;
    the Fréchet distance and its companions too, from the features each process extracted in the same pass (KID,
    drawn on random subsets, depends on the order of the rows)."""
    (tmp_path / "evaluate.py").write_text(EVAL_SCRIPT)
    metrics = []
    for launcher in ([sys.executable], [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                        "--master_port", "29541"]):
        result = subprocess.run(launcher + [str(tmp_path / "evaluate.py"), str(tmp_path / "out")], capture_output=True,
                                text=True, env=ENV, cwd=ROOT, timeout=300)
        assert result.returncode == 0, result.stderr[-4000:]
        line = next(x for x in result.stdout.splitlines() if x.startswith("METRICS"))
        metrics.append(json.loads(line.removeprefix("METRICS")))
    single, double = metrics
    assert set(single) == set(double) and "eval_codebook_loss" in single and "eval_sample_fd_domain" in single
    assert single["eval_quality_num_real"] == 61
    for key in single:
        if "kid" not in key and key != "eval_quality_features":
            assert double[key] == pytest.approx(single[key], rel=1e-5, abs=1e-6), key


def test_push_to_hub_offline_then_load_in_a_fresh_process(tmp_path, run_without_package):
    """Upload to a local stand-in for the Hub, then load what was uploaded without this package."""
    run = tmp_path / "run"
    train(["--output_dir", str(run), "--do_train", "--do_eval", "--max_steps", "4", "--save_steps", "2"])
    assert any(run.glob("checkpoint-*"))
    hub = tmp_path / "hub"

    class LocalHub:
        def create_repo(self, repo_id, **kwargs):
            (hub / repo_id).mkdir(parents=True, exist_ok=True)

        def upload_folder(self, repo_id, folder_path, allow_patterns=None, ignore_patterns=None, **kwargs):
            from huggingface_hub.utils import filter_repo_objects

            files = [p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file()]
            for name in filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns):
                target = hub / repo_id / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes((Path(folder_path) / name).read_bytes())
            return f"local://{repo_id}"

    assert push_to_hub(run, "me/tiny-vqvae", api=LocalHub()) == "local://me/tiny-vqvae"
    pushed = hub / "me" / "tiny-vqvae"
    names = {p.name for p in pushed.iterdir()}
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md", "modeling_vqvae.py",
            "quantizers.py", "reconstructions.png"} <= names
    assert not any(n.startswith("checkpoint") or n.endswith((".bin", ".pt")) for n in names)
    card = (pushed / "README.md").read_text()
    assert "library_name: transformers" in card and "| psnr |" in card

    result = run_without_package(f"""
        import numpy as np, torch
        from transformers import AutoImageProcessor, AutoModel
        model = AutoModel.from_pretrained({str(pushed)!r}, trust_remote_code=True).eval()
        processor = AutoImageProcessor.from_pretrained({str(pushed)!r}, trust_remote_code=True)
        pixel_values = processor(np.zeros((28, 28), dtype=np.uint8), return_tensors="pt").pixel_values
        print("LOADED", type(model).__name__, tuple(model(pixel_values).reconstruction.shape))
    """, tmp_path)
    assert "LOADED VQVAEModel (1, 1, 28, 28)" in result.stdout, result.stderr[-3000:]


def test_push_refuses_a_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a trained model folder"):
        push_to_hub(tmp_path, "me/nothing", api=object())


def test_reconstruction_grids_reach_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    train(["--output_dir", str(out), "--do_train", "--max_steps", "4", "--eval_strategy", "steps", "--eval_steps", "2",
           "--report_to", "tensorboard", "--backbone", "mlp"], "vae")
    event_files = list(out.rglob("events.out.tfevents.*"))
    assert event_files
    tags = set()
    for event_file in event_files:
        accumulator = EventAccumulator(str(event_file), size_guidance={"images": 0})
        accumulator.Reload()
        tags |= set(accumulator.Tags()["images"]) | set(accumulator.Tags()["scalars"])
    assert {"reconstructions", "samples"} <= tags
    assert {"train/kl_loss", "eval/kl_loss", "eval/reconstruction_loss"} <= tags


def test_quickstart_main_job_writes_models_and_pictures(tmp_path):
    out = tmp_path / "quickstart"
    result = script("quickstart.py", "--output_dir", str(out), "--vqvae_steps", "3", "--prior_steps", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("vqvae/model.safetensors", "vqvae/reconstructions.png", "vqvae/samples.png",
                 "prior/model.safetensors", "prior/samples.png", "prior/uniform_samples.png"):
        assert (out / name).is_file(), name
    vqvae = AutoModel.from_pretrained(out / "vqvae")
    assert vqvae.config.model_type == "hf_autoencoders_vqvae"
    # A class-conditional transformer prior (a GPT-2 with a null class for guidance) of this very VQ-VAE.
    prior = AutoModelForCausalLM.from_pretrained(out / "prior")
    assert prior.config.model_type == "gpt2" and prior.config.num_classes == 10 and prior.config.class_dropout > 0
    assert prior.config.vqvae_identity == vqvae.identity()
    # The picture: one labelled row per digit, ten samples each (100 by default), under a title.
    picture = np.asarray(Image.open(out / "prior" / "samples.png").convert("L"))
    grid = image_grid(torch.zeros(100, 1, 28, 28), nrow=10, scale=2)
    assert picture.shape[0] > grid.shape[0] and picture.shape[1] > grid.shape[1]  # title above, labels left
    assert abs(picture.shape[0] - grid.shape[0]) < 40 and abs(picture.shape[1] - grid.shape[1]) < 40
    card = (out / "prior" / "README.md").read_text()
    assert "one row per class" in card and "pipeline_tag: unconditional-image-generation" in card
    assert "Uniformly random codes" in (out / "vqvae" / "README.md").read_text()
    assert "one row per digit" in result.stdout
    again = script("quickstart.py", "--output_dir", str(out), "--vqvae_steps", "3", "--prior_steps", "3")
    assert again.returncode != 0 and "already holds files" in again.stderr


# ------------------------------------------------------------------------------------- one evaluation, if asked


def test_a_run_without_do_eval_evaluates_nothing(tmp_path, monkeypatch):
    """No pass over the test split, no classifier for the Fréchet distance, no eval_results.json; the card holds the
    training figures and says that no test metrics were measured."""
    import hf_autoencoders.training.run as run_module
    import hf_autoencoders.training.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "evaluate", lambda *a, **k: pytest.fail("the test split was evaluated"))
    monkeypatch.setattr(run_module, "dataset_features", lambda *a, **k: pytest.fail("a classifier was trained"))
    out = tmp_path / "run"
    metrics = train(["--output_dir", str(out), "--do_train", "--max_steps", "2", "--backbone", "mlp"], "vae")
    assert "train_loss" in metrics and not any(name.startswith("eval_") for name in metrics)
    assert not (out / "eval_results.json").exists()
    assert set(json.loads((out / "all_results.json").read_text())) == set(metrics)
    card = ModelCard.load(out / "README.md")
    assert "No test metrics were measured" in card.text and "`train_loss`" in card.text
    assert card.data.eval_results is None


def test_do_eval_gives_the_card_and_the_results_files_one_evaluation(tmp_path, monkeypatch):
    """--do_eval: one evaluation pass (IWAE bound and Fréchet distance included), whose numbers are the card's, and
    those of all_results.json and eval_results.json."""
    import hf_autoencoders.training.trainer as trainer_module

    passes = []
    monkeypatch.setattr(trainer_module, "evaluate", lambda *a, **k: passes.append(k) or evaluate(*a, **k))
    out = tmp_path / "run"
    metrics = train(["--output_dir", str(out), "--do_train", "--do_eval", "--max_steps", "2", "--backbone", "mlp"],
                    "vae")
    assert len(passes) == 1 and passes[0]["num_importance_samples"] == 64 and passes[0]["on_batch"] is not None
    evaluation = {name: value for name, value in metrics.items() if name.startswith("eval_")}
    assert {"eval_iwae_nll", "eval_psnr", "eval_sample_fd_domain", "eval_reconstruction_kid_domain"} <= set(evaluation)
    assert json.loads((out / "eval_results.json").read_text()) == evaluation
    assert json.loads((out / "all_results.json").read_text()) == metrics
    card = ModelCard.load(out / "README.md")
    on_card = {result.metric_type: result.metric_value for result in card.data.eval_results}
    numbers = {name.removeprefix("eval_"): value for name, value in evaluation.items() if not isinstance(value, str)}
    measured = {name: value for name, value in numbers.items() if "num_" not in name and "_std" not in name}
    assert on_card == measured and {"psnr", "iwae_nll", "sample_fd_domain"} <= set(on_card)
    assert f"| psnr | {evaluation['eval_psnr']:.4g} |" in card.text


def test_the_command_and_the_example_make_the_same_run(tmp_path):
    """`hf-autoencoders train` and examples/train_autoencoder.py take the same steps: the same weights, results
    files and card."""
    import importlib.util

    from hf_autoencoders.cli import main as cli_main

    spec = importlib.util.spec_from_file_location("train_autoencoder", ROOT / "examples" / "train_autoencoder.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    flags = ["--do_train", "--do_eval", "--max_steps", "2", "--fid", "false", "--save_strategy", "no", *TINY]
    cli_main(["train", "--model_type", "ae", "--output_dir", str(tmp_path / "cli" / "run"), *flags])
    example.main(["--output_dir", str(tmp_path / "example" / "run"), *flags], model_type="ae")
    cli, ours = tmp_path / "cli" / "run", tmp_path / "example" / "run"
    assert sorted(p.name for p in cli.iterdir()) == sorted(p.name for p in ours.iterdir())
    assert load_file(cli / "model.safetensors").keys() == load_file(ours / "model.safetensors").keys()
    for name, tensor in load_file(cli / "model.safetensors").items():
        assert torch.equal(tensor, load_file(ours / "model.safetensors")[name]), name

    def without_timings(path):
        return [line for line in path.read_text().splitlines() if not any(
            word in line for word in ("runtime", "per_second"))]

    for name in ("README.md", "eval_results.json"):
        assert without_timings(cli / name) == without_timings(ours / name), name


def test_push_to_hub_while_training_and_at_the_end(tmp_path, monkeypatch):
    """--push_to_hub: this library pushes (allow-listed files, its card), not the Trainer: each checkpoint as
    --hub_strategy says, then the finished folder with its card."""
    import hf_autoencoders.hub as hub

    pushes = []

    class RecordingHub:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            pass

        def upload_folder(self, repo_id, folder_path, path_in_repo=None, allow_patterns=None, **kwargs):
            pushes.append((repo_id, Path(folder_path).name, path_in_repo, set(allow_patterns)))
            return f"https://hub/{repo_id}"

    monkeypatch.setattr(hub, "HfApi", RecordingHub)
    out = tmp_path / "run"
    train(["--output_dir", str(out), "--do_train", "--max_steps", "2", "--save_steps", "2", "--push_to_hub",
           "--hub_model_id", "me/tiny", "--hub_strategy", "checkpoint", "--backbone", "mlp"], "ae")
    assert [(repo, folder, where) for repo, folder, where, _ in pushes] == [
        ("me/tiny", "checkpoint-2", None), ("me/tiny", "checkpoint-2", "last-checkpoint"), ("me/tiny", "run", None)]
    assert {"README.md", "model.safetensors", "samples.png"} <= pushes[-1][3]
    assert not any(name.startswith("checkpoint-") for name in pushes[-1][3])


def test_torchrun_on_cpus_without_a_backend_trains_one_distributed_run(tmp_path):
    """`torchrun --nproc_per_node 2` on CPUs without --ddp_backend: the two processes train one run with DDP (each
    step reads two batches, so the epoch advances twice as fast as alone), and transformers' warning of a process
    group outside distributed mode does not reach the user."""
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29557"]
    result = script("train_ae.py", "--output_dir", str(out), "--max_steps", "2", "--do_train", "--backbone", "mlp",
                    "--per_device_train_batch_size", "16", "--report_to", "none", *TINY[:2], "--logging_steps", "1",
                    launcher=launcher)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "parallel_mode != ParallelMode.DISTRIBUTED" not in result.stderr + result.stdout
    state = json.loads((out / "trainer_state.json").read_text())
    from hf_autoencoders.data import load_image_dataset

    images = len(load_image_dataset("digits").train)
    assert state["global_step"] == 2
    assert state["log_history"][1]["epoch"] == pytest.approx(2 / math.ceil(images / (2 * 16)))  # alone: 2 / 94


def test_a_multi_process_launch_that_stayed_single_is_refused(monkeypatch, tmp_path):
    """WORLD_SIZE > 1 in the environment, but the process did not join a process group (what accelerate did on CPUs
    before the arguments said use_cpu): each process would train alone into the same --output_dir. The arguments
    refuse it when they set up the devices, naming the way out."""
    from functools import cached_property
    from types import SimpleNamespace

    import transformers

    from hf_autoencoders.training import training_arguments

    def alone(self):
        self.distributed_state = SimpleNamespace(num_processes=1, distributed_type="NO")
        return torch.device("cpu")

    monkeypatch.setattr(transformers.TrainingArguments, "_setup_devices", cached_property(alone))
    transformers.TrainingArguments._setup_devices.__set_name__(transformers.TrainingArguments, "_setup_devices")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"one of 2 processes.*--ddp_backend gloo"):
        training_arguments(tmp_path / "run").device
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert training_arguments(tmp_path / "run").device.type == "cpu"


def test_a_model_gets_the_same_fd_from_its_run_and_from_evaluate(tmp_path):
    """One feature network per dataset: the run's evaluation (trained with seed 42) and `hf-autoencoders evaluate`
    measure a VAE in the same features, whose identity (seed, settings, hash of the weights) stands beside every FD
    (card, eval_results.json, evaluate's output), and give it the same Fréchet distances and KIDs."""
    from hf_autoencoders.cli import main as cli_main

    out = tmp_path / "run"
    metrics = train(["--output_dir", str(out), "--do_train", "--do_eval", "--max_steps", "2", "--backbone", "mlp",
                     "--seed", "42", "--save_strategy", "no"], "vae")
    cli_main(["evaluate", str(out), "--fid", "--max_eval_samples", "64", "--num_importance_samples", "0",
              "--output_file", str(tmp_path / "evaluated.json")])
    measured = json.loads((tmp_path / "evaluated.json").read_text())
    features = measured["quality_features"]
    assert re.search(r"seed 0\b.*sha256 [0-9a-f]{16}", features), features
    assert metrics["eval_quality_features"] == features
    assert json.loads((out / "eval_results.json").read_text())["eval_quality_features"] == features
    assert re.search(r"sha256 [0-9a-f]{16}", (out / "README.md").read_text())
    for target in ("reconstruction", "sample"):
        for metric in ("fd", "kid", "precision", "recall"):
            key = f"{target}_{metric}_domain"
            assert metrics[f"eval_{key}"] == pytest.approx(measured[key], rel=1e-4, abs=1e-6), key


def test_a_short_run_logs_enough_points_for_a_loss_curve(tmp_path):
    """Without --logging_steps, a 12-step run logs its loss often enough to draw a curve (before: every 50 steps,
    so no loss at all); an explicit --logging_steps is kept."""
    out = tmp_path / "run"
    run_training(*parse_args(["--output_dir", str(out), "--do_train", "--max_steps", "12", "--backbone", "mlp",
                              "--hidden_size", "8", "--report_to", "none", "--disable_tqdm", "true",
                              "--save_strategy", "no"], model_type="ae"))
    logged = [entry["step"] for entry in json.loads((out / "trainer_state.json").read_text())["log_history"]
              if "loss" in entry]
    assert len(logged) >= 6 and (out / "loss_curves.png").is_file()
    assert "top: test images" not in (out / "README.md").read_text()
    _, _, args = parse_args(["--output_dir", str(tmp_path / "x"), "--max_steps", "12", "--logging_steps", "5"])
    assert args.logging_steps == 5


@pytest.mark.parametrize("with_validation", [False, True])
def test_transformers_image_folder_spelling(tmp_path, with_validation):
    """--dataset_name imagefolder --train_dir DIR [--validation_dir DIR], as transformers' image examples spell it,
    trains on the folder's images (--dataset_name DIR does the same)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("validation", 4)):
        for label in ("cat", "dog"):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (16, 16), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / label / f"{i}.png")
    folders = ["--train_dir", str(tmp_path / "train")]
    folders += ["--validation_dir", str(tmp_path / "validation")] if with_validation else []
    metrics = train(["--dataset_name", "imagefolder", *folders, "--output_dir", str(tmp_path / "run"), "--do_train",
                     "--do_eval", "--max_steps", "1", "--backbone", "mlp", "--fid", "false"], "ae")
    assert metrics["eval_num_examples"] == (8 if with_validation else 2)  # the validation folder, or 10% carved
    assert AutoModel.from_pretrained(tmp_path / "run").config.image_size == 16


def test_a_read_only_cache_folder_still_gives_the_card_and_the_results(tmp_path, monkeypatch, caplog):
    """After training, the classifier of the Fréchet distance cannot be kept (a read-only HOME: here the datasets
    cache lies under a file): the evaluation, its results files and the card are all written, with a warning."""
    import datasets

    (tmp_path / "home").write_text("not a folder")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "home" / ".cache" / "datasets"))
    out = tmp_path / "run"
    with caplog.at_level("WARNING"):
        metrics = train(["--output_dir", str(out), "--do_train", "--do_eval", "--max_steps", "2", "--backbone", "mlp",
                         "--save_strategy", "no"], "ae")
    assert "eval_sample_fd_domain" in metrics and "sample_fd_domain" in (out / "README.md").read_text()
    assert "eval_sample_fd_domain" in json.loads((out / "eval_results.json").read_text())
    assert "could not be written to its cache" in caplog.text
