"""Option checks shared by the dataset loaders: each returns the clean value or raises
AtlasError saying which option was wrong, what it must be and what came; and `row_index`,
the indexing of lazily generated images (an IndexError, as a sequence raises)."""

from __future__ import annotations

import numbers

import torch

from engine.errors import AtlasError

SPLITS = ("train", "test", "all")


def check_split(split: object) -> str:
    if split not in SPLITS:
        raise AtlasError(f"split must be one of {', '.join(SPLITS)}; got {split!r}.")
    return split


def check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise AtlasError(f"seed must be an integer; got {seed!r}.")
    return int(seed)


def check_choice(name: str, value: object, choices: tuple) -> object:
    if isinstance(value, bool) or value not in choices:
        shown = ", ".join(str(c) for c in choices)
        raise AtlasError(f"option {name} must be one of {shown}; got {value!r}.")
    return value


def check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise AtlasError(f"option {name} must be an integer from {low:,} to {high:,}; got {value!r}.")
    return int(value)


def check_fraction(name: str, value: object, *, allow_zero: bool = False) -> float:
    """A float in (0, 1), or [0, 1) with allow_zero."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = (0.0 <= value if allow_zero else 0.0 < value) and value < 1.0
    if not ok:
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise AtlasError(f"option {name} must be a number in {interval}; got {value!r}.")
    return value


def row_index(index: object, n: int, what: str) -> tuple[torch.Tensor, bool]:
    """The rows of `n` lazily generated `what` that an int, a slice, a list or a 1-D integer
    tensor asks for: 1-D long indices in [0, n) (negative ones counted from the end), and
    whether a single row (an int) was asked for."""
    if isinstance(index, slice):
        index = torch.arange(n)[index]
    index = torch.as_tensor(index, dtype=torch.long if isinstance(index, list) else None)
    if index.ndim > 1 or index.dtype.is_floating_point or index.dtype == torch.bool:
        raise IndexError(
            f"index {what} with a 1-D integer tensor, a slice or an int; "
            f"got dtype {index.dtype} and shape {tuple(index.shape)}"
        )
    single = index.ndim == 0
    index = index.reshape(-1)
    if len(index) and (index.min() < -n or index.max() >= n):
        raise IndexError(f"index out of range for {n} {what}")
    return index.long() % n, single
