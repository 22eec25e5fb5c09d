"""`facet-digits`: the real digits in colour, with three known facets.

Each image combines one digit of the split (so train and test never share a digit
image) with a stroke colour and a background colour, drawn independently and
uniformly:  pixel = intensity * stroke + (1 - intensity) * background.
The facets are the ground truth for multi-facet clustering (seed000 ch. 2, MFCVAE).
"""

from __future__ import annotations

import torch

from engine.data import digits
from engine.data.base import Dataset, LabelColumn
from engine.data.checks import check_choice, check_fraction, check_int, check_seed, check_split
from engine.data.split import generator, split_parts

SIZES = (8, 16, 28, 32)
MAX_N = 200_000  # the images are kept in memory: 200,000 x 3 x 16 x 16 floats = 600 MB

STROKES = {  # bright colours
    "white": (1.0, 1.0, 1.0),
    "red": (0.95, 0.15, 0.1),
    "green": (0.15, 0.85, 0.2),
    "blue": (0.2, 0.45, 1.0),
    "yellow": (1.0, 0.85, 0.1),
}
BACKGROUNDS = {  # dark colours, none equal to a stroke colour
    "black": (0.0, 0.0, 0.0),
    "navy": (0.05, 0.05, 0.35),
    "maroon": (0.35, 0.05, 0.1),
    "grey": (0.4, 0.4, 0.4),
}

COLOUR_NAMES = [f"{stroke} on {background}" for stroke in STROKES for background in BACKGROUNDS]


def colourise(intensity: torch.Tensor, stroke: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """intensity (n, 1, H, W), stroke and background (n, 3) RGB -> (n, 3, H, W)."""
    stroke, background = stroke[:, :, None, None], background[:, :, None, None]
    return intensity * stroke + (1.0 - intensity) * background


def _make(part: str, count: int, seed: int, test_fraction: float, size: int) -> dict:
    """`count` coloured images built from the digits of `part` ("train" or "test")."""
    g = generator(seed, f"facet-digits/{part}")
    source = digits.drawn_sources(part, count, seed, test_fraction, g)
    stroke = torch.randint(len(STROKES), (count,), generator=g)
    background = torch.randint(len(BACKGROUNDS), (count,), generator=g)
    intensity, digit = digits.digit_images(source, size)
    stroke_rgb = torch.tensor(list(STROKES.values()))[stroke]
    background_rgb = torch.tensor(list(BACKGROUNDS.values()))[background]
    x = colourise(intensity, stroke_rgb, background_rgb)
    return {"x": x, "digit": digit, "stroke": stroke, "background": background, "source": source}


def load(split: str = "train", seed: int = 0, *, n: int = 6000, size: int = 16, test_fraction: float = 0.2) -> Dataset:
    """`n` images over train + test; x (n_split, 3, size, size) in [0, 1].

    Label columns: "digit" ("0".."9"), "stroke" and "background" (colour names), and
    "colour", the (stroke, background) pair as one factor of 20 classes ("red on navy").
    meta["source_index"] gives each image's index among the 1,797 digits.
    """
    split, seed = check_split(split), check_seed(seed)
    n = check_int("n", n, 10, MAX_N)
    size = check_choice("size", size, SIZES)
    test_fraction = check_fraction("test_fraction", test_fraction)
    parts = split_parts(split, n, test_fraction)
    made = [_make(part, count, seed, test_fraction, size) for part, count in parts]
    cat = {key: torch.cat([m[key] for m in made]) for key in made[0]}
    return Dataset(
        name="facet-digits",
        split=split,
        x=cat["x"],
        labels={
            "digit": LabelColumn("digit", cat["digit"], list(digits.DIGIT_NAMES)),
            "stroke": LabelColumn("stroke", cat["stroke"], list(STROKES)),
            "background": LabelColumn("background", cat["background"], list(BACKGROUNDS)),
            # the colour scheme as one factor: stroke-major code over the 5 x 4 pairs
            "colour": LabelColumn("colour", cat["stroke"] * len(BACKGROUNDS) + cat["background"], COLOUR_NAMES),
        },
        shape=(3, size, size),
        value_range=(0.0, 1.0),
        meta={
            "source_index": cat["source"],
            "stroke_rgb": dict(STROKES),
            "background_rgb": dict(BACKGROUNDS),
        },
    )
