"""Minibatch estimators of the aggregate posterior q(z) and its total correlation.

q(z) = (1/N) sum_n q(z | x_n) is the aggregate posterior over a data set of N points.
With a minibatch of M points and z_i ~ q(z | x_i), two estimators of log q(z_i):

- "mws", minibatch weighted sampling (seed001 eq. D.19):
      log q(z_i) ~ logsumexp_j log q(z_i | x_j) - log(N M)
  Its weights 1/(NM) sum to 1/N, not 1, which biases log q(z) and each of the D
  marginals by -log N, so the TC estimate carries an offset of (D - 1) log N
  (anchors A9).
- "mss", minibatch stratified sampling: z_i's own data point enters with its exact
  weight 1/N and the other M - 1 batch members stand in for the remaining N - 1
  points, each with weight (N - 1) / (N (M - 1)). The weights sum to one, so the
  estimate of q(z_i) is unbiased given x_i and the offset disappears.

TC(z) = E_q(z)[log q(z) - sum_d log q(z_d)]  (seed001 Def 4.2), estimated per sample as
    log q^(z_i) - sum_d log q^(z_{i,d})  and averaged.

The posteriors q(z | x_j) are diagonal Gaussians, or with density="laplace" products of
Laplace(loc, b) (Bijecta's q(s | z)); either is given by its mean and log-variance
(a Laplace's variance is 2 b^2).
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Laplace

from engine.errors import AtlasError
from engine.numerics import gaussian_log_prob

DENSITIES = ("gaussian", "laplace")


def posterior_log_prob(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, density: str) -> torch.Tensor:
    """Elementwise log q(z | x) of a Gaussian or Laplace entry with this mean and log-variance."""
    if density == "gaussian":
        return gaussian_log_prob(z, mean, logvar)
    if density == "laplace":  # scale b = sd / sqrt(2)
        return Laplace(mean, torch.exp(0.5 * logvar) * math.sqrt(0.5), validate_args=False).log_prob(z)
    raise AtlasError(f"unknown posterior density {density!r}; use one of {', '.join(DENSITIES)}")


def log_weight_matrix(batch_size: int, dataset_size: int, estimator: str = "mss") -> torch.Tensor:
    """(M, M) matrix of log weights W[i, j] applied to q(z_i | x_j)."""
    m, n = batch_size, dataset_size
    if m < 2:
        raise AtlasError(f"total correlation needs a batch of at least 2 examples, got {m}")
    if n < m:
        raise AtlasError(f"dataset_size ({n}) must be at least the batch size ({m})")
    if estimator == "mws":
        return torch.full((m, m), -math.log(n * m))
    if estimator == "mss":
        w = torch.full((m, m), math.log((n - 1) / (n * (m - 1))))
        w.fill_diagonal_(-math.log(n))
        return w
    raise AtlasError(f"unknown total-correlation estimator {estimator!r}; use 'mss' or 'mws'")


def aggregate_log_densities(
    z: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor,
    dataset_size: int,
    estimator: str = "mss",
    density: str = "gaussian",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimates of log q(z_i) and of sum_d log q(z_{i,d}) for each sample.

    z, mean, logvar: (M, D); row i of z was drawn from q(z | x_i), the Gaussian or Laplace
    (`density`) with mean_i and variance exp(logvar_i). Returns two tensors of shape (M,).
    """
    m = z.shape[0]
    # log q(z_{i,d} | x_j): (M_i, M_j, D)
    log_q = posterior_log_prob(z[:, None, :], mean[None, :, :], logvar[None, :, :], density)
    log_w = log_weight_matrix(m, dataset_size, estimator).to(z)
    log_qz = torch.logsumexp(log_w + log_q.sum(-1), dim=1)
    log_qz_marginals = torch.logsumexp(log_w[:, :, None] + log_q, dim=1).sum(-1)
    return log_qz, log_qz_marginals


def total_correlation(
    z: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor,
    dataset_size: int,
    estimator: str = "mss",
    density: str = "gaussian",
) -> torch.Tensor:
    """Per-sample estimate of the total correlation of q(z), shape (M,); average it."""
    log_qz, log_qz_marginals = aggregate_log_densities(z, mean, logvar, dataset_size, estimator, density)
    return log_qz - log_qz_marginals
