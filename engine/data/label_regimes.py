"""Which training labels a semi-(un)supervised run may see (seed001 §1.1).

- "us":  unsupervised, no labels at all;
- "ss":  semi-supervised, a fraction of the labels of every class;
- "sus": semi-unsupervised, that fraction for the first half of the classes (sorted), none
         for the rest, which appear only unlabelled (the thesis keeps 20% for {0..4});
- "accidental-sus": the labels of "sus", for a model built for those classes only (the
         unlabelled data still holds the others).

The mask is a deterministic function of the labels, the regime, the fraction and the seed:
within each class the kept examples are a seeded random choice of round(fraction n_c).

As dataset options (`load_dataset(name, label_regime="sus", labelled_fraction=0.2)`) the
regime applies to the training split only: its meta gains "label_known", a bool tensor (n,)
over its examples, and "label_factor", the label column it masks; a test split keeps every
label for evaluation.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from engine.errors import AtlasError

REGIMES = ("us", "ss", "sus", "accidental-sus")
LABEL_REGIME_OPTIONS = {  # option -> (default, help), accepted by every dataset with a categorical label
    "label_regime": (None, f"semi-(un)supervised training: which labels a model sees, one of {', '.join(REGIMES)}"),
    "labelled_fraction": (0.2, "the share of each labelled class's training examples that keep their label"),
    "label_factor": (None, "the categorical label column the regime masks (default: the first)"),
}


def labelled_classes(classes: np.ndarray, regime: str) -> np.ndarray:
    """The classes that keep labels under `regime`, sorted."""
    if regime not in REGIMES:
        raise AtlasError(f"unknown label regime {regime!r}; choose one of {', '.join(REGIMES)}")
    classes = np.unique(classes)
    if regime == "us":
        return classes[:0]
    if regime == "ss":
        return classes
    return classes[: len(classes) // 2]


def label_mask(labels: np.ndarray, regime: str, fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """A boolean mask over `labels` (n,): True where the label is kept."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise AtlasError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    if not 0 < fraction <= 1:
        raise AtlasError(f"the labelled fraction must be in (0, 1], got {fraction}")
    keep = np.zeros(len(labels), bool)
    rng = np.random.default_rng(seed)
    for c in labelled_classes(labels, regime):
        members = np.flatnonzero(labels == c)
        chosen = rng.choice(members, size=int(round(fraction * len(members))), replace=False)
        keep[chosen] = True
    return keep


def with_label_regime(
    data,
    label_regime: str | None = None,
    labelled_fraction: float = 0.2,
    label_factor: str | None = None,
    seed: int = 0,
):
    """`data` (a Dataset) with the regime's "label_known" mask and "label_factor" in its meta
    when it is a training split; unchanged for a test split or no regime."""
    if label_regime is None:
        return data
    categorical = [name for name, col in data.labels.items() if col.is_categorical]
    if not categorical:
        raise AtlasError(f"the label regime {label_regime!r} needs a categorical label, and {data.name!r} has none")
    factor = label_factor if label_factor is not None else categorical[0]
    if factor not in categorical:
        raise AtlasError(
            f"label_factor {factor!r} is not a categorical label of {data.name!r}; choose one of {categorical}"
        )
    try:
        fraction = float(labelled_fraction)
    except (TypeError, ValueError):
        raise AtlasError(f"labelled_fraction must be a number in (0, 1], got {labelled_fraction!r}") from None
    mask = label_mask(data.labels[factor].values.numpy(), label_regime, fraction, seed)
    if data.split == "test":
        return data
    meta = {**data.meta, "label_known": torch.from_numpy(mask), "label_factor": factor}
    return dataclasses.replace(data, meta=meta)
