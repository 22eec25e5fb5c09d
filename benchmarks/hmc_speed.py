"""HMC speed: effective samples per second against Pyro, and leapfrog steps per second by chain count.

Target: the latent posterior p(z | x) ∝ p(x | z) p(z) of the demo digits VAE
(`assets/runs/*digits-vae-3dcc`, 8-D latent, 8x8 Bernoulli images) for a few test images,
built by `engine.inference.posterior.latent_posterior`.

  (1) ESS/s, 64 chains: our `sample_hmc` (all chains in one batched call) against Pyro's
      `HMC` + `MCMC` with the same potential (minus our log_prob, one chain at a time), the
      same fixed step size, leapfrog steps and number of samples, no adaptation on either side
      (identity mass, no step-size jitter, no warm-up), from the same starting points (the end
      of an untimed burn-in). Bulk ESS (min and mean over dimensions) by
      `engine.diagnostics.mcmc.ess_bulk` for both. Pyro's chains are run in blocks of
      chains / --pyro-blocks, each block interleaved with one full 64-chain run of ours, so that
      changes in machine load hit both sides alike; Pyro's ESS is that of all blocks together,
      its time their sum. A mean check compares the two sides' posterior means in MCSE units.
      For context, ours with its default adaptation (step size per chain, diagonal mass,
      jitter 0.3), warm-up included in the time.
  (2) Leapfrog steps per second for 1 to 4,096 chains (powers of 4) on the CPU at
      torch.set_num_threads 1 and 2, and on CUDA when torch sees a GPU.

Usage (from the repository root):
    .venv/bin/pip install -r benchmarks/requirements.txt
    OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/hmc_speed.py   # ~6 minutes
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/hmc_speed.py --quick                   # smoke test

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

from benchmarks.common import cpu_name, display_path, loadavg  # noqa: E402
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


class Deadline:
    """The whole benchmark's time budget; the scaling part stops adding repeats when it runs out."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def remaining(self) -> float:
        return self.end - time.perf_counter()


def load_demo(device: str = "cpu"):
    run_dir = next(iter(sorted((REPO / "assets" / "runs").glob(RUN_GLOB))), None)
    if run_dir is None:
        sys.exit(f"no demo run matching assets/runs/{RUN_GLOB}")
    loaded = load_run_model(Run.from_dir(run_dir, readonly=True), device=device)
    return run_dir, loaded.model, loaded.spec.load_data("test")


def fixed_hmc(log_prob, z0, samples: int, n_leapfrog: int, step_size: float, seed: int):
    """Our sampler with adaptation off: M = I, fixed step size, no jitter, no warm-up."""
    return sample_hmc(
        log_prob,
        z0,
        num_warmup=0,
        num_samples=samples,
        n_leapfrog=n_leapfrog,
        step_size=step_size,
        adapt_step_size=False,
        adapt_mass=False,
        jitter=0.0,
        keep_warmup=False,
        seed=seed,
    )


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


def mean_check(ours: np.ndarray, theirs: np.ndarray) -> dict:
    """Per-dimension difference of the posterior means in units of the combined MCSE."""
    m_a, m_b = ours.mean((0, 1)), theirs.mean((0, 1))
    se = np.sqrt(np.asarray(mcse_mean(ours)) ** 2 + np.asarray(mcse_mean(theirs)) ** 2)
    z = (m_a - m_b) / se
    return {
        "ours_mean": [round(float(v), 4) for v in m_a],
        "pyro_mean": [round(float(v), 4) for v in m_b],
        "ours_sd": [round(float(v), 4) for v in ours.std((0, 1))],
        "pyro_sd": [round(float(v), 4) for v in theirs.std((0, 1))],
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
    p.add_argument("--inputs", type=int, default=3, help="(1) test images, the first N of the test split")
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
    p.add_argument("--chain-counts", default="1,4,16,64,256,1024,4096", help="(2) chain counts")
    p.add_argument("--threads", default="1,2", help="(2) torch.set_num_threads values on the CPU")
    p.add_argument("--target-s", type=float, default=0.6, help="(2) seconds per measurement")
    p.add_argument("--scaling-repeats", type=int, default=3, help="(2) repeats per chain count")
    p.add_argument(
        "--time-budget",
        type=float,
        default=470.0,
        help="seconds for the whole run; part (2) drops repeats and chain counts to fit",
    )
    p.add_argument("--quick", action="store_true", help="tiny settings, to check that it runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=OUT_DEFAULT)
    args = p.parse_args(argv)
    if args.quick:
        args.inputs, args.chains, args.samples, args.burn_in, args.warmup = 1, 8, 20, 10, 30
        args.pyro_blocks, args.chain_counts, args.target_s, args.scaling_repeats = 2, "1,16,256", 0.1, 1
    if args.chains % args.pyro_blocks:
        sys.exit(f"--chains ({args.chains}) must be a multiple of --pyro-blocks ({args.pyro_blocks})")
    chain_counts = [int(c) for c in args.chain_counts.split(",")]
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
    for index in range(args.inputs):
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
    result["ess_per_s"] = ess

    print("leapfrog scaling, CPU:", flush=True)
    result["leapfrog_scaling"] = {
        "cpu": leapfrog_scaling(latent_posterior(model, test.x[:1]), chain_counts, thread_counts, args, "cpu", deadline)
    }
    if torch.cuda.is_available():
        print("leapfrog scaling, CUDA:", flush=True)
        _, cuda_model, _ = load_demo("cuda")
        post = latent_posterior(cuda_model, test.x[:1].to("cuda"))
        result["leapfrog_scaling"]["cuda"] = leapfrog_scaling(post, chain_counts, None, args, "cuda", deadline)
    else:
        result["leapfrog_scaling"]["cuda"] = {"skipped": "torch.cuda.is_available() is False"}

    result["summary"] = summarise(result)
    result["loadavg_at_end"] = loadavg()
    result["total_seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {display_path(args.out)} ({result['total_seconds']:.0f} s)")
    return 0


def summarise(result: dict) -> dict:
    ess = result["ess_per_s"]
    med = lambda xs: statistics.median(xs)  # noqa: E731
    summary = {
        "ours_ess_bulk_min_per_s": round(med(r["latent_atlas"]["median_ess_bulk_min_per_s"] for r in ess), 1),
        "pyro_ess_bulk_min_per_s": round(med(r["pyro"]["ess_bulk_min_per_s"] for r in ess), 2),
        "ratio_ess_bulk_min_per_s": [round(r["ratio_ess_bulk_min_per_s"], 1) for r in ess],
        "ratio_ess_bulk_mean_per_s": [round(r["ratio_ess_bulk_mean_per_s"], 1) for r in ess],
        "paired_time_ratio_pyro_over_ours": [round(r["median_paired_time_ratio_pyro_over_ours"], 1) for r in ess],
        "ours_adapted_ess_bulk_min_per_s": [round(r["latent_atlas_adapted"]["ess_bulk_min_per_s"], 1) for r in ess],
        "means_max_abs_z": [round(r["mean_check"]["max_abs_z"], 2) for r in ess],
        "pyro_multichain": sorted({w for r in ess for w in r["pyro"]["warnings"]}),
    }
    for device, table in result["leapfrog_scaling"].items():
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
