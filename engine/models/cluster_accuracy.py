"""Unsupervised clustering accuracy of cluster ids against class labels (seed000 §1.8).

With as many clusters as classes (K == C) clusters and classes are matched one to one
by the Hungarian algorithm on the contingency table; with more clusters (K > C, the
usual case) each cluster is mapped to the most frequent class among its members. With
fewer clusters (K < C) the Hungarian matching is still used and C - K classes stay
unmatched, which caps the accuracy.

A clustering model reports it as an evaluation metric (MFCVAE.evaluation_metrics);
engine.diagnostics.clustering builds the facet reports, NMI, ARI and the probes on it.
Inputs are numpy arrays or torch tensors; outputs plain Python / numpy values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from engine.errors import AtlasError

ArrayLike = np.ndarray | torch.Tensor


def to_numpy(x: object, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as e:
        raise AtlasError(f"{name} must be an array of numbers; could not read it ({e})") from e


def as_ids(x: ArrayLike, name: str, upper: int | None = None) -> np.ndarray:
    """A non-empty 1-D array of non-negative integer ids (below `upper` if given), as int64.

    Floats are accepted when every value is a whole number (labels read from a table
    often arrive as floats); anything else is refused with a message saying what came.
    """
    a = to_numpy(x, name)
    if a.ndim != 1:
        raise AtlasError(f"{name} must be a 1-D array of integer ids, got shape {a.shape}")
    if a.size == 0:
        raise AtlasError(f"{name} is empty; pass at least one example")
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise AtlasError(f"{name} must hold integer ids, got values of type {a.dtype}")
    if np.issubdtype(a.dtype, np.floating):
        bad = ~np.isfinite(a) | (a != np.round(a))
        if bad.any():
            raise AtlasError(
                f"{name} must hold integer ids, but entry {int(np.argmax(bad))} is {float(a[bad][0])}; "
                "encode categorical labels as 0, 1, 2, ..."
            )
    a = a.astype(np.int64)
    if a.min() < 0:
        raise AtlasError(
            f"{name} must hold ids >= 0, but entry {int(np.argmin(a))} is {int(a.min())}; "
            "encode categories as 0, 1, 2, ..."
        )
    if upper is not None and a.max() >= upper:
        raise AtlasError(f"{name} holds id {int(a.max())}, but only ids 0..{upper - 1} were declared")
    return a


def check_pair(pred: ArrayLike, labels: ArrayLike, n_clusters: int | None = None, n_classes: int | None = None):
    for name, count in (("n_clusters", n_clusters), ("n_classes", n_classes)):
        if count is not None and count < 1:
            raise AtlasError(f"{name} must be at least 1, got {count}")
    pred = as_ids(pred, "cluster ids", n_clusters)
    labels = as_ids(labels, "labels", n_classes)
    if len(pred) != len(labels):
        raise AtlasError(
            f"cluster ids and labels must have one entry per example, got {len(pred)} cluster ids "
            f"and {len(labels)} labels"
        )
    return pred, labels


def confusion_matrix(pred: ArrayLike, labels: ArrayLike, n_clusters: int, n_classes: int) -> np.ndarray:
    """Contingency table, (n_clusters, n_classes) ints: [k, c] = #{i: pred_i = k, label_i = c}."""
    pred, labels = check_pair(pred, labels, n_clusters, n_classes)
    return np.bincount(pred * n_classes + labels, minlength=n_clusters * n_classes).reshape(n_clusters, n_classes)


@dataclass
class ClusterAccuracy:
    """Clustering accuracy of one facet against one label, and how clusters were matched."""

    accuracy: float
    method: Literal["hungarian", "majority"]
    mapping: dict[int, int]  # cluster id -> class id; clusters without a class are absent
    n_clusters: int
    n_classes: int
    table: np.ndarray = field(repr=False)  # (K, C) contingency, rows clusters, columns classes
    note: str = ""  # caveats, e.g. classes left unmatched when K < C


def cluster_accuracy(
    pred: ArrayLike,
    labels: ArrayLike,
    n_clusters: int | None = None,
    n_classes: int | None = None,
    method: Literal["auto", "majority", "hungarian"] = "auto",
) -> ClusterAccuracy:
    """Unsupervised clustering accuracy (seed000 §1.8, seed001 eq. 2.11).

    pred: (n,) cluster ids in [0, K); labels: (n,) classes in [0, C). K and C default to
    the largest id seen plus one; pass the model's K so that empty clusters count.
    method "auto": K == C or K < C: Hungarian one-to-one matching maximising the matched
    count; K > C: each non-empty cluster maps to its most frequent class (ties: lowest class
    id). "majority" maps every cluster so whatever K (seed001 §1.6, many-to-one), and
    "hungarian" always matches one to one.
    """
    if method not in ("auto", "majority", "hungarian"):
        raise AtlasError(f"method must be 'auto', 'majority' or 'hungarian', got {method!r}")
    pred, labels = check_pair(pred, labels, n_clusters, n_classes)
    k = int(pred.max()) + 1 if n_clusters is None else n_clusters
    c = int(labels.max()) + 1 if n_classes is None else n_classes
    table = confusion_matrix(pred, labels, k, c)
    note = ""
    if method == "majority" or (method == "auto" and k > c):
        method = "majority"
        occupied = np.flatnonzero(table.sum(1))
        mapping = {int(cl): int(table[cl].argmax()) for cl in occupied}
        correct = table.max(1).sum()
    else:
        method = "hungarian"
        rows, cols = linear_sum_assignment(table, maximize=True)
        mapping = {int(r): int(col) for r, col in zip(rows, cols)}
        correct = table[rows, cols].sum()
        if k < c:
            note = (
                f"only {k} clusters for {c} classes: Hungarian matching leaves {c - k} classes "
                f"unmatched, so accuracy is at most the share of examples in the {k} largest classes"
            )
    return ClusterAccuracy(
        accuracy=float(correct / len(pred)),
        method=method,
        mapping=mapping,
        n_clusters=k,
        n_classes=c,
        table=table,
        note=note,
    )
