"""MCMC diagnostics: our implementation against ArviZ (0.x API) and against known truths."""

from __future__ import annotations

import arviz as az
import numpy as np
import pytest

from engine.diagnostics import mcmc
from engine.errors import AtlasError


def ar1(phi: float, chains: int = 4, draws: int = 1001, dim: int | None = None, seed: int = 0) -> np.ndarray:
    """Stationary AR(1) chains x_t = phi x_{t-1} + e_t with unit marginal variance."""
    rng = np.random.default_rng(seed)
    shape = (chains, draws) if dim is None else (chains, draws, dim)
    e = rng.standard_normal(shape) * np.sqrt(1 - phi**2)
    x = np.empty(shape)
    x[:, 0] = rng.standard_normal(shape[:1] + shape[2:])
    for t in range(1, draws):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    return x


@pytest.mark.parametrize("phi", [0.0, 0.6, 0.95, -0.5])
def test_matches_arviz(phi):
    x = ar1(phi, seed=int(10 * abs(phi)))
    x[1] += 0.2  # one chain slightly off, so R-hat is not trivially 1
    assert mcmc.rhat(x) == pytest.approx(az.rhat(x, method="rank"), rel=1e-10)
    assert mcmc.ess_bulk(x) == pytest.approx(az.ess(x, method="bulk"), rel=1e-10)
    assert mcmc.ess_tail(x) == pytest.approx(az.ess(x, method="tail"), rel=1e-10)
    assert mcmc.mcse_mean(x) == pytest.approx(az.mcse(x, method="mean"), rel=1e-10)


def test_vector_draws_are_per_dimension():
    x = ar1(0.5, dim=3, seed=3)
    r = mcmc.rhat(x)
    assert r.shape == (3,)
    for j in range(3):
        assert r[j] == pytest.approx(az.rhat(x[:, :, j]), rel=1e-10)
        assert mcmc.ess_bulk(x)[j] == pytest.approx(az.ess(x[:, :, j], method="bulk"), rel=1e-10)


def test_ess_and_mcse_of_ar1_match_theory():
    """ESS of AR(1) is N (1 - phi) / (1 + phi); with unit variance the MCSE of the mean is
    1 / sqrt(ESS)."""
    phi = 0.8
    x = ar1(phi, chains=8, draws=4000, seed=5)
    expected = x.shape[0] * x.shape[1] * (1 - phi) / (1 + phi)
    assert mcmc.ess_bulk(x) == pytest.approx(expected, rel=0.15)
    assert mcmc.mcse_mean(x) == pytest.approx(expected**-0.5, rel=0.08)


def test_rhat_flags_chains_that_disagree():
    good = ar1(0.3, seed=7)
    assert mcmc.rhat(good) < 1.01
    bad = good.copy()
    bad[0] += 1.0
    assert mcmc.rhat(bad) > 1.05
    wide = good.copy()
    wide[0] *= 3.0  # same mean, different spread: the folded (tail) R-hat catches it
    assert mcmc.rhat(wide) > 1.05


def test_bad_inputs_raise_atlas_error():
    with pytest.raises(AtlasError, match="at least 2 chains"):
        mcmc.rhat(np.zeros((1, 100)))
    with pytest.raises(AtlasError, match="chains, draws"):
        mcmc.ess_bulk(np.zeros(100))
    with pytest.raises(AtlasError, match="4 draws"):
        mcmc.ess_bulk(np.zeros((2, 3)))
