"""HMC warm-up: the step size by stochastic approximation to a target acceptance and a
diagonal mass matrix over Stan's slow windows, as small state-in/state-out functions
(numpyro's `warmup_adapter`).

    schedule = WarmupSchedule(num_warmup=300, target_accept=0.65)
    adapt = warmup_init(log_prob, state, step_size, schedule, generator)
    for i in range(num_warmup):
        state, info = hmc_step(log_prob, state, adapt.step_size.unsqueeze(-1), adapt.inv_mass, ...)
        adapt = warmup_update(log_prob, adapt, i, state, info.accept_prob, schedule, generator)

Step sizes are (batch, chains), M^-1 (batch, chains, dim). With `pool`, every batch
element shares one step size and one M fed by all its chains (the mean acceptance over
chains, the variance of all their draws); otherwise each chain adapts on its own, as Stan.

The schedule is Stan's: a fast buffer, slow windows doubling in length whose draws give
M, a terminal fast buffer; the step size is re-found (Hoffman & Gelman 2014, Alg. 4) and
its adaptation restarted after every update of M. Stan and numpyro then adapt log eps by
dual averaging (Hoffman & Gelman 2014, Alg. 5) and keep the average of its iterates; we
use Kesten's accelerated stochastic approximation (Kesten 1958),

    log eps <- log eps + (a_t - target) / (1 + crossings),

`crossings` counting the sign changes of a_t - target since the restart, and keep the
mean of log eps over the second half of the terminal buffer.

Why: with a fixed number of leapfrog steps on a low-dimensional target, the acceptance
falls from 0.9 to 0.3 while eps grows by a factor 1.8 (the integrator's stability limit;
measured on the correlated Gaussian toy, jitter included). Dual averaging moves log eps by
sqrt(t) / (gamma (t + t0)) per unit of acceptance error, 2.4 after 50 iterations with
Stan's gamma = 0.05, t0 = 10: each step jumps across the cliff, the iterates alternate
between acceptance ~1 and ~0, and their average sits on the safe side (0.89 after warm-up
for a 0.65 target, at 300, 1,000 or 3,000 warm-up iterations; numpyro issue #1786 reports
0.98 for 0.8 on a 10-D Gaussian). Kesten's gain shrinks as soon as the iterates alternate,
so they settle at the crossing whatever its slope: over 300 simulated terminal buffers of
50 iterations with 8 pooled chains, 95% of final step sizes accept within 0.06 of the
target on the toys of the tests, where dual averaging is biased by up to +0.23.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engine.hamiltonian import HMCState, LogProb, kinetic_energy, leapfrog, standard_normal

# Stan's windowed adaptation: initial fast buffer, first slow window, terminal fast buffer
INIT_BUFFER, BASE_WINDOW, TERM_BUFFER = 75, 25, 50


def _shared(t: torch.Tensor, pool: bool) -> torch.Tensor:
    """(batch, chains, ...) -> its mean over chains, broadcast back, when pooling."""
    return t.mean(1, keepdim=True).expand_as(t) if pool else t


# -- the step size ------------------------------------------------------------------------
@dataclass
class StepSizeState:
    log_step: torch.Tensor  # (batch, chains) log eps of the next transition
    crossings: torch.Tensor  # (batch, chains) sign changes of acceptance - target since the restart
    last_error: torch.Tensor  # (batch, chains) acceptance - target of the last transition
    log_step_sum: torch.Tensor  # (batch, chains) sum of the log eps averaged so far
    averaged: int = 0  # how many


def step_size_init(step_size: torch.Tensor) -> StepSizeState:
    zeros = torch.zeros_like(step_size)
    return StepSizeState(step_size.log(), zeros, zeros, zeros)


def step_size_update(s: StepSizeState, accept_prob: torch.Tensor, target: float, average: bool) -> StepSizeState:
    """One transition at exp(s.log_step) accepted with probability accept_prob (batch,
    chains): Kesten's step towards the target; with `average`, that log step counts
    towards the final mean."""
    error = accept_prob - target
    crossings = s.crossings + (error * s.last_error < 0).to(error.dtype)
    log_step = s.log_step + error / (1 + crossings)
    if average:
        return StepSizeState(log_step, crossings, error, s.log_step_sum + s.log_step, s.averaged + 1)
    return StepSizeState(log_step, crossings, error, s.log_step_sum, s.averaged)


def step_size_final(s: StepSizeState) -> torch.Tensor:
    """The mean of the averaged log step sizes, as a step size (batch, chains)."""
    return (s.log_step_sum / s.averaged).exp() if s.averaged else s.log_step.exp()


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
        r = standard_normal(state.z, generator) / inv_mass.sqrt()
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


# -- the mass matrix over slow windows ----------------------------------------------------
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


@dataclass
class WindowMoments:
    """Running sums of the draws in the current slow window."""

    total: torch.Tensor  # (batch, chains, dim)
    total_sq: torch.Tensor  # (batch, chains, dim)
    count: int = 0


def window_init(z: torch.Tensor) -> WindowMoments:
    return WindowMoments(torch.zeros_like(z), torch.zeros_like(z))


def window_update(w: WindowMoments, z: torch.Tensor) -> WindowMoments:
    return WindowMoments(w.total + z, w.total_sq + z**2, w.count + 1)


def window_inv_mass(w: WindowMoments, pool: bool) -> torch.Tensor:
    """The window's variance per dimension, shrunk towards 1e-3 as Stan regularises it:
    (n / (n + 5)) var + 1e-3 (5 / (n + 5)). (batch, chains, dim)."""
    m = w.total.shape[1] if pool else 1  # chains pooled into one estimate
    n = w.count * m
    total, total_sq = m * _shared(w.total, pool), m * _shared(w.total_sq, pool)
    var = (total_sq - total**2 / n) / (n - 1)
    return (n / (n + 5.0)) * var + 1e-3 * (5.0 / (n + 5.0))


# -- the warm-up schedule ----------------------------------------------------------------
@dataclass(frozen=True)
class WarmupSchedule:
    num_warmup: int
    target_accept: float = 0.65
    adapt_step_size: bool = True
    adapt_mass: bool = True
    pool: bool = False  # one step size and M per batch element, from all its chains

    @property
    def windows(self) -> list[tuple[int, int]]:
        return slow_windows(self.num_warmup) if self.adapt_mass else []

    @property
    def averaging_start(self) -> int:
        """The first transition of the second half of the terminal buffer (of the whole
        warm-up without windows), whose log step sizes give the final one."""
        last_restart = self.windows[-1][1] if self.windows else 0
        return (last_restart + self.num_warmup) // 2


@dataclass
class WarmupState:
    step_size: torch.Tensor  # (batch, chains) the nominal step size of the next transition
    inv_mass: torch.Tensor  # (batch, chains, dim) diagonal M^-1
    step: StepSizeState | None  # None when the step size is not adapted
    window: WindowMoments


def _restart_step_size(log_prob, state, step_size, inv_mass, schedule, generator) -> StepSizeState:
    found = find_reasonable_step_size(log_prob, state, step_size, inv_mass, generator)
    return step_size_init(_shared(found.log(), schedule.pool).exp())


def warmup_init(
    log_prob: LogProb,
    state: HMCState,
    step_size: torch.Tensor,
    schedule: WarmupSchedule,
    generator: torch.Generator | None = None,
) -> WarmupState:
    """M = I and, when adapting the step size, Stan's heuristic start from `step_size`."""
    inv_mass = torch.ones_like(state.z)
    step = None
    if schedule.adapt_step_size and schedule.num_warmup > 0:
        step = _restart_step_size(log_prob, state, step_size, inv_mass, schedule, generator)
        step_size = step.log_step.exp()
    return WarmupState(step_size, inv_mass, step, window_init(state.z))


def warmup_update(
    log_prob: LogProb,
    adapt: WarmupState,
    i: int,
    state: HMCState,
    accept_prob: torch.Tensor,
    schedule: WarmupSchedule,
    generator: torch.Generator | None = None,
) -> WarmupState:
    """After warm-up transition i (0-based) reached `state` with `accept_prob`: a step-size
    update; the draw added to its slow window; at a window's end a new M, the step size
    re-found for it and its adaptation restarted; after the last warm-up transition, the
    averaged step size."""
    step, inv_mass, window, step_size = adapt.step, adapt.inv_mass, adapt.window, adapt.step_size
    if step is not None:
        average = i >= schedule.averaging_start
        step = step_size_update(step, _shared(accept_prob, schedule.pool), schedule.target_accept, average)
        step_size = step.log_step.exp()
    for start, end in schedule.windows:
        if start <= i < end:
            window = window_update(window, state.z)
        if i == end - 1:
            inv_mass = window_inv_mass(window, schedule.pool)
            window = window_init(state.z)
            if step is not None:
                step = _restart_step_size(log_prob, state, step_size, inv_mass, schedule, generator)
                step_size = step.log_step.exp()
    if step is not None and i == schedule.num_warmup - 1:
        step_size = step_size_final(step)
    return WarmupState(step_size, inv_mass, step, window)
