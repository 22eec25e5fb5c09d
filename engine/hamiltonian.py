"""The HMC kernel: leapfrog and one Metropolis-corrected transition, batched over chains.

Shapes: z (batch, chains, dim); `log_prob(z) -> (batch, chains)`, each entry depending
only on its own z[b, c] (so one backward pass of the sum gives every chain's gradient).
Momentum r ~ N(0, M) with M diagonal, given as its inverse `inv_mass`, broadcastable
against z. Each function takes a state and returns a new one, in the style of numpyro's
`infer/hmc_util.py`; the samplers built on them are `engine.inference.hmc.sample_hmc`
(adapted, run to stationarity) and `engine.models.learned_hmc.LearnedHMC` (HH-VAEM's
trained step sizes).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

LogProb = Callable[[torch.Tensor], torch.Tensor]  # (batch, chains, dim) -> (batch, chains)


@dataclass
class HMCState:
    z: torch.Tensor  # (batch, chains, dim)
    log_prob: torch.Tensor  # (batch, chains)
    grad: torch.Tensor  # (batch, chains, dim), d log_prob / dz


@dataclass
class StepInfo:
    accept_prob: torch.Tensor  # (batch, chains) min(1, exp(-energy_error)); 0 if divergent
    energy_error: torch.Tensor  # (batch, chains) H(z', r') - H(z, r)
    divergent: torch.Tensor  # (batch, chains) bool


def standard_normal(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """N(0, 1) draws shaped, placed and typed like `like`."""
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def uniform(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """U(0, 1) draws shaped, placed and typed like `like`."""
    return torch.rand(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def log_prob_and_grad(log_prob: LogProb, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log_prob(z) (batch, chains) and its gradient (batch, chains, dim), both detached."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        lp = log_prob(z)
        (grad,) = torch.autograd.grad(lp.sum(), z)
    return lp.detach(), grad


def init_state(log_prob: LogProb, z: torch.Tensor) -> HMCState:
    """The state at z; z is kept as given (with its graph, if it has one)."""
    lp, grad = log_prob_and_grad(log_prob, z)
    return HMCState(z, lp, grad)


def kinetic_energy(r: torch.Tensor, inv_mass: torch.Tensor) -> torch.Tensor:
    """1/2 r^T M^-1 r for diagonal M: (batch, chains)."""
    return 0.5 * (r * r * inv_mass).sum(-1)


def leapfrog(
    log_prob: LogProb, state: HMCState, r: torch.Tensor, step: torch.Tensor, inv_mass: torch.Tensor, n_steps: int
) -> tuple[HMCState, torch.Tensor]:
    """n_steps leapfrog steps (seed002 eq. 5.1); step broadcasts against (batch, chains, dim).
    Gradients of log_prob are detached; z and r keep any graph through state.z and step."""
    z, grad = state.z, state.grad
    r = r + 0.5 * step * grad
    for i in range(n_steps):
        z = z + step * inv_mass * r
        lp, grad = log_prob_and_grad(log_prob, z)
        r = r + (step if i < n_steps - 1 else 0.5 * step) * grad
    return HMCState(z, lp, grad), r


Integrator = Callable[[LogProb, HMCState, torch.Tensor, torch.Tensor, torch.Tensor, int], tuple[HMCState, torch.Tensor]]


def compiled_leapfrog(log_prob: LogProb) -> Integrator:
    """`leapfrog` for this one log_prob as a single torch.compile'd function: the n_steps steps
    unrolled, the gradient by torch.func.grad_and_value (no autograd tape), the updates fused by
    Inductor. Same arguments and results as `leapfrog`, for sampling only (nothing is
    differentiable through it). Compiling costs tens of seconds on a CPU, once per log_prob (kept
    on the function as an attribute: pass the same function, not a new lambda or bound method,
    to reuse it), for any number of chains (sizes are symbolic). It pays for long runs of many
    small steps, where eager PyTorch spends its time in per-operation overhead."""
    cached = getattr(log_prob, "_compiled_leapfrog", None)
    if cached is not None:
        return cached

    def summed(z):
        lp = log_prob(z)
        return lp.sum(), lp

    value_and_grad = torch.func.grad_and_value(summed, has_aux=True)

    def trajectory(z, grad, r, step, inv_mass, n_steps: int):
        move = step * inv_mass
        r = r + 0.5 * step * grad
        for i in range(n_steps):
            z = z + move * r
            grad, (_, lp) = value_and_grad(z)
            r = r + (step if i < n_steps - 1 else 0.5 * step) * grad
        return z, lp, grad, r

    compiled = torch.compile(trajectory, fullgraph=True, dynamic=True)

    def integrate(_log_prob, state, r, step, inv_mass, n_steps):
        z, lp, grad, r = compiled(state.z.detach(), state.grad, r.detach(), step.detach(), inv_mass, n_steps)
        return HMCState(z, lp, grad), r

    with contextlib.suppress(AttributeError):  # a bound method takes no attribute: compiled again next time
        log_prob._compiled_leapfrog = integrate
    return integrate


def hmc_step(
    log_prob: LogProb,
    state: HMCState,
    step: torch.Tensor,
    inv_mass: torch.Tensor,
    n_leapfrog: int,
    max_energy_error: float = 1000.0,
    generator: torch.Generator | None = None,
    integrator: Integrator = leapfrog,
) -> tuple[HMCState, StepInfo]:
    """One Metropolis-corrected HMC transition (seed002 eq. 5.2) for every chain at once;
    step and inv_mass broadcast against z (batch, chains, dim).

    A proposal whose energy error H(z', r') - H(z, r) is not finite or exceeds
    `max_energy_error` (Stan: 1000), or whose z' is not finite, is divergent and rejected.
    The accept/reject is a hard mask: gradients flow through the kept z only. `integrator` is
    `leapfrog` or a `compiled_leapfrog(log_prob)`."""
    r = standard_normal(state.z, generator) / inv_mass.sqrt()  # r ~ N(0, M)
    proposal, r_new = integrator(log_prob, state, r, step, inv_mass, n_leapfrog)
    with torch.no_grad():
        h0 = -state.log_prob + kinetic_energy(r, inv_mass)
        h1 = -proposal.log_prob + kinetic_energy(r_new, inv_mass)
        energy_error = torch.nan_to_num(h1 - h0, nan=math.inf)
        divergent = (
            ~torch.isfinite(energy_error) | (energy_error > max_energy_error) | ~torch.isfinite(proposal.z).all(-1)
        )
        accept_prob = torch.where(divergent, 0.0, torch.exp(torch.clamp(-energy_error, max=0.0)))
        accept = uniform(accept_prob, generator) < accept_prob
    keep = accept.unsqueeze(-1)
    new = HMCState(
        torch.where(keep, proposal.z, state.z),
        torch.where(accept, proposal.log_prob, state.log_prob),
        torch.where(keep, proposal.grad, state.grad),
    )
    return new, StepInfo(accept_prob, energy_error, divergent)
