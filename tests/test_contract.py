"""The one encode/decode contract every autoencoder keeps (diffusers' `AutoencoderKL` / `VQModel` calls), for every
family and backbone, and what a family says about itself."""

import pytest
import torch

from hf_autoencoders.models import (
    AUTOENCODER_FAMILIES,
    DecoderOutput,
    DiagonalGaussian,
    EncoderOutput,
    PosteriorOutput,
    VQVAEConfig,
    VQVAEModel,
    autoencoder_classes,
)

BACKBONES = {"mlp": {"hidden_size": 32}, "conv": {"hidden_size": 16, "num_residual_blocks": 1},
             "vit": {"hidden_size": 32, "num_hidden_layers": 1}}
SIZES = {"ae": {"latent_dim": 4}, "vae": {"latent_dim": 4}, "vqvae": {"num_embeddings": 16, "embedding_dim": 4}}
CASES = [(family, backbone) for family in AUTOENCODER_FAMILIES for backbone in BACKBONES]


def build(family, backbone, **overrides):
    config_class, model_class = autoencoder_classes(family)
    torch.manual_seed(0)
    config = config_class(backbone=backbone, image_size=16, num_channels=3, **BACKBONES[backbone], **SIZES[family],
                          **overrides)
    return model_class(config)


def latents_of(model, encoded):
    return encoded.latent_dist.sample() if hasattr(encoded, "latent_dist") else encoded.latents


@pytest.mark.parametrize("family, backbone", CASES)
def test_encode_decode_contract(family, backbone):
    model = build(family, backbone)
    x = torch.rand(2, 3, 16, 16)
    encoded = model.encode(x)
    if family == "vae":
        assert isinstance(encoded, PosteriorOutput) and not hasattr(encoded, "latents")
        assert isinstance(encoded.latent_dist, DiagonalGaussian)
        z = encoded.latent_dist.sample()
        assert z.requires_grad  # reparameterized: z = mu + sigma * eps
        z.pow(2).sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters() if p.ndim > 1)
        model.zero_grad()
        dist = encoded.latent_dist
        assert torch.equal(dist.mode(), dist.mean) and dist.std.shape == dist.mean.shape
        assert dist.kl().shape == (2,) and dist.nll(z).shape == (2,)
    else:
        assert isinstance(encoded, EncoderOutput) and not hasattr(encoded, "latent_dist")
        assert encoded.latents is not None
    decoded = model.decode(latents_of(model, encoded))
    assert isinstance(decoded, DecoderOutput) and decoded.sample.shape == x.shape
    representation = model.representation(x)
    assert representation.shape[0] == 2
    samples = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (3, 3, 16, 16)
    assert torch.equal(samples, model.sample(3, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("family, backbone", CASES)
def test_return_dict_false_gives_tuples(family, backbone):
    model = build(family, backbone).eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        encoded = model.encode(x, return_dict=False)
        assert isinstance(encoded, tuple) and len(encoded) == 1
        z = encoded[0].mode() if family == "vae" else encoded[0]
        decoded = model.decode(z, return_dict=False)
        assert isinstance(decoded, tuple) and decoded[0].shape == x.shape
        torch.testing.assert_close(decoded[0], model.decode(z).sample)
        torch.manual_seed(0)  # the same posterior sample in both calls
        output = model(x, return_dict=False)
        assert isinstance(output, tuple)
        torch.manual_seed(0)
        torch.testing.assert_close(output[0], model(x).loss)  # the loss comes first, as in transformers
    model.config.return_dict = False  # the config's default, as transformers models honour it
    assert isinstance(model(x), tuple)


def test_loss_terms_are_fields_that_add_up_to_the_loss():
    x = torch.rand(4, 3, 16, 16)
    for family in AUTOENCODER_FAMILIES:
        model = build(family, "conv").eval()
        output = model(x)
        terms = [getattr(output, name) for name in model.loss_terms]
        assert all(t is not None and t.ndim == 0 for t in terms)
        kl_weight = getattr(model.config, "kl_weight", 1.0)
        total = sum(t * (kl_weight if name == "kl_loss" else 1) for t, name in zip(terms, model.loss_terms))
        torch.testing.assert_close(output.loss, total)
        assert model.config.display_name and autoencoder_classes(model.config.family)[1] is type(model)


def test_vq_decode_quantizes_unless_told_not_to():
    model = build("vqvae", "conv").eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        z_e = model.encode(x).latents
        quantized = model.quantize(z_e)
        decoded = model.decode(z_e)
        assert decoded.commit_loss is not None
        torch.testing.assert_close(decoded.sample, model(x).reconstruction)  # decode(encode(x)) is the forward
        torch.testing.assert_close(decoded.sample, model.decode(quantized.quantized, force_not_quantize=True).sample)
        raw = model.decode(z_e, force_not_quantize=True)
        assert raw.commit_loss is None and not torch.allclose(raw.sample, decoded.sample)
        torch.testing.assert_close(model.decode_indices(quantized.indices), decoded.sample)


def test_factorized_codes_decode_indices_without_requantizing():
    """With factorized, l2-normalised codes the projected-up z_q need not quantize to itself: decode_indices must
    decode the looked-up codes as they are."""
    torch.manual_seed(0)
    model = VQVAEModel(VQVAEConfig(image_size=16, num_channels=3, hidden_size=16, num_residual_blocks=1,
                                   num_embeddings=16, embedding_dim=8, codebook_dim=2, l2_normalized_codes=True,
                                   kmeans_init=False)).eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.decode_indices(model.encode_indices(x)), model(x).reconstruction)


def test_decode_refuses_latents_of_the_wrong_shape():
    for family in AUTOENCODER_FAMILIES:
        model = build(family, "mlp")
        with pytest.raises(ValueError, match="latents must"):
            model.decode(torch.zeros(2, 99))


# ------------------------------------------------------------------------------------------------ diffusers' calls


@pytest.mark.parametrize("family, backbone", CASES)
def test_the_calls_diffusers_code_makes(family, backbone):
    """What diffusers' pipelines do with `vae`: encode().latent_dist.sample(generator) (a VAE) or .latents, then
    decode(z, return_dict=False)[0]; a VQModel's decode(h, force_not_quantize=...)."""
    vae = build(family, backbone).eval()
    x = torch.rand(2, 3, 16, 16)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        encoded = vae.encode(x)
        if hasattr(encoded, "latent_dist"):
            latents = encoded.latent_dist.sample(generator)
            assert torch.equal(latents, encoded.latent_dist.sample(torch.Generator().manual_seed(0)))
        else:
            latents = encoded.latents
        image = vae.decode(latents, return_dict=False)[0]
        assert image.shape == x.shape
        if family == "vqvae":
            for force in (True, False):
                assert vae.decode(latents, force_not_quantize=force, return_dict=False)[0].shape == x.shape


def test_diffusers_helpers_accept_our_outputs():
    """diffusers' own `retrieve_latents` (used by its img2img pipelines) reads our encode output, and our
    `DiagonalGaussian` agrees with diffusers' `DiagonalGaussianDistribution` on the same mean and log-variance."""
    diffusers = pytest.importorskip("diffusers")
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import retrieve_latents

    vae = build("vae", "conv").eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        encoded = vae.encode(x)
        ours = encoded.latent_dist
        torch.testing.assert_close(retrieve_latents(encoded, sample_mode="argmax"), ours.mode())
        sampled = retrieve_latents(encoded, torch.Generator().manual_seed(3))
        torch.testing.assert_close(sampled, ours.sample(torch.Generator().manual_seed(3)))
        for model in (build("ae", "conv"), build("vqvae", "conv")):
            torch.testing.assert_close(retrieve_latents(model.encode(x)), model.encode(x).latents)

        mean, logvar = ours.mean, ours.logvar
        theirs = DiagonalGaussianDistribution(torch.cat([mean, logvar], 1)[:, :, None, None])
        as4d = lambda t: t[:, :, None, None]  # noqa: E731  (diffusers' latents are maps)
        torch.testing.assert_close(as4d(ours.mode()), theirs.mode())
        torch.testing.assert_close(as4d(ours.std), theirs.std)
        torch.testing.assert_close(ours.kl(), theirs.kl())
        z = ours.sample(torch.Generator().manual_seed(7))
        torch.testing.assert_close(as4d(z), theirs.sample(torch.Generator().manual_seed(7)))
        torch.testing.assert_close(ours.nll(z), theirs.nll(as4d(z)))
        other = DiagonalGaussian(torch.zeros_like(mean) + 0.3, torch.zeros_like(logvar) - 0.5)
        other_theirs = DiagonalGaussianDistribution(torch.cat([other.mean, other.logvar], 1)[:, :, None, None])
        torch.testing.assert_close(ours.kl(other), theirs.kl(other_theirs))
    assert diffusers.__version__


def test_training_forwards_read_the_pixel_values_once(monkeypatch):
    """Reading pixel values waits for the device: a training forward checks them on the first batch only, so the steps
    after it run without a host sync; eval-mode forwards and encode always check them."""
    model = build("vqvae", "conv").train()
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model(x * 255)  # the first training batch is checked
    model(x)
    reads = []
    original = torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda t: reads.append(1) or original(t))
    model(x)
    model(x, target_pixel_values=x)
    assert not reads
    model.eval()
    with pytest.raises(ValueError, match="NaN"):
        model(x * torch.nan)
    with pytest.raises(ValueError, match="NaN"):
        model.train().encode(x * torch.nan)


def test_diagonal_gaussian_sums_over_the_whole_latent_of_any_shape():
    """A vector latent (batch, d) and a latent map (batch, c, h, w) are both one event: log_prob, kl and nll sum over
    every dimension after the batch, with leading sample dimensions kept."""
    mean, logvar = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    spatial, flat = DiagonalGaussian(mean, logvar), DiagonalGaussian(mean.flatten(1), logvar.flatten(1))
    z = spatial.sample(num_samples=5)
    assert z.shape == (5, 3, 2, 4, 4)
    torch.testing.assert_close(spatial.log_prob(z), flat.log_prob(z.flatten(2)))
    torch.testing.assert_close(spatial.kl(), flat.kl())
    reference = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    torch.testing.assert_close(spatial.log_prob(z), reference.log_prob(z).sum((-3, -2, -1)))


@pytest.mark.parametrize("family", AUTOENCODER_FAMILIES)
def test_feature_extraction_pipeline_returns_the_latents(family, tmp_path, run_without_package):
    """`pipeline("image-feature-extraction", model=folder)` reads the first output of the model: the latents (what
    the decoder reads), not the loss; `output[0]` and return_dict=False tuples keep the loss first for the Trainer.
    From a folder with the package imported, and with only transformers and trust_remote_code."""
    import numpy as np
    from PIL import Image
    from transformers import pipeline

    from hf_autoencoders.models import AutoencoderImageProcessor

    model = build(family, "mlp").eval()
    model.save_pretrained(tmp_path / "model")
    AutoencoderImageProcessor(image_size=16, num_channels=3).save_pretrained(tmp_path / "model")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8))
    features = pipeline("image-feature-extraction", model=str(tmp_path / "model"), return_tensors=True)(image)
    x = AutoencoderImageProcessor(image_size=16, num_channels=3)(image, return_tensors="pt").pixel_values
    with torch.no_grad():
        torch.manual_seed(0)
        output = model(x)
    assert features.shape == output.latents.shape and features.ndim >= 2
    if family != "vae":  # a VAE's latents are drawn from q(z|x)
        torch.testing.assert_close(features, output.latents)
    assert output[0] is output.loss and model(x, return_dict=False)[0].ndim == 0
    if family != "vqvae":  # one family shows the same without the package
        return
    result = run_without_package(f"""
from transformers import pipeline
features = pipeline("image-feature-extraction", model={str(tmp_path / "model")!r}, trust_remote_code=True,
                    return_tensors=True)
from PIL import Image
print(tuple(features(Image.new("RGB", (20, 24))).shape))
""", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(tuple(output.latents.shape))
