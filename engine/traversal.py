"""Latent traversals, 2-D grids and interpolations: which latent vectors to decode.

Ranges for a traversal of dimension d (anchors.md B3, disentanglement_lib):
- "prior":     mu_prior +- k prior standard deviations (k = 2 by default);
- "posterior": the fitted aggregate posterior, its mean +- 2 sd per dimension;
- "data":      the min and max of E[z_d | x] over the data.

A spatial group (C, h, w) is traversed one value at a time (one channel at one position) or a
whole channel at once: every one of its h*w values moves from its low to its high end together.
"""

from __future__ import annotations

import math

import torch

from engine.diagnostics.activity import GroupActivity
from engine.errors import AtlasError
from engine.models.base import OneGroupDecoder

RANGE_MODES = ("prior", "posterior", "data")


def traversal_range(mode: str, activity: GroupActivity, k: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Low and high ends (dim,) of every dimension's traversal."""
    if mode == "prior":
        ones = torch.ones_like(activity.kl)
        return -k * ones, k * ones
    if mode == "posterior":
        return (
            activity.posterior_mean - 2 * activity.aggregate_std,
            activity.posterior_mean + 2 * activity.aggregate_std,
        )
    if mode == "data":
        return activity.mean_min, activity.mean_max
    raise AtlasError(f"unknown traversal range {mode!r}; choose one of {', '.join(RANGE_MODES)}")


def traversal_latents(
    base: torch.Tensor, dims: list[int] | torch.Tensor, low: torch.Tensor, high: torch.Tensor, steps: int = 11
) -> torch.Tensor:
    """Latents (len(dims), steps, dim): row r moves dimension dims[r] from low to high,
    every other coordinate stays at `base` (dim,)."""
    if steps < 2:
        raise AtlasError(f"a traversal needs at least 2 steps, got {steps}")
    dims = torch.as_tensor(dims, dtype=torch.long)
    t = torch.linspace(0.0, 1.0, steps)
    grid = base.expand(len(dims), steps, base.shape[-1]).clone()
    values = low[dims, None] + (high[dims] - low[dims])[:, None] * t  # (rows, steps)
    grid[torch.arange(len(dims)), :, dims] = values
    return grid


def channel_blocks(shape: tuple[int, ...]) -> list[torch.Tensor]:
    """The flat indices of every position of each channel of a spatial group (C, h, w)."""
    if len(shape) != 3:
        raise AtlasError(f"whole-channel traversals need a spatial latent group (C, h, w), got shape {shape}")
    per = math.prod(shape[1:])
    return list(torch.arange(shape[0] * per).view(shape[0], per))


def channel_order(activity: GroupActivity, shape: tuple[int, ...]) -> list[int]:
    """The channels of a spatial group from most to least informative (KL summed over positions)."""
    return torch.argsort(activity.kl.view(shape[0], -1).sum(-1), descending=True).tolist()


def position_label(d: int, shape: tuple[int, ...]) -> str:
    """A flat dimension's name: z[channel, row, column] in a spatial group, z<d> otherwise."""
    if len(shape) != 3:
        return f"z{d}"
    c, rest = divmod(d, shape[1] * shape[2])
    return f"z[{c}, {rest // shape[2]}, {rest % shape[2]}]"


def block_traversal_latents(
    base: torch.Tensor, blocks: list[torch.Tensor], low: torch.Tensor, high: torch.Tensor, steps: int = 11
) -> torch.Tensor:
    """Latents (len(blocks), steps, dim): row r moves every dimension of blocks[r] at once, each
    from its low to its high end (a whole channel); the others stay at `base` (dim,)."""
    if steps < 2:
        raise AtlasError(f"a traversal needs at least 2 steps, got {steps}")
    dim = base.shape[-1]
    moved = torch.zeros(len(blocks), dim, dtype=torch.bool)
    for r, dims in enumerate(blocks):
        moved[r, dims] = True
    t = torch.linspace(0.0, 1.0, steps)[:, None]
    values = low + (high - low) * t  # (steps, dim)
    return torch.where(moved[:, None, :], values, base.expand(len(blocks), steps, dim))


def grid_2d(
    base: torch.Tensor, dim_x: int, dim_y: int, low: torch.Tensor, high: torch.Tensor, steps: int = 9
) -> torch.Tensor:
    """Latents (steps, steps, dim): dim_y varies down the rows, dim_x across the columns."""
    if dim_x == dim_y:
        raise AtlasError("pick two different dimensions for a 2-D grid")
    t = torch.linspace(0.0, 1.0, steps)
    xs = low[dim_x] + (high[dim_x] - low[dim_x]) * t
    ys = low[dim_y] + (high[dim_y] - low[dim_y]) * t
    grid = base.expand(steps, steps, base.shape[-1]).clone()
    grid[:, :, dim_x] = xs[None, :]
    grid[:, :, dim_y] = ys[:, None]
    return grid


def interpolate(a: torch.Tensor, b: torch.Tensor, steps: int = 9, mode: str = "linear") -> torch.Tensor:
    """Latents (steps, dim) from a to b, linearly or along the great circle (slerp),
    which keeps the norm typical of Gaussian samples."""
    t = torch.linspace(0.0, 1.0, steps)[:, None]
    if mode == "linear":
        return (1 - t) * a + t * b
    if mode != "spherical":
        raise AtlasError(f"unknown interpolation {mode!r}; choose 'linear' or 'spherical'")
    cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if omega.abs() < 1e-6:
        return (1 - t) * a + t * b
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


@torch.inference_mode()
def decode_group(model, base: dict[str, torch.Tensor], group: str, z: torch.Tensor) -> torch.Tensor:
    """Decode latents z (..., dim) of one group with every other group held at `base`
    ({name: flat tensor (dim_g,)}); returns (..., *data_shape), for display (no autograd).
    A model that can share the work that does not depend on the group (`OneGroupDecoder`,
    e.g. an HVAE's layers above the traversed one) does so."""
    shapes = {g.name: g.shape for g in model.latent_groups}
    if group not in shapes:
        raise AtlasError(f"this model has no latent group {group!r}; it has {', '.join(shapes)}")
    lead = z.shape[:-1]
    flat = z.reshape(-1, z.shape[-1])
    if isinstance(model, OneGroupDecoder):
        out = model.decode_one_group(base, group, flat)
    else:
        latents = {
            name: (flat if name == group else value.reshape(1, -1).expand(len(flat), -1)).reshape(-1, *shapes[name])
            for name, value in base.items()
        }
        out = model.decode(latents)
    return out.reshape(*lead, *out.shape[1:])
