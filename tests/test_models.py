"""The core models: shapes, save/load, remote code, and the math each one claims."""

import json
import os

import pytest
import torch
from transformers import AutoConfig, AutoModel

import hf_autoencoders.models  # noqa: F401  (registers the Auto classes)
from hf_autoencoders import AEConfig, AEModel, VAEConfig, VAEModel, VQVAEConfig, VQVAEModel
from hf_autoencoders.models.modeling_vae import DiagonalGaussian

FAMILIES = [(AEConfig, AEModel), (VAEConfig, VAEModel), (VQVAEConfig, VQVAEModel)]
SMALL = {"mlp": dict(hidden_size=32, num_hidden_layers=1), "conv": dict(hidden_size=16), "vit": dict(
    hidden_size=16, num_hidden_layers=1, num_attention_heads=2)}
SHAPES = [(28, 1), (32, 3), (64, 3)]


def tiny_config(config_class, backbone="conv", image_size=28, num_channels=1, **kwargs):
    extra = dict(num_embeddings=16, embedding_dim=8) if config_class is VQVAEConfig else dict(latent_dim=4)
    return config_class(backbone=backbone, image_size=image_size, num_channels=num_channels,
                        **SMALL[backbone], **extra, **kwargs)


@pytest.mark.parametrize("backbone", ["mlp", "conv", "vit"])
@pytest.mark.parametrize("family", FAMILIES, ids=["ae", "vae", "vqvae"])
def test_forward_backward_every_shape(family, backbone):
    config_class, model_class = family
    for image_size, num_channels in SHAPES:
        model = model_class(tiny_config(config_class, backbone, image_size, num_channels))
        pixel_values = torch.rand(3, num_channels, image_size, image_size)
        out = model(pixel_values)
        assert out.reconstruction.shape == pixel_values.shape
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)
        out.loss.backward()
        encoder_grads = [p.grad for p in model.encoder.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in encoder_grads)
        assert any(g.abs().sum() > 0 for g in encoder_grads)
        if config_class is VQVAEConfig:
            grid = image_size // (4 if backbone == "vit" else 4)
            assert out.indices.shape == (3, grid, grid)
            assert out.codebook_loss is not None and out.commitment_loss is not None
            assert 0 < out.codebook_usage <= 1 and out.perplexity >= 1
        else:
            assert out.latents.shape == (3, 4)
        if config_class is VAEConfig:
            assert out.kl_loss > 0


@pytest.mark.parametrize("backbone", ["mlp", "conv", "vit"])
@pytest.mark.parametrize("family", FAMILIES, ids=["ae", "vae", "vqvae"])
def test_save_load_round_trip(family, backbone, tmp_path):
    config_class, model_class = family
    model = model_class(tiny_config(config_class, backbone)).eval()
    pixel_values = torch.rand(2, 1, 28, 28)
    model.save_pretrained(tmp_path)
    files = sorted(os.listdir(tmp_path))
    assert "model.safetensors" in files
    assert not any(f.endswith((".bin", ".pt", ".pth", ".ckpt")) for f in files)
    assert "configuration_autoencoders.py" in files  # the code travels with the weights
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is model_class
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    with torch.no_grad():
        torch.manual_seed(0)
        expected = model(pixel_values)
        torch.manual_seed(0)
        actual = loaded(pixel_values)
    assert torch.equal(expected.reconstruction, actual.reconstruction)
    assert torch.equal(expected.loss, actual.loss)


def test_auto_config_knows_every_family():
    for config_class, _ in FAMILIES:
        assert AutoConfig.for_model(config_class.model_type).__class__ is config_class
        assert config_class.model_type.startswith("hf_autoencoders_")


@pytest.mark.parametrize("family", FAMILIES, ids=["ae", "vae", "vqvae"])
def test_remote_code_loads_without_the_package(family, tmp_path, run_without_package):
    """A saved folder loads in a fresh process that has transformers but cannot import hf_autoencoders."""
    config_class, model_class = family
    model = model_class(tiny_config(config_class, "conv")).eval()
    model.save_pretrained(tmp_path / "model")
    pixel_values = torch.rand(2, 1, 28, 28)
    torch.save(pixel_values, tmp_path / "x.pt")
    with torch.no_grad():
        torch.manual_seed(0)  # the VAE samples z
        torch.save(model(pixel_values).reconstruction, tmp_path / "expected.pt")
    result = run_without_package(f"""
        import torch
        from transformers import AutoModel
        torch.set_num_threads(1)
        model = AutoModel.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
        x = torch.load({str(tmp_path / "x.pt")!r})
        with torch.no_grad():
            torch.manual_seed(0)
            out = model(x).reconstruction
        torch.testing.assert_close(out, torch.load({str(tmp_path / "expected.pt")!r}), rtol=1e-5, atol=1e-6)
        assert "hf_autoencoders" not in type(model).__module__
        print("REMOTE_OK", type(model).__name__)
    """, tmp_path)
    assert "REMOTE_OK" in result.stdout, result.stderr[-3000:]


def test_kl_closed_form_matches_monte_carlo():
    torch.manual_seed(0)
    posterior = DiagonalGaussian(torch.randn(4, 3), torch.randn(4, 3) * 0.5)
    z = posterior.sample(num_samples=200_000)
    prior_log_prob = (-0.5 * z.pow(2) - 0.5 * torch.log(torch.tensor(2 * torch.pi))).sum(-1)
    monte_carlo = (posterior.log_prob(z) - prior_log_prob).mean(0)
    torch.testing.assert_close(monte_carlo, posterior.kl(), atol=0.02, rtol=0.01)


def test_reparameterization_gives_encoder_gradients_and_gaussian_loss_is_mse_plus_2c_kl():
    torch.manual_seed(0)
    config = tiny_config(VAEConfig, "mlp", gaussian_variance=0.1)
    model = VAEModel(config)
    pixel_values = torch.rand(5, 1, 28, 28)
    out = model(pixel_values)
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    # loss * 2c = squared error + 2c * KL
    squared_error = (pixel_values - out.reconstruction).pow(2).flatten(1).sum(1).mean()
    torch.testing.assert_close(out.loss * 2 * 0.1, squared_error + 2 * 0.1 * out.kl_loss, rtol=1e-4, atol=1e-3)


def test_straight_through_estimator_reaches_the_encoder():
    model = VQVAEModel(tiny_config(VQVAEConfig, "conv", commitment_cost=0.0, codebook_ema=False))
    pixel_values = torch.rand(4, 1, 28, 28)
    out = model(pixel_values)
    # Only the reconstruction loss can reach the encoder here (beta = 0): it does so straight through.
    out.reconstruction_loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.quantizer.parameters())


def test_codebook_loss_moves_only_codebook_commitment_only_encoder():
    model = VQVAEModel(tiny_config(VQVAEConfig, "conv", codebook_ema=False, kmeans_init=False,
                                   dead_code_threshold=0))
    pixel_values = torch.rand(4, 1, 28, 28)

    def grads(term):
        model.zero_grad(set_to_none=True)
        getattr(model(pixel_values), term).backward()
        encoder = any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
        codebook = any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.quantizer.parameters())
        decoder = any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.parameters())
        return encoder, codebook, decoder

    assert grads("codebook_loss") == (False, True, False)
    assert grads("commitment_loss") == (True, False, False)


@pytest.mark.parametrize("family", FAMILIES, ids=["ae", "vae", "vqvae"])
def test_loss_does_not_depend_on_batch_size(family):
    config_class, model_class = family
    model = model_class(tiny_config(config_class, "conv")).eval()
    torch.manual_seed(0)
    images = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        small = model(images)
        large = model(images.repeat(4, 1, 1, 1))
    for term in ("loss", "reconstruction_loss", "kl_loss", "codebook_loss", "commitment_loss"):
        a, b = getattr(small, term), getattr(large, term)
        if a is not None and config_class is not VAEConfig or term == "kl_loss":
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    if config_class is VAEConfig:  # the reconstruction term is a sampled estimate: equal in expectation
        torch.testing.assert_close(small.kl_loss, large.kl_loss)


def test_vae_sample_is_seeded():
    model = VAEModel(tiny_config(VAEConfig, "conv"))
    a = model.sample(3, generator=torch.Generator().manual_seed(1))
    b = model.sample(3, generator=torch.Generator().manual_seed(1))
    assert a.shape == (3, 1, 28, 28) and torch.equal(a, b)


def test_decode_indices_equals_reconstruction():
    model = VQVAEModel(tiny_config(VQVAEConfig, "conv")).eval()
    pixel_values = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        out = model(pixel_values)
        indices = model.encode_indices(pixel_values)
        assert torch.equal(indices, out.indices)
        torch.testing.assert_close(model.decode_indices(indices), out.reconstruction)


@pytest.mark.parametrize("likelihood", ["bernoulli", "discretized_logistic"])
def test_other_likelihoods_train(likelihood):
    model = VAEModel(tiny_config(VAEConfig, "conv", likelihood=likelihood))
    pixel_values = (torch.rand(4, 1, 28, 28) * 255).round() / 255
    if likelihood == "bernoulli":
        pixel_values = (pixel_values > 0.5).float()
    out = model(pixel_values)
    out.loss.backward()
    assert out.reconstruction.min() >= 0 and out.reconstruction.max() <= 1
    log_px_z = model.log_likelihood(pixel_values, out.latents)
    assert (log_px_z < 0).all()  # a probability mass over discrete pixels is at most 1


def test_discretized_logistic_is_a_distribution():
    """The bin probabilities of one pixel over its 256 values sum to 1."""
    config = tiny_config(VAEConfig, "mlp", likelihood="discretized_logistic", image_size=4, num_channels=1,
                         num_downsamples=0)
    model = VAEModel(config)
    values = torch.arange(256).float().div(255).view(256, 1, 1, 1).expand(256, 1, 4, 4)
    mean = torch.full((256, 1, 4, 4), 0.3)
    log_probs = -model.likelihood.nll(values, mean) / 16  # 16 identical pixels per image
    torch.testing.assert_close(log_probs.exp().sum(), torch.tensor(1.0), atol=1e-4, rtol=0)


def test_linear_autoencoder_matches_pca():
    """A linear AE trained to convergence reaches PCA's reconstruction error (within 2%)."""
    torch.manual_seed(0)
    n, k = 512, 4
    config = AEConfig(backbone="mlp", linear=True, num_hidden_layers=0, latent_dim=k, image_size=4,
                      num_channels=1, num_downsamples=0)
    basis = torch.randn(16, 8)
    data = (torch.randn(n, 8) * torch.linspace(2, 0.2, 8)) @ basis.T
    data = (data - data.min()) / (data.max() - data.min())  # pixels in [0, 1]
    pixel_values = data.view(n, 1, 4, 4)
    centered = data - data.mean(0)
    _, s, _ = torch.linalg.svd(centered, full_matrices=False)
    pca_error = s[k:].pow(2).sum() / n  # per-sample squared error of the best rank-k affine reconstruction
    model = AEModel(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 1500)
    for step in range(1500):
        optimizer.zero_grad()
        loss = model(pixel_values).loss  # = summed squared error, c = 0.5
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        ae_error = model(pixel_values).loss
    assert ae_error <= pca_error * 1.02, (float(ae_error), float(pca_error))
    assert ae_error >= pca_error * 0.999  # PCA is optimal: a linear AE cannot beat it


@pytest.mark.parametrize(
    "config_class, kwargs, field",
    [
        (AEConfig, dict(backbone="resnet"), "backbone"),
        (AEConfig, dict(latent_dim=0), "latent_dim"),
        (VAEConfig, dict(latent_dim=-3), "latent_dim"),
        (AEConfig, dict(image_size=30), "image_size"),
        (AEConfig, dict(backbone="vit", image_size=30, patch_size=4), "patch_size"),
        (AEConfig, dict(likelihood="poisson"), "likelihood"),
        (VQVAEConfig, dict(num_embeddings=1), "num_embeddings"),
        (VQVAEConfig, dict(quantizer="bsq"), "quantizer"),
        (VAEConfig, dict(gradient_estimator="magic"), "gradient_estimator"),
        (AEConfig, dict(gaussian_variance=0.0), "gaussian_variance"),
    ],
)
def test_bad_config_names_the_field(config_class, kwargs, field):
    with pytest.raises(ValueError, match=field):
        config_class(**kwargs)


@pytest.mark.parametrize("family", FAMILIES, ids=["ae", "vae", "vqvae"])
def test_bad_inputs_name_the_problem(family):
    config_class, model_class = family
    model = model_class(tiny_config(config_class, "conv"))
    with pytest.raises(ValueError, match="channels"):
        model(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match="image_size"):
        model(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="NaN"):
        model(torch.full((2, 1, 28, 28), float("nan")))
    with pytest.raises(ValueError, match="uint8|floating"):
        model(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="pixel_values"):
        model(torch.rand(1, 28, 28))


def test_config_json_is_plain(tmp_path):
    config = tiny_config(VQVAEConfig, "vit", quantizer="fsq", fsq_levels=[4, 4, 3])
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "hf_autoencoders_vqvae" and saved["num_embeddings"] == 48
    assert AutoConfig.from_pretrained(tmp_path).fsq_levels == (4, 4, 3)
