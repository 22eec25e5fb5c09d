"""The DCT-VAE's context: the deterministic, non-trainable top latent z_L = f(x) and its
decoding to an image x_context (seed004 App. C, E, F; §3.10 [repo] of the seed notes).

- "dct": the unnormalised DCT-II of x in [0, 1] (engine.dct), its top-left size x size
  block per channel divided by a per-coefficient scale (max |coefficient| over the training
  set, a buffer saved with the model), clamped to [-1, 1] and quantised. Decoded by
  multiplying the scale back, zero-padding to H x W, the inverse DCT and a clamp to [0, 1].
- "pool" (App. F, Algorithms 3-4): the quantised average pool of x down to size x size,
  mapped to [-1, 1]; decoded by nearest upsampling.

Values z: (batch, C, size, size) on the grid of `quantise`, 2^bits levels in [-1, 1] at bin
centres. The repo adds a small dither (0.25 U(-1, 1) bins) inside the floor while training;
this module does not, so that f is a function of x and the context's posterior is a point.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.dct import dct2, idct2
from engine.errors import AtlasError

CONTEXTS = ("dct", "pool")
MAX_BITS = 8


def quantise(y: torch.Tensor, bits: int) -> torch.Tensor:
    """y clamped to [-1, 1] and moved to the centre of its bin among 2^bits equal bins
    (seed004 §3.10 [repo]): u = (y + 1) / 2, u = 0.999 where u >= 1,
    q = (floor(u 2^bits) + 0.5) / 2^bits, returned as 2q - 1."""
    u = (y.clamp(-1, 1) + 1) / 2
    u = torch.where(u >= 1, torch.full_like(u, 0.999), u)
    levels = 2**bits
    return 2 * (torch.floor(u * levels) + 0.5) / levels - 1


def bin_width(bits: int) -> float:
    """The width b = 2 / 2^bits of quantise's bins: the discretised Gaussian's (eqs. 14-15)."""
    return 2.0 / 2**bits


class DCTContext(nn.Module):
    """z = quantise(clamp(DCT(x)[:size, :size] / scale)); see the module docstring."""

    def __init__(self, input_shape: tuple[int, int, int], size: int, bits: int):
        super().__init__()
        self.input_shape, self.size, self.bits = input_shape, size, bits
        self.register_buffer("scale", torch.ones(input_shape[0], size, size))  # set by initialize

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """The kept block of the DCT-II of x (batch, C, H, W): (batch, C, size, size), unscaled."""
        return dct2(x)[..., : self.size, : self.size]

    @torch.no_grad()
    def initialize(self, train_data, batch_size: int = 1000) -> None:
        """scale = max |coefficient| over the training set, per channel and coefficient (1 where
        a coefficient is always zero)."""
        peak = torch.zeros_like(self.scale)
        for start in range(0, len(train_data), batch_size):
            x = train_data.batch(torch.arange(start, min(start + batch_size, len(train_data))))
            peak = torch.maximum(peak, self.coefficients(x.to(peak)).abs().amax(0))
        self.scale.copy_(torch.where(peak > 0, peak, torch.ones_like(peak)))

    def values(self, x: torch.Tensor) -> torch.Tensor:
        """The scaled coefficients before quantisation, clamped to [-1, 1]."""
        return (self.coefficients(x) / self.scale).clamp(-1, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return quantise(self.values(x), self.bits)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x_context (batch, C, H, W) in [0, 1] from z (batch, C, size, size)."""
        _, h, w = self.input_shape
        full = F.pad(z * self.scale, (0, w - self.size, 0, h - self.size))
        return idct2(full).clamp(0, 1)


class PoolContext(nn.Module):
    """z = quantise(2 AvgPool(x, v) - 1) with v = H / size (App. F, Algorithm 3)."""

    def __init__(self, input_shape: tuple[int, int, int], size: int, bits: int):
        super().__init__()
        self.input_shape, self.size, self.bits = input_shape, size, bits
        self.factor = input_shape[1] // size

    def values(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled values mapped to [-1, 1], before quantisation."""
        return (2 * F.avg_pool2d(x, self.factor) - 1).clamp(-1, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return quantise(self.values(x), self.bits)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Algorithm 4: nearest upsampling of (z + 1) / 2 back to H x W."""
        return F.interpolate((z + 1) / 2, scale_factor=self.factor, mode="nearest")


def make_context(kind: str, input_shape: tuple[int, int, int], size: int, bits: int) -> DCTContext | PoolContext:
    """The context f of `kind` for square images (C, H, H), refusing sizes it cannot take."""
    side = input_shape[1]
    if kind not in CONTEXTS:
        raise AtlasError(f"unknown context {kind!r}; use one of {', '.join(CONTEXTS)}")
    if not isinstance(size, int) or not 1 <= size <= side:
        raise AtlasError(f"context_size must be between 1 and the image side {side}, got {size!r}")
    if kind == "pool" and side % size:
        raise AtlasError(f"a pooling context needs a size that divides the image side {side}, got {size}")
    if not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
        raise AtlasError(f"context_bits must be between 1 and {MAX_BITS}, got {bits!r}")
    return (DCTContext if kind == "dct" else PoolContext)(input_shape, size, bits)
