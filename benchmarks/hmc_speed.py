"""HMC speed: effective samples per second against Pyro and NumPyro, and leapfrog steps per second.

  (1) ESS/s, 64 chains, against Pyro, on the latent posterior p(z | x) ∝ p(x | z) p(z) of the demo
      digits VAE (`assets/runs/*digits-vae-3dcc`, 8-D latent, 8x8 Bernoulli images) for the first
      --inputs test images, built by `engine.inference.posterior.latent_posterior`: our `sample_hmc`
      (all chains in one batched call) against Pyro's `HMC` + `MCMC` with the same potential (minus
      our log_prob, one chain at a time), the same fixed step size, leapfrog steps and number of
      samples, no adaptation on either side (identity mass, no step-size jitter, no warm-up), from
      the same starting points (the end of an untimed burn-in). Bulk ESS (min and mean over
      dimensions) by `engine.diagnostics.mcmc.ess_bulk` for both. Pyro's chains are run in blocks of
      chains / --pyro-blocks, each block interleaved with one full 64-chain run of ours, so that
      changes in machine load hit both sides alike; Pyro's ESS is that of all blocks together,
      its time their sum. A mean check compares the two sides' posterior means in MCSE units.
      For context, ours with its default adaptation (step size per chain, diagonal mass,
      jitter 0.3), warm-up included in the time.
  (3) ESS/s against NumPyro (JAX on the CPU, `chain_method="vectorized"`) on two targets written
      natively on each side (a torch log-density for ours, jax.numpy for NumPyro): a 100-D Gaussian
      with condition number 100 (rotated covariance, variances log-spaced from 1 to 100) and a
      Bayesian logistic regression on scikit-learn's breast-cancer table; 64 to 4,096 chains, the
      same fixed step size, leapfrog steps, draws and starting points, identity mass, no warm-up or
      jitter. Ours eager and with compile=True (torch.compile of the leapfrog). NumPyro's time
      leaves out JAX's compilation, recorded apart. Same torch and XLA thread count (--native-threads).
  (2) Leapfrog steps per second for 1 to 4,096 chains (powers of 4) on the CPU at
      torch.set_num_threads 1 and 2, and on CUDA when torch sees a GPU; run last, it takes what is
      left of --time-budget.

Usage (from the repository root):
    .venv/bin/pip install -r benchmarks/requirements.txt
    OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/hmc_speed.py   # ~7 minutes, <= ~10
    OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/hmc_speed.py --quick   # smoke test

OMP_WAIT_POLICY=PASSIVE matters on a busy machine: with OpenMP's default spin-waiting, two
threads wait a whole time slice for each other whenever one is descheduled (see the README).

Results go to benchmarks/results/hmc_speed.json (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import Deadline, cpu_name, display_path, fixed_hmc, loadavg  # noqa: E402
from engine.diagnostics.mcmc import ess_bulk, mcse_mean, rhat  # noqa: E402
from engine.inference.hmc import sample_hmc  # noqa: E402
from engine.inference.posterior import latent_posterior  # noqa: E402
from engine.loading import load_run_model  # noqa: E402
from engine.store import Run  # noqa: E402
from engine.store.atomic import atomic_write_json  # noqa: E402

try:
    import pyro
    from pyro.infer.mcmc import HMC, MCMC
except ImportError:  # pragma: no cover - benchmark-only dependency
    sys.exit("pyro-ppl is not installed: .venv/bin/pip install -r benchmarks/requirements.txt")

OUT_DEFAULT = REPO / "benchmarks" / "results" / "hmc_speed.json"
RUN_GLOB = "*digits-vae-3dcc"


def load_demo(device: str = "cpu"):
    run_dir = next(iter(sorted((REPO / "assets" / "runs").glob(RUN_GLOB))), None)
    if run_dir is None:
        sys.exit(f"no demo run matching assets/runs/{RUN_GLOB}")
    loaded = load_run_model(Run.from_dir(run_dir, readonly=True), device=device)
    return run_dir, loaded.model, loaded.spec.load_data("test")


def ess_summary(draws: np.ndarray) -> dict:
    """draws (chains, draws, dim) -> bulk ESS min / mean over dimensions, and max R-hat."""
    ess = ess_bulk(draws)
    return {
        "ess_bulk_min": float(ess.min()),
        "ess_bulk_mean": float(ess.mean()),
        "ess_bulk_per_dim": [round(float(e), 1) for e in ess],
        "rhat_max": float(np.max(rhat(draws))),
    }


# -- part 1: ESS/s against Pyro ---------------------------------------------------------------


def pyro_block(
    post, start: torch.Tensor, samples: int, n_leapfrog: int, step_size: float, seed: int
) -> tuple[np.ndarray, float, list[str]]:
    """Pyro's HMC on chains start (chains, dim), adaptation off; draws (chains, samples, dim),
    wall seconds, the warnings it raised."""

    def potential(params):  # Pyro's potential energy = - our log_prob, one chain
        return -post.log_prob(params["z"].reshape(1, 1, -1)).reshape(())

    pyro.set_rng_seed(seed)
    kernel = HMC(
        potential_fn=potential,
        step_size=step_size,
        num_steps=n_leapfrog,
        adapt_step_size=False,
        adapt_mass_matrix=False,
        full_mass=False,
    )
    chains = start.shape[0]
    init = {"z": start.clone() if chains > 1 else start[0].clone()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mcmc = MCMC(
            kernel, num_samples=samples, warmup_steps=0, num_chains=chains, initial_params=init, disable_progbar=True
        )
        t0 = time.perf_counter()
        mcmc.run()
        seconds = time.perf_counter() - t0
    z = mcmc.get_samples(group_by_chain=True)["z"].reshape(chains, samples, -1)
    messages = sorted({str(w.message) for w in caught})
    return z.detach().double().numpy(), seconds, messages


def mean_check(ours: np.ndarray, theirs: np.ndarray, peer: str = "pyro") -> dict:
    """Per-dimension difference of the posterior means in units of the combined MCSE."""
    m_a, m_b = ours.mean((0, 1)), theirs.mean((0, 1))
    se = np.sqrt(np.asarray(mcse_mean(ours)) ** 2 + np.asarray(mcse_mean(theirs)) ** 2)
    z = (m_a - m_b) / se
    return {
        "ours_mean": [round(float(v), 4) for v in m_a],
        f"{peer}_mean": [round(float(v), 4) for v in m_b],
        "ours_sd": [round(float(v), 4) for v in ours.std((0, 1))],
        f"{peer}_sd": [round(float(v), 4) for v in theirs.std((0, 1))],
        "z_per_dim": [round(float(v), 2) for v in z],
        "max_abs_z": float(np.abs(z).max()),
        "within_4_mcse": bool(np.abs(z).max() < 4.0),
    }


def ess_comparison(model, test, index: int, args) -> dict:
    x = test.x[index : index + 1]
    post = latent_posterior(model, x)
    chains, samples, L, eps = args.chains, args.samples, args.n_leapfrog, args.step_size
    # Same starting points for both: the end of an untimed fixed-step burn-in from the encoder.
    burn = fixed_hmc(post.log_prob, post.initial(chains, seed=args.seed), args.burn_in, L, eps, args.seed)
    start = burn.samples[-1]  # (1, chains, dim)
    blocks = args.pyro_blocks
    per_block = chains // blocks
    ours_runs, ours_draws, pyro_draws, pyro_times, pyro_messages, paired = [], [], [], [], set(), []
    for r in range(blocks):
        seed = args.seed + 1 + r
        order = ("ours", "pyro") if r % 2 == 0 else ("pyro", "ours")
        round_times = {}
        for side in order:
            if side == "ours":
                t0 = time.perf_counter()
                res = fixed_hmc(post.log_prob, start, samples, L, eps, seed)
                seconds = time.perf_counter() - t0
                draws = res.draws()
                s = ess_summary(draws)
                ours_runs.append(
                    {
                        "seconds": seconds,
                        "ess_bulk_min": s["ess_bulk_min"],
                        "ess_bulk_mean": s["ess_bulk_mean"],
                        "ess_bulk_min_per_s": s["ess_bulk_min"] / seconds,
                        "ess_bulk_mean_per_s": s["ess_bulk_mean"] / seconds,
                        "mean_accept": float(res.mean_accept.mean()),
                    }
                )
                ours_draws.append(draws)
            else:
                sl = slice(r * per_block, (r + 1) * per_block)
                draws, seconds, messages = pyro_block(post, start[0, sl], samples, L, eps, seed)
                pyro_draws.append(draws)
                pyro_times.append(seconds)
                pyro_messages.update(messages)
            round_times[side] = seconds
        # time of Pyro for all chains (this block's time x blocks) over ours for all chains
        paired.append(round_times["pyro"] * blocks / round_times["ours"])
    pyro_all = np.concatenate(pyro_draws)  # (chains, samples, dim)
    pyro_seconds = sum(pyro_times)
    pyro_ess = ess_summary(pyro_all)
    ours_ess_min_per_s = statistics.median(r["ess_bulk_min_per_s"] for r in ours_runs)
    ours_ess_mean_per_s = statistics.median(r["ess_bulk_mean_per_s"] for r in ours_runs)
    pyro_min_per_s = pyro_ess["ess_bulk_min"] / pyro_seconds
    pyro_mean_per_s = pyro_ess["ess_bulk_mean"] / pyro_seconds
    grad_evals = chains * samples * L
    ours_first = ess_summary(ours_draws[0])
    result = {
        "test_index": index,
        "posterior_sd_encoder": [round(float(v), 4) for v in post.std[0]],
        "latent_atlas": {
            "repeats": ours_runs,
            "median_seconds": statistics.median(r["seconds"] for r in ours_runs),
            "median_ess_bulk_min_per_s": ours_ess_min_per_s,
            "median_ess_bulk_mean_per_s": ours_ess_mean_per_s,
            "first_repeat": ours_first,
            "ess_bulk_min_per_1000_grad_evals": 1000 * ours_first["ess_bulk_min"] / grad_evals,
        },
        "pyro": {
            "blocks": blocks,
            "chains_per_block": per_block,
            "block_seconds": pyro_times,
            "seconds": pyro_seconds,
            **pyro_ess,
            "ess_bulk_min_per_s": pyro_min_per_s,
            "ess_bulk_mean_per_s": pyro_mean_per_s,
            "ess_bulk_min_per_1000_grad_evals": 1000 * pyro_ess["ess_bulk_min"] / grad_evals,
            "warnings": sorted(pyro_messages),
        },
        "ratio_ess_bulk_min_per_s": ours_ess_min_per_s / pyro_min_per_s,
        "ratio_ess_bulk_mean_per_s": ours_ess_mean_per_s / pyro_mean_per_s,
        "median_paired_time_ratio_pyro_over_ours": statistics.median(paired),
        "paired_time_ratios": paired,
        "mean_check": mean_check(np.concatenate(ours_draws), pyro_all),
    }
    # Context: ours as it is normally used, adaptation on (warm-up counted in the time).
    t0 = time.perf_counter()
    adapted = sample_hmc(
        post.log_prob,
        post.initial(chains, seed=args.seed),
        num_warmup=args.warmup,
        num_samples=samples,
        n_leapfrog=L,
        step_size=eps,
        keep_warmup=False,
        seed=args.seed,
    )
    seconds = time.perf_counter() - t0
    s = ess_summary(adapted.draws())
    result["latent_atlas_adapted"] = {
        "num_warmup": args.warmup,
        "num_samples": samples,
        "n_leapfrog": L,
        "seconds_with_warmup": seconds,
        **s,
        "ess_bulk_min_per_s": s["ess_bulk_min"] / seconds,
        "ess_bulk_mean_per_s": s["ess_bulk_mean"] / seconds,
        "mean_accept": float(adapted.mean_accept.mean()),
        "final_step_size_median": float(adapted.final_step_size.median()),
        "inv_mass_mean_over_chains": [round(float(v), 4) for v in adapted.inv_mass[0].mean(0)],
        "divergences": int(adapted.divergent[args.warmup :].sum()),
    }
    return result


# -- part 3: against NumPyro's vectorized chains, on targets written natively on both sides ------


class Native:
    """A target written twice: `log_prob` in torch for ours, z (1, chains, dim) -> (1, chains);
    `potential` in jax.numpy for NumPyro, one chain z (dim,) -> scalar, minus the log density.
    Both from the same float64 numpy constants, cast to float32 (both sides' default dtype)."""

    def __init__(self, name: str, description: str, log_prob, potential, dim: int, step_size: float):
        self.name, self.description, self.log_prob, self.potential = name, description, log_prob, potential
        self.dim, self.step_size = dim, step_size


def gaussian_target(jnp, dim: int, condition: float, step_size: float, seed: int) -> tuple[Native, np.ndarray]:
    """N(0, S) with S = Q diag(v) Q^T: variances v log-spaced from 1 to `condition`, Q a random
    rotation (QR of a Gaussian matrix). Also returns the Cholesky factor of S for exact starts."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    q = q * np.sign(np.diag(r))  # Haar-distributed rotation
    variances = np.logspace(0.0, np.log10(condition), dim)
    cov = (q * variances) @ q.T
    precision = (q / variances) @ q.T
    precision = 0.5 * (precision + precision.T)
    p_torch = torch.tensor(precision, dtype=torch.float32)
    p_jax = jnp.asarray(precision, dtype=jnp.float32)

    def log_prob(z):  # (1, chains, dim) -> (1, chains)
        return -0.5 * ((z @ p_torch) * z).sum(-1)

    def potential(z):  # (dim,) -> ()
        return 0.5 * z @ (p_jax @ z)

    description = (
        f"{dim}-D Gaussian N(0, S), S = Q diag(v) Q^T with variances v log-spaced from 1 to {condition:g} "
        f"(condition number {condition:g}, sd 1 to {condition**0.5:g}) and Q a random rotation (seed {seed})"
    )
    target = Native("gaussian", description, log_prob, potential, dim, step_size)
    return target, np.linalg.cholesky(cov)


def logistic_target(jnp, jax_nn, prior_sd: float, step_size: float) -> tuple[Native, np.ndarray, np.ndarray]:
    """Bayesian logistic regression on scikit-learn's breast-cancer table (569 x 30): standardised
    features plus an intercept column, beta ~ N(0, prior_sd^2) on all 31 coefficients."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    x = np.hstack([np.ones((len(x), 1)), x])
    x_torch, y_torch = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    x_jax, y_jax = jnp.asarray(x, dtype=jnp.float32), jnp.asarray(y, dtype=jnp.float32)
    scale = 0.5 / prior_sd**2

    def log_prob(z):  # (1, chains, dim) -> (1, chains)
        eta = z @ x_torch.T  # (1, chains, rows)
        return (y_torch * eta - torch.nn.functional.softplus(eta)).sum(-1) - scale * (z * z).sum(-1)

    def potential(z):  # (dim,) -> ()
        eta = x_jax @ z
        return -(jnp.sum(y_jax * eta - jax_nn.softplus(eta)) - scale * (z @ z))

    description = (
        f"Bayesian logistic regression, scikit-learn load_breast_cancer ({x.shape[0]} rows, "
        f"{x.shape[1] - 1} standardised features + intercept), beta ~ N(0, {prior_sd:g}^2 I)"
    )
    return Native("logistic", description, log_prob, potential, x.shape[1], step_size), x, y


class CompileClock:
    """Sums JAX's own compile events (tracing, lowering to MLIR, XLA compilation or a persistent-cache
    read) while it is active, so that NumPyro's time can be taken without them."""

    EVENTS = (
        "/jax/core/compile/jaxpr_trace_duration",
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "/jax/core/compile/backend_compile_duration",
    )

    def __init__(self, monitoring):
        self.seconds = 0.0
        self.active = False
        monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, duration: float, **kwargs) -> None:
        if self.active and event in self.EVENTS:
            self.seconds += duration

    def __enter__(self):
        self.seconds, self.active = 0.0, True
        return self

    def __exit__(self, *exc):
        self.active = False


def numpyro_side(jax, HMC, MCMC, target: Native, z0: np.ndarray, samples: int, n_leapfrog: int):
    """NumPyro's HMC, adaptation off, chains vectorised; returns run(seed) -> (draws (chains, samples,
    dim), wall seconds of MCMC.run, of which compile seconds, mean acceptance)."""
    kernel = HMC(
        potential_fn=target.potential,
        step_size=target.step_size,
        num_steps=n_leapfrog,
        trajectory_length=None,  # else NumPyro sets step_size = trajectory_length / num_steps
        adapt_step_size=False,
        adapt_mass_matrix=False,
        dense_mass=False,
    )
    mcmc = MCMC(
        kernel,
        num_warmup=0,
        num_samples=samples,
        num_chains=z0.shape[0],
        chain_method="vectorized",
        progress_bar=False,
    )
    # Zero warm-up transitions: this only builds the initial state at z0, which every run restarts from.
    mcmc.warmup(jax.random.PRNGKey(0), init_params=jax.numpy.asarray(z0), extra_fields=("accept_prob",))
    start = mcmc.post_warmup_state

    def run(seed: int, clock: CompileClock):
        mcmc.post_warmup_state = start
        with clock:
            t0 = time.perf_counter()
            mcmc.run(jax.random.PRNGKey(seed), extra_fields=("accept_prob",))
            draws = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
            seconds = time.perf_counter() - t0
        accept = float(np.mean(np.asarray(mcmc.get_extra_fields(group_by_chain=True)["accept_prob"])))
        return np.asarray(draws, dtype=np.float64), seconds, clock.seconds, accept

    return run


def native_comparison(target: Native, z0: np.ndarray, chains: int, numpyro_run, clock, args) -> dict:
    """Ours (eager, and with compile=True unless --no-compiled) and NumPyro on `chains` chains from
    the same z0 (chains, dim): one untimed first call each (NumPyro's compiles its loop; ours runs 2
    transitions, which compile the leapfrog at the first chain count), then --native-repeats timed
    calls, interleaved in a rotating order. ESS from each side's first timed call; time the median."""
    L, S = args.n_leapfrog, args.native_samples
    z0_torch = torch.tensor(z0, dtype=torch.float32).unsqueeze(0)  # (1, chains, dim)

    def ours(seed, compile, samples=S):
        t0 = time.perf_counter()
        res = fixed_hmc(target.log_prob, z0_torch, samples, L, target.step_size, seed, compile)
        seconds = time.perf_counter() - t0
        return res.draws(), seconds, float(res.mean_accept.mean())

    sides = ["ours", "ours_compiled", "numpyro"] if args.compiled else ["ours", "numpyro"]
    first = {}
    for side in sides:
        if side == "numpyro":
            _, wall, compile_s, _ = numpyro_run(args.seed, clock)
            first[side] = {"first_call_wall_seconds": wall, "first_call_compile_seconds": compile_s}
        else:
            first[side] = {"first_call_seconds_2_transitions": ours(args.seed, side == "ours_compiled", 2)[1]}
    times = {side: [] for side in sides}
    keep, numpyro_wall, numpyro_compile = {}, [], []
    repeats = args.native_repeats if chains < 4096 else min(args.native_repeats, args.native_repeats_4096)
    for rep in range(repeats):
        seed = args.seed + 1 + rep
        k = rep % len(sides)
        for side in sides[k:] + sides[:k]:  # a rotating order, so that changes in load hit every side
            if side == "numpyro":
                draws, wall, compile_s, accept = numpyro_run(seed, clock)
                numpyro_wall.append(wall)
                numpyro_compile.append(compile_s)
                times[side].append(wall - compile_s)
            else:
                draws, seconds, accept = ours(seed, side == "ours_compiled")
                times[side].append(seconds)
            keep.setdefault(side, (draws, accept))
    grad_evals = chains * S * L
    result = {"chains": chains}
    for side in sides:
        ess = ess_summary(keep[side][0])
        if target.dim > 40:  # the per-dimension list is long: kept for the smaller targets only
            ess.pop("ess_bulk_per_dim")
        med = statistics.median(times[side])
        result[side] = {
            **first[side],
            "seconds": times[side],
            "median_seconds": med,
            **ess,
            "ess_bulk_min_per_s": ess["ess_bulk_min"] / med,
            "ess_bulk_mean_per_s": ess["ess_bulk_mean"] / med,
            "ess_bulk_min_per_1000_grad_evals": 1000 * ess["ess_bulk_min"] / grad_evals,
            "mean_accept": keep[side][1],
            "chain_leapfrog_steps_per_s": grad_evals / med,
        }
    result["numpyro"].update(
        wall_seconds=numpyro_wall,
        compile_seconds_in_call=numpyro_compile,
        median_wall_seconds=statistics.median(numpyro_wall),
    )
    peer = result["numpyro"]["ess_bulk_min_per_s"]
    for side in sides[:-1]:
        result[f"ratio_ess_bulk_min_per_s_{side}"] = result[side]["ess_bulk_min_per_s"] / peer
        result[f"time_ratio_numpyro_over_{side}"] = result["numpyro"]["median_seconds"] / result[side]["median_seconds"]
    result["mean_check"] = mean_check(keep["ours"][0], keep["numpyro"][0], peer="numpyro")
    if args.compiled:
        result["mean_check_compiled"] = mean_check(keep["ours_compiled"][0], keep["numpyro"][0], peer="numpyro")
    return result


def numpyro_comparison(args) -> dict:
    """Part 3 in full: both targets at every --native-chains count; returns the JSON section."""
    import tempfile

    try:
        import jax
        import numpyro
        from jax import monitoring
        from numpyro.infer import HMC, MCMC
    except ImportError:  # pragma: no cover - benchmark-only dependency
        sys.exit("numpyro / jax are not installed: .venv/bin/pip install -r benchmarks/requirements.txt")

    # NumPyro's MCMC.run traces and compiles its sampling loop again on every call (fori_collect
    # wraps its body in a new jit each time); a persistent compilation cache makes the later calls
    # cheap to compile, and CompileClock takes what remains out of the timed seconds.
    cache_dir = tempfile.mkdtemp(prefix="hmc-speed-xla-")
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    clock = CompileClock(monitoring)
    torch.set_num_threads(args.native_threads)
    gaussian, chol = gaussian_target(jax.numpy, 100, 100.0, args.gaussian_step_size, args.seed)
    logistic, _, _ = logistic_target(jax.numpy, jax.nn, 1.0, args.logistic_step_size)
    section = {
        "settings": {
            "n_leapfrog": args.n_leapfrog,
            "num_samples": args.native_samples,
            "timed_repeats": args.native_repeats,
            "timed_repeats_from_4096_chains": args.native_repeats_4096,
            "mass": "identity",
            "jitter": 0.0,
            "warmup": 0,
            "dtype": "float32 on both sides",
            "numpyro": "MCMC(HMC(potential_fn, step_size, num_steps, trajectory_length=None, adapt_step_size=False, "
            "adapt_mass_matrix=False), num_warmup=0, num_chains=chains, chain_method='vectorized'); every run "
            "restarts from the same initial state (post_warmup_state of a 0-transition warm-up at the start points)",
            "ours": "sample_hmc(log_prob, z0, num_warmup=0, adapt_step_size=False, adapt_mass=False, jitter=0.0)",
            "ours_compiled": "the same with compile=True (engine.hamiltonian.compiled_leapfrog: torch.compile of "
            "the trajectory, compiled once per target at its first chain count, sizes symbolic)",
            "timing": "ours: wall time of sample_hmc; NumPyro: wall time of MCMC.run + get_samples "
            "(block_until_ready) minus JAX's compile events in that call (tracing, lowering, XLA compilation "
            "or persistent-cache read), recorded as compile_seconds_in_call. One untimed first call per side "
            "(NumPyro's: the full loop, its compile time first_call_compile_seconds; ours: 2 transitions, "
            "which for ours_compiled include torch.compile at the first chain count). ESS from each side's "
            "first timed call, seconds the median of the timed calls, in a rotating order",
        },
        "threads": {
            "torch_num_threads": torch.get_num_threads(),
            "xla_flags": os.environ.get("XLA_FLAGS"),
            "xla_cpu_threads": "XLA's CPU thread pool, sized by XLA to the cores this process may use"
            if not os.environ.get("XLA_FLAGS")
            else "as XLA_FLAGS sets",
            "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "jax_devices": [str(d) for d in jax.devices()],
        },
        "versions": {"jax": jax.__version__, "jaxlib": _dist_version("jaxlib"), "numpyro": numpyro.__version__},
        "targets": {},
    }
    rng = np.random.default_rng(args.seed)
    for target in (gaussian, logistic):
        entry = {"description": target.description, "dim": target.dim, "step_size": target.step_size, "chains": {}}
        for chains in [int(c) for c in args.native_chains.split(",")]:
            if target is gaussian:  # exact draws: the chains start in the stationary distribution
                z0 = (rng.standard_normal((chains, target.dim)) @ chol.T).astype(np.float32)
                entry["start"] = "exact draws from the Gaussian, the same for both sides"
            else:  # the end of an untimed fixed-step burn-in of ours from N(0, 0.1^2)
                init = 0.1 * torch.randn(1, chains, target.dim, generator=torch.Generator().manual_seed(args.seed))
                burn = fixed_hmc(target.log_prob, init, args.burn_in, args.n_leapfrog, target.step_size, args.seed)
                z0 = burn.samples[-1, 0].numpy().astype(np.float32)
                entry["start"] = (
                    f"the end of {args.burn_in} untimed fixed-step transitions of ours from N(0, 0.1^2), "
                    "the same points for both sides"
                )
            run = numpyro_side(jax, HMC, MCMC, target, z0, args.native_samples, args.n_leapfrog)
            r = native_comparison(target, z0, chains, run, clock, args)
            entry["chains"][str(chains)] = r
            a, b = r["ours"], r["numpyro"]
            c = r.get("ours_compiled")
            compiled = (
                f"compiled {c['ess_bulk_min_per_s']:.0f} ({c['median_seconds']:.2f} s, first "
                f"{c['first_call_seconds_2_transitions']:.1f} s) | "
                if c
                else ""
            )
            print(
                f"  {target.name} {chains:5d} chains: ours {a['ess_bulk_min_per_s']:.0f} ESS/s (min; "
                f"{a['median_seconds']:.2f} s, accept {a['mean_accept']:.2f}) | {compiled}numpyro "
                f"{b['ess_bulk_min_per_s']:.0f} ({b['median_seconds']:.2f} s + {statistics.median(b['compile_seconds_in_call']):.2f} s "
                f"compile per call, first compile {b['first_call_compile_seconds']:.1f} s, accept {b['mean_accept']:.2f}) | ratio "
                f"{r['ratio_ess_bulk_min_per_s_ours']:.2f} | means max |z| {r['mean_check']['max_abs_z']:.2f}",
                flush=True,
            )
        section["targets"][target.name] = entry
    import shutil

    shutil.rmtree(cache_dir, ignore_errors=True)
    torch.set_num_threads(args.ess_threads)
    return section


# -- part 2: leapfrog steps per second ----------------------------------------------------------


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_transitions(post, chains: int, transitions: int, args, device: str) -> float:
    z0 = post.initial(chains, seed=args.seed)
    _sync(device)
    t0 = time.perf_counter()
    fixed_hmc(post.log_prob, z0, transitions, args.n_leapfrog, args.step_size, args.seed)
    _sync(device)
    return time.perf_counter() - t0


def leapfrog_scaling(
    post, chain_counts: list[int], thread_counts: list[int] | None, args, device: str, deadline: Deadline
) -> dict:
    """For each chain count and thread count: transitions of --n-leapfrog steps, as many as fit
    in about --target-s seconds by a one-transition probe (at least 2), then --scaling-repeats
    measurements interleaved over the thread counts (1, 2; 2, 1; ...)."""
    settings = thread_counts if thread_counts else [None]
    out = {}
    for chains in chain_counts:
        if deadline.remaining() < 10:
            out[str(chains)] = {"skipped": "time budget spent"}
            continue
        transitions = {}
        for t in settings:
            if t is not None:
                torch.set_num_threads(t)
            time_transitions(post, chains, 1, args, device)  # warm-up (allocator, first calls)
            probe = time_transitions(post, chains, 1, args, device)
            transitions[t] = int(min(max(round(args.target_s / probe), 2), 400))
        runs = {t: [] for t in settings}
        for rep in range(args.scaling_repeats):
            if rep and deadline.remaining() < 2 * len(settings) * args.target_s + 10:
                break
            for t in settings if rep % 2 == 0 else settings[::-1]:
                if t is not None:
                    torch.set_num_threads(t)
                runs[t].append(time_transitions(post, chains, transitions[t], args, device))
        entry = {}
        for t, secs in runs.items():
            med = statistics.median(secs)
            steps = transitions[t] * args.n_leapfrog
            entry[f"threads_{t}" if t is not None else device] = {
                "transitions_per_measurement": transitions[t],
                "seconds": secs,
                "median_seconds": med,
                "leapfrog_steps_per_s": steps / med,  # batched steps (all chains move together)
                "chain_leapfrog_steps_per_s": chains * steps / med,  # summed over chains
                "ms_per_leapfrog_step": 1000 * med / steps,
            }
        out[str(chains)] = entry
        print(
            f"  {chains:5d} chains: "
            + ", ".join(
                f"{k}: {v['chain_leapfrog_steps_per_s']:,.0f} chain-steps/s ({v['ms_per_leapfrog_step']:.3f} ms/step)"
                for k, v in entry.items()
            ),
            flush=True,
        )
    if settings[0] is not None:
        torch.set_num_threads(args.ess_threads)
    return out


# -- machine info, main ---------------------------------------------------------------------------


def _dist_version(name: str):
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


def machine_info() -> dict:
    cpu = cpu_name()
    import multiprocessing

    return {
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "multiprocessing_cpu_count": multiprocessing.cpu_count(),
        "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "omp_wait_policy_env": os.environ.get("OMP_WAIT_POLICY"),
        "torch_version": torch.__version__,
        "pyro_version": pyro.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", type=int, default=2, help="(1) test images, the first N of the test split")
    p.add_argument("--chains", type=int, default=64, help="(1) chains per posterior")
    p.add_argument("--samples", type=int, default=100, help="(1) draws per chain, both sides")
    p.add_argument("--n-leapfrog", type=int, default=10, help="leapfrog steps per transition, both sides")
    p.add_argument(
        "--step-size",
        type=float,
        default=0.1,
        help="fixed leapfrog step size, both sides (sample_hmc's default, as is --n-leapfrog 10)",
    )
    p.add_argument("--burn-in", type=int, default=100, help="(1) untimed transitions before the common start")
    p.add_argument(
        "--pyro-blocks",
        type=int,
        default=4,
        help="(1) Pyro's chains run in this many blocks, each interleaved with a run of ours",
    )
    p.add_argument("--warmup", type=int, default=200, help="(1) warm-up of ours in the adapted run")
    p.add_argument("--ess-threads", type=int, default=1, help="(1) torch.set_num_threads for both sides")
    p.add_argument("--native-chains", default="64,256,1024,4096", help="(3) chain counts against NumPyro")
    p.add_argument("--native-samples", type=int, default=100, help="(3) draws per chain, both sides")
    p.add_argument("--native-repeats", type=int, default=3, help="(3) timed calls per side and chain count")
    p.add_argument("--native-repeats-4096", type=int, default=2, help="(3) the same from 4,096 chains on")
    p.add_argument(
        "--native-threads",
        type=int,
        default=os.cpu_count() or 1,
        help="(3) torch.set_num_threads for ours; XLA gets the same cores (1: XLA's single-threaded flags)",
    )
    p.add_argument("--gaussian-step-size", type=float, default=0.5, help="(3) step size on the Gaussian")
    p.add_argument("--logistic-step-size", type=float, default=0.05, help="(3) step size on the regression")
    p.add_argument(
        "--no-compiled",
        dest="compiled",
        action="store_false",
        help="(3) leave out ours with compile=True (torch.compile of the leapfrog)",
    )
    p.add_argument("--parts", default="1,2,3", help="which parts to run (the JSON then has only those)")
    p.add_argument("--chain-counts", default="1,4,16,64,256,1024,4096", help="(2) chain counts")
    p.add_argument("--threads", default="1,2", help="(2) torch.set_num_threads values on the CPU")
    p.add_argument("--target-s", type=float, default=0.6, help="(2) seconds per measurement")
    p.add_argument("--scaling-repeats", type=int, default=3, help="(2) repeats per chain count")
    p.add_argument(
        "--time-budget",
        type=float,
        default=560.0,
        help="seconds for the whole run; part (2), run last, drops repeats and chain counts to fit",
    )
    p.add_argument("--quick", action="store_true", help="tiny settings, to check that it runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=OUT_DEFAULT)
    args = p.parse_args(argv)
    if args.quick:
        args.inputs, args.chains, args.samples, args.burn_in, args.warmup = 1, 8, 20, 10, 30
        args.pyro_blocks, args.chain_counts, args.target_s, args.scaling_repeats = 2, "1,16,256", 0.1, 1
        args.native_chains, args.native_samples, args.native_repeats = "8,64", 20, 1
    if args.chains % args.pyro_blocks:
        sys.exit(f"--chains ({args.chains}) must be a multiple of --pyro-blocks ({args.pyro_blocks})")
    if args.native_threads == 1:  # before jax is imported: XLA's CPU work on the calling thread only
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()
    chain_counts = [int(c) for c in args.chain_counts.split(",")]
    parts = set(args.parts.split(","))
    thread_counts = [int(t) for t in args.threads.split(",")]

    deadline = Deadline(args.time_budget)
    started = time.perf_counter()
    torch.set_num_threads(args.ess_threads)
    run_dir, model, test = load_demo("cpu")
    result = {
        "benchmark": "hmc_speed",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "loadavg_at_start": loadavg(),
        "args": {k: (display_path(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model": {
            "run": display_path(run_dir),
            "latent_dim": model.config.latent_dim,
            "input_shape": list(model.config.input_shape),
            "hidden": list(model.config.hidden),
            "likelihood": model.config.likelihood,
        },
        "settings": {
            "step_size": args.step_size,
            "n_leapfrog": args.n_leapfrog,
            "num_samples": args.samples,
            "chains": args.chains,
            "mass": "identity",
            "jitter": 0.0,
            "warmup": 0,
            "start": f"the end of {args.burn_in} untimed fixed-step transitions of ours from the "
            "encoder's Gaussian, the same points for both sides",
        },
        "notes": [
            "ratio > 1: Latent Atlas is faster. ESS is engine.diagnostics.mcmc.ess_bulk for both sides.",
            "Pyro's MCMC runs chains in worker processes only when num_chains <= cpu_count - 1; here it "
            "draws them one after another in the main process (see pyro.warnings).",
            "ess_bulk caps ESS at draws * log10(draws), as ArviZ does; with a fixed step and no jitter "
            "a dimension can be antithetic (ESS above the number of draws).",
            "On a shared machine, other processes distort the numbers: check loadavg_at_start/end.",
        ],
    }
    print(
        f"torch={torch.__version__} pyro={pyro.__version__} load={result['loadavg_at_start']} "
        f"cuda={torch.cuda.is_available()}",
        flush=True,
    )

    ess = []
    for index in range(args.inputs if "1" in parts else 0):
        r = ess_comparison(model, test, index, args)
        ess.append(r)
        a, b = r["latent_atlas"], r["pyro"]
        print(
            f"input {index}: ours {a['median_ess_bulk_min_per_s']:.0f} ESS/s (min; mean "
            f"{a['median_ess_bulk_mean_per_s']:.0f}, {a['median_seconds']:.2f} s, accept "
            f"{a['repeats'][0]['mean_accept']:.2f}) | pyro {b['ess_bulk_min_per_s']:.1f} (mean "
            f"{b['ess_bulk_mean_per_s']:.1f}, {b['seconds']:.1f} s) | ratio {r['ratio_ess_bulk_min_per_s']:.1f} "
            f"(mean {r['ratio_ess_bulk_mean_per_s']:.1f}, paired time {r['median_paired_time_ratio_pyro_over_ours']:.1f})"
            f" | means max |z| {r['mean_check']['max_abs_z']:.2f} | adapted "
            f"{r['latent_atlas_adapted']['ess_bulk_min_per_s']:.0f} ESS/s",
            flush=True,
        )
    if ess:
        result["ess_per_s"] = ess

    if "3" in parts:
        print(f"against NumPyro, vectorized chains, {args.native_threads} thread(s) each:", flush=True)
        result["numpyro_native"] = numpyro_comparison(args)

    if "2" in parts:
        print("leapfrog scaling, CPU:", flush=True)
        post = latent_posterior(model, test.x[:1])
        scaling = {"cpu": leapfrog_scaling(post, chain_counts, thread_counts, args, "cpu", deadline)}
        if torch.cuda.is_available():
            print("leapfrog scaling, CUDA:", flush=True)
            _, cuda_model, _ = load_demo("cuda")
            post = latent_posterior(cuda_model, test.x[:1].to("cuda"))
            scaling["cuda"] = leapfrog_scaling(post, chain_counts, None, args, "cuda", deadline)
        else:
            scaling["cuda"] = {"skipped": "torch.cuda.is_available() is False"}
        result["leapfrog_scaling"] = scaling

    result["summary"] = summarise(result)
    result["loadavg_at_end"] = loadavg()
    result["total_seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {display_path(args.out)} ({result['total_seconds']:.0f} s)")
    return 0


def summarise(result: dict) -> dict:
    ess = result.get("ess_per_s")
    med = lambda xs: statistics.median(xs)  # noqa: E731
    summary = (
        {}
        if not ess
        else {
            "ours_ess_bulk_min_per_s": round(med(r["latent_atlas"]["median_ess_bulk_min_per_s"] for r in ess), 1),
            "pyro_ess_bulk_min_per_s": round(med(r["pyro"]["ess_bulk_min_per_s"] for r in ess), 2),
            "ratio_ess_bulk_min_per_s": [round(r["ratio_ess_bulk_min_per_s"], 1) for r in ess],
            "ratio_ess_bulk_mean_per_s": [round(r["ratio_ess_bulk_mean_per_s"], 1) for r in ess],
            "paired_time_ratio_pyro_over_ours": [round(r["median_paired_time_ratio_pyro_over_ours"], 1) for r in ess],
            "ours_adapted_ess_bulk_min_per_s": [round(r["latent_atlas_adapted"]["ess_bulk_min_per_s"], 1) for r in ess],
            "means_max_abs_z": [round(r["mean_check"]["max_abs_z"], 2) for r in ess],
            "pyro_multichain": sorted({w for r in ess for w in r["pyro"]["warnings"]}),
        }
    )
    native = result.get("numpyro_native")
    if native:
        summary["numpyro_native"] = {
            name: {
                chains: {
                    **{
                        f"{side}_ess_bulk_min_per_s": round(r[side]["ess_bulk_min_per_s"], 1)
                        for side in ("ours", "ours_compiled", "numpyro")
                        if side in r
                    },
                    **{k: round(v, 2) for k, v in r.items() if k.startswith(("ratio_", "time_ratio_"))},
                    "numpyro_first_compile_s": round(r["numpyro"]["first_call_compile_seconds"], 2),
                    "means_max_abs_z": round(r["mean_check"]["max_abs_z"], 2),
                }
                for chains, r in target["chains"].items()
            }
            for name, target in native["targets"].items()
        }
    for device, table in result.get("leapfrog_scaling", {}).items():
        if "skipped" in table:
            summary[f"chain_leapfrog_steps_per_s_{device}"] = table["skipped"]
            continue
        summary[f"chain_leapfrog_steps_per_s_{device}"] = {
            chains: {k: round(v["chain_leapfrog_steps_per_s"]) for k, v in entry.items()}
            for chains, entry in table.items()
            if "skipped" not in entry
        }
    return summary


if __name__ == "__main__":
    sys.exit(main())
