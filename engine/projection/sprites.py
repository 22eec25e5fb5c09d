"""Hover thumbnails for a map's points: every point's image, downscaled so that the whole
set fits a fixed pixel budget, laid out row by row in PNG sprite sheets. A browser shows
one point's thumbnail by drawing its sheet with a CSS background offset to the tile.

The budget is MAX_SHEETS sheets of at most SHEET_PX x SHEET_PX px (16.8 M px, about 64 MB
once decoded in the browser). Thumbnails shrink (never below MIN_TILE px) until every point
fits; when even that is too many, a random subset of the points gets one.

    atlas = sprite_atlas(data.batch, n_points, data.value_range)  # point atlas.ids[k] on tile k
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import AtlasError
from engine.images import png_bytes, tile_rows, to_pixels

SHEET_PX = 2048  # browsers decode and draw images of this size everywhere
MAX_SHEETS = 4
MIN_TILE = 8  # a smaller thumbnail says little; fewer points get one instead
CHUNK = 4096  # images rendered and downscaled at a time


@dataclass(frozen=True)
class SpriteLayout:
    """Where thumbnails go: `count` tiles of (tile_h, tile_w) px, `cols` to a sheet row and
    `per_sheet` to a sheet: tile k is on sheet k // per_sheet, in row and column
    divmod(k % per_sheet, cols) of that sheet (the browser's lookup, scatter.js)."""

    count: int
    tile_h: int
    tile_w: int
    cols: int
    per_sheet: int

    @property
    def n_sheets(self) -> int:
        return math.ceil(self.count / self.per_sheet)

    def sheet_size(self, sheet: int) -> tuple[int, int]:
        """(width, height) px of one sheet: the last one only as tall as its tiles need."""
        tiles = min(self.per_sheet, self.count - sheet * self.per_sheet)
        return min(tiles, self.cols) * self.tile_w, math.ceil(tiles / self.cols) * self.tile_h


def sprite_layout(n: int, image_hw: tuple[int, int]) -> SpriteLayout:
    """The largest thumbnails (at most the images' own size) that fit n points into the
    budget; below MIN_TILE px, as many points as fit at MIN_TILE."""
    h, w = image_hw
    side = max(h, w)

    def layout(t: int) -> SpriteLayout:
        th, tw = max(1, round(h * t / side)), max(1, round(w * t / side))
        cols = SHEET_PX // tw
        per_sheet = cols * (SHEET_PX // th)
        return SpriteLayout(min(n, MAX_SHEETS * per_sheet), th, tw, cols, per_sheet)

    for t in range(side, min(side, MIN_TILE) - 1, -1):
        if layout(t).count == n:
            return layout(t)
    return layout(min(side, MIN_TILE))


@dataclass(frozen=True)
class SpriteAtlas:
    """PNG sprite sheets of the thumbnails of `ids` (sorted global ids; all n_total points
    unless subsampled), tile k showing point ids[k]."""

    sheets: tuple[bytes, ...]
    layout: SpriteLayout
    ids: np.ndarray  # (count,) int
    n_total: int
    image_hw: tuple[int, int]  # the images' own size

    @property
    def subsampled(self) -> bool:
        return len(self.ids) < self.n_total


def sprite_atlas(
    batch: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    value_range: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
) -> SpriteAtlas:
    """Thumbnails of images batch(index) -> (len(index), C, H, W), C 1 (grey) or 3, of
    points 0..n-1; a random subset fixed by `seed` when they do not all fit."""
    first = batch(torch.arange(1))
    if first.ndim != 4 or first.shape[1] not in (1, 3):
        raise AtlasError(f"thumbnails need images (n, 1 or 3, H, W); got one of shape {tuple(first.shape[1:])}")
    image_hw = tuple(first.shape[-2:])
    layout = sprite_layout(n, image_hw)
    ids = (
        np.arange(n)
        if layout.count == n
        else np.sort(np.random.default_rng(seed).choice(n, layout.count, replace=False))
    )
    sheets = []
    for s in range(layout.n_sheets):
        chosen = torch.from_numpy(ids[s * layout.per_sheet : (s + 1) * layout.per_sheet])
        tiles = np.concatenate([_thumbnails(batch(part), layout, value_range) for part in chosen.split(CHUNK)])
        grid = tile_rows(tiles, min(layout.cols, len(tiles)))
        sheets.append(png_bytes(grid[..., 0] if grid.shape[-1] == 1 else grid))
    return SpriteAtlas(tuple(sheets), layout, ids, n, image_hw)


def _thumbnails(x: torch.Tensor, layout: SpriteLayout, value_range: tuple[float, float]) -> np.ndarray:
    """Images (m, C, H, W) -> uint8 (m, tile_h, tile_w, C), averaged down (area) when smaller."""
    x = x.float()
    if x.shape[-2:] != (layout.tile_h, layout.tile_w):
        x = F.interpolate(x, size=(layout.tile_h, layout.tile_w), mode="area")
    return to_pixels(x, value_range)
