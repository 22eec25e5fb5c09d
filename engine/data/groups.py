"""Orders of a dataset in groups, for models whose latent is shared by a group (UG-VAE, seed002 ch. 4).

UG-VAE trains on random minibatches, each one group (seed002 §1.1), and is then shown
structured groups whose shared posterior q(beta | X) should reflect what the group has in
common (§1.6): all one attribute value, all one domain, digits that follow a number series.
Every function here returns

    groups  (n_groups, group_size) int64: indices into the dataset, one row per group
    kinds   (n_groups,) int64: what each group is (a label value, a series, a domain)

deterministically from (seed, epoch): the same pair gives the same order, another epoch a new
one. Indices are drawn without replacement within a group; a group size that does not divide a
pool leaves its remainder out, as a training epoch drops its last partial batch.

- `random_groups`: random groups of the whole set (kind RANDOM);
- `label_groups`: groups of a single label value each (kind = that value), optionally mixed
  with a share of random groups (kind RANDOM): the three-class problems of Table 4.2;
- `series_groups`: digit groups whose j-th example shows the j-th term of a number series
  (Fig. 4.8c); kind = the series' index in SERIES;
- `domain_groups`: groups entirely from domain A (kind DOMAIN_A) or B (kind DOMAIN_B) of a
  dataset made of A's examples followed by B's, or, with mixed=True, half from each (kind MIXED),
  as the alignment experiment trains (Fig. 4.7).

As dataset options (`load_dataset(name, group_by="label", group_factor="digit")`, see
GROUP_OPTIONS) a training split records a `GroupOrder` in its meta["group_order"]: the order in
which the trainer draws a grouped model's batches (engine.models.base.GroupedBatch), one group
per step. Training orders are random groups (the thesis's setting), label groups (optionally
with a share of random ones), digit series, or mixed two-domain groups (half of each domain, as
the alignment experiment trains); a test split keeps no order (the views build their own test
groups with the functions above).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from engine.data.checks import check_fraction
from engine.errors import AtlasError

RANDOM = -1  # the kind of a random group
SERIES = ("even", "odd", "fibonacci", "primes")
DOMAIN_A, DOMAIN_B, MIXED = 0, 1, 2
GROUP_BY = ("random", "label", "series", "domains")
GROUP_OPTIONS = {  # option -> (default, help), accepted by every dataset of images or tables
    "group_by": (
        None,
        "train a grouped model (ugvae) on groups that are random, of one label value (label), digit "
        "series (series) or half of each of two domains (domains); default random",
    ),
    "group_size": (None, "examples per group; default the training batch size, which a grouped model's group is"),
    "group_factor": (
        None,
        "the label column the groups follow (label: default the first categorical one; series: digit; "
        "domains: domain, of two values)",
    ),
    "random_share": (0.0, "label groups only: the share of random groups mixed in, in [0, 1)"),
}
DEFAULT_FACTOR = {"series": "digit", "domains": "domain"}


def _rng(seed: int, epoch: int, salt: int) -> np.random.Generator:
    """The generator of one (seed, epoch) order; `salt` keeps the functions' streams apart."""
    for name, value in (("seed", seed), ("epoch", epoch)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise AtlasError(f"{name} must be a non-negative integer, got {value!r}")
    return np.random.default_rng([int(seed), int(epoch), salt])


def _check_group_size(group_size: int, available: int, what: str) -> int:
    if isinstance(group_size, bool) or not isinstance(group_size, numbers.Integral) or group_size < 1:
        raise AtlasError(f"group_size must be a positive integer, got {group_size!r}")
    if group_size > available:
        raise AtlasError(
            f"groups of {group_size} need at least {group_size} {what}, got {available}; use smaller groups"
        )
    return int(group_size)


def _as_labels(labels, name: str = "labels") -> np.ndarray:
    """A 1-D array of non-negative integer codes (a categorical LabelColumn's values)."""
    values = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if values.ndim != 1 or len(values) == 0:
        raise AtlasError(f"{name} must be a non-empty 1-D array, got shape {values.shape}")
    if values.dtype.kind not in "iu" and not (values.dtype.kind == "f" and np.all(values == np.round(values))):
        raise AtlasError(f"{name} must be integer codes (a categorical label), got values of type {values.dtype}")
    values = values.astype(np.int64)
    if values.min() < 0:
        raise AtlasError(f"{name} must be non-negative codes, got {values.min()}")
    return values


def _chained(pool: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` entries of `pool`: successive random permutations of it, cut at `count`."""
    rounds = -(-count // len(pool))
    return np.concatenate([rng.permutation(pool) for _ in range(rounds)])[:count]


def _blocks(pool: np.ndarray, group_size: int) -> np.ndarray:
    """The whole groups of consecutive entries of `pool`, (len // group_size, group_size)."""
    m = len(pool) // group_size
    return pool[: m * group_size].reshape(m, group_size)


def _shuffled(groups: list[np.ndarray], kinds: list[np.ndarray], rng: np.random.Generator):
    groups, kinds = np.concatenate(groups), np.concatenate(kinds)
    order = rng.permutation(len(groups))
    return torch.as_tensor(groups[order], dtype=torch.long), torch.as_tensor(kinds[order], dtype=torch.long)


def random_groups(n: int, group_size: int, seed: int = 0, epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n // group_size random groups of the indices 0..n-1 (one permutation cut in groups)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise AtlasError(f"n must be a positive number of examples, got {n!r}")
    group_size = _check_group_size(group_size, n, "examples")
    rng = _rng(seed, epoch, 0)
    groups = _blocks(rng.permutation(n), group_size)
    return torch.as_tensor(groups, dtype=torch.long), torch.full((len(groups),), RANDOM, dtype=torch.long)


def label_groups(
    labels, group_size: int, random_share: float = 0.0, seed: int = 0, epoch: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Groups whose examples all share one label value: each value's examples shuffled and cut
    in groups (kind = the value; a value with fewer than group_size examples gives none). With
    random_share s in [0, 1), random groups of the whole set (kind RANDOM) are added until they
    are about a share s of all groups (round(s / (1 - s) * labelled groups) of them; their
    indices may repeat those of the labelled groups). The groups come in random order."""
    labels = _as_labels(labels)
    random_share = check_fraction("random_share", random_share, allow_zero=True)
    group_size = _check_group_size(group_size, np.bincount(labels).max(), "examples of one label value")
    rng = _rng(seed, epoch, 1)
    groups, kinds = [], []
    for value in np.unique(labels):
        block = _blocks(rng.permutation(np.flatnonzero(labels == value)), group_size)
        groups.append(block)
        kinds.append(np.full(len(block), value))
    n_random = round(random_share / (1.0 - random_share) * sum(len(b) for b in groups))
    if n_random:
        groups.append(_chained(np.arange(len(labels)), n_random * group_size, rng).reshape(n_random, group_size))
        kinds.append(np.full(n_random, RANDOM))
    return _shuffled(groups, kinds, rng)


def series_digits(name: str, length: int) -> np.ndarray:
    """The first `length` terms of a series as digits (Fig. 4.8c): "even" 0, 2, 4, 6, 8, 0, ...;
    "odd" 1, 3, 5, 7, 9, 1, ...; "fibonacci" F_0, F_1, ... mod 10 (0, 1, 1, 2, 3, 5, 8, 3, 1, ...);
    "primes" the last digits of 2, 3, 5, 7, 11, 13, ... (2, 3, 5, 7, 1, 3, 7, 9, 3, 9, ...)."""
    if name not in SERIES:
        raise AtlasError(f"unknown series {name!r}; choose one of {', '.join(SERIES)}")
    j = np.arange(length)
    if name == "even":
        return (2 * j) % 10
    if name == "odd":
        return (2 * j + 1) % 10
    if name == "fibonacci":
        out, a, b = np.empty(length, np.int64), 0, 1
        for i in range(length):
            out[i], a, b = a, b, (a + b) % 10
        return out
    bound = max(16, int(length * (math.log(length + 2) + math.log(math.log(length + 2) + 1))) + 10)
    sieve = np.ones(bound, bool)
    sieve[:2] = False
    for p in range(2, math.isqrt(bound) + 1):
        if sieve[p]:
            sieve[p * p :: p] = False
    return np.flatnonzero(sieve)[:length] % 10


def series_groups(
    digit_labels, group_size: int, groups_per_series: int = 10, seed: int = 0, epoch: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """groups_per_series groups of each series in SERIES (kind = its index): position j of every
    group holds an example of the digit `series_digits(series, group_size)[j]`, the series read
    from its start, so groups of one series differ only in which examples show the digits. Each
    digit's examples are used in random order and reused (in a new order) only once they run out."""
    labels = _as_labels(digit_labels, "digit_labels")
    if labels.max() > 9:
        raise AtlasError(f"digit_labels must be digits 0..9, got {labels.max()}")
    if isinstance(groups_per_series, bool) or not isinstance(groups_per_series, numbers.Integral):
        raise AtlasError(f"groups_per_series must be a positive integer, got {groups_per_series!r}")
    if groups_per_series < 1:
        raise AtlasError(f"groups_per_series must be a positive integer, got {groups_per_series}")
    group_size = _check_group_size(group_size, len(labels), "examples")
    rng = _rng(seed, epoch, 2)
    plans = np.stack([np.tile(series_digits(name, group_size), (groups_per_series, 1)) for name in SERIES])
    groups = np.empty(plans.shape, np.int64)  # (series, groups_per_series, group_size)
    for digit in np.unique(plans):
        members = np.flatnonzero(labels == digit)
        if len(members) == 0:
            raise AtlasError(f"the series need examples of the digit {digit}, and digit_labels has none")
        where = plans == digit
        groups[where] = _chained(members, int(where.sum()), rng)
    kinds = np.repeat(np.arange(len(SERIES)), groups_per_series)
    return _shuffled([groups.reshape(-1, group_size)], [kinds], rng)


def domain_groups(
    n_a: int, n_b: int, group_size: int, mixed: bool = False, seed: int = 0, epoch: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Groups of a dataset holding domain A's n_a examples (indices 0..n_a-1) followed by domain
    B's n_b (indices n_a..n_a+n_b-1). mixed=False: each group entirely from A (kind DOMAIN_A) or
    from B (kind DOMAIN_B), as many as each domain fills, in random order (test-time groups,
    Fig. 4.7). mixed=True: each group group_size // 2 from A and the rest from B (kind MIXED),
    as many as the scarcer domain allows (the alignment experiment's training batches)."""
    for name, value in (("n_a", n_a), ("n_b", n_b)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise AtlasError(f"{name} must be a positive number of examples, got {value!r}")
    rng = _rng(seed, epoch, 3)
    a, b = rng.permutation(n_a), n_a + rng.permutation(n_b)
    if not mixed:
        group_size = _check_group_size(group_size, max(n_a, n_b), "examples of one domain")
        blocks = [_blocks(a, group_size), _blocks(b, group_size)]
        return _shuffled(blocks, [np.full(len(blocks[0]), DOMAIN_A), np.full(len(blocks[1]), DOMAIN_B)], rng)
    group_size = _check_group_size(group_size, n_a + n_b, "examples")
    half_a, half_b = group_size // 2, group_size - group_size // 2
    if half_a == 0 or n_a < half_a or n_b < half_b:
        raise AtlasError(
            f"mixed groups of {group_size} need at least 2 examples, {half_a} from A and {half_b} from B; "
            f"got n_a = {n_a}, n_b = {n_b}"
        )
    m = min(n_a // half_a, n_b // half_b)
    groups = np.concatenate([a[: m * half_a].reshape(m, half_a), b[: m * half_b].reshape(m, half_b)], 1)
    return _shuffled([groups], [np.full(m, MIXED)], rng)


# -- a training split's group order (dataset options) ---------------------------------------------
@dataclass(frozen=True, eq=False)
class GroupOrder:
    """How a grouped model's training batches are drawn: `by` one of GROUP_BY, over n examples
    whose `factor` label column holds `labels` (n,) (None for random groups). `size` is the
    group size the options asked for (None: the trainer's batch size)."""

    by: str
    n: int
    size: int | None = None
    factor: str | None = None
    labels: torch.Tensor | None = None
    random_share: float = 0.0

    def groups(self, group_size: int, seed: int = 0, epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The epoch's groups (n_groups, group_size) and kinds (n_groups,); every epoch has as
        many groups (each order cuts fixed pools), so a step's group is known without replaying
        earlier epochs."""
        if self.by == "random":
            return random_groups(self.n, group_size, seed, epoch)
        labels = self.labels.numpy()
        if self.by == "label":
            return label_groups(labels, group_size, self.random_share, seed, epoch)
        if self.by == "series":  # about one epoch of examples: n // group_size groups over the 4 series
            per_series = max(1, self.n // (len(SERIES) * group_size))
            return series_groups(labels, group_size, per_series, seed, epoch)
        a, b = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
        groups, kinds = domain_groups(len(a), len(b), group_size, mixed=True, seed=seed, epoch=epoch)
        return torch.as_tensor(np.concatenate([a, b]))[groups], kinds  # positions in the dataset


def with_group_order(
    data,
    group_by: str | None = None,
    group_size: int | None = None,
    group_factor: str | None = None,
    random_share: float = 0.0,
):
    """`data` (a Dataset) with meta["group_order"], a GroupOrder, when it is a training split
    ("train" or "all"); a test split is checked the same way and returned unchanged."""
    if group_by is None:
        given = [
            name for name, value in (("group_size", group_size), ("group_factor", group_factor)) if value is not None
        ]
        if random_share:
            given.append("random_share")
        if given:
            raise AtlasError(
                f"group options without group_by ({', '.join(given)}); set group_by to one of {', '.join(GROUP_BY)}"
            )
        return data
    if group_by not in GROUP_BY:
        raise AtlasError(f"unknown group_by {group_by!r}; choose one of {', '.join(GROUP_BY)}")
    if group_size is not None:
        if isinstance(group_size, bool) or not isinstance(group_size, numbers.Integral) or group_size < 1:
            raise AtlasError(
                f"group_size must be a positive integer (or left out for the batch size), got {group_size!r}"
            )
        group_size = int(group_size)
    share = check_fraction("random_share", random_share, allow_zero=True)
    if share and group_by != "label":
        raise AtlasError(f"random_share applies to label groups only; drop it for group_by={group_by!r}")
    if data.kind == "sequence":
        raise AtlasError(f"{data.name!r} holds sequences; groups are for datasets of images or tables")
    order = GroupOrder(group_by, len(data), group_size, random_share=share)
    if group_by != "random":
        order = dataclasses.replace(order, **_group_labels(data, group_by, group_factor))
    elif group_factor is not None:
        raise AtlasError("random groups follow no label; drop group_factor or choose group_by label, series or domains")
    if data.split == "test":  # its pools are smaller; only a training split must fill its groups
        return data
    if group_size is not None:
        order.groups(group_size)  # refuses a size the pools cannot fill, at load time
    return dataclasses.replace(data, meta={**data.meta, "group_order": order})


def _group_labels(data, group_by: str, group_factor: str | None) -> dict:
    """{"factor", "labels"} of a label, series or domains order, checked against the data."""
    categorical = [name for name, col in data.labels.items() if col.is_categorical]
    if not categorical:
        raise AtlasError(f"group_by={group_by!r} needs a categorical label, and {data.name!r} has none")
    factor = group_factor if group_factor is not None else DEFAULT_FACTOR.get(group_by, categorical[0])
    if factor not in categorical:
        raise AtlasError(
            f"group_by={group_by!r} needs the categorical label {factor!r}, which {data.name!r} does not have; "
            f"name one of its categorical labels ({', '.join(categorical)}) with group_factor"
        )
    column = data.labels[factor]
    if group_by == "series" and len(column.categories) != 10:
        raise AtlasError(
            f"series groups need a digit label of the 10 values 0..9; {factor!r} has {len(column.categories)}"
        )
    if group_by == "domains" and len(column.categories) != 2:
        raise AtlasError(
            f"domain groups need a label of exactly two domains; {factor!r} has {len(column.categories)} values "
            "(the dataset digits-domains has one: its label 'domain', digits or inverted)"
        )
    return {"factor": factor, "labels": column.values.long()}
