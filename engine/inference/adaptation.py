"""HMC warm-up: the step size by dual averaging and a diagonal mass matrix over Stan's
slow windows, as small state-in/state-out functions (numpyro's `warmup_adapter`).

    schedule = WarmupSchedule(num_warmup=300, target_accept=0.65)
    adapt = warmup_init(log_prob, state, step_size, schedule, generator)
    for i in range(num_warmup):
        state, info = hmc_step(log_prob, state, adapt.step_size, adapt.inv_mass, ...)
        adapt = warmup_update(log_prob, adapt, i, state, info.accept_prob, schedule, generator)

Step sizes are (batch, chains), M^-1 (batch, chains, dim). With `pool`, every batch
element shares one step size and one M fed by all its chains (the mean acceptance over
chains, the variance of all their draws); otherwise each chain adapts on its own, as Stan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engine.hamiltonian import HMCState, LogProb, kinetic_energy, leapfrog, standard_normal

# Dual averaging constants (Hoffman & Gelman 2014 §3.2.1; Stan's defaults)
DA_GAMMA, DA_T0, DA_KAPPA = 0.05, 10.0, 0.75
# Stan's windowed adaptation: initial fast buffer, first slow window, terminal fast buffer
INIT_BUFFER, BASE_WINDOW, TERM_BUFFER = 75, 25, 50


# -- dual averaging of the log step size ---------------------------------------------------
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


@dataclass
class WarmupState:
    step_size: torch.Tensor  # (batch, chains) the nominal step size of the next transition
    inv_mass: torch.Tensor  # (batch, chains, dim) diagonal M^-1
    dual_averaging: DualAveragingState | None
    window: WindowMoments


def _shared(t: torch.Tensor, pool: bool) -> torch.Tensor:
    """(batch, chains, ...) -> its mean over chains, broadcast back, when pooling."""
    return t.mean(1, keepdim=True).expand_as(t) if pool else t


def _restart_step_size(log_prob, state, step_size, inv_mass, schedule, generator) -> DualAveragingState:
    found = find_reasonable_step_size(log_prob, state, step_size, inv_mass, generator)
    return dual_averaging_init(_shared(found.log(), schedule.pool).exp())


def warmup_init(
    log_prob: LogProb,
    state: HMCState,
    step_size: torch.Tensor,
    schedule: WarmupSchedule,
    generator: torch.Generator | None = None,
) -> WarmupState:
    """M = I and, when adapting the step size, Stan's heuristic start from `step_size`."""
    inv_mass = torch.ones_like(state.z)
    da = None
    if schedule.adapt_step_size and schedule.num_warmup > 0:
        da = _restart_step_size(log_prob, state, step_size, inv_mass, schedule, generator)
        step_size = da.log_step.exp()
    return WarmupState(step_size, inv_mass, da, window_init(state.z))


def warmup_update(
    log_prob: LogProb,
    adapt: WarmupState,
    i: int,
    state: HMCState,
    accept_prob: torch.Tensor,
    schedule: WarmupSchedule,
    generator: torch.Generator | None = None,
) -> WarmupState:
    """After warm-up transition i (0-based) reached `state` with `accept_prob`: a dual
    averaging step; the draw added to its slow window; at a window's end a new M, the
    step size re-found for it and dual averaging restarted; after the last warm-up
    transition, the averaged step size."""
    da, inv_mass, window, step_size = adapt.dual_averaging, adapt.inv_mass, adapt.window, adapt.step_size
    if da is not None:
        da = dual_averaging_update(da, _shared(accept_prob, schedule.pool), schedule.target_accept)
        step_size = da.log_step.exp()
    for start, end in schedule.windows:
        if start <= i < end:
            window = window_update(window, state.z)
        if i == end - 1:
            inv_mass = window_inv_mass(window, schedule.pool)
            window = window_init(state.z)
            if da is not None:
                da = _restart_step_size(log_prob, state, step_size, inv_mass, schedule, generator)
                step_size = da.log_step.exp()
    if da is not None and i == schedule.num_warmup - 1:
        step_size = da.log_step_avg.exp()
    return WarmupState(step_size, inv_mass, da, window)
