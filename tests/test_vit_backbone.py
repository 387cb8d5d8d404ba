"""The ViT backbone: checkpoints saved before its options existed load and give the same outputs, every option keeps
the encode/decode contract for spatial (VQ-VAE) and vector (AE, VAE) latents and round-trips through
`save_pretrained` and the remote-code load, and the config refuses options it cannot build."""

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from hf_autoencoders.models import AutoencoderConfig, VQVAEConfig, autoencoder_classes
from hf_autoencoders.models.backbones import apply_rotary, rotary_angles
from hf_autoencoders.models.configuration_autoencoders import RECOMMENDED_VIT_SETTINGS

FIXTURES = Path(__file__).parent / "fixtures" / "legacy_vit"
MODEL_CODE = Path(__file__).resolve().parents[1] / "hf_autoencoders" / "models"
TINY = {"backbone": "vit", "image_size": 8, "patch_size": 2, "hidden_size": 16, "num_hidden_layers": 1,
        "num_attention_heads": 4}
SIZES = {"ae": {"latent_dim": 4}, "vae": {"latent_dim": 4}, "vqvae": {"num_embeddings": 16, "embedding_dim": 4}}
OPTIONS = {
    "default": {},
    "rope2d": {"vit_position_encoding": "rope2d"},
    "rope2d_theta": {"vit_position_encoding": "rope2d", "vit_rope_theta": 10.0},
    "conv_stem": {"vit_patch_stem": "conv"},
    "pixel_shuffle": {"vit_output_head": "pixel_shuffle"},
    "conv_channels": {"vit_patch_stem": "conv", "vit_output_head": "pixel_shuffle", "vit_conv_channels": 4},
    "mlp_ratio": {"vit_mlp_ratio": 2.5},
    "decoder_shape": {"vit_decoder_hidden_size": 32, "vit_decoder_num_layers": 2},
    "no_decoder_blocks": {"vit_decoder_num_layers": 0},
    "all": {"vit_position_encoding": "rope2d", "vit_rope_theta": 50.0, "vit_patch_stem": "conv",
            "vit_output_head": "pixel_shuffle", "vit_conv_channels": 6, "vit_mlp_ratio": 2.0,
            "vit_decoder_hidden_size": 32, "vit_decoder_num_layers": 2},
    "recommended": RECOMMENDED_VIT_SETTINGS,
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
    defaults = VQVAEConfig(backbone="vit")
    assert all(getattr(defaults, name) == AutoencoderConfig.__dataclass_fields__[name].default for name in VIT_FIELDS)


def test_vit_options_are_written_only_when_set(tmp_path):
    """A model that leaves the options at their defaults saves the config it saved before they existed (so do the
    run keys the studies hash from configs); a set option is written and read back."""
    for backbone in ("conv", "vit"):
        assert not [key for key in VQVAEConfig(backbone=backbone).to_diff_dict() if key.startswith("vit_")]
    config = VQVAEConfig(**TINY, vit_output_head="pixel_shuffle", vit_decoder_num_layers=0)
    assert {key for key in config.to_diff_dict() if key.startswith("vit_")} == {"vit_output_head",
                                                                                "vit_decoder_num_layers"}
    config.save_pretrained(tmp_path)
    reloaded = VQVAEConfig.from_pretrained(tmp_path)
    assert reloaded.vit_output_head == "pixel_shuffle" and reloaded.vit_decoder_num_layers == 0


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
    assert all(getattr(model.config, field) == AutoencoderConfig.__dataclass_fields__[field].default
               for field in VIT_FIELDS)
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
    assert not any("position_embedding" in key for key in names["rope2d"])  # rotary: no parameters
    assert any("decoder.position_embedding" == key for key in build("vae", OPTIONS["rope2d"]).state_dict())
    assert any(key.startswith("encoder.patch_embedding.layers.") for key in names["conv_stem"])
    assert "decoder.output_conv.weight" in names["pixel_shuffle"]
    assert build("vqvae", OPTIONS["conv_channels"]).decoder.output_conv.in_channels == 4
    assert build("vqvae", OPTIONS["mlp_ratio"]).encoder.blocks[0].mlp[0].out_features == 40
    decoder = build("vqvae", OPTIONS["decoder_shape"]).decoder
    assert len(decoder.blocks) == 2 and decoder.latent_projection.out_features == 32
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


def test_rope2d_scores_depend_only_on_the_2d_offset():
    grid, head_dim = 5, 8
    cos, sin = rotary_angles(grid, head_dim, 100.0)
    query, key = torch.randn(head_dim), torch.randn(head_dim)
    rotated_q = apply_rotary(query.expand(1, 1, grid * grid, head_dim), cos, sin)[0, 0]
    rotated_k = apply_rotary(key.expand(1, 1, grid * grid, head_dim), cos, sin)[0, 0]

    def score(row, col, d_row, d_col):
        return rotated_q[row * grid + col] @ rotated_k[(row + d_row) * grid + col + d_col]

    torch.testing.assert_close(score(0, 0, 1, 2), score(2, 1, 1, 2))
    torch.testing.assert_close(score(0, 3, 2, -1), score(1, 4, 2, -1))
    assert not torch.allclose(score(0, 0, 1, 2), score(0, 0, 2, 1))  # rows and columns are told apart
    torch.testing.assert_close(rotated_q.norm(dim=-1), query.norm().expand(grid * grid))  # a rotation


@pytest.mark.parametrize("overrides, message", [
    ({"vit_position_encoding": "sincos2d"}, "vit_position_encoding='sincos2d' is not known"),
    ({"vit_patch_stem": "pixel_unshuffle"}, "vit_patch_stem='pixel_unshuffle' is not known"),
    ({"vit_output_head": "conv"}, "vit_output_head='conv' is not known"),
    ({"vit_patch_stem": "conv", "image_size": 9, "patch_size": 3}, "needs a power-of-2 patch_size"),
    ({"vit_position_encoding": "rope2d", "hidden_size": 24}, "head dimension divisible by 4"),
    ({"vit_position_encoding": "rope2d", "vit_decoder_hidden_size": 8}, "vit_decoder_hidden_size=8 / num_attention"),
    ({"vit_decoder_hidden_size": 6}, "divisible by num_attention_heads=4"),
    ({"vit_mlp_ratio": 0.0}, "vit_mlp_ratio must be > 0"),
    ({"vit_rope_theta": -1.0}, "vit_rope_theta must be > 0"),
    ({"vit_conv_channels": 0}, "vit_conv_channels must be >= 1"),
    ({"vit_decoder_num_layers": -1}, "vit_decoder_num_layers must be >= 0"),
    ({"vit_conv_channels": 8.5}, "vit_conv_channels must be an integer"),
    ({"backbone": "conv", "vit_output_head": "pixel_shuffle"}, "apply to backbone='vit' only"),
])
def test_config_refuses_vit_options_it_cannot_build(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        VQVAEConfig(**{**TINY, **overrides})
