"""Linear decoding of labels from latents, and posterior correlations between latent units.

Measures of the TD-VAE thesis §5.3-5.4 (seed003_004 §2.8-2.10):

- linear decodability of texture families from z2 (or z1) posterior means: multinomial
  logistic regression, 5 repeats, accuracies and confusion matrices averaged
  (Tables 5.1, 5.4, Fig. 5.13);
- texture-selective dimensions, found by greedy forward selection, and the accuracy of the
  selected and of the remaining dimensions alone (Tables 5.2, 5.3);
- the Pearson correlations of z1 across posterior samples of one patch, its strongest
  pairs, and how consistently a pair's correlation recurs on other patches (Table 5.8).

Inputs are numpy arrays or torch tensors; outputs plain Python / numpy values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.errors import AtlasError
from engine.models.cluster_accuracy import ArrayLike, to_numpy

MAX_ITER = 5000  # lbfgs on standardised features converges in well under this


@dataclass
class DecodingResult:
    """Test-set decoding of one feature set, over `repeats` fits."""

    accuracies: np.ndarray  # (repeats,) test accuracy of each fit
    confusion: np.ndarray  # (C, C) rows true class, columns predicted; averaged and row-normalised
    classes: np.ndarray  # (C,) the label of each row / column
    chance: float  # 1 / C

    @property
    def accuracy(self) -> float:
        return float(self.accuracies.mean())

    @property
    def accuracy_std(self) -> float:
        return float(self.accuracies.std())


@dataclass
class SelectiveDims:
    """Greedy forward selection of label-selective dimensions (thesis Tables 5.2, 5.3)."""

    dims: list[int]  # selected dimensions, 0-based, in the order they were added
    curve: list[float]  # validation accuracy after each addition (curve[i] with dims[: i + 1])
    baseline: float  # validation accuracy with no dimension: always the training set's commonest class
    selected: DecodingResult | None  # test decoding from the selected dims only; None if none selected
    rest: DecodingResult | None  # test decoding from the other dims only; None if all were selected


def _features(x: ArrayLike, name: str) -> np.ndarray:
    a = to_numpy(x, name)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise AtlasError(f"{name} must be a non-empty array (examples, features), got shape {a.shape}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise AtlasError(f"{name} holds NaN or infinite values; decode finite features only")
    return a


def _labels(y: ArrayLike, name: str, n: int) -> np.ndarray:
    a = to_numpy(y, name)
    if a.ndim != 1 or len(a) != n:
        raise AtlasError(f"{name} must be a 1-D array with one label per example ({n}), got shape {a.shape}")
    return a


def _checked(train_x, train_y, test_x, test_y):
    train_x, test_x = _features(train_x, "train_x"), _features(test_x, "test_x")
    if train_x.shape[1] != test_x.shape[1]:
        raise AtlasError(
            f"train_x and test_x must have the same features, got {train_x.shape[1]} and {test_x.shape[1]} columns"
        )
    train_y, test_y = _labels(train_y, "train_y", len(train_x)), _labels(test_y, "test_y", len(test_x))
    if len(np.unique(train_y)) < 2:
        raise AtlasError("train_y holds a single class; decoding needs at least two")
    return train_x, train_y, test_x, test_y


def _classifier(random_state: int):
    from sklearn.linear_model import LogisticRegression  # scikit-learn takes a second to import
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # lbfgs fits the multinomial (softmax) model for three or more classes
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=MAX_ITER, random_state=random_state))


def _stratified_bootstrap(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of a bootstrap sample that keeps each class's count (so every class is present)."""
    parts = [rng.choice(np.flatnonzero(y == c), size=int((y == c).sum()), replace=True) for c in np.unique(y)]
    return rng.permutation(np.concatenate(parts))


def linear_decoding(
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    test_y: ArrayLike,
    repeats: int = 5,
    seed: int = 0,
    bootstrap: bool = True,
) -> DecodingResult:
    """Multinomial logistic regression from features to labels, fitted `repeats` times.

    Each fit standardises the features on its training sample and fits scikit-learn's
    LogisticRegression (lbfgs, L2 with C = 1, max_iter = MAX_ITER). Repeat r uses
    random_state = seed + r and, with bootstrap=True, a stratified bootstrap of the training
    set (each class resampled with replacement to its own count), so the fits differ; lbfgs
    is deterministic, so without the bootstrap (bootstrap=False: a shuffle of the whole
    training set) the repeats agree up to solver tolerance. Confusion counts are summed
    over repeats and each row divided by its total (a class absent from the test set keeps
    a row of zeros). Chance is 1 / number of classes seen in train or test.
    """
    train_x, train_y, test_x, test_y = _checked(train_x, train_y, test_x, test_y)
    if repeats < 1:
        raise AtlasError(f"repeats must be at least 1, got {repeats}")
    from sklearn.metrics import confusion_matrix

    classes = np.unique(np.concatenate([train_y, test_y]))
    accuracies = np.empty(repeats)
    counts = np.zeros((len(classes), len(classes)))
    for r in range(repeats):
        rng = np.random.default_rng([seed, r])
        rows = _stratified_bootstrap(train_y, rng) if bootstrap else rng.permutation(len(train_y))
        model = _classifier(seed + r).fit(train_x[rows], train_y[rows])
        pred = model.predict(test_x)
        accuracies[r] = np.mean(pred == test_y)
        counts += confusion_matrix(test_y, pred, labels=classes)
    totals = counts.sum(1, keepdims=True)
    confusion = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    return DecodingResult(accuracies=accuracies, confusion=confusion, classes=classes, chance=1.0 / len(classes))


def greedy_selective_dims(
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    test_y: ArrayLike,
    seed: int = 0,
    tolerance: float = 0.01,
    max_dims: int | None = None,
    validation: float = 0.25,
    repeats: int = 5,
) -> SelectiveDims:
    """Forward selection of the dimensions that carry the label (thesis Tables 5.2, 5.3).

    A stratified `validation` share of the training set is held out (seed `seed`). Starting
    from no dimension (validation accuracy of always predicting the commonest training
    class), each step fits a logistic regression on the rest of the training set for every
    candidate dimension added to the selected ones and adds the one with the highest
    validation accuracy, provided it raises that accuracy by at least `tolerance`; else the
    selection stops (also after max_dims). The test set is not looked at during the
    selection. Finally linear_decoding (all of the training set, `repeats` fits) is run on
    the selected dims only and on the others only.
    """
    train_x, train_y, test_x, test_y = _checked(train_x, train_y, test_x, test_y)
    from sklearn.model_selection import train_test_split

    d = train_x.shape[1]
    max_dims = d if max_dims is None else min(max_dims, d)
    fit_rows, val_rows = train_test_split(
        np.arange(len(train_y)), test_size=validation, random_state=seed, stratify=train_y
    )
    fx, fy, vx, vy = train_x[fit_rows], train_y[fit_rows], train_x[val_rows], train_y[val_rows]
    values, counts = np.unique(fy, return_counts=True)
    baseline = float(np.mean(vy == values[np.argmax(counts)]))

    dims: list[int] = []
    curve: list[float] = []
    current = baseline
    while len(dims) < max_dims:
        candidates = [j for j in range(d) if j not in dims]
        scores = [_classifier(seed).fit(fx[:, dims + [j]], fy).score(vx[:, dims + [j]], vy) for j in candidates]
        best = int(np.argmax(scores))
        if scores[best] - current < tolerance:
            break
        dims.append(candidates[best])
        current = float(scores[best])
        curve.append(current)

    rest = [j for j in range(d) if j not in dims]

    def decode(columns: list[int]) -> DecodingResult | None:
        if not columns:
            return None
        return linear_decoding(train_x[:, columns], train_y, test_x[:, columns], test_y, repeats=repeats, seed=seed)

    return SelectiveDims(dims=dims, curve=curve, baseline=baseline, selected=decode(dims), rest=decode(rest))


def _samples(samples: ArrayLike) -> np.ndarray:
    a = to_numpy(samples, "samples")
    if a.ndim < 2 or a.shape[-2] < 2 or a.shape[-1] < 1:
        raise AtlasError(f"samples must be an array (..., samples >= 2, dims), got shape {a.shape}")
    return a.astype(np.float64)


def posterior_correlations(samples: ArrayLike) -> np.ndarray:
    """Pearson correlations between dimensions across samples: (..., S, d) -> (..., d, d).

    Leading axes (e.g. patches) are kept, so (P, S, d) gives one matrix per patch; mind
    the memory of P d² floats for d = 450. The diagonal is NaN (excluded, thesis §5.4.1); a
    dimension with zero variance across the samples has NaN in its row and column.
    """
    x = _samples(samples)
    varies = np.ptp(x, axis=-2) > 0  # (..., d); a constant dimension's centred values are rounding noise
    x = x - x.mean(-2, keepdims=True)
    norm = np.sqrt((x**2).sum(-2))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.einsum("...si,...sj->...ij", x, x) / (norm[..., :, None] * norm[..., None, :])
    r = np.where(varies[..., :, None] & varies[..., None, :], np.clip(r, -1.0, 1.0), np.nan)
    d = r.shape[-1]
    r[..., np.arange(d), np.arange(d)] = np.nan
    return r


def pair_correlations(samples: ArrayLike, i: ArrayLike, j: ArrayLike) -> np.ndarray:
    """Pearson r of the pairs (i[p], j[p]) only: samples (..., S, d) -> (..., pairs).

    The same values as posterior_correlations(samples)[..., i, j] without the (d, d)
    matrices; NaN where either dimension has zero variance or i == j.
    """
    x = _samples(samples)
    i, j = np.asarray(to_numpy(i, "i"), dtype=np.int64), np.asarray(to_numpy(j, "j"), dtype=np.int64)
    d = x.shape[-1]
    if i.shape != j.shape or i.ndim != 1 or (len(i) and (min(i.min(), j.min()) < 0 or max(i.max(), j.max()) >= d)):
        raise AtlasError(f"i and j must be 1-D arrays of the same length with dimensions in 0..{d - 1}")
    varies = np.ptp(x, axis=-2) > 0
    x = x - x.mean(-2, keepdims=True)
    xi, xj = x[..., i], x[..., j]  # (..., S, pairs)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xi * xj).sum(-2) / np.sqrt((xi**2).sum(-2) * (xj**2).sum(-2))
    return np.where(varies[..., i] & varies[..., j] & (i != j), np.clip(r, -1.0, 1.0), np.nan)


def top_pairs(r: ArrayLike, k: int) -> list[tuple[int, int, float]]:
    """The k pairs (i < j) with the largest |r[i, j]|, strongest first, as (i, j, r_ij).

    Only the upper triangle is read; NaN entries are ignored, so fewer than k pairs come
    back when fewer are finite. Ties keep the row-major order of (i, j).
    """
    m = to_numpy(r, "r")
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise AtlasError(f"r must be a square (d, d) correlation matrix, got shape {m.shape}")
    if k < 0:
        raise AtlasError(f"k must be >= 0, got {k}")
    i, j = np.triu_indices(m.shape[0], 1)
    values = m[i, j].astype(np.float64)
    keep = np.isfinite(values)
    i, j, values = i[keep], j[keep], values[keep]
    order = np.argsort(-np.abs(values), kind="stable")[:k]
    return [(int(i[o]), int(j[o]), float(values[o])) for o in order]


def consistency_ratio(
    reference: list[tuple[int, int, float]],
    other_r: ArrayLike | Callable[[np.ndarray, np.ndarray], np.ndarray],
    ddof: int = 0,
) -> float:
    """How far reference correlations lie from their spread on other patches (Table 5.8).

    For each reference pair (i, j, r_ref): |mean_P r_ij - r_ref| / std_P r_ij over the P
    other patches, averaged over the pairs; lower is more consistent. For Table 5.8 pass the
    top-5 pairs of each of the 3 reference patches together. other_r is either the other
    patches' correlation matrices (P, d, d) or a function (i, j) -> (P, pairs) giving their
    r for the pairs (e.g. `lambda i, j: pair_correlations(samples, i, j)`, which avoids the
    matrices). std uses `ddof` (default 0, numpy's np.std, which the thesis most likely used;
    ddof=1 differs by a factor sqrt((P-1)/P), 0.1 % at P = 500). NaN r (a unit with no
    variance on a patch) are left out of that pair's mean and std; pairs whose std is zero
    or undefined are left out of the average (NaN if none is left).
    """
    if not reference:
        raise AtlasError("reference holds no pairs; pass a list of (i, j, r_ref), e.g. from top_pairs")
    ref = np.asarray(reference, dtype=np.float64)
    if ref.ndim != 2 or ref.shape[1] != 3:
        raise AtlasError(f"reference must be a list of (i, j, r_ref) triples, got shape {ref.shape}")
    i, j, r_ref = ref[:, 0].astype(np.int64), ref[:, 1].astype(np.int64), ref[:, 2]
    if callable(other_r):
        values = np.asarray(other_r(i, j), dtype=np.float64)
    else:
        m = to_numpy(other_r, "other_r")
        if m.ndim != 3 or m.shape[1] != m.shape[2]:
            raise AtlasError(f"other_r must be correlation matrices (P, d, d), got shape {m.shape}")
        values = m[:, i, j].astype(np.float64)
    if values.ndim != 2 or values.shape[1] != len(ref):
        raise AtlasError(f"other_r must give (patches, {len(ref)}) correlations, got shape {values.shape}")
    n = np.isfinite(values).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nanmean(np.where(n > 0, values, 0.0), axis=0)
        std = np.sqrt(np.nansum((values - mean) ** 2, axis=0) / (n - ddof))
        ratio = np.abs(mean - r_ref) / std
    ratio = ratio[(n > ddof) & (std > 0) & np.isfinite(ratio)]
    return float(ratio.mean()) if len(ratio) else float("nan")
