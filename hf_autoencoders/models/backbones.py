"""Encoders f and decoders g for images: MLP, convolutional (VQ-VAE paper) and ViT.

Every encoder maps pixels (batch, C, H, W) either to a vector (batch, out_dim) — the latent of an AE or VAE — or to a
grid (batch, out_dim, h, w) — the z_e of a VQ-VAE. Every decoder is the mirror image. `build_encoder` and
`build_decoder` pick the backbone named by `config.backbone`.
"""

import torch
from torch import nn

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

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.layers(latents).view(-1, *self.shape)


# --------------------------------------------------------------------------------------------------------------- conv


class ResidualBlock(nn.Module):
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

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.layers(latents)


# ---------------------------------------------------------------------------------------------------------------- ViT


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x)) with a 4x GELU MLP."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        width = config.hidden_size
        self.norm1 = nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, config.num_attention_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(hidden)
        hidden = hidden + self.attention(normed, normed, normed, need_weights=False)[0]
        return hidden + self.mlp(self.norm2(hidden))


class ViTEncoder(nn.Module):
    """Patch embedding (a stride-`patch_size` convolution) + learned position embeddings + transformer blocks.
    Spatial output: one out_dim vector per patch. Vector output: the mean of the patch tokens, projected."""

    def __init__(self, config: AutoencoderConfig, out_dim: int, spatial: bool):
        super().__init__()
        self.grid, self.spatial = config.latent_grid_size, spatial
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, config.patch_size, stride=config.patch_size
        )
        self.position_embedding = nn.Parameter(torch.zeros(1, self.grid**2, config.hidden_size))
        self.blocks = nn.ModuleList(TransformerBlock(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size)
        self.projection = nn.Linear(config.hidden_size, out_dim)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2) + self.position_embedding
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens)
        if not self.spatial:
            return self.projection(tokens.mean(dim=1))
        out = self.projection(tokens)  # (batch, grid*grid, out_dim)
        return out.transpose(1, 2).reshape(out.shape[0], -1, self.grid, self.grid)


class ViTDecoder(nn.Module):
    """Transformer decoder. Spatial input: one token per latent vector. Vector input: every position query
    (a learned position embedding) receives the projected latent. Tokens are un-embedded into patches."""

    def __init__(self, config: AutoencoderConfig, in_dim: int, spatial: bool, out_channels: int):
        super().__init__()
        self.grid, self.spatial, self.patch_size = config.latent_grid_size, spatial, config.patch_size
        self.out_channels = out_channels
        self.latent_projection = nn.Linear(in_dim, config.hidden_size)
        self.position_embedding = nn.Parameter(torch.zeros(1, self.grid**2, config.hidden_size))
        self.blocks = nn.ModuleList(TransformerBlock(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size)
        self.patch_unembedding = nn.Linear(config.hidden_size, out_channels * config.patch_size**2)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        if self.spatial:
            tokens = self.latent_projection(latents.flatten(2).transpose(1, 2))
        else:
            tokens = self.latent_projection(latents).unsqueeze(1)
        tokens = tokens + self.position_embedding
        for block in self.blocks:
            tokens = block(tokens)
        patches = self.patch_unembedding(self.norm(tokens))  # (batch, grid*grid, C*p*p)
        batch, grid, p, c = patches.shape[0], self.grid, self.patch_size, self.out_channels
        patches = patches.view(batch, grid, grid, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return patches.reshape(batch, c, grid * p, grid * p)


_ENCODERS = {"mlp": MLPEncoder, "conv": ConvEncoder, "vit": ViTEncoder}
_DECODERS = {"mlp": MLPDecoder, "conv": ConvDecoder, "vit": ViTDecoder}


def build_encoder(config: AutoencoderConfig, out_dim: int, spatial: bool = False) -> nn.Module:
    """The encoder f: (batch, C, H, W) -> (batch, out_dim) or, if `spatial`, (batch, out_dim, h, w)."""
    return _ENCODERS[config.backbone](config, out_dim, spatial)


def build_decoder(config: AutoencoderConfig, in_dim: int, spatial: bool = False, out_channels: int | None = None):
    """The decoder g: (batch, in_dim) or (batch, in_dim, h, w) -> (batch, out_channels, H, W)."""
    return _DECODERS[config.backbone](config, in_dim, spatial, out_channels or config.num_channels)


def init_weights(module: nn.Module, std: float) -> None:
    """PyTorch's default (fan-in) initialisation for linear and conv layers, unit LayerNorms and truncated-normal
    ViT position embeddings; used as `PreTrainedModel._init_weights`."""
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.LayerNorm)):
        module.reset_parameters()
    elif isinstance(module, (ViTEncoder, ViTDecoder)):
        nn.init.trunc_normal_(module.position_embedding, std=std)
