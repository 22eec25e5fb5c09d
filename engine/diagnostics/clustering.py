"""How well a facet's clusters and latents line up with known labels.

Two measures from the MFCVAE evaluation (seed000 §1.8):

- Unsupervised clustering accuracy of one facet's argmax clusters against a label.
  With as many clusters as classes (K == C) clusters and classes are matched one to
  one by the Hungarian algorithm on the contingency table; with more clusters (K > C,
  the usual case) each cluster is mapped to the most frequent class among its members.
  With fewer clusters (K < C) the Hungarian matching is still used and C - K classes
  stay unmatched, which caps the accuracy.
- The disentanglement probe of Table 2.1: a small MLP trained from one facet's latent
  to a label; its test accuracy says how much of the label that facet carries.

NMI and ARI come from scikit-learn and need no matching. Everything here takes
numpy arrays or torch tensors and returns plain Python / numpy values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from engine.errors import AtlasError

ArrayLike = np.ndarray | torch.Tensor


def _to_numpy(x: object, name: str) -> np.ndarray:
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
    a = _to_numpy(x, name)
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


def _check_pair(pred: ArrayLike, labels: ArrayLike, n_clusters: int | None = None, n_classes: int | None = None):
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
    pred, labels = _check_pair(pred, labels, n_clusters, n_classes)
    return np.bincount(pred * n_classes + labels, minlength=n_clusters * n_classes).reshape(n_clusters, n_classes)


def display_order(table: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Row order (cluster ids, shape (K,)) that puts a contingency table near-diagonal.

    Clusters are sorted by the class they are mapped to, larger clusters first within a
    class; clusters with no class (empty clusters under the majority mapping) go last. Use as `table[display_order(table, acc.mapping)]`.
    """
    sizes = table.sum(1)
    n_classes = table.shape[1]
    mapped = np.array([mapping.get(k, n_classes) for k in range(table.shape[0])])
    return np.lexsort((-sizes, mapped))


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
) -> ClusterAccuracy:
    """Unsupervised clustering accuracy (seed000 §1.8).

    pred: (n,) cluster ids in [0, K); labels: (n,) classes in [0, C). K and C default to
    the largest id seen plus one; pass the model's K so that empty clusters count.
    K == C or K < C: Hungarian one-to-one matching maximising the matched count.
    K > C: each non-empty cluster maps to its most frequent class (ties: lowest class id).
    """
    pred, labels = _check_pair(pred, labels, n_clusters, n_classes)
    k = int(pred.max()) + 1 if n_clusters is None else n_clusters
    c = int(labels.max()) + 1 if n_classes is None else n_classes
    table = confusion_matrix(pred, labels, k, c)
    note = ""
    if k > c:
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


def nmi(pred: ArrayLike, labels: ArrayLike) -> float:
    """Normalised mutual information (arithmetic normalisation), in [0, 1]; 1 for a relabelling."""
    pred, labels = _check_pair(pred, labels)
    return float(normalized_mutual_info_score(labels, pred))


def ari(pred: ArrayLike, labels: ArrayLike) -> float:
    """Adjusted Rand index: 1 for a relabelling, about 0 for independent labellings."""
    pred, labels = _check_pair(pred, labels)
    return float(adjusted_rand_score(labels, pred))


def clustering_report(
    pred: ArrayLike, label_columns: dict[str, ArrayLike], n_clusters: int | None = None
) -> dict[str, dict[str, float | str]]:
    """One facet's clusters against every categorical label column.

    Returns {label name: {"accuracy", "method", "nmi", "ari", "note"}}.
    """
    if not label_columns:
        raise AtlasError("no label columns to compare the clusters with; pass at least one")
    pred = as_ids(pred, "cluster ids", n_clusters)
    report = {}
    for name, column in label_columns.items():
        labels = as_ids(column, f"label column {name!r}")
        acc = cluster_accuracy(pred, labels, n_clusters=n_clusters)
        report[name] = {
            "accuracy": acc.accuracy,
            "method": acc.method,
            "nmi": nmi(pred, labels),
            "ari": ari(pred, labels),
            "note": acc.note,
        }
    return report


def _as_features(x: ArrayLike, name: str) -> np.ndarray:
    a = _to_numpy(x, name)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise AtlasError(f"{name} must be a (n, dim) array of latent codes, got shape {a.shape}")
    if a.shape[0] == 0:
        raise AtlasError(f"{name} is empty; pass at least one example")
    if not np.issubdtype(a.dtype, np.number) or a.dtype == bool:
        raise AtlasError(f"{name} must hold numbers, got values of type {a.dtype}")
    if not np.isfinite(a).all():
        raise AtlasError(f"{name} contains NaN or infinite values; check the encoder outputs")
    return a.astype(np.float32)


def probe_accuracy(
    z_train: ArrayLike,
    y_train: ArrayLike,
    z_test: ArrayLike,
    y_test: ArrayLike,
    hidden: tuple[int, ...] = (100,),
    epochs: int = 100,
    batch_size: int = 200,
    lr: float = 1e-3,
    seed: int = 0,
) -> float:
    """Test accuracy of an MLP probe from latent codes to a label (seed000 Table 2.1).

    z_train: (n_train, dim), z_test: (n_test, dim) latent codes (posterior means of one
    facet, or all facets concatenated); y_*: integer labels. As in the paper's sklearn
    probe: ReLU hidden layers (default one of 100 units), softmax output, Adam at lr 1e-3,
    minibatches of 200. Inputs are standardised with the training statistics. Trained
    on the CPU; the same seed gives the same accuracy.
    """
    z_train = _as_features(z_train, "z_train")
    z_test = _as_features(z_test, "z_test")
    y_train = as_ids(y_train, "y_train")
    y_test = as_ids(y_test, "y_test")
    if len(z_train) != len(y_train):
        raise AtlasError(f"z_train has {len(z_train)} rows but y_train has {len(y_train)} labels")
    if len(z_test) != len(y_test):
        raise AtlasError(f"z_test has {len(z_test)} rows but y_test has {len(y_test)} labels")
    if z_train.shape[1] != z_test.shape[1]:
        raise AtlasError(
            f"z_train has {z_train.shape[1]} latent dimensions but z_test has {z_test.shape[1]}; "
            "encode both splits with the same facet"
        )
    if epochs < 1 or batch_size < 1 or any(h < 1 for h in hidden):
        raise AtlasError("the probe needs epochs >= 1, batch_size >= 1 and hidden layer sizes >= 1")
    n_classes = int(max(y_train.max(), y_test.max())) + 1

    mean = z_train.mean(0)
    std = z_train.std(0)
    std[std == 0] = 1.0
    x_train = torch.from_numpy((z_train - mean) / std)  # (n_train, dim)
    x_test = torch.from_numpy((z_test - mean) / std)  # (n_test, dim)
    t_train = torch.from_numpy(y_train)

    # A net this small runs fastest on one thread: with more, each tiny matmul pays for
    # synchronisation (tens of ms per step on a loaded machine). Restored afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        predicted = _train_and_predict(x_train, t_train, x_test, n_classes, hidden, epochs, batch_size, lr, seed)
    finally:
        torch.set_num_threads(threads)
    return float((predicted == y_test).mean())


def _train_and_predict(
    x_train: torch.Tensor,  # (n_train, dim), standardised
    t_train: torch.Tensor,  # (n_train,) class ids
    x_test: torch.Tensor,  # (n_test, dim)
    n_classes: int,
    hidden: tuple[int, ...],
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> np.ndarray:
    """Train the probe MLP with Adam on minibatches; predicted classes for x_test, (n_test,)."""
    sizes = (x_train.shape[1], *hidden)
    layers: list[torch.nn.Module] = []
    with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG untouched
        torch.manual_seed(seed)
        for d_in, d_out in zip(sizes[:-1], sizes[1:]):
            layers += [torch.nn.Linear(d_in, d_out), torch.nn.ReLU()]
        net = torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-1], n_classes))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    n = len(x_train)
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            loss = torch.nn.functional.cross_entropy(net(x_train[idx]), t_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        return net(x_test).argmax(1).numpy()


def probe_table(
    facets: dict[str, tuple[ArrayLike, ArrayLike]],
    labels: dict[str, tuple[ArrayLike, ArrayLike]],
    **probe_kwargs,
) -> dict[str, dict[str, float]]:
    """Probe accuracy for every facet × label: {facet: {label: test accuracy}}.

    facets: {facet name: (z_train, z_test)}; labels: {label name: (y_train, y_test)}.
    Add an entry with all facets concatenated to get the z-vector row of Table 2.1.
    Keyword arguments go to :func:`probe_accuracy`.
    """
    if not facets or not labels:
        raise AtlasError("the probe table needs at least one facet and one label")
    return {
        facet: {
            label: probe_accuracy(z_train, y_train, z_test, y_test, **probe_kwargs)
            for label, (y_train, y_test) in labels.items()
        }
        for facet, (z_train, z_test) in facets.items()
    }
