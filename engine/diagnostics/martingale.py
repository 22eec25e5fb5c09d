"""Martingale checks: is a sequential predictor's in-context learning Bayesian?
(seed000 ch. 5 and App. D; the formulas are seed000 §4.2, the procedure §4.5.)

A Bayesian predictive is a martingale: imputing future observations from it does not move
its predictions on average (c.i.d., seed000 Def. 5.1). Given J continuation paths
z^(j)_{n+1..n+m} after z_1..z_n (`engine.sequence.sample_paths`):

- `t1`: mean of g(z) over the first half of the paths minus the second half (eq. D.1),
  g = z and, for Gaussian data, g = z^2 (Corollary 5.1 (i));
- `t2_printed`: eq. D.2 exactly as printed in the thesis, lag k >= 2 (at k = 1 it is 0);
- `t2_acf`: the variant the authors' code plots, ACF_{k+1} - ACF_1 (Corollary 5.1 (ii));
- `t3`: the interquartile range of the per-path estimates theta_hat^(j) (eq. 5.10);
- `martingale_check`: all of them against a parametric bootstrap of the conjugate Bayesian
  reference (K replicates of J paths, 2.5%-97.5% quantiles; mean-matched for T1), plus the
  +-0.1/n tolerance band (D.2.3), and a verdict per statistic;
- `fan` and `martingale_posterior`: the data of Fig. 5.1 (Algorithm B);
- `t3_scaling`: T3 against n with Bayes and fractional-Bayes references (Fig. 5.6, Algorithm C).

Everything is batched: statistics take z: (..., J, m) and return (...), so the K bootstrap
replicates are one (K, J, m) tensor, with one outlier mask (K, J) per replicate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from engine.errors import AtlasError
from engine.sequence import (
    BernoulliData,
    GaussianData,
    Paths,
    SequentialPredictor,
    quantize,
    sample_paths,
)
from engine.sequence.conjugate import Reference, reference_model
from engine.sequence.data import sample_observations

TOLERANCE = 0.1  # violations within +-TOLERANCE / n are acceptable (seed000 D.2.3)
LEVEL = 0.95  # bootstrap band: the 2.5% and 97.5% quantiles of the replicates
ACF_EPS = 1e-5  # the authors' guard in the ACF denominator

LABELS = {
    "T1": "T1, g(z) = z (eq. D.1; mean-matched reference)",
    "T1_sq": "T1, g(z) = z^2 (eq. D.1; mean-matched reference)",
    "T2_D2": "T2 as printed (eq. D.2), lag k",
    "T2_acf": "T2 as the authors' code: ACF_{k+1} - ACF_1",
    "T3": "T3: IQR of the per-path means (eq. 5.10)",
}


# ---- outlier paths --------------------------------------------------------------------


def keep_inliers(values: torch.Tensor, within: torch.Tensor | None = None) -> torch.Tensor:
    """The 1.5 IQR rule over the last dimension: values (..., J) -> keep (..., J) bool.

    Only entries in ``within`` (default all) count and can be kept. Never empty: where no
    entry would be kept, every entry of ``within`` is.
    """
    probs = torch.tensor([0.25, 0.75], dtype=values.dtype)
    if within is None:
        within = torch.ones_like(values, dtype=torch.bool)
        q = torch.quantile(values, probs, dim=-1, keepdim=True)
    else:
        q = torch.nanquantile(values.masked_fill(~within, float("nan")), probs, dim=-1, keepdim=True)
    iqr = q[1] - q[0]
    keep = within & (values >= q[0] - 1.5 * iqr) & (values <= q[1] + 1.5 * iqr)
    return torch.where(keep.any(-1, keepdim=True), keep, within)


def path_inliers(z: torch.Tensor) -> torch.Tensor:
    """seed000 §4.2: drop paths whose a_j = mean_i |z^(j)_{n+i}| is outside
    [Q1 - 1.5 IQR, Q3 + 1.5 IQR]. z: (..., J, m) -> keep (..., J).

    The rule is the same for m a_j (it commutes with scaling), which is computed instead,
    in float64: for Bernoulli paths m a_j is a whole number, the quartiles fall on
    quarters and 1.5 IQR on eighths, all exact, so a path lying on a bound is kept
    whatever the rounding of a_j would have been."""
    return keep_inliers(torch.linalg.vector_norm(z.double(), 1, dim=-1))


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum over the last dimension of a * b, without the (K, J, m) product in memory."""
    return torch.einsum("...i,...i->...", a, b)


def _mean_over_paths(x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """x: (..., J) -> mean over the kept paths (...)."""
    if keep is None:
        return x.mean(-1)
    w = keep.to(x.dtype)
    return (x * w).sum(-1) / w.sum(-1)


# ---- the statistics -------------------------------------------------------------------


def t1(z: torch.Tensor, keep: torch.Tensor | None = None, square: bool = False) -> torch.Tensor:
    """seed000 eq. D.1: T_{1,g} = (2 / (J m)) sum_j sum_{i=1}^{m/2} [g(z_{n+i}) - g(z_{n+i+m/2})],
    g = z, or z^2 with ``square``. For odd m the second half has one more step (as the
    authors' code). z: (..., J, m) -> (...); negative means upward drift."""
    half, m = z.shape[-1] // 2, z.shape[-1]
    first, second = z[..., :half], z[..., half:]
    if square:
        per_path = _dot(first, first) / half - _dot(second, second) / (m - half)
    else:
        per_path = first.sum(-1) / half - second.sum(-1) / (m - half)
    return _mean_over_paths(per_path, keep)


def t2_printed(z: torch.Tensor, k: int = 2, keep: torch.Tensor | None = None) -> torch.Tensor:
    """seed000 eq. D.2 as printed: T_{2,k} = (1 / (J m)) sum_j sum_{i=1}^{m-k-1}
    (z_{n+i+1} - z_{n+i+k}) z_{n+i}. z: (..., J, m) -> (...)."""
    m = z.shape[-1]
    if k < 2:
        raise AtlasError(f"the printed T2 (eq. D.2) is identically 0 at k = 1; use k >= 2, got k = {k}")
    terms = m - k - 1
    if terms < 1:
        raise AtlasError(f"the printed T2 at lag k = {k} needs paths of m >= {k + 2} steps, got m = {m}")
    # 0-based: z[..., i] = z_{n+i+1}, so the sum runs over i = 0..terms-1
    head = z[..., :terms]
    per_path = (_dot(z[..., 1 : terms + 1], head) - _dot(z[..., k : k + terms], head)) / m
    return _mean_over_paths(per_path, keep)


def acf(z: torch.Tensor, lags: int, keep: torch.Tensor | None = None) -> torch.Tensor:
    """The authors' ACF-like ratio (bayes_icl plotting.marginal_acf), l = 1..lags:
    ACF_l = mean over paths of [mean_i z_{n+i+l} z_{n+i}] (per-lag 1.5 IQR outliers removed)
            / (1e-5 + mean of z^2 over positions l..m-l-1).
    z: (..., J, m) -> (..., lags)."""
    m = z.shape[-1]
    if m <= 2 * lags:
        raise AtlasError(f"the ACF up to lag {lags} needs paths of m > {2 * lags} steps, got m = {m}")
    if keep is None:
        keep = torch.ones(z.shape[:-1], dtype=torch.bool)
    square_sum = _dot(z, z)  # (..., J)
    out = []
    for lag in range(1, lags + 1):
        per_path = _dot(z[..., lag:], z[..., :-lag]) / (m - lag)  # (..., J)
        numerator = _mean_over_paths(per_path, keep_inliers(per_path, within=keep))
        head, tail = z[..., :lag], z[..., m - lag :]
        middle = (square_sum - _dot(head, head) - _dot(tail, tail)) / (m - 2 * lag)  # positions lag..m-lag-1
        out.append(numerator / (ACF_EPS + _mean_over_paths(middle, keep)))
    return torch.stack(out, -1)


def t2_acf(z: torch.Tensor, k: int = 1, keep: torch.Tensor | None = None) -> torch.Tensor:
    """T2 as the authors' code plots it (bayes_icl multi_acf_diff): ACF_{k+1} - ACF_1, k >= 1.
    z: (..., J, m) -> (...)."""
    if k < 1:
        raise AtlasError(f"the ACF-difference T2 needs k >= 1, got k = {k}")
    a = acf(z, k + 1, keep)
    return a[..., k] - a[..., 0]


def iqr(x: torch.Tensor) -> torch.Tensor:
    """Q_0.75 - Q_0.25 over the last dimension (linear interpolation, as numpy)."""
    q = torch.quantile(x, torch.tensor([0.25, 0.75], dtype=x.dtype), dim=-1)
    return q[1] - q[0]


def t3(z: torch.Tensor) -> torch.Tensor:
    """seed000 eq. 5.10: T3 = IQR over paths of theta_hat^(j), the MLE from path j's m
    imputed samples (Bernoulli and Gaussian: the path mean). z: (..., J, m) -> (...)."""
    return iqr(z.sum(-1) / z.shape[-1])


# ---- the Bayesian reference -----------------------------------------------------------


def _obs_sd(reference: Reference) -> float:
    return reference.obs_var**0.5 if reference.family == "gaussian" else 1.0


def reference_paths(
    reference: Reference,
    posterior,
    replicates: int,
    paths: int,
    m: int,
    quantum: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Bootstrap paths: theta^(k, j) ~ posterior, then m i.i.d. draws (equal in law to
    sequential predictive sampling, seed000 §4.2). -> (K, J, m)"""
    theta = posterior.sample((replicates, paths), generator).to(torch.get_default_dtype())  # (K, J)
    z = sample_observations(reference.family, theta, m, generator, sd=_obs_sd(reference))
    return quantize(z, quantum)


def reference_path_means(
    reference: Reference,
    posterior,
    shape: tuple[int, ...],
    m: int,
    quantum: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The mean of m i.i.d. draws per theta ~ posterior, without drawing the paths when the
    law is known: Binomial(m, theta) / m, or N(theta, obs_var / m) (unquantised Gaussian).
    -> (*shape, *posterior batch)"""
    theta = posterior.sample(shape, generator).to(torch.get_default_dtype())
    if reference.family == "bernoulli":
        return torch.binomial(torch.full_like(theta, m), theta, generator=generator) / m
    if quantum is None:
        return theta + _obs_sd(reference) / math.sqrt(m) * torch.randn(theta.shape, generator=generator)
    z = sample_observations("gaussian", theta, m, generator, sd=_obs_sd(reference))
    return quantize(z, quantum).mean(-1)


def _t1_bernoulli_replicates(
    posterior, replicates: int, paths: int, m: int, generator: torch.Generator | None
) -> torch.Tensor:
    """T1 replicates for 0/1 data from the half sums, Binomial(m/2, theta) each: the same
    law as drawing (K, J, m) reference paths, and a_j = mean |z| is the path mean. -> (K,)"""
    theta = posterior.sample((replicates, paths), generator).to(torch.get_default_dtype())  # (K, J)
    half = m // 2
    first = torch.binomial(torch.full_like(theta, half), theta, generator=generator)
    second = torch.binomial(torch.full_like(theta, m - half), theta, generator=generator)
    keep = keep_inliers((first + second) / m)
    return _mean_over_paths(first / half - second / (m - half), keep)


def _single(paths: Paths) -> None:
    if paths.z.dim() != 2:
        raise AtlasError(
            f"the checks take the paths of one observed sequence, z: (J, m); got {tuple(paths.z.shape)}. "
            "Index the batch (sample_paths on a 1-d observed tensor)."
        )


def _reference_for(paths: Paths, reference: Reference | None) -> Reference:
    reference = reference or reference_model(paths.family)
    if reference.family != paths.family:
        raise AtlasError(f"a {reference.family} reference cannot check {paths.family} paths; choose a matching one")
    return reference


# ---- the check ------------------------------------------------------------------------


@dataclass
class Verdict:
    """One statistic against its bootstrap band; flagged when outside [low - tol, high + tol]."""

    statistic: str
    label: str
    value: float
    low: float
    high: float
    tolerance: float
    flagged: bool


def _verdict(key: str, label: str, value: torch.Tensor, replicates: torch.Tensor, tolerance: float) -> Verdict:
    q = (1 - LEVEL) / 2
    band = torch.quantile(replicates.double(), torch.tensor([q, 1 - q], dtype=torch.float64))
    low, high, v = float(band[0]), float(band[1]), float(value)
    return Verdict(key, label, v, low, high, tolerance, bool(v < low - tolerance or v > high + tolerance))


@dataclass
class MartingaleCheck:
    """The verdicts of one check and the bootstrap replicates behind them."""

    n: int
    m: int
    paths: int
    kept: int  # paths kept by the outlier rule
    verdicts: dict[str, Verdict]
    replicates: dict[str, torch.Tensor]  # statistic -> (K,)

    @property
    def flagged(self) -> bool:
        return any(v.flagged for v in self.verdicts.values())

    def table(self) -> list[dict]:
        """One row per statistic, for a verdict table."""
        return [
            {
                "statistic": v.label,
                "value": v.value,
                "low": v.low,
                "high": v.high,
                "tolerance": v.tolerance,
                "violation": v.flagged,
            }
            for v in self.verdicts.values()
        ]


def martingale_check(
    paths: Paths,
    replicates: int = 600,
    *,
    reference: Reference | None = None,
    k_printed: int = 2,
    k_acf: int = 1,
    statistics: tuple[str, ...] | None = None,
    generator: torch.Generator | None = None,
) -> MartingaleCheck:
    """T1 (g = z; and g = z^2 for Gaussian), T2 (both forms) and T3 for ``paths`` (one
    observed sequence, z: (J, m)) against K = ``replicates`` bootstrap replicates of the
    conjugate reference (seed000 §4.5, Algorithm A steps 3-5). T1's reference posterior is
    mean-matched (built as if z_1..n had the mean of the model's kept paths); T2's and T3's
    is the posterior given z_1..n. T1 and T2 get the +-0.1/n tolerance, T3 none.
    ``statistics``: a subset of `LABELS` to compute (default: all; T1_sq only for Gaussian)."""
    _single(paths)
    reference = _reference_for(paths, reference)
    default = [key for key in LABELS if not (key == "T1_sq" and paths.family == "bernoulli")]  # z^2 = z for 0/1
    statistics = list(statistics or default)
    unknown = set(statistics) - set(LABELS)
    if unknown:
        raise AtlasError(f"unknown statistics {sorted(unknown)}; choose from {list(LABELS)}")
    if replicates < 20:
        raise AtlasError(f"a 95% bootstrap band needs at least 20 replicates (600 is usual), got {replicates}")
    z, n, (num_paths, m) = paths.z, paths.n, paths.z.shape
    keep = path_inliers(z)  # (J,)
    tol = TOLERANCE / n

    stats = {
        "T1": (lambda x, k: t1(x, k), "mean-matched", tol),
        "T1_sq": (lambda x, k: t1(x, k, square=True), "mean-matched", tol),
        "T2_D2": (lambda x, k: t2_printed(x, k_printed, k), "posterior", tol),
        "T2_acf": (lambda x, k: t2_acf(x, k_acf, k), "posterior", tol),
        "T3": (lambda x, k: t3(x), "posterior", 0.0),
    }
    posteriors = {
        "mean-matched": lambda: reference.posterior_from_stats(float(n), n * _mean_over_paths(z.mean(-1), keep)),
        "posterior": lambda: reference.posterior(paths.observed),
    }
    boot = {}  # which posterior -> (paths (K, J, m), keep (K, J)), drawn only when needed
    verdicts, reps = {}, {}
    for key in statistics:
        stat, which, tolerance = stats[key]
        if key == "T1" and paths.family == "bernoulli":
            reps[key] = _t1_bernoulli_replicates(posteriors[which](), replicates, num_paths, m, generator)
            verdicts[key] = _verdict(key, LABELS[key], stat(z, keep), reps[key], tolerance)
            continue
        if which not in boot:
            z_boot = reference_paths(reference, posteriors[which](), replicates, num_paths, m, paths.quantum, generator)
            boot[which] = (z_boot, path_inliers(z_boot))
        reps[key] = stat(*boot[which])
        label = LABELS[key] + (f" = {k_printed}" if key == "T2_D2" else f", k = {k_acf}" if key == "T2_acf" else "")
        verdicts[key] = _verdict(key, label, stat(z, keep), reps[key], tolerance)
    return MartingaleCheck(n, m, num_paths, int(keep.sum()), verdicts, reps)


# ---- Fig. 5.1: the Doob fan and the martingale posterior ------------------------------


@dataclass
class Fan:
    """Predictive trajectories theta_{n+i}, i = 0..m (Algorithm B): a martingale's
    cross-path mean is flat; the reference posterior of theta given z_1..n beside it."""

    trajectories: torch.Tensor  # (show, m + 1)
    mean: torch.Tensor  # (m + 1,) over all J paths
    posterior_mean: float
    posterior_low: float
    posterior_high: float


def fan(paths: Paths, show: int = 20, reference: Reference | None = None) -> Fan:
    _single(paths)
    posterior = _reference_for(paths, reference).posterior(paths.observed)
    low, high = posterior.interval(LEVEL)
    return Fan(
        trajectories=paths.predictive_mean[:show],
        mean=paths.predictive_mean.mean(0),
        posterior_mean=float(posterior.mean),
        posterior_low=float(low),
        posterior_high=float(high),
    )


@dataclass
class MartingalePosterior:
    """Samples for the histograms of plot_approxMP: the model's path means (approximate
    martingale-posterior samples), and the same transform of the reference posterior given
    z_1..n and of the mean-matched one; the IQR of each."""

    model: torch.Tensor  # (J,)
    reference: torch.Tensor  # (samples,)
    mean_matched: torch.Tensor  # (samples,)

    @property
    def iqr(self) -> dict[str, float]:
        return {name: float(iqr(getattr(self, name))) for name in ("model", "reference", "mean_matched")}


def martingale_posterior(
    paths: Paths, samples: int = 2000, reference: Reference | None = None, generator: torch.Generator | None = None
) -> MartingalePosterior:
    """theta_hat^(j) = mean of path j against theta ~ posterior, m draws, mean (seed000 §4.5)."""
    _single(paths)
    reference = _reference_for(paths, reference)
    model = paths.z.mean(-1)
    matched = reference.posterior_from_stats(float(paths.n), paths.n * model.mean())
    draw = lambda post: reference_path_means(reference, post, (samples,), paths.m, paths.quantum, generator)  # noqa: E731
    return MartingalePosterior(model, draw(reference.posterior(paths.observed)), draw(matched))


# ---- Fig. 5.6: T3 against n -----------------------------------------------------------


@dataclass
class T3Scaling:
    """T3 per n and run for the model, and bootstrap replicates of T3 for each reference
    ("Bayes", "alpha=0.5", ...: the posterior given z_1..n with n_ref = alpha n)."""

    ns: list[int]
    ms: list[int]
    model: torch.Tensor  # (len(ns), runs)
    references: dict[str, torch.Tensor]  # name -> (len(ns), runs, K)

    def curve(self, name: str = "model") -> torch.Tensor:
        """Median over runs, (len(ns),); a reference's per-run value is its median over K."""
        per_run = self.model if name == "model" else self.references[name].median(-1).values
        return per_run.median(-1).values

    def band(self, name: str = "Bayes") -> tuple[torch.Tensor, torch.Tensor]:
        """The per-run 2.5%-97.5% band of a reference, each (len(ns), runs)."""
        q = (1 - LEVEL) / 2
        b = torch.quantile(self.references[name], torch.tensor([q, 1 - q], dtype=self.model.dtype), dim=-1)
        return b[0], b[1]

    @property
    def flagged(self) -> torch.Tensor:
        """(len(ns), runs) bool: the model's T3 outside the Bayes band."""
        low, high = self.band("Bayes")
        return (self.model < low) | (self.model > high)


def t3_scaling(
    predictor: SequentialPredictor,
    data,
    ns: tuple[int, ...] = (20, 50, 100, 200, 400),
    runs: int = 9,
    paths: int = 200,
    m_ratio: float = 0.5,
    replicates: int = 500,
    alphas: tuple[float, ...] = (0.5, 2.0),
    *,
    reference: Reference | None = None,
    quantum: float | None = None,
    generator: torch.Generator | None = None,
) -> T3Scaling:
    """seed000 §4.5 Algorithm C: for each n, ``runs`` fresh z_1..n ~ ``data`` (a data model
    with ``family`` and ``sample(n, generator)``), J paths of m = m_ratio n steps in the
    given order (no permutation), T3 = IQR of the path means; references from the Bayes
    posterior and the alpha-fractional ones."""
    if data.family != predictor.family:
        raise AtlasError(f"{data.family} data cannot be continued by a {predictor.family} predictor")
    reference = reference or reference_model(data.family)
    ms = [max(2, round(m_ratio * n)) for n in ns]
    model, refs = [], {"Bayes": [], **{f"alpha={a:g}": [] for a in alphas}}
    for n, m in zip(ns, ms):
        observed = data.sample(runs * n, generator).reshape(runs, n)
        z = sample_paths(predictor, observed, m, paths, permute=False, quantum=quantum, generator=generator).z
        model.append(t3(z))  # (runs,)
        for name, ref in [("Bayes", reference), *[(f"alpha={a:g}", replace(reference, alpha=a)) for a in alphas]]:
            means = reference_path_means(ref, ref.posterior(observed), (replicates, paths), m, quantum, generator)
            refs[name].append(iqr(means.movedim(1, -1)).T)  # (K, J, runs) -> (runs, K)
    return T3Scaling(list(ns), ms, torch.stack(model), {k: torch.stack(v) for k, v in refs.items()})


# ---- Fig. 5.3: T1 and T2 across theta* and m ------------------------------------------


def check_across(
    predictor: SequentialPredictor,
    thetas: tuple[float, ...],
    n: int,
    ms: tuple[int, ...],
    paths: int = 200,
    replicates: int = 300,
    *,
    statistics: tuple[str, ...] = ("T1", "T2_acf"),
    sd: float = 1.0,
    quantum: float | None = None,
    generator: torch.Generator | None = None,
) -> list[dict]:
    """seed000 Fig. 5.3 / Algorithm A step 6: for every theta* one observed z_1..n from the
    truth, then for every m a check of ``statistics`` on J fresh paths. One row per
    (theta*, m, statistic) with the value, its 95% band, the tolerance and the verdict."""
    rows = []
    for theta in thetas:
        data = BernoulliData(theta) if predictor.family == "bernoulli" else GaussianData(theta, sd)
        observed = data.sample(n, generator)
        for m in ms:
            p = sample_paths(predictor, observed, m, paths, quantum=quantum, generator=generator)
            check = martingale_check(p, replicates, statistics=statistics, generator=generator)
            for key, v in check.verdicts.items():
                rows.append(
                    {
                        "theta": theta,
                        "m": m,
                        "statistic": key,
                        "label": v.label,
                        "value": v.value,
                        "low": v.low,
                        "high": v.high,
                        "tolerance": v.tolerance,
                        "flagged": v.flagged,
                    }
                )
    return rows
