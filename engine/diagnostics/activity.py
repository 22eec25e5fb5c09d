"""How much each latent dimension is used: KL per dimension and active units.

A dimension is active when its posterior mean moves with the input,
    A_d = Var_x( E_q[z_d | x] ) > 0.01       (Burda et al. 2016; seed003_004 §2.2),
and its KL(q(z_d|x) || p(z_d)) averaged over the data says how many nats it carries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.models.posteriors import DiagonalGaussian
from engine.randomness import random_stream

ACTIVE_THRESHOLD = 0.01


@dataclass
class GroupActivity:
    """Per-dimension statistics of one latent group over a data set; tensors (dim,)."""

    kl: torch.Tensor  # mean KL per dimension, nats
    mean_variance: torch.Tensor  # Var_x E[z_d | x]
    posterior_mean: torch.Tensor  # mean over x of E[z_d | x]: the aggregate posterior's mean
    aggregate_std: torch.Tensor  # sd of the aggregate posterior q(z_d) = mean_x q(z_d | x)
    mean_min: torch.Tensor  # min and max over x of E[z_d | x]
    mean_max: torch.Tensor

    @property
    def active(self) -> torch.Tensor:
        return self.mean_variance > ACTIVE_THRESHOLD

    def order(self) -> torch.Tensor:
        """Dimensions sorted from most to least used (by KL, then by variance)."""
        key = self.kl + 1e-6 * self.mean_variance
        return torch.argsort(key, descending=True)


def per_dimension_kl(q: DiagonalGaussian) -> torch.Tensor:
    """KL(q(z_d|x) || N(0, 1)) per example and dimension, shape (batch, dim)."""
    return 0.5 * (q.mean.pow(2) + q.logvar.exp() - 1.0 - q.logvar)


def group_activity(posteriors: list[DiagonalGaussian]) -> GroupActivity:
    """Statistics from the posteriors of a data set, given batch by batch."""
    mean = torch.cat([q.mean for q in posteriors]).double()  # (n, dim)
    var = torch.cat([q.logvar.exp() for q in posteriors]).double()
    kl = torch.cat([per_dimension_kl(q) for q in posteriors]).double().mean(0)
    mean_variance = mean.var(0, unbiased=False)
    # the mixture mean_x N(mu_x, s2_x) has variance E[s2] + Var[mu] (law of total variance)
    aggregate_std = (var.mean(0) + mean_variance).sqrt()
    return GroupActivity(
        kl=kl.float(),
        mean_variance=mean_variance.float(),
        posterior_mean=mean.mean(0).float(),
        aggregate_std=aggregate_std.float(),
        mean_min=mean.min(0).values.float(),
        mean_max=mean.max(0).values.float(),
    )


@torch.no_grad()
def latent_activity(model, data, n: int = 1000, batch_size: int = 250) -> dict[str, GroupActivity]:
    """GroupActivity for every latent group of `model` over the first n examples of `data`."""
    device = next(model.parameters()).device
    n = min(n, len(data))
    by_group: dict[str, list[DiagonalGaussian]] = {}
    for start in range(0, n, batch_size):
        x = data.batch(torch.arange(start, min(start + batch_size, n))).to(device)
        for name, q in model.encode(x).items():
            # a posterior that is not a diagonal Gaussian (a mixture, a Laplace) is read through the
            # Gaussian with its mean and variance
            logvar = q.logvar if isinstance(q, DiagonalGaussian) else 2 * q.stddev.clamp_min(1e-6).log()
            flat = DiagonalGaussian(q.mean.flatten(1).cpu(), logvar.flatten(1).cpu())
            by_group.setdefault(name, []).append(flat)
    return {name: group_activity(qs) for name, qs in by_group.items()}


@torch.no_grad()
def elbo_kl_per_group(model, data, n: int = 1000, batch_size: int = 250, seed: int = 0) -> dict[str, float]:
    """Each latent group's KL term of the model's single-sample ELBO (`elbo(x).kl`), averaged
    over the first n examples of `data`. For a hierarchical model this is each layer's KL to
    its conditional prior at a posterior draw, where `latent_activity`'s KL to N(0, I) is not
    the KL of its prior."""
    device = next(model.parameters()).device
    n = min(n, len(data))
    totals: dict[str, float] = {}
    with random_stream(seed, device):
        for start in range(0, n, batch_size):
            x = data.batch(torch.arange(start, min(start + batch_size, n))).to(device)
            for name, kl in model.elbo(x).kl.items():
                totals[name] = totals.get(name, 0.0) + kl.double().sum().item()
    return {name: total / n for name, total in totals.items()}
