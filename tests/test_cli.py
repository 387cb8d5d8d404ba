"""Every entry point as a new user meets it: `--help` of every command and example, `--version`, and a user error
as one `error: ...` line rather than a traceback."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A fresh cache of --help texts (see `training.parsing.help_cache_file`), so that every test renders them.
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "XDG_CACHE_HOME": tempfile.mkdtemp()}
COMMANDS = ["train", "train-prior", "evaluate", "sample", "push", "scaling-factor", "export", "encode", "experiment"]
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py"))


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=120)


def cli(*args, cwd=ROOT):
    return run("-c", "from hf_autoencoders.cli import main; main()", *args, cwd=cwd)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_answers_help(command):
    result = cli(command, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout and "Traceback" not in result.stderr


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_answers_help(example):
    result = run(f"examples/{example}", "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout and "--output_dir" in result.stdout


@pytest.mark.parametrize("entry", [("cli", "train"), ("cli", "train-prior"), ("run", "examples/train_vae.py")])
def test_training_help_is_kept_and_read_back(entry, tmp_path):
    """The training commands' --help (seconds to render: it imports transformers) is kept in the cache folder once,
    then read back: the same text, from the file of this program, code version and terminal width."""
    env = {**ENV, "XDG_CACHE_HOME": str(tmp_path), "COLUMNS": "100"}
    how, target = entry
    command = ([sys.executable, "-c", "from hf_autoencoders.cli import main; main()", target] if how == "cli"
               else [sys.executable, target])

    def help_text(**extra):
        result = subprocess.run([*command, "--help"], capture_output=True, text=True, env={**env, **extra}, cwd=ROOT,
                                timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    first = help_text()
    kept = list((tmp_path / "hf_autoencoders" / "help").glob("*.txt"))
    assert len(kept) == 1 and kept[0].read_text() == first and "--output_dir" in first
    kept[0].write_text(first + "read from the cache\n")
    assert help_text() == first + "read from the cache\n"
    narrow = help_text(COLUMNS="60")  # another terminal width: rendered again, into its own file
    assert "read from the cache" not in narrow and len(list(kept[0].parent.glob("*.txt"))) == 2


def test_top_level_help_and_version():
    result = cli("--help")
    assert result.returncode == 0 and all(command in result.stdout for command in COMMANDS)
    version = cli("--version")
    from hf_autoencoders import __version__

    assert version.returncode == 0 and version.stdout.strip() == f"hf-autoencoders {__version__}"


def test_dash_and_underscore_spellings_are_both_accepted():
    for flag in ("--output_dir", "--output-dir"):
        result = cli("experiment", "nonsense", flag, "x")
        assert "invalid choice" in result.stderr  # the flag was read; the experiment name was refused
    result = cli("evaluate", "--help")
    assert "--max_eval_samples" in result.stdout and "--max-eval-samples" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["nonsense"], "unknown command"),
    (["sample", "no/such/folder/here", "--output_file", "x.png"], "neither a model folder"),
    (["sample", ".", "--num_samples", "-1"], "--num_samples must be a positive integer"),
    (["evaluate", ".", "--max_eval_samples", "0"], "--max_eval_samples must be a positive integer"),
    (["experiment", "compare", "--output_dir", "x", "--max_steps", "-1"], "--max_steps must be a positive integer"),
    (["train", "--model_type", "gan", "--output_dir", "x"], "model type 'gan' is not known"),
    (["push", "no-such-folder", "me/x"], "not a trained model folder"),
])
def test_a_user_error_is_one_line(args, message, tmp_path):
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and message in lines[-1], result.stderr[-2000:]
    assert not (tmp_path / "x").exists()


def test_evaluate_and_sample_take_hub_ids(tmp_path):
    """A model given by its Hub id loads as `train --model_name_or_path` does: here from a local Hub cache, offline."""
    import hf_autoencoders.models as M

    snapshot = tmp_path / "hub" / "models--me--tiny-vae" / "snapshots" / ("0" * 40)
    M.VAEModel(M.VAEConfig(backbone="mlp", hidden_size=8, latent_dim=2)).save_pretrained(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    env = {**ENV, "HF_HUB_CACHE": str(tmp_path / "hub")}
    code = f"""
from hf_autoencoders.cli import main
main(["sample", "me/tiny-vae", "--num_samples", "4", "--output_file", {str(tmp_path / "s.png")!r}])
main(["evaluate", "me/tiny-vae", "--max_eval_samples", "16", "--num_importance_samples", "2"])
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "s.png").is_file() and '"iwae_nll"' in result.stdout


@pytest.mark.parametrize("outcome", ["done", "user error"])
def test_run_main_closes_the_process_group_the_command_joined(tmp_path, outcome):
    """Under torchrun the commands join a gloo group; run_main destroys it at the end, whatever the outcome, so the
    process cannot abort in gloo's threads at interpreter exit."""
    import torch.distributed as dist

    from hf_autoencoders.cli import run_main

    def command(argv):
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
        assert dist.is_initialized()
        if outcome == "user error":
            raise ValueError("a bad flag")

    try:
        if outcome == "user error":
            with pytest.raises(SystemExit) as exit_info:
                run_main(command, [])
            assert exit_info.value.code == 2
        else:
            run_main(command, [])
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.parametrize("order", ["package first", "transformers first"])
def test_importing_the_package_registers_the_auto_classes(tmp_path, order):
    """After `import hf_autoencoders`, the import every plugin user types, a run folder loads with the Auto classes
    as this package's classes, without trust_remote_code, whichever of the two imports comes first."""
    import hf_autoencoders.models as M

    M.VAEModel(M.VAEConfig(backbone="mlp", hidden_size=8, latent_dim=2)).save_pretrained(tmp_path / "vae")
    M.AutoencoderImageProcessor().save_pretrained(tmp_path / "vae")
    imports = ["import hf_autoencoders", "from transformers import AutoConfig, AutoImageProcessor, AutoModel"]
    code = "\n".join(imports if order == "package first" else imports[::-1]) + f"""
model = AutoModel.from_pretrained({str(tmp_path / "vae")!r})
processor = AutoImageProcessor.from_pretrained({str(tmp_path / "vae")!r})
config = AutoConfig.from_pretrained({str(tmp_path / "vae")!r})
print(type(model).__module__, type(processor).__module__, type(config).__module__)
"""
    result = run("-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["hf_autoencoders.models.modeling_vae",
                                     "hf_autoencoders.models.image_processing_autoencoders",
                                     "hf_autoencoders.models.configuration_autoencoders"]


@pytest.mark.parametrize("command", ["", "train", "evaluate", "sample", "push"])
def test_help_imports_neither_torch_nor_transformers(command, tmp_path):
    """What keeps `--help` fast (benchmarks/cli_startup.py) although the package registers the Auto classes: they
    register once transformers is imported, and `--help` read from its cache imports neither it nor torch."""
    code = f"""
import sys
from hf_autoencoders.cli import main
try:
    main({[command, "--help"] if command else ["--help"]!r})
except SystemExit:
    pass
print(sorted(name for name in ("torch", "transformers") if name in sys.modules))
"""
    env = {**ENV, "XDG_CACHE_HOME": str(tmp_path)}
    for _ in range(2):  # the first call renders the help and keeps it
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                                timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
