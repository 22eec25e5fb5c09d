"""Martingale checks (engine.diagnostics.martingale) against independent truths:
hand-written loops of the printed formulas and of the authors' numpy code, analytic
limits, and the flag rates seed000 §4.5 / issue 7 demand over many replications."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from engine.diagnostics.martingale import (
    acf,
    fan,
    keep_inliers,
    martingale_check,
    martingale_posterior,
    path_inliers,
    t1,
    t2_acf,
    t2_printed,
    t3,
    t3_scaling,
)
from engine.errors import AtlasError
from engine.sequence import BernoulliData, BetaBernoulli, Biased, GaussianData, NormalNormal, sample_paths

J = 200


@pytest.fixture(autouse=True)
def one_thread():
    """Many small tensor operations: one thread avoids OpenMP's spin-waiting on a busy
    machine (the statistics do not depend on the thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---- the statistics against loops over the printed formulas and the authors' code ----


def _remove_outliers_1d(a):  # bayes_icl plotting.remove_outliers_1d
    q1, q3 = np.quantile(a, [0.25, 0.75])
    iqr = q3 - q1
    return a[(q1 - 1.5 * iqr <= a) & (a <= q3 + 1.5 * iqr)]


def _authors_acf_diff(paths, kmax):  # bayes_icl plotting.marginal_acf / multi_acf_diff
    ret = []
    for i in range(1, kmax + 1):
        t = _remove_outliers_1d((paths[:, i:] * paths[:, :-i]).mean(1))
        ret.append(t.mean() / (1e-5 + (paths[:, i:-i] ** 2).mean()))
    return [ret[i] - ret[0] for i in range(1, kmax)]


def test_statistics_match_the_formulas_written_as_loops():
    z = torch.randn(7, 12, generator=gen(1)).double()
    zn = z.numpy()
    J_, m = zn.shape
    # eq. D.1, g = z and z^2, m even
    for g in (lambda x: x, lambda x: x * x):
        expected = 2 / (J_ * m) * sum(g(zn[j, i]) - g(zn[j, i + m // 2]) for j in range(J_) for i in range(m // 2))
        assert float(t1(z, square=g(2.0) == 4.0)) == pytest.approx(expected)
    # eq. D.2 as printed, 1-based i = 1..m-k-1: (z_{n+i+1} - z_{n+i+k}) z_{n+i}
    for k in (2, 3):
        expected = sum((zn[j, i] - zn[j, i + k - 1]) * zn[j, i - 1] for j in range(J_) for i in range(1, m - k)) / (
            J_ * m
        )
        assert float(t2_printed(z, k)) == pytest.approx(expected)
    # the authors' ACF difference, all five lags
    ours = [float(t2_acf(z, k)) for k in range(1, 5)]
    assert ours == pytest.approx(_authors_acf_diff(zn, 5), rel=1e-6)
    assert float(t3(z)) == pytest.approx(np.quantile(zn.mean(1), 0.75) - np.quantile(zn.mean(1), 0.25))


def test_statistics_are_batched_over_replicates():
    z = (torch.rand(5, 40, 30, generator=gen(2)) < 0.4).float()  # (K, J, m)
    keep = path_inliers(z)
    for stat in (lambda x, k: t1(x, k), lambda x, k: t2_printed(x, 2, k), lambda x, k: t2_acf(x, 1, k)):
        batched = stat(z, keep)
        assert torch.allclose(batched, torch.stack([stat(z[b], keep[b]) for b in range(5)]))
    assert acf(z, 3, keep).shape == (5, 3)


def test_outlier_removal_follows_the_rule_and_is_never_empty():
    a = torch.tensor([0.1, 0.2, 0.2, 0.3, 5.0])
    assert keep_inliers(a).tolist() == [True, True, True, True, False]
    # all-zero Bernoulli lag products but one (seed000 §4.5 pitfall): something is kept
    products = torch.zeros(3, 50)
    products[:, 0] = 1.0
    assert keep_inliers(products).any(-1).all()
    # a mask that leaves nothing inside the fences falls back to the mask itself
    within = torch.zeros(50, dtype=torch.bool)
    within[[0, 1]] = True
    assert keep_inliers(torch.arange(50.0), within)[[0, 1]].all()
    z = torch.zeros(J, 10)
    z[:3] = 1.0  # three paths of ones among zeros: outliers by the 1.5 IQR rule
    assert int(path_inliers(z).sum()) == J - 3


def test_a_bernoulli_path_on_the_fence_is_kept_whatever_the_rounding():
    """Path means of Bernoulli paths are multiples of 1/m, so paths often lie exactly on
    Q1 - 1.5 IQR or Q3 + 1.5 IQR; the closed interval must hold exactly. Checked against
    the rule computed in exact rational arithmetic on 3,000 random path sets."""
    rng = np.random.default_rng(0)
    on_fence = 0
    for _ in range(3000):
        m, paths = int(rng.choice([3, 5, 7, 10, 20])), int(rng.choice([4, 5, 8, 9]))
        sums = rng.integers(0, m + 1, paths)
        z = torch.from_numpy((np.arange(m) < sums[:, None]).astype(np.float32))  # (J, m), sum_j ones
        means = [Fraction(int(s), m) for s in sums]
        q1, q3 = (_exact_quantile(means, p) for p in (Fraction(1, 4), Fraction(3, 4)))
        low, high = q1 - Fraction(3, 2) * (q3 - q1), q3 + Fraction(3, 2) * (q3 - q1)
        exact = [low <= a <= high for a in means]
        on_fence += any(a in (low, high) for a in means)
        assert path_inliers(z).tolist() == (exact if any(exact) else [True] * paths), (m, sums.tolist())
    assert on_fence > 100  # the case the test is about does occur


def _exact_quantile(values: list[Fraction], p: Fraction) -> Fraction:
    """numpy's default (linear) quantile in rational arithmetic."""
    ordered = sorted(values)
    position = p * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (position - below) * (ordered[above] - ordered[below])


# ---- flag rates over replications (issue 7) ------------------------------------------


def _t1_flag_rate(predictor, theta, n, m, runs, seed, replicates=300):
    g = gen(seed)
    flags = 0
    for _ in range(runs):
        paths = sample_paths(predictor, BernoulliData(theta).sample(n, g), m, J, generator=g)
        flags += martingale_check(paths, replicates, statistics=("T1",), generator=g).verdicts["T1"].flagged
    return flags / runs


@pytest.mark.parametrize("m", [25, 100])
def test_exact_bayes_is_rarely_flagged_by_t1(m):
    rate = _t1_flag_rate(BetaBernoulli(), 0.5, n=50, m=m, runs=100, seed=10 + m)
    assert rate <= 0.07, f"exact Beta(1,1) flagged by T1 in {rate:.0%} of 100 runs (nominal 5%)"


def test_a_bias_of_005_is_flagged_by_t1_at_m_100():
    # over the seed's grid theta* in {0.3, 0.5, 0.7} (Fig. 5.3), 34 runs each
    rates = {
        theta: _t1_flag_rate(Biased(BetaBernoulli(), 0.05), theta, 50, 100, 34, seed=20) for theta in (0.3, 0.5, 0.7)
    }
    pooled = sum(rates.values()) / 3
    assert pooled >= 0.90, f"+0.05 bias flagged by T1 in {pooled:.0%} of 102 runs: {rates}"
    assert min(rates.values()) >= 0.8, rates


def test_forgetting_passes_t1_t2_and_is_flagged_by_t3():
    g = gen(30)
    forgetting, runs = BetaBernoulli(forget=0.95), 20
    flags = {"T1": 0, "T2_D2": 0, "T2_acf": 0, "T3": 0}
    for _ in range(runs):
        observed = BernoulliData(0.5).sample(50, g)
        short = sample_paths(forgetting, observed, 25, J, generator=g)  # m = n/2
        check = martingale_check(short, 300, statistics=("T1", "T2_D2", "T2_acf"), generator=g)
        long = sample_paths(forgetting, observed, 100, J, generator=g)  # m = 2n
        t3_check = martingale_check(long, 200, statistics=("T3",), generator=g)
        for key in ("T1", "T2_D2", "T2_acf"):
            flags[key] += check.verdicts[key].flagged
        flags["T3"] += t3_check.verdicts["T3"].flagged
    rates = {k: v / runs for k, v in flags.items()}
    assert max(rates["T1"], rates["T2_D2"], rates["T2_acf"]) <= 0.15, rates
    assert rates["T3"] >= 0.9, rates


def test_gaussian_exact_model_passes_with_one_decimal_tokens():
    g = gen(40)
    flags = {"T1": 0, "T1_sq": 0}
    for _ in range(15):
        paths = sample_paths(NormalNormal(), GaussianData(-1.0).sample(50, g), 26, J, quantum=0.1, generator=g)
        check = martingale_check(paths, 300, generator=g)
        assert set(check.verdicts) == {"T1", "T1_sq", "T2_D2", "T2_acf", "T3"}
        for key in flags:
            flags[key] += check.verdicts[key].flagged
    assert max(flags.values()) <= 2, flags  # of 15 runs


# ---- T3 against n (Fig. 5.6) ---------------------------------------------------------

SEED_T3 = {20: 0.20, 50: 0.16, 100: 0.10, 200: 0.08, 400: 0.055}  # seed000 §4.5, Bayes, theta = 1/2, m = n/2


def test_bayes_t3_medians_are_close_to_the_seed_values():
    result = t3_scaling(BetaBernoulli(), BernoulliData(0.5), runs=9, replicates=100, generator=gen(50))
    bayes, model, half = result.curve("Bayes"), result.curve("model"), result.curve("alpha=0.5")
    for i, (n, m) in enumerate(zip(result.ns, result.ms)):
        step = 1 / m  # Bernoulli T3 is quantised in steps of 1/m
        # the seed's simulation
        assert abs(float(bayes[i]) - SEED_T3[n]) <= step + 0.1 * SEED_T3[n], (n, float(bayes[i]))
        # the continuous limit: path mean ~ N(theta, theta(1-theta) (1/(n+3) + 1/m)), IQR = 1.349 sd
        limit = 1.349 * math.sqrt(0.25 * (1 / (n + 3) + 1 / m))
        assert abs(float(bayes[i]) - limit) <= step + 0.1 * limit, (n, float(bayes[i]), limit)
        # the exact model's own paths follow the reference, and alpha = 1/2 is wider
        assert abs(float(model[i] - bayes[i])) <= step + 0.15 * float(bayes[i]), (n, float(model[i]))
        assert float(half[i]) >= float(bayes[i])
    # T3 falls at about the Bayes rate n^(-1/2): slope of log T3 against log n
    slope = np.polyfit(np.log(result.ns), np.log(bayes.numpy()), 1)[0]
    assert -0.65 < slope < -0.4, slope
    assert float(result.flagged.float().mean()) <= 0.15


# ---- Fig. 5.1 data -------------------------------------------------------------------


def test_fan_is_flat_for_bayes_and_drifts_for_a_bias():
    observed = BernoulliData(0.3).sample(50, gen(60))
    exact = fan(sample_paths(BetaBernoulli(), observed, 100, 2000, generator=gen(61)))
    biased = fan(sample_paths(Biased(BetaBernoulli(), 0.05), observed, 100, 2000, generator=gen(62)))
    assert exact.trajectories.shape == (20, 101)
    assert abs(float(exact.mean[-1] - exact.mean[0])) < 0.01
    assert float(biased.mean[-1] - biased.mean[0]) > 0.05 * math.log(150 / 50) * 0.8
    assert exact.posterior_low < exact.posterior_mean < exact.posterior_high
    assert exact.posterior_mean == pytest.approx((1 + float(observed.sum())) / 52)


def test_martingale_posterior_histograms():
    g = gen(70)
    observed = BernoulliData(0.5).sample(50, g)
    exact = martingale_posterior(sample_paths(BetaBernoulli(), observed, 100, J, generator=g), generator=g)
    wide = martingale_posterior(sample_paths(BetaBernoulli(forget=0.95), observed, 100, J, generator=g), generator=g)
    assert exact.model.shape == (J,) and exact.reference.shape == (2000,)
    assert exact.iqr["model"] == pytest.approx(exact.iqr["reference"], rel=0.3)
    assert wide.iqr["model"] > 1.5 * wide.iqr["reference"]


def test_check_errors_say_what_to_do():
    paths = sample_paths(BetaBernoulli(), torch.tensor([1.0, 0, 1, 1]), 20, 10)
    with pytest.raises(AtlasError, match="choose from"):
        martingale_check(paths, 50, statistics=("T4",))
    with pytest.raises(AtlasError, match="gaussian reference"):
        martingale_check(paths, 50, reference=NormalNormal())
    batched = sample_paths(BetaBernoulli(), torch.ones(2, 4), 20, 10)
    with pytest.raises(AtlasError, match="one observed sequence"):
        martingale_check(batched, 50)
    with pytest.raises(AtlasError, match="k >= 2"):
        t2_printed(paths.z, 1)
