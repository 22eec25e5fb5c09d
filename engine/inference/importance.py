"""Importance weights of a model's encoder as a proposal for its posterior.

    w_i = p(x, z_i) / q(z_i | x),   z_i ~ q(z | x)
    L^k = E[log (1/k) sum_i w_i]                         (seed003 eq. 2.1)
    ESS = (sum_i w_i)^2 / sum_i w_i^2 = 1 / sum_i w~_i^2  (seed003_004 §1.6, an addition)

Sampling-importance-resampling (seed003 §1.1, Algorithm 1): resample the draws with
probabilities w~_i; the resampled set approaches the posterior p(z | x) as k grows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.errors import AtlasError
from engine.numerics import logmeanexp
from engine.models.base import ImportanceWeighted, LatentModel


def log_importance_weights(model: LatentModel, x: torch.Tensor, k: int, chunk: int | None = None) -> torch.Tensor:
    """log w for k draws per example, shape (k, batch)."""
    if not isinstance(model, ImportanceWeighted):
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


@dataclass
class ImportanceSample:
    """k proposal draws per example, their log weights and an SIR resample of them.

    z:         {group: (k, batch, size)} draws from the encoder's Gaussians
    log_w:     (k, batch) log p(x, z) - log q(z | x)
    resampled: (n, batch) indices into the k draws, drawn with probabilities w~
    """

    z: dict[str, torch.Tensor]
    log_w: torch.Tensor
    resampled: torch.Tensor

    def sir(self) -> dict[str, torch.Tensor]:
        """The resampled latents, {group: (n, batch, size)}: approximately p(z | x)."""
        idx = self.resampled
        return {g: torch.gather(v, 0, idx[..., None].expand(*idx.shape, v.shape[-1])) for g, v in self.z.items()}

    @property
    def ess(self) -> torch.Tensor:
        return effective_sample_size(self.log_w)


def proposal_log_weights(model: LatentModel, x: torch.Tensor, k: int, generator: torch.Generator | None = None):
    """k draws z_i from the encoder's Gaussians as `encode` returns them, one group
    independently of another, and log w_i = log p(x, z_i) - log q(z_i | x).

    For a one-group VAE this q is the model's own encoder; for a hierarchical model it is
    the mean-path Gaussian of each layer, a valid proposal with its own (exact) density,
    so the weights, SIR and the bound stay correct for it, if looser than the model's."""
    q = model.encode(x)
    z, log_q = {}, 0.0
    for name, g in q.items():
        eps = torch.randn((k, *g.mean.shape), generator=generator, dtype=g.mean.dtype).to(g.mean.device)
        z[name] = g.mean + g.std * eps
        log_q = log_q + g.log_prob(z[name])
    return z, model.log_joint(x, z) - log_q


def sampling_importance_resampling(
    model: LatentModel, x: torch.Tensor, k: int, n: int, generator: torch.Generator | None = None
) -> ImportanceSample:
    """Draw k proposals per example, weight them, and resample n with replacement in
    proportion to their weights (seed003 §1.1 and Algorithm 1; as k grows the resampled
    set tends to p(z | x), Thm 2.2.2)."""
    if k < 1 or n < 1:
        raise AtlasError(f"SIR needs k >= 1 proposals and n >= 1 resamples, got k = {k}, n = {n}")
    z, log_w = proposal_log_weights(model, x, k, generator)
    probs = normalized_weights(log_w).T.double().cpu()  # (batch, k)
    idx = torch.multinomial(probs, n, replacement=True, generator=generator).T.to(log_w.device)  # (n, batch)
    return ImportanceSample(z, log_w, idx)
