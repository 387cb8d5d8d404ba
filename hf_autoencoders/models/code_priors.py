"""Priors over VQ-VAE code maps: a transformers causal language model as the prior, and the functions that sample
code maps with either kind of prior (that one, or the gated `PixelCNNPriorModel`). Scoring them is evaluation's
(`hf_autoencoders.evaluation.priors`).

Both factorise a (h, w) map of codes c in raster order, c_1 .. c_L with L = h w, given an optional class y:

    log p(c | y) = sum_t log p(c_t | c_<t, y).

**The transformer prior** is a GPT-2 (`GPT2LMHeadModel`) over tokens laid out as

    code tokens   0 .. K-1       the VQ-VAE's codes
    start (BOS)   K
    class tokens  K+1 .. K+C     class y is token K+1+y (only when num_classes = C > 0)

and a map is the sequence [BOS, (K+1+y), c_1, ..., c_L]: the prefix (P = 1 or 2 tokens) conditions, the codes
follow. Its config is a plain `GPT2Config` with four extra fields that record which VQ-VAE it belongs to:
`num_embeddings` (K), `grid_size` (h = w), `num_classes` (C) and `vqvae_name_or_path`. It saves and loads with
`AutoModelForCausalLM` and no remote code, and samples through `generate()` with the key/value cache.

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
"""

import logging
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
from transformers.utils.logging import tqdm

from .configuration_pixelcnn_prior import PixelCNNPriorConfig

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------- the config


def transformer_prior_config(
    num_embeddings: int,
    grid_size: int,
    num_classes: int = 0,
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
        vqvae_name_or_path (`str`, *optional*): folder or Hub id of the VQ-VAE whose codes the prior models.
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
    prefix = 1 + (num_classes > 0)
    depth = {"num_quantizers": num_quantizers} if num_quantizers > 1 else {}  # configs of one depth as before
    return GPT2Config(
        vocab_size=num_embeddings * num_quantizers + 1 + num_classes,
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
        vqvae_name_or_path=None if vqvae_name_or_path is None else str(vqvae_name_or_path),
        **depth,
    )


def num_quantizers(config) -> int:
    """n, the codes per position of the maps a prior models (1 for a PixelCNN and for a prior of one depth)."""
    return getattr(config, "num_quantizers", 1)


def num_code_tokens(config) -> int:
    """n K: the code tokens 0 .. nK-1, depth d's code c being the token d K + c; BOS is the token after them."""
    return config.num_embeddings * num_quantizers(config)


def is_transformer_prior_config(config) -> bool:
    """Whether `config` is that of a transformer prior over VQ-VAE codes (a causal LM config carrying the code-prior
    fields, with a vocabulary of K codes, BOS and C class tokens)."""
    if getattr(config, "model_type", None) == PixelCNNPriorConfig.model_type:
        return False
    values = [getattr(config, name, None) for name in ("num_embeddings", "grid_size", "num_classes", "vocab_size")]
    if any(not isinstance(value, int) for value in values):
        return False
    num_embeddings, _, num_classes, vocab_size = values
    return vocab_size == num_embeddings * num_quantizers(config) + 1 + num_classes


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


def check_prior_fits(vqvae_config, prior) -> str:
    """Refuse a prior of the wrong kind, or one trained for another codebook size K or code-map size than the VQ-VAE
    of `vqvae_config`; warn when the VQ-VAE the prior records was loaded from elsewhere. Returns `prior_type(prior)`."""
    kind = prior_type(prior)
    config = prior.config
    depth, prior_depth = getattr(vqvae_config, "num_quantizers", 1), num_quantizers(config)
    if depth != prior_depth:
        refuse = ("a PixelCNN prior models one code per position; train a transformer prior "
                  "(train-prior --prior_type transformer)" if kind == "pixelcnn" else
                  "use the VQ-VAE the prior was trained on, or train a prior on this VQ-VAE's codes")
        raise ValueError(f"This VQ-VAE gives {depth} code(s) per position (num_quantizers={depth}, residual "
                         f"quantization), but the prior models {prior_depth}; {refuse}.")
    ours = (vqvae_config.num_embeddings, vqvae_config.latent_grid_size)
    theirs = (config.num_embeddings, config.grid_size)
    if theirs != ours:
        recorded = getattr(config, "vqvae_name_or_path", None)
        trained_on = f" (trained on the codes of {recorded})" if recorded else ""
        raise ValueError(
            f"The prior models {theirs[1]}x{theirs[1]} maps of K = {theirs[0]} codes{trained_on}, but this VQ-VAE has "
            f"{ours[1]}x{ours[1]} maps of K = {ours[0]} codes; use the VQ-VAE the prior was trained on, or train a "
            "prior on this VQ-VAE's codes."
        )
    recorded, loaded = getattr(config, "vqvae_name_or_path", None), getattr(vqvae_config, "_name_or_path", "")
    if recorded and loaded and _normalised(recorded) != _normalised(loaded):
        logger.warning("The prior was trained on the codes of %s, but this VQ-VAE was loaded from %s; a prior only "
                       "fits the codebook it was trained on.", recorded, loaded)
    return kind


def _normalised(name_or_path: str) -> str:
    path = Path(name_or_path)
    return str(path.resolve()) if path.exists() else str(name_or_path).rstrip("/")


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
    """Labels of shape (batch_size,) in [0, num_classes) for a class-conditional prior (an int is repeated), None for
    an unconditional one; a ValueError saying what to pass otherwise."""
    num_classes = config.num_classes
    if num_classes == 0:
        if class_labels is not None:
            raise ValueError("class_labels were given, but this prior is unconditional (num_classes=0); pass "
                             "class_labels=None or train a prior with --class_conditional.")
        return None
    if class_labels is None:
        raise ValueError(f"class_labels are required: this prior is class-conditional (num_classes={num_classes}); "
                         f"pass an int or a tensor of shape ({batch_size},) with labels in [0, {num_classes}).")
    if isinstance(class_labels, int) and not isinstance(class_labels, bool):
        class_labels = torch.full((batch_size,), class_labels, dtype=torch.long)
    if not isinstance(class_labels, torch.Tensor) or class_labels.dtype.is_floating_point \
            or class_labels.dtype.is_complex or class_labels.dtype == torch.bool:
        got = class_labels.dtype if isinstance(class_labels, torch.Tensor) else type(class_labels).__name__
        raise ValueError(f"class_labels must be an int or an integer tensor, got {got}.")
    if tuple(class_labels.shape) != (batch_size,):
        raise ValueError(f"class_labels must have shape ({batch_size},), got {tuple(class_labels.shape)}.")
    if batch_size and (class_labels.min() < 0 or class_labels.max() >= num_classes):
        raise ValueError(f"class_labels must lie in [0, num_classes={num_classes}), got values in "
                         f"[{int(class_labels.min())}, {int(class_labels.max())}].")
    return class_labels.long()


def prefix_tokens(config, batch_size: int, class_labels=None, device=None) -> torch.LongTensor:
    """The (batch, P) prefix: BOS = K, then K+1+y for class y (nK and nK+1+y for residual codes of depth n)."""
    class_labels = check_class_labels(config, class_labels, batch_size)
    bos = torch.full((batch_size, 1), num_code_tokens(config), dtype=torch.long, device=device)
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


class GeneratorSampling(LogitsProcessor):
    """Draws the next token ~ softmax(scores) with the caller's `torch.Generator` (on its device) and returns scores
    that are 0 at the drawn token and -inf elsewhere, so that greedy decoding picks it.

    The draw inverts the CDF: with F_k = sum_{j <= k} p_j and u ~ U[0, 1), the token is the first k with
    F_k > u F_V, which has probability p_k; tokens of probability 0 (-inf scores) are never drawn, since u F_V is
    kept below F_V (whatever the device's uniforms: curand's lie in (0, 1]). This is one uniform number per
    sequence and a cumulative sum, about 15x cheaper on CPU than `torch.multinomial`."""

    def __init__(self, generator: torch.Generator | None):
        self.generator = generator

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        device = self.generator.device if self.generator is not None else scores.device
        cdf = torch.softmax(scores.to(device=device, dtype=torch.float64), dim=-1).cumsum_(-1)
        total = cdf[:, -1:]
        u = torch.rand(len(cdf), 1, generator=self.generator, device=device, dtype=torch.float64).mul_(total)
        u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))
        tokens = torch.searchsorted(cdf, u, right=True).to(scores.device)
        return torch.full_like(scores, -float("inf")).scatter_(1, tokens, 0.0)


class _ProgressStreamer(BaseStreamer):
    """Advances a progress bar by one code per sequence at each generated token (the prompt is not counted)."""

    def __init__(self, bar):
        self.bar, self.prompt_seen = bar, False

    def put(self, value):
        if self.prompt_seen:
            self.bar.update(value.shape[0])
        self.prompt_seen = True

    def end(self):
        pass


def _check_sampling(temperature, top_k, top_p) -> None:
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature >= 0:
        raise ValueError(f"temperature must be a number >= 0 (0 = the most likely code), got {temperature!r}.")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer (or None for no cut), got {top_k!r}.")
    if top_p is not None and (not isinstance(top_p, (int, float)) or isinstance(top_p, bool) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must lie in (0, 1] (or None for no cut), got {top_p!r}.")


@torch.no_grad()
def _generate_transformer(prior, num_samples, generator, temperature, top_k, top_p, class_labels, use_cache, bar):
    config = prior.config
    length = config.grid_size**2 * num_quantizers(config)
    prefix = prefix_tokens(config, num_samples, class_labels, device=prior.device)
    processors = LogitsProcessorList([CodeTokensOnly(config.num_embeddings, num_quantizers(config), prefix.shape[1])])
    if temperature > 0:
        if temperature != 1:
            processors.append(TemperatureLogitsWarper(float(temperature)))
        if top_k is not None:
            processors.append(TopKLogitsWarper(top_k))
        if top_p is not None and top_p < 1:
            processors.append(TopPLogitsWarper(float(top_p)))
        processors.append(GeneratorSampling(generator))
    tokens = prior.generate(
        prefix,
        attention_mask=torch.ones_like(prefix),
        logits_processor=processors,
        do_sample=False,  # the draw happens in GeneratorSampling; greedy decoding then picks the drawn code
        num_beams=1,
        max_new_tokens=length,
        min_new_tokens=length,
        use_cache=use_cache,
        streamer=_ProgressStreamer(bar),
        bos_token_id=num_code_tokens(config),
        eos_token_id=None,
        pad_token_id=num_code_tokens(config),  # never used: there is no EOS, and no sequence ends early
        # The model's saved generation defaults must not apply: only the processors above shape the distribution.
        temperature=None,
        top_k=None,
        top_p=None,
    )
    return residual_codes(config, tokens[:, prefix.shape[1]:])


def sample_codes(
    prior,
    num_samples: int,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    class_labels: torch.LongTensor | int | None = None,
    batch_size: int | None = None,
    use_cache: bool = True,
    progress: bool | None = None,
) -> torch.LongTensor:
    r"""
    Sample code maps c ~ p(c | y) in raster order from a prior of either kind: c_t ~ softmax(logits_t / temperature),
    restricted to the top_k most likely codes and to the smallest set of codes whose probability reaches top_p.

    Args:
        prior: a `PixelCNNPriorModel` (through its `generate`, one network pass per position) or a transformer prior
            (`generate()` of the causal LM, one token per step with the key/value cache).
        num_samples (`int`): number of code maps.
        generator (`torch.Generator`, *optional*): the source of every random draw; the same generator state gives
            the same samples (the global RNG is neither used nor advanced when one is given).
        temperature (`float`, defaults to 1.0): > 0 rescales the logits; 0 takes the most likely code at every
            position (greedy decoding).
        top_k (`int`, *optional*), top_p (`float` in (0, 1], *optional*): keep only the k most likely codes / the
            nucleus of probability p at each step (transformer prior only; the PixelCNN samples the full softmax).
        class_labels (`int` or `torch.LongTensor` of shape `(num_samples,)`, *optional*): required by a
            class-conditional prior, refused by an unconditional one; an int gives every sample that class.
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
    _check_sampling(temperature, top_k, top_p)
    if kind == "pixelcnn" and (top_k is not None or (top_p is not None and top_p < 1)):
        raise ValueError("top_k and top_p apply to a transformer prior only; a PixelCNN prior samples the full "
                         "softmax (use temperature, or a transformer prior: train-prior --prior_type transformer).")
    if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    config = prior.config
    class_labels = check_class_labels(config, class_labels, num_samples)
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
                maps.append(_generate_transformer(prior, n, generator, temperature, top_k, top_p, labels, use_cache,
                                                  bar))
    finally:
        bar.close()
        prior.train(was_training)
    return torch.cat(maps)
