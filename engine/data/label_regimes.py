"""Which training labels a semi-(un)supervised run may see (seed001 §1.1).

- "us":  unsupervised, no labels at all;
- "ss":  semi-supervised, a fraction of the labels of every class;
- "sus": semi-unsupervised, that fraction for the first half of the classes (sorted), none
         for the rest, which appear only unlabelled (the thesis keeps 20% for {0..4});
- "accidental-sus": the labels of "sus", for a model built for those classes only (the
         unlabelled data still holds the others).

The mask is a deterministic function of the labels, the regime, the fraction and the seed:
within each class the kept examples are a seeded random choice of round(fraction n_c).
"""

from __future__ import annotations

import numpy as np

from engine.errors import AtlasError

REGIMES = ("us", "ss", "sus", "accidental-sus")


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
