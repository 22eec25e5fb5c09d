"""What an MFCVAE's facets have clustered: the numbers behind the "Facet clusters" page.

- `encode_facets`: one pass over a data set -> per-facet posterior means E[z_j|x],
  cluster probabilities q(c_j|x) (eq. A.47 at the posterior mean), hard clusters and
  assignment confidences max_c q(c_j|x).
- `cluster_grid`: the ordering of seed000 Fig. 2.4 (anchors A1,
  eval_top10_cluster_examples.py): clusters sorted by the mean confidence of their
  members (empty clusters score 0), members sorted by confidence.
- `swap_facet`: the compositionality test of Fig. 2.5, swapping facet j's latent mode
  between two inputs and decoding both.
- `cluster_mean_grid`: decode (mu_{a,c_a}, mu_{b,c_b}) for every pair of clusters of two
  facets (the authors' `plot_cluster_mean_two_facets_recons`).
- `project_facet` and `ellipse`: a facet's latent in 2-D (raw if 2-D, else PCA) with the
  mixture components' means and covariances projected to the same plane.
- `facet_probes`: the probe table of seed000 Table 2.1 on a subsample.
- `facet_accuracies`: every facet's clusters scored against every categorical label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.diagnostics.clustering import probe_table
from engine.errors import AtlasError
from engine.models.base import model_device
from engine.models.cluster_accuracy import cluster_accuracy


@dataclass
class FacetEncoding:
    """A data set encoded once. Per facet j (lists indexed by j):
    means[j]: (n, d_j) posterior means; probs[j]: (n, K_j) q(c_j|x)."""

    names: list[str]
    means: list[np.ndarray]
    probs: list[np.ndarray]
    index: np.ndarray  # (n,) which examples of the data set were encoded

    def clusters(self, j: int) -> np.ndarray:
        """Hard assignment argmax_c q(c_j|x), (n,) int64."""
        return self.probs[j].argmax(1)

    def confidence(self, j: int) -> np.ndarray:
        """Assignment confidence max_c q(c_j|x), (n,)."""
        return self.probs[j].max(1)


@torch.no_grad()
def encode_facets(model, data, n: int | None = None, batch_size: int = 500, seed: int | None = None) -> FacetEncoding:
    """Encode the first n examples of `data` (all by default; a random n with `seed`).

    Cluster probabilities are p(c_j | z_j) at z_j = E[z_j|x] (eq. A.47 at the mode), so
    the result is deterministic; training-time assignments use one draw instead."""
    total = len(data)
    n = total if n is None else min(n, total)
    if n < 1:
        raise AtlasError("there are no examples to encode; the data set is empty")
    if seed is None:
        index = torch.arange(n)
    else:
        index = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]
    device = model_device(model)
    means = [[] for _ in model.names]
    probs = [[] for _ in model.names]
    for chunk in index.split(batch_size):
        x = data.batch(chunk).to(device)
        q = model.encode(x)
        for j, name in enumerate(model.names):
            z = q[name].mean
            means[j].append(z.float().cpu())
            probs[j].append(model.responsibilities_log(j, z).exp().float().cpu())
    return FacetEncoding(
        names=list(model.names),
        means=[torch.cat(m).numpy() for m in means],
        probs=[torch.cat(p).numpy() for p in probs],
        index=index.numpy(),
    )


@torch.no_grad()
def clusters_of_means(model, name: str, means: np.ndarray, batch_size: int = 20_000) -> np.ndarray:
    """argmax_c p(c | z) of facet `name` at latents `means` (N, d) already encoded, e.g.
    the posterior means a latent map cached; (N,) int64."""
    if name not in model.names:
        raise AtlasError(f"this model has no facet {name!r}; its facets are {', '.join(model.names)}")
    j = list(model.names).index(name)
    z = torch.as_tensor(means, dtype=torch.float32).to(model_device(model))
    return torch.cat([model.responsibilities_log(j, chunk).argmax(1).cpu() for chunk in z.split(batch_size)]).numpy()


@dataclass
class ClusterGrid:
    """Fig. 2.4's ordering for one facet. Arrays over clusters are in display order."""

    order: np.ndarray  # (K,) cluster ids, highest mean confidence first
    sizes: np.ndarray  # (K,) members per cluster, in `order`
    mean_confidence: np.ndarray  # (K,) mean max_c q(c|x) over members (0 if empty), in `order`
    members: list[np.ndarray]  # per cluster in `order`: up to `per_cluster` example positions, most confident first


def cluster_grid(pred: np.ndarray, confidence: np.ndarray, n_clusters: int, per_cluster: int = 10) -> ClusterGrid:
    """Rows = clusters sorted by decreasing mean assignment confidence (empty clusters
    score 0 and come last); each row's members sorted by decreasing confidence.

    pred: (n,) cluster ids; confidence: (n,) max_c q(c|x). Ties keep the lower id first."""
    pred = np.asarray(pred, dtype=np.int64)
    confidence = np.asarray(confidence, dtype=np.float64)
    if pred.shape != confidence.shape or pred.ndim != 1:
        raise AtlasError(f"pred and confidence must be two (n,) arrays, got {pred.shape} and {confidence.shape}")
    if len(pred) and (pred.min() < 0 or pred.max() >= n_clusters):
        raise AtlasError(f"cluster ids must lie in 0..{n_clusters - 1}, got {pred.min()}..{pred.max()}")
    sizes = np.bincount(pred, minlength=n_clusters)
    sums = np.bincount(pred, weights=confidence, minlength=n_clusters)
    mean_conf = np.divide(sums, sizes, out=np.zeros(n_clusters), where=sizes > 0)
    order = np.argsort(-mean_conf, kind="stable")
    by_conf = np.argsort(-confidence, kind="stable")  # every example, most confident first
    ranked_pred = pred[by_conf]
    members = [by_conf[ranked_pred == c][:per_cluster] for c in order]
    return ClusterGrid(order=order, sizes=sizes[order], mean_confidence=mean_conf[order], members=members)


def swapped_latents(
    za: dict[str, torch.Tensor], zb: dict[str, torch.Tensor], facet: str
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(a with b's `facet`, b with a's `facet`); every other facet stays with its owner."""
    if facet not in za or facet not in zb:
        raise AtlasError(f"no facet {facet!r}; the latents have {', '.join(za)}")
    return {**za, facet: zb[facet]}, {**zb, facet: za[facet]}


@torch.no_grad()
def swap_facet(model, xa: torch.Tensor, xb: torch.Tensor, facet: str) -> tuple[torch.Tensor, torch.Tensor]:
    """seed000 Fig. 2.5: encode xa, xb (each (n, *shape)) to their posterior means, swap
    facet `facet` and decode: returns (x_hat_a, x_hat_b), x_hat_a keeps a's other facets
    and takes b's `facet`."""
    za = {name: q.mean for name, q in model.encode(xa).items()}
    zb = {name: q.mean for name, q in model.encode(xb).items()}
    sa, sb = swapped_latents(za, zb, facet)
    return model.decode(sa), model.decode(sb)


def mixture_mean(model, j: int) -> torch.Tensor:
    """The mean of facet j's prior mixture, sum_c pi_c mu_c, (d_j,)."""
    return (model.log_pi(j).exp()[:, None] * model.means[j]).sum(0)


@torch.no_grad()
def cluster_mean_grid(
    model, rows: int, cols: int, row_clusters: list[int] | None = None, col_clusters: list[int] | None = None
) -> torch.Tensor:
    """Decode the cluster means of two facets against each other: image [r, c] has facet
    `rows` at mu_{rows, row_clusters[r]}, facet `cols` at mu_{cols, col_clusters[c]}, and
    every other facet at its mixture mean. Returns (R, C, *data shape)."""
    n_facets = len(model.names)
    if not (0 <= rows < n_facets and 0 <= cols < n_facets) or rows == cols:
        raise AtlasError(f"pick two different facets among 0..{n_facets - 1}, got {rows} and {cols}")
    row_clusters = list(range(model.config.clusters[rows])) if row_clusters is None else list(row_clusters)
    col_clusters = list(range(model.config.clusters[cols])) if col_clusters is None else list(col_clusters)
    r, c = len(row_clusters), len(col_clusters)
    z = {}
    for j, name in enumerate(model.names):
        if j == rows:
            z[name] = model.means[j][row_clusters][:, None].expand(r, c, -1)
        elif j == cols:
            z[name] = model.means[j][col_clusters][None, :].expand(r, c, -1)
        else:
            z[name] = mixture_mean(model, j).expand(r, c, -1)
    return model.decode(z)


def mixture_parameters(model, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Facet j's prior as numpy: means (K, d), covariances (K, d, d), weights pi (K,)."""
    with torch.no_grad():
        var = model.prior_variances(j)
        cov = torch.diag_embed(var) if var.dim() == 2 else var
        return model.means[j].cpu().numpy(), cov.cpu().numpy(), model.log_pi(j).exp().cpu().numpy()


@dataclass
class Projection:
    """A facet's latent in a plane: x_2d = (z - center) @ axes.T."""

    points: np.ndarray  # (n, 2)
    means: np.ndarray  # (K, 2) projected component means
    covariances: np.ndarray  # (K, 2, 2) projected component covariances axes Sigma axes^T
    axes: np.ndarray  # (2, d) orthonormal rows
    center: np.ndarray  # (d,)
    method: str  # "raw" or "pca"
    explained: np.ndarray  # (2,) share of the points' variance along each axis


def project_facet(z: np.ndarray, means: np.ndarray, covariances: np.ndarray) -> Projection:
    """Points z (n, d) and mixture components (K, d), (K, d, d) in 2-D: the raw
    coordinates when d <= 2 (d = 1 gets a zero second axis), else the top two principal
    axes of z. A linear map A sends N(mu, Sigma) to N(A mu, A Sigma A^T), so the
    projected ellipses are exact marginals of the components in that plane."""
    z = np.asarray(z, dtype=np.float64)
    d = z.shape[1]
    if means.shape[1] != d or covariances.shape[1:] != (d, d):
        raise AtlasError(f"the mixture has dimension {means.shape[1]}, the points {d}; use the same facet")
    if d <= 2:
        axes = np.eye(2, d)
        center = np.zeros(d)
        method = "raw"
    else:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2).fit(z)
        axes, center, method = pca.components_, pca.mean_, "pca"
    points = (z - center) @ axes.T
    total = z.var(0).sum()
    explained = points.var(0) / total if total > 0 else np.zeros(2)
    return Projection(
        points=points,
        means=(means - center) @ axes.T,
        covariances=axes @ covariances @ axes.T,
        axes=axes,
        center=center,
        method=method,
        explained=explained,
    )


def ellipse(center: np.ndarray, covariance: np.ndarray, n_sd: float = 2.0, n_points: int = 65) -> np.ndarray:
    """Outline (n_points, 2) of the n_sd contour of N(center, covariance) in 2-D: the
    semi-axes are n_sd * sqrt(eigenvalues) along the eigenvectors. Closed (last = first)."""
    values, vectors = np.linalg.eigh(np.asarray(covariance, dtype=np.float64))
    t = np.linspace(0.0, 2 * np.pi, n_points)
    circle = np.stack([np.cos(t), np.sin(t)], 1)  # (n_points, 2)
    return center + n_sd * (circle * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def facet_probes(
    model, train, test, n_train: int = 2000, n_test: int = 1000, seed: int = 0, **probe_kwargs
) -> dict[str, dict[str, float]]:
    """Probe accuracy (seed000 Table 2.1) of every facet's posterior mean, and of all
    facets together ("all"), for every categorical label: {facet: {label: accuracy}}.
    Random subsamples of n_train training and n_test test examples keep it to seconds."""
    labels = [name for name, col in train.labels.items() if col.is_categorical]
    if not labels:
        raise AtlasError("this data set has no categorical labels to probe for")
    tr = encode_facets(model, train, n_train, seed=seed)
    te = encode_facets(model, test, n_test, seed=seed)
    facets = {name: (tr.means[j], te.means[j]) for j, name in enumerate(tr.names)}
    if len(facets) > 1:
        facets["all"] = (np.concatenate(tr.means, 1), np.concatenate(te.means, 1))
    targets = {
        name: (train.labels[name].values[tr.index].numpy(), test.labels[name].values[te.index].numpy())
        for name in labels
    }
    return probe_table(facets, targets, seed=seed, **probe_kwargs)


def facet_accuracies(model, data, encoding: FacetEncoding | None = None) -> dict[str, dict[str, dict]]:
    """Clustering accuracy of every facet's hard clusters against every categorical label
    of `data`: {facet: {label: {"accuracy": ..., "method": "hungarian" | "majority"}}}."""
    enc = encoding if encoding is not None else encode_facets(model, data)
    out: dict[str, dict[str, dict]] = {}
    for j, name in enumerate(enc.names):
        out[name] = {}
        for label, col in data.labels.items():
            if not col.is_categorical:
                continue
            acc = cluster_accuracy(
                enc.clusters(j), col.values[enc.index].numpy(), enc.probs[j].shape[1], len(col.categories)
            )
            out[name][label] = {"accuracy": acc.accuracy, "method": acc.method}
    return out
