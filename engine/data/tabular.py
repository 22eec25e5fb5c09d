"""Tabular datasets: scikit-learn's wine and diabetes tables, a synthetic mixed-type
table with known latent factors, and missing-value masks.

Every table is x (n, D) float32 with a schema (one ColumnSpec per column; categorical
columns hold integer codes 0..K-1 as floats) and meta["missing_mask"] (n, D) bool, True
where a value is missing. Missing entries of x are 0; where the true values are known
(a mask drawn by `missing_rate`) meta["x_complete"] keeps them for scoring imputations.
With the option missing_as_nan they are NaN instead, for models that read the mask from
their input (hhvaem); label_as_column appends the label as the last column, a target for
models that predict a column.
"""

from __future__ import annotations

import numbers
from dataclasses import replace

import torch

from engine.data.base import ColumnSpec, Dataset, LabelColumn
from engine.data.checks import check_fraction, check_int, check_seed, check_split
from engine.data.split import generator, observed_range, split_indices, subset
from engine.errors import AtlasError

MECHANISMS = ("mcar",)


def missing_mask(shape: tuple[int, int], rate: float, seed: int = 0, mechanism: str = "mcar") -> torch.Tensor:
    """(n, D) bool mask, True = missing, each entry missing with probability `rate`.

    mechanism "mcar" (missing completely at random) is the one supported.
    """
    if len(shape) != 2 or not all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise AtlasError(f"missing_mask needs a shape (n, D) of two non-negative ints; got {shape!r}.")
    rate = check_fraction("rate", rate, allow_zero=True)
    seed = check_seed(seed)
    if mechanism not in MECHANISMS:
        raise AtlasError(f"missing-value mechanism must be one of {', '.join(MECHANISMS)}; got {mechanism!r}.")
    g = generator(seed, f"missing/{mechanism}")
    return torch.rand(int(shape[0]), int(shape[1]), generator=g) < rate


def table(
    name: str, x: torch.Tensor, schema: list[ColumnSpec], labels: dict[str, LabelColumn], meta: dict | None = None
) -> Dataset:
    """A whole table (split "all") from x (n, D) float, NaN where a value is missing."""
    missing = torch.isnan(x)
    x = x.masked_fill(missing, 0.0).float().contiguous()
    return Dataset(
        name=name,
        split="all",
        x=x,
        labels=labels,
        shape=(x.shape[1],),
        value_range=observed_range(x, missing),
        kind="tabular",
        schema=schema,
        meta={**(meta or {}), "missing_mask": missing},
    )


def _finish(
    full: Dataset,
    split: str,
    seed: int,
    test_fraction: float,
    missing_rate: float,
    stratify: torch.Tensor | None = None,
    missing_as_nan: bool = False,
) -> Dataset:
    """Apply a synthetic missing mask (over the whole table, so splits agree) and split."""
    if missing_rate > 0:
        mask = missing_mask(tuple(full.x.shape), missing_rate, seed)
        full = table(
            full.name,
            full.x.masked_fill(mask, float("nan")),
            full.schema,
            full.labels,
            meta={**full.meta, "x_complete": full.x},
        )
    data = subset(full, split_indices(len(full), split, seed, test_fraction, stratify), split)
    if _check_flag("missing_as_nan", missing_as_nan):
        data = replace(data, x=data.x.masked_fill(data.meta["missing_mask"], float("nan")))
    return data


def _check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise AtlasError(f"option {name} must be true or false; got {value!r}.")
    return value


def _with_label_column(
    x: torch.Tensor, schema: list[ColumnSpec], label: LabelColumn, kind: str
) -> tuple[torch.Tensor, list[ColumnSpec]]:
    """x (n, D) -> (n, D + 1) with the label as its last column of the given kind."""
    column = ColumnSpec(label.name, kind, label.categories)
    return torch.cat([x, label.values.float()[:, None]], 1), [*schema, column]


def _check_common(split, seed, test_fraction, missing_rate) -> tuple[str, int, float, float]:
    """The options every table takes, checked."""
    return (
        check_split(split),
        check_seed(seed),
        check_fraction("test_fraction", test_fraction),
        check_fraction("missing_rate", missing_rate, allow_zero=True),
    )


def load_wine(
    split: str = "train",
    seed: int = 0,
    *,
    test_fraction: float = 0.2,
    missing_rate: float = 0.0,
    missing_as_nan: bool = False,
    label_as_column: bool = False,
) -> Dataset:
    """178 wines x 13 positive chemical measurements; label "class" (3 cultivars)."""
    split, seed, test_fraction, missing_rate = _check_common(split, seed, test_fraction, missing_rate)
    from sklearn.datasets import load_wine as sk_load_wine

    bunch = sk_load_wine()
    x = torch.as_tensor(bunch.data, dtype=torch.float32)  # (178, 13)
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    schema = [ColumnSpec(name, "positive") for name in bunch.feature_names]
    labels = {"class": LabelColumn("class", y, [str(c) for c in bunch.target_names])}
    if _check_flag("label_as_column", label_as_column):
        x, schema = _with_label_column(x, schema, labels["class"], "categorical")
    return _finish(
        table("wine", x, schema, labels),
        split,
        seed,
        test_fraction,
        missing_rate,
        stratify=y,
        missing_as_nan=missing_as_nan,
    )


DIABETES_KINDS = {"sex": "binary"}  # every other column is a positive measurement


def load_diabetes(
    split: str = "train",
    seed: int = 0,
    *,
    test_fraction: float = 0.2,
    missing_rate: float = 0.0,
    missing_as_nan: bool = False,
    label_as_column: bool = False,
) -> Dataset:
    """442 patients x 10 baseline variables in original units; label "target" (disease
    progression after one year, float). "sex" is binary: 0 and 1 stand for the
    table's codes 1 and 2."""
    split, seed, test_fraction, missing_rate = _check_common(split, seed, test_fraction, missing_rate)
    from sklearn.datasets import load_diabetes as sk_load_diabetes

    bunch = sk_load_diabetes(scaled=False)
    x = torch.as_tensor(bunch.data, dtype=torch.float32)  # (442, 10)
    names = list(bunch.feature_names)
    x[:, names.index("sex")] -= 1.0  # {1, 2} -> {0, 1}
    schema = [ColumnSpec(name, DIABETES_KINDS.get(name, "positive")) for name in names]
    target = torch.as_tensor(bunch.target, dtype=torch.float32)
    labels = {"target": LabelColumn("target", target)}
    if _check_flag("label_as_column", label_as_column):
        x, schema = _with_label_column(x, schema, labels["target"], "positive")
    return _finish(
        table("diabetes", x, schema, labels), split, seed, test_fraction, missing_rate, missing_as_nan=missing_as_nan
    )


MIXED_LATENT_DIM = 3
MIXED_COLUMNS = [  # (name, kind, number of categories)
    ("real_0", "real", 0),
    ("real_1", "real", 0),
    ("real_2", "real", 0),
    ("positive_0", "positive", 0),
    ("positive_1", "positive", 0),
    ("binary_0", "binary", 0),
    ("binary_1", "binary", 0),
    ("category_0", "categorical", 3),
    ("category_1", "categorical", 4),
    ("category_2", "categorical", 5),
]
CATEGORY_NAMES = "ABCDE"


def _mixed_weights() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per column (weight (k, out), bias (out,)); fixed, so `seed` only changes the sample."""
    g = generator(0, "mixed/weights")
    out = [max(k, 1) for _, _, k in MIXED_COLUMNS]
    return [(torch.randn(MIXED_LATENT_DIM, m, generator=g), 0.5 * torch.randn(m, generator=g)) for m in out]


def load_mixed(
    split: str = "train",
    seed: int = 0,
    *,
    n: int = 2000,
    test_fraction: float = 0.2,
    missing_rate: float = 0.0,
    missing_as_nan: bool = False,
) -> Dataset:
    """A synthetic mixed-type table from a latent factor model, z ~ N(0, I_3):
    real = linear + noise, positive = exp(linear + noise), binary ~ Bernoulli(sigmoid(linear)),
    categorical ~ Categorical(softmax(linear)). Label columns "z0".."z2" hold each row's z.
    """
    split, seed, test_fraction, missing_rate = _check_common(split, seed, test_fraction, missing_rate)
    n = check_int("n", n, 10, 10_000_000)
    g = generator(seed, "mixed/sample")
    z = torch.randn(n, MIXED_LATENT_DIM, generator=g)  # (n, k)
    cols = []
    for (_, kind, _), (w, b) in zip(MIXED_COLUMNS, _mixed_weights()):
        linear = z @ w + b  # (n, out)
        if kind == "real":
            col = linear[:, 0] + 0.3 * torch.randn(n, generator=g)
        elif kind == "positive":
            col = torch.exp(0.5 * linear[:, 0] + 0.2 * torch.randn(n, generator=g))
        elif kind == "binary":
            col = torch.bernoulli(torch.sigmoid(2.0 * linear[:, 0]), generator=g)
        else:
            col = torch.multinomial(torch.softmax(2.0 * linear, dim=1), 1, generator=g)[:, 0].float()
        cols.append(col)
    x = torch.stack(cols, dim=1)  # (n, 10)
    schema = [
        ColumnSpec(name, kind, list(CATEGORY_NAMES[:k]) if kind == "categorical" else None)
        for name, kind, k in MIXED_COLUMNS
    ]
    labels = {f"z{i}": LabelColumn(f"z{i}", z[:, i].contiguous()) for i in range(MIXED_LATENT_DIM)}
    return _finish(
        table("mixed", x, schema, labels), split, seed, test_fraction, missing_rate, missing_as_nan=missing_as_nan
    )
