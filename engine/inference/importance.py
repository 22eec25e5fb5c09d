"""Importance weights of a model's encoder as a proposal for its posterior.

    w_i = p(x, z_i) / q(z_i | x),   z_i ~ q(z | x)
    L^k = E[log (1/k) sum_i w_i]                         (seed003 eq. 2.1)
    ESS = (sum_i w_i)^2 / sum_i w_i^2 = 1 / sum_i w~_i^2  (seed003_004 §1.6, an addition)

Sampling-importance-resampling (seed003 §1.1, Algorithm 1): resample the draws with
probabilities w~_i; the resampled set approaches the posterior p(z | x) as k grows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.errors import AtlasError
from engine.models.base import ImportanceWeighted, LatentModel
from engine.models.latents import flatten_latents
from engine.models.posteriors import Categorical
from engine.numerics import logmeanexp


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
    return per_example_bounds(log_w, ks).mean(1)


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
    so the weights, SIR and the bound stay correct for it, if looser than the model's. A
    group of codes (a Categorical posterior) is drawn as exact one-hot codes."""
    q = model.encode(x)
    z, log_q = {}, 0.0
    for name, g in q.items():
        if isinstance(g, Categorical):  # codes: exact one-hot draws, log q summed over the positions
            z[name] = g.hard_sample(k, generator=generator)
            log_q = log_q + g.log_prob(z[name]).flatten(2).sum(-1)
            continue
        eps = torch.randn((k, *g.mean.shape), generator=generator, dtype=g.mean.dtype).to(g.mean.device)
        z[name] = g.mean + g.stddev * eps
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


def per_example_bounds(log_w: torch.Tensor, ks: list[int]) -> torch.Tensor:
    """L^k of every example for each k, (len(ks), batch), from one pool of K weights
    (K, batch) cut into K // k blocks of k and the block estimates averaged."""
    pool = log_w.shape[0]
    out = []
    for k in ks:
        if not 1 <= k <= pool:
            raise AtlasError(f"k = {k} needs at least that many weights; the pool has {pool}")
        blocks = log_w[: (pool // k) * k].reshape(pool // k, k, -1)
        out.append(logmeanexp(blocks, dim=1).mean(0))
    return torch.stack(out)


@dataclass
class BoundBand:
    """L^k against k over a batch, with a band on its rise from the ELBO.

    curve: (len(ks),) L^k averaged over the examples
    rise:  (len(ks),) the mean of L^k - L^1 over the examples
    band:  (len(ks),) twice the standard error of that rise across examples (0 for one
           example): the rise varies less from example to example than L^k itself
    """

    ks: list[int]
    curve: torch.Tensor
    rise: torch.Tensor
    band: torch.Tensor


def bound_band(log_w: torch.Tensor, ks: list[int]) -> BoundBand:
    """The IWAE bound L^k (seed003 eq. 2.1) for each k from a pool of weights (K, batch),
    with twice the standard error of its rise L^k - L^1 across the batch."""
    per_example = per_example_bounds(log_w, ks)  # (len(ks), batch)
    rise = per_example - per_example[:1]
    n = rise.shape[1]
    band = 2 * rise.std(1, correction=1) / n**0.5 if n > 1 else torch.zeros(len(ks), dtype=rise.dtype)
    return BoundBand(list(ks), per_example.mean(1), rise.mean(1), band)


def running_log_mean_weight(log_w: torch.Tensor) -> torch.Tensor:
    """log((1/k) sum_{i<=k} w_i) for k = 1 ... K along the first dim: the running estimate
    of log p(x), whose last value is log of the mean weight (this input's L^K)."""
    counts = torch.arange(1, log_w.shape[0] + 1, dtype=log_w.dtype, device=log_w.device)
    return torch.logcumsumexp(log_w, 0) - torch.log(counts).reshape(-1, *[1] * (log_w.dim() - 1))


@dataclass
class SIRDraws:
    """One input's SIR, every latent group flattened into one vector (the model's
    `latent_groups` order).

    proposals: (k, total) draws from the encoder's Gaussians; log_w: (k,) their log weights
    resampled: (n, total) the SIR resample of the proposals; distinct: how many different
               proposals it holds
    mean:      (total,) the encoder's mean
    """

    proposals: np.ndarray
    log_w: np.ndarray
    resampled: np.ndarray
    distinct: int
    mean: np.ndarray


def sir_draws(model, x: torch.Tensor, k: int, n: int, generator: torch.Generator | None = None) -> SIRDraws:
    """`sampling_importance_resampling` of one input x (1, *shape), flattened for a 2-D view."""
    if len(x) != 1:
        raise AtlasError(f"sir_draws takes one input, shape (1, ...); got a batch of {len(x)}")
    groups = model.latent_groups
    sample = sampling_importance_resampling(model, x, k, n, generator)
    proposals = flatten_latents({name: v[:, 0] for name, v in sample.z.items()}, groups)  # (k, total)
    picked = sample.resampled[:, 0]  # (n,)
    mean = flatten_latents({name: q.mean[0] for name, q in model.encode(x).items()}, groups)
    return SIRDraws(
        proposals=proposals.cpu().numpy(),
        log_w=sample.log_w[:, 0].cpu().numpy(),
        resampled=proposals[picked].cpu().numpy(),
        distinct=int(picked.unique().numel()),
        mean=mean.cpu().numpy(),
    )


def most_correlated_pair(samples: np.ndarray) -> tuple[int, int]:
    """The two coordinates of samples (n, d), d >= 2, with the largest |correlation|: the
    pair a resampling bends most, which a diagonal encoder cannot. Constant coordinates
    count as uncorrelated."""
    if samples.ndim != 2 or samples.shape[1] < 2:
        raise AtlasError(f"need samples of two or more coordinates, shape (n, d); got {samples.shape}")
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.abs(np.nan_to_num(np.corrcoef(samples.T)))
    np.fill_diagonal(corr, 0.0)  # a coordinate with itself, constant or not, is no pair
    a, b = np.unravel_index(corr.argmax(), corr.shape)
    return int(a), int(b)
