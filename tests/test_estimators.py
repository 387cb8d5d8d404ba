"""Gradient estimators (pathwise vs score function), log p(x) estimators (prior vs importance sampling), the
categorical VAE, and the estimator study end to end."""

import json
import math

import pytest
import torch
from transformers import AutoModel

from hf_autoencoders.evaluation import likelihood_bounds
from hf_autoencoders.evaluation.estimators import (
    LinearGaussianModel,
    compare_log_marginal_estimators,
    effective_sample_size,
    gradient_statistics,
    log_weights,
    summarize_gradients,
)
from hf_autoencoders.models import CategoricalGaussianPosterior, DiagonalGaussian, VAEConfig, VAEModel
from hf_autoencoders.studies.estimators import run_standalone as run_estimator_study


def tiny_vae(**kwargs):
    """A VAE on 4x4 images, small enough for thousands of gradient draws."""
    config = VAEConfig(backbone="mlp", image_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1,
                       latent_dim=2, **kwargs)
    torch.manual_seed(0)
    return VAEModel(config)


def images(n=8, size=4, seed=0):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------- gradient estimators


def test_both_estimators_are_unbiased_for_a_known_gradient():
    """d/d(mu, log sigma^2) E_{N(mu, sigma^2)}[z^2] = (2 mu, sigma^2) exactly; each estimator's mean must be within
    four of its measured standard errors of it, and the score function's variance must be larger."""
    n = 100_000  # one (mu, log sigma^2) leaf per draw gives the per-draw gradients in one backward pass
    mu = torch.full((n, 1), 0.7, requires_grad=True)
    log_var = torch.full((n, 1), math.log(0.25), requires_grad=True)
    exact = torch.tensor([2 * 0.7, 0.25])
    q = DiagonalGaussian(mu, log_var)
    torch.manual_seed(0)
    pathwise = torch.cat(torch.autograd.grad(q.sample().pow(2).sum(), (mu, log_var), retain_graph=True), 1)
    z = q.sample().detach()
    score = torch.cat(torch.autograd.grad((z.pow(2).squeeze(1) * q.log_prob(z)).sum(), (mu, log_var)), 1)
    for draws in (pathwise, score):
        standard_error = draws.std(0) / math.sqrt(n)
        assert ((draws.mean(0) - exact).abs() <= 4 * standard_error).all()
        assert (standard_error < 0.02).all()
    assert (score.var(0) > 3 * pathwise.var(0)).all()


def test_score_function_and_pathwise_gradients_agree_on_a_vae_and_score_function_is_noisier():
    model = tiny_vae(num_latent_samples=4)
    x = images()
    pathwise = gradient_statistics(model, x, 600, gradient_estimator="reparameterization", seed=1)
    score = gradient_statistics(model, x, 600, gradient_estimator="score_function",
                                score_function_baseline="leave_one_out", seed=2)
    summary = summarize_gradients(score, pathwise)
    # (mean_sf - mean_rp)^2 / (var_sf / n + var_rp / n) averages about 1 over coordinates when both are unbiased
    assert summary["mean_squared_z"] < 2.0
    assert summary["cosine_to_reference"] > 0.8
    assert summary["total_variance"] > 3 * summarize_gradients(pathwise)["total_variance"]
    # ...and the same statistic flags an estimate of another gradient (here: that of a slightly different batch)
    other = gradient_statistics(model, x * 0.9, 200, gradient_estimator="reparameterization", seed=3)
    assert summarize_gradients(other, pathwise)["mean_squared_z"] > 10


def test_categorical_score_function_is_unbiased_and_gumbel_softmax_biased_against_the_exact_sum():
    model = tiny_vae(num_categories=3, num_latent_samples=4)
    x = images()
    exact = gradient_statistics(model, x, 400, exact_categories=True, seed=1)
    score = gradient_statistics(model, x, 600, categorical_estimator="score_function",
                                score_function_baseline="leave_one_out", seed=2)
    summary = summarize_gradients(score, exact)
    # heavy-tailed score-function draws make the variance estimates noisy: about 1 expected, up to ~2 seen
    assert summary["mean_squared_z"] < 3.0 and summary["cosine_to_reference"] > 0.9
    # the Gumbel-softmax relaxation estimates the gradient of another (relaxed) objective: biased
    gumbel = gradient_statistics(model, x, 400, categorical_estimator="gumbel_softmax", seed=3)
    assert summarize_gradients(gumbel, exact)["mean_squared_z"] > 10


# -------------------------------------------------------------------------------------------------- log p(x)


def test_effective_sample_size():
    assert effective_sample_size(torch.zeros(50, 2)).tolist() == pytest.approx([50.0, 50.0])
    assert effective_sample_size(torch.tensor([0.0, -100.0, -100.0])).item() == pytest.approx(1.0)


def test_prior_and_importance_sampling_agree_with_exact_log_px_and_importance_sampling_is_far_more_efficient():
    toy = LinearGaussianModel(seed=0)
    x = toy.sample_data(32, torch.Generator().manual_seed(1))
    exact = toy.log_marginal(x)
    result = compare_log_marginal_estimators(toy, x, [10, 100, 10_000], exact=exact, seed=0)
    prior = {row["num_samples"]: row for row in result["prior"]}
    importance = {row["num_samples"]: row for row in result["importance"]}
    # both converge to the exact value...
    assert abs(prior[10_000]["bias"]) < 0.25 and prior[10_000]["rmse"] < 0.6
    assert abs(importance[10_000]["bias"]) < 0.01
    # ...prior sampling is biased low at small K (Jensen), and importance sampling with 100 samples beats it with 10,000
    assert prior[10]["bias"] < -1.0
    assert importance[100]["rmse"] < prior[10_000]["rmse"] / 5
    assert importance[100]["ess"] > 50 and prior[10_000]["ess"] < 0.1 * 10_000


def test_log_weights_of_a_categorical_vae_give_a_bound_above_the_elbo():
    model = tiny_vae(num_categories=3).eval()
    x = images(4)
    generator = torch.Generator().manual_seed(0)
    weights = log_weights(model, x, 2000, "posterior", generator)
    assert weights.shape == (2000, 4) and torch.isfinite(weights).all()
    elbo = weights.mean(0)  # E_q[log p(x, c, z) - log q(c, z | x)]
    iwae = torch.logsumexp(weights, 0) - math.log(2000)
    assert (iwae > elbo).all()
    prior_weights = log_weights(model, x, 2000, "prior", generator)
    assert torch.isfinite(prior_weights).all()
    # the ELBO from the weights matches the model's closed-form KL version, and the library's metrics agree
    q = model.encode(x).latent_dist
    expected = model.log_likelihood(x, q.sample(generator, 4000)).mean(0) - q.kl()
    torch.testing.assert_close(elbo.float(), expected.detach(), atol=0.5, rtol=0.01)
    with torch.no_grad():
        bound_elbo, bound_iwae = likelihood_bounds(model, x, 2000, generator)
    torch.testing.assert_close(bound_elbo.float(), expected.detach(), atol=1.0, rtol=0.01)
    torch.testing.assert_close(bound_iwae, iwae, atol=0.5, rtol=0.01)


# ------------------------------------------------------------------------------------------ categorical VAE


@pytest.mark.parametrize("categorical_estimator", ["score_function", "gumbel_softmax"])
@pytest.mark.parametrize("gradient_estimator", ["reparameterization", "score_function"])
def test_categorical_vae_forward_backward(categorical_estimator, gradient_estimator):
    config = VAEConfig(backbone="conv", hidden_size=16, latent_dim=4, num_categories=10, num_latent_samples=2,
                       categorical_estimator=categorical_estimator, gradient_estimator=gradient_estimator,
                       score_function_baseline="leave_one_out")
    model = VAEModel(config)
    x = torch.rand(3, 1, 28, 28)
    out = model(x)
    assert out.latents.shape == (3, 14) and torch.isfinite(out.loss) and out.kl_loss > 0
    out.loss.backward()
    head = model.encoder.layers[-1]  # rows 0..9: logits of q(c|x); then mu, logvar
    assert head.weight.grad[:10].abs().sum() > 0 and head.weight.grad[10:].abs().sum() > 0
    if categorical_estimator == "gumbel_softmax":  # relaxed while training
        assert not torch.all((out.latents[:, :10] == 0) | (out.latents[:, :10] == 1))
    model.eval()
    with torch.no_grad():
        categories = model(x).latents[:, :10]
    assert torch.equal(categories.sum(-1), torch.ones(3)) and torch.all((categories == 0) | (categories == 1))


def test_categorical_kl_matches_monte_carlo_and_samples_follow_pi():
    logits = torch.randn(4, 5) * 2
    posterior = CategoricalGaussianPosterior(logits, torch.randn(4, 3), torch.randn(4, 3) * 0.5)
    generator = torch.Generator().manual_seed(0)
    latents = posterior.sample(generator, 100_000)
    categories, _ = posterior.split(latents)
    torch.testing.assert_close(categories.mean(0), logits.softmax(-1), atol=0.01, rtol=0)
    monte_carlo = (posterior.categorical_log_prob(categories) + math.log(5)).mean(0)  # log q(c) - log Uniform(c)
    torch.testing.assert_close(monte_carlo, posterior.categorical_kl(), atol=0.02, rtol=0.01)
    assert (posterior.categorical_kl() <= math.log(5) + 1e-6).all()
    relaxed = posterior.relaxed_sample(generator, 10, temperature=0.1)[..., :5]
    torch.testing.assert_close(relaxed.sum(-1), torch.ones(10, 4))
    # log q(c, z) = log pi_c + log N(z): the two parts add up
    torch.testing.assert_close(posterior.log_prob(latents[:3]), posterior.categorical_log_prob(categories[:3])
                               + posterior.gaussian.log_prob(latents[:3, :, 5:]))


def test_categorical_vae_save_load_sample_and_classify(tmp_path):
    model = VAEModel(VAEConfig(backbone="mlp", hidden_size=32, num_hidden_layers=1, latent_dim=3,
                               num_categories=10)).eval()
    x = torch.rand(5, 1, 28, 28)
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert loaded.config.num_categories == 10
    torch.testing.assert_close(loaded.classify(x), model.classify(x))
    probs = model.classify(x)
    assert probs.shape == (5, 10) and torch.allclose(probs.sum(-1), torch.ones(5))
    latents = model.sample_latents(6, torch.Generator().manual_seed(0))
    assert latents.shape == (6, 13) and torch.equal(latents[:, :10].sum(-1), torch.ones(6))
    torch.testing.assert_close(model.log_prior(latents), -math.log(10) - 0.5 * latents[:, 10:].pow(2).sum(-1)
                               - 1.5 * math.log(2 * math.pi))
    a = loaded.sample(6, generator=torch.Generator().manual_seed(0))
    b = model.sample(6, generator=torch.Generator().manual_seed(0))
    assert a.shape == (6, 1, 28, 28) and torch.allclose(a, b)
    assert model.log_likelihood(x, latents[:, None]).shape == (6, 5)
    with pytest.raises(ValueError, match="num_categories"):
        VAEModel(VAEConfig(backbone="mlp", hidden_size=8, latent_dim=2)).classify(x)


# ------------------------------------------------------------------------------------------------------ study


def test_run_estimator_study_quick(tmp_path):
    results = run_estimator_study(tmp_path, budget="quick", seed=0, max_steps=60)
    for name in ("report.md", "results.json", "gradient_variance.png", "log_px_vs_samples.png",
                 "ess_vs_samples.png"):
        assert (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / "results.json").read_text())

    def numbers(value):
        if isinstance(value, dict):
            return [n for v in value.values() for n in numbers(v)]
        if isinstance(value, list):
            return [n for v in value for n in numbers(v)]
        return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []

    gradient_numbers = numbers(saved["gradients"]) + numbers(saved["log_px"])
    assert gradient_numbers and all(math.isfinite(n) for n in gradient_numbers)
    gradients = results["gradients"]["gaussian_vae"]
    assert gradients["score_function (no baseline)"]["total_variance"] > gradients["reparameterization"][
        "total_variance"]
    toy = results["log_px"]["linear_gaussian"]
    assert toy["importance"][-1]["rmse"] < toy["prior"][-1]["rmse"]
    assert results["models"]["gaussian_vae"]["train_steps"] == results["settings"]["train_steps"] == 60
    report = (tmp_path / "report.md").read_text()
    assert "![gradient variance](gradient_variance.png)" in report and "What the numbers show" in report
    claims = {c["key"]: c for c in saved["claims"]}
    assert set(claims) == {"score_function_variance", "prior_sampling_wastes_samples"}
    assert all(c["verdict"] in ("confirmed", "contradicted", "within noise") and c["rule"] for c in claims.values())
    # the score function's variance is orders of magnitude above the pathwise one's even after 60 steps
    assert claims["score_function_variance"]["verdict"] == "confirmed"
    assert saved["experiment"] == "estimators" and saved["settings"]["budget"] == "quick"
    with pytest.raises(ValueError, match="budget 'huge' is not known"):
        run_estimator_study(tmp_path / "x", budget="huge")
