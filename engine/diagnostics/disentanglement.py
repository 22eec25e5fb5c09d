"""Disentanglement scores of latent codes on data with known, discrete ground-truth factors.

Every score takes `codes` (n, d), the representation of n examples (e.g. posterior means), and
`factors` (n, k), integer ground-truth factors v_1..v_k, each column with its own set of values.

- MIG (Chen et al. 2018; spec seed001 §6, the [std] formula beside the thesis's Fig D.4):
      MIG = (1/K) Σ_k [ I(z_{j(k)}; v_k) - I(z_{j'}; v_k) ] / H(v_k),
  j(k) the code dimension with the most information about v_k and j' the second. The I are plug-in
  estimates on equal-width histograms of each code dimension (20 bins, as disentanglement_lib).
- DCI (Eastwood & Williams 2018): disentanglement, completeness and informativeness from the
  feature importances of one classifier per factor.
- SAP (Kumar et al. 2018): per factor, the gap in test accuracy between the best and the
  second-best single code dimension.
- FactorVAE score (Kim & Mnih 2018): how well a majority vote from "the dimension that varies
  least when one factor is fixed" identifies the fixed factor.

Mutual informations and entropies are in nats.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.ensemble import GradientBoostingClassifier

from engine.errors import AtlasError

DEFAULT_BINS = 20  # equal-width histogram bins per code dimension (disentanglement_lib's default)
SAP_BINS = 20  # bins of SAP's one-dimensional classifier
PRUNE_STD = 0.05  # FactorVAE: a dimension with global std below this is collapsed (disentanglement_lib)
MAX_CODE_VALUES = 2 * 10**7  # n * d entries of one code array (~160 MB of int64 bin indices)
MAX_TABLE_CELLS = 5 * 10**7  # d * bins * values of one factor: the contingency tables of one factor
MAX_DCI_WORK = 5 * 10**6  # n_train * d * (trees per boosting stage, summed over factors); 1e5 takes ~2 s
MAX_ENCODED_ROWS = 10**7  # FactorVAE: inputs drawn and encoded, n_var + n_votes * batch
_CHUNK_ROWS = 8192  # FactorVAE: inputs encoded in one call


@dataclass
class MIGResult:
    score: float  # mean of per_factor
    per_factor: np.ndarray  # (k,) (top MI - second MI) / H(v_k)
    mi: np.ndarray  # (d, k) I(z_j; v_k), nats
    entropies: np.ndarray  # (k,) H(v_k), nats


@dataclass
class DCIResult:
    disentanglement: float  # D = Σ_i ρ_i (1 - H_k(P_i.))
    completeness: float  # C = Σ_k ρ̃_k (1 - H_d(P̃_.k))
    informativeness: float  # mean over factors of test accuracy
    importance: np.ndarray  # (d, k) feature importance of code i for predicting factor k, columns sum to 1
    per_code_disentanglement: np.ndarray  # (d,) 1 - H_k(P_i.)
    per_factor_completeness: np.ndarray  # (k,) 1 - H_d(P̃_.k)
    train_accuracy: np.ndarray  # (k,)
    test_accuracy: np.ndarray  # (k,)


@dataclass
class SAPResult:
    score: float  # mean of per_factor
    matrix: np.ndarray  # (d, k) test accuracy of predicting factor k from code dimension i alone
    per_factor: np.ndarray  # (k,) best minus second-best entry of each column


@dataclass
class FactorVAEResult:
    score: float  # = eval_accuracy
    train_accuracy: float
    eval_accuracy: float
    active_dims: np.ndarray  # (d,) bool: global std >= PRUNE_STD
    votes: np.ndarray  # (d, k) training votes: how often dimension i varied least with factor k fixed
    majority: np.ndarray  # (d,) the factor each dimension votes for (the classifier)


# ---- inputs checked at the boundary ----


def _as_array(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _codes(codes, name: str = "codes") -> np.ndarray:
    """A finite float64 array (n, d) with n >= 2."""
    a = _as_array(codes)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise AtlasError(f"{name} must be an array of real numbers, got dtype {a.dtype}")
    if np.iscomplexobj(a):
        raise AtlasError(f"{name} must be real numbers, got complex dtype {a.dtype}")
    if a.ndim != 2:
        raise AtlasError(
            f"{name} must be 2-D (examples, latent dims), got shape {a.shape}; "
            "flatten each example's latents into one row"
        )
    n, d = a.shape
    if n < 2 or d < 1:
        raise AtlasError(f"{name} needs at least 2 examples and 1 dimension, got shape {a.shape}")
    if n * d > MAX_CODE_VALUES:
        raise AtlasError(
            f"{name} has {n} x {d} = {n * d:,} values, above the limit of {MAX_CODE_VALUES:,}; "
            "score a random subset of the examples (a few thousand is usual)"
        )
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))[0]
        raise AtlasError(
            f"{name} has non-finite values (first at example {bad[0]}, dim {bad[1]}); "
            "check the encoder's outputs for NaN or inf before scoring"
        )
    return a


def _factors(factors, n: int, name: str = "factors", codes_name: str = "codes", varied: bool = True) -> np.ndarray:
    """An int64 array (n, k); with `varied`, every column takes at least two values."""
    a = _as_array(factors)
    if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise AtlasError(
            f"{name} must be integer factor values, got dtype {a.dtype}; "
            "discretise continuous factors first (e.g. with np.digitize) and pass them as ints"
        )
    if a.ndim != 2:
        raise AtlasError(
            f"{name} must be 2-D (examples, factors), got shape {a.shape}; for a single factor pass factors[:, None]"
        )
    if a.shape[0] != n:
        raise AtlasError(
            f"{name} has {a.shape[0]} examples but {codes_name} has {n}; pass one row of factors per code row"
        )
    if a.shape[1] < 1:
        raise AtlasError(f"{name} has no columns; pass at least one factor")
    a = a.astype(np.int64)
    if varied:
        single = [j for j in range(a.shape[1]) if np.all(a[:, j] == a[0, j])]
        if single:
            raise AtlasError(
                f"{name} column(s) {single} take a single value, so they carry no information to score; "
                "drop those columns or use examples where they vary"
            )
    return a


def _int_at_least(value, low: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise AtlasError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _labels(column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of one factor column and the column as indices 0..K-1 into them."""
    values, index = np.unique(column, return_inverse=True)
    return values, index.reshape(-1)


# ---- histograms and mutual information ----


def _bin(codes: np.ndarray, low: np.ndarray, high: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bin of each entry on [low, high] per dimension, clipped to 0..bins-1."""
    width = (high - low) / bins
    safe = np.where(width > 0, width, 1.0)  # a constant dimension falls in bin 0
    index = np.floor((codes - low) / safe)
    return np.clip(index, 0, bins - 1).astype(np.int64)


def discretize(codes, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Each code dimension cut into `bins` equal-width bins over its own [min, max] (as numpy's
    histogram does; the maximum falls in the last bin); int (n, d) with values 0..bins-1."""
    codes = _codes(codes)
    bins = _int_at_least(bins, 2, "bins")
    return _bin(codes, codes.min(0), codes.max(0), bins)


def _entropy_of_counts(counts: np.ndarray) -> np.ndarray:
    """Entropy (nats) of the empirical distribution in the last axis of `counts`."""
    total = counts.sum(-1, keepdims=True)
    p = counts / total
    return -np.sum(np.where(counts > 0, p * np.log(np.where(counts > 0, p, 1.0)), 0.0), -1)


def factor_entropies(factors) -> np.ndarray:
    """H(v_k) of each factor's empirical distribution, (k,) nats."""
    a = _as_array(factors)
    n = a.shape[0] if a.ndim else 0
    if n < 2:
        raise AtlasError(f"factors needs at least 2 examples, got {n}")
    factors = _factors(a, n, varied=False)
    return np.array([_entropy_of_counts(np.bincount(_labels(column)[1])) for column in factors.T])


def _mi_from_bins(binned: np.ndarray, factors: np.ndarray, bins: int) -> np.ndarray:
    """Plug-in I(z_i; v_k) from binned codes (n, d) and factors (n, k): one contingency table per
    (dimension, factor), built for all dimensions of one factor at once. (d, k) nats."""
    n, d = binned.shape
    mi = np.empty((d, factors.shape[1]))
    for k, column in enumerate(factors.T):
        _, labels = _labels(column)
        values = int(labels.max()) + 1
        if d * bins * values > MAX_TABLE_CELLS:
            raise AtlasError(
                f"factor {k} has {values} distinct values: its {d} x {bins} x {values} contingency tables exceed "
                f"the limit of {MAX_TABLE_CELLS:,} cells; merge its values into fewer classes or use fewer bins"
            )
        cell = (np.arange(d) * bins)[None, :] + binned  # (n, d): the (dim, bin) row of the table
        joint = np.bincount((cell * values + labels[:, None]).ravel(), minlength=d * bins * values)
        joint = joint.reshape(d, bins, values).astype(np.float64)  # counts c_{z v}
        c_z = joint.sum(2, keepdims=True)
        c_v = joint.sum(1, keepdims=True)
        ratio = np.where(joint > 0, joint * n / np.where(joint > 0, c_z * c_v, 1.0), 1.0)
        mi[:, k] = np.sum(joint / n * np.log(ratio), axis=(1, 2))
    return np.maximum(mi, 0.0)  # rounding can leave -1e-17 where the MI is exactly 0


def mutual_information_matrix(codes, factors, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Plug-in I(z_i; v_k) between each discretised code dimension and each factor, (d, k) nats.

    The plug-in estimate is biased upwards: for independent z_i and v_k it is about
    (bins - 1)(K - 1) / (2n) (2n I is the G statistic, roughly chi-squared with that many degrees
    of freedom), so use n well above bins * K."""
    codes = _codes(codes)
    factors = _factors(factors, codes.shape[0], varied=False)
    return _mi_from_bins(discretize(codes, bins), factors, bins)


def mig(codes, factors, bins: int = DEFAULT_BINS) -> MIGResult:
    """Mutual information gap (Chen et al. 2018; spec seed001 §6 [std]):
        MIG = (1/K) Σ_k [ I(z_{j(k)}; v_k) - I(z_{j'}; v_k) ] / H(v_k),
    with j(k) = argmax_j I(z_j; v_k) and j' the second-best dimension. The I are plug-in estimates on
    `bins` equal-width bins of the codes (e.g. posterior means), as disentanglement_lib computes them;
    the thesis estimates them with q(z_j | x) instead, which needs the whole posterior."""
    codes = _codes(codes)
    if codes.shape[1] < 2:
        raise AtlasError(
            f"MIG needs at least 2 code dimensions (it is a gap between the best and second best), got {codes.shape[1]}"
        )
    factors = _factors(factors, codes.shape[0])
    mi = _mi_from_bins(discretize(codes, bins), factors, bins)
    entropies = np.array([_entropy_of_counts(np.bincount(_labels(column)[1])) for column in factors.T])
    top_two = -np.sort(-mi, axis=0)[:2]  # (2, k)
    per_factor = (top_two[0] - top_two[1]) / entropies
    return MIGResult(score=float(per_factor.mean()), per_factor=per_factor, mi=mi, entropies=entropies)


# ---- DCI ----


def _normalised_entropy(weights: np.ndarray) -> np.ndarray:
    """Entropy of each row of non-negative `weights` normalised to sum 1, in base (row length): 0
    for one-hot rows, 1 for uniform ones. A row of zeros counts as uniform, and a row of length 1
    has entropy 0 (one outcome)."""
    m = weights.shape[1]
    if m == 1:
        return np.zeros(weights.shape[0])
    total = weights.sum(1, keepdims=True)
    p = np.where(total > 0, weights / np.where(total > 0, total, 1.0), 1.0 / m)
    return _entropy_of_counts(p) / np.log(m)


def _train_test(train_codes, train_factors, test_codes, test_factors):
    train_codes = _codes(train_codes, "train_codes")
    test_codes = _codes(test_codes, "test_codes")
    if train_codes.shape[1] != test_codes.shape[1]:
        raise AtlasError(
            f"train_codes have {train_codes.shape[1]} dimensions but test_codes have {test_codes.shape[1]}; "
            "encode both splits with the same model"
        )
    train_factors = _factors(train_factors, train_codes.shape[0], "train_factors", "train_codes")
    test_factors = _factors(test_factors, test_codes.shape[0], "test_factors", "test_codes", varied=False)
    if train_factors.shape[1] != test_factors.shape[1]:
        raise AtlasError(
            f"train_factors have {train_factors.shape[1]} factors but test_factors have {test_factors.shape[1]}; "
            "pass the same factor columns for both splits"
        )
    return train_codes, train_factors, test_codes, test_factors


def dci(train_codes, train_factors, test_codes, test_factors, seed: int = 0) -> DCIResult:
    """Disentanglement, completeness and informativeness (Eastwood & Williams 2018).

    One scikit-learn GradientBoostingClassifier (default settings, as disentanglement_lib) per factor
    predicts v_k from all codes; its feature_importances_ (impurity decrease, columns summing to 1)
    form the importance matrix R (d, k). With P_i. the row i of R normalised to sum 1 and
    ρ_i = Σ_k R_ik / Σ R the share of code i in the total importance,
        D = Σ_i ρ_i (1 - H_k(P_i.)),       C = Σ_k ρ̃_k (1 - H_d(P̃_.k)),
    H_m the entropy in base m and P̃, ρ̃ the same over columns. Informativeness is the mean test
    accuracy over factors (disentanglement_lib's choice; the paper uses a prediction error).

    Gradient boosting was kept over a random forest because a forest's impurity importances give
    every pure-noise dimension a floor (about 0.02 each for 10 codes), pulling D and C of perfect
    codes well below 1. It costs about 2 s per five-valued factor on 2,000 x 10 codes (one core),
    growing with n_train * d * classes; above MAX_DCI_WORK it is refused."""
    train_codes, train_factors, test_codes, test_factors = _train_test(
        train_codes, train_factors, test_codes, test_factors
    )
    seed = _int_at_least(seed, 0, "seed")
    n, d = train_codes.shape
    classes = [len(np.unique(column)) for column in train_factors.T]
    trees = sum(1 if c == 2 else c for c in classes)  # boosting grows one tree per class per stage
    if n * d * trees > MAX_DCI_WORK:
        raise AtlasError(
            f"DCI would boost trees on {n} examples x {d} dims x {trees} trees per stage = {n * d * trees:,}, "
            f"above the limit of {MAX_DCI_WORK:,} (~2 s per 100,000 on one core); pass fewer training examples"
        )
    k = train_factors.shape[1]
    importance = np.zeros((d, k))
    train_accuracy, test_accuracy = np.zeros(k), np.zeros(k)
    for j in range(k):
        model = GradientBoostingClassifier(random_state=seed).fit(train_codes, train_factors[:, j])
        importance[:, j] = np.abs(model.feature_importances_)
        train_accuracy[j] = np.mean(model.predict(train_codes) == train_factors[:, j])
        test_accuracy[j] = np.mean(model.predict(test_codes) == test_factors[:, j])

    total = importance.sum()
    per_code = 1.0 - _normalised_entropy(importance)
    per_factor = 1.0 - _normalised_entropy(importance.T)
    if total > 0:
        disentanglement = float(np.sum(importance.sum(1) / total * per_code))
        completeness = float(np.sum(importance.sum(0) / total * per_factor))
    else:  # no classifier used any code
        disentanglement = completeness = 0.0
    return DCIResult(
        disentanglement=disentanglement,
        completeness=completeness,
        informativeness=float(test_accuracy.mean()),
        importance=importance,
        per_code_disentanglement=per_code,
        per_factor_completeness=per_factor,
        train_accuracy=train_accuracy,
        test_accuracy=test_accuracy,
    )


# ---- SAP ----


def sap(train_codes, train_factors, test_codes, test_factors) -> SAPResult:
    """Separated attribute predictability (Kumar et al. 2018) for discrete factors.

    Entry (i, k) of the matrix is the test accuracy of predicting v_k from code dimension i alone;
    the score is the mean over factors of the best entry minus the second best in its column.

    The one-dimensional classifier cuts dimension i into SAP_BINS equal-width bins over its training
    range (test values outside it go to the end bins) and predicts the most frequent training value
    of v_k in each bin (the overall most frequent one for an empty bin; ties go to the smallest
    value). disentanglement_lib uses a LinearSVC (C = 0.01) instead; one-vs-rest hyperplanes on a
    single dimension cannot carve out the middle values of an ordered factor, so that reaches only
    ~0.6 accuracy on an exact copy of a five-valued factor, and this classifier reaches 1.
    Accuracy is at least about chance for an unrelated dimension, so even perfect codes score
    mean_k (1 - 1/K_k) on balanced independent factors with K_k values."""
    train_codes, train_factors, test_codes, test_factors = _train_test(
        train_codes, train_factors, test_codes, test_factors
    )
    d = train_codes.shape[1]
    if d < 2:
        raise AtlasError(
            f"SAP needs at least 2 code dimensions (it is a gap between the best and second best), got {d}"
        )
    low, high = train_codes.min(0), train_codes.max(0)
    train_bins = _bin(train_codes, low, high, SAP_BINS)  # (n_train, d)
    test_bins = _bin(test_codes, low, high, SAP_BINS)  # (n_test, d)
    rows = np.arange(d) * SAP_BINS
    matrix = np.zeros((d, train_factors.shape[1]))
    for k in range(train_factors.shape[1]):
        values, labels = _labels(train_factors[:, k])
        if d * SAP_BINS * len(values) > MAX_TABLE_CELLS:
            raise AtlasError(
                f"train_factors column {k} has {len(values)} distinct values, too many for SAP's tables; "
                "merge its values into fewer classes"
            )
        cell = (rows[None, :] + train_bins) * len(values) + labels[:, None]
        counts = np.bincount(cell.ravel(), minlength=d * SAP_BINS * len(values)).reshape(d, SAP_BINS, len(values))
        predicted = counts.argmax(2)  # (d, bins) label index per bin
        empty = counts.sum(2) == 0
        predicted[empty] = np.bincount(labels).argmax()
        guess = values[predicted[np.arange(d)[None, :], test_bins]]  # (n_test, d) factor values
        matrix[:, k] = np.mean(guess == test_factors[:, k : k + 1], axis=0)
    top_two = -np.sort(-matrix, axis=0)[:2]
    per_factor = top_two[0] - top_two[1]
    return SAPResult(score=float(per_factor.mean()), matrix=matrix, per_factor=per_factor)


# ---- FactorVAE score ----


def _join(draws: list, rows_each: int):
    """Draws (arrays or tensors, `rows_each` inputs each) joined into one batch of inputs."""
    for x in draws:
        if len(x) != rows_each:
            raise AtlasError(f"draw_with_fixed_factor returned {len(x)} inputs where {rows_each} were asked for")
    if all(isinstance(x, torch.Tensor) for x in draws):
        return torch.cat(draws)
    return np.concatenate([np.asarray(x) for x in draws])


def _encode(encode: Callable, inputs, d: int | None) -> np.ndarray:
    """encode(inputs) as float64 (len(inputs), d), checked."""
    codes = _as_array(encode(inputs)).astype(np.float64)
    rows = len(inputs)
    if codes.ndim != 2 or codes.shape[0] != rows or (d is not None and codes.shape[1] != d):
        want = f"({rows}, {d if d is not None else 'd'})"
        raise AtlasError(f"encode returned codes of shape {codes.shape} for {rows} inputs; it must return {want}")
    if not np.all(np.isfinite(codes)):
        raise AtlasError("encode returned non-finite codes (NaN or inf); check the model and its inputs")
    return codes


def factor_vae_score(
    encode: Callable,
    draw_with_fixed_factor: Callable,
    factor_sizes: Sequence[int],
    n_votes: int = 800,
    batch: int = 64,
    n_var: int = 5000,
    seed: int = 0,
    draw_any: Callable | None = None,
) -> FactorVAEResult:
    """FactorVAE disentanglement score (Kim & Mnih 2018), following disentanglement_lib.

    `encode(inputs) -> (m, d)` codes; `draw_with_fixed_factor(k, n, rng)` n inputs sharing one random
    value of factor k (the others random); `draw_any(n, rng)` n inputs from the data. Without
    `draw_any`, the n_var inputs for the global variances are batches of draw_with_fixed_factor with
    a random factor each: the shared value is itself random, so every input still follows the data
    distribution (inputs in one batch are dependent, which only makes the estimate a little noisier).
    `factor_sizes` gives the number of values of each factor (k = len(factor_sizes)).

    1. s_i² = Var(z_i) over n_var inputs (ddof = 1); dimensions with s_i < PRUNE_STD have collapsed
       and are pruned. The threshold is an absolute std in code units, 0.05 as in disentanglement_lib's
       study configs (its code defaults to 0); Kim & Mnih give no number.
    2. A vote: pick factor k at random, draw `batch` inputs with it fixed, and vote (argmin_i over
       active dims of Var_batch(z_i) / s_i², k): the variance after normalising each code by its
       global std, ddof = 1.
    3. The classifier maps each dimension to the factor with most of its training votes (majority
       vote); accuracies are the share of votes it gets right.
    n_votes votes are drawn: the first half (rounded up) trains the classifier, the rest evaluate it
    (disentanglement_lib draws 10,000 training and 5,000 evaluation votes of batch 64, and 10,000
    inputs for the variances); score = eval_accuracy. With no active dimension every accuracy is 0."""
    sizes = list(factor_sizes) if isinstance(factor_sizes, Sequence | np.ndarray) else None
    if not sizes or any(isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 2 for s in sizes):
        raise AtlasError(
            f"factor_sizes must be a non-empty list of integers >= 2 (values per factor), got {factor_sizes!r}"
        )
    n_votes = _int_at_least(n_votes, 2, "n_votes")
    batch = _int_at_least(batch, 2, "batch (inputs per vote; a variance needs two)")
    n_var = _int_at_least(n_var, 2, "n_var")
    seed = _int_at_least(seed, 0, "seed")
    if n_var + n_votes * batch > MAX_ENCODED_ROWS:
        raise AtlasError(
            f"the FactorVAE score would encode n_var + n_votes * batch = {n_var + n_votes * batch:,} inputs, "
            f"above the limit of {MAX_ENCODED_ROWS:,}; use fewer votes or a smaller batch"
        )
    k = len(sizes)
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _CHUNK_ROWS // batch)  # votes (or batches) encoded in one call

    # global variances (step 1)
    if draw_any is not None:
        inputs = draw_any(n_var, rng)
        if len(inputs) != n_var:
            raise AtlasError(f"draw_any returned {len(inputs)} inputs where n_var = {n_var} were asked for")
        chunks = [inputs[s : s + _CHUNK_ROWS] for s in range(0, n_var, _CHUNK_ROWS)]
    else:
        draws = [draw_with_fixed_factor(int(j), batch, rng) for j in rng.integers(k, size=-(-n_var // batch))]
        chunks = [_join(draws[s : s + per_chunk], batch) for s in range(0, len(draws), per_chunk)]
    first = _encode(encode, chunks[0], None)
    d = first.shape[1]
    codes = np.concatenate([first] + [_encode(encode, chunk, d) for chunk in chunks[1:]])[:n_var]  # (n_var, d)
    global_var = codes.var(0, ddof=1)  # (d,)
    active = np.sqrt(global_var) >= PRUNE_STD
    if not active.any():
        zeros = np.zeros((d, k), dtype=np.int64)
        return FactorVAEResult(0.0, 0.0, 0.0, active, zeros, np.zeros(d, dtype=np.int64))

    # votes (step 2), encoded a chunk of votes at a time
    fixed = rng.integers(k, size=n_votes)  # the factor fixed in each vote
    active_index = np.flatnonzero(active)
    chosen = np.empty(n_votes, dtype=np.int64)  # the dimension each vote picks
    for start in range(0, n_votes, per_chunk):
        factors = fixed[start : start + per_chunk]
        draws = [draw_with_fixed_factor(int(j), batch, rng) for j in factors]
        z = _encode(encode, _join(draws, batch), d).reshape(len(factors), batch, d)  # (votes, batch, d)
        ratio = z[:, :, active].var(1, ddof=1) / global_var[active]  # (votes, active dims)
        chosen[start : start + len(factors)] = active_index[ratio.argmin(1)]

    # majority-vote classifier (step 3)
    n_train = (n_votes + 1) // 2
    votes = np.zeros((d, k), dtype=np.int64)
    np.add.at(votes, (chosen[:n_train], fixed[:n_train]), 1)
    eval_votes = np.zeros((d, k), dtype=np.int64)
    np.add.at(eval_votes, (chosen[n_train:], fixed[n_train:]), 1)
    majority = votes.argmax(1)
    train_accuracy = votes[np.arange(d), majority].sum() / n_train
    eval_accuracy = eval_votes[np.arange(d), majority].sum() / (n_votes - n_train)
    return FactorVAEResult(
        score=float(eval_accuracy),
        train_accuracy=float(train_accuracy),
        eval_accuracy=float(eval_accuracy),
        active_dims=active,
        votes=votes,
        majority=majority,
    )
