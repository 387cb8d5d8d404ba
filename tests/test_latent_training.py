"""Training and commands of the latent-diffusion autoencoder: the spatial KL-VAE from the command line (no --backbone),
its scaling factor written into config.json and the card, --train_decoder_only from a diffusers folder,
--gradient_checkpointing, and the scaling-factor, export and encode commands with their bad inputs."""

import json
import math

import pytest
import torch
from transformers import AutoModel

import hf_autoencoders.models  # noqa: F401  (registers the Auto classes)
from hf_autoencoders.cli import main
from hf_autoencoders.models import VAEConfig, VAEModel

# The embedded digits (28x28 grey), a tiny two-level ldm VAE (f = 2) and a few steps.
QUICK = ["--max_steps", "2", "--per_device_train_batch_size", "16", "--max_train_samples", "48",
         "--max_eval_samples", "16", "--fid", "false", "--disable_tqdm", "true", "--report_to", "none"]


def train_vae(output_dir, *flags):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "train_autoencoder.py"
    spec = importlib.util.spec_from_file_location("train_autoencoder_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example.main(["--output_dir", str(output_dir), "--do_train", *QUICK, *flags], model_type="vae")


def fails(capsys, *argv) -> str:
    """The one `error: ...` line a command ends with (exit status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), lines
    return lines[-1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The must-show command, small: --latent_channels, --block_out_channels, --layers_per_block and no --backbone."""
    folder = tmp_path_factory.mktemp("runs") / "vae"
    train_vae(folder, "--latent_channels", "4", "--block_out_channels", "32", "32", "--layers_per_block", "1",
              "--do_eval")
    return folder


def test_block_out_channels_train_the_spatial_vae_and_write_its_scaling_factor(trained):
    config = json.loads((trained / "config.json").read_text())
    assert config["backbone"] == "ldm" and config["latent_channels"] == 4 and config["block_out_channels"] == [32, 32]
    assert config["pixel_range"] == [-1.0, 1.0] and config["scaling_factor"] > 0
    assert math.isfinite(config["shift_factor"])
    processor = json.loads((trained / "preprocessor_config.json").read_text())
    assert processor["do_normalize"] and processor["image_mean"] == 0.5 and processor["image_std"] == 0.5
    card = (trained / "README.md").read_text()
    assert "## Latent scale" in card and "posterior samples z ~ q(z|x) of the 48 training images" in card
    assert "block_out_channels" in card and "num_downsamples" not in card  # the ldm's own fields, not conv's
    model = AutoModel.from_pretrained(trained)
    assert model.config.scaling_factor == config["scaling_factor"]


def test_scaling_factor_command_updates_config_and_card(trained, tmp_path, capsys):
    import shutil

    folder = tmp_path / "vae"
    shutil.copytree(trained, folder)
    before = json.loads((folder / "config.json").read_text())
    main(["scaling-factor", str(folder), "--max_train_samples", "32", "--max_eval_samples", "16", "--dry_run"])
    assert json.loads((folder / "config.json").read_text()) == before  # a dry run writes nothing
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.index("{"):])["num_train_images"] == 32
    main(["scaling-factor", str(folder), "--max_train_samples", "32", "--max_eval_samples", "16"])
    printed = capsys.readouterr().out
    factors = json.loads(printed[printed.index("{"):])
    after = json.loads((folder / "config.json").read_text())
    assert after["scaling_factor"] == pytest.approx(factors["scaling_factor"]) != before["scaling_factor"]
    assert {k: v for k, v in after.items() if not k.endswith("_factor")} == {
        k: v for k, v in before.items() if not k.endswith("_factor")}
    card = (folder / "README.md").read_text()
    assert card.count("## Latent scale") == 1 and "of the 32 training images" in card
    assert card.index("## Latent scale") < card.index("## Results")
    assert "is not a local model folder" in fails(capsys, "scaling-factor", str(tmp_path / "absent"))


def test_export_command_and_its_refusal(trained, tmp_path, capsys):
    diffusers = pytest.importorskip("diffusers")
    main(["export", str(trained), str(tmp_path / "exported"), "--to", "diffusers"])
    vae, info = diffusers.AutoencoderKL.from_pretrained(tmp_path / "exported", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert vae.config.scaling_factor == json.loads((trained / "config.json").read_text())["scaling_factor"]
    VAEModel(VAEConfig(hidden_size=8, latent_dim=2)).save_pretrained(tmp_path / "flat")
    line = fails(capsys, "export", str(tmp_path / "flat"), str(tmp_path / "out"))
    assert "cannot be exported to diffusers" in line and "backbone='conv'" in line
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_encode_command_writes_a_dataset_and_refuses_other_images(trained, tmp_path, capsys):
    import datasets

    main(["encode", str(trained), "--output_dir", str(tmp_path / "latents"), "--max_samples", "20"])
    written = datasets.load_from_disk(tmp_path / "latents")
    assert set(written) == {"train", "test"} and len(written["train"]) == 20
    assert written["train"].features["latents"].shape == (4, 14, 14) and "label" in written["train"].features
    cifar_like = tmp_path / "rgb"
    for label in ("a", "b"):
        (cifar_like / label).mkdir(parents=True)
        for i in range(2):
            from PIL import Image

            Image.new("RGB", (32, 32), (i * 50, 0, 0)).save(cifar_like / label / f"{i}.png")
    line = fails(capsys, "encode", str(trained), "--dataset_name", str(cifar_like), "--output_dir",
                 str(tmp_path / "bad"))
    assert "3x32x32" in line and "encodes 1x28x28 images" in line
    assert not (tmp_path / "bad").exists() and not list(tmp_path.glob(".bad*")) and not list(tmp_path.glob(".enc*"))


def test_train_decoder_only_from_a_diffusers_folder(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    theirs = diffusers.AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                                     up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8),
                                     layers_per_block=1, norm_num_groups=4, latent_channels=4, sample_size=28,
                                     scaling_factor=0.25)
    theirs.save_pretrained(tmp_path / "sd-like" / "vae")
    train_vae(tmp_path / "decoder", "--model_name_or_path", str(tmp_path / "sd-like"), "--train_decoder_only")
    tuned = AutoModel.from_pretrained(tmp_path / "decoder")
    original = {name: tensor for name, tensor in theirs.state_dict().items()}
    assert torch.equal(tuned.encoder.quant_conv.weight, original["quant_conv.weight"])
    assert torch.equal(tuned.encoder.conv_in.weight, original["encoder.conv_in.weight"])
    assert not torch.equal(tuned.decoder.conv_out.weight, original["decoder.conv_out.weight"])
    assert tuned.config.scaling_factor == 0.25  # the latents did not change: their scale stays


def test_train_decoder_only_bad_inputs(tmp_path, capsys):
    diffusers = pytest.importorskip("diffusers")
    line = fails(capsys, "train", "--model_type", "vae", "--output_dir", str(tmp_path / "a"), "--do_train",
                 "--train_decoder_only")
    assert "--train_decoder_only fine-tunes the decoder of a trained model" in line
    diffusers.AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4, use_quant_conv=False,
                            sample_size=28).save_pretrained(tmp_path / "other")
    line = fails(capsys, "train", "--model_type", "vae", "--output_dir", str(tmp_path / "b"), "--do_train",
                 "--model_name_or_path", str(tmp_path / "other"), "--train_decoder_only")
    assert "cannot be converted to an hf_autoencoders model" in line and "no quant_conv" in line
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


@pytest.mark.filterwarnings("error::FutureWarning")  # diffusers' flag name, without transformers' deprecation warning
def test_gradient_checkpointing_flag_trains(tmp_path, capsys):
    from hf_autoencoders.training.arguments import AutoencoderTrainingArguments

    args = AutoencoderTrainingArguments(output_dir=str(tmp_path / "args"), gradient_checkpointing=True)
    assert args.activation_checkpointing is True and args.gradient_checkpointing is True
    metrics = train_vae(tmp_path / "gc", "--block_out_channels", "8", "8", "--config_overrides", "norm_num_groups=4",
                        "--gradient_checkpointing")
    assert math.isfinite(metrics["train_loss"])
    line = fails(capsys, "train", "--model_type", "vae", "--backbone", "mlp", "--output_dir", str(tmp_path / "m"),
                 "--do_train", "--gradient_checkpointing", *QUICK)
    assert "the mlp backbone has none" in line


def test_evaluate_and_sample_commands_read_the_models_range(trained, tmp_path, capsys):
    """`evaluate` feeds the model images in its range and scores them in [0, 1]: the run's own figures again (both
    draw the posterior samples from the evaluation seed, `evaluation.EVAL_SEED`)."""
    main(["evaluate", str(trained), "--max_eval_samples", "16", "--num_importance_samples", "0"])
    printed = capsys.readouterr().out
    metrics = json.loads(printed[printed.index("{"):])
    recorded = json.loads((trained / "eval_results.json").read_text())
    assert metrics["psnr"] == pytest.approx(recorded["eval_psnr"], abs=1e-4)
    main(["sample", str(trained), "--num_samples", "4", "--output_file", str(tmp_path / "samples.png")])
    assert (tmp_path / "samples.png").is_file()
