"""Tests of the transformer prior over VQ-VAE codes (models/code_priors.py): the token layout, causality, sampling
through `generate()` (cache, generator, temperature / top-k / top-p, code tokens only), class conditioning, scoring,
save/load with plain `AutoModelForCausalLM`, refusals, and the `train-prior --prior_type transformer` run."""

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

import hf_autoencoders as H
from hf_autoencoders.cli import main as cli_main
from hf_autoencoders.data import ImageCollator, load_image_dataset
from hf_autoencoders.evaluation import priors as S
from hf_autoencoders.hub import load_model
from hf_autoencoders.models import code_priors as C
from hf_autoencoders.training import parse_prior_args
from hf_autoencoders.training import prior as P

K, GRID = 16, 4
TINY = dict(num_embeddings=K, grid_size=GRID, hidden_size=32, num_layers=2, num_heads=2)


def tiny_prior(seed: int = 0, **overrides) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(C.transformer_prior_config(**{**TINY, **overrides})).eval()


def random_codes(batch: int, seed: int = 0, k: int = K, grid: int = GRID) -> torch.Tensor:
    return torch.randint(0, k, (batch, grid, grid), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ config and layout


def test_config_records_the_layout_and_validates():
    config = C.transformer_prior_config(512, 7, num_classes=10, vqvae_name_or_path="me/vqvae")
    assert isinstance(config, GPT2Config)
    assert (config.num_embeddings, config.grid_size, config.num_classes) == (512, 7, 10)
    assert config.vqvae_name_or_path == "me/vqvae"
    assert config.vocab_size == 512 + 1 + 10 + 1 and config.bos_token_id == 512 and config.eos_token_id is None
    assert config.class_dropout == C.DEFAULT_CLASS_DROPOUT and C.null_class_token(config) == 512 + 1 + 10
    assert config.n_positions == 2 + 49 and C.prefix_length(config) == 2
    assert C.prefix_length(C.transformer_prior_config(512, 7)) == 1
    assert C.is_transformer_prior_config(config)
    assert not C.is_transformer_prior_config(GPT2Config())
    assert not C.is_transformer_prior_config(H.PixelCNNPriorConfig())
    for kwargs, message in [(dict(num_embeddings=1), "num_embeddings"), (dict(grid_size=0), "grid_size"),
                            (dict(num_classes=-1), "num_classes"), (dict(hidden_size=30, num_heads=4), "multiple"),
                            (dict(dropout=1.0), "dropout"), (dict(num_layers=2.0), "num_layers")]:
        with pytest.raises(ValueError, match=message):
            C.transformer_prior_config(**{**dict(num_embeddings=8, grid_size=2), **kwargs})


def test_token_layout():
    config = C.transformer_prior_config(K, 2, num_classes=3)
    codes = torch.tensor([[[1, 2], [3, 4]], [[5, 6], [7, 8]]])
    tokens = C.code_tokens(config, codes, torch.tensor([0, 2]))
    assert tokens.tolist() == [[K, K + 1, 1, 2, 3, 4], [K, K + 3, 5, 6, 7, 8]]
    labels = C.language_model_labels(config, tokens)
    assert labels.tolist() == [[-100, -100, 1, 2, 3, 4], [-100, -100, 5, 6, 7, 8]]
    unconditional = C.transformer_prior_config(K, 2)
    assert C.code_tokens(unconditional, codes).tolist() == [[K, 1, 2, 3, 4], [K, 5, 6, 7, 8]]
    collated = P.CodeTokenCollator(config)([P.CodeDataset(codes.to(torch.uint8), torch.tensor([0, 2]))[i]
                                            for i in range(2)])
    assert torch.equal(collated["input_ids"], tokens) and torch.equal(collated["labels"], labels)


# -------------------------------------------------------------------------------------------------- causality


@pytest.mark.parametrize("num_classes", [0, 3])
def test_causality_by_perturbation(num_classes):
    """Changing the code at t leaves the predicted distribution at every position <= t bit-identical and changes it
    at t + 1 (every later position sees it through attention)."""
    model = tiny_prior(1, num_classes=num_classes).double()
    n = GRID * GRID
    base = random_codes(1, 1).repeat(n, 1, 1)
    perturbed = base.clone().flatten(1)
    t = torch.arange(n)
    perturbed[t, t] = (perturbed[t, t] + 1 + torch.randint(0, K - 1, (n,))) % K
    perturbed = perturbed.reshape(n, GRID, GRID)
    labels = torch.full((n,), 2) if num_classes else None
    with torch.no_grad():
        logits = S.code_logits(model, base, labels).reshape(n, n, K)
        logits_perturbed = S.code_logits(model, perturbed, labels).reshape(n, n, K)
    change = (logits_perturbed - logits).abs().amax(-1)  # change[t, q]: at position q when the code at t changes
    at_or_before = torch.arange(n)[None, :] <= torch.arange(n)[:, None]
    assert change[at_or_before].max() == 0, "a predicted distribution depends on the current or a later code"
    assert change[~at_or_before].min() > 1e-9, "a later position ignores an earlier code"


def test_class_token_conditions_every_position():
    model = tiny_prior(0, num_classes=3)
    codes = random_codes(2, 0)
    with torch.no_grad():
        logits_0 = S.code_logits(model, codes, torch.tensor([0, 0]))
        logits_1 = S.code_logits(model, codes, torch.tensor([1, 1]))
    assert (logits_0 - logits_1).abs().amax(-1).min() > 1e-6


# ------------------------------------------------------------------------------------------------ likelihood


def test_log_prob_matches_the_logits_and_is_normalised():
    model = tiny_prior(0, num_embeddings=3, grid_size=2).double()
    all_maps = torch.tensor(list(itertools.product(range(3), repeat=4))).reshape(-1, 2, 2)
    with torch.no_grad():
        log_probs = S.log_prob_codes(model, all_maps)
        by_hand = S.code_logits(model, all_maps).log_softmax(-1).gather(-1, all_maps[..., None]).sum((1, 2, 3))
    torch.testing.assert_close(log_probs, by_hand)
    torch.testing.assert_close(log_probs.exp().sum(), torch.tensor(1.0, dtype=torch.float64))
    # A fresh model is near uniform: about L log K nats per map.
    assert abs(S.log_prob_codes(tiny_prior(0), random_codes(4)).mean().item() + GRID**2 * math.log(K)) < 1.0


def test_pixelcnn_is_scored_through_its_own_log_prob():
    torch.manual_seed(0)
    pixelcnn = H.PixelCNNPriorModel(H.PixelCNNPriorConfig(num_embeddings=K, grid_size=GRID, hidden_size=8,
                                                          num_layers=2, kernel_size=3)).eval()
    codes = random_codes(3)
    with torch.no_grad():
        torch.testing.assert_close(S.log_prob_codes(pixelcnn, codes), pixelcnn.log_prob(codes))


def test_prior_nll_metrics_units():
    config = C.transformer_prior_config(K, GRID)
    code_nll = torch.tensor([20.0, 24.0])
    metrics = S.prior_nll_metrics(code_nll, config, decoder_nll=torch.tensor([100.0, 110.0]), num_pixels=784)
    assert metrics["nll_per_image_nats"] == pytest.approx(22.0)
    assert metrics["nll_per_code_nats"] == pytest.approx(22.0 / 16)
    assert metrics["bits_per_code"] == pytest.approx(22.0 / 16 / math.log(2))
    scale = 784 * math.log(2)
    assert metrics["bits_per_dim"] == pytest.approx((105.0 + 22.0) / scale)
    assert metrics["bits_per_dim"] == pytest.approx(metrics["decoder_bits_per_dim"] + metrics["prior_bits_per_dim"])
    assert metrics["uniform_prior_bits_per_dim"] == pytest.approx((105.0 + 16 * math.log(K)) / scale)
    assert "bits_per_dim" not in S.prior_nll_metrics(code_nll, config)


# -------------------------------------------------------------------------------------------------- sampling


def test_same_generator_same_samples_and_the_global_rng_is_untouched():
    model = tiny_prior(0)
    state = torch.get_rng_state()
    samples = C.sample_codes(model, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), state)
    assert samples.shape == (6, GRID, GRID) and samples.dtype == torch.long
    assert torch.equal(samples, C.sample_codes(model, 6, generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(samples, C.sample_codes(model, 6, generator=torch.Generator().manual_seed(1)))
    # Without a generator the global RNG is the source: seeding it reproduces the samples.
    torch.manual_seed(5)
    first = C.sample_codes(model, 6)
    torch.manual_seed(5)
    assert torch.equal(first, C.sample_codes(model, 6))
    model.train()
    C.sample_codes(model, 1)
    assert model.training


@pytest.mark.parametrize("num_classes", [0, 3])
def test_sampling_with_the_cache_equals_sampling_without_it(num_classes):
    model = tiny_prior(2, num_classes=num_classes).double()
    labels = torch.tensor([0, 1, 2, 0, 1]) if num_classes else None
    for options in (dict(temperature=0.0), dict(temperature=1.0), dict(temperature=0.7, top_k=5, top_p=0.9)):
        cached = C.sample_codes(model, 5, generator=torch.Generator().manual_seed(3), class_labels=labels, **options)
        uncached = C.sample_codes(model, 5, generator=torch.Generator().manual_seed(3), class_labels=labels,
                                  use_cache=False, **options)
        assert torch.equal(cached, uncached), options


def test_greedy_sampling_is_the_argmax_and_cuts_reduce_to_it():
    """Temperature 0 takes, at each position, the argmax of the logits forward gives on the finished map; top_k=1
    and a tiny top_p leave only that code, so they sample the same maps."""
    model = tiny_prior(0, num_classes=2)
    greedy = C.sample_codes(model, 4, temperature=0.0, class_labels=1)
    with torch.no_grad():
        assert torch.equal(greedy, S.code_logits(model, greedy, 1).argmax(-1))
    for cut in (dict(top_k=1), dict(top_p=1e-6)):
        assert torch.equal(greedy, C.sample_codes(model, 4, generator=torch.Generator().manual_seed(0),
                                                  class_labels=1, **cut))


def test_only_code_tokens_are_generated():
    """Even when the start and class tokens are by far the most likely, only codes come out."""
    model = tiny_prior(0, num_classes=3)

    def boost_non_codes(module, args, output):
        output[..., K:] += 100.0
        return output

    handle = model.lm_head.register_forward_hook(boost_non_codes)
    try:
        for temperature in (0.0, 1.0, 3.0):
            samples = C.sample_codes(model, 8, generator=torch.Generator().manual_seed(0), temperature=temperature,
                                     class_labels=0)
            assert samples.min() >= 0 and samples.max() < K
    finally:
        handle.remove()


def test_inverse_cdf_draw_never_lands_on_an_impossible_token(monkeypatch):
    """Even a uniform draw of exactly 1 (curand's uniforms lie in (0, 1]) gives a token of positive probability (the
    last one), never the -inf tail of non-code tokens or an index past the vocabulary."""
    scores = torch.tensor([[0.3, 1.7, -0.2, -float("inf"), -float("inf")]] * 4)
    monkeypatch.setattr(torch, "rand", lambda *shape, generator=None, device=None, dtype=None:
                        torch.ones(shape, dtype=dtype, device=device))
    out = C.GeneratorSampling(torch.Generator().manual_seed(0))(None, scores.clone())
    assert (out.argmax(-1) == 2).all() and (out == 0).sum() == 4


def test_samples_follow_the_model_distribution():
    """Empirical frequencies of 20,000 generated maps match exp(log_prob) over all 3^4 maps of a 2 x 2 grid."""
    model = tiny_prior(1, num_embeddings=3, grid_size=2)
    with torch.no_grad():
        model.transformer.wte.weight.mul_(30)  # sharpen the (tied) output layer away from uniform
    all_maps = torch.tensor(list(itertools.product(range(3), repeat=4))).reshape(-1, 2, 2)
    with torch.no_grad():
        probs = S.log_prob_codes(model, all_maps).exp()
    n = 20000
    samples = C.sample_codes(model, n, generator=torch.Generator().manual_seed(0), temperature=1.0)
    index = (samples.reshape(n, 4) * torch.tensor([27, 9, 3, 1])).sum(-1)
    frequencies = torch.bincount(index, minlength=81).float() / n
    assert probs.max() > 3 / 81  # not uniform, so the test can tell a wrong sampler
    assert 0.5 * (frequencies - probs).abs().sum() < 0.04
    # top_k = 2 never draws a map holding a code outside the two most likely at its position.
    cut = C.sample_codes(model, 2000, generator=torch.Generator().manual_seed(1), top_k=2, temperature=1.0)
    with torch.no_grad():
        rank = (S.code_logits(model, cut) > S.code_logits(model, cut).gather(-1, cut[..., None])).sum(-1)
    assert rank.max() <= 1


def test_batched_sampling_and_progress_bar(capsys):
    model = tiny_prior(0)
    samples = C.sample_codes(model, 5, generator=torch.Generator().manual_seed(0), batch_size=2, progress=True)
    assert samples.shape == (5, GRID, GRID)
    assert "Sampling codes" in capsys.readouterr().err


# -------------------------------------------------------------------------------------------- class-conditional


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny class-conditional prior trained with the Trainer (`fit_prior`) on maps whose codes come from a
    class-specific pair {2y, 2y + 1}, saved and reloaded."""
    root = tmp_path_factory.mktemp("transformer_prior")
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (600,), generator=generator)
    codes = 2 * labels[:, None, None] + torch.randint(0, 2, (600, GRID, GRID), generator=generator)
    train = P.CodeDataset(codes[:500].to(torch.uint8), labels[:500])
    test = P.CodeDataset(codes[500:].to(torch.uint8), labels[500:])
    prior = tiny_prior(0, num_classes=3)
    trainer = P.fit_prior(prior.train(), train, test, output_dir=root / "run", max_steps=150, learning_rate=3e-3,
                          per_device_train_batch_size=50, seed=0)
    prior.eval()
    prior.save_pretrained(root / "prior")
    return prior, trainer, test, root


def test_class_conditional_samples_follow_the_class(trained):
    prior, _, _, _ = trained
    labels = torch.arange(60) % 3
    samples = C.sample_codes(prior, 60, generator=torch.Generator().manual_seed(0), class_labels=labels)
    predicted = (samples // 2).flatten(1).mode(dim=1).values  # the class whose code pair dominates the map
    accuracy = (predicted == labels).float().mean().item()
    assert accuracy > 0.8, accuracy  # chance: 1/3


def test_training_learns_and_eval_loss_bounds_the_code_nll(trained):
    prior, trainer, test, _ = trained
    nll = S.code_nll(prior, test)
    assert nll < 0.5 * math.log(K)  # 2 of 16 codes per class: log 2 = 0.69 nats is the best possible
    eval_loss = trainer.evaluate()["eval_loss"]
    assert eval_loss >= nll - 1e-5  # the whole-vocabulary cross entropy is never below the code-only NLL
    assert eval_loss == pytest.approx(nll, abs=0.05)


def test_reloaded_prior_gives_the_same_nll_and_samples(trained):
    prior, _, test, root = trained
    reloaded = AutoModelForCausalLM.from_pretrained(root / "prior").eval()
    assert type(reloaded) is GPT2LMHeadModel
    assert (reloaded.config.num_embeddings, reloaded.config.grid_size, reloaded.config.num_classes) == (K, GRID, 3)
    assert S.code_nll(reloaded, test) == pytest.approx(S.code_nll(prior, test), rel=1e-6)
    labels = torch.tensor([0, 1, 2])
    assert torch.equal(C.sample_codes(prior, 3, generator=torch.Generator().manual_seed(4), class_labels=labels),
                       C.sample_codes(reloaded, 3, generator=torch.Generator().manual_seed(4), class_labels=labels))


def test_saved_prior_loads_without_hf_autoencoders(trained, run_without_package):
    """Plain transformers, no remote code: the folder holds no Python file, and the NLL computed from the documented
    token layout alone equals ours."""
    prior, _, test, root = trained
    assert not list((root / "prior").glob("*.py"))
    config = json.loads((root / "prior" / "config.json").read_text())
    assert "auto_map" not in config and config["model_type"] == "gpt2"
    codes, labels = test.codes[:20].long(), test.labels[:20]
    torch.save({"codes": codes, "labels": labels}, root / "batch.pt")
    proc = run_without_package(f"""
        import torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(root / "prior")!r}).eval()
        batch = torch.load({str(root / "batch.pt")!r})
        K, n = model.config.num_embeddings, len(batch["codes"])
        tokens = torch.cat([torch.full((n, 1), K), K + 1 + batch["labels"][:, None], batch["codes"].flatten(1)], 1)
        with torch.no_grad():
            logits = model(tokens[:, :-1]).logits[:, 1:, :K]
        nll = -logits.log_softmax(-1).gather(-1, tokens[:, 2:, None]).sum() / batch["codes"].numel()
        print(type(model).__name__, nll.item())
    """, root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    name, nll = proc.stdout.split()
    with torch.no_grad():
        ours = -S.log_prob_codes(prior, codes, labels).sum().item() / codes.numel()
    assert name == "GPT2LMHeadModel" and float(nll) == pytest.approx(ours, rel=1e-5)


# ----------------------------------------------------------------------------------------------------- refusals


def vqvae(num_embeddings: int = K, image_size: int = 16) -> H.VQVAEModel:
    torch.manual_seed(0)
    config = H.VQVAEConfig(image_size=image_size, num_channels=1, hidden_size=8, num_embeddings=num_embeddings,
                           embedding_dim=4, num_residual_blocks=1)
    return H.VQVAEModel(config).eval()  # 16x16 images, 2 downsamplings: 4x4 codes


def test_vqvae_samples_with_a_transformer_prior_and_refuses_misfits():
    model, prior = vqvae(), tiny_prior(0, num_classes=2)
    images = model.sample(3, generator=torch.Generator().manual_seed(0), prior=prior, class_labels=1, top_k=4,
                          top_p=0.9, temperature=0.8)
    assert images.shape == (3, 1, 16, 16)
    assert model.check_prior(prior) == "transformer"
    with pytest.raises(ValueError, match="K = 32 codes"):
        vqvae(num_embeddings=32).check_prior(prior)
    with pytest.raises(ValueError, match="5x5 maps"):
        vqvae(image_size=20).sample(2, prior=prior, class_labels=0)
    with pytest.raises(ValueError, match="class_labels are required"):
        model.sample(2, prior=prior)
    with pytest.raises(ValueError, match="need a prior"):
        model.sample(2, top_k=3)


def test_wrong_kinds_of_model_are_refused(tmp_path):
    model = vqvae()
    prior = tiny_prior(0)
    prior.save_pretrained(tmp_path / "prior")
    base = AutoModel.from_pretrained(tmp_path / "prior")  # GPT2Model: no language-model head
    with pytest.raises(ValueError, match="AutoModelForCausalLM"):
        model.check_prior(base)
    torch.manual_seed(0)
    plain_gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=K, n_positions=32, n_embd=16, n_layer=1, n_head=2))
    with pytest.raises(ValueError, match="not a prior over VQ-VAE codes"):
        model.check_prior(plain_gpt2)
    with pytest.raises(ValueError, match="prior must be a prior over VQ-VAE codes"):
        model.check_prior(H.VAEModel(H.VAEConfig(hidden_size=8, latent_dim=2)))
    with pytest.raises(ValueError, match="prior must be a prior over VQ-VAE codes"):
        C.sample_codes(model, 2)
    # The command line loads the folder as a causal LM, which the VQ-VAE accepts.
    assert type(load_model(str(tmp_path / "prior"))) is GPT2LMHeadModel


def test_bad_sampling_arguments_are_refused():
    prior = tiny_prior(0)
    for kwargs, message in [(dict(temperature=-1.0), "temperature"), (dict(top_k=0), "top_k"),
                            (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"), (dict(batch_size=0), "batch_size"),
                            (dict(class_labels=0), "unconditional")]:
        with pytest.raises(ValueError, match=message):
            C.sample_codes(prior, 2, **kwargs)
    with pytest.raises(ValueError, match="num_samples"):
        C.sample_codes(prior, 0)
    torch.manual_seed(0)
    pixelcnn = H.PixelCNNPriorModel(H.PixelCNNPriorConfig(num_embeddings=K, grid_size=GRID, hidden_size=8,
                                                          num_layers=2, kernel_size=3))
    with pytest.raises(ValueError, match="transformer prior only"):
        C.sample_codes(pixelcnn, 2, top_k=3)
    with pytest.raises(ValueError, match="codes in"):
        S.log_prob_codes(prior, torch.full((1, GRID, GRID), K))
    with pytest.raises(ValueError, match=r"shape \(batch, 4, 4\)"):
        S.log_prob_codes(prior, torch.zeros(1, 3, 3, dtype=torch.long))
    conditional = tiny_prior(0, num_classes=3)
    with pytest.raises(ValueError, match=r"class_labels must lie in \[0, num_classes=3\)"):
        C.sample_codes(conditional, 2, class_labels=torch.tensor([0, 3]))


def test_decoder_nll_needs_a_discrete_likelihood():
    images = torch.rand(2, 1, 16, 16)
    with pytest.raises(ValueError, match="bits/dim are not defined"):
        S.decoder_nll(vqvae(), images)
    torch.manual_seed(0)
    bernoulli = H.VQVAEModel(H.VQVAEConfig(image_size=16, num_channels=1, hidden_size=8, num_embeddings=K,
                                           embedding_dim=4, num_residual_blocks=1, likelihood="bernoulli")).eval()
    binary = (images > 0.5).float()
    with torch.no_grad():
        nll = S.decoder_nll(bernoulli, binary)
        output = bernoulli(binary)
    assert nll.shape == (2,)
    torch.testing.assert_close(nll.mean(), output.reconstruction_loss)


def test_prior_arguments_refuse_flags_of_the_other_kind():
    base = ["--vqvae", "x", "--output_dir", "o"]
    assert parse_prior_args(base)[0].prior_type == "transformer"  # the default
    with pytest.raises(ValueError, match="--prior_type must be transformer or pixelcnn"):
        parse_prior_args([*base, "--prior_type", "lstm"])
    with pytest.raises(ValueError, match="--kernel_size applies to --prior_type pixelcnn only.*the default is "
                                         "transformer"):
        parse_prior_args([*base, "--kernel_size", "3"])
    with pytest.raises(ValueError, match="--num_heads applies to --prior_type transformer only"):
        parse_prior_args([*base, "--prior_type", "pixelcnn", "--num_heads", "2"])
    with pytest.raises(ValueError, match="--class_dropout applies to a class-conditional prior"):
        parse_prior_args([*base, "--class_dropout", "0.2"])
    with pytest.raises(ValueError, match="PixelCNN prior has no null class"):
        parse_prior_args([*base, "--prior_type", "pixelcnn", "--class_conditional", "--class_dropout", "0.2"])
    with pytest.raises(ValueError, match=r"--class_dropout must lie in \[0, 1\)"):
        parse_prior_args([*base, "--class_conditional", "--class_dropout", "1"])


# ---------------------------------------------------------------------------------------- the training command


def test_train_prior_command_with_a_transformer(tmp_path, capsys):
    """`run_prior_training --prior_type transformer` on a tiny Bernoulli VQ-VAE over binarized digits: a folder that
    AutoModelForCausalLM loads, whose config records the VQ-VAE; bits/dim reported; `sample --prior` uses it."""
    digits = load_image_dataset(None)
    torch.manual_seed(0)
    vq = H.VQVAEModel(H.VQVAEConfig(hidden_size=8, num_embeddings=K, embedding_dim=4, num_residual_blocks=1,
                                    kmeans_init=True, likelihood="bernoulli"))
    with torch.no_grad():
        vq(ImageCollator(binarize=True)([digits.train[i] for i in range(128)])["pixel_values"])
    vq.eval().save_pretrained(tmp_path / "vqvae")
    args = parse_prior_args([
        "--vqvae", str(tmp_path / "vqvae"), "--output_dir", str(tmp_path / "prior"), "--prior_type", "transformer",
        "--class_conditional", "--binarize", "true", "--hidden_size", "16", "--num_layers", "1", "--num_heads", "2",
        "--max_train_samples", "256", "--max_eval_samples", "64", "--num_samples", "10", "--max_steps", "3",
        "--save_strategy", "no", "--disable_tqdm", "true", "--report_to", "none", "--do_train", "--do_eval"])
    metrics = P.run_prior_training(*args)
    folder = tmp_path / "prior"
    for name in ("model.safetensors", "config.json", "samples.png", "README.md", "all_results.json"):
        assert (folder / name).is_file(), name
    prior = AutoModelForCausalLM.from_pretrained(folder)
    assert (prior.config.num_embeddings, prior.config.grid_size, prior.config.num_classes) == (K, 7, 10)
    # The VQ-VAE is recorded by its identity (checked where the two meet) and never by a local path.
    assert prior.config.vqvae_name_or_path is None and str(tmp_path) not in (folder / "config.json").read_text()
    assert prior.config.vqvae_identity == H.VQVAEModel.from_pretrained(tmp_path / "vqvae").identity()
    assert metrics["test_bits_per_dim"] == pytest.approx(metrics["test_decoder_bits_per_dim"]
                                                         + metrics["test_prior_bits_per_dim"])
    assert metrics["test_prior_bits_per_dim"] < metrics["test_uniform_prior_bits_per_dim"] - \
        metrics["test_decoder_bits_per_dim"] + 1e-3  # even 3 steps beat uniform codes
    assert metrics["eval_loss"] >= metrics["test_nll_per_code_nats"] - 1e-5
    card = (folder / "README.md").read_text()
    assert "transformer prior" in card and "AutoModelForCausalLM" in card
    output = tmp_path / "grid.png"
    cli_main(["sample", str(tmp_path / "vqvae"), "--prior", str(folder), "--num_samples", "4", "--top_k", "5",
              "--top_p", "0.9", "--class_label", "3", "--output", str(output)])
    assert output.is_file()
    with pytest.raises(SystemExit):
        cli_main(["sample", str(tmp_path / "vqvae"), "--prior", str(folder), "--class_label", "10",
                  "--output", str(tmp_path / "x.png")])
    assert "--class_label must lie in [0, 10)" in capsys.readouterr().err


@pytest.mark.slow
def test_prior_speed_benchmark_smoke_run(tmp_path):
    """benchmarks/prior_speed.py --smoke trains both priors for 2 s on a tiny VQ-VAE and prints one JSON object."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "benchmarks/prior_speed.py", "--smoke", "--figures_dir", str(tmp_path)],
                          cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)["digits"]
    for kind in ("pixelcnn", "transformer"):
        assert result[kind]["steps"] >= 1 and result[kind]["sampling"]["maps_per_second"] > 0
        assert 0 < result[kind]["nll_per_code_nats"] < 2 * math.log(16)
        assert result[kind]["bits_per_dim"] > result[kind]["decoder_bits_per_dim"] > 0
    assert result["speedup"] > 0 and result["speedup_cpu_seconds"] > 0
    assert (tmp_path / result["samples_png"]).is_file()
