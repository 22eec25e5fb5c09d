"""Sequential predictors and the path sampler (engine.sequence)."""

from __future__ import annotations

import math

import pytest
import torch

from engine.errors import AtlasError
from engine.sequence import (
    BernoulliData,
    BernoulliPredictive,
    BetaBernoulli,
    Biased,
    GaussianData,
    NormalNormal,
    Sharpened,
    sample_paths,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_conjugate_predictives_match_hand_computed_cases():
    # Beta(2, 3) prior, 3 ones in 4: p = (2 + 3) / (2 + 3 + 4) = 5/9
    model = BetaBernoulli(2.0, 3.0)
    p = model.predictive(model.start(torch.tensor([[1.0, 0, 1, 1]]))).prob
    assert float(p) == pytest.approx(5 / 9)
    # N(1, 4) prior, obs_var 2, z = 0.5, 1.5, 2: precision 1/4 + 3/2, mean (1/4 + 4/2) / 1.75
    model = NormalNormal(1.0, 4.0, 2.0)
    pred = model.predictive(model.start(torch.tensor([[0.5, 1.5, 2.0]])))
    assert float(pred.mean) == pytest.approx(2.25 / 1.75)
    assert float(pred.std) ** 2 == pytest.approx(2.0 + 1 / 1.75)
    # fractional: alpha = 2 counts every observation twice
    p2 = BetaBernoulli(alpha=2.0).predictive(BetaBernoulli(alpha=2.0).start(torch.tensor([[1.0, 0, 1]])))
    assert float(p2.prob) == pytest.approx((1 + 4) / (2 + 6))


def test_forgetting_matches_the_seed_formula():
    # seed000 §4.5: p = (1 + sum lambda^(t-i) z_i) / (2 + sum lambda^(t-i))
    z = torch.tensor([1.0, 1, 0, 1, 0, 0, 1])
    lam, t = 0.9, len(z)
    w = torch.tensor([lam ** (t - i) for i in range(1, t + 1)])
    expected = (1 + (w * z).sum()) / (2 + w.sum())
    model = BetaBernoulli(forget=lam)
    assert float(model.predictive(model.start(z[None])).prob) == pytest.approx(float(expected))


@pytest.mark.parametrize(
    "model",
    [
        BetaBernoulli(),
        BetaBernoulli(0.5, 2.0, alpha=0.5),
        BetaBernoulli(forget=0.9),
        NormalNormal(),
        NormalNormal(1.0, 2.0, 0.5, alpha=2.0, forget=0.8),
    ],
)
def test_update_equals_starting_from_the_longer_context(model):
    z = (torch.rand(3, 8, generator=gen()) < 0.5).float() if model.family == "bernoulli" else torch.randn(3, 8)
    state = model.start(z[:, :5])
    for i in range(5, 8):
        state = model.update(state, z[:, i])
    direct = model.predictive(model.start(z)).mean
    assert torch.allclose(model.predictive(state).mean, direct, atol=1e-6)


def test_exact_bernoulli_predictive_is_a_martingale():
    # E[p_{n+1} | z_1..n] = p_n: exactly (two outcomes) and by Monte Carlo over 400k draws
    model = BetaBernoulli(1.5, 0.7)
    state = model.start(torch.tensor([[1.0, 0, 0, 1, 1, 1, 0]]))
    p = model.predictive(state).prob
    up = model.predictive(model.update(state, torch.ones(1))).prob
    down = model.predictive(model.update(state, torch.zeros(1))).prob
    assert float(p * up + (1 - p) * down) == pytest.approx(float(p), abs=1e-7)
    big = model.start(torch.tensor([[1.0, 0, 0, 1, 1, 1, 0]]).expand(400_000, 7))
    z = model.predictive(big).sample(gen(1))
    p_next = model.predictive(model.update(big, z)).prob
    se = p_next.std() / math.sqrt(len(p_next))
    assert abs(float(p_next.mean() - p)) < 4 * float(se)


def test_exact_gaussian_predictive_mean_is_a_martingale_over_many_steps():
    observed = GaussianData(-1.0).sample(30, gen(2))
    paths = sample_paths(NormalNormal(), observed, m=40, paths=20_000, generator=gen(3))
    start, end = paths.predictive_mean[:, 0], paths.predictive_mean[:, -1]
    assert torch.allclose(start, start[0])  # permuting z_1..n does not change a Bayesian posterior
    se = end.std() / math.sqrt(len(end))
    assert abs(float(end.mean() - start[0])) < 4 * float(se)


def test_biased_predictor_drifts_as_predicted():
    # E[q_{t+1}] = q_t + delta / (n + 3 + t) for Beta(1, 1) + delta (no clipping at 1/2)
    n, m, delta = 40, 30, 0.05
    observed = torch.tensor([1.0, 0] * (n // 2))
    paths = sample_paths(Biased(BetaBernoulli(), delta), observed, m=m, paths=20_000, generator=gen(4))
    drift = paths.predictive_mean[:, -1].mean() - paths.predictive_mean[:, 0].mean()
    expected = delta * sum(1 / (n + 3 + t) for t in range(m))
    assert float(drift) == pytest.approx(expected, abs=0.002)


def test_sharpened_and_biased_predictives():
    p = BernoulliPredictive(torch.tensor([0.2, 0.5, 0.97]))
    assert torch.allclose(p.shifted(0.05).prob, torch.tensor([0.25, 0.55, 1.0]))
    sharp = p.sharpened(2.0).prob
    assert torch.allclose(sharp, p.prob**2 / (p.prob**2 + (1 - p.prob) ** 2))
    model = Sharpened(NormalNormal(), 4.0)
    pred = model.predictive(model.start(torch.zeros(1, 3)))
    base = NormalNormal().predictive(NormalNormal().start(torch.zeros(1, 3)))
    assert torch.allclose(pred.std, base.std / 2)


def test_paths_are_batched_and_permuted_per_path():
    observed = BernoulliData(0.3).sample(25, gen(5))
    paths = sample_paths(BetaBernoulli(forget=0.8), observed, m=12, paths=64, generator=gen(6))
    assert paths.z.shape == (64, 12) and paths.predictive_mean.shape == (64, 13)
    # forgetting weights recent observations, so different orderings give different p_n
    assert paths.predictive_mean[:, 0].unique().numel() > 1
    runs = sample_paths(BetaBernoulli(), torch.stack([observed] * 3), m=12, paths=8, permute=False, generator=gen(7))
    assert runs.z.shape == (3, 8, 12)
    quantised = sample_paths(NormalNormal(), torch.randn(10), m=5, paths=4, quantum=0.1, generator=gen(8))
    assert torch.allclose(quantised.z * 10, (quantised.z * 10).round(), atol=1e-4)


def test_user_predictor_from_the_docstring_matches_beta_bernoulli():
    import engine.sequence.predictor as module

    source = module.__doc__.split("::")[1].split("(That predictor")[0]
    namespace: dict = {}
    exec("\n".join(line[4:] for line in source.splitlines()), namespace)
    assert namespace["paths"].z.shape == (200, 50)
    observed = namespace["observed"]
    mine = sample_paths(namespace["RunningMean"](), observed, m=30, paths=50, generator=gen(9))
    exact = sample_paths(BetaBernoulli(), observed, m=30, paths=50, generator=gen(9))
    assert torch.equal(mine.z, exact.z)


def test_user_errors_say_what_to_do():
    with pytest.raises(AtlasError, match="0 or 1"):
        sample_paths(BetaBernoulli(), torch.tensor([0.0, 2.0]), m=4)
    with pytest.raises(AtlasError, match="m = 2"):
        sample_paths(BetaBernoulli(), torch.tensor([0.0, 1.0]), m=1)
    with pytest.raises(AtlasError, match="forgetting"):
        BetaBernoulli(forget=1.5)
    with pytest.raises(AtlasError, match="Beta prior"):
        BetaBernoulli(a=0.0)
