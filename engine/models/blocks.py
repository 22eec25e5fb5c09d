"""Network building blocks shared by the model families, and the one set of size limits
their configs are checked against.

    encoder = nn.Sequential(nn.Flatten(), mlp([784, 256, 128, 2 * d]))
    encoder = ConvEncoder((1, 28, 28), channels=(32, 64), hidden=(256,), out_dim=2 * d)

A family's config calls `check_size` / `check_network` in `__post_init__`, so a bad value
is refused with a message before any weight is allocated.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from engine.errors import AtlasError

MAX_WIDTH = 8192  # a dense layer's width, a conv layer's channels, an input dimension
MAX_RESIDUAL_WIDTH = 2048  # channels of a residual state that every block of a deep stack reads and writes
MAX_LATENT_DIM = 4096  # values of one latent group
MAX_LATENT_CHANNELS = 256  # channels of a spatial latent layer
MAX_LAYERS = 32  # latent layers of a hierarchy given layer by layer
MAX_BLOCKS = 512  # blocks of a block string
MAX_CLUSTERS = 4096  # components of a mixture prior
MAX_MIXTURES = 32  # components of a mixture likelihood


def check_size(name: str, value, limit: int) -> None:
    """Refuse anything but an integer between 1 and `limit`; `name` says which setting."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
        raise AtlasError(f"{name} must be an integer between 1 and {limit}, got {value!r}")


def check_network(model: str, input_shape: tuple[int, ...], arch: str, widths: tuple[int, ...]) -> None:
    """The checks of a family built on `mlp` or `ConvEncoder`/`ConvDecoder`: every width and
    input dimension in range, a known arch, images for a conv net; `model` names the family."""
    for h in (*widths, *input_shape):
        check_size("a layer width or input dimension", h, MAX_WIDTH)
    if arch not in ("mlp", "conv"):
        raise AtlasError(f"unknown {model} arch {arch!r}; choose 'mlp' or 'conv'")
    if arch == "conv" and len(input_shape) != 3:
        raise AtlasError(f"a conv {model} needs image inputs (C, H, W), got input_shape {input_shape}; use arch='mlp'")


def mlp(sizes: list[int], activation: type[nn.Module] = nn.SiLU) -> nn.Sequential:
    """Linear layers sizes[0] -> sizes[1] -> ... with `activation` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def conv_plan(input_shape: tuple[int, int, int], channels: tuple[int, ...]) -> list[int]:
    """Channel counts of the stride-2 layers that fit: halve while the side is even and
    at least 8, so the decoder's transposed convolutions land on the same sizes."""
    _, h, w = input_shape
    used = []
    for c in channels:
        if h % 2 or w % 2 or min(h, w) < 8:
            break
        used.append(c)
        h, w = h // 2, w // 2
    return used


class ConvEncoder(nn.Module):
    """Stride-2 4x4 convolutions (SiLU) while the image halves evenly, then an MLP head:
    (batch, C, H, W) -> (batch, out_dim)."""

    def __init__(self, input_shape, channels, hidden, out_dim):
        super().__init__()
        plan = conv_plan(input_shape, channels)
        c, h, w = input_shape
        layers: list[nn.Module] = []
        for c_out in plan:
            layers += [nn.Conv2d(c, c_out, 4, stride=2, padding=1), nn.SiLU()]
            c, h, w = c_out, h // 2, w // 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = mlp([c * h * w, *hidden, out_dim])

    def forward(self, x):
        return self.head(self.features(x))


class ConvDecoder(nn.Module):
    """The mirror of `ConvEncoder` on the same input_shape and channels: an MLP head to the
    smallest feature map, then stride-2 transposed convolutions back to the image,
    (batch, in_dim) -> (batch, C, H, W)."""

    def __init__(self, input_shape, channels, hidden, in_dim):
        super().__init__()
        plan = conv_plan(input_shape, channels)
        c_img, h, w = input_shape
        scale = 2 ** len(plan)
        c0 = plan[-1] if plan else c_img
        self.start_shape = (c0, h // scale, w // scale)
        self.head = nn.Sequential(mlp([in_dim, *hidden, math.prod(self.start_shape)]), nn.SiLU())
        layers: list[nn.Module] = []
        outs = list(reversed(plan))[1:] + [c_img]
        c = c0
        for i, c_out in enumerate(outs[: len(plan)]):
            layers.append(nn.ConvTranspose2d(c, c_out, 4, stride=2, padding=1))
            if i < len(plan) - 1:
                layers.append(nn.SiLU())
            c = c_out
        if not plan:
            layers.append(nn.Conv2d(c_img, c_img, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, z):
        # channels-last feature maps: oneDNN's transposed convolutions run faster on them (on one
        # core, 110 images of the 32 x 32 shapes-vae decoder: 21 ms in NCHW, 13 ms channels-last;
        # a training step's forward and backward of 128: 52 ms, 45 ms), with the same values;
        # the images come back in the usual contiguous layout
        h = self.head(z).view(-1, *self.start_shape)
        return self.body(h.contiguous(memory_format=torch.channels_last)).contiguous()
