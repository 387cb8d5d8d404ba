"""Encoders f and decoders g for images: MLP, convolutional (VQ-VAE paper), ViT, and the autoencoder of latent
diffusion (ldm, in diffusers' layout).

Every encoder maps pixels (batch, C, H, W) either to a vector (batch, out_dim) — the latent of an AE or VAE — or to a
grid (batch, out_dim, h, w) — the z_e of a VQ-VAE, the latent map of a spatial AE or VAE. Every decoder is the mirror
image. `build_encoder` and `build_decoder` pick the backbone named by `config.backbone`.

Gradient checkpointing: the repeated blocks (conv residual blocks, transformer blocks, the ldm backbone's levels and
mid block) are transformers' `GradientCheckpointingLayer`s, so `model.gradient_checkpointing_enable()` (or the
Trainer's `--gradient_checkpointing`) recomputes their activations in the backward pass instead of keeping them.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .configuration_autoencoders import AutoencoderConfig


def _activation(config: AutoencoderConfig) -> nn.Module:
    return nn.Identity() if config.linear else nn.ReLU()


# ---------------------------------------------------------------------------------------------------------------- MLP


class MLPEncoder(nn.Module):
    """Flattened pixels -> `num_hidden_layers` fully connected layers -> out_dim (or a grid of out_dim vectors)."""

    def __init__(self, config: AutoencoderConfig, out_dim: int, spatial: bool):
        super().__init__()
        self.grid = config.latent_grid_size if spatial else 1
        layers, width = [nn.Flatten()], config.num_pixels
        for _ in range(config.num_hidden_layers):
            layers += [nn.Linear(width, config.hidden_size), _activation(config)]
            width = config.hidden_size
        layers.append(nn.Linear(width, out_dim * self.grid * self.grid))
        self.layers = nn.Sequential(*layers)
        self.out_dim, self.spatial = out_dim, spatial

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.layers(pixel_values)
        return out.view(-1, self.out_dim, self.grid, self.grid) if self.spatial else out


class MLPDecoder(nn.Module):
    """Latent vector (or grid, flattened) -> fully connected layers -> out_channels x H x W."""

    def __init__(self, config: AutoencoderConfig, in_dim: int, spatial: bool, out_channels: int):
        super().__init__()
        grid = config.latent_grid_size if spatial else 1
        layers, width = [nn.Flatten()], in_dim * grid * grid
        for _ in range(config.num_hidden_layers):
            layers += [nn.Linear(width, config.hidden_size), _activation(config)]
            width = config.hidden_size
        layers.append(nn.Linear(width, out_channels * config.image_size**2))
        self.layers = nn.Sequential(*layers)
        self.shape = (out_channels, config.image_size, config.image_size)

    @property
    def output_layer(self) -> nn.Module:
        """The layer that writes the output (where the tokenizer recipe's adaptive weight compares gradients)."""
        return self.layers[-1]

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.layers(latents).view(-1, *self.shape)


# --------------------------------------------------------------------------------------------------------------- conv


class ResidualBlock(GradientCheckpointingLayer):
    """x + conv1x1(act(conv3x3(act(x)))), the residual block of the VQ-VAE paper."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        channels = config.hidden_size
        self.block = nn.Sequential(
            _activation(config),
            nn.Conv2d(channels, channels // 2, 3, padding=1),
            _activation(config),
            nn.Conv2d(channels // 2, channels, 1),
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.block(hidden)


class ConvEncoder(nn.Module):
    """`num_downsamples` stride-2 4x4 convolutions, a 3x3 convolution, residual blocks, then a 1x1 projection to
    out_dim channels (spatial) or a flatten + linear to out_dim (vector)."""

    def __init__(self, config: AutoencoderConfig, out_dim: int, spatial: bool):
        super().__init__()
        layers, channels = [], config.num_channels
        for stage in range(config.num_downsamples):
            width = config.hidden_size // 2 ** (config.num_downsamples - 1 - stage)
            layers += [nn.Conv2d(channels, width, 4, stride=2, padding=1), _activation(config)]
            channels = width
        layers.append(nn.Conv2d(channels, config.hidden_size, 3, padding=1))
        layers += [ResidualBlock(config) for _ in range(config.num_residual_blocks)]
        layers.append(_activation(config))
        grid = config.latent_grid_size
        if spatial:
            layers.append(nn.Conv2d(config.hidden_size, out_dim, 1))
        else:
            layers += [nn.Flatten(), nn.Linear(config.hidden_size * grid * grid, out_dim)]
        self.layers = nn.Sequential(*layers)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.layers(pixel_values)


class ConvDecoder(nn.Module):
    """The mirror of `ConvEncoder`: a 3x3 convolution (or linear + reshape), residual blocks, then stride-2 4x4
    transposed convolutions back to the image size."""

    def __init__(self, config: AutoencoderConfig, in_dim: int, spatial: bool, out_channels: int):
        super().__init__()
        grid, hidden = config.latent_grid_size, config.hidden_size
        if spatial:
            layers = [nn.Conv2d(in_dim, hidden, 3, padding=1)]
        else:
            layers = [nn.Linear(in_dim, hidden * grid * grid), nn.Unflatten(1, (hidden, grid, grid))]
        layers += [ResidualBlock(config) for _ in range(config.num_residual_blocks)]
        layers.append(_activation(config))
        channels = hidden
        for stage in range(config.num_downsamples):
            last = stage == config.num_downsamples - 1
            width = out_channels if last else hidden // 2 ** (stage + 1)
            layers.append(nn.ConvTranspose2d(channels, width, 4, stride=2, padding=1))
            if not last:
                layers.append(_activation(config))
            channels = width
        if config.num_downsamples == 0:
            layers.append(nn.Conv2d(channels, out_channels, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    @property
    def output_layer(self) -> nn.Module:
        """The layer that writes the output (where the tokenizer recipe's adaptive weight compares gradients)."""
        return self.layers[-1]

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.layers(latents)


# ---------------------------------------------------------------------------------------------------------------- ViT


class SelfAttention(nn.Module):
    """Multi-head self-attention, softmax(Q K^T / sqrt(head_dim)) V per head, through
    `F.scaled_dot_product_attention` (fused kernels on every device), with the parameters of
    `nn.MultiheadAttention(width, heads, batch_first=True)` under the same names and the same initialisation, so
    the old ViT's weights load as they are: `in_proj_weight` (3 width, width) = [W_q; W_k; W_v], `in_proj_bias`,
    `out_proj`."""

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = hidden.shape
        qkv = F.linear(hidden, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.view(batch, tokens, 3, self.num_heads, width // self.num_heads).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)  # each (batch, heads, tokens, head_dim)
        out = F.scaled_dot_product_attention(query, key, value)
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, width))


class TransformerBlock(GradientCheckpointingLayer):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x)) with a GELU MLP `mlp_ratio` times wider."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        hidden = max(1, round(mlp_ratio * width))
        self.norm1 = nn.LayerNorm(width)
        self.attention = SelfAttention(width, num_heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden + self.attention(self.norm1(hidden))
        return hidden + self.mlp(self.norm2(hidden))


class ViTStack(nn.Module):
    """What the ViT encoder and decoder share: a learned position embedding added to a row-major grid x grid sequence
    of tokens (`position_embedding`, (1, grid², width)), pre-norm transformer blocks and a final LayerNorm."""

    def build_stack(self, config: AutoencoderConfig, width: int, num_layers: int) -> None:
        self.grid = config.latent_grid_size
        self.position_embedding = nn.Parameter(torch.zeros(1, self.grid**2, width))
        self.blocks = nn.ModuleList(
            TransformerBlock(width, config.num_attention_heads, config.vit_mlp_ratio) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(width)

    def run_stack(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens + self.position_embedding
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)


class ViTEncoder(ViTStack):
    """Patch embedding (one p x p convolution with stride p) -> position embedding -> transformer blocks -> LayerNorm
    -> linear projection. Spatial output: one out_dim vector per patch, (batch, out_dim, grid, grid). Vector output:
    the mean of the patch tokens, projected, (batch, out_dim)."""

    def __init__(self, config: AutoencoderConfig, out_dim: int, spatial: bool):
        super().__init__()
        self.spatial, self.patch_size = spatial, config.patch_size
        width, patch = config.hidden_size, config.patch_size
        self.patch_embedding = nn.Conv2d(config.num_channels, width, patch, stride=patch)
        self.build_stack(config, width, config.num_hidden_layers)
        self.projection = nn.Linear(width, out_dim)

    def embed_patches(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(batch, C, H, W) -> (batch, grid², width) tokens in row-major order."""
        # The stride-p convolution as one matmul over the cut-out patches: the same numbers, without the CPU
        # convolution kernels' overhead and the layout change after them.
        batch, channels, grid, p = pixel_values.shape[0], pixel_values.shape[1], self.grid, self.patch_size
        patches = pixel_values.reshape(batch, channels, grid, p, grid, p).permute(0, 2, 4, 1, 3, 5)
        weight = self.patch_embedding.weight.flatten(1)  # (width, C p p), in the patches' (C, p, p) order
        return F.linear(patches.reshape(batch, grid * grid, -1), weight, self.patch_embedding.bias)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tokens = self.run_stack(self.embed_patches(pixel_values))
        if not self.spatial:
            return self.projection(tokens.mean(dim=1))
        out = self.projection(tokens)  # (batch, grid*grid, out_dim)
        return out.transpose(1, 2).reshape(out.shape[0], -1, self.grid, self.grid)


class ViTDecoder(ViTStack):
    """Transformer decoder as wide as the encoder, `vit_decoder_num_layers` deep (the encoder's depth by default).
    Spatial input: one token per latent vector. Vector input: every position query (its learned position embedding)
    receives the projected latent. Output head (`vit_output_head`): `"linear"` un-embeds each token into its own
    p x p patch; `"pixel_shuffle"` un-embeds it into a c x p x p block, tiles the blocks into a full-resolution
    c-channel map, and applies GELU and a 3x3 convolution that mixes pixels across patch borders."""

    def __init__(self, config: AutoencoderConfig, in_dim: int, spatial: bool, out_channels: int):
        super().__init__()
        self.spatial, self.patch_size, self.out_channels = spatial, config.patch_size, out_channels
        width = config.hidden_size
        num_layers = config.vit_decoder_num_layers
        num_layers = config.num_hidden_layers if num_layers is None else num_layers
        self.latent_projection = nn.Linear(in_dim, width)
        self.build_stack(config, width, num_layers)
        patch_pixels = config.patch_size**2
        if config.vit_output_head == "pixel_shuffle":
            channels = config.vit_conv_channels
            self.patch_unembedding = nn.Linear(width, channels * patch_pixels)
            self.output_conv = nn.Conv2d(channels, out_channels, 3, padding=1)
        else:
            self.patch_unembedding = nn.Linear(width, out_channels * patch_pixels)
            self.output_conv = None

    @property
    def output_layer(self) -> nn.Module:
        """The layer that writes the output (where the tokenizer recipe's adaptive weight compares gradients)."""
        return self.output_conv if self.output_conv is not None else self.patch_unembedding

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        if self.spatial:
            tokens = self.latent_projection(latents.flatten(2).transpose(1, 2))
        else:
            tokens = self.latent_projection(latents).unsqueeze(1)
        # The unembedding's rows are ordered (c, p, p); reordered to (p, p, c), each token's block tiles into a
        # channels-last image with one copy, and the CPU convolution after it runs several times faster on it.
        grid, p, width = self.grid, self.patch_size, self.patch_unembedding.in_features
        c = self.patch_unembedding.out_features // (p * p)
        weight = self.patch_unembedding.weight.view(c, p, p, width).permute(1, 2, 0, 3).reshape(-1, width)
        bias = self.patch_unembedding.bias.view(c, p, p).permute(1, 2, 0).reshape(-1)
        patches = F.linear(self.run_stack(tokens), weight, bias)  # (batch, grid², p p c)
        batch = patches.shape[0]
        image = patches.view(batch, grid, grid, p, p, c).permute(0, 1, 3, 2, 4, 5).reshape(batch, grid * p, grid * p, c)
        image = image.permute(0, 3, 1, 2)  # (batch, c, H, W), channels-last in memory
        if self.output_conv is not None:
            image = self.output_conv(F.gelu(image))
        return image.contiguous()


# ---------------------------------------------------------------------------------------------------------------- ldm
# The autoencoder of latent diffusion (taming-transformers' VQGAN, Esser et al., 2021; LDM, Rombach et al., 2022).
# Module and parameter names are diffusers' (`AutoencoderKL`, `VQModel`), so a state dict maps one to one onto theirs.


def _group_norm(config: AutoencoderConfig, channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(config.norm_num_groups, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """shortcut(x) + conv2(SiLU(norm2(conv1(SiLU(norm1(x)))))), GroupNorm and 3x3 convolutions, with a 1x1
    `conv_shortcut` where the channels change (diffusers' `ResnetBlock2D` without a time embedding)."""

    def __init__(self, config: AutoencoderConfig, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = _group_norm(config, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _group_norm(config, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        residual = hidden if self.conv_shortcut is None else self.conv_shortcut(hidden)
        hidden = self.conv1(F.silu(self.norm1(hidden)))
        return residual + self.conv2(F.silu(self.norm2(hidden)))


class AttentionBlock(nn.Module):
    """x + to_out(softmax(q k^T / sqrt(C)) v) over the h w positions of a (batch, C, h, w) map, with q, k, v linear
    maps of GroupNorm(x): the single-head self-attention of the mid block (diffusers' `Attention` with `group_norm`,
    `to_q`, `to_k`, `to_v`, `to_out`), through `F.scaled_dot_product_attention`."""

    def __init__(self, config: AutoencoderConfig, channels: int):
        super().__init__()
        self.group_norm = _group_norm(config, channels)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = hidden.shape
        tokens = self.group_norm(hidden).flatten(2).transpose(1, 2)  # (batch, h w, C)
        query, key, value = (projection(tokens).unsqueeze(1) for projection in (self.to_q, self.to_k, self.to_v))
        out = self.to_out[0](F.scaled_dot_product_attention(query, key, value).squeeze(1))
        return hidden + out.transpose(1, 2).reshape(batch, channels, height, width)


class MidBlock(GradientCheckpointingLayer):
    """ResNet block, self-attention (with `mid_block_add_attention`), ResNet block, at the latent's resolution
    (diffusers' `UNetMidBlock2D`)."""

    def __init__(self, config: AutoencoderConfig, channels: int):
        super().__init__()
        self.resnets = nn.ModuleList(ResnetBlock(config, channels, channels) for _ in range(2))
        self.attentions = nn.ModuleList([AttentionBlock(config, channels)] if config.mid_block_add_attention else [])

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.resnets[0](hidden)
        for attention in self.attentions:
            hidden = attention(hidden)
        return self.resnets[1](hidden)


class Downsample(nn.Module):
    """One row and column of zeros at the bottom and right, then a stride-2 3x3 convolution (diffusers'
    `Downsample2D` with padding 0, as in taming-transformers)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(hidden, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour upsampling by 2, then a 3x3 convolution (diffusers' `Upsample2D`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(hidden, scale_factor=2.0, mode="nearest"))


class DownBlock(GradientCheckpointingLayer):
    """One encoder level: ResNet blocks, then a `Downsample` unless it is the last level (diffusers'
    `DownEncoderBlock2D`)."""

    def __init__(self, config: AutoencoderConfig, in_channels: int, out_channels: int, downsample: bool):
        super().__init__()
        widths = [in_channels] + [out_channels] * config.layers_per_block
        self.resnets = nn.ModuleList(ResnetBlock(config, a, b) for a, b in zip(widths, widths[1:]))
        self.downsamplers = nn.ModuleList([Downsample(out_channels)] if downsample else [])

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        for layer in [*self.resnets, *self.downsamplers]:
            hidden = layer(hidden)
        return hidden


class UpBlock(GradientCheckpointingLayer):
    """One decoder level: `layers_per_block + 1` ResNet blocks, then an `Upsample` unless it is the last level
    (diffusers' `UpDecoderBlock2D`)."""

    def __init__(self, config: AutoencoderConfig, in_channels: int, out_channels: int, upsample: bool):
        super().__init__()
        widths = [in_channels] + [out_channels] * (config.layers_per_block + 1)
        self.resnets = nn.ModuleList(ResnetBlock(config, a, b) for a, b in zip(widths, widths[1:]))
        self.upsamplers = nn.ModuleList([Upsample(out_channels)] if upsample else [])

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        for layer in [*self.resnets, *self.upsamplers]:
            hidden = layer(hidden)
        return hidden


class LDMEncoder(nn.Module):
    """conv_in -> one `DownBlock` per entry of `block_out_channels` -> `MidBlock` -> GroupNorm, SiLU, conv_out to
    out_dim channels -> the 1x1 `quant_conv`. Fully convolutional: any image whose sides are multiples of f gives a
    (batch, out_dim, H / f, W / f) map (for a VAE, out_dim = 2 c: the posterior's means, then log-variances)."""

    def __init__(self, config: AutoencoderConfig, out_dim: int, spatial: bool = True):
        super().__init__()
        if not spatial:
            raise ValueError("The ldm backbone's latent is a map (batch, c, h, w); give the model latent_channels.")
        channels = config.block_out_channels
        self.conv_in = nn.Conv2d(config.num_channels, channels[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            DownBlock(config, channels[max(level - 1, 0)], width, downsample=level < len(channels) - 1)
            for level, width in enumerate(channels)
        )
        self.mid_block = MidBlock(config, channels[-1])
        self.conv_norm_out = _group_norm(config, channels[-1])
        self.conv_out = nn.Conv2d(channels[-1], out_dim, 3, padding=1)
        self.quant_conv = nn.Conv2d(out_dim, out_dim, 1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.conv_in(pixel_values)
        for block in self.down_blocks:
            hidden = block(hidden)
        hidden = self.mid_block(hidden)
        return self.quant_conv(self.conv_out(F.silu(self.conv_norm_out(hidden))))


class LDMDecoder(nn.Module):
    """The mirror of `LDMEncoder`: the 1x1 `post_quant_conv` -> conv_in -> `MidBlock` -> one `UpBlock` per level,
    widest first -> GroupNorm, SiLU, conv_out to the image channels."""

    def __init__(self, config: AutoencoderConfig, in_dim: int, spatial: bool = True, out_channels: int = 3):
        super().__init__()
        if not spatial:
            raise ValueError("The ldm backbone's latent is a map (batch, c, h, w); give the model latent_channels.")
        channels = config.block_out_channels[::-1]
        self.post_quant_conv = nn.Conv2d(in_dim, in_dim, 1)
        self.conv_in = nn.Conv2d(in_dim, channels[0], 3, padding=1)
        self.mid_block = MidBlock(config, channels[0])
        self.up_blocks = nn.ModuleList(
            UpBlock(config, channels[max(level - 1, 0)], width, upsample=level < len(channels) - 1)
            for level, width in enumerate(channels)
        )
        self.conv_norm_out = _group_norm(config, channels[-1])
        self.conv_out = nn.Conv2d(channels[-1], out_channels, 3, padding=1)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        hidden = self.mid_block(self.conv_in(self.post_quant_conv(latents)))
        for block in self.up_blocks:
            hidden = block(hidden)
        return self.conv_out(F.silu(self.conv_norm_out(hidden)))


_ENCODERS = {"mlp": MLPEncoder, "conv": ConvEncoder, "vit": ViTEncoder, "ldm": LDMEncoder}
_DECODERS = {"mlp": MLPDecoder, "conv": ConvDecoder, "vit": ViTDecoder, "ldm": LDMDecoder}


def build_encoder(config: AutoencoderConfig, out_dim: int, spatial: bool = False) -> nn.Module:
    """The encoder f: (batch, C, H, W) -> (batch, out_dim) or, if `spatial`, (batch, out_dim, h, w)."""
    return _ENCODERS[config.backbone](config, out_dim, spatial)


def build_decoder(config: AutoencoderConfig, in_dim: int, spatial: bool = False, out_channels: int | None = None):
    """The decoder g: (batch, in_dim) or (batch, in_dim, h, w) -> (batch, out_channels, H, W)."""
    return _DECODERS[config.backbone](config, in_dim, spatial, out_channels or config.num_channels)


def init_weights(module: nn.Module, std: float) -> None:
    """PyTorch's default (fan-in) initialisation for linear and conv layers (as diffusers'), unit LayerNorms and
    GroupNorms and truncated-normal ViT position embeddings; used as `PreTrainedModel._init_weights`."""
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.LayerNorm, nn.GroupNorm)):
        module.reset_parameters()
    elif isinstance(module, ViTStack):
        nn.init.trunc_normal_(module.position_embedding, std=std)
