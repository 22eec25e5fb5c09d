"""HH-VAEM's learned sampler (seed002 §2.5, anchors A5), trained with the model: T
transitions of `n_leapfrog` steps (the kernel of `engine.hamiltonian`, M = I as in the
HH-VAEM code) started from the encoder's Gaussian inflated per layer, with a learnable
T x dim step-size matrix trained by maximising E[log p(z_T)] (eq. 5.9) and the inflation
by minimising SKSD (eq. 5.10).

    sampler = LearnedHMC(dim, T=10, n_leapfrog=5, layer_sizes=[m1, m2])
    chain = sampler(log_prob, mean, std, chains=30)     # log_prob (batch, chains, dim) -> (batch, chains)
    loss = -LearnedHMC.objective(log_prob, chain) + LearnedHMC.sksd_loss(log_prob, chain)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from engine.errors import AtlasError
from engine.hamiltonian import LogProb, hmc_step, init_state, log_prob_and_grad, standard_normal


@dataclass
class LearnedChain:
    z: torch.Tensor  # (T + 1, batch, chains, dim) the whole chain, z[0] the inflated start
    accept_prob: torch.Tensor  # (T, batch, chains), 0 where divergent (not finite)

    @property
    def final(self) -> torch.Tensor:
        return self.z[-1]


class LearnedHMC(nn.Module):
    """HH-VAEM's sampler (seed002 §2.5; `ipeis/HH-VAEM:src/models/hmc.py`): T transitions
    of n_leapfrog steps with a learnable step-size matrix phi (T x dim, stored as log phi,
    initialised U(0.02, 0.05) as in the code) and a learnable inflation s_l per latent
    layer of the encoder's Gaussian start, eps^(0) ~ N(mu, (s_l sigma)^2).

    Gradient routing follows the HH-VAEM code: grad log p inside the leapfrog is detached
    and accept/reject is a hard mask, so d objective / d phi flows through the explicit
    phi multiplications and d / d s through the start z^(0) = mu + s sigma xi.
    """

    def __init__(
        self,
        dim: int,
        T: int = 10,
        n_leapfrog: int = 5,
        layer_sizes: list[int] | None = None,
        step_init: tuple[float, float] = (0.02, 0.05),
        seed: int = 0,
    ):
        super().__init__()
        layer_sizes = list(layer_sizes or [dim])
        if sum(layer_sizes) != dim or min(layer_sizes) < 1:
            raise AtlasError(f"layer sizes {layer_sizes} must be positive and add up to the latent dim {dim}")
        if T < 1 or n_leapfrog < 1:
            raise AtlasError(f"T and n_leapfrog must be at least 1, got T={T}, n_leapfrog={n_leapfrog}")
        self.T, self.n_leapfrog = T, n_leapfrog
        g = torch.Generator().manual_seed(seed)
        low, high = step_init
        self.log_step = nn.Parameter(torch.log(low + (high - low) * torch.rand(T, dim, generator=g)))  # (T, dim)
        self.log_inflation = nn.Parameter(torch.zeros(len(layer_sizes)))  # (layers,)
        layer_of_dim = torch.repeat_interleave(
            torch.arange(len(layer_sizes)), torch.tensor(layer_sizes), output_size=sum(layer_sizes)
        )  # output_size: buildable on "meta"
        self.register_buffer("layer_of_dim", layer_of_dim)

    @property
    def step_sizes(self) -> torch.Tensor:
        """phi: (T, dim)."""
        return self.log_step.exp()

    @property
    def inflation(self) -> torch.Tensor:
        """s per dimension: (dim,)."""
        return self.log_inflation.exp()[self.layer_of_dim]

    def forward(
        self,
        log_prob: LogProb,
        mean: torch.Tensor,
        std: torch.Tensor,
        chains: int = 1,
        generator: torch.Generator | None = None,
    ) -> LearnedChain:
        """Run the T transitions from N(mean, (s std)^2), mean/std (batch, dim) (detached,
        as in the HH-VAEM code, so the encoder is trained only by its ELBO)."""
        mean = mean.detach().unsqueeze(1).expand(-1, chains, -1)
        std = std.detach().unsqueeze(1).expand(-1, chains, -1)
        state = init_state(log_prob, mean + std * self.inflation * standard_normal(mean, generator))
        unit_mass = torch.ones_like(mean)  # M = I
        zs, accepts = [state.z], []
        for t in range(self.T):  # seed002 eq. 5.1 and 5.2; divergent only where not finite
            state, info = hmc_step(log_prob, state, self.step_sizes[t], unit_mass, self.n_leapfrog, math.inf, generator)
            zs.append(state.z)
            accepts.append(info.accept_prob)
        return LearnedChain(torch.stack(zs), torch.stack(accepts))

    @staticmethod
    def objective(log_prob: LogProb, chain: LearnedChain) -> torch.Tensor:
        """L_HMC = E_{q^(T)}[log p(z^(T))] (seed002 eq. 5.9), averaged over batch and
        chains; maximise it over the step sizes (and a model's decoder)."""
        return log_prob(chain.final).mean()

    @staticmethod
    def sksd_loss(log_prob: LogProb, chain: LearnedChain) -> torch.Tensor:
        """SKSD between the chains' end points and the target (seed002 eq. 5.10), averaged
        over the batch; minimise it over the inflation. Scores are detached."""
        _, score = log_prob_and_grad(log_prob, chain.final)
        return sliced_ksd(chain.final, score).mean()


def sliced_ksd(z: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """max-SKSD with per-coordinate slices, as in the HH-VAEM code (seed002 §2.5): for each
    dim i, the V-statistic over sample pairs (a, b) of
        s_a k s_b + s_a d_2 k + s_b d_1 k + d_1 d_2 k,   k(u, v) = exp(-(u - v)^2 / h^2),
    u = z_i, s = score_i, h = 2 sqrt(0.5 median (u_a - u_b)^2) (detached); summed over
    dims. z, score (batch, n, dim) -> (batch,)."""
    diff = z.unsqueeze(2) - z.unsqueeze(1)  # (batch, n, n, dim): u_a - u_b
    sq = diff**2
    h2 = (4 * 0.5 * sq.flatten(1, 2).median(1).values).detach().clamp_min(1e-8)  # (batch, dim): h^2
    h2 = h2[:, None, None, :]
    k = torch.exp(-sq / h2)
    d1k = -2 * diff / h2 * k  # d k / d u_a
    d2k = -d1k  # d k / d u_b
    d12k = (2 / h2 - 4 * sq / h2**2) * k
    sa, sb = score.unsqueeze(2), score.unsqueeze(1)
    terms = sa * k * sb + sa * d2k + sb * d1k + d12k  # (batch, n, n, dim)
    return terms.mean((1, 2)).sum(-1)
