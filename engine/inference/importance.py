"""Importance weights of a model's encoder as a proposal for its posterior.

    w_i = p(x, z_i) / q(z_i | x),   z_i ~ q(z | x)
    L^k = E[log (1/k) sum_i w_i]                         (seed003 eq. 2.1)
    ESS = (sum_i w_i)^2 / sum_i w_i^2 = 1 / sum_i w~_i^2  (seed003_004 §1.6, an addition)
"""

from __future__ import annotations

import torch

from engine.errors import AtlasError
from engine.numerics import logmeanexp


def log_importance_weights(model, x: torch.Tensor, k: int, chunk: int | None = None) -> torch.Tensor:
    """log w for k draws per example, shape (k, batch)."""
    if not hasattr(model, "log_weights"):
        raise AtlasError(f"{type(model).__name__} does not provide importance weights")
    log_w, _, _ = model.log_weights(x, k, chunk)
    return log_w


def bound_curve(log_w: torch.Tensor, ks: list[int]) -> torch.Tensor:
    """L^k for each k, averaged over the batch, from one pool of K weights (K, batch):
    the pool is cut into K // k blocks of k and the block estimates are averaged, so
    every k uses all K draws (seed003 §1.6, monotonicity check)."""
    pool = log_w.shape[0]
    out = []
    for k in ks:
        if not 1 <= k <= pool:
            raise AtlasError(f"k = {k} needs at least that many weights; the pool has {pool}")
        blocks = log_w[: (pool // k) * k].reshape(pool // k, k, -1)
        out.append(logmeanexp(blocks, dim=1).mean())
    return torch.stack(out)


def normalized_weights(log_w: torch.Tensor) -> torch.Tensor:
    """w~_i = w_i / sum_j w_j along the first dim."""
    return torch.softmax(log_w, dim=0)


def effective_sample_size(log_w: torch.Tensor) -> torch.Tensor:
    """ESS per example (between 1 and k), computed in log space."""
    return torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0))
