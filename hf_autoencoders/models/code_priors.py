"""Priors over VQ-VAE code maps: a transformers causal language model as the prior, and the functions that sample
code maps with either kind of prior (that one, or the gated `PixelCNNPriorModel`). Scoring them is evaluation's
(`hf_autoencoders.evaluation.priors`).

Both factorise a (h, w) map of codes c in raster order, c_1 .. c_L with L = h w, given an optional class y:

    log p(c | y) = sum_t log p(c_t | c_<t, y).

**The transformer prior** is a GPT-2 (`GPT2LMHeadModel`) over tokens laid out as

    code tokens   0 .. K-1       the VQ-VAE's codes
    start (BOS)   K
    class tokens  K+1 .. K+C     class y is token K+1+y (only when num_classes = C > 0)
    null class    K+1+C          "no class" (only when C > 0 and class_dropout > 0), for classifier-free guidance

and a map is the sequence [BOS, (K+1+y), c_1, ..., c_L]: the prefix (P = 1 or 2 tokens) conditions, the codes
follow. Its config is a plain `GPT2Config` with extra fields that say which codes it models and how:
`num_embeddings` (K), `grid_size` (h = w), `num_classes` (C), `class_dropout`, and the VQ-VAE it belongs to,
`vqvae_identity` (`vqvae_identity`) and `vqvae_name_or_path` (a Hub id, never a local path). It saves and loads
with `AutoModelForCausalLM` and no remote code, and samples through `generate()` with the key/value cache.

**Residual codes.** A VQ-VAE with residual quantization of depth n > 1 gives each position n codes c_{t,1..n}, one
per depth, each from that depth's own codebook (`indices` of shape (batch, n, h, w)). The transformer prior models
them depth-first within each position, positions in raster order:

    [BOS, (y), c_{1,1}, ..., c_{1,n}, c_{2,1}, ..., c_{L,n}],
    log p(c | y) = sum_t sum_d log p(c_{t,d} | c_<t, c_{t,<d}, y),

the factorisation of the RQ-Transformer (Lee et al., 2022), which gives each depth's code all of the previous
positions and the coarser depths of its own position. Depth d's code c is the token d K + c (d = 0 .. n-1), so the
code tokens are 0 .. nK-1, BOS is nK and class y is nK+1+y (K, BOS and class tokens as above for n = 1); the
config records `num_quantizers` = n (absent: 1). Separate tokens per depth because the depths' codebooks are
unrelated: code 5 of depth 1 and code 5 of depth 2 are different vectors, and one token would tie their
embeddings. One GPT-2 over the flattened L n tokens rather than the RQ-Transformer's two (a spatial transformer over
the L positions and a small depth transformer over the n codes of each): it is the same plain `GPT2LMHeadModel`,
which loads without remote code and samples with `generate()`, its key/value cache and every sampling option here,
and its learned positions tell both the cell and the depth of every token. It costs attention over L n tokens where
the RQ-Transformer's costs L^2 + L n^2; for the maps of this library (8 x 8, n <= 4: at most 256 tokens) that is
cheap, and the two-transformer design pays only for large maps and deep stacks. A PixelCNN prior models one code per
position and refuses residual codes.

Why GPT-2 rather than Llama: every sequence has the same length and position t is always the same cell (i, j) of the
map, so GPT-2's learned absolute position embeddings can learn the map's 2-d layout (borders, rows) directly, as in
VQGAN's transformer (itself a GPT-2); rotary embeddings only see 1-d offsets in raster order, which do not say where
a row starts or ends. GPT-2's two-matrix MLP and LayerNorm are also a little cheaper per
token than Llama's gated three-matrix MLP, and speed per sampled token is the point of this prior.

**Sampling** (`sample_codes`): the logits of the non-code tokens (BOS, class tokens) are set to -inf at every step,
so only codes are generated; then temperature, top-k and top-p are applied (transformers' own warpers), and the
next code is drawn by a logits processor that uses the caller's `torch.Generator` (inverse-CDF sampling) and
hands `generate()` a one-hot score, which its greedy step picks. `generate(do_sample=True)` would draw from the
global RNG instead; drawing with the generator keeps the contract of `PixelCNNPriorModel.generate`: the same
generator state gives the same samples, without touching the global RNG.

**Classifier-free guidance** (Ho & Salimans, 2022; as LlamaGen, MaskGIT and VAR sample class-conditional images): a
prior trained with `class_dropout` = p sees the null class instead of the true one in a fraction p of its training
maps, so one network models both p(c_t | c_<t, y) and p(c_t | c_<t). Sampling with guidance scale s draws from

    l_t = l_t^uncond + s (l_t^cond - l_t^uncond)

(logits; s = 1 is plain conditional sampling, s = 0 unconditional, s > 1 favours what is typical of the class over
what is typical of all images), then temperature, top-k and top-p. Both logits come from ONE forward per step: the
n conditional sequences [BOS, y, c_<t] and their n unconditional twins [BOS, null, c_<t] are stacked into a batch of
2n through the key/value cache, and the code drawn for a map is appended to both of its sequences.

**The VQ-VAE a prior belongs to** (`vqvae_identity`): a hash of the VQ-VAE's code layout and of the weights that turn
an image into codes (the encoder and the quantizer: the codebook, or FSQ's projections), recorded in the config of a
prior of either kind when it is trained, and checked wherever a prior meets a VQ-VAE (`check_prior_fits`). A prior of
another VQ-VAE is refused even when K and the grid agree (e.g. a VQ-VAE retrained in place): its codes would mean
something else. Fine-tuning the decoder alone keeps the identity, as it keeps the codes' meaning.
"""

import hashlib
import math
from pathlib import Path

import torch
from transformers import (
    GPT2Config,
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.generation.streamers import BaseStreamer
from transformers.utils.logging import get_logger, tqdm

from .configuration_pixelcnn_prior import PixelCNNPriorConfig

logger = get_logger(__name__)  # transformers' logger, for warning_once


# ------------------------------------------------------------------------------------------------- the config


DEFAULT_CLASS_DROPOUT = 0.1  # of a class-conditional prior: the rate of LlamaGen's and DiT's label dropout
# The transformer prior's sampling defaults: the knobs that gave the lowest sample FD in benchmarks/generation.py
# (docs/models.md). The guidance scale applies to a prior that has a null class. (A PixelCNN prior samples at
# temperature 1 by default, as in the VQ-VAE paper.)
DEFAULT_GUIDANCE_SCALE = 1.5
DEFAULT_TEMPERATURE = 0.8


def transformer_prior_config(
    num_embeddings: int,
    grid_size: int,
    num_classes: int = 0,
    class_dropout: float | None = None,
    vqvae_identity: str | None = None,
    vqvae_name_or_path: str | None = None,
    hidden_size: int = 128,
    num_layers: int = 3,
    num_heads: int = 4,
    dropout: float = 0.0,
    num_quantizers: int = 1,
) -> GPT2Config:
    r"""
    The `GPT2Config` of a transformer prior over (grid_size, grid_size) maps of `num_embeddings` codes; build the
    model with `AutoModelForCausalLM.from_config(config)` (a `GPT2LMHeadModel`).

    Args:
        num_embeddings (`int`): K, the VQ-VAE's codebook size; codes are tokens 0 .. K-1.
        grid_size (`int`): h = w of the VQ-VAE's code map (its `latent_grid_size`); sequences hold P + h*w tokens.
        num_classes (`int`, defaults to 0): C > 0 for p(c | y), y in [0, C), given as token K+1+y after BOS.
        class_dropout (`float` in [0, 1), *optional*): of a class-conditional prior, the probability p that a
            training map is shown with the null class (token K+1+C) instead of its own, so that the prior also learns
            p(c) and can be sampled with classifier-free guidance; 0 builds no null class (no guidance). Default:
            `DEFAULT_CLASS_DROPOUT` when `num_classes` > 0, else 0 (an unconditional prior has no classes to drop).
        vqvae_identity (`str`, *optional*): `vqvae_identity(vqvae)` of the VQ-VAE whose codes the prior models,
            checked wherever the prior meets a VQ-VAE.
        vqvae_name_or_path (`str`, *optional*): the Hub id of that VQ-VAE, for the card and for users (a local path
            is refused: it means nothing on another machine).
        hidden_size (`int`, defaults to 128): width d of the blocks (`n_embd`); the MLP is 4 d wide.
        num_layers (`int`, defaults to 3): transformer blocks (`n_layer`). Sampling costs about one fixed step per
            block and token on small maps, so fewer blocks sample faster; the default is the depth that reached the
            lowest NLL for its training time on 7x7 and 8x8 maps (benchmarks/README.md).
        num_heads (`int`, defaults to 4): attention heads (`n_head`); must divide `hidden_size`.
        dropout (`float`, defaults to 0.0): of the embeddings, attention and residual branches.
        num_quantizers (`int`, defaults to 1): n, the VQ-VAE's depth of residual quantization: n codes per position,
            depth-first (module docstring); recorded in the config when n > 1.
    """
    for name, value, low in (("num_embeddings", num_embeddings, 2), ("grid_size", grid_size, 1),
                             ("num_classes", num_classes, 0), ("hidden_size", hidden_size, 1),
                             ("num_layers", num_layers, 1), ("num_heads", num_heads, 1),
                             ("num_quantizers", num_quantizers, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size ({hidden_size}) must be a multiple of num_heads ({num_heads}).")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}.")
    class_dropout = check_class_dropout(class_dropout, num_classes)
    if vqvae_name_or_path is not None and not is_hub_id(vqvae_name_or_path):
        raise ValueError(f"vqvae_name_or_path must be a Hub id (owner/name), got {vqvae_name_or_path!r}: a local "
                         "path means nothing on another machine; leave it None (vqvae_identity ties the prior to its "
                         "VQ-VAE).")
    prefix = 1 + (num_classes > 0)
    depth = {"num_quantizers": num_quantizers} if num_quantizers > 1 else {}  # configs of one depth as before
    return GPT2Config(
        vocab_size=num_embeddings * num_quantizers + 1 + num_classes + (class_dropout > 0),
        n_positions=prefix + grid_size**2 * num_quantizers,
        n_embd=hidden_size,
        n_layer=num_layers,
        n_head=num_heads,
        n_inner=4 * hidden_size,
        activation_function="gelu_pytorch_tanh",  # one fused kernel; GPT-2's "gelu_new" is the same curve in 5 ops
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=num_embeddings * num_quantizers,
        eos_token_id=None,  # every map has exactly h*w codes: generation stops on length only
        pad_token_id=None,
        num_embeddings=num_embeddings,
        grid_size=grid_size,
        num_classes=num_classes,
        class_dropout=class_dropout,
        vqvae_identity=vqvae_identity,
        vqvae_name_or_path=vqvae_name_or_path,
        **depth,
    )


def num_quantizers(config) -> int:
    """n, the codes per position of the maps a prior models (1 for a PixelCNN and for a prior of one depth)."""
    return getattr(config, "num_quantizers", 1)


def num_code_tokens(config) -> int:
    """n K: the code tokens 0 .. nK-1, depth d's code c being the token d K + c; BOS is the token after them."""
    return config.num_embeddings * num_quantizers(config)


def check_class_dropout(class_dropout: float | None, num_classes: int) -> float:
    """`class_dropout` resolved (None: `DEFAULT_CLASS_DROPOUT` for a class-conditional prior, 0 for an
    unconditional one) and checked: a number in [0, 1), and 0 without classes."""
    if class_dropout is None:
        return DEFAULT_CLASS_DROPOUT if num_classes > 0 else 0.0
    if not isinstance(class_dropout, (int, float)) or isinstance(class_dropout, bool) \
            or not 0 <= class_dropout < 1:
        raise ValueError(f"class_dropout must lie in [0, 1) (the probability of training a map with the null class), "
                         f"got {class_dropout!r}.")
    if class_dropout > 0 and num_classes == 0:
        raise ValueError("class_dropout applies to a class-conditional prior (num_classes > 0; --class_conditional); "
                         "an unconditional prior has no class to drop.")
    return float(class_dropout)


def is_hub_id(name: str) -> bool:
    """Whether `name` reads as a Hub repository id, owner/name, rather than a local path."""
    return (isinstance(name, str) and name.count("/") == 1 and not name.startswith((".", "/", "~"))
            and not Path(name).exists() and all(part.strip() for part in name.split("/")))


def null_class_token(config) -> int | None:
    """The null class's token K+1+C of a transformer prior trained with label dropout (`class_dropout` > 0), or None
    (an unconditional prior, one trained without label dropout, one saved before guidance existed, a PixelCNN)."""
    if getattr(config, "model_type", None) == PixelCNNPriorConfig.model_type:
        return None
    num_classes = getattr(config, "num_classes", 0) or 0
    if num_classes == 0 or not (getattr(config, "class_dropout", 0) or 0) > 0:
        return None
    return num_code_tokens(config) + 1 + num_classes


def is_transformer_prior_config(config) -> bool:
    """Whether `config` is that of a transformer prior over VQ-VAE codes (a causal LM config carrying the code-prior
    fields, with a vocabulary of K codes, BOS, C class tokens and the null class where it has one)."""
    if getattr(config, "model_type", None) == PixelCNNPriorConfig.model_type:
        return False
    values = [getattr(config, name, None) for name in ("num_embeddings", "grid_size", "num_classes", "vocab_size")]
    if any(not isinstance(value, int) for value in values):
        return False
    num_embeddings, _, num_classes, vocab_size = values
    has_null = null_class_token(config) is not None
    return vocab_size == num_embeddings * num_quantizers(config) + 1 + num_classes + has_null


def prior_type(prior) -> str:
    """"pixelcnn" or "transformer"; a clear ValueError for any other model (an autoencoder, a base transformer without
    its language-model head, a language model that is not a prior over codes)."""
    config = getattr(prior, "config", None)
    if getattr(config, "model_type", None) == PixelCNNPriorConfig.model_type:
        return "pixelcnn"
    name = type(prior).__name__
    if is_transformer_prior_config(config):
        if not hasattr(prior, "generate") or prior.get_output_embeddings() is None:
            raise ValueError(f"prior is a {name}, the transformer prior's base model without its language-model head; "
                             "load it with AutoModelForCausalLM.from_pretrained(...) instead of AutoModel.")
        return "transformer"
    if hasattr(prior, "generate") and config is not None and not hasattr(config, "grid_size"):
        raise ValueError(f"prior is a {name} that is not a prior over VQ-VAE codes (its config records no "
                         "num_embeddings / grid_size); train one with `hf-autoencoders train-prior --prior_type "
                         "transformer`.")
    raise ValueError(f"prior must be a prior over VQ-VAE codes (a PixelCNNPriorModel, or the causal LM of "
                     f"`train-prior --prior_type transformer`), got {name}.")


def vqvae_identity(vqvae) -> str:
    """The identity of a VQ-VAE as its priors record it: "sha256:" and 16 hex digits of a hash of its code layout
    (model type, K, code dimension, grid, image size and channels) and of every floating-point tensor of its encoder
    and quantizer (codebook, projections, EMA statistics) as float32, in name order. Integer buffers (counters,
    flags) are left out: they do not change what a code means. What the decoder does with the codes is left out too,
    so fine-tuning the decoder keeps a VQ-VAE's priors."""
    config = vqvae.config
    digest = hashlib.sha256(b"hf_autoencoders VQ-VAE identity v1\0")
    layout = (config.model_type, config.num_embeddings, config.embedding_dim, config.latent_grid_size,
              config.image_size, config.num_channels)
    digest.update(repr(layout).encode())
    for part in ("encoder", "quantizer"):
        for name, tensor in sorted(getattr(vqvae, part).state_dict().items()):
            if not tensor.is_floating_point():
                continue
            values = tensor.detach().to(device="cpu", dtype=torch.float32).contiguous()
            digest.update(f"{part}.{name}{tuple(values.shape)}".encode())
            digest.update(values.numpy().tobytes())
    return f"sha256:{digest.hexdigest()[:16]}"


def _reduced_precision(vqvae) -> bool:
    return any(t.is_floating_point() and t.dtype not in (torch.float32, torch.float64)
               for part in ("encoder", "quantizer") for t in getattr(vqvae, part).state_dict().values())


def check_prior_fits(vqvae, prior) -> str:
    """Refuse a prior of the wrong kind, one trained for another codebook size K or code-map size, or one trained on
    the codes of another VQ-VAE (its recorded `vqvae_identity` differs from this one's, even at equal K and grid).
    A prior saved before identities were recorded gets a warning that it cannot be checked. Returns
    `prior_type(prior)`."""
    kind = prior_type(prior)
    config, vqvae_config = prior.config, vqvae.config
    depth, prior_depth = getattr(vqvae_config, "num_quantizers", 1), num_quantizers(config)
    if depth != prior_depth:
        refuse = ("a PixelCNN prior models one code per position; train a transformer prior "
                  "(train-prior --prior_type transformer)" if kind == "pixelcnn" else
                  "use the VQ-VAE the prior was trained on, or train a prior on this VQ-VAE's codes")
        raise ValueError(f"This VQ-VAE gives {depth} code(s) per position (num_quantizers={depth}, residual "
                         f"quantization), but the prior models {prior_depth}; {refuse}.")
    ours = (vqvae_config.num_embeddings, vqvae_config.latent_grid_size)
    theirs = (config.num_embeddings, config.grid_size)
    recorded_name = getattr(config, "vqvae_name_or_path", None)
    trained_on = f" (trained on the codes of {recorded_name})" if recorded_name else ""
    if theirs != ours:
        raise ValueError(
            f"The prior models {theirs[1]}x{theirs[1]} maps of K = {theirs[0]} codes{trained_on}, but this VQ-VAE has "
            f"{ours[1]}x{ours[1]} maps of K = {ours[0]} codes; use the VQ-VAE the prior was trained on, or train a "
            "prior on this VQ-VAE's codes."
        )
    recorded = getattr(config, "vqvae_identity", None)
    if not recorded:
        logger.warning_once("This prior records no VQ-VAE identity (it was saved before priors recorded one), so it "
                            "cannot be checked that it was trained on this VQ-VAE's codes; train it again to have it "
                            "checked.")
        return kind
    identity = vqvae_identity(vqvae)
    if identity != recorded:
        if _reduced_precision(vqvae):
            logger.warning_once(f"This VQ-VAE's weights are in reduced precision, so its identity ({identity}) cannot "
                                f"be compared with the one the prior records ({recorded}); load the VQ-VAE in float32 "
                                "to have the prior checked.")
            return kind
        raise ValueError(
            f"The prior was trained on the codes of another VQ-VAE{trained_on}: it records the VQ-VAE identity "
            f"{recorded}, this VQ-VAE's is {identity} (same K and grid, other encoder or codebook weights: e.g. a "
            "VQ-VAE trained again in the same folder). Its codes mean something else here. Sample with the VQ-VAE the "
            "prior was trained on, or train a prior on this VQ-VAE's codes (hf-autoencoders train-prior --vqvae ...)."
        )
    return kind


# --------------------------------------------------------------------------------------------- the token layout


def prefix_length(config) -> int:
    """P: BOS, then the class token of a class-conditional prior."""
    return 1 + (config.num_classes > 0)


def code_map_shape(config) -> tuple[int, ...]:
    """The shape of one image's codes: (h, w), or (n, h, w) for residual codes of depth n > 1."""
    size, depth = config.grid_size, num_quantizers(config)
    return (size, size) if depth == 1 else (depth, size, size)


def check_codes(config, codes, name: str = "codes") -> torch.LongTensor:
    """`codes` as a long tensor of shape (batch, grid_size, grid_size), or (batch, n, grid_size, grid_size) for
    residual codes of depth n > 1, with values in [0, num_embeddings)."""
    if not isinstance(codes, torch.Tensor) or codes.dtype.is_floating_point or codes.dtype.is_complex \
            or codes.dtype == torch.bool:
        got = codes.dtype if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise ValueError(f"{name} must be an integer tensor of codes, got {got}.")
    shape = code_map_shape(config)
    if codes.ndim != 1 + len(shape) or tuple(codes.shape[1:]) != shape:
        depth = f", n = num_quantizers={shape[0]}" if len(shape) == 3 else ""
        raise ValueError(f"{name} must have shape (batch, {', '.join(map(str, shape))}) (the prior's grid_size"
                         f"{depth}), got {tuple(codes.shape)}.")
    if codes.numel() and (codes.min() < 0 or codes.max() >= config.num_embeddings):
        raise ValueError(f"{name} must hold codes in [0, num_embeddings={config.num_embeddings}), got values in "
                         f"[{int(codes.min())}, {int(codes.max())}].")
    return codes.long()


def check_class_labels(config, class_labels, batch_size: int) -> torch.LongTensor | None:
    """Labels of shape (batch_size,) for a class-conditional prior (an int is repeated, a list of ints read as a
    tensor), None for an unconditional one; a ValueError saying what to pass otherwise. Labels lie in [0, C): the
    null class is no label a caller passes (`prefix_tokens(..., null_class=True)` and `drop_class_tokens` use it)."""
    num_classes = config.num_classes
    if num_classes == 0:
        if class_labels is not None:
            raise ValueError("class_labels were given, but this prior is unconditional (num_classes=0): it was trained "
                             "without labels. Pass class_labels=None, or train a class-conditional prior "
                             "(train-prior --class_conditional on a labelled dataset).")
        return None
    if class_labels is None:
        raise ValueError(f"class_labels are required: this prior is class-conditional (num_classes={num_classes}); "
                         f"pass an int or a tensor of shape ({batch_size},) with labels in [0, {num_classes}).")
    if isinstance(class_labels, int) and not isinstance(class_labels, bool):
        class_labels = torch.full((batch_size,), class_labels, dtype=torch.long)
    elif isinstance(class_labels, (list, tuple)) and all(isinstance(y, int) and not isinstance(y, bool)
                                                         for y in class_labels):
        class_labels = torch.tensor(class_labels, dtype=torch.long).reshape(len(class_labels))
    if not isinstance(class_labels, torch.Tensor) or class_labels.dtype.is_floating_point \
            or class_labels.dtype.is_complex or class_labels.dtype == torch.bool:
        got = class_labels.dtype if isinstance(class_labels, torch.Tensor) else type(class_labels).__name__
        raise ValueError(f"class_labels must be an int, a list of ints or an integer tensor, got {got}.")
    if tuple(class_labels.shape) != (batch_size,):
        raise ValueError(f"class_labels must have shape ({batch_size},), got {tuple(class_labels.shape)}.")
    if batch_size and (class_labels.min() < 0 or class_labels.max() >= num_classes):
        raise ValueError(f"class_labels must lie in [0, num_classes={num_classes}), got values in "
                         f"[{int(class_labels.min())}, {int(class_labels.max())}].")
    return class_labels.long()


def prefix_tokens(config, batch_size: int, class_labels=None, device=None, null_class: bool = False
                  ) -> torch.LongTensor:
    """The (batch, P) prefix: BOS = K, then K+1+y for class y (nK and nK+1+y for residual codes of depth n), or with `null_class` the null class K+1+C in every
    row (the unconditional sequences of classifier-free guidance; `class_labels` are then not read)."""
    bos = torch.full((batch_size, 1), num_code_tokens(config), dtype=torch.long, device=device)
    if null_class:
        null = null_class_token(config)
        if null is None:
            raise ValueError("This prior has no null class (it was not trained with label dropout).")
        return torch.cat([bos, torch.full_like(bos, null)], dim=1)
    class_labels = check_class_labels(config, class_labels, batch_size)
    if class_labels is None:
        return bos
    return torch.cat([bos, num_code_tokens(config) + 1 + class_labels.to(device)[:, None]], dim=1)


def code_tokens(config, codes, class_labels=None) -> torch.LongTensor:
    """The (batch, P + h*w*n) token sequences of code maps (batch, h, w) or residual codes (batch, n, h, w): prefix,
    then the codes in raster order, the n depths of each position in turn (depth d's code c as token d K + c)."""
    codes = check_codes(config, codes)
    prefix = prefix_tokens(config, len(codes), class_labels, device=codes.device)
    return torch.cat([prefix, residual_tokens(config, codes)], dim=1)


def residual_tokens(config, codes: torch.LongTensor) -> torch.LongTensor:
    """Codes (batch, h, w) or (batch, n, h, w) -> their tokens (batch, h*w*n), depth-first within each position."""
    depth = num_quantizers(config)
    if depth == 1:
        return codes.flatten(1)
    offsets = torch.arange(depth, device=codes.device) * config.num_embeddings
    return (codes.permute(0, 2, 3, 1) + offsets).flatten(1)


def residual_codes(config, tokens: torch.LongTensor) -> torch.LongTensor:
    """The inverse of `residual_tokens`: code tokens (batch, h*w*n) -> codes (batch, h, w) or (batch, n, h, w)."""
    size, depth = config.grid_size, num_quantizers(config)
    if depth == 1:
        return tokens.reshape(len(tokens), size, size)
    offsets = torch.arange(depth, device=tokens.device) * config.num_embeddings
    return (tokens.reshape(len(tokens), size, size, depth) - offsets).permute(0, 3, 1, 2)


def language_model_labels(config, tokens: torch.LongTensor) -> torch.LongTensor:
    """Targets for the causal LM's loss: the tokens, with -100 (ignored) on the prefix, so that the loss is the mean
    NLL per code."""
    labels = tokens.clone()
    labels[:, : prefix_length(config)] = -100
    return labels


def drop_class_tokens(config, input_ids: torch.LongTensor, generator: torch.Generator | None = None
                      ) -> torch.LongTensor:
    """Label dropout, for classifier-free guidance: token sequences (batch, P + L) whose class token is replaced by
    the null class's with probability `class_dropout`, independently per sequence (a new tensor; the input is left
    as it is). Sequences of a prior without a null class are returned unchanged."""
    null = null_class_token(config)
    if null is None:
        return input_ids
    device = generator.device if generator is not None else input_ids.device
    drop = torch.rand(len(input_ids), generator=generator, device=device).to(input_ids.device) < config.class_dropout
    dropped = input_ids.clone()
    dropped[:, 1] = torch.where(drop, null, input_ids[:, 1])
    return dropped


# ---------------------------------------------------------------------------------------------------- sampling


class CodeTokensOnly(LogitsProcessor):
    """Sets the scores of every non-code token (BOS, class tokens) to -inf; for residual codes of depth n > 1, also
    those of the other depths' codes: the t-th code generated (t = 0, 1, ...) is of depth t mod n, a token in
    [d K, (d + 1) K)."""

    def __init__(self, num_embeddings: int, num_quantizers: int = 1, prefix_length: int = 1):
        self.num_embeddings, self.num_quantizers, self.prefix_length = num_embeddings, num_quantizers, prefix_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.num_quantizers == 1:
            scores[:, self.num_embeddings:] = -float("inf")
            return scores
        depth = (input_ids.shape[1] - self.prefix_length) % self.num_quantizers
        start, stop = depth * self.num_embeddings, (depth + 1) * self.num_embeddings
        scores[:, :start] = -float("inf")
        scores[:, stop:] = -float("inf")
        return scores


def guided_logits(conditional: torch.Tensor, unconditional: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance, l = l_u + s (l_c - l_u), computed as l_c + (s - 1)(l_c - l_u): the same number, and
    exactly l_c at s = 1."""
    if guidance_scale == 1:
        return conditional
    return conditional + (guidance_scale - 1) * (conditional - unconditional)


class ClassifierFreeGuidance(LogitsProcessor):
    """For a batch of 2n sequences, the n conditional ones first and their n unconditional twins after, replaces the
    scores of both halves by the guided scores (`guided_logits`), so that whatever comes after (temperature, cuts,
    the draw with `GeneratorSampling(copies=2)`) treats a map's two sequences alike and appends the same code to
    both. Runs first, on the network's finite logits."""

    def __init__(self, guidance_scale: float):
        self.guidance_scale = guidance_scale

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        conditional, unconditional = scores.chunk(2)
        guided = guided_logits(conditional, unconditional, self.guidance_scale)
        return torch.cat([guided, guided])


class GeneratorSampling(LogitsProcessor):
    """Draws the next token ~ softmax(scores) with the caller's `torch.Generator` (on its device) and returns scores
    that are 0 at the drawn token and -inf elsewhere, so that greedy decoding picks it.

    The draw inverts the CDF: with F_k = sum_{j <= k} p_j and u ~ U[0, 1), the token is the first k with
    F_k > u F_V, which has probability p_k; tokens of probability 0 (-inf scores) are never drawn, since u F_V is
    kept below F_V (whatever the device's uniforms: curand's lie in (0, 1]). This is one uniform number per
    sequence and a cumulative sum, about 15x cheaper on CPU than `torch.multinomial`. With `copies` = m, the batch is
    m stacked copies of n sequences with the same scores (classifier-free guidance's twins): n uniforms are drawn
    and reused for each copy, so the copies draw the same tokens."""

    def __init__(self, generator: torch.Generator | None, copies: int = 1):
        self.generator, self.copies = generator, copies

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        device = self.generator.device if self.generator is not None else scores.device
        cdf = torch.softmax(scores.to(device=device, dtype=torch.float64), dim=-1).cumsum_(-1)
        total = cdf[:, -1:]
        u = torch.rand(len(cdf) // self.copies, 1, generator=self.generator, device=device, dtype=torch.float64)
        u = u.repeat(self.copies, 1).mul_(total)
        u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))
        tokens = torch.searchsorted(cdf, u, right=True).to(scores.device)
        return torch.full_like(scores, -float("inf")).scatter_(1, tokens, 0.0)


class _ProgressStreamer(BaseStreamer):
    """Advances a progress bar by one code per map at each generated token (the prompt is not counted; with
    guidance, a map's two sequences count once)."""

    def __init__(self, bar, copies: int = 1):
        self.bar, self.copies, self.prompt_seen = bar, copies, False

    def put(self, value):
        if self.prompt_seen:
            self.bar.update(value.shape[0] // self.copies)
        self.prompt_seen = True

    def end(self):
        pass


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_sampling(temperature, top_k, top_p) -> None:
    if not _is_number(temperature) or not 0 <= temperature < math.inf:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = the most likely code), got {temperature!r}.")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer (or None for no cut), got {top_k!r}.")
    if top_p is not None and (not _is_number(top_p) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must lie in (0, 1] (or None for no cut), got {top_p!r}.")


def default_temperature(prior) -> float:
    """The temperature `sample_codes` samples `prior` at by default: `DEFAULT_TEMPERATURE` for a transformer prior, 1
    for a PixelCNN (the paper's sampling, which the studies reproduce)."""
    return DEFAULT_TEMPERATURE if prior_type(prior) == "transformer" else 1.0


def supports_guidance(prior) -> bool:
    """Whether `prior` can be sampled with classifier-free guidance: a class-conditional transformer prior with a
    null class (trained with `class_dropout` > 0)."""
    return prior_type(prior) == "transformer" and null_class_token(prior.config) is not None


def resolve_guidance_scale(prior, guidance_scale: float | None) -> float:
    """The guidance scale to sample `prior` with: None gives `DEFAULT_GUIDANCE_SCALE` where the prior supports
    guidance (`supports_guidance`) and 1 (none) elsewhere; a given scale must be a finite number >= 0, and one other
    than 1 needs a prior that supports guidance (a clear ValueError says why one does not)."""
    if guidance_scale is None:
        return DEFAULT_GUIDANCE_SCALE if supports_guidance(prior) else 1.0
    if not _is_number(guidance_scale) or not 0 <= guidance_scale < math.inf:
        raise ValueError(f"guidance_scale must be a finite number >= 0 (1 = no guidance, 0 = unconditional), got "
                         f"{guidance_scale!r}.")
    if guidance_scale != 1 and not supports_guidance(prior):
        kind, config = prior_type(prior), prior.config
        if kind == "pixelcnn":
            why = ("a PixelCNN prior has no null class to guide with; use a transformer prior (train-prior "
                   "--class_conditional, the default --prior_type)")
        elif config.num_classes == 0:
            why = ("this prior is unconditional (trained without labels): guidance needs a class-conditional prior "
                   "(train-prior --class_conditional)")
        else:
            why = ("this class-conditional prior has no null class (it was saved before classifier-free guidance, "
                   "or trained with --class_dropout 0); train it again with --class_dropout > 0")
        raise ValueError(f"guidance_scale={guidance_scale} needs classifier-free guidance, but {why}; or pass "
                         "guidance_scale=1.")
    return float(guidance_scale)


@torch.no_grad()
def _generate_transformer(prior, num_samples, generator, temperature, top_k, top_p, class_labels, guidance_scale,
                          use_cache, bar):
    config = prior.config
    length = config.grid_size**2 * num_quantizers(config)
    prefix = prefix_tokens(config, num_samples, class_labels, device=prior.device)
    copies = 1 if guidance_scale == 1 else 2
    processors = LogitsProcessorList()
    if copies == 2:  # the unconditional twins: the same maps, with the null class
        prefix = torch.cat([prefix, prefix_tokens(config, num_samples, device=prior.device, null_class=True)])
        processors.append(ClassifierFreeGuidance(guidance_scale))
    processors.append(CodeTokensOnly(config.num_embeddings, num_quantizers(config), prefix.shape[1]))
    if temperature > 0:
        if temperature != 1:
            processors.append(TemperatureLogitsWarper(float(temperature)))
        if top_k is not None:
            processors.append(TopKLogitsWarper(top_k))
        if top_p is not None and top_p < 1:
            processors.append(TopPLogitsWarper(float(top_p)))
        processors.append(GeneratorSampling(generator, copies))
    tokens = prior.generate(
        prefix,
        attention_mask=torch.ones_like(prefix),
        logits_processor=processors,
        do_sample=False,  # the draw happens in GeneratorSampling; greedy decoding then picks the drawn code
        num_beams=1,
        max_new_tokens=length,
        min_new_tokens=length,
        use_cache=use_cache,
        streamer=_ProgressStreamer(bar, copies),
        bos_token_id=num_code_tokens(config),
        eos_token_id=None,
        pad_token_id=num_code_tokens(config),  # never used: there is no EOS, and no sequence ends early
        # The model's saved generation defaults must not apply: only the processors above shape the distribution.
        temperature=None,
        top_k=None,
        top_p=None,
        guidance_scale=None,
    )
    return residual_codes(config, tokens[:num_samples, prefix.shape[1]:])


def sample_codes(
    prior,
    num_samples: int,
    generator: torch.Generator | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    class_labels: torch.LongTensor | list[int] | int | None = None,
    guidance_scale: float | None = None,
    batch_size: int | None = None,
    use_cache: bool = True,
    progress: bool | None = None,
) -> torch.LongTensor:
    r"""
    Sample code maps c ~ p(c | y) in raster order from a prior of either kind: c_t ~ softmax(logits_t / temperature),
    the logits guided (classifier-free guidance, see the module docstring) and restricted to the top_k most likely
    codes and to the smallest set of codes whose probability reaches top_p.

    Args:
        prior: a `PixelCNNPriorModel` (through its `generate`, one network pass per position) or a transformer prior
            (`generate()` of the causal LM, one token per step with the key/value cache).
        num_samples (`int`): number of code maps.
        generator (`torch.Generator`, *optional*): the source of every random draw; the same generator state gives
            the same samples (the global RNG is neither used nor advanced when one is given).
        temperature (`float`, *optional*): > 0 rescales the logits (1 samples the prior's own distribution, < 1
            sharper); 0 takes the most likely code at every position (greedy decoding). Default:
            `DEFAULT_TEMPERATURE` for a transformer prior, 1 for a PixelCNN.
        top_k (`int`, *optional*), top_p (`float` in (0, 1], *optional*): keep only the k most likely codes / the
            nucleus of probability p at each step (transformer prior only; the PixelCNN samples the full softmax).
        class_labels (`int`, list of ints or `torch.LongTensor` of shape `(num_samples,)`, *optional*): required by
            a class-conditional prior, refused by an unconditional one; an int gives every sample that class.
        guidance_scale (`float` >= 0, *optional*): s of classifier-free guidance, l_u + s (l_c - l_u); 1 samples
            p(c | y) itself, 0 the unconditional p(c). Other than 1, it needs a class-conditional transformer prior
            trained with label dropout (`supports_guidance`). Default: `DEFAULT_GUIDANCE_SCALE` for such a prior,
            else 1.
        batch_size (`int`, *optional*): sample this many maps at a time (default: all at once).
        use_cache (`bool`, defaults to True): transformer only; False recomputes the whole prefix at every step
            (the same samples, slower: what the cache saves).
        progress (`bool`, *optional*): show a progress bar counting the sampled codes; default: on a terminal only.

    Returns:
        `torch.LongTensor` of shape `(num_samples, grid_size, grid_size)` on the prior's device, or
        `(num_samples, n, grid_size, grid_size)` for a prior over residual codes of depth n > 1.
    """
    kind = prior_type(prior)
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
    temperature = default_temperature(prior) if temperature is None else temperature
    _check_sampling(temperature, top_k, top_p)
    if kind == "pixelcnn" and (top_k is not None or (top_p is not None and top_p < 1)):
        raise ValueError("top_k and top_p apply to a transformer prior only; a PixelCNN prior samples the full "
                         "softmax (use temperature, or a transformer prior: train-prior --prior_type transformer).")
    if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    config = prior.config
    class_labels = check_class_labels(config, class_labels, num_samples)
    guidance_scale = resolve_guidance_scale(prior, guidance_scale)
    batch_size = batch_size or num_samples
    length = config.grid_size**2 * num_quantizers(config)
    was_training = prior.training
    prior.eval()
    maps = []
    bar = tqdm(total=num_samples * length, desc="Sampling codes", unit="code", disable=None if progress is None
               else not progress, leave=False)
    try:
        for start in range(0, num_samples, batch_size):
            n = min(batch_size, num_samples - start)
            labels = None if class_labels is None else class_labels[start:start + n]
            if kind == "pixelcnn":
                maps.append(prior.generate(n, temperature=temperature, generator=generator, class_labels=labels))
                bar.update(n * length)
            else:
                maps.append(_generate_transformer(prior, n, generator, temperature, top_k, top_p, labels,
                                                  guidance_scale, use_cache, bar))
    finally:
        bar.close()
        prior.train(was_training)
    return torch.cat(maps)
