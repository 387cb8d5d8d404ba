"""The ViT backbone: checkpoints saved before its options existed (or before its defaults changed) load and give the
same outputs, every option keeps the encode/decode contract for spatial (VQ-VAE) and vector (AE, VAE) latents and
round-trips through `save_pretrained` and the remote-code load, and the config refuses options it cannot build."""

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from hf_autoencoders.models import AutoencoderConfig, VQVAEConfig, autoencoder_classes

FIXTURES = Path(__file__).parent / "fixtures" / "legacy_vit"
MODEL_CODE = Path(__file__).resolve().parents[1] / "hf_autoencoders" / "models"
TINY = {"backbone": "vit", "image_size": 8, "patch_size": 2, "hidden_size": 16, "num_hidden_layers": 1,
        "num_attention_heads": 4}
SIZES = {"ae": {"latent_dim": 4}, "vae": {"latent_dim": 4}, "vqvae": {"num_embeddings": 16, "embedding_dim": 4}}
OPTIONS = {
    "default": {},
    "linear_head": {"vit_output_head": "linear"},
    "conv_channels": {"vit_conv_channels": 4},
    "mlp_ratio": {"vit_mlp_ratio": 2.5},
    "decoder_layers": {"vit_decoder_num_layers": 2},
    "no_decoder_blocks": {"vit_decoder_num_layers": 0},
    "all": {"vit_output_head": "pixel_shuffle", "vit_conv_channels": 6, "vit_mlp_ratio": 4.0,
            "vit_decoder_num_layers": 2},
}
VIT_FIELDS = sorted(name for name in AutoencoderConfig.__dataclass_fields__ if name.startswith("vit_"))


def build(family: str, options: dict, seed: int = 0):
    config_class, model_class = autoencoder_classes(family)
    torch.manual_seed(seed)
    config = config_class(num_channels=3, **{**TINY, **options}, **SIZES[family])
    return model_class(config).eval()


def latents_of(model, x):
    encoded = model.encode(x)
    return encoded.latent_dist.mean if hasattr(encoded, "latent_dist") else encoded.latents


def test_every_vit_field_is_exercised():
    assert VIT_FIELDS, "the config has no vit_* fields"
    covered = {name for options in OPTIONS.values() for name in options}
    assert set(VIT_FIELDS) <= covered, f"not tested: {sorted(set(VIT_FIELDS) - covered)}"


def test_the_default_vit_is_the_measured_best_and_says_so_in_its_config(tmp_path):
    """`backbone="vit"` alone builds the ViT measured best per second (docs/models.md), and its config.json names
    every ViT option, so that a later change of defaults cannot change what it loads as; other backbones write none."""
    config = VQVAEConfig(backbone="vit")
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 1, 2)
    assert (config.vit_mlp_ratio, config.vit_output_head, config.vit_conv_channels) == (2.0, "pixel_shuffle", 16)
    assert {"vit_output_head", "vit_mlp_ratio", "vit_conv_channels"} <= set(config.to_diff_dict())
    assert not [key for key in VQVAEConfig(backbone="conv").to_diff_dict() if key.startswith("vit_")]
    config = VQVAEConfig(**TINY, vit_output_head="linear", vit_decoder_num_layers=0)
    config.save_pretrained(tmp_path)
    reloaded = VQVAEConfig.from_pretrained(tmp_path)
    assert reloaded.vit_output_head == "linear" and reloaded.vit_decoder_num_layers == 0


def test_configs_saved_with_the_old_defaults_read_as_they_were(tmp_path):
    """A ViT config.json of before the options (no `vit_output_head`) reads as the old ViT: linear head, 4x MLPs;
    one that named the pixel-shuffle head but not its channels gets the half-width head of that time."""
    legacy = VQVAEConfig.from_pretrained(FIXTURES / "vqvae")
    assert (legacy.vit_output_head, legacy.vit_mlp_ratio, legacy.num_attention_heads) == ("linear", 4.0, 4)
    saved = VQVAEConfig(**TINY, vit_output_head="pixel_shuffle").to_dict()
    del saved["vit_conv_channels"], saved["vit_mlp_ratio"]
    old = VQVAEConfig.from_dict(saved)
    assert (old.vit_conv_channels, old.vit_mlp_ratio) == (TINY["hidden_size"] // 2, 4.0)


@pytest.mark.parametrize("field", ["vit_position_encoding", "vit_patch_stem", "vit_rope_theta",
                                   "vit_decoder_hidden_size"])
def test_options_that_were_removed_are_refused_by_name(field):
    with pytest.raises(ValueError, match=f"{field}: ViT option"):
        VQVAEConfig(**TINY, **{field: 1})


@pytest.mark.parametrize("name", ["vqvae", "vae"])
def test_legacy_checkpoint_loads_and_gives_the_old_outputs(name):
    """Folders saved by the ViT of ff55b2d (nn.MultiheadAttention, no vit_* fields; make_fixture.py) load strictly
    and reproduce the old outputs. The attention is now F.scaled_dot_product_attention on the same weights: the
    outputs agree to float rounding (a few 1e-7), not bit for bit."""
    folder = FIXTURES / name
    assert "vit_" not in (folder / "config.json").read_text()  # an old-format config
    model, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    model.eval()
    assert (model.config.vit_output_head, model.config.vit_mlp_ratio) == ("linear", 4.0)
    saved = load_file(folder / "io.safetensors")
    with torch.no_grad():
        if name == "vqvae":
            latents = model.encode(saved["x"]).latents
            outputs = {"latents": latents, "sample": model.decode(latents).sample,
                       "unquantized_sample": model.decode(latents, force_not_quantize=True).sample}
        else:
            posterior = model.encode(saved["x"]).latent_dist
            outputs = {"mean": posterior.mean, "std": posterior.std, "sample": model.decode(posterior.mean).sample}
    for key, value in outputs.items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=1e-6, msg=f"{name}: {key}")


@pytest.mark.parametrize("family", ["ae", "vae", "vqvae"])
@pytest.mark.parametrize("option", OPTIONS)
def test_every_option_keeps_the_encode_decode_contract(option, family):
    model = build(family, OPTIONS[option]).train()
    x = torch.rand(2, 3, 8, 8)
    encoded = model.encode(x)
    config = model.config
    if family == "vqvae":
        grid = config.image_size // config.patch_size
        assert encoded.latents.shape == (2, config.embedding_dim, grid, grid)
    elif family == "vae":
        assert encoded.latent_dist.mean.shape == (2, config.latent_dim)
    else:
        assert encoded.latents.shape == (2, config.latent_dim)
    decoded = model.decode(latents_of(model, x)).sample
    assert decoded.shape == x.shape
    model(x).loss.backward()
    no_gradient = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_gradient, f"parameters without a gradient: {no_gradient}"


@pytest.mark.parametrize("head", ["linear", "pixel_shuffle"])
def test_fast_paths_compute_what_the_plain_layers_compute(head):
    """The ViT's patch embedding as a matmul and its channels-last output head give the numbers of the plain layers,
    in ordinary contiguous tensors."""
    import torch.nn.functional as F

    model = build("vqvae", {"vit_output_head": head})
    x = torch.rand(3, 3, 8, 8)
    encoder, decoder = model.encoder, model.decoder
    with torch.no_grad():
        tokens = encoder.embed_patches(x)
        torch.testing.assert_close(tokens, encoder.patch_embedding(x).flatten(2).transpose(1, 2), rtol=0, atol=1e-6)
        hidden = torch.randn(3, model.config.embedding_dim, 4, 4)
        out = decoder(hidden)
        patches = decoder.patch_unembedding(decoder.run_stack(decoder.latent_projection(hidden.flatten(2).mT)))
        c, p = patches.shape[-1] // 4, 2
        image = patches.view(3, 4, 4, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(3, c, 8, 8)
        expected = image if decoder.output_conv is None else decoder.output_conv(F.gelu(image))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert out.is_contiguous() and tokens.shape == (3, 16, TINY["hidden_size"])



def test_options_change_the_parameters_they_name():
    default = build("vqvae", {})
    names = {option: set(build("vqvae", OPTIONS[option]).state_dict()) for option in OPTIONS}
    assert "decoder.output_conv.weight" in names["default"]
    assert "decoder.output_conv.weight" not in names["linear_head"]
    assert build("vqvae", OPTIONS["conv_channels"]).decoder.output_conv.in_channels == 4
    assert build("vqvae", OPTIONS["mlp_ratio"]).encoder.blocks[0].mlp[0].out_features == 40
    decoder = build("vqvae", OPTIONS["decoder_layers"]).decoder
    assert len(decoder.blocks) == 2 and len(build("vqvae", {}).encoder.blocks) == 1
    assert set(default.state_dict()) == names["default"]


def save_round_trip(tmp_path: Path) -> list[str]:
    """Save a VQ-VAE (spatial latents) and a VAE (vector latents) with every option, reload each with
    AutoModel.from_pretrained in this process, and write the input and outputs for the remote-code load."""
    folders = []
    x = torch.rand(2, 3, 8, 8)
    for option, options in OPTIONS.items():
        for family in ("vqvae", "vae"):
            model = build(family, options, seed=len(folders))
            with torch.no_grad():  # move every weight off its initial value (zero biases, unit norms)
                for parameter in model.parameters():
                    parameter.add_(0.05 * torch.randn_like(parameter))
            folder = tmp_path / f"{family}_{option}"
            model.save_pretrained(folder)
            with torch.no_grad():
                latents = latents_of(model, x)
                sample = model.decode(latents).sample
            save_file({"x": x, "latents": latents.contiguous(), "sample": sample}, folder / "io.safetensors")
            loaded = AutoModel.from_pretrained(folder).eval()
            assert type(loaded) is type(model)
            assert all(getattr(loaded.config, name) == getattr(model.config, name) for name in VIT_FIELDS)
            with torch.no_grad():
                assert torch.equal(latents_of(loaded, x), latents), f"{folder.name}: latents differ after reload"
                assert torch.equal(loaded.decode(latents).sample, sample), f"{folder.name}: decode differs"
            folders.append(folder.name)
    return folders


def test_every_option_round_trips_through_save_pretrained_and_remote_code(tmp_path, run_without_package):
    folders = save_round_trip(tmp_path)
    for name in ("vqvae", "vae"):  # an old checkpoint, with today's code as its remote code
        legacy = tmp_path / f"legacy_{name}"
        shutil.copytree(FIXTURES / name, legacy)
        for path in MODEL_CODE.glob("*.py"):
            if path.name != "__init__.py":
                shutil.copy(path, legacy)
    result = run_without_package(f"""
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModel
        torch.set_num_threads(1)
        for name in {folders!r}:
            folder = {str(tmp_path)!r} + "/" + name
            model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
            assert "hf_autoencoders" not in type(model).__module__, type(model).__module__
            saved = load_file(folder + "/io.safetensors")
            with torch.no_grad():
                encoded = model.encode(saved["x"])
                latents = encoded.latent_dist.mean if hasattr(encoded, "latent_dist") else encoded.latents
                assert torch.equal(latents, saved["latents"]), name
                assert torch.equal(model.decode(latents).sample, saved["sample"]), name
        for name in ("vqvae", "vae"):
            folder = {str(tmp_path)!r} + "/legacy_" + name
            model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
            assert "hf_autoencoders" not in type(model).__module__
            saved = load_file(folder + "/io.safetensors")
            with torch.no_grad():
                out = model.decode(model.encode(saved["x"]).latents if name == "vqvae"
                                   else model.encode(saved["x"]).latent_dist.mean).sample
            torch.testing.assert_close(out, saved["sample"], rtol=0, atol=1e-6)
        print("REMOTE_OK", len({folders!r}))
    """, tmp_path)
    assert f"REMOTE_OK {len(folders)}" in result.stdout, result.stderr[-3000:]


@pytest.mark.parametrize("overrides, message", [
    ({"vit_output_head": "conv"}, "vit_output_head='conv' is not known"),
    ({"vit_mlp_ratio": 0.0}, "vit_mlp_ratio must be > 0"),
    ({"vit_conv_channels": 0}, "vit_conv_channels must be >= 1"),
    ({"vit_decoder_num_layers": -1}, "vit_decoder_num_layers must be >= 0"),
    ({"vit_conv_channels": 8.5}, "vit_conv_channels must be an integer"),
    ({"backbone": "conv", "vit_output_head": "linear"}, "apply to backbone='vit' only"),
])
def test_config_refuses_vit_options_it_cannot_build(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        VQVAEConfig(**{**TINY, **overrides})
