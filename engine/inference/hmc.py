"""Hamiltonian Monte Carlo run to stationarity, for diagnostics (the "HMC chains" page).

    result = sample_hmc(log_prob, z0, num_warmup=300, num_samples=300)   # z0 (batch, chains, dim)
    result.draws(0)                                                      # (chains, draws, dim)

Leapfrog (seed002 eq. 5.1) + Metropolis correction (eq. 5.2) from `engine.hamiltonian`,
with momentum r ~ N(0, M), M diagonal; the warm-up (`engine.inference.adaptation`)
adapts the step size to `target_accept` and M to the draws' variances. A transition
whose energy error exceeds `max_energy_error` (Stan: 1000) or is not finite is divergent
and rejected. The step size is jittered uniformly by +-`jitter` every transition so that
a fixed number of leapfrog steps cannot resonate with the target's periods (with fixed L
and eps, a Gaussian chain can return nearly to its start).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from engine.errors import AtlasError
from engine.hamiltonian import LogProb, compiled_leapfrog, hmc_step, init_state, leapfrog, uniform
from engine.inference.adaptation import WarmupSchedule, warmup_init, warmup_update

STATS = ("accept_prob", "energy_error", "divergent")


@dataclass
class HMCResult:
    """A run of `sample_hmc`. Per-transition statistics cover warm-up then sampling,
    (num_warmup + draws, batch, chains); `samples` only the draws after warm-up."""

    samples: torch.Tensor  # (draws, batch, chains, dim)
    warmup_samples: torch.Tensor | None  # (num_warmup, batch, chains, dim) or None
    initial: torch.Tensor  # (batch, chains, dim) the starting points
    accept_prob: torch.Tensor  # (num_warmup + draws, batch, chains)
    step_size: torch.Tensor  # (num_warmup + draws, batch, chains) the (jittered) step used
    energy_error: torch.Tensor  # (num_warmup + draws, batch, chains)
    divergent: torch.Tensor  # (num_warmup + draws, batch, chains) bool
    inv_mass: torch.Tensor  # (batch, chains, dim) the adapted diagonal M^-1
    final_step_size: torch.Tensor  # (batch, chains) the nominal step size after warm-up
    num_warmup: int

    def draws(self, b: int = 0) -> np.ndarray:
        """Post-warm-up draws of batch element b as (chains, draws, dim), for the
        diagnostics in engine.diagnostics.mcmc."""
        return self.samples[:, b].transpose(0, 1).detach().cpu().double().numpy()

    @property
    def mean_accept(self) -> torch.Tensor:
        """Mean acceptance probability after warm-up, (batch, chains)."""
        return self.accept_prob[self.num_warmup :].mean(0)


def _check(z0, target_accept, num_warmup, num_samples, n_leapfrog, step_size, jitter, adapt_per) -> None:
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
    compile: bool = False,
) -> HMCResult:
    """Run HMC from z0 (batch, chains, dim) on log_prob: (batch, chains, dim) -> (batch, chains).

    `step_size` is the starting step (refined by Stan's heuristic when adapting) or, with
    adapt_step_size=False, the step used throughout; with adapt_mass=False, M = I.
    adapt_per="chain" adapts every chain on its own, as Stan does; "posterior" shares
    one step size and one M per batch element, fed by all its chains.
    compile=True runs the leapfrog trajectories through `engine.hamiltonian.compiled_leapfrog`
    (torch.compile): tens of seconds to compile first, then several times fewer seconds per
    step where the chains are few and the steps many; off by default for that start-up.
    """
    _check(z0, target_accept, num_warmup, num_samples, n_leapfrog, step_size, jitter, adapt_per)
    generator = torch.Generator(device=z0.device).manual_seed(seed)
    state = init_state(log_prob, z0.detach())
    if state.log_prob.shape != z0.shape[:2]:
        raise AtlasError(
            f"log_prob must return one value per chain, shape {tuple(z0.shape[:2])}, got {tuple(state.log_prob.shape)}"
        )
    if not torch.isfinite(state.log_prob).all():
        raise AtlasError(
            "log_prob is not finite at some starting points; start the chains where the density is positive"
        )

    schedule = WarmupSchedule(num_warmup, target_accept, adapt_step_size, adapt_mass, pool=adapt_per == "posterior")
    start = torch.full(z0.shape[:2], float(step_size), device=z0.device, dtype=z0.dtype)
    adapt = warmup_init(log_prob, state, start, schedule, generator)
    integrator = compiled_leapfrog(log_prob) if compile else leapfrog
    z_out, used_out, stats = [], [], {k: [] for k in STATS}
    for i in range(num_warmup + num_samples):
        nominal = adapt.step_size
        used = nominal * (1 + jitter * (2 * uniform(nominal, generator) - 1))
        state, info = hmc_step(
            log_prob, state, used.unsqueeze(-1), adapt.inv_mass, n_leapfrog, max_energy_error, generator, integrator
        )
        if i < num_warmup:
            adapt = warmup_update(log_prob, adapt, i, state, info.accept_prob, schedule, generator)
        if keep_warmup or i >= num_warmup:
            z_out.append(state.z)
        used_out.append(used)
        for k in STATS:
            stats[k].append(getattr(info, k))

    z_all = torch.stack(z_out)
    return HMCResult(
        samples=z_all[-num_samples:],
        warmup_samples=z_all[:num_warmup] if keep_warmup else None,
        initial=z0.detach(),
        step_size=torch.stack(used_out),
        **{k: torch.stack(v) for k, v in stats.items()},
        inv_mass=adapt.inv_mass,
        final_step_size=adapt.step_size,
        num_warmup=num_warmup,
    )
