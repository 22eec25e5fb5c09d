"""How well a facet's clusters and latents line up with known labels.

Measures from the MFCVAE evaluation (seed000 §1.8):

- Unsupervised clustering accuracy of one facet's argmax clusters against a label
  (engine.models.cluster_accuracy, where the model's own evaluation metrics find it),
  reported here beside NMI and ARI for every label column, with a display order that
  puts the contingency table near-diagonal.
- The disentanglement probe of Table 2.1: a small MLP trained from one facet's latent
  to a label; its test accuracy says how much of the label that facet carries.

NMI and ARI come from scikit-learn and need no matching. Everything here takes
numpy arrays or torch tensors and returns plain Python / numpy values.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from engine.errors import AtlasError
from engine.models.cluster_accuracy import ArrayLike, as_ids, check_pair, cluster_accuracy, to_numpy


def display_order(table: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Row order (cluster ids, shape (K,)) that puts a contingency table near-diagonal.

    Clusters are sorted by the class they are mapped to, larger clusters first within a
    class; clusters with no class (empty clusters under the majority mapping) go last. Use as `table[display_order(table, acc.mapping)]`.
    """
    sizes = table.sum(1)
    n_classes = table.shape[1]
    mapped = np.array([mapping.get(k, n_classes) for k in range(table.shape[0])])
    return np.lexsort((-sizes, mapped))


def nmi(pred: ArrayLike, labels: ArrayLike) -> float:
    """Normalised mutual information (arithmetic normalisation), in [0, 1]; 1 for a relabelling."""
    from sklearn.metrics import normalized_mutual_info_score  # scikit-learn takes a second to import

    pred, labels = check_pair(pred, labels)
    return float(normalized_mutual_info_score(labels, pred))


def ari(pred: ArrayLike, labels: ArrayLike) -> float:
    """Adjusted Rand index: 1 for a relabelling, about 0 for independent labellings."""
    from sklearn.metrics import adjusted_rand_score

    pred, labels = check_pair(pred, labels)
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
    a = to_numpy(x, name)
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
    gen = torch.Generator().manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for d_in, d_out in zip(sizes[:-1], sizes[1:]):
        layers += [_linear(d_in, d_out, gen), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers, _linear(sizes[-1], n_classes, gen))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    n = len(x_train)
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            loss = torch.nn.functional.cross_entropy(net(x_train[idx]), t_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        return net(x_test).argmax(1).numpy()


def _linear(d_in: int, d_out: int, generator: torch.Generator) -> torch.nn.Linear:
    """A linear layer with PyTorch's default initialisation, U(-1/sqrt(d_in), 1/sqrt(d_in)) for
    weights and biases, drawn from `generator` rather than the global one (which other threads
    of a server share)."""
    layer = torch.nn.utils.skip_init(torch.nn.Linear, d_in, d_out)  # no draw from the global generator
    bound = 1.0 / math.sqrt(d_in)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.uniform_(-bound, bound, generator=generator)
    return layer


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
