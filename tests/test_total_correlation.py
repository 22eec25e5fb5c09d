"""The total-correlation estimators against Gaussians whose TC is known in closed form.

With q(z | n) = N(mu_n, s^2 I) and mu_n ~ N(0, C), the aggregate posterior of a large
data set is N(0, C + s^2 I), whose total correlation is
    TC = 1/2 (sum_d log S_dd - log det S),  S = C + s^2 I.
"""

import math

import pytest
import torch

from engine.errors import AtlasError
from engine.models.total_correlation import aggregate_log_densities, log_weight_matrix, total_correlation


def gaussian_tc(cov: torch.Tensor) -> float:
    return 0.5 * (torch.log(torch.diagonal(cov)).sum() - torch.logdet(cov)).item()


def draw(cov_mu: torch.Tensor, s2: float, n: int, gen: torch.Generator):
    d = cov_mu.shape[0]
    chol = torch.linalg.cholesky(cov_mu)
    mean = torch.randn(n, d, generator=gen, dtype=torch.float64) @ chol.T
    logvar = torch.full_like(mean, math.log(s2))
    z = mean + math.sqrt(s2) * torch.randn(n, d, generator=gen, dtype=torch.float64)
    return z, mean, logvar


@pytest.mark.parametrize("rho", [0.0, 0.6, 0.9])
def test_mss_recovers_gaussian_total_correlation(rho):
    gen = torch.Generator().manual_seed(1)
    d, s2 = 3, 0.2
    cov_mu = torch.full((d, d), rho, dtype=torch.float64) + (1 - rho) * torch.eye(d, dtype=torch.float64)
    truth = gaussian_tc(cov_mu + s2 * torch.eye(d, dtype=torch.float64))
    # minibatches of 1,000 from a data set of 100,000: average the per-batch estimates
    estimates = []
    for _ in range(8):
        z, mean, logvar = draw(cov_mu, s2, 1000, gen)
        estimates.append(total_correlation(z, mean, logvar, dataset_size=100_000, estimator="mss").mean())
    estimate = torch.stack(estimates).mean().item()
    assert estimate == pytest.approx(truth, abs=0.06)


def test_mws_is_offset_by_d_minus_one_log_n():
    """Plain minibatch weighted sampling carries a (D - 1) log N offset (anchors A9)."""
    gen = torch.Generator().manual_seed(2)
    d, s2, n_data = 4, 0.3, 50_000
    cov_mu = 0.5 * torch.eye(d, dtype=torch.float64) + 0.5
    z, mean, logvar = draw(cov_mu, s2, 800, gen)
    mss = total_correlation(z, mean, logvar, n_data, "mss").mean().item()
    mws = total_correlation(z, mean, logvar, n_data, "mws").mean().item()
    assert mws - mss == pytest.approx((d - 1) * math.log(n_data), rel=0.01)


def test_mss_weights_sum_to_one():
    w = log_weight_matrix(16, 1000, "mss").exp()
    torch.testing.assert_close(w.sum(1), torch.ones(16, dtype=w.dtype))
    assert w[0, 0].item() == pytest.approx(1 / 1000)


def test_bad_estimator_arguments():
    with pytest.raises(AtlasError, match="at least 2"):
        log_weight_matrix(1, 10)
    with pytest.raises(AtlasError, match="dataset_size"):
        log_weight_matrix(10, 5)
    with pytest.raises(AtlasError, match="unknown total-correlation estimator"):
        log_weight_matrix(4, 10, "bogus")


def test_laplace_posteriors_give_the_exact_aggregate_when_the_batch_is_the_data_set():
    """With M = N every mss weight is 1/N, so log q(z_i) and each marginal are the exact mixture
    densities of the N Laplace posteriors, here against torch.distributions.Laplace."""
    gen = torch.Generator().manual_seed(3)
    n, d = 40, 3
    mean = torch.randn(n, d, generator=gen, dtype=torch.float64)
    b = 0.1 + torch.rand(n, d, generator=gen, dtype=torch.float64)
    z = torch.distributions.Laplace(mean, b).sample()
    log_qz, log_marginals = aggregate_log_densities(z, mean, torch.log(2 * b**2), n, "mss", density="laplace")
    parts = torch.distributions.Laplace(mean[None], b[None]).log_prob(z[:, None])  # (i, j, d)
    torch.testing.assert_close(log_qz, torch.logsumexp(parts.sum(-1), 1) - math.log(n))
    torch.testing.assert_close(log_marginals, (torch.logsumexp(parts, 1) - math.log(n)).sum(-1))
    gaussian, _ = aggregate_log_densities(z, mean, torch.log(2 * b**2), n, "mss")
    assert not torch.allclose(gaussian, log_qz)
    with pytest.raises(AtlasError, match="unknown posterior density"):
        total_correlation(z, mean, torch.log(2 * b**2), n, density="cauchy")
