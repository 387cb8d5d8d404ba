"""The autoencoder of latent diffusion: the ldm backbone in diffusers' layout, latent maps for every backbone, the
pixel range, slicing, tiling, gradient checkpointing, decoder-only training, the scaling factor, latents as a
dataset, and conversion to and from diffusers."""

import math

import pytest
import torch
from transformers import AutoConfig, AutoModel

import hf_autoencoders.models  # noqa: F401  (registers the Auto classes)
from hf_autoencoders.data import ImageCollator
from hf_autoencoders.models import (
    AEConfig,
    AEModel,
    AutoencoderImageProcessor,
    DiagonalGaussian,
    VAEConfig,
    VAEModel,
    VQVAEConfig,
    VQVAEModel,
)
from hf_autoencoders.models.image_processing_autoencoders import normalization
from hf_autoencoders.models.modeling_base import _tiled

# The smallest ldm models: two levels (f = 2) of 8 channels, GroupNorm of 4 groups.
LDM = dict(backbone="ldm", block_out_channels=(8, 8), norm_num_groups=4, image_size=16, num_channels=3)
SPATIAL = {"mlp": dict(hidden_size=32, num_hidden_layers=1), "conv": dict(hidden_size=16),
           "vit": dict(hidden_size=16, num_attention_heads=2), "ldm": dict(block_out_channels=(8, 8),
                                                                           norm_num_groups=4)}


def images(model, batch=2, size=None, seed=0):
    """Random images in the model's pixel range."""
    size = size or model.config.image_size
    generator = torch.Generator().manual_seed(seed)
    return model.to_model_range(torch.rand(batch, model.config.num_channels, size, size, generator=generator))


# ------------------------------------------------------------------------------------------------------- configs


def test_ldm_config_defaults_and_what_config_json_says(tmp_path):
    config = VAEConfig(backbone="ldm", image_size=32, num_channels=3)
    assert config.block_out_channels == (64, 128, 128) and config.layers_per_block == 1
    assert config.latent_channels == 4 and config.downsampling_factor == 4 and config.latent_shape == (4, 8, 8)
    assert config.pixel_range == (-1.0, 1.0) and config.latent_dim == 4 * 8 * 8
    written = config.to_diff_dict()
    for name in ("block_out_channels", "layers_per_block", "norm_num_groups", "mid_block_add_attention",
                 "pixel_range", "latent_channels"):
        assert name in written, name
    for name in ("hidden_size", "num_downsamples", "patch_size", "scaling_factor", "shift_factor"):
        assert name not in written, name
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert {k: v for k, v in loaded.to_diff_dict().items() if k != "auto_map"} == written
    assert loaded.block_out_channels == (64, 128, 128)


def test_existing_configs_write_no_new_field():
    """config.json (and the studies' run keys, made from it) of every model made before stays as it was."""
    new = {"latent_channels", "block_out_channels", "layers_per_block", "norm_num_groups", "mid_block_add_attention",
           "pixel_range", "scaling_factor", "shift_factor"}
    for config_class in (AEConfig, VAEConfig, VQVAEConfig):
        for backbone in ("mlp", "conv", "vit"):
            assert not new & set(config_class(backbone=backbone).to_diff_dict()), (config_class, backbone)
    measured = VAEConfig(scaling_factor=0.5, shift_factor=0.1, pixel_range=(-1, 1)).to_diff_dict()
    assert measured["scaling_factor"] == 0.5 and measured["pixel_range"] == [-1.0, 1.0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(block_out_channels=(32, 64)), "backbone='ldm' only"),
        (dict(LDM, norm_num_groups=3), "norm_num_groups=3 must divide"),
        (dict(LDM, image_size=15), "divisible by the ldm backbone's downsampling factor"),
        (dict(LDM, block_out_channels=()), "block_out_channels must be a non-empty"),
        (dict(LDM, hidden_size=32), "hidden_size does not apply"),
        (dict(LDM, latent_dim=7), "latent_dim=7 does not match"),
        (dict(latent_channels=2, num_categories=10), "needs a vector latent"),
        (dict(pixel_range=(0, 255)), "pixel_range must be"),
        (dict(pixel_range=(-1, 1), likelihood="bernoulli"), "needs pixel_range"),
        (dict(scaling_factor=0.0), "scaling_factor must be > 0"),
    ],
)
def test_bad_ldm_config_names_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VAEConfig(**kwargs)


# ------------------------------------------------------------------------------------------------ latent maps


@pytest.mark.parametrize("backbone", ["mlp", "conv", "vit", "ldm"])
@pytest.mark.parametrize("model_class", [AEModel, VAEModel], ids=["ae", "vae"])
def test_every_backbone_gives_a_latent_map(model_class, backbone, tmp_path):
    config_class = model_class.config_class
    model = model_class(config_class(backbone=backbone, image_size=16, num_channels=3, latent_channels=2,
                                     **SPATIAL[backbone]))
    grid = 16 // model.config.downsampling_factor
    x = images(model, 3)
    out = model(x)
    assert out.latents.shape == (3, 2, grid, grid) and out.reconstruction.shape == x.shape
    out.loss.backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
    model.eval()
    if model_class is VAEModel:
        posterior = model.encode(x).latent_dist
        assert isinstance(posterior, DiagonalGaussian) and posterior.mean.shape == (3, 2, grid, grid)
        assert posterior.kl().shape == (3,) and model.log_importance_weights(x, 4).shape == (4, 3)
        latents = posterior.sample()
    else:
        latents = model.encode(x).latents
    assert model.decode(latents).sample.shape == x.shape
    assert model.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 3, 16, 16)
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(loaded.decode(latents).sample, model.decode(latents).sample)


def test_vqvae_with_the_ldm_backbone():
    model = VQVAEModel(VQVAEConfig(**LDM, embedding_dim=4, num_embeddings=16))
    x = images(model, 3)
    out = model(x)
    assert out.indices.shape == (3, 8, 8) and out.reconstruction.shape == x.shape
    out.loss.backward()
    model.eval()
    assert model.encode(x).latents.shape == (3, 4, 8, 8)
    assert model.decode_indices(out.indices).shape == x.shape
    assert model.decode_indices(torch.zeros(1, 16, 16, dtype=torch.long)).shape == (1, 3, 32, 32)  # any grid


def test_ldm_model_loads_as_remote_code_without_the_package(tmp_path, run_without_package):
    model = VAEModel(VAEConfig(**LDM)).eval()
    model.save_pretrained(tmp_path / "model")
    z = torch.randn(1, 4, 8, 8)
    torch.save({"z": z, "x": model.decode(z).sample.detach()}, tmp_path / "expected.pt")
    result = run_without_package("""
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained("model", trust_remote_code=True).eval()
        expected = torch.load("expected.pt")
        assert torch.equal(model.decode(expected["z"]).sample, expected["x"])
        print("ok")
    """, tmp_path)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


# ------------------------------------------------------------------------------------------------ pixel range


def test_pixel_range_maps_and_checks():
    model = VAEModel(VAEConfig(**LDM))
    unit = torch.rand(2, 3, 16, 16)
    assert torch.equal(model.to_model_range(unit), unit * 2 - 1)
    assert torch.allclose(model.to_unit_range(model.to_model_range(unit)), unit)
    with pytest.raises(ValueError, match=r"pixel range \[-1, 1\].*0..255"):
        model(unit * 255)
    flat = VAEModel(VAEConfig(hidden_size=16, latent_dim=4))
    assert flat.to_model_range(unit) is unit and flat.to_unit_range(unit) is unit
    with pytest.raises(ValueError, match=r"\[0, 1\].*\[-1, 1\] values"):
        flat(torch.rand(2, 1, 28, 28) * 2 - 1)


def test_processor_collator_and_model_agree_on_the_range():
    processor = AutoencoderImageProcessor(image_size=8, num_channels=3, **normalization((-1.0, 1.0)))
    uint8 = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    pixel_values = processor(list(uint8))["pixel_values"]
    collated = ImageCollator(pixel_range=(-1.0, 1.0))([{"pixel_values": image} for image in uint8])["pixel_values"]
    model = VAEModel(VAEConfig(**dict(LDM, image_size=8)))
    assert torch.equal(pixel_values, collated)
    assert torch.equal(pixel_values, model.to_model_range(uint8.float() / 255))
    assert pixel_values.min() >= -1 and pixel_values.max() <= 1
    back = processor.postprocess(pixel_values, output_type="pt")
    assert torch.allclose(back, uint8.float() / 255, atol=1e-6)
    assert [image.getpixel((0, 0)) for image in processor.postprocess(pixel_values)] == [
        tuple(uint8[i, :, 0, 0].tolist()) for i in range(4)]
    with pytest.raises(ValueError, match="pixel_range"):
        ImageCollator(pixel_range=(0, 255))


def test_discretized_logistic_in_the_range_minus_one_one():
    """The same 8-bit images score the same under the same logistic, whichever range they are given in."""
    unit = torch.randint(0, 256, (2, 3, 8, 8)).float() / 255
    scores = []
    for pixel_range in ((0.0, 1.0), (-1.0, 1.0)):
        model = VAEModel(VAEConfig(likelihood="discretized_logistic", pixel_range=pixel_range, image_size=8,
                                   num_channels=3, hidden_size=8, latent_dim=2))
        low, high = pixel_range
        x, mean = unit * (high - low) + low, torch.full_like(unit, 0.3) * (high - low) + low
        scores.append(model.likelihood.nll(x, mean))
    assert torch.allclose(scores[0], scores[1], rtol=1e-4)


def test_evaluation_reads_images_in_the_models_range_and_scores_them_in_unit_range():
    """uint8 batches are mapped into the model's range, float batches are taken as in it; PSNR is computed on the
    reconstructions mapped back to [0, 1]."""
    from hf_autoencoders.evaluation import evaluate, psnr

    model = VAEModel(VAEConfig(**LDM)).eval()
    uint8 = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    unit = uint8.float() / 255
    torch.manual_seed(0)
    from_uint8 = evaluate(model, uint8, batch_size=6, progress=False)
    from_floats = evaluate(model, model.to_model_range(unit), batch_size=6, progress=False)
    assert from_uint8 == pytest.approx(from_floats, rel=1e-6)
    torch.manual_seed(0 + 0 + 7919 * 0)  # the loop's seed of its first batch
    with torch.no_grad():
        reconstruction = model(model.to_model_range(unit)).reconstruction
    expected = psnr(unit, model.to_unit_range(reconstruction).clamp(0, 1))
    assert from_uint8["psnr"] == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------------------------------- slicing and tiling


def test_slicing_gives_the_batch_result():
    model = VAEModel(VAEConfig(**LDM)).eval()
    x = images(model, 3)
    with torch.no_grad():
        expected = model.encode(x).latent_dist.mean, model.decode(torch.ones(3, 4, 8, 8)).sample
        model.enable_slicing()
        sliced = model.encode(x).latent_dist.mean, model.decode(torch.ones(3, 4, 8, 8)).sample
    for a, b in zip(expected, sliced):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_tiles_blend_into_the_untiled_result_of_a_local_map():
    """With a map whose outputs depend on one input position only, tiles blended with normalised weights give
    exactly the untiled output, whatever the overlap and wherever the last tile falls."""
    def upsample(z):
        return z.repeat_interleave(4, -2).repeat_interleave(4, -1) * 2 + 1

    z = torch.randn(2, 3, 23, 17)
    for tile, stride in [(8, 6), (8, 8), (5, 2)]:
        torch.testing.assert_close(_tiled(upsample, z, tile, stride, 4, 1), upsample(z))
    x = torch.randn(1, 2, 40, 24)
    torch.testing.assert_close(_tiled(lambda t: t[..., ::4, ::4], x, 16, 12, 1, 4), x[..., ::4, ::4])


def test_tiling_decodes_and_encodes_images_larger_than_the_training_size():
    torch.manual_seed(0)
    model = VAEModel(VAEConfig(backbone="conv", image_size=16, num_channels=3, latent_channels=4,
                               hidden_size=16)).eval()
    big = images(model, 1, size=64)
    with torch.no_grad():
        posterior = model.encode(big).latent_dist
        untiled = model.decode(posterior.mean).sample
        same = model.decode(posterior.mean[..., :4, :4]).sample  # no larger than a tile: not tiled
        model.enable_tiling()
        assert torch.equal(model.decode(posterior.mean[..., :4, :4]).sample, same)
        tiled = model.decode(posterior.mean).sample
        tiled_mean = model.encode(big).latent_dist.mean
    assert tiled.shape == untiled.shape == big.shape and tiled_mean.shape == posterior.mean.shape
    assert (tiled - untiled).pow(2).mean() < 0.01 * untiled.var()
    assert (tiled_mean - posterior.mean).pow(2).mean() < 0.1 * posterior.mean.var()  # edges see zero padding
    with pytest.raises(ValueError, match="fully convolutional"):
        VAEModel(VAEConfig(hidden_size=16, latent_dim=4)).enable_tiling()
    with pytest.raises(ValueError, match="tile_size must be a positive multiple of f=4"):
        model.enable_tiling(tile_size=10)


def test_larger_images_need_a_fully_convolutional_model():
    ldm = VAEModel(VAEConfig(**LDM)).eval()
    assert ldm.encode(images(ldm, 1, size=24)).latent_dist.mean.shape == (1, 4, 12, 12)
    with pytest.raises(ValueError, match="multiples of 2"):
        ldm.encode(images(ldm, 1, size=15))
    with pytest.raises(ValueError, match="image_size is 16"):
        ldm(images(ldm, 1, size=24))  # training and evaluation take the training size
    flat = VAEModel(VAEConfig(image_size=16, num_channels=3, hidden_size=16, latent_dim=4))
    with pytest.raises(ValueError, match="image_size is 16"):
        flat.encode(torch.rand(1, 3, 32, 32))


# --------------------------------------------------------------------------------------- gradient checkpointing


@pytest.mark.parametrize("backbone", ["conv", "vit", "ldm"])
def test_gradient_checkpointing_gives_the_same_gradients(backbone):
    torch.manual_seed(0)
    model = VAEModel(VAEConfig(backbone=backbone, image_size=16, num_channels=3, latent_channels=2,
                               **SPATIAL[backbone]))
    x = images(model, 4)
    calls = []
    block = next(m for m in model.modules() if type(m).__name__ in ("ResidualBlock", "TransformerBlock", "DownBlock"))
    inner = next(m for m in block.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    inner.register_forward_hook(lambda *args: calls.append(1))

    def gradients():
        model.zero_grad()
        torch.manual_seed(1)
        model(x).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain = gradients()
    assert len(calls) == 1
    model.activation_checkpointing_enable()
    checkpointed = gradients()
    assert len(calls) == 3  # the block ran again in the backward pass
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_gradient_checkpointing_needs_blocks():
    model = AEModel(AEConfig(backbone="mlp", hidden_size=8, latent_dim=2))
    assert not model.supports_gradient_checkpointing
    with pytest.raises(ValueError, match="does not support"):
        model.activation_checkpointing_enable()


# ----------------------------------------------------------------------------------------- decoder-only training


@pytest.mark.parametrize("model_class", [VAEModel, VQVAEModel], ids=["vae", "vqvae"])
def test_freeze_encoder_keeps_the_latents(model_class):
    extra = dict(embedding_dim=4, num_embeddings=16) if model_class is VQVAEModel else {}
    model = model_class(model_class.config_class(**LDM, **extra))
    x = images(model, 4)
    model(x)  # a VQ-VAE's codebook is initialised by k-means on the first training batch
    model.freeze_encoder()
    frozen = {name: t.clone() for name, t in model.state_dict().items() if not name.startswith("decoder.")}
    decoder = {name: t.clone() for name, t in model.state_dict().items() if name.startswith("decoder.")}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(2):
        optimizer.zero_grad()
        model(x).loss.backward()
        optimizer.step()
    assert not model.encoder.training and model.decoder.training
    for name, tensor in frozen.items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert any(not torch.equal(model.state_dict()[name], t) for name, t in decoder.items())


# ------------------------------------------------------------------------------------- scaling factor, datasets


def test_scaling_factor_of_latents_of_known_distribution():
    """A VAE whose posterior is N(m, v) for every image: shift_factor -> m and scaling_factor -> 1 / sqrt(v), from
    posterior samples; the held-out check gives mean 0 and std 1."""
    from hf_autoencoders.evaluation import scaling_factors

    model = VAEModel(VAEConfig(**LDM)).eval()
    quant_conv = model.encoder.quant_conv
    with torch.no_grad():
        quant_conv.weight.zero_()
        quant_conv.bias.copy_(torch.tensor([0.7] * 4 + [math.log(0.25)] * 4))  # means 0.7, variances 0.25
    images = torch.randint(0, 256, (96, 3, 16, 16), dtype=torch.uint8)
    factors = scaling_factors(model, images[:64], images[64:], batch_size=10, progress=False)
    assert factors["num_train_images"] == 64 and factors["num_train_values"] == 64 * 4 * 8 * 8
    assert factors["shift_factor"] == pytest.approx(0.7, abs=0.02)
    assert factors["scaling_factor"] == pytest.approx(2.0, rel=0.02)
    assert factors["scaled_test_mean"] == pytest.approx(0.0, abs=0.05)
    assert factors["scaled_test_std"] == pytest.approx(1.0, abs=0.05)


def test_streamed_latent_statistics_are_exact():
    """The running moments over batches of 7 equal the moments of all the latents at once (deterministic AE)."""
    from hf_autoencoders.evaluation import latent_statistics

    model = AEModel(AEConfig(**LDM)).eval()
    images = torch.randint(0, 256, (30, 3, 16, 16), dtype=torch.uint8)
    stats = latent_statistics(model, images, batch_size=7, progress=False)
    with torch.no_grad():
        z = model.encode(model.to_model_range(images.float() / 255)).latents.double()
    assert stats["mean"] == pytest.approx(z.mean().item(), rel=1e-6)
    assert stats["std"] == pytest.approx(z.std(unbiased=False).item(), rel=1e-6)


def test_latents_dataset_writes_scaled_latents_or_codes_with_labels(tmp_path):
    import datasets

    from hf_autoencoders.evaluation import latents_dataset

    images = torch.randint(0, 256, (10, 3, 16, 16), dtype=torch.uint8)
    split = [{"pixel_values": image, "labels": torch.tensor(i % 3)} for i, image in enumerate(images)]
    vae = VAEModel(VAEConfig(**LDM, scaling_factor=2.0, shift_factor=0.5)).eval()
    with pytest.raises(ValueError, match="no scaling_factor"):
        latents_dataset(VAEModel(VAEConfig(**LDM)), {"train": split}, tmp_path, progress=False)
    written = latents_dataset(vae, {"train": split}, tmp_path, label_names=["a", "b", "c"], batch_size=4,
                              progress=False)
    written.save_to_disk(tmp_path / "latents")
    loaded = datasets.load_from_disk(tmp_path / "latents")["train"]
    rows = loaded.with_format("torch")[:]
    assert loaded.features["label"].names == ["a", "b", "c"]
    assert rows["label"].tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    latents = rows["latents"]
    with torch.no_grad():
        means = vae.encode(vae.to_model_range(images.float() / 255)).latent_dist.mean
    assert latents.shape == (10, 4, 8, 8)
    assert (latents / 2.0 + 0.5 - means).abs().mean() < 3 * (latents / 2.0 + 0.5 - means).std()  # samples around
    vq = VQVAEModel(VQVAEConfig(**LDM, embedding_dim=4, num_embeddings=16)).eval()
    (tmp_path / "vq").mkdir()
    codes = latents_dataset(vq, {"test": images}, tmp_path / "vq", progress=False)["test"]
    assert "label" not in codes.features
    maps = codes.with_format("torch")[:]["codes"]
    assert maps.shape == (10, 8, 8)
    assert torch.equal(maps.long(), vq.encode_indices(vq.to_model_range(images.float() / 255)))
    with pytest.raises(ValueError, match=r"1x28x28 .* model encodes 3x16x16"):
        latents_dataset(vae, {"train": torch.zeros(2, 1, 28, 28, dtype=torch.uint8)}, tmp_path / "bad")


# ---------------------------------------------------------------------------------------------------- diffusers


diffusers = pytest.importorskip("diffusers")
from hf_autoencoders.diffusers_compat import export_to_diffusers, from_diffusers  # noqa: E402


def tiny_autoencoder_kl(**kwargs):
    fields = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                  norm_num_groups=4, latent_channels=4, sample_size=16)
    return diffusers.AutoencoderKL(**{**fields, **kwargs})


def test_export_round_trip(tmp_path):
    torch.manual_seed(0)
    model = VAEModel(VAEConfig(**LDM, scaling_factor=0.7, shift_factor=-0.2)).eval()
    export_to_diffusers(model, tmp_path / "vae")
    exported, info = diffusers.AutoencoderKL.from_pretrained(tmp_path / "vae", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert exported.config.scaling_factor == 0.7 and exported.config.shift_factor == -0.2
    x, z = images(model, 2), torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        assert (exported.decode(z).sample - model.decode(z).sample).abs().max() <= 1e-5
        ours, theirs = model.encode(x).latent_dist, exported.encode(x).latent_dist
        assert (ours.mean - theirs.mean).abs().max() <= 1e-5 and (ours.std - theirs.std).abs().max() <= 1e-5
    back = from_diffusers(tmp_path / "vae")
    assert back.config.to_diff_dict() == model.config.to_diff_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


def test_vqvae_export_round_trip(tmp_path):
    torch.manual_seed(0)
    model = VQVAEModel(VQVAEConfig(**LDM, embedding_dim=4, num_embeddings=16))
    model(images(model, 8))  # k-means initialises the codebook
    model.eval()
    export_to_diffusers(model, tmp_path / "vqvae")
    exported, info = diffusers.VQModel.from_pretrained(tmp_path / "vqvae", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    x = images(model, 2, seed=1)
    with torch.no_grad():
        latents = model.encode(x).latents
        assert (exported.encode(x).latents - latents).abs().max() <= 1e-5
        assert (exported.decode(latents).sample - model.decode(latents).sample).abs().max() <= 1e-5
    assert type(from_diffusers(tmp_path / "vqvae")) is VQVAEModel


def test_import_of_a_local_autoencoder_kl_folder_fine_tunes(tmp_path):
    from hf_autoencoders.training.arguments import training_arguments
    from hf_autoencoders.training.trainer import AutoencoderTrainer

    torch.manual_seed(0)
    theirs = tiny_autoencoder_kl(scaling_factor=0.3).eval()
    theirs.save_pretrained(tmp_path / "pipeline" / "vae")  # as in a pipeline folder
    model = from_diffusers(tmp_path / "pipeline")
    assert type(model) is VAEModel and model.config.scaling_factor == 0.3 and model.config.pixel_range == (-1, 1)
    z = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        assert (model.eval().decode(z).sample - theirs.decode(z).sample).abs().max() <= 1e-5
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    data = [{"pixel_values": image} for image in torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)]
    args = training_arguments(tmp_path / "run", max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3)
    trainer = AutoencoderTrainer(model=model, args=args, train_dataset=data,
                                 data_collator=ImageCollator(pixel_range=model.config.pixel_range))
    trainer.train()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(p, before[name]) for name, p in model.named_parameters())


def test_export_refuses_what_diffusers_cannot_hold_and_writes_nothing(tmp_path):
    cases = [
        (VAEModel(VAEConfig(backbone="conv", image_size=16, num_channels=3, latent_channels=4, hidden_size=16)),
         "backbone='conv'"),
        (VAEModel(VAEConfig(hidden_size=16, latent_dim=4)), "backbone='conv'"),
        (VAEModel(VAEConfig(**LDM, pixel_range=(0, 1))), r"pixel_range=\(0.0, 1.0\)"),
        (VAEModel(VAEConfig(**LDM, likelihood="discretized_logistic")), "likelihood='discretized_logistic'"),
        (VQVAEModel(VQVAEConfig(**LDM, quantizer="fsq", embedding_dim=4)), "quantizer='fsq'"),
        (AEModel(AEConfig(**LDM)), "diffusers has no class for a AE"),
    ]
    for model, message in cases:
        with pytest.raises(ValueError, match=message):
            export_to_diffusers(model, tmp_path / "out")
        assert not (tmp_path / "out").exists()
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="already holds files"):
        export_to_diffusers(VAEModel(VAEConfig(**LDM)), occupied)
    assert [p.name for p in tmp_path.iterdir()] == ["occupied"] and (occupied / "keep.txt").read_text() == "mine"


def test_import_refuses_another_layout(tmp_path):
    tiny_autoencoder_kl(use_quant_conv=False).save_pretrained(tmp_path / "no_quant_conv")
    with pytest.raises(ValueError, match="no quant_conv"):
        from_diffusers(tmp_path / "no_quant_conv")
    tiny_autoencoder_kl(act_fn="gelu", down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "AttnUpDecoderBlock2D")).save_pretrained(tmp_path / "attn")
    with pytest.raises(ValueError, match=r"AttnDownEncoderBlock2D.*act_fn='gelu'"):
        from_diffusers(tmp_path / "attn")
    diffusers.AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                              num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1),
                              latent_channels=4).save_pretrained(tmp_path / "tiny")
    with pytest.raises(ValueError, match="AutoencoderTiny, not an AutoencoderKL"):
        from_diffusers(tmp_path / "tiny")
    VAEModel(VAEConfig(**LDM)).save_pretrained(tmp_path / "ours")
    with pytest.raises(ValueError, match="not a diffusers model folder"):
        from_diffusers(tmp_path / "ours")
    with pytest.raises(ValueError, match="not a diffusers model folder"):
        from_diffusers(tmp_path / "missing")


def test_the_latent_diffusion_example_runs_a_pipeline_that_saves_and_reloads(tmp_path):
    """examples/latent_diffusion.py: our VAE exported, a DiT trained on its latents, DiTPipeline saved and reloaded;
    the reloaded pipeline gives the same images from the same seed."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "latent_diffusion.py"
    spec = importlib.util.spec_from_file_location("latent_diffusion_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    torch.manual_seed(0)
    VAEModel(VAEConfig(backbone="ldm", block_out_channels=(8, 8), norm_num_groups=4, image_size=28,
                       num_channels=1, latent_channels=2)).save_pretrained(tmp_path / "vae")
    result = example.main(["--vae", str(tmp_path / "vae"), "--output_dir", str(tmp_path / "out"), "--max_steps", "3",
                           "--batch_size", "8", "--num_layers", "1", "--num_attention_heads", "2",
                           "--attention_head_dim", "8", "--num_inference_steps", "2", "--max_train_samples", "64"])
    assert len(result["losses"]) == 3 and all(torch.isfinite(torch.tensor(result["losses"])))
    assert result["images"].shape == (10, 1, 28, 28) and (tmp_path / "out" / "samples.png").is_file()
    assert diffusers.AutoencoderKL.from_pretrained(tmp_path / "out" / "vae").config.scaling_factor > 0
    pipeline = diffusers.DiTPipeline.from_pretrained(tmp_path / "out" / "pipeline")
    again = pipeline(class_labels=list(range(10)), num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                     output_type="pt").images
    torch.testing.assert_close(again, result["images"])
