"""The tokenizer recipe: perceptual distances, the discriminator and its losses, the adaptive weight, EMA, the
collapse guard, and all of them inside the Trainer (gradients, precision, resuming, what is saved)."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from hf_autoencoders import AEConfig, AEModel, VAEConfig, VAEModel, VQVAEConfig, VQVAEModel
from hf_autoencoders.data import ImageCollator, ImageTensorDataset
from hf_autoencoders.evaluation import SmallCNN
from hf_autoencoders.evaluation.perceptual import (
    LPIPS,
    UnitDistance,
    CNNPerceptual,
    lpips_network,
    lpips_state_dict,
    offline_perceptual_network,
    rotations,
)
from hf_autoencoders.training import AutoencoderTrainer
from hf_autoencoders.training.adversarial import (
    CollapseGuard,
    LeCAM,
    PatchDiscriminator,
    adaptive_weight,
    discriminator_loss,
    generator_loss,
    r1_penalty,
)
from hf_autoencoders.training.arguments import training_arguments
from hf_autoencoders.training.ema import ModelEMA
from hf_autoencoders.training.recipe import RECIPE_FILES, check_recipe_resume, decoder_output_layer
from hf_autoencoders.training.trainer import TrainingDivergedError

FAMILIES = {"ae": (AEConfig, AEModel), "vae": (VAEConfig, VAEModel), "vqvae": (VQVAEConfig, VQVAEModel)}


def tiny_model(family="vqvae", backbone="conv", image_size=16, seed=0):
    config_class, model_class = FAMILIES[family]
    extra = {"num_embeddings": 16, "embedding_dim": 8} if family == "vqvae" else {"latent_dim": 8}
    if backbone == "vit":
        extra.update(patch_size=4)
    torch.manual_seed(seed)
    return model_class(config_class(image_size=image_size, num_channels=3, backbone=backbone, hidden_size=16, **extra))


def tiny_data(n=64, image_size=16, seed=0, brightness=1.0):
    generator = torch.Generator().manual_seed(seed)
    base = brightness * torch.rand(n, 1, image_size // 4, image_size // 4, generator=generator)  # smooth images
    images = torch.nn.functional.interpolate(base, size=image_size, mode="bilinear").repeat(1, 3, 1, 1)
    images = (images * 255).round().to(torch.uint8)
    return ImageTensorDataset(images, torch.randint(10, (n,), generator=generator))


def random_perceptual(num_channels=3, seed=0):
    torch.manual_seed(seed)
    return CNNPerceptual(SmallCNN(num_channels, 4, width=8), "rotation", "rotation: random test network")


def trainer_for(model, tmp_path, data=None, callbacks=None, perceptual=True, **fields):
    fields = {"max_steps": 4, "per_device_train_batch_size": 16, "logging_steps": 1, "disc_channels": 8,
              "seed": 0, **fields}
    data = data or tiny_data()
    return AutoencoderTrainer(model=model, args=training_arguments(tmp_path, **fields), data_collator=ImageCollator(),
                              train_dataset=data, eval_dataset=data, callbacks=callbacks,
                              perceptual_network=random_perceptual() if perceptual else None)


def batch(n=8, image_size=16):
    return ImageCollator()([tiny_data(n, image_size)[i] for i in range(n)])


# ------------------------------------------------------------------------------------------- perceptual distance


def direct_distance(network, x, y):
    """The perceptual distance as its formula reads: unit-normalised maps, squared differences, channel weights."""
    terms = []
    for depth, (f, g) in enumerate(zip(network.features(x), network.features(y))):
        f, g = (t / (t.pow(2).sum(1, keepdim=True).sqrt() + 1e-10) for t in (f, g))
        weight = network.channel_weights(depth)
        weight = torch.ones(f.shape[1]) if weight is None else weight
        terms.append(((f - g).pow(2) * weight.view(1, -1, 1, 1)).sum(1).mean((1, 2)))
    return torch.stack(terms).sum(0) / (len(terms) if network.reduction == "mean" else 1)


@pytest.mark.parametrize("build", [random_perceptual, LPIPS], ids=["cnn", "lpips"])
def test_perceptual_distance_is_its_formula(build):
    network = build()
    torch.manual_seed(0)
    for p in network.parameters():
        p.data.abs_()  # LPIPS's heads are non-negative
    x = batch()["pixel_values"]
    y = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    torch.testing.assert_close(network(y, x), direct_distance(network, y, x), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_unit_distance_gradient_is_autograds_and_finite_where_the_maps_are_zero(weighted):
    torch.manual_seed(0)
    f = torch.randn(7, 5, dtype=torch.double).relu()
    target = torch.randn(7, 5, dtype=torch.double)
    target = target / target.norm(dim=-1, keepdim=True)
    weight = torch.rand(5, dtype=torch.double) if weighted else None
    torch.autograd.gradcheck(lambda rows: UnitDistance.apply(rows, target, weight), (f.requires_grad_(True),))
    zero, target = f.detach().float(), target.float()  # float32, where eps^2 underflows
    zero[0] = 0  # a position where every channel is 0 (a ReLU map's dark patch): autograd's sqrt gives NaN
    zero.requires_grad_(True)
    weight = None if weight is None else weight.float()
    distance = UnitDistance.apply(zero, target, weight)
    distance.sum().backward()
    w = torch.ones(5) if weight is None else weight
    assert torch.allclose(distance[0], (w * target[0] ** 2).sum())
    assert torch.isfinite(zero.grad).all() and (zero.grad[0] == 0).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a difference of terms near 1: never in bfloat16
        torch.testing.assert_close(UnitDistance.apply(zero, target, weight), distance)


def test_perceptual_distance_is_zero_on_equal_images_and_differentiable():
    network = random_perceptual()
    x = batch()["pixel_values"]
    assert torch.allclose(network(x, x), torch.zeros(len(x)), atol=1e-6)
    y = x.flip(-1).requires_grad_(True)
    distance = network(y, x)
    assert distance.shape == (len(x),) and (distance > 0).all() and (distance <= 4).all()
    distance.sum().backward()
    assert y.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in network.parameters())
    network.train()
    assert not network.training  # a fixed network stays in eval mode


@pytest.mark.parametrize("family", ["ae", "vae", "vqvae"])
@pytest.mark.parametrize("backbone", ["mlp", "conv", "vit"])
def test_perceptual_gradient_reaches_the_decoders_last_layer(tmp_path, family, backbone):
    """The loss the Trainer backpropagates carries the perceptual term's gradient to the decoder's last layer (a
    perceptual loss computed under no_grad, as in diffusers' train_autoencoderkl.py, leaves it zero)."""
    model = tiny_model(family, backbone)
    trainer = trainer_for(model, tmp_path, perceptual_weight=1.0)
    inputs = trainer._prepare_inputs(batch())
    model.train()
    weight = decoder_output_layer(model)
    torch.manual_seed(0)  # the same draw of a VAE's latents in both
    pixel_only, = torch.autograd.grad(model(**inputs).loss, weight)
    torch.manual_seed(0)
    with_perceptual, = torch.autograd.grad(trainer.compute_loss(model, inputs), weight)
    perceptual_part = with_perceptual - pixel_only
    assert perceptual_part.abs().sum() > 0 and torch.isfinite(perceptual_part).all()


def test_rotation_network_trains_and_is_cached(tmp_path):
    data = tiny_data(32)
    images = torch.stack([data[i]["pixel_values"] for i in range(32)])
    turned, targets = rotations(images[:2].float())
    assert turned.shape == (8, 3, 16, 16) and targets.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.equal(turned[2], torch.rot90(images[0].float(), 1, dims=(1, 2)))
    first = offline_perceptual_network("rotation", images, cache_dir=tmp_path, epochs=1, width=8, progress=False)
    assert "rotation" in first.description and "not comparable with published LPIPS" in first.description
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    second = offline_perceptual_network("rotation", images, cache_dir=tmp_path, epochs=1, width=8, progress=False)
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="no labels|none"):
        offline_perceptual_network("domain", images, None, cache_dir=tmp_path, epochs=1, width=8, progress=False)


# ------------------------------------------------------------------------------------------------------ LPIPS


def published_files(folder, seed=0):
    """Random weights written under the published files' names and keys: torchvision's VGG16 (with its classifier)
    and lpips' v0.1 heads."""
    torch.manual_seed(seed)
    network = LPIPS()
    for p in network.parameters():
        p.data.normal_()
    state = network.state_dict()
    trunk = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    trunk.update({"classifier.0.weight": torch.zeros(2, 2), "classifier.0.bias": torch.zeros(2)})
    heads = {k: v for k, v in state.items() if k.startswith("lin")}
    folder.mkdir(exist_ok=True)
    torch.save(trunk, folder / "vgg16-397923af.pth")
    torch.save(heads, folder / "vgg.pth")
    return network, trunk, heads


def test_lpips_loads_the_published_layouts(tmp_path):
    reference, trunk, heads = published_files(tmp_path / "weights")
    network = lpips_network(tmp_path / "weights", device="cpu")
    for name, value in reference.state_dict().items():
        assert torch.equal(network.state_dict()[name], value), name
    x = batch()["pixel_values"]
    assert torch.allclose(network(x, x), torch.zeros(len(x)), atol=1e-6)
    # a whole lpips.LPIPS(net="vgg") state dict: slices, duplicated lins, the scaling layer's constants
    slices = {1: range(0, 4), 2: range(4, 9), 3: range(9, 16), 4: range(16, 23), 5: range(23, 30)}
    whole = {"scaling_layer.shift": torch.zeros(1, 3, 1, 1), "scaling_layer.scale": torch.ones(1, 3, 1, 1)}
    for key, value in trunk.items():
        if key.startswith("features."):
            index = int(key.split(".")[1])
            s = next(s for s, r in slices.items() if index in r)
            whole[f"net.slice{s}.{key.removeprefix('features.')}"] = value
    for key, value in heads.items():
        whole[key] = value
        whole[f"lins.{key[3]}.{key[5:]}"] = value
    torch.save(whole, tmp_path / "lpips_vgg.pth")
    loaded = lpips_network(tmp_path / "lpips_vgg.pth", device="cpu")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in reference.state_dict().items())
    assert set(lpips_state_dict(whole)) == set(reference.state_dict())


def test_lpips_weights_with_wrong_or_missing_keys_are_refused(tmp_path):
    _, trunk, heads = published_files(tmp_path / "ok")
    missing = tmp_path / "missing"
    missing.mkdir()
    torch.save({k: v for k, v in trunk.items() if k != "features.28.weight"}, missing / "vgg16-397923af.pth")
    torch.save(heads, missing / "vgg.pth")
    with pytest.raises(ValueError, match=r"1 missing: net\.features\.28\.weight.*none were loaded"):
        lpips_network(missing, device="cpu")
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    torch.save(trunk, renamed / "vgg16-397923af.pth")
    torch.save({k.replace("model.1", "model.0"): v for k, v in heads.items()}, renamed / "vgg.pth")
    with pytest.raises(ValueError, match=r"5 missing: lin0\.model\.1\.weight.*5 unexpected: lin0\.model\.0\.weight"):
        lpips_network(renamed, device="cpu")
    shaped = tmp_path / "shaped"
    shaped.mkdir()
    torch.save(trunk, shaped / "vgg16-397923af.pth")
    torch.save({**heads, "lin0.model.1.weight": torch.zeros(1, 32, 1, 1)}, shaped / "vgg.pth")
    with pytest.raises(ValueError, match=r"of the wrong shape: lin0\.model\.1\.weight \(1, 32, 1, 1\)"):
        lpips_network(shaped, device="cpu")
    with pytest.raises(FileNotFoundError, match="without vgg.pth"):
        (tmp_path / "half").mkdir()
        torch.save(trunk, tmp_path / "half" / "vgg16-397923af.pth")
        lpips_network(tmp_path / "half", device="cpu")


def test_lpips_is_not_downloaded_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE forbids downloading.*--lpips_weights"):
        lpips_network(device="cpu")


# ---------------------------------------------------------------------------------- discriminator and losses


def test_gan_losses_and_discriminator_shapes():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    assert discriminator_loss("hinge", real, fake).item() == pytest.approx(0.5 * (0.25 + 0.75))
    assert generator_loss("hinge", fake).item() == pytest.approx(0.75)
    softplus = torch.nn.functional.softplus
    assert discriminator_loss("non_saturating", real, fake).item() == pytest.approx(
        0.5 * (softplus(-real).mean() + softplus(fake).mean()).item())
    assert generator_loss("non_saturating", fake).item() == pytest.approx(softplus(-fake).mean().item())
    with pytest.raises(ValueError, match="hinge, non_saturating"):
        generator_loss("wasserstein", fake)
    assert PatchDiscriminator(3, 32)(torch.rand(2, 3, 32, 32)).shape == (2, 1, 2, 2)
    assert PatchDiscriminator(3, 256, num_layers=3)(torch.rand(1, 3, 256, 256)).shape == (1, 1, 30, 30)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in PatchDiscriminator(3, 32).modules())


def test_discriminator_stays_fp32_under_bf16(tmp_path):
    discriminator = PatchDiscriminator(3, 16, base_channels=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = discriminator(torch.rand(2, 3, 16, 16, dtype=torch.bfloat16))
    assert logits.dtype == torch.float32
    # inside a bf16 training run: the model computes in bf16, the discriminator in fp32, its weights stay fp32
    seen = []
    model = tiny_model()
    trainer = trainer_for(model, tmp_path, bf16=True, use_cpu=True, disc_weight=0.5, disc_start=1, perceptual=False)
    trainer.recipe.discriminator.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    decoded = []
    model.decoder.register_forward_hook(lambda m, i, o: decoded.append(o.dtype))
    trainer.train()
    assert seen and set(seen) == {torch.float32}
    assert torch.bfloat16 in decoded
    assert {p.dtype for p in trainer.recipe.discriminator.parameters()} == {torch.float32}
    assert {v.dtype for v in trainer.recipe.optimizer.state_dict()["state"][0].values() if v.ndim} == {torch.float32}


def test_adaptive_weight_matches_a_hand_computation():
    """A decoder whose last layer is y = W z: with L_rec = ||W z - t||^2 (+ p . y, a perceptual term given by its
    gradient p at y) and L_G = a . (W z) (given by its gradient a), the gradients at W are (2 (W z - t) + p) z^T and
    a z^T, so lambda = ||2 (W z - t) + p|| ||z|| / (||a|| ||z|| + 1e-4)."""
    W = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]], requires_grad=True)
    z, t, a, p = (torch.tensor([1.0, 2.0, -1.0]), torch.tensor([0.3, -0.2]), torch.tensor([0.7, -0.4]),
                  torch.tensor([-0.6, 0.25]))
    y = W @ z
    weight, rec_norm, adv_norm = adaptive_weight((y - t).pow(2).sum(), y, W, None, a)
    expected = 2 * (W @ z - t).norm() * z.norm() / (a.norm() * z.norm() + 1e-4)
    assert weight.item() == pytest.approx(expected.item(), rel=1e-6)
    assert rec_norm.item() == pytest.approx((2 * (W @ z - t).norm() * z.norm()).item(), rel=1e-6)
    assert adv_norm.item() == pytest.approx((a.norm() * z.norm()).item(), rel=1e-6)
    assert not weight.requires_grad
    weight, rec_norm, _ = adaptive_weight((y - t).pow(2).sum(), y, W, p, a)
    assert rec_norm.item() == pytest.approx(((2 * (W @ z - t) + p).norm() * z.norm()).item(), rel=1e-6)
    # an adversarial loss without gradient at W: lambda is clamped, not infinite
    weight, _, _ = adaptive_weight((y - t).pow(2).sum(), y, W, None, torch.zeros(2))
    assert weight.item() == 1e4


def test_adaptive_weight_inside_the_trainer_matches_the_gradients(tmp_path):
    """The adaptive weight the Trainer logs is ||grad L_rec / D|| / (||grad L_G|| + 1e-4) at the decoder's last layer,
    L_rec the model's loss plus the perceptual term, recomputed here by hand from the same batch."""
    model = tiny_model("ae", "mlp")
    trainer = trainer_for(model, tmp_path, perceptual_weight=1.0, disc_weight=0.5, disc_start=0)
    inputs = trainer._prepare_inputs(batch())
    model.train()
    trainer.create_scheduler(4, optimizer=trainer.create_optimizer())
    trainer.compute_loss(model, inputs)
    logged = trainer._term_sums["adaptive_weight"][0].item()
    outputs = model(**inputs)
    x, reconstruction = inputs["pixel_values"], outputs.reconstruction
    per_pixel = outputs.loss / model.config.num_pixels + trainer.recipe.perceptual(reconstruction, x).mean()
    adversarial = -trainer.recipe.discriminator(reconstruction).mean()
    weight = model.decoder.layers[-1].weight
    g_rec, = torch.autograd.grad(per_pixel, weight, retain_graph=True)
    g_adv, = torch.autograd.grad(adversarial, weight)
    assert logged == pytest.approx((g_rec.norm() / (g_adv.norm() + 1e-4)).item(), rel=1e-4)
    assert trainer._term_sums["adversarial_weight"][0].item() == pytest.approx(0.5 * logged, rel=1e-6)


def test_the_recipe_loss_has_the_value_and_gradient_of_the_terms_written_out(tmp_path):
    """The recipe backpropagates each term once, to the reconstruction, and returns a surrogate with that gradient:
    its loss and every model gradient equal those of L_model + D (w_p d(x^, x) + lambda w_adv L_G(x^)) written out
    and backpropagated through the perceptual network and the discriminator directly; and the discriminator's
    gradients, from the pass over x^ it shares with the generator's term, are those of L_D written out."""
    model = tiny_model("vae", "conv")
    trainer = trainer_for(model, tmp_path, perceptual_weight=0.7, disc_weight=0.5, disc_start=0)
    inputs = trainer._prepare_inputs(batch())
    model.train()
    trainer.create_scheduler(4, optimizer=trainer.create_optimizer())
    torch.manual_seed(3)
    loss = trainer.compute_loss(model, inputs)
    loss.backward()
    trainer.recipe.discriminator_backward(1.0)  # from the discriminator's pass over x^ that the generator's used
    recipe_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    discriminator = trainer.recipe.discriminator
    disc_grads = [p.grad.clone() for p in discriminator.parameters()]
    weight = trainer._term_sums["adaptive_weight"][0]
    model.zero_grad()
    discriminator.zero_grad()
    torch.manual_seed(3)  # the VAE's draw of z again
    outputs = model(**inputs)
    x, reconstruction, num_pixels = inputs["pixel_values"], outputs.reconstruction, model.config.num_pixels
    discriminator_loss("hinge", discriminator(x), discriminator(reconstruction.detach())).backward()
    for recipe_grad, p in zip(disc_grads, discriminator.parameters()):
        torch.testing.assert_close(recipe_grad, p.grad)
    discriminator.requires_grad_(False)
    direct = outputs.loss + num_pixels * (0.7 * trainer.recipe.perceptual(reconstruction, x).mean()
                                          + weight * 0.5 * -discriminator(reconstruction).mean())
    direct.backward()
    assert loss.item() == pytest.approx(direct.item(), rel=1e-6)
    for name, p in model.named_parameters():
        assert (recipe_grads[name] - p.grad).abs().max() <= 1e-5 * p.grad.abs().max(), name  # float rounding


def test_lecam_and_r1():
    lecam = LeCAM(decay=0.5)
    lecam.update(torch.tensor(1.0), torch.tensor(-1.0))
    assert (lecam.real_ema.item(), lecam.fake_ema.item()) == (1.0, -1.0)  # the first step sets them
    lecam.update(torch.tensor(3.0), torch.tensor(1.0))
    assert (lecam.real_ema.item(), lecam.fake_ema.item()) == (2.0, 0.0)
    value = lecam(torch.tensor([1.0, -1.0]), torch.tensor([3.0, 1.0]))  # relu(r - 0)^2, relu(2 - f)^2
    assert value.item() == pytest.approx(0.5 * 1 + 0.5 * 1)
    linear = torch.nn.Conv2d(1, 1, 2, bias=False)  # D(x) = w . x: grad_x sum D = w, R1 = ||w||^2 / 2
    penalty = r1_penalty(linear, torch.rand(3, 1, 2, 2))
    assert penalty.item() == pytest.approx(0.5 * linear.weight.pow(2).sum().item(), rel=1e-6)
    penalty.backward()
    assert linear.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------------- EMA


def test_ema_follows_the_warmup_and_swaps_back_exactly():
    model = torch.nn.Linear(2, 1)
    ema = ModelEMA(model, decay=0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # d_1 = min(0.9, 2 / 11)
    d = 2 / 11
    assert torch.allclose(ema.shadow["weight"], d * start + (1 - d) * model.weight)
    for _ in range(100):
        ema.update(model)
    assert ema.current_decay() == 0.9
    trained = model.weight.detach().clone()
    with ema.swapped(model):
        assert torch.equal(model.weight, ema.shadow["weight"])
    assert torch.equal(model.weight, trained)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        ModelEMA(model, decay=1.0)


# ------------------------------------------------------------------------------------------------ the guard


def test_collapse_guard_events_and_actions():
    guard = CollapseGuard(margin_db=1.0, action="lower")
    guard.start(10, 25.0)
    assert guard.check(20, 24.5) is None and guard.last_good_step == 20
    event = guard.check(30, 23.0)
    assert event.drop_db == pytest.approx(2.0) and guard.adversarial_scale == 0.5
    guard.check(40, 22.0)
    assert guard.adversarial_scale == 0.25 and len(guard.events) == 2 and guard.last_good_step == 20
    restored = CollapseGuard(margin_db=1.0)
    restored.load_state_dict(json.loads(json.dumps(guard.state_dict())))
    assert restored.summary() == guard.summary() and restored.summary()["gan_collapse_events"] == 2
    with pytest.raises(ValueError, match="warn, lower, stop"):
        CollapseGuard(margin_db=1.0, action="panic")


class Sabotage(TrainerCallback):
    """Force a collapse at the end of step `step`: the decoder's last layer then paints every pixel white (on dark
    images, which the untrained model already reconstructs well, as black)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                model.decoder.output_layer.bias.fill_(100.0)


@pytest.mark.parametrize("action", ["warn", "stop"])
def test_collapse_guard_fires_on_a_forced_collapse(tmp_path, action):
    model = tiny_model()
    trainer = trainer_for(model, tmp_path, data=tiny_data(brightness=0.1), max_steps=8, disc_weight=0.5, disc_start=2,
                          gan_guard_steps=1, gan_guard_margin=3.0, gan_guard_action=action, callbacks=[Sabotage(5)],
                          perceptual=False)
    snapshots = {}

    class Keep(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            snapshots[state.global_step] = {k: v.clone() for k, v in model.state_dict().items()}

    trainer.add_callback(Keep())
    trainer.train()
    summary = trainer.recipe.description()
    assert summary["gan_collapse_events"] >= 1 and summary["gan_first_collapse_step"] == 5
    assert summary["gan_worst_psnr_drop_db"] > 3.0
    if action == "stop":
        assert trainer.state.global_step == 5
        final = model.state_dict()
        assert all(torch.equal(final[k], snapshots[4][k]) for k in final)  # the last good check's weights
    else:
        assert trainer.state.global_step == 8


# ------------------------------------------------------------------------------------------------ the Trainer


def test_each_term_is_logged(tmp_path):
    trainer = trainer_for(tiny_model(), tmp_path, perceptual_weight=1.0, disc_weight=0.5, disc_start=2,
                          lecam_weight=0.01, r1_weight=0.1, use_ema=True)
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    expected = {"perceptual_rotation", "generator_loss", "discriminator_loss", "adaptive_weight",
                "adversarial_weight", "disc_accuracy_real", "disc_accuracy_fake", "disc_grad_norm", "grad_norm",
                "lecam_loss", "r1_penalty", "last_layer_rec_grad_norm", "last_layer_gan_grad_norm", "guard_psnr"}
    assert expected <= set(logs[-1]), expected - set(logs[-1])
    assert "generator_loss" not in logs[0]  # step 1: before disc_start
    assert all(math.isfinite(v) for e in logs for v in e.values() if isinstance(v, float))
    metrics = trainer.evaluate()  # after training the model holds the EMA, its trained weights are evaluated beside
    assert "eval_perceptual_rotation" in metrics and "eval_trained_psnr" in metrics and "eval_psnr" in metrics
    assert metrics["eval_psnr"] != metrics["eval_trained_psnr"]


def test_a_nan_in_the_discriminator_stops_the_run(tmp_path):
    trainer = trainer_for(tiny_model(), tmp_path, disc_weight=0.5, disc_start=1, perceptual=False)
    with torch.no_grad():
        trainer.recipe.discriminator.main[0].bias.fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match="NaN or infinite"):
        trainer.train()


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_a_resumed_gan_run_gives_the_same_weights(tmp_path):
    """Interrupted after its checkpoint at step 3 (inside the GAN phase) and resumed, a run ends with the weights, the
    discriminator and the EMA of a run that went through."""
    fields = dict(max_steps=6, disc_weight=0.5, disc_start=2, use_ema=True, perceptual_weight=1.0, lecam_weight=0.01,
                  save_strategy="steps", save_steps=3, gan_guard_steps=1)
    through = trainer_for(tiny_model(seed=1), tmp_path / "through", **fields)
    through.train()
    stopped = trainer_for(tiny_model(seed=1), tmp_path / "resumed", callbacks=[StopAt(3)], **fields)
    stopped.train()
    checkpoint = tmp_path / "resumed" / "checkpoint-3"
    assert all((checkpoint / name).is_file() for name in RECIPE_FILES if name != "last_good.pt")
    resumed = trainer_for(tiny_model(seed=2), tmp_path / "resumed", **fields)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for a, b in ((through.model, resumed.model), (through.recipe.discriminator, resumed.recipe.discriminator)):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(x, y), name
    for name, value in through.recipe.ema.shadow.items():
        assert torch.equal(value, resumed.recipe.ema.shadow[name]), name
    assert through.recipe.guard.state_dict() == resumed.recipe.guard.state_dict()
    # resuming with other recipe settings is refused, naming them
    with pytest.raises(ValueError, match="--disc_weight 1.0 \\(the checkpoint has 0.5\\)"):
        check_recipe_resume(checkpoint, training_arguments(tmp_path, **{**fields, "disc_weight": 1.0}))
    with pytest.raises(ValueError, match="without those flags|other recipe settings"):
        check_recipe_resume(checkpoint, training_arguments(tmp_path, max_steps=6))


def test_the_saved_model_holds_no_discriminator_and_is_the_ema(tmp_path):
    from hf_autoencoders.hub import upload_files

    model = tiny_model()
    trainer = trainer_for(model, tmp_path / "run", disc_weight=0.5, disc_start=1, use_ema=True,
                          save_strategy="steps", save_steps=2)
    trainer.train()
    trainer.save_model()
    assert trainer.evaluate()["eval_psnr"] != trainer.evaluate()["eval_trained_psnr"]
    saved = load_file(tmp_path / "run" / "model.safetensors")
    assert set(saved) == set(model.state_dict()) and not any("discriminator" in k for k in saved)
    for name, value in trainer.recipe.ema.shadow.items():
        assert torch.equal(saved[name], value.contiguous()), name
    files = upload_files(tmp_path / "run", include_checkpoints=True)
    assert not any(name.endswith(RECIPE_FILES) for name in files), files
    assert VQVAEModel.from_pretrained(tmp_path / "run").config.model_type == "hf_autoencoders_vqvae"


def test_bad_recipe_arguments_are_refused(tmp_path):
    for fields, message in (({"disc_loss": "wgan"}, "--disc_loss must be one of hinge, non_saturating"),
                            ({"perceptual_network": "vgg"}, "--perceptual_network must be one of"),
                            ({"lpips_weights": "x"}, "--lpips_weights applies to --perceptual_network lpips"),
                            ({"model_ema_decay": 1.0}, "--model_ema_decay must lie in"),
                            ({"disc_weight": -1.0}, "--disc_weight must be a finite number >= 0"),
                            ({"gan_guard_action": "panic"}, "--gan_guard_action must be one of warn, lower, stop")):
        with pytest.raises(ValueError, match=message):
            training_arguments(tmp_path, **fields)


DDP_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from hf_autoencoders import VQVAEConfig, VQVAEModel
from hf_autoencoders.data import ImageCollator, ImageTensorDataset
from hf_autoencoders.evaluation import SmallCNN
from hf_autoencoders.evaluation.perceptual import CNNPerceptual
from hf_autoencoders.training import AutoencoderTrainer
from hf_autoencoders.training.arguments import training_arguments

generator = torch.Generator().manual_seed(0)
images = (torch.rand(64, 3, 16, 16, generator=generator) * 255).to(torch.uint8)
data = ImageTensorDataset(images, torch.zeros(64, dtype=torch.long))
torch.manual_seed(0)
model = VQVAEModel(VQVAEConfig(image_size=16, num_channels=3, hidden_size=16, num_embeddings=16, embedding_dim=8))
torch.manual_seed(0)
perceptual = CNNPerceptual(SmallCNN(3, 4, width=8), "rotation", "test")
args = training_arguments(sys.argv[1], max_steps=4, per_device_train_batch_size=8, disc_weight=0.5, disc_start=1,
                          disc_channels=8, lecam_weight=0.1, perceptual_weight=1.0, use_ema=True, use_cpu=True,
                          ddp_backend="gloo", seed=0)
trainer = AutoencoderTrainer(model=model, args=args, data_collator=ImageCollator(), train_dataset=data,
                             eval_dataset=data, perceptual_network=perceptual)
trainer.train()
state = {f"d.{k}": v for k, v in trainer.recipe.discriminator.state_dict().items()}
state.update({f"lecam.{k}": v for k, v in trainer.recipe.lecam.state_dict().items()})
state.update({f"m.{k}": v for k, v in model.state_dict().items()})
torch.save({"world_size": args.world_size, "state": state}, f"{sys.argv[1]}/rank{args.process_index}.pt")
if torch.distributed.is_initialized():
    torch.distributed.destroy_process_group()
"""


def test_ddp_keeps_the_discriminator_identical_on_every_process(tmp_path):
    """Under two processes (gloo), the discriminator, LeCAM's averages, the model and its EMA stay identical on both:
    the discriminator's gradients are averaged across processes, its initialisation is seeded."""
    import os
    import subprocess
    import sys

    (tmp_path / "ddp.py").write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                             "29561", str(tmp_path / "ddp.py"), str(tmp_path)], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    first, second = (torch.load(tmp_path / f"rank{i}.pt") for i in (0, 1))
    assert first["world_size"] == 2
    for name, value in first["state"].items():
        assert torch.equal(value, second["state"][name]), name


def test_a_checkpoint_with_a_truncated_discriminator_is_passed_over(tmp_path):
    from hf_autoencoders.training.checkpoints import checkpoint_problems, resolve_checkpoint

    fields = dict(max_steps=4, disc_weight=0.5, disc_start=1, use_ema=True, save_strategy="steps", save_steps=2,
                  save_total_limit=None)
    trainer_for(tiny_model(), tmp_path, perceptual=False, **fields).train()
    assert not checkpoint_problems(tmp_path / "checkpoint-4")
    for name in ("discriminator.safetensors", "ema.safetensors"):
        path = tmp_path / "checkpoint-4" / name
        path.write_bytes(path.read_bytes()[:-10])
    assert checkpoint_problems(tmp_path / "checkpoint-4") == ["a truncated or corrupt discriminator.safetensors",
                                                              "a truncated or corrupt ema.safetensors"]
    assert resolve_checkpoint("latest", str(tmp_path)).endswith("checkpoint-2")


def test_the_must_show_command_trains_offline_and_logs_every_term(shared_data, tmp_path):
    """examples/train_vqvae.py --dataset_name ../shared/data/cifar10 --perceptual_weight 1.0 --disc_weight 0.5
    --disc_start 3 --use_ema, on a tiny budget: it trains with no download, logs the perceptual, generator,
    discriminator and adaptive-weight terms, and its card and results say what the recipe did."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from transformers import AutoModel

    if not (shared_data / "cifar10").is_dir():
        pytest.skip("../shared/data/cifar10 is not present")
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "run"
    command = [sys.executable, str(root / "examples" / "train_vqvae.py"), "--dataset_name",
               str(shared_data / "cifar10"), "--perceptual_weight", "1.0", "--disc_weight", "0.5", "--disc_start", "3",
               "--use_ema", "--output_dir", str(out), "--do_train", "--do_eval", "--max_steps", "5",
               "--max_train_samples", "128", "--max_eval_samples", "32", "--per_device_train_batch_size", "16",
               "--hidden_size", "16", "--disc_channels", "16", "--logging_steps", "1", "--fid", "false",
               "--disable_tqdm", "true"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    logs = [e for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    for term in ("perceptual_rotation", "generator_loss", "discriminator_loss", "adaptive_weight"):
        assert any(term in entry for entry in logs), term
    results = json.loads((out / "all_results.json").read_text())
    assert results["gan_collapse_events"] == 0 and results["saved_weights"] == "ema"
    assert "eval_trained_psnr" in results and "eval_perceptual_rotation" in results
    card = (out / "README.md").read_text()
    assert "## Tokenizer recipe" in card and "### The trained weights" in card and "not LPIPS values" in card
    assert not any("discriminator" in k for k in load_file(out / "model.safetensors"))
    assert AutoModel.from_pretrained(out).config.model_type == "hf_autoencoders_vqvae"


def test_evaluate_command_reports_the_perceptual_distance(tmp_path, monkeypatch, capsys):
    import datasets

    from hf_autoencoders.cli import main as cli_main
    from hf_autoencoders.evaluation.perceptual import PERCEPTUAL_NETWORKS

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    VQVAEModel(VQVAEConfig(hidden_size=16, num_embeddings=16, embedding_dim=8)).save_pretrained(tmp_path / "model")
    cli_main(["evaluate", str(tmp_path / "model"), "--perceptual", "rotation", "--max_eval_samples", "16",
              "--max_train_samples", "64", "--num_importance_samples", "0"])
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["perceptual_rotation"] > 0 and "rotation" in metrics["perceptual_network"]
    with pytest.raises(SystemExit):
        cli_main(["evaluate", str(tmp_path / "model"), "--lpips_weights", "x"])
    assert "--lpips_weights applies to --perceptual lpips" in capsys.readouterr().err
    from hf_autoencoders.cli import _evaluate_parser

    choices = next(a.choices for a in _evaluate_parser()._actions if a.dest == "perceptual")
    assert sorted(choices) == sorted(PERCEPTUAL_NETWORKS)


def test_a_model_in_minus_one_to_one_feeds_the_recipe_unit_images(tmp_path):
    """The perceptual network and the discriminator read [0, 1] images: a [-1, 1] model's reconstructions and
    targets are mapped before they see them (else a [-1, 1] image reads as [-3, 1] to the discriminator)."""
    torch.manual_seed(0)
    model = VAEModel(VAEConfig(image_size=16, num_channels=3, backbone="conv", hidden_size=16, latent_dim=8,
                               pixel_range=(-1.0, 1.0)))
    seen = []
    trainer = trainer_for(model, tmp_path, perceptual_weight=1.0, disc_weight=0.5, disc_start=0, max_steps=2)
    trainer.data_collator = ImageCollator(pixel_range=(-1.0, 1.0))
    perceptual_features = trainer.recipe.perceptual.features

    def record_perceptual(images):
        seen.append(("perceptual", images.detach().min().item(), images.detach().max().item()))
        return perceptual_features(images)

    trainer.recipe.perceptual.features = record_perceptual
    trainer.train()
    discriminator = trainer.recipe.discriminator
    inputs = trainer._prepare_inputs(trainer.data_collator([tiny_data()[i] for i in range(8)]))
    assert inputs["pixel_values"].min() < 0  # the batch is in the model's range
    discriminate = discriminator.forward
    discriminator.forward = lambda images: (seen.append(("discriminator", images.min().item(),
                                                          images.max().item())), discriminate(images))[1]
    trainer.recipe.generator_terms(model, inputs, model(**inputs), step=10)
    trainer.recipe.discriminator_backward(1.0)
    assert {kind for kind, _, _ in seen} == {"perceptual", "discriminator"}
    assert all(low > -0.5 for _, low, _ in seen), seen  # unmapped, the images would reach -1


def test_a_finished_run_resumed_with_an_ema_saves_the_runs_ema(tmp_path):
    """A run killed after its last checkpoint and resumed trains nothing (`RunTrainer`): the model it then holds, and
    saves, is the checkpoint's EMA, as in the run that went through (not the EMA of the freshly built model)."""
    fields = dict(max_steps=4, disc_weight=0.5, disc_start=1, use_ema=True, perceptual_weight=1.0,
                  save_strategy="steps", save_steps=4)
    through = trainer_for(tiny_model(seed=1), tmp_path / "through", **fields)
    through.train()
    resumed = trainer_for(tiny_model(seed=2), tmp_path / "resumed", **fields)
    resumed.train(resume_from_checkpoint=str(tmp_path / "through" / "checkpoint-4"))
    assert resumed.state.global_step == 4
    for (name, x), (_, y) in zip(through.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(x, y), name
