"""Small numerical building blocks shared across the engine."""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(z; mean, exp(logvar))."""
    return -0.5 * (LOG_2PI + logvar + (z - mean).pow(2) * torch.exp(-logvar))


def gaussian_kl_elementwise(
    q_mean: torch.Tensor, q_logvar: torch.Tensor, p_mean: torch.Tensor, p_logvar: torch.Tensor
) -> torch.Tensor:
    """Elementwise KL(N(q_mean, exp(q_logvar)) || N(p_mean, exp(p_logvar)))."""
    return 0.5 * (p_logvar - q_logvar + (q_logvar.exp() + (q_mean - p_mean).pow(2)) / p_logvar.exp() - 1.0)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dim."""
    return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)


def logmeanexp(t: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log(mean(exp(t))) along dim, computed stably (seed003 §1.5: never logsumexp)."""
    return torch.logsumexp(t, dim=dim) - math.log(t.shape[dim])
