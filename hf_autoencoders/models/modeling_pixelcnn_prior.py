"""Gated PixelCNN prior over VQ-VAE code maps (van den Oord et al., 2016).

The prior factorises a (height, width) map of codes c in raster order,

    log p(c | y) = sum_{i, j} log p(c[i, j] | c[< i, :], c[i, < j], y),

with every conditional given by one pass of a convolutional network whose receptive field at (i, j) is exactly
the earlier positions. Two stacks of gated layers make this so without the blind spot of the original PixelCNN:

- the vertical stack v sees the rows strictly above: its input is the code embedding shifted down one row (so its
  features at row i summarise rows < i), and its convolutions are masked to the current row and the rows above
  (an n//2+1 x n kernel padded only at the top), reaching n//2 columns to either side;
- the horizontal stack h sees the codes strictly to the left in the same row: its input is the embedding shifted
  right one column, its convolutions are masked to the current column and those to its left (a 1 x n//2+1 kernel
  padded only on the left), and each layer adds a 1x1 projection of the vertical features at the same position.

The masked taps are not multiplied by zero but never allocated: each kernel is cropped to its unmasked half, the
padding puts it in place, and the one-position shifts of the input play the role of the "type A" mask of the first
layer. Each layer is gated, y = tanh(W_f * x + V_f e(label)) * sigmoid(W_g * x + V_g e(label)), and the horizontal
stack is residual.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_pixelcnn_prior import PixelCNNPriorConfig
from .saving import SavesToFolder


@dataclass
class PixelCNNPriorOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`): mean negative log-likelihood per code in nats,
        -(1 / (batch * height * width)) sum log p(c[i, j] | c[< (i, j)]). Divide by ln 2 for bits per code.
    logits (`torch.FloatTensor` of shape `(batch, height, width, num_embeddings)`): unnormalised log-probabilities
        of the code at each position given the codes before it in raster order.
    nll_per_sample (`torch.FloatTensor` of shape `()`): negative log-likelihood of a whole code map in nats (sum
        over the height * width positions), averaged over the batch: the project's loss convention, equal to
        `loss * height * width`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    nll_per_sample: torch.FloatTensor | None = None


def _gate(x: torch.Tensor) -> torch.Tensor:
    """tanh(a) * sigmoid(b) for x = [a, b] split along channels."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32 for softmax and cross entropy; float32/float64 unchanged."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _shift_down(x: torch.Tensor) -> torch.Tensor:
    """Move a (batch, channels, height, width) map down by one row, filling the top row with zeros."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


def _shift_right(x: torch.Tensor) -> torch.Tensor:
    """Move a (batch, channels, height, width) map right by one column, filling the first column with zeros."""
    return F.pad(x, (1, 0, 0, 0))[:, :, :, :-1]


class GatedPixelCNNLayer(nn.Module):
    """One gated layer: the vertical and horizontal stacks side by side, the vertical feeding the horizontal."""

    def __init__(self, hidden_size: int, kernel_size: int, num_classes: int):
        super().__init__()
        self.half = kernel_size // 2
        # Vertical: rows i - n//2 .. i, columns j - n//2 .. j + n//2.
        self.vertical = nn.Conv2d(hidden_size, 2 * hidden_size, (self.half + 1, kernel_size))
        # Horizontal: row i, columns j - n//2 .. j.
        self.horizontal = nn.Conv2d(hidden_size, 2 * hidden_size, (1, self.half + 1))
        self.vertical_to_horizontal = nn.Conv2d(2 * hidden_size, 2 * hidden_size, 1)
        self.horizontal_output = nn.Conv2d(hidden_size, hidden_size, 1)
        # Per-class biases V_f y, V_g y of both stacks, stored as one (num_classes, 4 * hidden_size) table.
        self.class_bias = nn.Embedding(num_classes, 4 * hidden_size) if num_classes > 0 else None

    def forward(
        self, vertical: torch.Tensor, horizontal: torch.Tensor, class_labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.vertical(F.pad(vertical, (self.half, self.half, self.half, 0)))
        h = self.horizontal(F.pad(horizontal, (self.half, 0, 0, 0))) + self.vertical_to_horizontal(v)
        if self.class_bias is not None:
            v_bias, h_bias = self.class_bias(class_labels)[:, :, None, None].chunk(2, dim=1)
            v, h = v + v_bias, h + h_bias
        return _gate(v), horizontal + self.horizontal_output(_gate(h))


class PixelCNNPriorModel(SavesToFolder, PreTrainedModel):
    r"""
    Gated PixelCNN prior p(c | y) over (height, width) maps of VQ-VAE codes in [0, num_embeddings).

    `forward` scores code maps with teacher forcing (all positions in one pass), `generate` samples new maps
    position by position, and `log_prob` returns each map's log-likelihood in nats.
    """

    config_class = PixelCNNPriorConfig
    base_model_prefix = "prior"
    main_input_name = "input_ids"

    def __init__(self, config: PixelCNNPriorConfig):
        super().__init__(config)
        hidden = config.hidden_size
        self.embed_codes = nn.Embedding(config.num_embeddings, hidden)
        self.layers = nn.ModuleList(
            GatedPixelCNNLayer(hidden, config.kernel_size, config.num_classes) for _ in range(config.num_layers)
        )
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv2d(hidden, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, config.num_embeddings, 1)
        )
        self.post_init()

    def _init_weights(self, module):
        """Convolutions: PyTorch's fan-in default, U(+-1/sqrt(fan_in)) biases. Code embedding: N(0, 1), so the
        first layer sees unit-variance inputs. Class biases: N(0, initializer_range^2)."""
        if isinstance(module, nn.Conv2d):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            bound = 1 / math.sqrt(module.weight[0].numel())
            init.uniform_(module.bias, -bound, bound)
        elif module is self.embed_codes:
            init.normal_(module.weight, mean=0.0, std=1.0)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_codes

    def _logits(self, codes: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor:
        """(batch, height, width) codes -> (batch, height, width, K) logits, without input checks."""
        x = self.embed_codes(codes).permute(0, 3, 1, 2)
        vertical, horizontal = _shift_down(x), _shift_right(x)
        for layer in self.layers:
            vertical, horizontal = layer(vertical, horizontal, class_labels)
        return self.head(horizontal).permute(0, 2, 3, 1)

    def _check_codes(self, codes, name: str) -> torch.Tensor:
        config = self.config
        if not isinstance(codes, torch.Tensor) or codes.dtype.is_floating_point or codes.dtype.is_complex:
            got = codes.dtype if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise ValueError(f"{name} must be an integer tensor of codes, got {got}.")
        if codes.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor of codes, got torch.bool.")
        expected = (config.grid_size, config.grid_size)
        if codes.ndim != 3 or tuple(codes.shape[1:]) != expected:
            raise ValueError(
                f"{name} must have shape (batch, {config.grid_size}, {config.grid_size}) (the config's grid_size), "
                f"got {tuple(codes.shape)}."
            )
        if codes.numel() > 0 and (codes.min() < 0 or codes.max() >= config.num_embeddings):
            raise ValueError(
                f"{name} must hold codes in [0, num_embeddings={config.num_embeddings}), "
                f"got values in [{int(codes.min())}, {int(codes.max())}]."
            )
        return codes.long()

    def _check_class_labels(self, class_labels, batch_size: int) -> torch.Tensor | None:
        num_classes = self.config.num_classes
        if num_classes == 0:
            if class_labels is not None:
                raise ValueError(
                    "class_labels were given, but this prior is unconditional (num_classes=0); "
                    "pass class_labels=None or build the prior with num_classes > 0."
                )
            return None
        if class_labels is None:
            raise ValueError(
                f"class_labels are required: this prior is class-conditional (num_classes={num_classes}); "
                f"pass a tensor of shape ({batch_size},) with labels in [0, {num_classes})."
            )
        if isinstance(class_labels, int) and not isinstance(class_labels, bool):
            class_labels = torch.full((batch_size,), class_labels, dtype=torch.long)
        if (
            not isinstance(class_labels, torch.Tensor)
            or class_labels.dtype.is_floating_point
            or class_labels.dtype.is_complex
            or class_labels.dtype == torch.bool
        ):
            got = class_labels.dtype if isinstance(class_labels, torch.Tensor) else type(class_labels).__name__
            raise ValueError(f"class_labels must be an int or an integer tensor, got {got}.")
        if tuple(class_labels.shape) != (batch_size,):
            raise ValueError(f"class_labels must have shape ({batch_size},), got {tuple(class_labels.shape)}.")
        if batch_size > 0 and (class_labels.min() < 0 or class_labels.max() >= num_classes):
            raise ValueError(
                f"class_labels must lie in [0, num_classes={num_classes}), "
                f"got values in [{int(class_labels.min())}, {int(class_labels.max())}]."
            )
        return class_labels.long().to(self.device)

    def forward(
        self,
        input_ids: torch.LongTensor,
        labels: torch.LongTensor | None = None,
        class_labels: torch.LongTensor | None = None,
        return_loss: bool = True,
    ) -> PixelCNNPriorOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch, grid_size, grid_size)`): code maps; the logits at (i, j)
                depend only on the codes before (i, j) in raster order.
            labels (`torch.LongTensor` of the same shape, *optional*): targets of the cross entropy; defaults to
                `input_ids` (the model predicts each code from the ones before it).
            class_labels (`torch.LongTensor` of shape `(batch,)`, *optional*): labels y in [0, num_classes), required
                by a class-conditional prior and refused by an unconditional one.
            return_loss (`bool`, defaults to `True`): compute `loss` and `nll_per_sample`.
        """
        input_ids = self._check_codes(input_ids, "input_ids")
        class_labels = self._check_class_labels(class_labels, input_ids.shape[0])
        targets = input_ids if labels is None else self._check_codes(labels, "labels")
        if targets.shape[0] != input_ids.shape[0]:
            raise ValueError(f"labels must have batch size {input_ids.shape[0]}, got {targets.shape[0]}.")
        logits = self._logits(input_ids, class_labels)
        if not return_loss:
            return PixelCNNPriorOutput(logits=logits)
        nll = self._nll(logits, targets)
        return PixelCNNPriorOutput(loss=nll.mean(), logits=logits, nll_per_sample=nll.sum((1, 2)).mean())

    @staticmethod
    def _nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood (nats) of each code, shape (batch, height, width); computed in >= float32."""
        return F.cross_entropy(_upcast(logits).permute(0, 3, 1, 2), targets.to(logits.device), reduction="none")

    def log_prob(self, input_ids: torch.LongTensor, class_labels: torch.LongTensor | None = None) -> torch.Tensor:
        """log p(c | y) of each code map in nats, shape (batch,). Gradients flow; wrap in `torch.no_grad()` for
        metrics. Bits per code: `-log_prob / (grid_size**2 * ln 2)`."""
        input_ids = self._check_codes(input_ids, "input_ids")
        class_labels = self._check_class_labels(class_labels, input_ids.shape[0])
        return -self._nll(self._logits(input_ids, class_labels), input_ids).sum((1, 2))

    @torch.no_grad()
    def generate(
        self,
        num_samples: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        class_labels: torch.LongTensor | int | None = None,
    ) -> torch.LongTensor:
        r"""
        Sample code maps c ~ p(c | y) in raster order: one network pass per position, then
        c[i, j] ~ softmax(logits[i, j] / temperature).

        Args:
            num_samples (`int`): number of code maps.
            temperature (`float`, defaults to 1.0): > 0 rescales the logits (< 1 sharper, > 1 flatter);
                0 takes the argmax at every position (greedy decoding).
            generator (`torch.Generator`, *optional*): source of randomness for `torch.multinomial`; the same seed
                gives the same samples. Sampling happens on the generator's device.
            class_labels (`int` or `torch.LongTensor` of shape `(num_samples,)`, *optional*): required by a
                class-conditional prior; an int gives every sample that label.

        Returns:
            `torch.LongTensor` of shape `(num_samples, grid_size, grid_size)` on the model's device.
        """
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature >= 0:
            raise ValueError(f"temperature must be a number >= 0 (0 = argmax), got {temperature!r}.")
        class_labels = self._check_class_labels(class_labels, num_samples)
        size = self.config.grid_size
        codes = torch.zeros(num_samples, size, size, dtype=torch.long, device=self.device)
        sample_device = generator.device if generator is not None else self.device
        was_training = self.training
        self.eval()
        try:
            for i in range(size):
                for j in range(size):
                    # Rows below i cannot influence row i (the network is causal), so they are not computed.
                    logits = self._logits(codes[:, : i + 1], class_labels)[:, i, j]
                    if temperature == 0:
                        codes[:, i, j] = logits.argmax(dim=-1)
                    else:
                        probs = torch.softmax(_upcast(logits) / temperature, dim=-1).to(sample_device)
                        codes[:, i, j] = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(codes.device)
        finally:
            self.train(was_training)
        return codes
