"""Deterministic train/test splits, named random streams and dataset subsets.

Every embedded dataset draws its randomness from `generator(seed, stream)`, so a seed
fixes everything and streams named differently (e.g. "shapes/train", "shapes/test")
never share draws.
"""

from __future__ import annotations

import zlib
from dataclasses import replace

import torch

from engine.data.base import Dataset
from engine.errors import AtlasError


def generator(seed: int, stream: str) -> torch.Generator:
    """A torch.Generator fixed by (seed, stream)."""
    mixed = (seed * 0x9E3779B97F4A7C15 + zlib.crc32(stream.encode())) % (2**63)
    return torch.Generator().manual_seed(mixed)


def split_sizes(n: int, test_fraction: float) -> tuple[int, int]:
    """(n_train, n_test) with both at least 1."""
    if n < 2:
        raise AtlasError(f"a train/test split needs at least 2 examples; got {n}. Use split='all' or add more data.")
    n_test = min(max(round(n * test_fraction), 1), n - 1)
    return n - n_test, n_test


def split_parts(split: str, n: int, test_fraction: float) -> list[tuple[str, int]]:
    """The (part, size) pieces that make up `split` of n generated examples: train,
    test, or both in that order for "all"."""
    n_train, n_test = split_sizes(n, test_fraction)
    return {"train": [("train", n_train)], "test": [("test", n_test)], "all": [("train", n_train), ("test", n_test)]}[
        split
    ]


def split_indices(
    n: int, split: str, seed: int, test_fraction: float, stratify: torch.Tensor | None = None
) -> torch.Tensor:
    """Sorted indices (LongTensor) of `split` among n examples.

    The test set holds about `test_fraction` of the examples, of every class when
    `stratify` (n,) int codes are given; "all" is every index in the original order.
    """
    if split == "all":
        return torch.arange(n)
    _, n_test = split_sizes(n, test_fraction)
    order = torch.randperm(n, generator=generator(seed, "split"))
    if stratify is not None:
        # interleave the classes: the k-th of m shuffled members of a class sits at
        # (k + 0.5) / m, so the first n_test positions take ~test_fraction of each class
        codes = torch.unique(stratify[order], return_inverse=True)[1]
        by_class = torch.sort(codes, stable=True).indices
        counts = torch.bincount(codes)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty(n, dtype=torch.long)
        rank[by_class] = torch.arange(n) - starts[codes[by_class]]
        position = (rank + 0.5) / counts[codes]
        order = order[torch.sort(position, stable=True).indices]
    is_test = torch.zeros(n, dtype=torch.bool)
    is_test[order[:n_test]] = True
    chosen = is_test if split == "test" else ~is_test
    return torch.nonzero(chosen).flatten()


PER_EXAMPLE_META = ("missing_mask", "x_complete", "source_index", "files", "label_known")


def subset(data: Dataset, index: torch.Tensor, split: str) -> Dataset:
    """The examples of an eager dataset at `index` (1-D LongTensor) as split `split`.

    x, every label column and the per-example meta entries (PER_EXAMPLE_META) are
    indexed; a table's value_range is recomputed over its observed values.
    """
    meta = dict(data.meta)
    for key in PER_EXAMPLE_META:
        if key in meta:
            value = meta[key]
            if isinstance(value, torch.Tensor):
                meta[key] = value[index]
            else:
                meta[key] = [value[i] for i in index.tolist()]
    x = data.x[index]
    value_range = data.value_range
    if data.kind == "tabular":
        value_range = observed_range(x, meta.get("missing_mask"))
    return replace(
        data,
        split=split,
        x=x,
        labels={name: replace(col, values=col.values[index]) for name, col in data.labels.items()},
        value_range=value_range,
        meta=meta,
    )


def observed_range(x: torch.Tensor, missing: torch.Tensor | None) -> tuple[float, float]:
    """(min, max) of x over the entries not marked missing; (0, 0) when none is observed."""
    values = x if missing is None else x[~missing]
    if values.numel() == 0:
        return (0.0, 0.0)
    return (float(values.min()), float(values.max()))
