"""Bad inputs, as a new or careless user gives them, across the model API, the configs, the image processor and the
command line. Each case asserts its outcome: either a clear error that names the problem and the way out, raised by
this library (never a raw traceback from torch, transformers or safetensors), or correct handling. No case may
change a user's file."""

import re
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch

import hf_autoencoders.models as M
from hf_autoencoders.cli import main as cli_main

PACKAGE = str(Path(M.__file__).resolve().parents[1])


def ae():
    return M.AEModel(M.AEConfig(backbone="mlp", hidden_size=16, latent_dim=4))


def vqvae():
    torch.manual_seed(0)
    return M.VQVAEModel(M.VQVAEConfig(hidden_size=8, num_embeddings=16, embedding_dim=4, num_residual_blocks=1))


x = torch.rand(2, 1, 28, 28)
MODEL_CASES = [  # (id, call, expected message pattern); None = handled correctly
    ("float64 input", lambda: ae()(x.double()).loss, None),
    ("float16 input", lambda: ae()(x.half()).loss, None),
    ("empty batch", lambda: ae()(x[:0]), "empty batch.*at least one image"),
    ("NaN pixels", lambda: ae()(x * torch.nan), "NaN or infinite"),
    ("0..255 floats", lambda: ae()(x * 255), r"\[0, 1\].*divide by 255"),
    ("[-1, 1] pixels", lambda: ae()(x * 2 - 1), r"\(x \+ 1\) / 2"),
    ("uint8 pixels", lambda: ae()((x * 255).to(torch.uint8)), "floating point.*divide uint8 images by 255"),
    ("wrong channels", lambda: ae()(torch.rand(2, 3, 28, 28)), "num_channels is 1"),
    ("wrong size", lambda: ae()(torch.rand(2, 1, 32, 32)), "image_size is 28.*image processor"),
    ("one image without batch", lambda: ae()(x[0]), "add the batch dimension"),
    ("a list of images", lambda: ae()([x[0], x[1]]), "must be a torch.Tensor"),
    ("meta tensor", lambda: ae()(torch.empty(2, 1, 28, 28, device="meta")), "meta device"),
    ("sample(-1)", lambda: ae().sample(-1), "num_samples must be a positive integer"),
    ("sample(0)", lambda: vqvae().sample(0), "num_samples must be a positive integer"),
    ("sample(2.5)", lambda: ae().sample(2.5), "num_samples must be a positive integer"),
    ("decode a wrong latent", lambda: ae().decode(torch.zeros(2, 5)), r"latents must be .* shape \(batch, 4\)"),
    ("codes out of range", lambda: vqvae().decode_indices(torch.full((1, 7, 7), 99)), r"\[0, 16\)"),
    ("float codes", lambda: vqvae().decode_indices(torch.zeros(1, 7, 7)), "integer tensor"),
    ("prior of another K", lambda: vqvae().sample(1, prior=M.PixelCNNPriorModel(M.PixelCNNPriorConfig(
        num_embeddings=8, grid_size=7, hidden_size=8, num_layers=1))), "train a prior on this VQ-VAE"),
    ("a VAE as a prior", lambda: vqvae().sample(1, prior=M.VAEModel(M.VAEConfig(hidden_size=8))), "prior"),
    ("a prior for an AE", lambda: ae().sample(1, prior=object()), "Pass prior=None"),
    ("huge FSQ codebook", lambda: M.VQVAEConfig(quantizer="fsq", fsq_levels=(100,) * 4), r"2\*\*20.*fewer"),
    ("FSQ levels as a string", lambda: M.VQVAEConfig(quantizer="fsq", fsq_levels="8555"), r"\(8, 5, 5, 5\)"),
    ("infinite variance", lambda: M.VAEConfig(gaussian_variance=float("inf")), "gaussian_variance must be a finite"),
    ("a string size", lambda: M.AEConfig(latent_dim="16"), "latent_dim must be an integer"),
    ("a float size", lambda: M.AEConfig(hidden_size=3.5), "hidden_size must be an integer"),
    ("no attention heads", lambda: M.AEConfig(backbone="vit", num_attention_heads=0), "num_attention_heads must be"),
    ("unknown backbone", lambda: M.AEConfig(backbone="resnet"), "use one of"),
    ("negative KL weight", lambda: M.VAEConfig(kl_weight=-1.0), "kl_weight must be >= 0"),
    ("indivisible size", lambda: M.AEConfig(image_size=30), "not divisible by 2\\*\\*num_downsamples"),
    ("processor: floats above 1", lambda: M.AutoencoderImageProcessor()(np.full((28, 28), 7.0)), r"expected \[0, 1\]"),
    ("processor: no images", lambda: M.AutoencoderImageProcessor()([]), "images is empty"),
    ("processor: not an image", lambda: M.AutoencoderImageProcessor()(b"not a png"), r"images\[0\] cannot be read"),
    ("save into a file", lambda: ae().save_pretrained(__file__), "is a file, not a folder"),
    ("save a prior into a file", lambda: M.PixelCNNPriorModel(M.PixelCNNPriorConfig(
        num_embeddings=8, grid_size=7, hidden_size=8, num_layers=1)).save_pretrained(__file__),
     "is a file, not a folder"),
    ("save a processor into a file", lambda: M.AutoencoderImageProcessor().save_pretrained(__file__),
     "is a file, not a folder"),
]


@pytest.mark.parametrize("call, pattern", [case[1:] for case in MODEL_CASES], ids=[case[0] for case in MODEL_CASES])
def test_model_api(call, pattern):
    if pattern is None:
        result = call()
        assert torch.isfinite(result).all()
        return
    with pytest.raises(ValueError) as info:
        call()
    assert info.match(pattern)
    innermost = traceback.extract_tb(info.tb)[-1].filename
    assert innermost.startswith(PACKAGE), f"raised from {innermost}, not by hf_autoencoders"


def _damaged(source: Path, target: Path, weights=None, config=None) -> None:
    """A copy of the model folder `source` whose weights (a function of the state dict) or config.json (a dict of
    changes) were edited, or whose model.safetensors is `weights` when it is bytes."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(source, target)
    if isinstance(weights, bytes):
        (target / "model.safetensors").write_bytes(weights)
    elif weights is not None:
        save_file(weights(load_file(target / "model.safetensors")), target / "model.safetensors",
                  metadata={"format": "pt"})
    if config is not None:
        saved = json.loads((target / "config.json").read_text())
        (target / "config.json").write_text(json.dumps({**saved, **config}))


def _labelled_folder(root: Path, labels: list, feature) -> Path:
    """A Hub-layout parquet dataset of 28x28 gray images whose labels are `labels` (as `feature`)."""
    import io

    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        images = []
        for _ in labels:
            encoded = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(encoded, format="PNG")
            images.append({"bytes": encoded.getvalue(), "path": None})
        table = datasets.Dataset.from_dict({"image": images, "label": labels},
                                           features=datasets.Features({"image": datasets.Image(), "label": feature}))
        table.to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A user's folder with files the commands must never touch, a VAE and a VQ-VAE folder, priors, damaged model
    folders, datasets with bad labels, and a folder another run holds."""
    import datasets
    from transformers import AutoModelForCausalLM

    from hf_autoencoders.training.checkpoints import RunFolderLock

    root = tmp_path_factory.mktemp("hostile")
    (root / "mine").mkdir()
    (root / "mine" / "notes.txt").write_text("user work")
    (root / "image.png").write_bytes(b"\x89PNG not really")
    (root / "afile").write_text("a file, not a folder")
    M.VAEModel(M.VAEConfig(hidden_size=8)).save_pretrained(root / "vae")
    model = vqvae()
    model.save_pretrained(root / "vqvae")
    (root / "link").symlink_to(root / "vqvae")
    M.PixelCNNPriorModel(M.PixelCNNPriorConfig(num_embeddings=16, grid_size=7, hidden_size=8, num_layers=1,
                                               vqvae_identity=model.identity())).save_pretrained(root / "prior")
    AutoModelForCausalLM.from_config(M.code_priors.transformer_prior_config(
        num_embeddings=16, grid_size=7, vqvae_identity=model.identity(), hidden_size=8, num_layers=1,
        num_heads=2)).save_pretrained(root / "tprior")
    first = "decoder.layers.0.bias"
    _damaged(root / "vae", root / "vae_missing", weights=lambda sd: {k: v for k, v in sd.items() if k != first})
    _damaged(root / "vae", root / "vae_extra", weights=lambda sd: {**sd, "decoder.extra.weight": torch.zeros(2)})
    _damaged(root / "vae", root / "vae_backbone", config={"backbone": "mlp"})
    _damaged(root / "vae", root / "vae_shape", config={"latent_dim": 8})
    _damaged(root / "vae", root / "vae_nan", weights=lambda sd: {**sd, first: sd[first] * torch.nan})
    _damaged(root / "vae", root / "vae_inf", weights=lambda sd: {**sd, first: sd[first] + torch.inf})
    _damaged(root / "vae", root / "vae_empty", weights=b"")
    _damaged(root / "vae", root / "vae_truncated", weights=(root / "vae" / "model.safetensors").read_bytes()[:999])
    _damaged(root / "vqvae", root / "vqvae_nan", weights=lambda sd: {k: v * torch.nan for k, v in sd.items()})
    _damaged(root / "prior", root / "prior_missing", weights=lambda sd: dict(list(sd.items())[1:]))
    _labelled_folder(root / "strlabels", ["cat", "dog", "bird"] * 4, datasets.Value("string"))
    _labelled_folder(root / "neglabels", [-1, 0, 1] * 4, datasets.Value("int64"))
    _labelled_folder(root / "biglabels", [0, 1, 10**12] * 4, datasets.Value("int64"))
    (root / "busy").mkdir()
    with RunFolderLock(root / "busy"):  # held here: as if another run wrote into it
        yield root


CLI_CASES = [  # (id, arguments ({root} is the sandbox), pattern of the one error line)
    ("unknown command", ["fit"], "unknown command 'fit'"),
    ("unknown model type", ["train", "--model_type", "gan", "--output_dir", "{root}/o"], "use one of ae, vae, vqvae"),
    ("zero training images", ["train", "--max_train_samples", "0", "--output_dir", "{root}/o"],
     "--max_train_samples must be a positive number"),
    ("eval without a model", ["train", "--do_eval", "--output_dir", "{root}/o"], "untrained, random model"),
    ("override without =", ["train", "--config_overrides", "latent_dim", "--do_train", "--output_dir", "{root}/o"],
     "not of the form key=value"),
    ("override of another family", ["train", "--config_overrides", "latent_dim=3", "--do_train", "--output_dir",
                                    "{root}/o"],
     "not a field of VQVAEConfig"),
    ("override of a bad value", ["train", "--config_overrides", "num_embeddings=1", "--do_train",
                                  "--output_dir", "{root}/o"],
     "num_embeddings \\(K\\) must be >= 2"),
    ("a flag of another family", ["train", "--latent_dim", "3", "--do_train", "--output_dir", "{root}/o"],
     "--latent_dim does not apply to --model_type vqvae"),
    ("an existing folder", ["train", "--do_train", "--output_dir", "{root}/mine"], "already holds files"),
    ("resume false into a folder", ["train", "--do_train", "--resume_from_checkpoint", "false", "--output_dir",
                                    "{root}/mine"], "already holds files"),
    ("output under a file", ["train", "--do_train", "--output_dir", "{root}/afile/run"], "is a file, not a folder"),
    ("resume without checkpoints", ["train", "--do_train", "--resume_from_checkpoint", "latest", "--output_dir",
                                    "{root}/o"], "no complete checkpoint"),
    ("resume another run", ["train", "--do_train", "--resume_from_checkpoint", "{root}/vae", "--output_dir",
                            "{root}/o"], "not a complete checkpoint|belongs to the run"),
    ("a dataset that is not there", ["train", "--do_train", "--dataset_name", "no-such/dataset", "--output_dir",
                                     "{root}/o"], "neither a local folder nor reachable"),
    ("dynamic binarization alone", ["train", "--stochastic_binarization", "--output_dir", "{root}/o"],
     "only applies with --binarize"),
    ("a string where a number goes", ["train", "--max_steps", "many", "--output_dir", "{root}/o"], "invalid int"),
    ("evaluate a missing folder", ["evaluate", "{root}/nothing"], "neither a model folder"),
    ("evaluate a plain folder", ["evaluate", "{root}/mine"], "no config.json"),
    ("evaluate negative K", ["evaluate", "{root}/vae", "--num_importance_samples", "-3"],
     "--num_importance_samples must be >= 0"),
    ("evaluate zero images", ["evaluate", "{root}/vae", "--max_eval_samples", "0"], "must be a positive integer"),
    ("evaluate over a user's file", ["evaluate", "{root}/vae", "--output_file", "{root}/mine/notes.txt"],
     "already exists.*--overwrite_output_file"),
    ("evaluate into a missing folder", ["evaluate", "{root}/vae", "--output_file", "{root}/no/dir/m.json"],
     "does not exist"),
    ("sample -1 images", ["sample", "{root}/vae", "--num_samples", "-1"], "--num_samples must be a positive"),
    ("sample a negative temperature", ["sample", "{root}/vqvae", "--temperature", "-1"], "--temperature must be"),
    ("sample over a user's file", ["sample", "{root}/vae", "--output_file", "{root}/image.png"], "already exists"),
    ("sample with a VAE as prior", ["sample", "{root}/vqvae", "--prior", "{root}/vae", "--output_file", "{root}/s.png"],
     "prior"),
    ("a prior for a VAE", ["sample", "{root}/vae", "--prior", "{root}/vqvae", "--output_file", "{root}/s.png"],
     "--prior needs a VQ-VAE"),
    ("push a plain folder", ["push", "{root}/mine", "me/x"], "not a trained model folder"),
    ("push without a repo", ["push", "{root}/vae"], "the following arguments are required: repo_id"),
    ("experiment -1 steps", ["experiment", "compare", "--output_dir", "{root}/o", "--max_steps", "-1"],
     "--max_steps must be a positive integer"),
    ("an unknown experiment", ["experiment", "gan", "--output_dir", "{root}/o"], "invalid choice"),
    ("experiment into a user's folder", ["experiment", "compare", "--output_dir", "{root}/mine"], "already holds"),
    ("a prior on a VAE", ["train-prior", "--vqvae", "{root}/vae", "--output_dir", "{root}/o"], "needs a VQ-VAE"),
    ("a prior on nothing", ["train-prior", "--vqvae", "{root}/nothing", "--output_dir", "{root}/o"],
     "neither|not a model folder|no config.json|not found|does not"),
    # issue 29: data lost
    ("train into a folder another run holds", ["train", "--do_train", "--max_steps", "1", "--overwrite_output_dir",
                                               "--output_dir", "{root}/busy"], "in use by another run \\(process"),
    ("a prior into a folder another run holds", ["train-prior", "--vqvae", "{root}/vqvae", "--do_train", "--max_steps",
                                                 "1", "--overwrite_output_dir", "--output_dir", "{root}/busy"],
     "in use by another run"),
    ("an experiment into a folder another run holds", ["experiment", "compare", "--budget", "quick", "--max_steps",
                                                       "1", "--overwrite_output_dir", "--output_dir", "{root}/busy"],
     "in use by another run"),
    ("a prior into its own VQ-VAE", ["train-prior", "--vqvae", "{root}/vqvae", "--output_dir", "{root}/vqvae",
                                     "--overwrite_output_dir", "--do_train", "--max_steps", "1"],
     "is the folder of --vqvae .*model it reads"),
    ("a prior into its VQ-VAE by another path", ["train-prior", "--vqvae", "{root}/vqvae", "--output_dir",
                                                 "{root}/mine/../vqvae/", "--overwrite_output_dir", "--do_train",
                                                 "--max_steps", "1"], "is the folder of --vqvae"),
    ("a prior into its VQ-VAE through a link", ["train-prior", "--vqvae", "{root}/link", "--output_dir",
                                                "{root}/vqvae", "--overwrite_output_dir", "--do_train", "--max_steps",
                                                "1"], "is the folder of --vqvae"),
    ("a prior inside its VQ-VAE", ["train-prior", "--vqvae", "{root}/vqvae", "--output_dir", "{root}/vqvae/prior",
                                   "--do_train", "--max_steps", "1"], "lies inside the folder of --vqvae"),
    ("fine-tune into the model itself", ["train", "--model_type", "vae", "--model_name_or_path", "{root}/vae",
                                         "--output_dir", "{root}/vae", "--overwrite_output_dir", "--do_train",
                                         "--max_steps", "1"], "is the folder of --model_name_or_path"),
    ("fine-tune into a folder that holds the model", ["train", "--model_type", "vae", "--model_name_or_path",
                                                      "{root}/vae", "--output_dir", "{root}", "--overwrite_output_dir",
                                                      "--do_train", "--max_steps", "1"],
     "holds the folder of --model_name_or_path"),
    ("sample over the model's own file", ["sample", "{root}/vae", "--output_file", "{root}/vae/config.json",
                                          "--overwrite_output_file"], "belongs to the model"),
    ("evaluate over the model's weights", ["evaluate", "{root}/vae", "--output_file",
                                           "{root}/vae/model.safetensors", "--overwrite_output_file"],
     "belongs to the model"),
    # issue 29: silent wrong results
    ("evaluate a model missing a tensor", ["evaluate", "{root}/vae_missing"],
     "do not match its config.json.*missing: decoder.layers.0.bias"),
    ("sample a model with an extra tensor", ["sample", "{root}/vae_extra", "--output_file", "{root}/s.png"],
     "unexpected: decoder.extra.weight"),
    ("evaluate a model whose backbone was edited", ["evaluate", "{root}/vae_backbone"], "do not match its config.json"),
    ("sample a model whose latent_dim was edited", ["sample", "{root}/vae_shape", "--output_file", "{root}/s.png"],
     r"decoder.layers.0.weight \(392, 16\) in the weights, \(392, 8\) by config.json"),
    ("push a model missing a tensor", ["push", "{root}/vae_missing", "me/x"], "missing: decoder.layers.0.bias"),
    ("evaluate a model with a NaN weight", ["evaluate", "{root}/vae_nan"], "NaN or infinite.*decoder.layers.0.bias"),
    ("sample a model with an infinite weight", ["sample", "{root}/vae_inf", "--output_file", "{root}/s.png"],
     "NaN or infinite"),
    ("evaluate empty weights", ["evaluate", "{root}/vae_empty"], "model.safetensors .*is empty"),
    ("evaluate truncated weights", ["evaluate", "{root}/vae_truncated"], "model.safetensors .*truncated"),
    ("fine-tune a model missing a tensor", ["train", "--model_type", "vae", "--model_name_or_path",
                                            "{root}/vae_missing", "--output_dir", "{root}/o", "--do_train",
                                            "--max_steps", "1"], "missing: decoder.layers.0.bias"),
    ("a prior on a VQ-VAE with NaN weights", ["train-prior", "--vqvae", "{root}/vqvae_nan", "--output_dir",
                                              "{root}/o", "--do_train", "--max_steps", "1"], "NaN or infinite"),
    ("sample with a damaged prior", ["sample", "{root}/vqvae", "--prior", "{root}/prior_missing", "--output_file",
                                     "{root}/s.png"], "--prior .*do not match its config.json"),
    ("fine-tune with another latent_dim", ["train", "--model_type", "vae", "--model_name_or_path", "{root}/vae",
                                           "--latent_dim", "8", "--output_dir", "{root}/o", "--do_train",
                                           "--max_steps", "1"], "--latent_dim 8 changes the architecture"),
    ("fine-tune with another backbone", ["train", "--model_type", "vae", "--model_name_or_path", "{root}/vae",
                                         "--backbone", "mlp", "--output_dir", "{root}/o", "--do_train", "--max_steps",
                                         "1"], "--backbone mlp changes the architecture"),
    ("fine-tune with another codebook size", ["train", "--model_name_or_path", "{root}/vqvae", "--num_embeddings",
                                              "32", "--output_dir", "{root}/o", "--do_train", "--max_steps", "1"],
     "--num_embeddings 32 changes the architecture"),
    ("fine-tune with another quantizer", ["train", "--model_name_or_path", "{root}/vqvae", "--config_overrides",
                                          "quantizer=fsq", "--output_dir", "{root}/o", "--do_train", "--max_steps",
                                          "1"], "quantizer=fsq changes the architecture"),
    ("a model_type override", ["train", "--config_overrides", "model_type=hf_autoencoders_vae", "--output_dir",
                               "{root}/o", "--do_train"], "model_type cannot be overridden.*--model_type"),
    ("zero epochs", ["train", "--do_train", "--num_train_epochs", "0", "--output_dir", "{root}/o"], "trains nothing"),
    ("zero steps", ["train", "--do_train", "--max_steps", "0", "--output_dir", "{root}/o"], "trains nothing"),
    ("a prior for zero epochs", ["train-prior", "--vqvae", "{root}/vqvae", "--do_train", "--num_train_epochs", "0",
                                 "--output_dir", "{root}/o"], "trains nothing"),
    ("neither train nor evaluate", ["train", "--output_dir", "{root}/o"], "nothing to do.*--do_train"),
    # issue 29: raw tracebacks and unclear errors
    ("evaluate a PixelCNN prior", ["evaluate", "{root}/prior"], "is a PixelCNN prior.*--prior"),
    ("sample a PixelCNN prior", ["sample", "{root}/prior", "--output_file", "{root}/s.png"],
     "is a PixelCNN prior.*--prior"),
    ("evaluate a transformer prior", ["evaluate", "{root}/tprior"], "is a transformer prior.*--prior"),
    ("sample a transformer prior", ["sample", "{root}/tprior", "--output_file", "{root}/s.png"],
     "is a transformer prior.*--prior"),
    ("evaluate into a folder", ["evaluate", "{root}/vae", "--output_file", "{root}/mine"], "is a folder"),
    ("evaluate over a folder", ["evaluate", "{root}/vae", "--output_file", "{root}/mine", "--overwrite_output_file"],
     "is a folder"),
    ("evaluate where nothing can be written", ["evaluate", "{root}/vae", "--output_file", "/proc/metrics.json"],
     "cannot be written"),
    ("sample over a folder", ["sample", "{root}/vae", "--output_file", "{root}/mine", "--overwrite_output_file"],
     "is a folder"),
    ("sample where nothing can be written", ["sample", "{root}/vae", "--output_file", "/proc/samples.png"],
     "cannot be written"),
    ("a transformer prior at infinite temperature", ["sample", "{root}/vqvae", "--prior", "{root}/tprior",
                                                     "--temperature", "inf", "--output_file", "{root}/s.png"],
     "--temperature must be a finite number"),
    ("a PixelCNN prior at infinite temperature", ["sample", "{root}/vqvae", "--prior", "{root}/prior",
                                                  "--temperature", "inf", "--output_file", "{root}/s.png"],
     "--temperature must be a finite number"),
    ("a huge importance-sample count", ["evaluate", "{root}/vae", "--num_importance_samples", "100000000"],
     "--num_importance_samples must be at most"),
    ("downstream on string labels", ["evaluate", "{root}/vae", "--dataset_name", "{root}/strlabels",
                                     "--label_column", "label", "--downstream"],
     "label_column='label' of .*strlabels holds string values.*class_encode_column"),
    ("a class-conditional prior on string labels", ["train-prior", "--vqvae", "{root}/vqvae", "--dataset_name",
                                                    "{root}/strlabels", "--label_column", "label",
                                                    "--class_conditional", "--output_dir", "{root}/o", "--do_train",
                                                    "--max_steps", "1"], "holds string values"),
    ("downstream on negative labels", ["evaluate", "{root}/vae", "--dataset_name", "{root}/neglabels",
                                       "--downstream"], "labels of .*neglabels.* -1"),
    ("a linear probe on negative labels", ["evaluate", "{root}/vae", "--dataset_name", "{root}/neglabels",
                                           "--linear_probe"], "labels of .*neglabels.* -1"),
    ("domain features on negative labels", ["evaluate", "{root}/vae", "--dataset_name", "{root}/neglabels", "--fid"],
     "labels of .*neglabels.* -1"),
    ("labels too large to be classes", ["evaluate", "{root}/vae", "--dataset_name", "{root}/biglabels",
                                        "--downstream"], "1000000000000.*class"),
    ("a class-conditional prior on negative labels", ["train-prior", "--vqvae", "{root}/vqvae", "--dataset_name",
                                                      "{root}/neglabels", "--class_conditional", "--output_dir",
                                                      "{root}/o", "--do_train", "--max_steps", "1"],
     "labels of .*neglabels.* -1"),
    ("training's Frechet distance on negative labels", ["train", "--dataset_name", "{root}/neglabels", "--do_train",
                                                        "--do_eval", "--max_steps", "1", "--output_dir", "{root}/o"],
     "labels of .*neglabels.* -1.*--fid false"),
    ("push without a network", ["push", "{root}/vae", "me/x"], "could not upload .*HF_HUB_OFFLINE"),
    ("a zero image size", ["train", "--do_train", "--image_size", "0", "--output_dir", "{root}/o"],
     "--image_size must be a positive number"),
    ("two channels", ["train", "--do_train", "--num_channels", "2", "--output_dir", "{root}/o"],
     "--num_channels must be 1 \\(grayscale\\) or 3"),
    ("a zero batch size", ["train", "--do_train", "--per_device_train_batch_size", "0", "--output_dir", "{root}/o"],
     "--per_device_train_batch_size must be a positive integer"),
    ("a Frechet distance of three images", ["evaluate", "{root}/vae", "--fid", "--max_eval_samples", "3"],
     "--fid needs at least 6 test images"),
    ("a hundred million samples", ["sample", "{root}/vae", "--num_samples", "100000000", "--output_file",
                                   "{root}/s.png"], "--num_samples must be at most 4096.*evaluate"),
    ("a prior on zero images", ["train-prior", "--vqvae", "{root}/vqvae", "--max_train_samples", "0", "--output_dir",
                                "{root}/o"], "--max_train_samples must be a positive number"),
]


@pytest.mark.parametrize("arguments, pattern", [case[1:] for case in CLI_CASES], ids=[case[0] for case in CLI_CASES])
def test_command_line(folders, arguments, pattern, capsys):
    before = {p: p.read_bytes() for p in folders.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit) as info:
        cli_main([a.replace("{root}", str(folders)) for a in arguments])
    assert info.value.code != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: "), err[-2000:]
    assert re.search(pattern, last), last
    assert {p: p.read_bytes() for p in folders.rglob("*") if p.is_file() and p in before} == before
    assert not (folders / "o").exists()


def test_there_are_enough_hostile_cases():
    assert len(MODEL_CASES) + len(CLI_CASES) >= 67 + 36  # issue 15's cases, and the 36 or more of issue 29's probe


# ------------------------------------------------------------------------------------ issue 29: the second probe
# (id, environment variables, arguments ({root} is the sandbox), pattern of the one error line)
ENVIRONMENT_CASES = [
    ("evaluate under torchrun", {"WORLD_SIZE": "2", "RANK": "1"},
     ["evaluate", "{root}/vae", "--output_file", "{root}/m.json"], "runs in one process.*WORLD_SIZE=2"),
    ("sample under torchrun", {"WORLD_SIZE": "2", "RANK": "0"},
     ["sample", "{root}/vae", "--output_file", "{root}/s.png"], "runs in one process"),
    ("experiment under accelerate", {"WORLD_SIZE": "4"}, ["experiment", "compare", "--output_dir", "{root}/o"],
     "runs in one process.*only train and train-prior"),
    ("push under torchrun", {"WORLD_SIZE": "2"}, ["push", "{root}/vae", "me/x"], "runs in one process"),
    ("an offline model id", {"HF_HUB_OFFLINE": "1"}, ["evaluate", "no-such/model"], "HF_HUB_OFFLINE"),
    ("an offline prior id", {"HF_HUB_OFFLINE": "1"}, ["sample", "{root}/vqvae", "--prior", "no-such/prior",
                                                      "--output_file", "{root}/s.png"], "HF_HUB_OFFLINE"),
    ("an offline VQ-VAE id", {"HF_HUB_OFFLINE": "1"}, ["train-prior", "--vqvae", "no-such/vqvae", "--output_dir",
                                                       "{root}/o"], "HF_HUB_OFFLINE"),
    ("an offline dataset id", {"HF_HUB_OFFLINE": "1"}, ["train", "--do_train", "--dataset_name", "no-such/dataset",
                                                        "--output_dir", "{root}/o"], "HF_HUB_OFFLINE"),
    ("an offline dataset to evaluate on", {"HF_DATASETS_OFFLINE": "1"},
     ["evaluate", "{root}/vae", "--dataset_name", "no-such/dataset"], "HF_DATASETS_OFFLINE"),
]

TYPO_CASES = [  # (id, arguments, the suggestion of the one error line)
    ("train --max_stesp", ["train", "--max_stesp", "10", "--output_dir", "{root}/o"], "did you mean --max_steps"),
    ("train --learnig_rate", ["train", "--learnig_rate", "1e-3", "--output_dir", "{root}/o"],
     "did you mean --learning_rate"),
    ("train-prior --vqae", ["train-prior", "--vqae", "{root}/vqvae", "--output_dir", "{root}/o"],
     "did you mean --vqvae"),
    ("evaluate --datset_name", ["evaluate", "{root}/vae", "--datset_name", "x"], "did you mean --dataset_name"),
    ("sample --temprature", ["sample", "{root}/vqvae", "--temprature", "0.5"], "did you mean --temperature"),
    ("push --pirvate", ["push", "{root}/vae", "me/x", "--pirvate"], "did you mean --private"),
    ("experiment --budjet", ["experiment", "compare", "--output_dir", "{root}/o", "--budjet", "quick"],
     "did you mean --budget"),
    ("a mistyped command", ["evalute", "{root}/vae"], "did you mean evaluate"),
    ("imagefolder without its folder", ["train", "--do_train", "--dataset_name", "imagefolder", "--output_dir",
                                        "{root}/o"], "--train_dir"),
    ("--train_dir with a Hub dataset", ["train", "--do_train", "--dataset_name", "ylecun/mnist", "--train_dir",
                                        "{root}/mine", "--output_dir", "{root}/o"], "--train_dir.*--dataset_name"),
]


def _one_error_line(folders, arguments, capsys) -> str:
    """Run the command on the sandbox; assert it ended with one `error: ...` line, no traceback, the user's files
    untouched and nothing written; return that line."""
    before = {p: p.read_bytes() for p in folders.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit) as info:
        cli_main([a.replace("{root}", str(folders)) for a in arguments])
    assert info.value.code != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: "), err[-2000:]
    assert {p: p.read_bytes() for p in folders.rglob("*") if p.is_file()} == before
    return last


@pytest.mark.parametrize("environment, arguments, pattern", [case[1:] for case in ENVIRONMENT_CASES],
                         ids=[case[0] for case in ENVIRONMENT_CASES])
def test_command_line_in_an_environment(folders, environment, arguments, pattern, capsys, monkeypatch):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert re.search(pattern, _one_error_line(folders, arguments, capsys))


@pytest.mark.parametrize("arguments, pattern", [case[1:] for case in TYPO_CASES], ids=[case[0] for case in TYPO_CASES])
def test_a_mistyped_flag_gets_a_suggestion(folders, arguments, pattern, capsys):
    assert re.search(pattern, _one_error_line(folders, arguments, capsys))
    assert not (folders / "o").exists()


def test_issue_29_adds_at_least_sixteen_hostile_cases():
    assert len(ENVIRONMENT_CASES) + len(TYPO_CASES) >= 16


# ------------------------------------------------------------------ caches that cannot be written, killed builds
# A cache folder that cannot be written (a read-only HOME; here a path under a file, which refuses even root): the
# work is done without the cache, with a warning naming it.
def _features_cache(unwritable):
    from hf_autoencoders.evaluation import domain_features

    images, labels = torch.rand(40, 1, 28, 28), torch.arange(40) % 4
    return domain_features(images, labels, cache_dir=unwritable, epochs=1, width=2, progress=False).num_features


def _image_folder(folder: Path, count: int = 24) -> Path:
    """A folder of `count` small PNGs in two classes: a dataset on disk, whose splits the decoded cache keeps."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        (folder / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"class{i % 2}" / f"{i}.png")
    return folder


def _decoded_cache(unwritable):
    from hf_autoencoders.data import load_image_dataset

    images = _image_folder(unwritable.parents[2] / "images")
    return len(load_image_dataset(images, image_size=8, cache_dir=unwritable).train) > 0


def _code_cache(unwritable):
    from hf_autoencoders.data import load_image_dataset
    from hf_autoencoders.training.prior import extract_codes

    codes, _ = extract_codes(vqvae().eval(), load_image_dataset("digits", max_samples=8).test, 4, unwritable)
    return len(codes)


def _help_cache(unwritable, monkeypatch):
    from hf_autoencoders.training.parsing import parse_command

    monkeypatch.setenv("XDG_CACHE_HOME", str(unwritable))
    with pytest.raises(SystemExit) as info:
        parse_command("sample", __import__("hf_autoencoders.cli", fromlist=["x"])._sample_parser, ["--help"])
    return info.value.code == 0


def _inception_weights(unwritable, monkeypatch):
    from hf_autoencoders.evaluation import FIDInceptionV3, inception_features

    downloaded_into = []

    def download(url, model_dir=None, **kwargs):  # the download, offline: only where it would write is checked
        Path(model_dir).mkdir(parents=True, exist_ok=True)
        downloaded_into.append(model_dir)
        return FIDInceptionV3().state_dict()

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(unwritable))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", download)
    features = inception_features(device="cpu", progress=False)
    return features.num_features == 2048 and not str(downloaded_into[0]).startswith(str(unwritable))


CACHE_CASES = [  # (id, the work, given the unwritable folder (and monkeypatch), what it returns)
    ("the FD classifier's cache", lambda folder, _: _features_cache(folder), 16),
    ("the decoded images' cache", lambda folder, _: _decoded_cache(folder), True),
    ("the prior's code cache", lambda folder, _: _code_cache(folder), 8),
    ("the --help cache", _help_cache, True),
    ("the Inception weights' cache", _inception_weights, True),
]


@pytest.mark.parametrize("work, expected", [case[1:] for case in CACHE_CASES], ids=[case[0] for case in CACHE_CASES])
def test_a_cache_that_cannot_be_written_falls_back(tmp_path, work, expected, caplog, capsys, monkeypatch):
    (tmp_path / "home").write_text("a file where the cache folder's parent should be")
    unwritable = tmp_path / "home" / ".cache" / "hf_autoencoders"
    with caplog.at_level("WARNING"):
        assert work(unwritable, monkeypatch) == expected
    warned = caplog.text + capsys.readouterr().err
    assert re.search(r"(cannot|could not) (be )?(written|kept|use)", warned, re.I), warned
    assert str(tmp_path / "home") in warned


def test_partial_files_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    """A cache build killed half-way leaves `<file>.<host>-<pid>.partial`: the next build in that folder removes
    those of processes of this machine that are gone, never a live process's nor another machine's."""
    import subprocess
    import sys

    from hf_autoencoders.data import load_image_dataset
    from hf_autoencoders.results import partial_path

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    target = tmp_path / "0123456789abcdef01234567.npy"
    killed = partial_path(target, pid=dead_pid)
    alive = partial_path(target, pid=1)  # init: a live process
    elsewhere = target.with_name(f"{target.name}.ffffffff-{dead_pid}.partial")  # another machine's
    for path in (killed, alive, elsewhere):
        path.write_bytes(b"half an array")
    load_image_dataset(_image_folder(tmp_path / "images"), image_size=8, cache_dir=tmp_path)
    assert not killed.exists() and alive.exists() and elsewhere.exists()
    assert any(tmp_path.glob("*.npy"))  # the cache was built
