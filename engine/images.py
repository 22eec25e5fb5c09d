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


def png_bytes(array: np.ndarray, scale: int = 1) -> bytes:
    """Encode a uint8 (H, W) or (H, W, 3) array as PNG, optionally upscaled (nearest)."""
    img = Image.fromarray(array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
