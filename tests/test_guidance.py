"""Tests of class-conditional sampling with classifier-free guidance (the null class, label dropout, the guided batch
forward through the key/value cache) and of the VQ-VAE identity a prior records (models/code_priors.py)."""

import json
import logging
import math
import re

import pytest
import torch
from PIL import Image
from transformers import AutoModelForCausalLM

import hf_autoencoders as H
from hf_autoencoders.models import code_priors as C
from hf_autoencoders.plots import image_grid

K, GRID, CLASSES = 16, 4, 3
TINY = dict(num_embeddings=K, grid_size=GRID, hidden_size=32, num_layers=2, num_heads=2)


def tiny_prior(seed: int = 0, sharpen: float = 1.0, **overrides):
    torch.manual_seed(seed)
    prior = AutoModelForCausalLM.from_config(C.transformer_prior_config(**{**TINY, **overrides})).eval().double()
    with torch.no_grad():
        prior.transformer.wte.weight.mul_(sharpen)  # (tied) output layer away from uniform, so that guidance shows
    return prior


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_vqvae(seed: int = 0) -> H.VQVAEModel:
    torch.manual_seed(seed)
    config = H.VQVAEConfig(image_size=16, num_channels=1, hidden_size=8, num_embeddings=K, embedding_dim=4,
                           num_residual_blocks=1)
    return H.VQVAEModel(config).eval()  # 16x16 images, 2 downsamplings: 4x4 codes


# ------------------------------------------------------------------------------------------ the null class


def test_the_null_class_is_a_vocabulary_entry_recorded_in_the_config():
    config = C.transformer_prior_config(K, GRID, num_classes=CLASSES)
    assert config.class_dropout == C.DEFAULT_CLASS_DROPOUT > 0
    assert C.null_class_token(config) == K + 1 + CLASSES == config.vocab_size - 1
    assert C.is_transformer_prior_config(config)
    assert C.prefix_tokens(config, 2, null_class=True).tolist() == [[K, K + 1 + CLASSES]] * 2
    # Without label dropout, or without classes, there is no null class (and no vocabulary entry for it).
    for kwargs in (dict(num_classes=CLASSES, class_dropout=0.0), dict()):
        plain = C.transformer_prior_config(K, GRID, **kwargs)
        assert C.null_class_token(plain) is None and plain.vocab_size == K + 1 + plain.num_classes
        assert C.is_transformer_prior_config(plain)
    # A prior saved before guidance existed: no class_dropout field at all.
    old = C.transformer_prior_config(K, GRID, num_classes=CLASSES, class_dropout=0.0)
    del old.class_dropout
    assert C.null_class_token(old) is None and C.is_transformer_prior_config(old)
    for kwargs, message in [(dict(class_dropout=1.0, num_classes=2), r"\[0, 1\)"),
                            (dict(class_dropout=-0.1, num_classes=2), r"\[0, 1\)"),
                            (dict(class_dropout=0.1), "class-conditional"),
                            (dict(vqvae_name_or_path="/abs/path/vqvae"), "Hub id")]:
        with pytest.raises(ValueError, match=message):
            C.transformer_prior_config(K, GRID, **kwargs)


def test_label_dropout_replaces_the_class_token_at_the_rate():
    config = C.transformer_prior_config(K, GRID, num_classes=CLASSES, class_dropout=0.25)
    codes = torch.randint(0, K, (4000, GRID, GRID), generator=generator())
    tokens = C.code_tokens(config, codes, torch.randint(0, CLASSES, (4000,), generator=generator(1)))
    dropped = C.drop_class_tokens(config, tokens, generator(2))
    changed = (dropped != tokens).any(1)
    assert torch.equal(dropped[~changed], tokens[~changed]) and (dropped[changed, 1] == K + 1 + CLASSES).all()
    assert torch.equal(dropped[:, [0, *range(2, tokens.shape[1])]], tokens[:, [0, *range(2, tokens.shape[1])]])
    assert abs(changed.float().mean().item() - 0.25) < 0.03
    assert torch.equal(dropped, C.drop_class_tokens(config, tokens, generator(2)))  # the generator decides
    plain = C.transformer_prior_config(K, GRID, num_classes=CLASSES, class_dropout=0.0)
    assert C.drop_class_tokens(plain, tokens) is tokens


# ---------------------------------------------------------------------------------------------- guided sampling


def test_guidance_scale_one_is_plain_conditional_sampling():
    """s = 1 samples what the same network without a null class samples (plain p(c | y)), for every option; the
    guidance mix is exactly the conditional logits at s = 1."""
    prior = tiny_prior(0, sharpen=5.0, num_classes=CLASSES)
    plain = tiny_prior(0, num_classes=CLASSES, class_dropout=0.0)
    with torch.no_grad():  # the same network, without the null class's vocabulary entry
        plain.transformer.wte.weight.copy_(prior.transformer.wte.weight[:-1])
        for name, parameter in plain.named_parameters():
            if "wte" not in name and "lm_head" not in name:
                parameter.copy_(prior.get_parameter(name))
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    for options in (dict(), dict(temperature=0.0), dict(temperature=0.8, top_k=5, top_p=0.9)):
        guided = C.sample_codes(prior, 6, generator(3), class_labels=labels, guidance_scale=1.0, **options)
        assert torch.equal(guided, C.sample_codes(plain, 6, generator(3), class_labels=labels, **options)), options
    scores = torch.randn(4, K)
    torch.testing.assert_close(C.ClassifierFreeGuidance(1.0)(None, scores.clone()), scores.chunk(2)[0].repeat(2, 1),
                               rtol=0, atol=0)
    conditional, unconditional = torch.randn(2, 3, K)
    torch.testing.assert_close(C.guided_logits(conditional, unconditional, 2.5),
                               unconditional + 2.5 * (conditional - unconditional))


@pytest.mark.parametrize("guidance_scale", [0.0, 2.5])
def test_the_guided_batch_forward_equals_two_separate_forwards(guidance_scale):
    """Greedy guided decoding (the 2n conditional and unconditional sequences in one batch through the cache) picks,
    at every position, the argmax of l_u + s (l_c - l_u) computed from two separate teacher-forced forwards of the
    finished maps: one with the classes, one with the null class."""
    prior = tiny_prior(1, num_classes=CLASSES)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    for use_cache in (True, False):
        maps = C.sample_codes(prior, 6, temperature=0.0, class_labels=labels, guidance_scale=guidance_scale,
                              use_cache=use_cache)
        with torch.no_grad():
            conditional = prior(C.code_tokens(prior.config, maps, labels)[:, :-1]).logits[:, 1:, :K]
            null = C.prefix_tokens(prior.config, 6, null_class=True)
            unconditional = prior(torch.cat([null, maps.flatten(1)], 1)[:, :-1]).logits[:, 1:, :K]
        expected = (unconditional + guidance_scale * (conditional - unconditional)).argmax(-1)
        assert torch.equal(maps.flatten(1), expected), use_cache
    # Guidance changes what is sampled (so the test above can fail).
    assert not torch.equal(maps, C.sample_codes(prior, 6, temperature=0.0, class_labels=labels, guidance_scale=1.0))


def test_guided_sampling_is_reproducible_and_leaves_the_global_rng_alone():
    prior = tiny_prior(2, sharpen=3.0, num_classes=CLASSES)
    state = torch.get_rng_state()
    first = C.sample_codes(prior, 5, generator(7), class_labels=[0, 1, 2, 0, 1], guidance_scale=3.0, top_k=8)
    assert torch.equal(torch.get_rng_state(), state)
    again = C.sample_codes(prior, 5, generator(7), class_labels=[0, 1, 2, 0, 1], guidance_scale=3.0, top_k=8)
    uncached = C.sample_codes(prior, 5, generator(7), class_labels=[0, 1, 2, 0, 1], guidance_scale=3.0, top_k=8,
                              use_cache=False)
    batched = C.sample_codes(prior, 5, generator(7), class_labels=[0, 1, 2, 0, 1], guidance_scale=3.0, top_k=8,
                             batch_size=5)
    assert torch.equal(first, again) and torch.equal(first, uncached) and torch.equal(first, batched)
    other = C.sample_codes(prior, 5, generator(8), class_labels=[0, 1, 2, 0, 1], guidance_scale=3.0, top_k=8)
    assert not torch.equal(first, other)
    vqvae = tiny_vqvae()
    prior.config.vqvae_identity = vqvae.identity()
    images = vqvae.sample(5, generator(7), prior=prior.float(), class_labels=[0, 1, 2, 0, 1], guidance_scale=3.0,
                          top_k=8)
    assert images.shape == (5, 1, 16, 16)
    assert torch.equal(images, vqvae.sample(5, generator(7), prior=prior, class_labels=[0, 1, 2, 0, 1],
                                            guidance_scale=3.0, top_k=8))


def test_default_guidance_applies_only_where_the_prior_has_a_null_class(monkeypatch):
    guided, plain = tiny_prior(0, num_classes=CLASSES), tiny_prior(0, num_classes=CLASSES, class_dropout=0.0)
    assert C.resolve_guidance_scale(guided, None) == C.DEFAULT_GUIDANCE_SCALE
    assert C.resolve_guidance_scale(plain, None) == 1.0
    assert C.resolve_guidance_scale(tiny_prior(0), None) == 1.0
    monkeypatch.setattr(C, "DEFAULT_GUIDANCE_SCALE", 4.0)
    labels = [0, 1, 2]
    assert torch.equal(C.sample_codes(guided, 3, generator(), class_labels=labels),
                       C.sample_codes(guided, 3, generator(), class_labels=labels, guidance_scale=4.0))
    C.sample_codes(plain, 3, generator(), class_labels=labels)  # no null class: the default is no guidance


def test_bad_guidance_and_labels_get_clear_errors():
    guided = tiny_prior(0, num_classes=CLASSES)
    for scale in (float("nan"), float("inf"), -1.0, "2", True):
        with pytest.raises(ValueError, match="guidance_scale must be a finite number >= 0"):
            C.sample_codes(guided, 2, class_labels=0, guidance_scale=scale)
    with pytest.raises(ValueError, match="temperature must be a finite number"):
        C.sample_codes(guided, 2, class_labels=0, temperature=float("inf"))
    with pytest.raises(ValueError, match="unconditional .trained without labels"):
        C.sample_codes(tiny_prior(0), 2, guidance_scale=2.0)
    with pytest.raises(ValueError, match="no null class"):
        C.sample_codes(tiny_prior(0, num_classes=CLASSES, class_dropout=0.0), 2, class_labels=0, guidance_scale=2.0)
    torch.manual_seed(0)
    pixelcnn = H.PixelCNNPriorModel(H.PixelCNNPriorConfig(num_embeddings=K, grid_size=GRID, hidden_size=8,
                                                          num_layers=2, kernel_size=3, num_classes=CLASSES))
    with pytest.raises(ValueError, match="PixelCNN prior has no null class"):
        C.sample_codes(pixelcnn, 2, class_labels=0, guidance_scale=2.0)
    C.sample_codes(pixelcnn, 1, class_labels=0, guidance_scale=1.0)
    for labels, message in [(3, r"lie in \[0, num_classes=3\)"), (-1, r"lie in \[0, num_classes=3\)"),
                            ([0, 5], r"lie in \[0, num_classes=3\)"), ("3", "got str"), (["a", "b"], "got list"),
                            (torch.tensor([0.0, 1.0]), "got torch.float32"), ([0, 1, 2], r"shape \(2,\)")]:
        with pytest.raises(ValueError, match=message):
            C.sample_codes(guided, 2, class_labels=labels)
    with pytest.raises(ValueError, match="trained without labels"):
        C.sample_codes(tiny_prior(0), 2, class_labels=1)
    with pytest.raises(ValueError, match="guidance_scale need a prior"):
        tiny_vqvae().sample(2, guidance_scale=2.0)


# ------------------------------------------------------------------------------------------ the VQ-VAE identity


def test_vqvae_identity_follows_the_encoder_and_codebook_not_the_decoder(tmp_path):
    vqvae = tiny_vqvae(0)
    identity = vqvae.identity()
    assert identity.startswith("sha256:") and len(identity) == 7 + 16
    assert tiny_vqvae(1).identity() != identity  # retrained: same K and grid, other weights
    vqvae.save_pretrained(tmp_path / "vqvae")
    assert H.VQVAEModel.from_pretrained(tmp_path / "vqvae").identity() == identity
    with torch.no_grad():
        next(vqvae.decoder.parameters()).add_(1.0)  # a decoder fine-tuned: the codes mean what they meant
    assert vqvae.identity() == identity
    with torch.no_grad():
        vqvae.quantizer.codebook[0].add_(1e-3)
    assert vqvae.identity() != identity
    fsq = H.VQVAEModel(H.VQVAEConfig(image_size=16, num_channels=1, hidden_size=8, embedding_dim=4, quantizer="fsq",
                                     fsq_levels=(4, 4), num_residual_blocks=1))
    assert fsq.identity() != H.VQVAEModel(fsq.config).identity()  # no codebook: the projections and encoder differ


@pytest.mark.parametrize("kind", ["transformer", "pixelcnn"])
def test_a_prior_of_another_vqvae_is_refused_even_at_equal_k_and_grid(kind, caplog):
    vqvae, retrained = tiny_vqvae(0), tiny_vqvae(1)
    if kind == "transformer":
        prior = tiny_prior(0, num_classes=CLASSES, vqvae_identity=vqvae.identity()).float()
    else:
        torch.manual_seed(0)
        prior = H.PixelCNNPriorModel(H.PixelCNNPriorConfig(num_embeddings=K, grid_size=GRID, hidden_size=8,
                                                           num_layers=2, kernel_size=3, num_classes=CLASSES,
                                                           vqvae_identity=vqvae.identity())).eval()
    assert vqvae.check_prior(prior) == kind
    vqvae.sample(2, generator(), prior=prior, class_labels=1)
    with pytest.raises(ValueError, match="another VQ-VAE.*trained again in the same folder"):
        retrained.check_prior(prior)
    with pytest.raises(ValueError, match="another VQ-VAE"):
        retrained.sample(2, generator(), prior=prior, class_labels=1)
    # A prior saved before identities were recorded: a warning that it cannot be checked, then it samples.
    prior.config.vqvae_identity = None
    C.logger.warning_once.cache_clear()
    with caplog.at_level(logging.WARNING):
        retrained.sample(2, generator(), prior=prior, class_labels=1)
    assert "records no VQ-VAE identity" in caplog.text
    # A VQ-VAE in reduced precision cannot be compared: a warning, not a refusal.
    prior.config.vqvae_identity = vqvae.identity()
    C.logger.warning_once.cache_clear()
    with caplog.at_level(logging.WARNING):
        assert vqvae.to(torch.bfloat16).check_prior(prior) == kind
    assert "reduced precision" in caplog.text


# ---------------------------------------------------------------------------- label dropout, trained: a toy task


@pytest.fixture(scope="module")
def toy_prior(tmp_path_factory):
    """A tiny class-conditional prior trained with label dropout (PriorTrainer) on maps whose every code is, with
    probability 0.4, one of its class's two codes {2y, 2y + 1} and otherwise one of the ten shared codes 6 .. 15: the
    class decides the codes, but weakly, so that guidance has something to do."""
    from hf_autoencoders.training.prior import CodeDataset, fit_prior

    g = generator(0)
    labels = torch.randint(0, CLASSES, (1200,), generator=g)
    own = 2 * labels[:, None, None] + torch.randint(0, 2, (1200, GRID, GRID), generator=g)
    shared = torch.randint(6, K, (1200, GRID, GRID), generator=g)
    codes = torch.where(torch.rand(1200, GRID, GRID, generator=g) < 0.4, own, shared)
    torch.manual_seed(0)
    prior = AutoModelForCausalLM.from_config(C.transformer_prior_config(**TINY, num_classes=CLASSES,
                                                                         class_dropout=0.2))
    fit_prior(prior, CodeDataset(codes.to(torch.uint8), labels), output_dir=tmp_path_factory.mktemp("toy"),
              max_steps=150, learning_rate=5e-3, per_device_train_batch_size=64, warmup_steps=10, seed=0)
    return prior.eval()


def test_class_conditional_samples_follow_the_class_and_guidance_sharpens_it(toy_prior):
    labels = torch.arange(300) % CLASSES
    shares = {}
    for scale in (0.0, 1.0, 3.0):
        maps = C.sample_codes(toy_prior, 300, generator(1), class_labels=labels, guidance_scale=scale,
                              temperature=1.0).flatten(1)
        own = (maps // 2 == labels[:, None]) & (maps < 2 * CLASSES)
        other = (maps < 2 * CLASSES) & ~own
        shares[scale] = {"first": own[:, 0].float().mean().item(), "own": own.float().mean().item(),
                         "other": other.float().mean().item()}
        predicted = torch.stack([((maps // 2 == y) & (maps < 2 * CLASSES)).sum(1) for y in range(CLASSES)], 1)
        if scale >= 1:  # the class most of a map's class codes belong to is the one asked for, far above chance
            assert (predicted.argmax(1) == labels).float().mean() > 0.9, scale
    # Unguided (s = 1): about the training share of own-class codes (0.4), few of another class's. Unconditional
    # (s = 0, the null class): no class preferred, own codes a third of the class codes.
    assert 0.3 < shares[1.0]["own"] < 0.5 and shares[1.0]["other"] < 0.05
    assert abs(3 * shares[0.0]["own"] - (shares[0.0]["own"] + shares[0.0]["other"])) < 0.1
    # Guided (s = 3): where the codes before do not yet give the class away (the first code), own-class codes come
    # out far more often than their share p(c | y); later, the context tells the class to both halves of the guidance.
    assert 0.25 < shares[1.0]["first"] < 0.55 and shares[3.0]["first"] > 0.75
    assert shares[3.0]["own"] > shares[1.0]["own"] and shares[3.0]["other"] <= shares[1.0]["other"] + 0.01


def test_label_dropout_happens_in_training_only(toy_prior, monkeypatch):
    """PriorTrainer drops classes in its training steps, never in evaluation (the eval loss is of the true classes)."""
    from hf_autoencoders.training import prior as P

    seen = []
    original = C.drop_class_tokens
    monkeypatch.setattr(C, "drop_class_tokens", lambda config, ids, generator=None: seen.append(1) or
                        original(config, ids, generator))
    codes = P.CodeDataset(torch.randint(0, K, (64, GRID, GRID), dtype=torch.uint8), torch.arange(64) % CLASSES)
    trainer = P.fit_prior(copy_of(toy_prior), codes, codes, output_dir="unused-toy", max_steps=2,
                          per_device_train_batch_size=32)
    assert len(seen) == 2
    trainer.evaluate()
    assert len(seen) == 2


def copy_of(prior):
    import copy

    return copy.deepcopy(prior).train()


# ------------------------------------------------------------------------------------ the commands, end to end


PRIOR_RUN = ["--hidden_size", "16", "--num_layers", "1", "--num_heads", "2", "--max_train_samples", "256",
             "--max_eval_samples", "64", "--num_samples", "20", "--max_steps", "3", "--save_strategy", "no",
             "--disable_tqdm", "true", "--report_to", "none", "--do_train", "--do_eval"]


def digits_vqvae(folder, seed: int = 0):
    """A tiny VQ-VAE of 28x28 digits (7x7 maps of K = 16 codes) whose codebook is k-means-initialised on 128 digits,
    saved in `folder`."""
    from hf_autoencoders.data import ImageCollator, load_image_dataset

    digits = load_image_dataset(None)
    torch.manual_seed(seed)
    vqvae = H.VQVAEModel(H.VQVAEConfig(hidden_size=8, num_embeddings=K, embedding_dim=4, num_residual_blocks=1,
                                       kmeans_init=True))
    with torch.no_grad():
        vqvae(ImageCollator()([digits.train[i] for i in range(128)])["pixel_values"])
    vqvae.eval().save_pretrained(folder)
    return vqvae


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`hf-autoencoders train-prior` without --prior_type on the labelled embedded digits: a class-conditional prior
    and an unconditional one, of a tiny VQ-VAE; and another VQ-VAE of the same K and grid (trained again)."""
    from hf_autoencoders.cli import main as cli_main

    root = tmp_path_factory.mktemp("guidance_runs")
    digits_vqvae(root / "vqvae")
    digits_vqvae(root / "other_vqvae", seed=1)
    cli_main(["train-prior", "--vqvae", str(root / "vqvae"), "--output_dir", str(root / "prior"),
              "--class_conditional", *PRIOR_RUN])
    cli_main(["train-prior", "--vqvae", str(root / "vqvae"), "--output_dir", str(root / "unconditional"),
              "--code_cache_dir", str(root / "prior" / "code_cache"), *PRIOR_RUN])
    return root


def test_train_prior_trains_the_transformer_by_default(runs):
    prior = AutoModelForCausalLM.from_pretrained(runs / "prior")
    assert prior.config.model_type == "gpt2" and prior.config.num_classes == 10
    assert prior.config.class_dropout == C.DEFAULT_CLASS_DROPOUT and C.supports_guidance(prior)
    assert prior.config.vqvae_identity == H.VQVAEModel.from_pretrained(runs / "vqvae").identity()
    assert prior.config.vqvae_name_or_path is None  # a local folder is not recorded
    assert AutoModelForCausalLM.from_pretrained(runs / "unconditional").config.num_classes == 0
    card = (runs / "prior" / "README.md").read_text()
    assert "pipeline_tag: unconditional-image-generation" in card and "inference: false" in card
    assert "text-generation" not in card and str(runs) not in card
    assert "one row per class (guidance 1.5" in card and "class_labels=list(range(10))" in card


def test_sample_command_with_a_class_label_and_guidance(runs, tmp_path):
    from hf_autoencoders.cli import main as cli_main

    for labels, rows in ((["3"], 1), (["1", "5"], 2), (["all"], 10)):
        output = tmp_path / f"{'-'.join(labels)}.png"
        cli_main(["sample", str(runs / "vqvae"), "--prior", str(runs / "prior"), "--class_label", *labels,
                  "--guidance_scale", "2.0", "--num_samples", "8", "--output_file", str(output)])
        height = Image.open(output).size[1]
        per_row = 8 if rows == 1 else -(-8 // rows)  # ceil
        grid = image_grid(torch.zeros(per_row * max(rows, 1), 1, 28, 28), nrow=per_row, scale=2)
        assert grid.shape[0] < height < grid.shape[0] + 40, labels  # the grid and a title line
    cli_main(["sample", str(runs / "vqvae"), "--prior", str(runs / "unconditional"), "--num_samples", "4",
              "--output_file", str(tmp_path / "unconditional.png")])


@pytest.mark.parametrize("args, message", [
    (["--prior", "{root}/unconditional", "--class_label", "3"], "was trained without labels"),
    (["--prior", "{root}/unconditional", "--guidance_scale", "2"], "unconditional .trained without labels"),
    (["--prior", "{root}/prior", "--class_label", "10"], r"--class_label must lie in \[0, 10\)"),
    (["--prior", "{root}/prior", "--class_label", "-1"], r"--class_label must lie in \[0, 10\)"),
    (["--prior", "{root}/prior", "--class_label", "cat"], "takes class numbers in"),
    (["--prior", "{root}/prior", "--guidance_scale", "nan"], "--guidance_scale must be a finite number"),
    (["--prior", "{root}/prior", "--guidance_scale", "inf"], "--guidance_scale must be a finite number"),
    (["--prior", "{root}/prior", "--temperature", "inf"], "--temperature must be a finite number"),
    (["--guidance_scale", "2"], "apply to sampling with a --prior"),
    (["--prior", "{root}/prior", "--model_is_other"], "another VQ-VAE"),
])
def test_sample_command_refuses_bad_input_with_one_line(runs, tmp_path, capsys, args, message):
    from hf_autoencoders.cli import main as cli_main

    model = runs / "vqvae"
    if "--model_is_other" in args:  # a VQ-VAE of the same K and grid, trained again
        model, args = runs / "other_vqvae", [a for a in args if a != "--model_is_other"]
    with pytest.raises(SystemExit) as exit:
        cli_main(["sample", str(model), *[a.format(root=runs) for a in args], "--output_file",
                  str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the progress bars of loading the models
    assert exit.value.code == 2 and last.startswith("error: ") and err.count("error: ") == 1, err
    assert "Traceback" not in err and re.search(message, last), err
    assert not (tmp_path / "x.png").exists()


def test_evaluate_refuses_a_prior_of_another_vqvae(runs, capsys):
    from hf_autoencoders.cli import main as cli_main

    with pytest.raises(SystemExit):
        cli_main(["evaluate", str(runs / "other_vqvae"), "--prior", str(runs / "prior"), "--fid",
                  "--max_eval_samples", "16"])
    assert "another VQ-VAE" in capsys.readouterr().err


def test_resuming_a_prior_run_on_a_vqvae_trained_again_is_refused(runs, tmp_path, capsys):
    import shutil

    from hf_autoencoders.cli import main as cli_main

    vqvae, out = tmp_path / "vqvae", tmp_path / "prior"
    shutil.copytree(runs / "vqvae", vqvae)
    flags = ["train-prior", "--vqvae", str(vqvae), "--output_dir", str(out), "--class_conditional",
             *[f for f in PRIOR_RUN if f not in ("--do_eval",)]]
    flags[flags.index("--save_strategy") + 1] = "steps"
    cli_main([*flags, "--save_steps", "3"])
    shutil.rmtree(vqvae)
    shutil.copytree(runs / "other_vqvae", vqvae)  # the VQ-VAE trained again in its folder
    flags[flags.index("--max_steps") + 1] = "6"
    with pytest.raises(SystemExit):
        cli_main([*flags, "--save_steps", "3", "--resume_from_checkpoint", "latest"])
    assert "was trained on the codes of another VQ-VAE" in capsys.readouterr().err


def test_evaluate_generability(runs, tmp_path):
    from hf_autoencoders.cli import main as cli_main

    output = tmp_path / "generability.json"
    cli_main(["evaluate", str(runs / "vqvae"), "--generability", "--generability_steps", "3", "--max_eval_samples",
              "32", "--max_train_samples", "256", "--classifier_epochs", "1", "--num_importance_samples", "0",
              "--output_file", str(output)])
    metrics = json.loads(output.read_text())
    for key in ("generability_sample_fd_domain", "generability_sample_precision_domain",
                "generability_sample_recall_domain", "generability_bits_per_image"):
        assert math.isfinite(metrics[key]), key
    assert 0 < metrics["generability_bits_per_image"] <= 49 * math.log2(K) * 1.5
    assert "3 steps" in metrics["generability_prior"] and "class-conditional" in metrics["generability_prior"]


def test_generability_is_a_vqvae_figure():
    from hf_autoencoders.training import parse_args, run_training

    with pytest.raises(ValueError, match="has no codes"):
        run_training(*parse_args(["--output_dir", "unused-out", "--model_type", "ae", "--generability",
                                  "--do_train", "--do_eval"]))
    with pytest.raises(ValueError, match="add --do_eval"):
        run_training(*parse_args(["--output_dir", "unused-out", "--generability", "--do_train"]))


def test_the_prior_card_snippet_runs_with_the_recorded_hub_id(runs, tmp_path, monkeypatch):
    """The card of a prior whose VQ-VAE has a Hub id loads both by id and samples one image per class; executed with
    the two ids mapped to the local folders (no network here)."""
    from transformers import AutoModel

    from hf_autoencoders.hub import write_model_card

    prior = AutoModelForCausalLM.from_pretrained(runs / "prior")
    prior.config.vqvae_name_or_path = "someone/vqvae"
    card = write_model_card(tmp_path, prior.config, "digits", repo_id="someone/prior").read_text()
    code = card.split("```python\n", 1)[1].split("```", 1)[0]
    assert 'from_pretrained("someone/vqvae"' in code and 'from_pretrained("someone/prior")' in code
    folders = {"someone/vqvae": runs / "vqvae", "someone/prior": runs / "prior"}
    for auto in (AutoModel, AutoModelForCausalLM):
        original = auto.from_pretrained.__func__
        monkeypatch.setattr(auto, "from_pretrained", classmethod(
            lambda cls, name, *a, _original=original, **k: _original(cls, folders.get(name, name), *a, **k)))
    scope = {}
    exec(code, scope)
    assert scope["images"].shape == (10, 1, 28, 28)
