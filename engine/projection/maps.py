"""2-D maps of latent points: PCA, UMAP and t-SNE, with a fitted subsample for large sets.

    projection = compute_map(points, "umap", {"n_neighbors": 15}, fit_size=None, seed=0)
    projection.coords          # (N, 2) float32, one row per input point

PCA is exact (eigendecomposition of the covariance; components signed so that the
largest loading of each is positive) and fast for every N. UMAP and t-SNE are fitted on
a random subsample of `fit_size` points (the TensorBoard projector samples too: 5,000
for UMAP, 10,000 for t-SNE, anchors B1) and the remaining points are placed into that
map in chunks, so every input point gets coordinates:

- UMAP: neighbours are found exactly (pynndescent's NN-descent costs ~20 s of compilation
  in every process, see `numba_cache`), the map is `umap.UMAP` fitted on the subsample's
  k-NN graph (FIT_EPOCHS epochs above 10,000 fitted points unless n_epochs is given, half
  of umap-learn's 200; its spectral initialisation on one BLAS thread), and the rest go
  through UMAP's own transform steps (membership strengths to their k nearest fitted
  points, weighted-mean initialisation, 30 or 100 epochs of layout optimisation with the
  fitted points fixed), as `UMAP.transform` does;
- t-SNE: openTSNE, `TSNE.fit` on the subsample and `TSNEEmbedding.transform` for the rest.

Inputs with more than `pca_dims` dimensions (default 50) are reduced by PCA first, the
usual preprocessing for neighbour graphs.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from engine.errors import AtlasError

Progress = Callable[[str, float], None]

METHODS = ("pca", "umap", "tsne")
DEFAULT_PARAMS: dict[str, dict] = {
    "pca": {},
    "umap": {"n_neighbors": 15, "min_dist": 0.1, "n_epochs": None, "pca_dims": 50},
    "tsne": {"perplexity": 30.0, "n_iter": 500, "early_exaggeration_iter": 250, "pca_dims": 50},
}
# Points fitted before the rest are placed into the map (see benchmarks/README.md).
DEFAULT_FIT_SIZE: dict[str, int | None] = {"pca": None, "umap": 20_000, "tsne": 10_000}
MIN_POINTS = {"pca": 2, "umap": 10, "tsne": 10}
TRANSFORM_CHUNK = 10_000
# UMAP layout epochs when n_epochs is None and more than 10,000 points are fitted (umap-learn:
# 200). On 20,000 of 70,000 Fashion-MNIST latents, 100 epochs changed trustworthiness (k = 10)
# by -0.001 to 0.000 over three seeds and halved the fit's optimisation (benchmarks/README.md).
FIT_EPOCHS = 100
KDTREE_MAX_DIM = 20  # k-d trees beat brute force up to about this many dimensions


@dataclass
class Projection:
    """A 2-D map of N points. params: the settings used, defaults filled in."""

    coords: np.ndarray  # (N, 2) float32
    method: str
    params: dict
    n_fit: int  # points the map was fitted on; the other N - n_fit were placed into it
    seed: int
    seconds: float
    explained_variance_ratio: np.ndarray | None = None  # (2,) share of variance on each PCA axis

    @property
    def n(self) -> int:
        return len(self.coords)


def resolve_settings(method: str, params: dict | None, fit_size: int | None) -> tuple[dict, int | None]:
    """(params with defaults filled in, fit_size or the method's default); refuses unknown
    methods, unknown parameter names and bad values."""
    if method not in METHODS:
        raise AtlasError(f"unknown map method {method!r}; choose one of {', '.join(METHODS)}")
    params = dict(params or {})
    unknown = set(params) - set(DEFAULT_PARAMS[method])
    if unknown:
        allowed = ", ".join(DEFAULT_PARAMS[method]) or "none"
        raise AtlasError(f"unknown {method} parameter(s) {', '.join(sorted(unknown))}; allowed: {allowed}")
    resolved = {**DEFAULT_PARAMS[method]}
    for name, value in params.items():
        resolved[name] = _number(method, name, value, float if isinstance(resolved[name], float) else int)
    if method == "umap" and resolved["n_neighbors"] < 2:
        raise AtlasError(f"umap n_neighbors must be at least 2, got {resolved['n_neighbors']}")
    if fit_size is None:
        fit_size = DEFAULT_FIT_SIZE[method]
    elif isinstance(fit_size, bool) or not isinstance(fit_size, (int, np.integer)) or fit_size < MIN_POINTS[method]:
        raise AtlasError(f"fit_size must be a whole number of at least {MIN_POINTS[method]} points, got {fit_size!r}")
    return resolved, None if fit_size is None else int(fit_size)


def _number(method: str, name: str, value, kind: type) -> int | float | None:
    """value as a non-negative `kind` (so that 15 and 15.0 name the same setting); None stays."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not value >= 0:
        raise AtlasError(f"{method} parameter {name} must be a non-negative number, got {value!r}")
    if kind is int and value != int(value):
        raise AtlasError(f"{method} parameter {name} must be a whole number, got {value!r}")
    return kind(value)


def check_points(points, method: str = "pca") -> np.ndarray:
    """points as a C-contiguous float32 (N, d) array; refuses empty, non-2-D and non-finite input."""
    if isinstance(points, torch.Tensor):
        points = points.detach().cpu().numpy()
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] < 1:
        raise AtlasError(f"points must be a 2-D array (points, dimensions), got shape {points.shape}")
    if len(points) < MIN_POINTS[method]:
        hint = " Use PCA for a handful of points." if method != "pca" else ""
        raise AtlasError(f"{method} needs at least {MIN_POINTS[method]} points, got {len(points)}.{hint}")
    if not np.issubdtype(points.dtype, np.number):
        raise AtlasError(f"points must be numbers, got dtype {points.dtype}")
    bad = ~np.isfinite(points).all(1)
    if bad.any():
        raise AtlasError(
            f"{int(bad.sum())} of {len(points)} points have NaN or infinite coordinates (first at row "
            f"{int(np.flatnonzero(bad)[0])}); the encoder produced non-finite means: check the checkpoint "
            "or the inputs, or drop those rows"
        )
    return np.ascontiguousarray(points, dtype=np.float32)


def compute_map(
    points,
    method: str = "pca",
    params: dict | None = None,
    fit_size: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> Projection:
    """A 2-D map of `points` (N, d). Fitted on a random `fit_size` subsample when N is larger
    (default per method: DEFAULT_FIT_SIZE) and the rest placed into it; deterministic in
    `seed`. progress(stage, fraction in [0, 1]) is called as the work goes on."""
    params, fit_size = resolve_settings(method, params, fit_size)
    points = check_points(points, method)
    report = progress or (lambda stage, fraction: None)
    start = time.perf_counter()
    n = len(points)
    fit_index, rest = fit_subsample(n, fit_size, seed)
    n_fit = len(fit_index)
    ratio = None
    if method == "pca":
        basis = pca_basis(points[fit_index], 2)
        coords = basis.project(points)
        ratio = basis.explained_variance_ratio
    else:
        if params["pca_dims"] and points.shape[1] > params["pca_dims"]:
            report("reducing", 0.0)
            points = pca_basis(points[fit_index], int(params["pca_dims"])).project(points)
        fit = _umap if method == "umap" else _tsne
        coords = np.empty((n, 2), dtype=np.float32)
        coords[fit_index], place = fit(points[fit_index], params, seed, report)
        for done in range(0, len(rest), TRANSFORM_CHUNK):
            report("placing", 0.5 + 0.5 * done / len(rest))
            chunk = rest[done : done + TRANSFORM_CHUNK]
            coords[chunk] = place(points[chunk], len(rest))
    report("done", 1.0)
    return Projection(
        coords=np.ascontiguousarray(coords, dtype=np.float32),
        method=method,
        params=params,
        n_fit=int(n_fit),
        seed=int(seed),
        seconds=time.perf_counter() - start,
        explained_variance_ratio=ratio,
    )


def fit_subsample(n: int, fit_size: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fitted indices, the other indices), both sorted: a random `fit_size` of range(n) drawn
    with numpy's default_rng(seed), or all n when fit_size is None or at least n."""
    n_fit = n if fit_size is None else min(n, fit_size)
    everything = np.arange(n)
    if n_fit == n:
        return everything, everything[:0]
    fit_index = np.sort(np.random.default_rng(seed).choice(n, n_fit, replace=False))
    return fit_index, np.setdiff1d(everything, fit_index, assume_unique=True)


# -- PCA ------------------------------------------------------------------------------------


@dataclass
class PCABasis:
    mean: np.ndarray  # (d,)
    components: np.ndarray  # (k, d), rows orthonormal; largest |loading| of each row positive
    explained_variance_ratio: np.ndarray  # (k,)

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, k) float32 coordinates; zero columns when k exceeds the data's dimension."""
        coords = (points.astype(np.float64) - self.mean) @ self.components.T
        return coords.astype(np.float32)


def pca_basis(points: np.ndarray, k: int) -> PCABasis:
    """The top-k principal axes of points (N, d), exactly: eigenvectors of the covariance for
    d <= 4096, else the SVD of the centred data. Missing axes (k > d) are zero rows."""
    x = points.astype(np.float64)
    mean = x.mean(0)
    x = x - mean
    d = x.shape[1]
    if d <= 4096:
        eigvals, eigvecs = np.linalg.eigh(x.T @ x / len(x))  # ascending
        order = np.argsort(eigvals)[::-1]
        variances, axes = np.clip(eigvals[order], 0.0, None), eigvecs[:, order].T
    else:
        _, s, vt = np.linalg.svd(x, full_matrices=False)
        variances, axes = s**2 / len(x), vt
    total = variances.sum()
    m = min(k, d)
    components = np.zeros((k, d))
    components[:m] = axes[:m]
    largest = np.abs(components[:m]).argmax(1)
    components[:m] *= np.sign(components[np.arange(m), largest])[:, None]
    ratio = np.zeros(k)
    ratio[:m] = variances[:m] / total if total > 0 else 0.0
    return PCABasis(mean=mean, components=components, explained_variance_ratio=ratio)


# -- neighbours -----------------------------------------------------------------------------


def exact_knn(query: np.ndarray, ref: np.ndarray, k: int, self_first: bool = False, chunk: int = 2048):
    """The k nearest rows of ref (M, d) for every row of query (N, d), Euclidean, exactly:
    (indices (N, k) int32, distances (N, k) float32), nearest first. A k-d tree (scipy) for up
    to KDTREE_MAX_DIM dimensions, else brute force with torch in chunks of `chunk` rows.
    self_first: query is ref, and each point is its own first neighbour at distance 0 (UMAP's
    convention, kept when duplicates tie with it)."""
    if ref.shape[1] <= KDTREE_MAX_DIM:
        from scipy.spatial import cKDTree

        distances, indices = cKDTree(ref).query(query, k, workers=_threads())
        indices, distances = indices.reshape(len(query), k), distances.reshape(len(query), k)
    else:
        indices, distances = _brute_knn(query, ref, k, chunk)
    if self_first:
        rows = np.arange(len(query))
        others = np.argsort(indices == rows[:, None], axis=1, kind="stable")[:, : k - 1]  # self last, order kept
        indices = np.hstack([rows[:, None], np.take_along_axis(indices, others, 1)])
        distances = np.hstack([np.zeros((len(query), 1)), np.take_along_axis(distances, others, 1)])
    return indices.astype(np.int32), distances.astype(np.float32)


def _brute_knn(query: np.ndarray, ref: np.ndarray, k: int, chunk: int):
    ref_t = torch.from_numpy(ref)
    ref_sq = ref_t.pow(2).sum(1)
    ref_tt = ref_t.T.contiguous()
    indices = np.empty((len(query), k), dtype=np.int64)
    distances = np.empty((len(query), k), dtype=np.float32)
    for start in range(0, len(query), chunk):
        q = torch.from_numpy(query[start : start + chunk])
        # |r|^2 - 2 q.r ranks the references as |q - r|^2 does (|q|^2 is the same for a row)
        score = torch.addmm(ref_sq, q, ref_tt, alpha=-2.0)  # (chunk, M)
        idx = score.topk(k, dim=1, largest=False, sorted=True).indices  # (chunk, k)
        dist = (q.unsqueeze(1) - ref_t[idx]).pow(2).sum(-1).sqrt()  # exact, not the expanded form
        indices[start : start + len(q)] = idx.numpy()
        distances[start : start + len(q)] = dist.numpy()
    return indices, distances


# -- UMAP -----------------------------------------------------------------------------------


def _umap(x: np.ndarray, params: dict, seed: int, report: Progress):
    from engine.projection.numba_cache import import_umap

    report("loading UMAP", 0.0)
    umap = import_umap()
    from scipy.sparse import coo_matrix
    from threadpoolctl import threadpool_limits
    from umap.layouts import optimize_layout_euclidean
    from umap.umap_ import compute_membership_strengths, make_epochs_per_sample, smooth_knn_dist

    k = int(min(params["n_neighbors"], len(x) - 1))
    report("neighbours", 0.05)
    knn = exact_knn(x, x, k, self_first=True)
    report("fitting", 0.15)
    given_epochs = None if params["n_epochs"] is None else int(params["n_epochs"])
    model = umap.UMAP(
        n_neighbors=k,
        min_dist=float(params["min_dist"]),
        n_epochs=FIT_EPOCHS if given_epochs is None and len(x) > 10_000 else given_epochs,
        random_state=seed,
        transform_seed=seed,
        precomputed_knn=knn,
    )
    # One BLAS thread: the spectral initialisation (ARPACK) makes many small BLAS calls, and
    # OpenBLAS's spinning threads made it 10x slower on a busy 2-core machine (benchmarks/README.md).
    with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
        # no search index (we place points ourselves); seeded, so single-threaded; separated clusters
        expected = "knn_search_index|n_jobs value 1 overridden|not fully connected"
        warnings.filterwarnings("ignore", message=f".*({expected}).*")
        coords = model.fit_transform(x).astype(np.float32)
    reference = coords.copy()  # optimize_layout_euclidean moves the head embedding only
    rng_state = np.random.default_rng(seed).integers(-(2**31), 2**31 - 1, 3).astype(np.int64)

    def place(rest: np.ndarray, n_rest: int) -> np.ndarray:
        """UMAP.transform's steps (umap-learn 0.5) for euclidean output, with exact neighbours;
        the epoch count follows the whole set being placed, not the chunk."""
        indices, dists = exact_knn(rest, x, k)
        sigmas, rhos = smooth_knn_dist(dists, float(k), local_connectivity=max(0.0, model.local_connectivity - 1.0))
        rows, cols, vals, _ = compute_membership_strengths(indices, dists, sigmas, rhos, bipartite=True)
        embedding = weighted_mean_init(indices, vals.reshape(len(rest), k), reference)
        graph = coo_matrix((vals, (rows, cols)), shape=(len(rest), len(x)))
        n_epochs = given_epochs // 3 if given_epochs else (100 if n_rest <= 10_000 else 30)
        graph.data[graph.data < graph.data.max() / float(n_epochs)] = 0.0
        graph.eliminate_zeros()
        return optimize_layout_euclidean(
            embedding,
            reference,
            graph.row,
            graph.col,
            n_epochs,
            len(x),
            make_epochs_per_sample(graph.data, n_epochs),
            model._a,
            model._b,
            rng_state,
            model.repulsion_strength,
            model._initial_alpha / 4.0,
            model.negative_sample_rate,
            False,
        ).astype(np.float32)

    return coords, place


def weighted_mean_init(indices: np.ndarray, weights: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Starting positions of new points (n, dim) float32 from their neighbours among the fitted
    points, indices and membership strengths (n, k), and the fitted map `reference` (m, dim):
    the strength-weighted mean of the neighbours' positions; a neighbour's own position where
    its strength is 1 (the lowest such index); NaN where every strength is 0. What umap-learn's
    `init_graph_transform` computes row by row in Python (3 s for 50,000 points), in one pass."""
    weights = weights.astype(np.float64)
    total = weights.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        init = np.einsum("nk,nkd->nd", weights / total[:, None], reference[indices].astype(np.float64))
    exact = weights == 1.0
    has_exact = exact.any(1)
    first = np.where(exact[has_exact], indices[has_exact], np.iinfo(indices.dtype).max).min(1)
    init[has_exact] = reference[first]
    init[total == 0] = np.nan
    return init.astype(np.float32)


# -- t-SNE ----------------------------------------------------------------------------------


def _tsne(x: np.ndarray, params: dict, seed: int, report: Progress):
    from openTSNE import TSNE

    total = params["n_iter"] + params["early_exaggeration_iter"]
    calls = [0]  # openTSNE calls back every 50 iterations, in fit and again in transform

    def on_iterations(iteration, error, embedding) -> bool:
        calls[0] += 1
        if calls[0] * 50 <= total:
            report("fitting", 0.5 * calls[0] * 50 / total)
        return False

    report("fitting", 0.0)
    tsne = TSNE(
        perplexity=float(min(params["perplexity"], (len(x) - 1) / 3)),
        n_iter=int(params["n_iter"]),
        early_exaggeration_iter=int(params["early_exaggeration_iter"]),
        n_jobs=_threads(),
        random_state=seed,
        callbacks=on_iterations,
        callbacks_every_iters=50,
    )
    embedding = tsne.fit(x)

    def place(rest: np.ndarray, n_rest: int) -> np.ndarray:
        return np.asarray(embedding.transform(rest), dtype=np.float32)

    return np.asarray(embedding, dtype=np.float32), place


def _threads() -> int:
    for name in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return max(1, os.cpu_count() or 1)


def warm_up() -> float:
    """Compile (and cache) everything a UMAP map uses, on 300 random points; returns seconds."""
    points = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    return compute_map(points, "umap", {"n_epochs": 10}, fit_size=200).seconds
