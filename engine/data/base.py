"""What every dataset in the registry looks like."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch


class LazyTensor(Protocol):
    """Examples produced on demand (e.g. `shapes` with 500,000 images): index with a
    1-D LongTensor (or slice) to get a float tensor of shape (len(index), *shape)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: torch.Tensor | slice) -> torch.Tensor: ...


@dataclass
class LabelColumn:
    """One ground-truth factor. `values` is (n,): int64 codes for categorical factors
    (with `categories` naming each code) or float32 for continuous ones."""

    name: str
    values: torch.Tensor
    categories: list[str] | None = None

    @property
    def is_categorical(self) -> bool:
        return self.categories is not None


ColumnKind = Literal["real", "positive", "binary", "categorical", "count"]


@dataclass
class ColumnSpec:
    """Type of one tabular column; categorical columns are stored as integer codes."""

    name: str
    kind: ColumnKind
    categories: list[str] | None = None


class TensorRows:
    """The least a model's `initialize` reads of a data set, len() and batch(index), over a tensor
    of examples: for fitting a model to data made in a script or a test."""

    def __init__(self, x: torch.Tensor):
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        return self.x[index]


@dataclass
class Dataset:
    """A dataset split: examples, ground-truth labels and what the values mean.

    x:           (n, *shape) float32 tensor, or a LazyTensor for generated data
    labels:      factor name -> LabelColumn, every column of length n
    shape:       the shape of one example, (C, H, W) for images, (D,) for tables,
                 (L,) for sequences
    value_range: (low, high) of the values in x, e.g. (0, 1) for images
    schema:      per-column types for tabular data, else None
    """

    name: str
    split: str
    x: torch.Tensor | LazyTensor
    labels: dict[str, LabelColumn]
    shape: tuple[int, ...]
    value_range: tuple[float, float]
    kind: Literal["image", "tabular", "sequence"] = "image"
    schema: list[ColumnSpec] | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def is_lazy(self) -> bool:
        return not isinstance(self.x, torch.Tensor)

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        """Examples at `index` (1-D LongTensor) as a float tensor (len(index), *shape)."""
        return self.x[index]
