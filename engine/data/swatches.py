"""`swatches`: nine uniform colour swatches (seed001 §3.5, Fig. 3.1's toy data).

Every image is one colour everywhere; the colour is one of nine, drawn uniformly. A model
whose latents are tied to image patches by a convolutional network reconstructs them well
but, sampling each patch's latent from a prior that does not tie the patches together,
draws patchwork images; a model whose latents each reach the whole image does not.
"""

from __future__ import annotations

import torch

from engine.data.base import Dataset, LabelColumn
from engine.data.checks import check_choice, check_fraction, check_int, check_seed, check_split
from engine.data.split import generator, split_parts

SIZES = (8, 16, 32)
MAX_N = 100_000
COLOURS = {
    "red": (0.9, 0.1, 0.1),
    "orange": (1.0, 0.55, 0.0),
    "yellow": (0.95, 0.9, 0.1),
    "green": (0.1, 0.7, 0.2),
    "teal": (0.0, 0.55, 0.55),
    "blue": (0.15, 0.3, 0.95),
    "purple": (0.5, 0.15, 0.7),
    "pink": (1.0, 0.5, 0.75),
    "grey": (0.5, 0.5, 0.5),
}


def load(split: str = "train", seed: int = 0, *, n: int = 9000, size: int = 16, test_fraction: float = 0.2) -> Dataset:
    """`n` swatches over train + test; x (n_split, 3, size, size) in [0, 1]; label "colour"."""
    split, seed = check_split(split), check_seed(seed)
    n = check_int("n", n, 10, MAX_N)
    size = check_choice("size", size, SIZES)
    test_fraction = check_fraction("test_fraction", test_fraction)
    rgb = torch.tensor(list(COLOURS.values()))
    parts = split_parts(split, n, test_fraction)
    colour = torch.cat(
        [torch.randint(len(COLOURS), (count,), generator=generator(seed, f"swatches/{part}")) for part, count in parts]
    )
    x = rgb[colour][:, :, None, None].expand(-1, 3, size, size).contiguous()
    return Dataset(
        name="swatches",
        split=split,
        x=x,
        labels={"colour": LabelColumn("colour", colour, list(COLOURS))},
        shape=(3, size, size),
        value_range=(0.0, 1.0),
        meta={"rgb": dict(COLOURS)},
    )
