"""Hamiltonian Monte Carlo on any differentiable log-density, batched over chains.

Shapes: z (batch, chains, dim); `log_prob(z) -> (batch, chains)`, each entry depending
only on its own z[b, c] (so one backward pass of the sum gives every chain's gradient).
Nothing loops over batch or chains; the loops are over iterations and leapfrog steps.

Two samplers:

1. `sample_hmc`: HMC run to stationarity, for diagnostics (the "HMC chains" page).
   Leapfrog (seed002 eq. 5.1) + Metropolis correction (eq. 5.2) with momentum
   r ~ N(0, M), M diagonal. During warm-up each chain adapts its own step size by dual
   averaging (Hoffman & Gelman 2014, Alg. 5, Stan's constants) to `target_accept`, and
   its own diagonal M^-1 from the variance of its draws in Stan's doubling "slow"
   windows (75 / 25, 50, 100, ... / 50 iterations at 1,000 warm-up draws; 15% / 75% /
   10% when warm-up is short), regularised as Stan does; the step size is re-found and
   dual averaging restarted after every update of M. A transition whose energy error
   H(z', r') - H(z, r) exceeds `max_energy_error` (Stan: 1000) or is not finite is
   divergent and rejected. The step size is jittered uniformly by +-`jitter` every
   transition so that a fixed number of leapfrog steps cannot resonate with the
   target's periods (with fixed L and eps, a Gaussian chain can return nearly to its
   start).

2. `LearnedHMC`: the HH-VAEM sampler (seed002 §2.5, anchors A5): T transitions of
   `n_leapfrog` steps started from the encoder's Gaussian inflated per layer, with a
   learnable T x dim step-size matrix trained by maximising E[log p(z_T)] (eq. 5.9) and
   the inflation by minimising SKSD (eq. 5.10). M = I, as in the HH-VAEM code.

`latent_posterior(model, x)` builds the target p(z | x) ∝ p(x | z) p(z) of any
`LatentModel`, started from its encoder; for hierarchical models (groups of kind
"layer") it runs in the prior's noise space eps (seed002 eq. 5.5, §5.2.4).

The step functions (`leapfrog`, `hmc_step`, `dual_averaging_update`) take a state and
return a new one, in the style of numpyro's `infer/hmc.py`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from engine.errors import AtlasError

LogProb = Callable[[torch.Tensor], torch.Tensor]  # (batch, chains, dim) -> (batch, chains)

# Dual averaging constants (Hoffman & Gelman 2014 §3.2.1; Stan's defaults)
DA_GAMMA, DA_T0, DA_KAPPA = 0.05, 10.0, 0.75
# Stan's windowed adaptation: initial fast buffer, first slow window, terminal fast buffer
INIT_BUFFER, BASE_WINDOW, TERM_BUFFER = 75, 25, 50


# -- state and the small steps -----------------------------------------------------------
@dataclass
class HMCState:
    z: torch.Tensor  # (batch, chains, dim)
    log_prob: torch.Tensor  # (batch, chains)
    grad: torch.Tensor  # (batch, chains, dim), d log_prob / dz


def log_prob_and_grad(log_prob: LogProb, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log_prob(z) (batch, chains) and its gradient (batch, chains, dim), both detached."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        lp = log_prob(z)
        (grad,) = torch.autograd.grad(lp.sum(), z)
    return lp.detach(), grad


def init_state(log_prob: LogProb, z: torch.Tensor) -> HMCState:
    lp, grad = log_prob_and_grad(log_prob, z)
    return HMCState(z.detach(), lp, grad)


def kinetic_energy(r: torch.Tensor, inv_mass: torch.Tensor) -> torch.Tensor:
    """1/2 r^T M^-1 r for diagonal M: (batch, chains)."""
    return 0.5 * (r * r * inv_mass).sum(-1)


def leapfrog(
    log_prob: LogProb, state: HMCState, r: torch.Tensor, step: torch.Tensor, inv_mass: torch.Tensor, n_steps: int
) -> tuple[HMCState, torch.Tensor]:
    """n_steps leapfrog steps (seed002 eq. 5.1); step broadcasts against (batch, chains, dim)."""
    z, grad = state.z, state.grad
    r = r + 0.5 * step * grad
    for i in range(n_steps):
        z = z + step * inv_mass * r
        lp, grad = log_prob_and_grad(log_prob, z)
        r = r + (step if i < n_steps - 1 else 0.5 * step) * grad
    return HMCState(z, lp, grad), r


@dataclass
class StepInfo:
    accept_prob: torch.Tensor  # (batch, chains) min(1, exp(-energy_error)); 0 if divergent
    energy_error: torch.Tensor  # (batch, chains) H(z', r') - H(z, r)
    divergent: torch.Tensor  # (batch, chains) bool
    energy: torch.Tensor  # (batch, chains) H of the state kept, with its momentum


def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def _rand(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)


def hmc_step(
    log_prob: LogProb,
    state: HMCState,
    step_size: torch.Tensor,
    inv_mass: torch.Tensor,
    n_leapfrog: int,
    max_energy_error: float = 1000.0,
    generator: torch.Generator | None = None,
) -> tuple[HMCState, StepInfo]:
    """One Metropolis-corrected HMC transition (seed002 eq. 5.2) for every chain at once;
    step_size (batch, chains), inv_mass (batch, chains, dim)."""
    r = _randn(state.z, generator) / inv_mass.sqrt()  # r ~ N(0, M)
    h0 = -state.log_prob + kinetic_energy(r, inv_mass)
    proposal, r_new = leapfrog(log_prob, state, r, step_size.unsqueeze(-1), inv_mass, n_leapfrog)
    h1 = -proposal.log_prob + kinetic_energy(r_new, inv_mass)
    energy_error = torch.nan_to_num(h1 - h0, nan=math.inf)
    divergent = energy_error > max_energy_error
    accept_prob = torch.where(divergent, 0.0, torch.exp(torch.clamp(-energy_error, max=0.0)))
    accept = _rand(accept_prob.shape, accept_prob, generator) < accept_prob
    keep = accept.unsqueeze(-1)
    new = HMCState(
        torch.where(keep, proposal.z, state.z),
        torch.where(accept, proposal.log_prob, state.log_prob),
        torch.where(keep, proposal.grad, state.grad),
    )
    return new, StepInfo(accept_prob, energy_error, divergent, torch.where(accept, h1, h0))


# -- dual averaging ----------------------------------------------------------------------
@dataclass
class DualAveragingState:
    mu: torch.Tensor  # (batch, chains) log(10 eps_0), the point log eps is shrunk towards
    log_step: torch.Tensor  # (batch, chains) the step size to use next
    log_step_avg: torch.Tensor  # (batch, chains) the iterate average, used after warm-up
    h_bar: torch.Tensor  # (batch, chains) running mean of target - acceptance
    t: int = 0


def dual_averaging_init(step_size: torch.Tensor) -> DualAveragingState:
    log_step = step_size.log()
    return DualAveragingState(
        math.log(10.0) + log_step, log_step, torch.zeros_like(log_step), torch.zeros_like(log_step)
    )


def dual_averaging_update(s: DualAveragingState, accept_prob: torch.Tensor, target: float) -> DualAveragingState:
    """Hoffman & Gelman 2014, Alg. 5: h_t = (1 - 1/(t+t0)) h_{t-1} + (target - a_t)/(t+t0),
    log eps_t = mu - sqrt(t)/gamma h_t, log eps_avg_t = t^-kappa log eps_t + (1 - t^-kappa) log eps_avg_{t-1}."""
    t = s.t + 1
    eta = 1.0 / (t + DA_T0)
    h_bar = (1 - eta) * s.h_bar + eta * (target - accept_prob)
    log_step = s.mu - math.sqrt(t) / DA_GAMMA * h_bar
    w = t**-DA_KAPPA
    return DualAveragingState(s.mu, log_step, w * log_step + (1 - w) * s.log_step_avg, h_bar, t)


def find_reasonable_step_size(
    log_prob: LogProb,
    state: HMCState,
    step_size: torch.Tensor,
    inv_mass: torch.Tensor,
    generator: torch.Generator | None = None,
    max_iter: int = 60,
) -> torch.Tensor:
    """Stan's heuristic, per chain: double (or halve) the step size until the acceptance
    of one leapfrog step crosses 0.8 (Hoffman & Gelman 2014, Alg. 4). (batch, chains)."""
    step_size = step_size.clone()

    def log_accept(eps):
        r = _randn(state.z, generator) / inv_mass.sqrt()
        h0 = -state.log_prob + kinetic_energy(r, inv_mass)
        new, r_new = leapfrog(log_prob, state, r, eps.unsqueeze(-1), inv_mass, 1)
        return torch.nan_to_num(h0 - (-new.log_prob + kinetic_energy(r_new, inv_mass)), nan=-math.inf)

    direction = torch.where(log_accept(step_size) > math.log(0.8), 2.0, 0.5)
    active = torch.ones_like(step_size, dtype=torch.bool)
    for _ in range(max_iter):
        la = log_accept(step_size)
        crossed = torch.where(direction > 1, la <= math.log(0.8), la >= math.log(0.8))
        active = active & ~crossed
        if not active.any():
            break
        step_size = torch.where(active, step_size * direction, step_size)
    return step_size


def slow_windows(num_warmup: int) -> list[tuple[int, int]]:
    """Stan's mass-matrix windows [start, end) of warm-up iterations: after an initial
    fast buffer, windows doubling in length, the last stretched to the terminal buffer."""
    if num_warmup < 20:
        return []
    init, base, term = INIT_BUFFER, BASE_WINDOW, TERM_BUFFER
    if init + base + term > num_warmup:
        init, term = int(0.15 * num_warmup), int(0.1 * num_warmup)
        base = num_warmup - init - term
    windows, start, size, stop = [], init, base, num_warmup - term
    while start < stop:
        end = start + size
        if end + 2 * size > stop:
            end = stop
        windows.append((start, end))
        start, size = end, 2 * size
    return windows


# -- the sampler ---------------------------------------------------------------------------
@dataclass
class HMCResult:
    """A run of `sample_hmc`. Per-transition statistics cover warm-up then sampling,
    (num_warmup + draws, batch, chains); `samples` only the draws after warm-up."""

    samples: torch.Tensor  # (draws, batch, chains, dim)
    warmup_samples: torch.Tensor | None  # (num_warmup, batch, chains, dim) or None
    initial: torch.Tensor  # (batch, chains, dim) the starting points
    log_prob: torch.Tensor  # (draws, batch, chains)
    accept_prob: torch.Tensor  # (num_warmup + draws, batch, chains)
    step_size: torch.Tensor  # (num_warmup + draws, batch, chains) the (jittered) step used
    energy_error: torch.Tensor  # (num_warmup + draws, batch, chains)
    divergent: torch.Tensor  # (num_warmup + draws, batch, chains) bool
    energy: torch.Tensor  # (num_warmup + draws, batch, chains) Hamiltonian kept
    inv_mass: torch.Tensor  # (batch, chains, dim) the adapted diagonal M^-1
    final_step_size: torch.Tensor  # (batch, chains) the nominal step size after warm-up
    num_warmup: int
    n_leapfrog: int

    def draws(self, b: int = 0) -> np.ndarray:
        """Post-warm-up draws of batch element b as (chains, draws, dim), for the
        diagnostics in engine.diagnostics.mcmc."""
        return self.samples[:, b].transpose(0, 1).detach().cpu().double().numpy()

    def sampling_stats(self, name: str, b: int = 0) -> np.ndarray:
        """A per-transition statistic after warm-up for batch element b, (chains, draws)."""
        values = getattr(self, name)[self.num_warmup :, b]
        return values.transpose(0, 1).detach().cpu().double().numpy()

    @property
    def mean_accept(self) -> torch.Tensor:
        """Mean acceptance probability after warm-up, (batch, chains)."""
        return self.accept_prob[self.num_warmup :].mean(0)


def sample_hmc(
    log_prob: LogProb,
    z0: torch.Tensor,
    *,
    num_warmup: int = 500,
    num_samples: int = 500,
    n_leapfrog: int = 10,
    step_size: float = 0.1,
    target_accept: float = 0.65,
    adapt_step_size: bool = True,
    adapt_mass: bool = True,
    jitter: float = 0.3,
    adapt_per: Literal["chain", "posterior"] = "chain",
    max_energy_error: float = 1000.0,
    keep_warmup: bool = True,
    seed: int = 0,
) -> HMCResult:
    """Run HMC from z0 (batch, chains, dim) on log_prob: (batch, chains, dim) -> (batch, chains).

    `step_size` is the starting step (refined by Stan's heuristic when adapting) or, with
    adapt_step_size=False, the step used throughout; with adapt_mass=False, M = I.
    adapt_per="chain" adapts every chain on its own, as Stan does; "posterior" shares
    one step size and one M per batch element, fed by all its chains: dual averaging
    then sees the mean acceptance over chains instead of one noisy value, and ends much
    closer to the target (a single chain's iterates swing by about e^(+-0.5) per step,
    and the average of log step sizes that it returns accepts more often than the target).
    """
    if z0.dim() != 3:
        raise AtlasError(f"starting points must be shaped (batch, chains, dim), got {tuple(z0.shape)}")
    if not 0.0 < target_accept < 1.0:
        raise AtlasError(f"target_accept must be between 0 and 1 (0.65 is usual for HMC), got {target_accept}")
    for name, value, low in (
        ("num_warmup", num_warmup, 0),
        ("num_samples", num_samples, 1),
        ("n_leapfrog", n_leapfrog, 1),
    ):
        if not isinstance(value, int) or value < low:
            raise AtlasError(f"{name} must be an integer >= {low}, got {value!r}")
    if not (step_size > 0 and math.isfinite(step_size)):
        raise AtlasError(f"step_size must be a positive number, got {step_size!r}")
    if not 0.0 <= jitter < 1.0:
        raise AtlasError(f"jitter must be in [0, 1), got {jitter!r}")
    if adapt_per not in ("chain", "posterior"):
        raise AtlasError(f"adapt_per must be 'chain' or 'posterior', got {adapt_per!r}")
    pool = adapt_per == "posterior"

    def shared(t):  # (batch, chains, ...) -> its mean over chains, broadcast back
        return t.mean(1, keepdim=True).expand_as(t) if pool else t

    generator = torch.Generator(device=z0.device).manual_seed(seed)
    state = init_state(log_prob, z0)
    if state.log_prob.shape != z0.shape[:2]:
        raise AtlasError(
            f"log_prob must return one value per chain, shape {tuple(z0.shape[:2])}, got {tuple(state.log_prob.shape)}"
        )
    if not torch.isfinite(state.log_prob).all():
        raise AtlasError(
            "log_prob is not finite at some starting points; start the chains where the density is positive"
        )

    inv_mass = torch.ones_like(z0)
    eps = torch.full(z0.shape[:2], float(step_size), device=z0.device, dtype=z0.dtype)
    adapting = adapt_step_size and num_warmup > 0
    if adapting:
        eps = shared(find_reasonable_step_size(log_prob, state, eps, inv_mass, generator).log()).exp()
        da = dual_averaging_init(eps)
    windows = {end - 1: start for start, end in slow_windows(num_warmup)} if adapt_mass else {}
    in_window = {i for start, end in slow_windows(num_warmup) for i in range(start, end)} if adapt_mass else set()
    window_sum = torch.zeros_like(z0)
    window_sq = torch.zeros_like(z0)

    total = num_warmup + num_samples
    z_out, lp_out, stats = [], [], {k: [] for k in ("accept_prob", "step_size", "energy_error", "divergent", "energy")}
    for i in range(total):
        warm = i < num_warmup
        nominal = da.log_step.exp() if (warm and adapting) else eps
        used = nominal * (1 + jitter * (2 * _rand(nominal.shape, nominal, generator) - 1))
        state, info = hmc_step(log_prob, state, used, inv_mass, n_leapfrog, max_energy_error, generator)
        if warm and adapting:
            da = dual_averaging_update(da, shared(info.accept_prob), target_accept)
        if warm and i in in_window:
            window_sum, window_sq = window_sum + state.z, window_sq + state.z**2
        if warm and i in windows:
            m = z0.shape[1] if pool else 1  # chains pooled into one estimate
            n = (i + 1 - windows[i]) * m
            total, total_sq = m * shared(window_sum), m * shared(window_sq)
            var = (total_sq - total**2 / n) / (n - 1)
            inv_mass = (n / (n + 5.0)) * var + 1e-3 * (5.0 / (n + 5.0))  # Stan's regularisation
            window_sum, window_sq = torch.zeros_like(z0), torch.zeros_like(z0)
            if adapting:
                found = find_reasonable_step_size(log_prob, state, da.log_step.exp(), inv_mass, generator)
                eps = shared(found.log()).exp()
                da = dual_averaging_init(eps)
        if adapting and i == num_warmup - 1:
            eps = da.log_step_avg.exp()
        if keep_warmup or not warm:
            z_out.append(state.z)
        if not warm:
            lp_out.append(state.log_prob)
        stats["step_size"].append(used)
        for k in ("accept_prob", "energy_error", "divergent", "energy"):
            stats[k].append(getattr(info, k))

    z_all = torch.stack(z_out)
    return HMCResult(
        samples=z_all[-num_samples:],
        warmup_samples=z_all[:num_warmup] if keep_warmup else None,
        initial=z0.detach(),
        log_prob=torch.stack(lp_out),
        **{k: torch.stack(v) for k, v in stats.items()},
        inv_mass=inv_mass,
        final_step_size=eps,
        num_warmup=num_warmup,
        n_leapfrog=n_leapfrog,
    )


# -- HH-VAEM: learned step sizes and inflation ---------------------------------------------
@dataclass
class LearnedChain:
    z: torch.Tensor  # (T + 1, batch, chains, dim) the whole chain, z[0] the inflated start
    accept_prob: torch.Tensor  # (T, batch, chains)
    divergent: torch.Tensor  # (T, batch, chains) bool

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
        z = mean + std * self.inflation * _randn(mean, generator)  # (batch, chains, dim)
        zs, accepts, divergents = [z], [], []
        for t in range(self.T):
            phi = self.step_sizes[t]  # (dim,)
            lp0, grad = log_prob_and_grad(log_prob, z)
            r0 = _randn(z, generator)  # M = I
            r = r0 + 0.5 * phi * grad
            z_new = z
            for i in range(self.n_leapfrog):  # seed002 eq. 5.1 with M = I
                z_new = z_new + phi * r
                lp1, grad = log_prob_and_grad(log_prob, z_new)
                r = r + (phi if i < self.n_leapfrog - 1 else 0.5 * phi) * grad
            with torch.no_grad():  # eq. 5.2, a hard mask
                energy_error = torch.nan_to_num(
                    (-lp1 + 0.5 * (r * r).sum(-1)) - (-lp0 + 0.5 * (r0 * r0).sum(-1)), nan=math.inf
                )
                divergent = ~torch.isfinite(energy_error) | ~torch.isfinite(z_new).all(-1)
                accept_prob = torch.where(divergent, 0.0, torch.exp(torch.clamp(-energy_error, max=0.0)))
                accept = _rand(accept_prob.shape, accept_prob, generator) < accept_prob
            z = torch.where(accept.unsqueeze(-1), z_new, z)
            zs.append(z)
            accepts.append(accept_prob)
            divergents.append(divergent)
        return LearnedChain(torch.stack(zs), torch.stack(accepts), torch.stack(divergents))

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


# -- the latent posterior of a model -------------------------------------------------------
@dataclass
class LatentPosterior:
    """p(z | x) ∝ p(x | z) p(z) of a model as a flat target for the samplers.

    log_prob: (batch, chains, dim) -> (batch, chains); mean/std (batch, dim): the
    encoder's Gaussian in the sampling space (z, or the prior noise eps for a
    hierarchical model); to_latents maps flat samples (..., batch, chains, dim) to the
    model's latents {group: (..., chains, batch, size)}, ready for `model.decode`."""

    log_prob: LogProb
    mean: torch.Tensor
    std: torch.Tensor
    to_latents: Callable[[torch.Tensor], dict[str, torch.Tensor]]
    space: Literal["z", "noise"]
    names: list[str]
    sizes: list[int]

    def initial(self, chains: int, inflation: float = 1.0, seed: int = 0) -> torch.Tensor:
        """Starting points (batch, chains, dim) drawn from the encoder's Gaussian, its
        standard deviation multiplied by `inflation`."""
        g = torch.Generator(device=self.mean.device).manual_seed(seed)
        mean = self.mean.unsqueeze(1).expand(-1, chains, -1)
        return mean + inflation * self.std.unsqueeze(1) * _randn(mean, g)


def _split_groups(z: torch.Tensor, names: list[str], sizes: list[int]) -> dict[str, torch.Tensor]:
    """(..., batch, chains, dim) -> {name: (..., chains, batch, size)}."""
    zt = z.transpose(-3, -2)
    return dict(zip(names, zt.split(sizes, dim=-1)))


def latent_posterior(model, x: torch.Tensor, mask: torch.Tensor | None = None) -> LatentPosterior:
    """The posterior of `model` given inputs x (batch, *shape), started from its encoder.

    Flat models: target log p(x, z) = log p(x|z) + log p(z) over the groups concatenated.
    Hierarchical models (any group of kind "layer"): the chain runs over the prior noise
    eps, z_l = mu_l(z_<l) + sigma_l(z_<l) eps_l, with target
    log p(x | z(eps)) + log N(eps; 0, I) (seed002 §2.5, eq. 5.5, §5.2.4).
    mask (batch, *shape) of 0/1: the posterior given the observed entries only,
    p(z | x_observed) (inpainting); the encoder then sees x with the rest set to 0.
    """
    groups = model.latent_groups
    names, sizes = [g.name for g in groups], [g.size for g in groups]
    hierarchical = any(g.kind == "layer" for g in groups)
    if hierarchical and not all(hasattr(model, m) for m in ("encode_noise", "log_joint_noise", "latents_from_noise")):
        raise AtlasError(
            f"{type(model).__name__} is hierarchical but has no noise-space parameterisation "
            "(encode_noise, log_joint_noise, latents_from_noise); HMC directly on its layers fails (seed002 §5.2.4)"
        )
    if mask is not None:
        if hierarchical or "mask" not in inspect.signature(model.log_joint).parameters:
            raise AtlasError(f"{type(model).__name__} cannot condition on part of an input; inpaint with a VAE")
        mask = mask.to(x.dtype).expand_as(x)
    seen = x if mask is None else x * mask
    with torch.no_grad():
        q = model.encode_noise(seen) if hierarchical else model.encode(seen)
    mean = torch.cat([q[n].mean.reshape(x.shape[0], -1) for n in names], -1)
    std = torch.cat([q[n].std.reshape(x.shape[0], -1) for n in names], -1)
    joint = model.log_joint_noise if hierarchical else model.log_joint
    extra = {} if mask is None else {"mask": mask}

    def log_prob(z):  # (batch, chains, dim) -> (batch, chains)
        return joint(x, _split_groups(z, names, sizes), **extra).transpose(0, 1)

    def to_latents(z):
        with torch.no_grad():
            groups_z = _split_groups(z, names, sizes)
            return model.latents_from_noise(groups_z) if hierarchical else groups_z

    return LatentPosterior(log_prob, mean, std, to_latents, "noise" if hierarchical else "z", names, sizes)
