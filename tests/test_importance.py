"""Importance-weight summaries against hand-computed cases."""

import math
import statistics

import numpy as np
import pytest
import torch

from engine.errors import AtlasError
from engine.inference.importance import (
    bound_band,
    bound_curve,
    effective_sample_size,
    most_correlated_pair,
    normalized_weights,
    per_example_bounds,
    running_log_mean_weight,
    sir_draws,
)


def test_ess_of_equal_and_of_degenerate_weights():
    equal = torch.zeros(50, 3)
    torch.testing.assert_close(effective_sample_size(equal), torch.full((3,), 50.0))
    degenerate = torch.full((50, 1), -1e4)
    degenerate[7] = 0.0
    assert effective_sample_size(degenerate).item() == pytest.approx(1.0)
    # two weights 1 and 3: (1 + 3)^2 / (1 + 9) = 1.6
    two = torch.log(torch.tensor([[1.0], [3.0]]))
    assert effective_sample_size(two).item() == pytest.approx(1.6)


def test_normalized_weights_sum_to_one():
    log_w = torch.randn(20, 4) * 5
    torch.testing.assert_close(normalized_weights(log_w).sum(0), torch.ones(4))


def test_bound_curve_by_hand():
    log_w = torch.log(torch.tensor([[1.0], [3.0], [2.0], [2.0]]))  # (K = 4, batch = 1)
    curve = bound_curve(log_w, [1, 2, 4])
    expected = [
        sum(math.log(w) for w in (1, 3, 2, 2)) / 4,
        (math.log(2.0) + math.log(2.0)) / 2,
        math.log(2.0),
    ]
    torch.testing.assert_close(curve, torch.tensor(expected))
    with pytest.raises(AtlasError, match="pool has 4"):
        bound_curve(log_w, [5])


def test_per_example_bounds_and_the_band_on_their_rise_by_hand():
    weights = [[1.0, 4.0, 2.0], [3.0, 4.0, 1.0], [2.0, 1.0, 6.0], [2.0, 3.0, 1.0]]  # (K = 4, batch = 3)
    log_w = torch.log(torch.tensor(weights, dtype=torch.float64))
    ks = [1, 2, 4]

    def bound(column: list[float], k: int) -> float:  # the mean over blocks of k of log (1/k) sum w
        blocks = [column[i : i + k] for i in range(0, len(column) - len(column) % k, k)]
        return statistics.fmean(math.log(statistics.fmean(b)) for b in blocks)

    columns = [[row[j] for row in weights] for j in range(3)]
    expected = [[bound(c, k) for c in columns] for k in ks]
    torch.testing.assert_close(per_example_bounds(log_w, ks), torch.tensor(expected, dtype=torch.float64))
    result = bound_band(log_w, ks)
    torch.testing.assert_close(result.curve, bound_curve(log_w, ks))  # the same L^k as the batch average
    rises = [[e - first for e, first in zip(row, expected[0])] for row in expected]
    torch.testing.assert_close(result.rise, torch.tensor([statistics.fmean(r) for r in rises], dtype=torch.float64))
    band = [2 * statistics.stdev(r) / math.sqrt(3) for r in rises]
    torch.testing.assert_close(result.band, torch.tensor(band, dtype=torch.float64))
    assert result.band[0] == 0  # L^1 - L^1 is 0 for every example
    assert (bound_band(log_w[:, :1], ks).band == 0).all()  # one example: no spread to measure
    with pytest.raises(AtlasError, match="pool has 4"):
        per_example_bounds(log_w, [8])


def test_running_log_mean_weight_by_hand():
    w = [0.5, 2.0, 8.0, 1.0]
    log_w = torch.log(torch.tensor(w, dtype=torch.float64))
    expected = [math.log(sum(w[: k + 1]) / (k + 1)) for k in range(4)]
    torch.testing.assert_close(running_log_mean_weight(log_w), torch.tensor(expected, dtype=torch.float64))
    big = torch.tensor([[800.0, -3.0], [801.0, -2.0]])  # (K, batch): finite where exp(log w) overflows
    running = running_log_mean_weight(big)
    assert running.shape == (2, 2) and torch.isfinite(running).all()
    torch.testing.assert_close(running[1], torch.logsumexp(big, 0) - math.log(2))


def test_most_correlated_pair_finds_the_planted_pair():
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(2000, 5))
    samples[:, 3] = -0.9 * samples[:, 1] + 0.2 * samples[:, 3]
    samples[:, 4] = 1.0  # constant: no correlation to speak of, and no warning or NaN
    assert sorted(most_correlated_pair(samples)) == [1, 3]
    with pytest.raises(AtlasError, match="two or more"):
        most_correlated_pair(samples[:, :1])


# -- on a linear-Gaussian model, where p(x) and p(z | x) are known in closed form ---------------


def correlated_linear_gaussian(sigma2=0.2, seed=0):
    """z ~ N(0, I_2), x | z ~ N(W z + b, sigma2 I_5) with non-orthogonal W: the posterior
    N(m(x), S) has correlated coordinates, which the encoder's diagonal Gaussian cannot
    hold. The encoder gets the exact mean and the exact marginal variances diag(S): it
    covers the posterior but misses its correlation."""
    from engine.models import VAE, VAEConfig

    torch.manual_seed(seed)
    model = VAE(VAEConfig(input_shape=(5,), latent_dim=2, hidden=(), likelihood="gaussian")).double()
    w = torch.randn(5, 2, dtype=torch.float64)
    w[:, 1] = 0.8 * w[:, 0] + 0.4 * w[:, 1]  # strongly aligned columns
    b = torch.randn(5, dtype=torch.float64)
    precision = torch.eye(2, dtype=torch.float64) + w.T @ w / sigma2
    cov = torch.linalg.inv(precision)
    a = cov @ w.T / sigma2
    with torch.no_grad():
        model.decoder[0][0].weight.copy_(w)
        model.decoder[0][0].bias.copy_(b)
        model.likelihood.logvar.fill_(math.log(sigma2))
        enc = model.encoder[1][0]
        enc.weight.zero_()
        enc.weight[:2].copy_(a)
        enc.bias[:2].copy_(-a @ b)
        enc.bias[2:].copy_(torch.log(torch.diagonal(cov)))
    log_px = torch.distributions.MultivariateNormal(b, w @ w.T + sigma2 * torch.eye(5, dtype=torch.float64))
    return model, cov, a, b, log_px


def test_sir_recovers_the_correlated_posterior_the_encoder_cannot_represent():
    from engine.inference.importance import sampling_importance_resampling

    model, cov, a, b, _ = correlated_linear_gaussian()
    x = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + b
    true_corr = (cov[0, 1] / cov.diag().prod().sqrt()).item()
    assert true_corr < -0.8  # the exact posterior is strongly correlated
    with torch.no_grad():
        sample = sampling_importance_resampling(model, x, k=4000, n=4000, generator=torch.Generator().manual_seed(2))
    z = sample.sir()["z"]  # (n, batch, 2)
    assert z.shape == (4000, 2, 2)
    for i in range(2):
        zi = z[:, i]
        corr = torch.corrcoef(zi.T)[0, 1].item()
        assert abs(corr - true_corr) < 0.08, (corr, true_corr)  # the proposal alone has correlation 0
        torch.testing.assert_close(zi.mean(0), a @ (x[i] - b), atol=0.05, rtol=0)
        torch.testing.assert_close(torch.cov(zi.T), cov, atol=0.1 * cov.abs().max().item(), rtol=0)
    assert (sample.ess > 50).all() and (sample.ess < 4000).all()


def test_iwae_bound_from_1_to_5000_rises_to_the_closed_form_log_likelihood():
    from engine.inference.importance import proposal_log_weights

    model, _, _, b, log_px = correlated_linear_gaussian()
    x = torch.randn(8, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) + b
    ks = [1, 2, 5, 10, 50, 100, 500, 1000, 5000]
    with torch.no_grad():
        curves = torch.stack(
            [
                bound_curve(proposal_log_weights(model, x, 5000, torch.Generator().manual_seed(s))[1], ks)
                for s in range(4)
            ]
        )
    curve = curves.mean(0)
    truth = log_px.log_prob(x).mean().item()
    measured = f"L^k for k = {ks}: {curve.tolist()}, log p(x) = {truth}"
    assert (curve.diff() > -1e-3).all(), measured  # non-decreasing in expectation (here: on average over 4 pools)
    assert curve[-1].item() <= truth + 1e-3, measured
    assert truth - curve[-1].item() < 0.05 * (truth - curve[0].item()), measured  # 95% of the ELBO's gap closes
    assert truth - curve[0].item() > 0.2, measured  # and there was a gap to close: the encoder is mean-field


def test_sir_draws_flatten_one_inputs_sir_consistently():
    from engine.inference.importance import sampling_importance_resampling

    model, _, a, b, _ = correlated_linear_gaussian()
    x = torch.randn(1, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) + b
    with torch.no_grad():
        draws = sir_draws(model, x, k=300, n=200, generator=torch.Generator().manual_seed(5))
        sample = sampling_importance_resampling(model, x, 300, 200, torch.Generator().manual_seed(5))
    assert draws.proposals.shape == (300, 2) and draws.resampled.shape == (200, 2) and draws.log_w.shape == (300,)
    np.testing.assert_allclose(draws.proposals, sample.z["z"][:, 0].numpy())
    np.testing.assert_allclose(draws.resampled, sample.sir()["z"][:, 0].numpy())
    np.testing.assert_allclose(draws.log_w, sample.log_w[:, 0].numpy())
    np.testing.assert_allclose(draws.mean, (a @ (x[0] - b)).numpy(), atol=1e-10)  # the encoder's exact mean
    assert draws.distinct == len(np.unique(draws.resampled, axis=0)) < 200
    with pytest.raises(AtlasError, match="one input"):
        sir_draws(model, torch.cat([x, x]), k=10, n=10)
