"""Tests of the rotation trick, SimVQ, lookup-free quantization (LFQ) and residual quantization
(hf_autoencoders/models/quantizer_*.py), in the quantizers and in VQ-VAEs of every backbone."""

import json
import math
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file
from transformers import AutoModel

from hf_autoencoders.models import VQVAEConfig, VQVAEModel
from hf_autoencoders.models.quantizer_fsq import FiniteScalarQuantizer
from hf_autoencoders.models.quantizer_lfq import LookupFreeQuantizer
from hf_autoencoders.models.quantizer_residual import ResidualQuantizer, build_quantizer
from hf_autoencoders.models.quantizer_simvq import SimVectorQuantizer
from hf_autoencoders.models.quantizer_vq import VectorQuantizer, rotate_to

LEGACY = Path(__file__).parent / "fixtures" / "legacy_quantizers"
BACKBONES = {"mlp": {"hidden_size": 32}, "conv": {"hidden_size": 16, "num_residual_blocks": 1},
             "vit": {"hidden_size": 16, "num_hidden_layers": 1, "patch_size": 4}}
# Every new option, each in a config small enough for a test.
OPTIONS = {
    "rotation_trick": {"rotation_trick": True},
    "simvq": {"quantizer": "simvq"},
    "simvq_rotation": {"quantizer": "simvq", "rotation_trick": True},
    "lfq": {"quantizer": "lfq"},
    "residual_vq": {"num_quantizers": 3},
    "fsq_paper": {"quantizer": "fsq", "fsq_levels": (4, 4), "fsq_input_std": None},
    "residual_fsq": {"quantizer": "fsq", "fsq_levels": (4, 4), "num_quantizers": 2},
    "residual_lfq": {"quantizer": "lfq", "num_quantizers": 2},
    "residual_simvq_rotation": {"quantizer": "simvq", "num_quantizers": 2, "rotation_trick": True},
}


def tiny_vqvae(backbone: str = "conv", seed: int = 0, **options) -> VQVAEModel:
    torch.manual_seed(seed)
    fields = {"num_embeddings": 16, "embedding_dim": 8, "image_size": 16, "num_channels": 3, **options}
    config = VQVAEConfig(backbone=backbone, **BACKBONES[backbone], **fields)
    return VQVAEModel(config)


def flat(z_e: torch.Tensor) -> torch.Tensor:
    return z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])


# -------------------------------------------------------------------------------------- every quantizer, every backbone


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("option", OPTIONS)
def test_forward_and_backward_on_every_backbone(option, backbone):
    model = tiny_vqvae(backbone, **OPTIONS[option]).train()
    x = torch.rand(4, 3, 16, 16)
    output = model(x)
    depth = model.config.num_quantizers
    assert output.indices.shape == ((4, 4, 4) if depth == 1 else (4, depth, 4, 4))
    assert output.reconstruction.shape == x.shape and torch.isfinite(output.loss)
    terms = sum(getattr(output, name) for name in model.loss_terms)
    torch.testing.assert_close(output.loss, terms)
    output.loss.backward()
    learned_quantizer = model.config.quantizer != "vq"  # the default VQ's codebook is an EMA buffer
    for part in (model.encoder, model.decoder) + ((model.quantizer,) if learned_quantizer else ()):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0, f"no gradient reaches the {type(part).__name__}"

    model.eval()
    with torch.no_grad():
        indices = model.encode_indices(x)
        torch.testing.assert_close(model.decode_indices(indices), model(x).reconstruction)
        samples = model.sample(2, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (2, 3, 16, 16)


def test_lfq_adds_its_entropy_term_to_the_loss_and_the_others_do_not():
    assert tiny_vqvae(quantizer="lfq").loss_terms == ("reconstruction_loss", "codebook_loss", "commitment_loss",
                                                      "entropy_loss")
    plain = tiny_vqvae()
    assert plain.loss_terms == ("reconstruction_loss", "codebook_loss", "commitment_loss")
    assert plain(torch.rand(2, 3, 16, 16)).entropy_loss is None  # the outputs (and tuples) of the others unchanged


# ------------------------------------------------------------------------------------------------- the rotation trick


def test_rotation_trick_gradient_by_hand_in_two_dimensions():
    """z = (1, 0), q = (0, 2): R is the rotation by +90 degrees and lambda = ||q|| / ||z|| = 2, so the gradient
    lambda R^T g of g = (1, 0) is 2 * (0, -1), and of g = (0, 1) is 2 * (1, 0)."""
    z = torch.tensor([[1.0, 0.0]], requires_grad=True)
    q = torch.tensor([[0.0, 2.0]])
    out = rotate_to(z, q)
    torch.testing.assert_close(out.detach(), q)
    (grad,) = torch.autograd.grad(out, z, torch.tensor([[1.0, 0.0]]), retain_graph=True)
    torch.testing.assert_close(grad, torch.tensor([[0.0, -2.0]]))
    (grad,) = torch.autograd.grad(out, z, torch.tensor([[0.0, 1.0]]))
    torch.testing.assert_close(grad, torch.tensor([[2.0, 0.0]]))


def rodrigues(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The rotation matrix taking unit u to unit v in their plane (Rodrigues' formula), float64."""
    axis = torch.linalg.cross(u, v)
    sin, cos = axis.norm(), u @ v
    k = axis / sin
    cross = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=u.dtype)
    return torch.eye(3, dtype=u.dtype) + sin * cross + (1 - cos) * cross @ cross


def test_rotation_trick_gradient_against_an_explicit_rotation_matrix():
    torch.manual_seed(0)
    z = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    q = torch.randn(5, 3, dtype=torch.float64)
    upstream = torch.randn(5, 3, dtype=torch.float64)
    out = rotate_to(z, q)
    torch.testing.assert_close(out.detach(), q)
    (grad,) = torch.autograd.grad(out, z, upstream)
    for i in range(5):
        u, v = z[i].detach() / z[i].detach().norm(), q[i] / q[i].norm()
        rotation = rodrigues(u, v)
        torch.testing.assert_close(rotation @ u, v)
        torch.testing.assert_close(rotation.T @ rotation, torch.eye(3, dtype=torch.float64))
        scale = q[i].norm() / z[i].detach().norm()
        torch.testing.assert_close(grad[i], scale * rotation.T @ upstream[i])  # lambda R^T g
    # the straight-through estimator would have copied the upstream gradient: not what happened
    assert not torch.allclose(grad, upstream)


def test_rotation_trick_in_the_quantizer_and_its_edge_cases():
    torch.manual_seed(0)
    config = VQVAEConfig(num_embeddings=16, embedding_dim=4, codebook_ema=False, kmeans_init=False,
                         dead_code_threshold=0)
    straight = VectorQuantizer(config)
    rotated = VectorQuantizer(VQVAEConfig(**{**config.to_diff_dict(), "rotation_trick": True}))
    rotated.load_state_dict(straight.state_dict())
    z_e = torch.randn(2, 4, 3, 3, requires_grad=True)
    a, b = straight(z_e), rotated(z_e)
    assert torch.equal(a.indices, b.indices)
    torch.testing.assert_close(a.quantized, b.quantized)  # the same values, other gradients
    upstream = torch.randn_like(z_e)
    (grad,) = torch.autograd.grad(b.quantized, z_e, upstream)
    codes = rotated.codebook.detach()[b.indices.flatten()]
    expected = torch.autograd.grad(rotate_to(flat(z_e), codes), z_e, flat(upstream))[0]
    torch.testing.assert_close(grad, expected)
    # z = 0 still gives the code's value; an antipodal code gives a reflection: finite, orthogonal
    q = torch.tensor([[1.0, 2.0, 2.0], [1.0, 0.0, 0.0]])
    z = torch.tensor([[0.0, 0.0, 0.0], [-2.0, 0.0, 0.0]], requires_grad=True)
    out = rotate_to(z, q)
    torch.testing.assert_close(out.detach(), q)
    (grad,) = torch.autograd.grad(out, z, torch.tensor([[0.0, 0.0, 0.0], [0.0, 3.0, 0.0]]))
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(grad[1], torch.tensor([0.0, 1.5, 0.0]))  # (I - 2 u u^T) g scaled by 1/2


def test_rotation_trick_composes_with_stochastic_quantization():
    """The rotation is defined for whichever code is drawn, so the two compose: the value is the sampled code."""
    model = tiny_vqvae(rotation_trick=True, stochastic_quantization=True, quantization_temperature=10.0,
                       codebook_ema=False, kmeans_init=False, dead_code_threshold=0).train()
    quantizer = model.quantizer
    z_e = torch.randn(2, 8, 4, 4, requires_grad=True)
    output = quantizer(z_e)
    torch.testing.assert_close(output.quantized, quantizer.embed(output.indices))
    output.quantized.sum().backward()
    assert torch.isfinite(z_e.grad).all() and z_e.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------------------- SimVQ


def test_simvq_codebook_is_a_frozen_matrix_through_one_learned_linear_layer():
    model = tiny_vqvae(quantizer="simvq")
    quantizer = model.quantizer
    assert isinstance(quantizer, SimVectorQuantizer)
    assert "quantizer.frozen_codebook" in dict(model.named_buffers())
    trainable = {name for name, p in model.quantizer.named_parameters() if p.requires_grad}
    assert trainable == {"codebook_transform.weight", "codebook_transform.bias"}
    frozen = quantizer.frozen_codebook.clone()
    transform = quantizer.codebook_transform
    torch.testing.assert_close(quantizer.codes(), frozen @ transform.weight.detach().T + transform.bias.detach())

    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    before = quantizer.codes().detach().clone()
    x = torch.rand(8, 3, 16, 16)
    model.train()
    output = model(x)
    used = output.indices.unique()
    output.loss.backward()
    optimizer.step()
    assert torch.equal(quantizer.frozen_codebook, frozen)  # C never moves
    moved = (quantizer.codes().detach() - before).norm(dim=1) > 0
    unused = torch.ones(16, dtype=torch.bool)
    unused[used] = False
    assert unused.any() and moved[unused].all()  # a step of W moves the codes nobody chose too

    z_e = torch.randn(2, 8, 4, 4)
    with torch.no_grad():
        out = quantizer.eval()(z_e)
        nearest = torch.cdist(flat(z_e), quantizer.codes()).argmin(1)
    assert torch.equal(out.indices.flatten(), nearest)
    torch.testing.assert_close(out.quantized, quantizer.embed(out.indices))


def test_simvq_data_initialisation_puts_the_codes_on_the_first_batch_once(tmp_path):
    """kmeans_init, for SimVQ: the first training forward rescales and shifts W, b so every dimension of the codes has
    the batch's mean and std; later forwards and a reloaded model leave W and b to training."""
    config = VQVAEConfig(image_size=16, num_channels=3, backbone="conv", hidden_size=16, num_residual_blocks=1,
                         quantizer="simvq", num_embeddings=64, embedding_dim=8)
    torch.manual_seed(0)
    quantizer = SimVectorQuantizer(config).train()
    z_e = torch.randn(4, 8, 6, 6) * 3 + torch.arange(8.0)[None, :, None, None]  # far from the codes' start
    before = quantizer.codes().detach().clone()
    assert before.std(0).max() < 1
    quantizer(z_e)
    codes, z = quantizer.codes().detach(), flat(z_e)
    torch.testing.assert_close(codes.mean(0), z.mean(0), atol=1e-4, rtol=0)
    torch.testing.assert_close(codes.std(0, correction=0), z.std(0, correction=0), atol=1e-4, rtol=1e-4)
    assert int(quantizer.initialized) == 1
    quantizer(z_e * 10)
    torch.testing.assert_close(quantizer.codes().detach(), codes)  # once only

    untouched = SimVectorQuantizer(VQVAEConfig(**{**config.to_dict(), "kmeans_init": False})).train()
    start = untouched.codes().detach().clone()
    untouched(z_e)
    torch.testing.assert_close(untouched.codes().detach(), start)

    model = VQVAEModel(config)
    model.train()(torch.rand(2, 3, 16, 16))
    model.save_pretrained(tmp_path)
    reloaded = VQVAEModel.from_pretrained(tmp_path)
    assert int(reloaded.quantizer.initialized) == 1
    reloaded.train()(torch.rand(2, 3, 16, 16) * 0.1)
    torch.testing.assert_close(reloaded.quantizer.codes(), model.quantizer.codes())


# ------------------------------------------------------------------------------------------------------------------ LFQ


def lfq(num_embeddings: int = 16, dim: int = 6, **options) -> LookupFreeQuantizer:
    torch.manual_seed(0)
    return LookupFreeQuantizer(VQVAEConfig(quantizer="lfq", num_embeddings=num_embeddings, embedding_dim=dim,
                                           **options))


def test_lfq_codes_are_signs_and_indices_their_binary_number():
    quantizer = lfq().eval()
    z_e = torch.randn(3, 6, 4, 4)
    output = quantizer(z_e)
    z = quantizer.project_in(flat(z_e))
    signs = (z > 0).long()
    assert torch.equal(output.indices.flatten(), (signs * torch.tensor([1, 2, 4, 8])).sum(1))
    codes = quantizer.indices_to_codes(torch.arange(16))
    assert torch.equal(quantizer.codes_to_indices(codes), torch.arange(16))
    assert set(codes.unique().tolist()) == {-1.0, 1.0}
    torch.testing.assert_close(output.quantized, quantizer.embed(output.indices))
    commitment = 0.25 * (z - torch.where(z > 0, 1.0, -1.0)).pow(2).sum() / 3
    torch.testing.assert_close(output.commitment_loss, commitment)


def direct_entropy_penalty(z: torch.Tensor, temperature: float, gamma: float, groups: int = 1) -> torch.Tensor:
    """E_n[H(p_n)] - gamma sum_g H(E_n[p_{n,g}]) by enumerating the codes: p_n = softmax(-||z_n - c||^2 / tau) over
    every sign vector c, the group marginals by summing p_n over the other bits. float64."""
    z = z.double()
    bits = z.shape[1]
    codes = torch.tensor([[1.0 if (k >> i) & 1 else -1.0 for i in range(bits)] for k in range(2**bits)],
                         dtype=torch.float64)
    probs = torch.softmax(-torch.cdist(z, codes).pow(2) / temperature, dim=1)  # (N, K)
    per_position = -torch.special.xlogy(probs, probs).sum(1).mean()
    size = bits // groups
    batch_entropy = 0.0
    for group in range(groups):
        value = torch.arange(2**bits) // 2 ** (group * size) % 2**size  # each code's value on the group's bits
        marginal = torch.zeros(len(z), 2**size, dtype=torch.float64).index_add_(1, value, probs).mean(0)
        batch_entropy = batch_entropy - torch.special.xlogy(marginal, marginal).sum()
    return per_position - gamma * batch_entropy


@pytest.mark.parametrize("groups", [1, 2])
def test_lfq_entropy_term_against_a_direct_computation(groups):
    tau, gamma, weight = 0.5, 0.7, 0.3
    quantizer = lfq(lfq_entropy_temperature=tau, lfq_batch_maximization_weight=gamma,
                    lfq_entropy_loss_weight=weight, lfq_entropy_groups=groups).train()
    z_e = torch.randn(3, 6, 2, 5) * 0.5  # an assignment that is not yet confident: both terms matter
    output = quantizer(z_e)
    z = quantizer.project_in(flat(z_e)).detach()
    expected = weight * 784 * direct_entropy_penalty(z, tau, gamma, groups)  # D = 1 x 28 x 28 pixel values
    torch.testing.assert_close(output.entropy_loss.double(), expected, rtol=1e-5, atol=1e-6)
    assert quantizer.eval()(z_e).entropy_loss.item() == 0.0  # a training regularizer only

    # and its gradient is the direct computation's
    z = z.requires_grad_()
    (direct,) = torch.autograd.grad(direct_entropy_penalty(z, tau, gamma, groups), z)
    (ours,) = torch.autograd.grad(quantizer.entropy_penalty(z.float()), z)
    torch.testing.assert_close(ours, direct, rtol=1e-4, atol=1e-6)


def test_lfq_entropy_penalty_spreads_the_codes():
    """Trained on its penalty alone, LFQ moves a collapsed batch (every position on one code) onto many codes."""
    torch.manual_seed(0)
    quantizer = lfq(num_embeddings=16, dim=4, lfq_entropy_temperature=1.0, kmeans_init=False).train()
    z_e = (torch.randn(4, 4, 4, 4) * 0.1 + 1.0).requires_grad_()
    with torch.no_grad():
        quantizer.project_in.weight.copy_(torch.eye(4))
        quantizer.project_in.bias.zero_()
    assert quantizer(z_e).indices.unique().numel() == 1
    optimizer = torch.optim.Adam([z_e], lr=0.05)
    for _ in range(100):
        optimizer.zero_grad()
        quantizer(z_e).entropy_loss.backward()
        optimizer.step()
    assert quantizer(z_e).indices.unique().numel() >= 12


def test_lfq_data_initialisation_centres_every_bit_on_the_first_batch_once():
    """kmeans_init, for LFQ: the first training forward shifts the 1x1 map's bias so every channel of z has mean 0
    over the batch (a batch on one code before spreads over many), once; eval forwards never initialise."""
    quantizer = lfq(num_embeddings=64, dim=8)
    z_e = torch.randn(8, 8, 4, 4) * 0.01 + 5.0  # every position on one code at the start
    with torch.no_grad():
        assert quantizer.eval()(z_e).indices.unique().numel() == 1
        assert int(quantizer.initialized) == 0
        output = quantizer.train()(z_e)
        z = quantizer.project_in(flat(z_e))
    torch.testing.assert_close(z.mean(0), torch.zeros(6), atol=1e-5, rtol=0)
    assert int(quantizer.initialized) == 1 and output.indices.unique().numel() >= 32
    bias = quantizer.project_in.bias.clone()
    quantizer(z_e + 1.0)
    assert torch.equal(quantizer.project_in.bias, bias)


# ------------------------------------------------------------------------------------------------ residual quantization


@pytest.mark.parametrize("kind", ["vq", "simvq", "fsq", "lfq"])
def test_residual_codes_decode_to_the_sum_of_their_codewords(kind):
    options = {"fsq_levels": (4, 4)} if kind == "fsq" else {}
    model = tiny_vqvae(quantizer=kind, num_quantizers=3, **options)
    quantizer = model.quantizer
    assert isinstance(quantizer, ResidualQuantizer) and len(quantizer.layers) == 3
    model.train()(torch.rand(8, 3, 16, 16))  # k-means, EMA: codebooks that differ from their initial values
    model.eval()
    z_e = model.encode(torch.rand(2, 3, 16, 16)).latents
    with torch.no_grad():
        output = quantizer(z_e)
        indices = output.indices
        assert indices.shape == (2, 3, 4, 4)
        codewords = [layer.embed(indices[:, d]) for d, layer in enumerate(quantizer.layers)]
        torch.testing.assert_close(quantizer.embed(indices), sum(codewords))
        torch.testing.assert_close(output.quantized, sum(codewords))
        if kind == "vq":  # the codewords are rows of each depth's codebook
            first = quantizer.layers[0].codebook[indices[:, 0]].permute(0, 3, 1, 2)
            torch.testing.assert_close(codewords[0], first)
        # each depth quantizes what the ones before it left
        residual = z_e
        for depth, layer in enumerate(quantizer.layers):
            assert torch.equal(layer(residual).indices, indices[:, depth])
            residual = residual - codewords[depth]
    if kind == "vq":  # codebooks fit (k-means) to each depth's residuals: deeper is closer
        errors = [(z_e - sum(codewords[: d + 1])).pow(2).sum() for d in range(3)]
        assert errors[0] >= errors[1] >= errors[2]


def test_residual_depth_one_is_the_plain_quantizer_with_the_same_state_dict():
    for kind, options in (("vq", {}), ("fsq", {"fsq_levels": (4, 4)}), ("lfq", {}), ("simvq", {})):
        config = VQVAEConfig(quantizer=kind, num_embeddings=16, embedding_dim=4, **options)
        quantizer = build_quantizer(config)
        assert not isinstance(quantizer, ResidualQuantizer)
        deep = build_quantizer(VQVAEConfig(**{**config.to_diff_dict(), "num_quantizers": 2}))
        assert {k.split(".", 2)[2] for k in deep.state_dict()} == set(quantizer.state_dict())


def test_residual_losses_are_sums_over_depths():
    model = tiny_vqvae(num_quantizers=2, codebook_ema=False, kmeans_init=False, dead_code_threshold=0).eval()
    z_e = torch.randn(2, 8, 4, 4)
    output = model.quantizer(z_e)
    partial = torch.zeros_like(z_e)
    commitment = 0.0
    for depth, layer in enumerate(model.quantizer.layers):
        partial = partial + layer.embed(output.indices[:, depth])
        commitment = commitment + 0.25 * (z_e - partial).pow(2).sum() / 2  # RQ-VAE: sum_d ||z - sg(partial_d)||^2
    torch.testing.assert_close(output.commitment_loss, commitment)
    torch.testing.assert_close(output.codebook_loss, commitment / 0.25)


# -------------------------------------------------------------------------------------- saving, loading, remote code


@pytest.mark.parametrize("option", OPTIONS)
def test_save_and_load_through_automodel(option, tmp_path):
    model = tiny_vqvae(**OPTIONS[option]).train()
    model(torch.rand(8, 3, 16, 16))  # initialised codebooks, EMA state
    model.eval().save_pretrained(tmp_path)
    loaded, info = AutoModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert type(loaded) is VQVAEModel and loaded.config.to_diff_dict() == model.config.to_diff_dict()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        expected, got = model(x), loaded.eval()(x)
    assert torch.equal(expected.indices, got.indices)
    torch.testing.assert_close(got.reconstruction, expected.reconstruction, rtol=0, atol=0)


@pytest.mark.parametrize("config", [VQVAEConfig(rotation_trick=True), VQVAEConfig(quantizer="simvq"),
                                    VQVAEConfig(quantizer="lfq", num_embeddings=4096), VQVAEConfig(num_quantizers=4)],
                         ids=["rotation_trick", "simvq", "lfq_4096", "num_quantizers_4"])
def test_the_configs_of_the_issue_train_save_and_load(config, tmp_path):
    """The four configs as the issue writes them (default sizes): a training step, then save and AutoModel."""
    torch.manual_seed(0)
    model = VQVAEModel(config).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(4, 1, 28, 28)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(2):
        optimizer.zero_grad()
        loss = model(x).loss
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss) and any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval().save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).reconstruction, model(x).reconstruction, rtol=0, atol=0)


def test_every_new_option_loads_as_remote_code(tmp_path, run_without_package):
    """Each new option's folder loads in a fresh process that has transformers but cannot import hf_autoencoders."""
    x = torch.rand(2, 3, 16, 16)
    torch.save(x, tmp_path / "x.pt")
    for option, options in OPTIONS.items():
        model = tiny_vqvae(**options).train()
        model(torch.rand(8, 3, 16, 16))
        model.eval().save_pretrained(tmp_path / option)
        with torch.no_grad():
            torch.save(model(x).reconstruction, tmp_path / option / "expected.pt")
    names = list(OPTIONS)
    result = run_without_package(f"""
        import torch
        from transformers import AutoModel
        torch.set_num_threads(1)
        x = torch.load({str(tmp_path / "x.pt")!r})
        for name in {names!r}:
            folder = {str(tmp_path)!r} + "/" + name
            model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
            assert "hf_autoencoders" not in type(model).__module__
            with torch.no_grad():
                out = model(x).reconstruction
            torch.testing.assert_close(out, torch.load(folder + "/expected.pt"), rtol=0, atol=1e-6)
        print("REMOTE_OK")
    """, tmp_path)
    assert "REMOTE_OK" in result.stdout, result.stderr[-3000:]


@pytest.mark.parametrize("name", ["vq", "vq_factorized", "fsq"])
def test_checkpoints_of_the_single_module_quantizers_load_with_the_same_outputs(name):
    """Folders saved when VQ and FSQ lived in one models/quantizers.py (make_fixture.py) load strictly, with the same
    state-dict keys, and give the same outputs."""
    folder = LEGACY / name
    model, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    saved = load_file(folder / "io.safetensors")
    model.eval()
    with torch.no_grad():
        output = model(saved["x"])
        quantized = model.quantize(model.encode(saved["x"]).latents).quantized
    assert torch.equal(output.indices, saved["indices"])
    torch.testing.assert_close(output.reconstruction, saved["reconstruction"], rtol=0, atol=0)
    torch.testing.assert_close(quantized, saved["quantized"], rtol=0, atol=0)
    torch.testing.assert_close(output.loss, saved["loss"], rtol=0, atol=0)


@pytest.mark.parametrize("options", [{"quantizer": "simvq"}, {"quantizer": "lfq"},
                                     {"quantizer": "lfq", "num_quantizers": 2}], ids=["simvq", "lfq", "residual_lfq"])
def test_simvq_and_lfq_checkpoints_saved_before_their_initialized_flag_load_as_trained(options, tmp_path):
    """SimVQ and LFQ checkpoints saved before their data initialisation had no `initialized` buffer: they load
    strictly (through AutoModel and the commands' loader) as initialised, with the same outputs; a VQ checkpoint
    missing its flag is still refused."""
    from safetensors.torch import save_file

    from hf_autoencoders.hub import load_model

    model = tiny_vqvae(**options)
    model.train()(torch.rand(2, 3, 16, 16))
    model.save_pretrained(tmp_path / "old")
    weights = load_file(tmp_path / "old" / "model.safetensors")
    flags = [key for key in weights if key.endswith("initialized")]
    assert flags
    save_file({k: v for k, v in weights.items() if k not in flags}, tmp_path / "old" / "model.safetensors",
              metadata={"format": "pt"})
    x = torch.rand(2, 3, 16, 16)
    for loaded in (AutoModel.from_pretrained(tmp_path / "old"), load_model(str(tmp_path / "old"))):
        assert all(int(loaded.get_buffer(key)) == 1 for key in flags)
        with torch.no_grad():
            torch.testing.assert_close(loaded.eval()(x).reconstruction, model.eval()(x).reconstruction)
    vq = tiny_vqvae()
    vq.train()(torch.rand(2, 3, 16, 16))
    vq.save_pretrained(tmp_path / "vq")
    weights = load_file(tmp_path / "vq" / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.endswith("initialized")},
              tmp_path / "vq" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="initialized"):
        load_model(str(tmp_path / "vq"))


def test_new_options_left_off_change_no_existing_config_json(tmp_path):
    """The studies hash config.to_diff_dict() into their run keys: configs that use none of the new options write
    what they wrote before (the fields of ca6af62's VQVAEConfig, no more)."""
    before = {"quantizer", "num_embeddings", "embedding_dim", "commitment_cost", "codebook_ema", "ema_decay",
              "ema_epsilon", "kmeans_init", "kmeans_iters", "dead_code_threshold", "codebook_dim",
              "l2_normalized_codes", "stochastic_quantization", "quantization_temperature", "fsq_levels"}
    new = {"num_quantizers", "rotation_trick", "fsq_input_std"} | \
        {n for n in VQVAEConfig.__dataclass_fields__ if n.startswith("lfq_")}
    for options in ({}, {"quantizer": "fsq", "fsq_input_std": None}, {"backbone": "vit"},
                    {"codebook_dim": 8, "kmeans_init": False}):
        written = set(VQVAEConfig(**options).to_diff_dict())
        assert before <= written and not written & new, options
    for name in ("vq", "vq_factorized", "fsq"):  # a config.json saved before is written again as it was
        VQVAEConfig.from_pretrained(LEGACY / name).save_pretrained(tmp_path / name)
        assert json.loads((tmp_path / name / "config.json").read_text()) == \
            json.loads((LEGACY / name / "config.json").read_text())
    # the options that are on are written; an LFQ config names all of its own
    lfq_config = VQVAEConfig(quantizer="lfq", num_embeddings=64).to_diff_dict()
    assert {n for n in new if n.startswith("lfq_")} <= set(lfq_config)
    assert VQVAEConfig(num_quantizers=2, rotation_trick=True).to_diff_dict()["num_quantizers"] == 2
    # a new FSQ config standardises its channels and says so; one saved before the option loads as the paper's FSQ
    assert VQVAEConfig(quantizer="fsq").to_diff_dict()["fsq_input_std"] == 0.8
    assert VQVAEConfig.from_pretrained(LEGACY / "fsq").fsq_input_std is None


# ------------------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(("options", "message"), [
    ({"quantizer": "lfq", "num_embeddings": 1000}, r"power of 2; use 512 or 1024"),
    ({"num_quantizers": 0}, r"num_quantizers .* must be >= 1"),
    ({"rotation_trick": True, "quantizer": "fsq"}, r"rotation_trick .* quantizer='fsq'"),
    ({"rotation_trick": True, "quantizer": "lfq"}, r"rotation_trick .* quantizer='lfq'"),
    ({"lfq_entropy_loss_weight": 0.5}, r"lfq_entropy_loss_weight apply to quantizer='lfq' only"),
    ({"quantizer": "lfq", "num_embeddings": 64, "lfq_entropy_groups": 4}, r"divide the 6 bits.*\[1, 2, 3, 6\]"),
    ({"quantizer": "lfq", "lfq_entropy_temperature": 0.0}, r"lfq_entropy_temperature must be > 0"),
    ({"quantizer": "lfq", "lfq_batch_maximization_weight": -1.0}, r"lfq_batch_maximization_weight must be >= 0"),
    ({"num_quantizers": 2.5}, r"num_quantizers must be an integer"),
    ({"quantizer": "fsq", "fsq_input_std": 0.0}, r"fsq_input_std must be > 0 .* or None for the paper's FSQ"),
    ({"fsq_input_std": 1.0}, r"fsq_input_std applies to quantizer='fsq' only"),
    ({"quantizer": "fsq", "fsq_input_std": "None"}, r"pass None \(null on the command line, --config_overrides "
                                                    r"fsq_input_std=null\)"),
    ({"rotation_trick": "yes"}, r"rotation_trick must be true or false"),
])
def test_bad_config_is_refused_with_a_clear_message(options, message):
    with pytest.raises(ValueError, match=message):
        VQVAEConfig(**options)


def test_decode_indices_refuses_codes_of_the_wrong_depth():
    model = tiny_vqvae(num_quantizers=2).eval()
    with pytest.raises(ValueError, match=r"shape \(batch, 2, 4, 4\) \(num_quantizers=2\)"):
        model.decode_indices(torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 16\)"):
        model.decode_indices(torch.full((1, 2, 4, 4), 16))
    with pytest.raises(ValueError, match=r"shape \(batch, 4, 4\), got \(1, 2, 4, 4\)"):
        tiny_vqvae().decode_indices(torch.zeros(1, 2, 4, 4, dtype=torch.long))


# ---------------------------------------------------------------------------------------------------------- distributed

# Every configuration whose quantizer keeps state or batch statistics: EMA codebook with k-means and restarts (a
# threshold of 1, so that restarts happen), SimVQ, LFQ's batch entropy, and a residual stack.
DISTRIBUTED = {
    "vq": {"dead_code_threshold": 1, "ema_decay": 0.8},
    "simvq": {"quantizer": "simvq", "rotation_trick": True},
    "lfq": {"quantizer": "lfq", "lfq_entropy_temperature": 0.5},
    "residual_vq": {"num_quantizers": 2, "dead_code_threshold": 1},
    "fsq": {"quantizer": "fsq", "fsq_levels": (4, 4)},
}


def train_steps(options: dict, images: torch.Tensor, steps: int = 3, wrap=None) -> dict[str, torch.Tensor]:
    """A few SGD steps of a tiny VQ-VAE on `images` (seeded model and draws); its state dict."""
    torch.manual_seed(0)
    model = VQVAEModel(VQVAEConfig(image_size=8, num_channels=3, hidden_size=8, num_residual_blocks=1,
                                   num_downsamples=1, num_embeddings=16, embedding_dim=4, **options)).train()
    trained = wrap(model) if wrap else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    torch.manual_seed(1)  # the quantizers' draws (k-means starts, restarts): rank 0 draws as the single process
    for _ in range(steps):
        optimizer.zero_grad()
        trained(images).loss.backward()
        optimizer.step()
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def global_batch() -> torch.Tensor:
    return torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(7))


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=120))
    try:
        shard = global_batch().chunk(world_size)[rank]
        states = {name: train_steps(options, shard, wrap=DistributedDataParallel)
                  for name, options in DISTRIBUTED.items()}
        torch.save(states, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_train_the_codebooks_of_one_process_on_the_global_batch(tmp_path):
    """DDP over 2 gloo processes, each with half of the global batch, against one process with all of it: the
    codebooks (EMA state, k-means, restarts), SimVQ's map, LFQ's projections (trained through the batch entropy),
    FSQ's running statistics and every other weight agree to float rounding, and are identical across the two
    processes."""
    start_method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True,
                       start_method=start_method)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    worst = 0.0
    for name, options in DISTRIBUTED.items():
        single = train_steps(options, global_batch())
        for key, tensor in single.items():
            assert torch.equal(ranks[0][name][key], ranks[1][name][key]), (name, key)
            if tensor.is_floating_point():
                assert torch.isfinite(tensor).all(), (name, key)
                worst = max(worst, (ranks[0][name][key] - tensor).abs().max().item())
            else:
                assert torch.equal(ranks[0][name][key], tensor), (name, key)
    assert worst <= 1e-6, worst
    restarted = ranks[0]["vq"]["quantizer.steps_since_used"]
    assert ranks[0]["vq"]["quantizer.initialized"].item() == 1 and restarted.max() <= 1
    print(f"max |codebook difference| between 2 processes and 1: {worst:.2e}")


def test_global_batch_helpers_in_one_process():
    from hf_autoencoders.models.quantizers import gather_rows, global_sum, sample_rows

    rows = torch.arange(12.0).view(6, 2)
    assert gather_rows(rows) is rows
    torch.manual_seed(3)
    expected = rows[torch.randint(6, (4,))]
    torch.manual_seed(3)
    assert torch.equal(sample_rows(rows, 4), expected)
    value = torch.ones(3, requires_grad=True)
    assert global_sum(value) is value
    assert math.isclose(FiniteScalarQuantizer(VQVAEConfig(quantizer="fsq", fsq_levels=(4, 4))).num_embeddings, 16)


# ---------------------------------------------------------------------------------------- codebook health in evaluate


def test_codebook_health_is_measured_over_the_whole_set_per_depth():
    from hf_autoencoders.evaluation import evaluate

    model = tiny_vqvae(num_quantizers=2, num_embeddings=32).train()
    model(torch.rand(16, 3, 16, 16))
    model.eval()
    images = torch.rand(10, 3, 16, 16)
    results, histogram = evaluate(model, images, batch_size=3, progress=False, return_code_histogram=True)
    with torch.no_grad():
        codes = model.encode_indices(images)  # (10, 2, 4, 4)
    expected = torch.stack([torch.bincount(codes[:, d].flatten(), minlength=32) for d in range(2)])
    assert torch.equal(histogram, expected) and histogram.sum() == 10 * 2 * 16
    for d in range(2):
        used = int((expected[d] > 0).sum())
        probs = expected[d].double() / expected[d].sum()
        entropy = -torch.special.xlogy(probs, probs).sum().item()
        assert results[f"codebook_usage_depth{d + 1}"] == pytest.approx(used / 32)
        assert results[f"codebook_dead_codes_depth{d + 1}"] == 32 - used
        assert results[f"codebook_entropy_depth{d + 1}"] == pytest.approx(entropy)
        assert results[f"codebook_perplexity_depth{d + 1}"] == pytest.approx(math.exp(entropy))
    assert results["codebook_dead_codes"] == 64 - int((expected > 0).sum())
    assert results["codebook_usage"] == pytest.approx(int((expected > 0).sum()) / 64)
    json.dumps(results)

    # one depth: the histogram (1, K) and no per-depth keys; the set's usage, not a batch's
    single = tiny_vqvae(num_embeddings=32).train()
    single(torch.rand(16, 3, 16, 16))
    single.eval()
    results, histogram = evaluate(single, images, batch_size=1, progress=False, return_code_histogram=True)
    assert histogram.shape == (1, 32) and not any("depth" in key for key in results)
    with torch.no_grad():
        per_batch = max(single.encode_indices(image[None]).unique().numel() for image in images)
    assert results["codebook_usage"] == pytest.approx(int((histogram > 0).sum()) / 32)
    assert results["codebook_usage"] > per_batch / 32


class _Reducer:
    """What `evaluate` asks of an accelerate `Accelerator`: the process index and a summing reduce."""

    def __init__(self):
        self.process_index = dist.get_rank()

    def reduce(self, tensor, reduction="sum"):
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor


def _evaluate_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    from hf_autoencoders.evaluation import evaluate

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=120))
    try:
        model, images = _evaluated_model()
        shard = images[rank::world_size]  # 11 images: uneven shards
        results, histogram = evaluate(model, shard, batch_size=4, progress=False, accelerator=_Reducer(),
                                      return_code_histogram=True)
        torch.save({"results": results, "histogram": histogram}, f"{out_dir}/eval{rank}.pt")
    finally:
        dist.destroy_process_group()


def _evaluated_model():
    model = tiny_vqvae(num_quantizers=2, num_embeddings=32).eval()
    return model, torch.rand(11, 3, 16, 16, generator=torch.Generator().manual_seed(3))


def test_codebook_health_is_exact_over_two_processes(tmp_path):
    from hf_autoencoders.evaluation import evaluate

    start_method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_evaluate_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True,
                       start_method=start_method)
    model, images = _evaluated_model()
    results, histogram = evaluate(model, images, batch_size=4, progress=False, return_code_histogram=True)
    for rank in range(2):
        saved = torch.load(tmp_path / f"eval{rank}.pt")
        assert torch.equal(saved["histogram"], histogram)  # exact: integer counts summed over processes
        codebook = {k: v for k, v in results.items() if k.startswith("codebook_")}
        assert {k: saved["results"][k] for k in codebook} == codebook


# ------------------------------------------------------------------------------------------ a prior over residual codes


def residual_prior(depth: int = 3, num_classes: int = 0, seed: int = 0):
    from transformers import AutoModelForCausalLM

    from hf_autoencoders.models import code_priors

    torch.manual_seed(seed)
    config = code_priors.transformer_prior_config(16, 4, num_classes=num_classes, hidden_size=32, num_layers=1,
                                                  num_heads=2, num_quantizers=depth)
    return AutoModelForCausalLM.from_config(config)


def test_residual_token_layout_is_depth_first_per_position():
    from hf_autoencoders.models import code_priors

    prior = residual_prior(depth=2, num_classes=3)
    config = prior.config
    # codes 0 .. 2K-1, BOS 2K, classes 2K+1+y, the null class of guidance 2K+1+C
    assert config.num_quantizers == 2 and config.vocab_size == 2 * 16 + 1 + 3 + 1 and config.bos_token_id == 32
    assert code_priors.null_class_token(config) == 36
    assert config.n_positions == 2 + 16 * 2
    codes = torch.randint(16, (2, 2, 4, 4))
    tokens = code_priors.code_tokens(config, codes, class_labels=torch.tensor([0, 2]))
    assert tokens[:, 0].tolist() == [32, 32] and tokens[:, 1].tolist() == [33, 35]
    # cell (i, j), depth d is token 2 + 2 (4 i + j) + d, and depth d's code c is d K + c
    assert tokens[0, 2 + 2 * (4 * 1 + 3) + 1] == 16 + codes[0, 1, 1, 3]
    assert tokens[1, 2 + 2 * (4 * 2 + 0) + 0] == codes[1, 0, 2, 0]
    assert torch.equal(code_priors.residual_codes(config, tokens[:, 2:]), codes)
    # a prior of one depth keeps the layout it had
    plain = code_priors.transformer_prior_config(16, 4)
    assert "num_quantizers" not in plain.to_diff_dict() and plain.vocab_size == 17 and plain.bos_token_id == 16
    with pytest.raises(ValueError, match=r"shape \(batch, 2, 4, 4\) \(the prior's grid_size, n = num_quantizers=2\)"):
        code_priors.code_tokens(config, torch.zeros(1, 4, 4, dtype=torch.long), class_labels=0)


def test_residual_code_logits_are_each_codes_own_depth():
    from hf_autoencoders.evaluation import priors
    from hf_autoencoders.models import code_priors

    prior = residual_prior(depth=3).eval()
    codes = torch.randint(16, (2, 3, 4, 4))
    with torch.no_grad():
        logits = priors.code_logits(prior, codes)
        full = prior(input_ids=code_priors.code_tokens(prior.config, codes)).logits
        log_prob = priors.log_prob_codes(prior, codes)
    assert logits.shape == (2, 3, 4, 4, 16)
    expected = 0.0
    for i in range(4):
        for j in range(4):
            for d in range(3):
                position = 3 * (4 * i + j) + d  # the logits at sequence position P-1+t predict code token t
                torch.testing.assert_close(logits[:, d, i, j], full[:, position, 16 * d:16 * (d + 1)])
                expected = expected + torch.log_softmax(full[:, position, 16 * d:16 * (d + 1)], -1)[
                    torch.arange(2), codes[:, d, i, j]]
    torch.testing.assert_close(log_prob, expected)


def test_a_prior_over_residual_codes_learns_samples_and_decodes():
    """Trained on the residual codes of two images, a transformer prior gives them most of its mass, samples them
    (codes of the right depth at each step, the same with and without the key/value cache; the greedy sample is one
    of them) and the VQ-VAE decodes the samples."""
    from hf_autoencoders.evaluation import priors
    from hf_autoencoders.models import code_priors

    vqvae = tiny_vqvae(num_quantizers=3).train()
    vqvae(torch.rand(16, 3, 16, 16))
    vqvae.eval()
    with torch.no_grad():
        codes = vqvae.encode_indices(torch.rand(2, 3, 16, 16))
    assert codes.shape == (2, 3, 4, 4) and not torch.equal(codes[0], codes[1])
    prior = residual_prior(depth=3).train()
    optimizer = torch.optim.Adam(prior.parameters(), lr=3e-3)
    tokens = code_priors.code_tokens(prior.config, codes)
    for _ in range(300):
        optimizer.zero_grad()
        prior(input_ids=tokens, labels=code_priors.language_model_labels(prior.config, tokens)).loss.backward()
        optimizer.step()
    prior.eval()
    with torch.no_grad():
        nll = -priors.log_prob_codes(prior, codes)
    assert nll.max() < 2 * math.log(2)  # about log 2 (which of the two maps), where uniform codes cost 48 log K

    vqvae.check_prior(prior)
    generator = torch.Generator().manual_seed(0)
    samples = code_priors.sample_codes(prior, 6, generator=generator)
    again = code_priors.sample_codes(prior, 6, generator=torch.Generator().manual_seed(0), use_cache=False)
    assert samples.shape == (6, 3, 4, 4) and torch.equal(samples, again)
    def seen(sample):
        return torch.equal(sample, codes[0]) or torch.equal(sample, codes[1])

    assert sum(seen(s) for s in samples) >= 4  # the two maps hold most of the mass (the NLL above)
    assert all(seen(s) for s in code_priors.sample_codes(prior, 2, temperature=0))
    images = vqvae.sample(3, generator=generator, prior=prior, temperature=0)
    assert images.shape == (3, 3, 16, 16) and torch.isfinite(images).all()
    metrics = priors.prior_nll_metrics(nll, prior.config)
    assert metrics["nll_per_code_nats"] == pytest.approx(nll.double().mean().item() / 48)


def test_priors_refuse_codes_of_another_depth():
    from hf_autoencoders.models import PixelCNNPriorConfig, PixelCNNPriorModel

    residual = tiny_vqvae(num_quantizers=2)
    pixelcnn = PixelCNNPriorModel(PixelCNNPriorConfig(num_embeddings=16, grid_size=4, hidden_size=8, num_layers=1))
    with pytest.raises(ValueError, match=r"2 code\(s\) per position .* a PixelCNN prior models one code per position"):
        residual.check_prior(pixelcnn)
    with pytest.raises(ValueError, match="PixelCNN prior models one code per position"):
        residual.sample(1, prior=pixelcnn)
    with pytest.raises(ValueError, match=r"gives 2 code\(s\) per position .* the prior models 3"):
        residual.check_prior(residual_prior(depth=3))
    with pytest.raises(ValueError, match=r"gives 1 code\(s\) per position .* the prior models 3"):
        tiny_vqvae().check_prior(residual_prior(depth=3))


def test_code_usage_picture(tmp_path):
    from PIL import Image

    from hf_autoencoders.plots import plot_code_usage

    histogram = torch.stack([torch.randint(1, 50, (64,)), torch.cat([torch.randint(1, 9, (40,)), torch.zeros(24)])])
    path = plot_code_usage(histogram, tmp_path / "sub" / "usage.png", title="residual VQ")
    assert Image.open(path).size[0] > 300
    plot_code_usage({"vq": histogram[0], "rvq": histogram}, tmp_path / "compare.png")
    with pytest.raises(ValueError, match="non-negative code counts"):
        plot_code_usage(torch.zeros(2, 8), tmp_path / "empty.png")


# ----------------------------------------------------------------------------------------- training runs and the card


def test_a_training_run_puts_codebook_health_and_its_picture_on_the_card(tmp_path):
    from hf_autoencoders.training import parse_args, run_training

    out = tmp_path / "rvq"
    args = ["--output_dir", str(out), "--do_train", "--do_eval", "--max_steps", "3", "--hidden_size", "8",
            "--per_device_train_batch_size", "16", "--max_eval_samples", "48", "--disable_tqdm", "true",
            "--config_overrides", "num_quantizers=2,num_embeddings=32,embedding_dim=8,rotation_trick=true"]
    metrics = run_training(*parse_args(args, model_type="vqvae"))
    assert {"eval_codebook_usage_depth2", "eval_codebook_dead_codes", "eval_codebook_perplexity_depth1"} <= set(metrics)
    assert (out / "code_usage.png").is_file()
    card = (out / "README.md").read_text()
    assert "| codebook_dead_codes |" in card and "| codebook_usage_depth1 |" in card and "code_usage.png" in card
    assert "| `num_quantizers` | 2 |" in card and "| `rotation_trick` | True |" in card
    loaded = AutoModel.from_pretrained(out)
    assert loaded.config.num_quantizers == 2 and loaded.config.rotation_trick


def test_prior_training_on_residual_codes_and_the_pixelcnn_refusal(tmp_path):
    from hf_autoencoders.cli import main as cli_main
    from hf_autoencoders.training import parse_prior_args
    from hf_autoencoders.training import prior as P

    vqvae = tiny_vqvae(num_quantizers=2, num_embeddings=16, image_size=8, num_channels=1)
    vqvae.save_pretrained(tmp_path / "vqvae")
    flags = ["--max_train_samples", "64", "--max_eval_samples", "32", "--num_samples", "4", "--max_steps", "2",
             "--save_strategy", "no", "--disable_tqdm", "true", "--report_to", "none"]
    args = parse_prior_args(["--vqvae", str(tmp_path / "vqvae"), "--output_dir", str(tmp_path / "prior"),
                             "--prior_type", "transformer", "--hidden_size", "16", "--num_layers", "1",
                             "--num_heads", "2", "--do_train", "--do_eval", *flags])
    metrics = P.run_prior_training(*args)
    assert math.isfinite(metrics["test_nll_per_code_nats"]) and (tmp_path / "prior" / "samples.png").is_file()
    prior = P.load_model(str(tmp_path / "prior"))
    assert prior.config.num_quantizers == 2 and prior.config.vocab_size == 2 * 16 + 1
    assert "depth d's code c is the token d K + c" in (tmp_path / "prior" / "README.md").read_text()
    with pytest.raises(ValueError, match="PixelCNN prior models one code per position; pass --prior_type transformer"):
        P.run_prior_training(*parse_prior_args(["--vqvae", str(tmp_path / "vqvae"), "--output_dir",
                                                str(tmp_path / "pixelcnn"), "--prior_type", "pixelcnn",
                                                "--do_train", *flags]))
    assert not (tmp_path / "pixelcnn").exists()
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train-prior", "--vqvae", str(tmp_path / "vqvae"), "--output_dir", str(tmp_path / "pixelcnn"),
                  "--prior_type", "pixelcnn", "--do_train", *flags])
    assert exit_info.value.code == 2
