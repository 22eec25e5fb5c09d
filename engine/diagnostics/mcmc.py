"""MCMC convergence diagnostics on plain numpy arrays (Vehtari et al. 2021, "Rank-
normalization, folding, and localization: an improved R-hat", Bayesian Analysis 16(2)).

Every function takes draws shaped (chains, draws) or (chains, draws, dim) and returns a
float or a (dim,) array. These are extra diagnostics: the HH-VAEM thesis reports none of
them (seed002 §3), its chains being short learned samplers, not run to stationarity.

- `rhat`:     rank-normalised split R-hat, the max of the bulk and the folded (tail) value;
              below 1.01 is the usual threshold (anchors B6);
- `ess_bulk`: ESS of the rank-normalised split chains;
- `ess_tail`: the smaller ESS of the indicators I(x <= q_5%) and I(x <= q_95%);
- `mcse_mean`: sd / sqrt(ESS of the split chains themselves), the Monte Carlo standard
              error of the posterior mean.

Tested against ArviZ (tests/test_mcmc_diagnostics.py).
"""

from __future__ import annotations

import numpy as np
from scipy import fft, stats

from engine.errors import AtlasError


def _as_draws(x, min_chains: int = 1) -> np.ndarray:
    """(chains, draws) or (chains, draws, dim) -> float array (chains, draws, dim)."""
    a = np.asarray(x, dtype=float)
    if a.ndim not in (2, 3):
        raise AtlasError(f"MCMC draws must be shaped (chains, draws) or (chains, draws, dim), got {a.shape}")
    if a.shape[0] < min_chains:
        raise AtlasError(f"this diagnostic needs at least {min_chains} chains, got {a.shape[0]}")
    if a.shape[1] < 4:
        raise AtlasError(f"MCMC diagnostics need at least 4 draws per chain, got {a.shape[1]}")
    return a if a.ndim == 3 else a[..., None]


def _per_dim(fn, x, min_chains: int = 1):
    a = _as_draws(x, min_chains)
    out = np.array([fn(a[:, :, j]) for j in range(a.shape[2])])
    return float(out[0]) if np.ndim(x) == 2 else out


def _split(a: np.ndarray) -> np.ndarray:
    """(chains, draws) -> (2 chains, draws // 2): each chain's first and last halves."""
    half = a.shape[1] // 2
    return np.concatenate([a[:, :half], a[:, -half:]], axis=0)


def _z_scale(a: np.ndarray) -> np.ndarray:
    """Rank-normalise pooled draws: Phi^-1((r - 3/8) / (S + 1/4)) (Vehtari et al. eq. 14)."""
    r = stats.rankdata(a, method="average").reshape(a.shape)
    return stats.norm.ppf((r - 0.375) / (a.size + 0.25))


def _rhat_basic(a: np.ndarray) -> float:
    """sqrt(var+ / W) with var+ = (n-1)/n W + B/n (Gelman et al. BDA3 eq. 11.3-11.4)."""
    n = a.shape[1]
    between = n * np.var(a.mean(axis=1), ddof=1)
    within = np.mean(np.var(a, axis=1, ddof=1))
    return float(np.sqrt((between / within + n - 1) / n))


def autocovariance(x, axis: int = -1) -> np.ndarray:
    """Biased autocovariance for every lag along `axis`, computed by FFT (zero-padded)."""
    a = np.asarray(x, dtype=float)
    n = a.shape[axis]
    a = a - a.mean(axis=axis, keepdims=True)
    m = fft.next_fast_len(2 * n)
    f = np.fft.rfft(a, n=m, axis=axis)
    acov = np.fft.irfft(f * np.conjugate(f), n=m, axis=axis)
    return np.take(acov, np.arange(n), axis=axis) / n


def _ess_basic(a: np.ndarray) -> float:
    """ESS of (chains, draws) with Geyer's initial monotone sequence on the multi-chain
    autocorrelation (Vehtari et al. eqs. 10-13)."""
    chains, n = a.shape
    if np.ptp(a) < np.finfo(float).resolution:
        return float(a.size)
    acov = autocovariance(a, axis=1)
    mean_var = acov[:, 0].mean() * n / (n - 1)
    var_plus = mean_var * (n - 1) / n
    if chains > 1:
        var_plus += np.var(a.mean(axis=1), ddof=1)
    rho = 1.0 - (mean_var - acov.mean(axis=0)) / var_plus  # (draws,)
    rho[0] = 1.0
    kept = np.zeros(n)
    kept[:2] = rho[:2]
    # Geyer's initial positive sequence: keep pairs while rho_{2t} + rho_{2t+1} > 0
    t = 1
    even, odd = 1.0, rho[1]
    while t < n - 3 and even + odd > 0:
        even, odd = rho[t + 1], rho[t + 2]
        if even + odd >= 0:
            kept[t + 1], kept[t + 2] = even, odd
        t += 2
    max_t = t - 2
    if even > 0:
        kept[max_t + 1] = even
    # ... made monotone
    t = 1
    while t <= max_t - 2:
        if kept[t + 1] + kept[t + 2] > kept[t - 1] + kept[t]:
            kept[t + 1] = kept[t + 2] = (kept[t - 1] + kept[t]) / 2
        t += 2
    tau = -1.0 + 2.0 * kept[: max_t + 1].sum() + kept[max_t + 1 : max_t + 2].sum()
    tau = max(tau, 1.0 / np.log10(a.size))
    return float(a.size / tau)


def rhat(x) -> float | np.ndarray:
    """Rank-normalised split R-hat: max(R-hat of z-scaled split chains, R-hat of their
    folded |x - median| z-scores) (Vehtari et al. 2021, §4.2). Needs 2 or more chains."""

    def one(a):
        s = _split(a)
        return max(_rhat_basic(_z_scale(s)), _rhat_basic(_z_scale(np.abs(s - np.median(s)))))

    return _per_dim(one, x, min_chains=2)


def ess_bulk(x) -> float | np.ndarray:
    """Bulk ESS: the ESS of rank-normalised split chains (Vehtari et al. 2021, §4.3)."""
    return _per_dim(lambda a: _ess_basic(_z_scale(_split(a))), x)


def ess_tail(x, prob: tuple[float, float] = (0.05, 0.95)) -> float | np.ndarray:
    """Tail ESS: min over the 5% and 95% quantiles of the ESS of I(x <= q) (§4.3)."""

    def one(a):
        return min(_ess_basic(_split((a <= np.quantile(a, p)).astype(float))) for p in prob)

    return _per_dim(one, x)


def mcse_mean(x) -> float | np.ndarray:
    """Monte Carlo standard error of the posterior mean, sd / sqrt(ESS), with the ESS of the
    split chains without rank normalisation."""
    return _per_dim(lambda a: np.std(a, ddof=1) / np.sqrt(_ess_basic(_split(a))), x)
