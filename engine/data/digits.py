"""`digits`: scikit-learn's 1,797 real 8×8 handwritten digits (bundled, no download)."""

from __future__ import annotations

from functools import lru_cache

import torch

from engine.data.base import Dataset, LabelColumn
from engine.data.checks import check_choice, check_fraction, check_seed, check_split
from engine.data.images import resize
from engine.data.split import split_indices

SIZES = (8, 16, 28, 32)
DIGIT_NAMES = [str(d) for d in range(10)]


@lru_cache(maxsize=1)
def _all_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """Intensities (1797, 1, 8, 8) in [0, 1] and labels (1797,) int64."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return x, torch.as_tensor(bunch.target, dtype=torch.int64)


def n_images() -> int:
    """How many digit images there are (1,797)."""
    return len(_all_digits()[1])


def digit_split(split: str, seed: int, test_fraction: float) -> torch.Tensor:
    """Indices of `split` into the 1,797 digits, stratified by digit class."""
    _, y = _all_digits()
    return split_indices(len(y), split, seed, test_fraction, stratify=y)


def drawn_sources(part: str, count: int, seed: int, test_fraction: float, g: torch.Generator) -> torch.Tensor:
    """`count` indices into all digits, drawn from the digits of `part` ("train" or "test")
    so that every image of the part is used equally often (up to one), in random order."""
    pool = digit_split(part, seed, test_fraction)
    order = torch.cat([torch.randperm(len(pool), generator=g) for _ in range(-(-count // len(pool)))])
    return pool[order[:count]]


def digit_images(index: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits at `index` as intensities (n, 1, size, size) and labels (n,)."""
    x, y = _all_digits()
    return resize(x[index], (size, size)).contiguous(), y[index]


def load(split: str = "train", seed: int = 0, *, size: int = 8, test_fraction: float = 0.2) -> Dataset:
    """The digits of `split`: x (n, 1, size, size) in [0, 1], label column "digit"."""
    split, seed = check_split(split), check_seed(seed)
    size = check_choice("size", size, SIZES)
    test_fraction = check_fraction("test_fraction", test_fraction)
    index = digit_split(split, seed, test_fraction)
    x, y = digit_images(index, size)
    return Dataset(
        name="digits",
        split=split,
        x=x,
        labels={"digit": LabelColumn("digit", y, list(DIGIT_NAMES))},
        shape=(1, size, size),
        value_range=(0.0, 1.0),
        meta={"source_index": index},
    )
