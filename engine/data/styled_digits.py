"""`styled-digits`: the real digits with one more known factor that is not a colour.

Three two-factor datasets for multi-facet clustering (seed000 ch. 2, MFCVAE) beside
`facet-digits` (digit x colour) and `shapes` (shape x colour), each with a second factor
of a different kind, chosen by the option `style`:

  rotation   geometry: the digit turned by one of four angles (-45, 0, 45 or 90 degrees)
             about the image centre, shrunk so that no turn cuts a corner off. No two angles
             differ by 180 degrees, so a turned 6 is never a 9.
  thickness  morphology: the stroke thinned by a pixel on each side (grey-level erosion,
             a 3x3 minimum at 16x16), as it is, or grown by a pixel (dilation, a 3x3 maximum).
  texture    a background pattern under the stroke: none, horizontal, vertical or
             diagonal stripes of period 4 with a random phase, so a pattern is not one
             fixed set of pixels.

Each image combines one digit of the split (train and test never share a digit image)
with a style value drawn independently and uniformly. Images are grey, (1, size, size)
in [0, 1]; label columns "digit" and the style's name.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from engine.data import digits
from engine.data.base import Dataset, LabelColumn
from engine.data.checks import check_choice, check_fraction, check_int, check_seed, check_split
from engine.data.split import generator, split_parts

SIZES = (16, 32)
MAX_N = 200_000  # kept in memory: 200,000 x 16 x 16 floats = 200 MB
STYLES = {
    "rotation": ["-45°", "0°", "45°", "90°"],
    "thickness": ["thin", "medium", "thick"],
    "texture": ["plain", "horizontal", "vertical", "diagonal"],
}
ANGLES = (-45.0, 0.0, 45.0, 90.0)  # degrees, anticlockwise
SHRINK = 1 / math.sqrt(2)  # a square turned by 45 degrees fits its frame at this scale
PERIOD = 4  # of the stripes, in pixels at 16x16
TEXTURE_LEVEL = 0.45  # intensity of a stripe under no stroke


def rotated(intensity: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """(n, 1, H, W) images turned anticlockwise by `angle` (n,) degrees about their centre,
    shrunk by SHRINK so every turn keeps the whole square inside the frame."""
    a = torch.deg2rad(angle)
    cos, sin = torch.cos(a) / SHRINK, torch.sin(a) / SHRINK
    # affine_grid maps output coordinates to input ones: the inverse turn, scaled up
    theta = torch.stack([torch.stack([cos, -sin, 0 * a], 1), torch.stack([sin, cos, 0 * a], 1)], 1)
    grid = F.affine_grid(theta, list(intensity.shape), align_corners=False)
    return F.grid_sample(intensity, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def thickened(intensity: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Each image's stroke made thinner (level 0: grey-level erosion), kept (1) or made
    thicker (2: grey-level dilation): a 3x3 minimum or maximum at 16x16, its radius scaled
    with the image side."""
    radius = intensity.shape[-1] // 16
    k = 2 * radius + 1
    grown = F.max_pool2d(intensity, k, stride=1, padding=radius)
    shrunk = -F.max_pool2d(-intensity, k, stride=1, padding=radius)
    level = level.view(-1, 1, 1, 1)
    return torch.where(level == 0, shrunk, torch.where(level == 2, grown, intensity))


def textured(intensity: torch.Tensor, pattern: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The stroke over a stripe pattern (n,) (0 none, 1 horizontal, 2 vertical, 3 diagonal)
    with a random phase per image: pixel = max(stroke, TEXTURE_LEVEL * stripe)."""
    n, _, h, w = intensity.shape
    period = PERIOD * (w // 16)
    phase = torch.randint(period, (n, 1, 1), generator=g)
    rows, cols = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    coordinate = torch.stack([rows + 0 * cols, rows + 0 * cols, cols + 0 * rows, rows + cols])  # (4, 1, h, w)
    along = coordinate[pattern.clamp(min=1)].squeeze(1) + phase  # (n, h, w)
    stripe = ((along % period) < period // 2).float() * (pattern != 0).float().view(n, 1, 1)
    return torch.maximum(intensity, TEXTURE_LEVEL * stripe.unsqueeze(1))


def _make(part: str, count: int, seed: int, test_fraction: float, size: int, style: str) -> dict:
    g = generator(seed, f"styled-digits/{style}/{part}")
    source = digits.drawn_sources(part, count, seed, test_fraction, g)
    value = torch.randint(len(STYLES[style]), (count,), generator=g)
    intensity, digit = digits.digit_images(source, size)
    if style == "rotation":
        x = rotated(intensity, torch.tensor(ANGLES)[value])
    elif style == "thickness":
        x = thickened(intensity, value)
    else:
        x = textured(intensity, value, g)
    return {"x": x.clamp_(0.0, 1.0), "digit": digit, "style": value, "source": source}


def load(
    split: str = "train",
    seed: int = 0,
    *,
    style: str = "rotation",
    n: int = 12000,
    size: int = 16,
    test_fraction: float = 0.2,
) -> Dataset:
    """`n` images over train + test; x (n_split, 1, size, size) in [0, 1].

    Label columns: "digit" ("0".."9") and `style` (its values' names, STYLES[style]).
    meta["source_index"] gives each image's index among the 1,797 digits.
    """
    split, seed = check_split(split), check_seed(seed)
    style = check_choice("style", style, tuple(STYLES))
    n = check_int("n", n, 10, MAX_N)
    size = check_choice("size", size, SIZES)
    test_fraction = check_fraction("test_fraction", test_fraction)
    made = [
        _make(part, count, seed, test_fraction, size, style) for part, count in split_parts(split, n, test_fraction)
    ]
    cat = {key: torch.cat([m[key] for m in made]) for key in made[0]}
    return Dataset(
        name="styled-digits",
        split=split,
        x=cat["x"],
        labels={
            "digit": LabelColumn("digit", cat["digit"], list(digits.DIGIT_NAMES)),
            style: LabelColumn(style, cat["style"], list(STYLES[style])),
        },
        shape=(1, size, size),
        value_range=(0.0, 1.0),
        meta={"source_index": cat["source"], "style": style},
    )
