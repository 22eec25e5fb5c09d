"""Turning image tensors into pictures: grids and PNG bytes."""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image


def image_grid(
    x: torch.Tensor, nrow: int | None = None, padding: int = 1, value_range: tuple[float, float] = (0.0, 1.0)
) -> np.ndarray:
    """Tile images x (n, C, H, W) into one uint8 array (rows, cols, 3), padded in grey."""
    x = x.detach().float().cpu()
    n, c, h, w = x.shape
    lo, hi = value_range
    x = ((x - lo) / (hi - lo)).clamp(0, 1)
    if c == 1:
        x = x.expand(n, 3, h, w)
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol_rows = math.ceil(n / nrow)
    grid = torch.full((3, ncol_rows * (h + padding) + padding, nrow * (w + padding) + padding), 0.5)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top : top + h, left : left + w] = x[i, :3]
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def to_pixels(x: torch.Tensor, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Images x (n, C, H, W) with values in value_range -> uint8 (n, H, W, C)."""
    lo, hi = value_range
    x = ((x.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def tile_rows(tiles: np.ndarray, cols: int) -> np.ndarray:
    """Lay uint8 tiles (n, h, w, C) out row by row from the top left, `cols` to a row, on
    black: (ceil(n / cols) * h, cols * w, C), with no padding between tiles."""
    n, h, w, c = tiles.shape
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * cols, h, w, c), np.uint8)
    grid[:n] = tiles
    return grid.reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)


def png_bytes(array: np.ndarray, scale: int = 1) -> bytes:
    """Encode a uint8 (H, W) or (H, W, 3) array as PNG, optionally upscaled (nearest)."""
    img = Image.fromarray(array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def upscale(array: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of a (H, W[, C]) uint8 array by an integer factor."""
    if scale <= 1:
        return array
    return array.repeat(scale, axis=0).repeat(scale, axis=1)


def display_scale(width: int, target: int = 640, largest: int = 12) -> int:
    """An integer zoom that brings a picture `width` pixels wide close to `target`."""
    return int(max(1, min(largest, target // max(width, 1))))


def labelled_rows(
    rows: list[torch.Tensor],
    labels: list[str],
    value_range: tuple[float, float] = (0.0, 1.0),
    scale: int | None = None,
    label_width: int = 150,
) -> np.ndarray:
    """Stack image rows (each (n, C, H, W), same n) into one picture with a text label
    at the left of each row; returns uint8 (rows, cols, 3)."""
    from PIL import ImageDraw, ImageFont

    grids = [image_grid(r, nrow=r.shape[0], value_range=value_range, padding=1) for r in rows]
    width = max(g.shape[1] for g in grids)
    scale = scale or display_scale(width)
    blocks = [upscale(g, scale) for g in grids]
    height = sum(b.shape[0] for b in blocks)
    canvas = Image.new("RGB", (label_width + blocks[0].shape[1], height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=13)
    top = 0
    for block, label in zip(blocks, labels):
        canvas.paste(Image.fromarray(block), (label_width, top))
        draw.text((6, top + block.shape[0] // 2), label, fill=(30, 30, 30), font=font, anchor="lm")
        top += block.shape[0]
    return np.asarray(canvas)
