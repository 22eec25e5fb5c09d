"""How long a full martingale check takes for the exact Beta(1, 1)-Bernoulli model:
J = 200 paths of m = 200 steps after n = 100 observations, then T1, both T2 forms and T3
against K = 600 bootstrap replicates (seed000 §4.5, Algorithm A). 2 threads (the goal),
then 1 thread for comparison.
Writes benchmarks/results/martingale_check.json.

    .venv/bin/python benchmarks/martingale_check.py
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.diagnostics.martingale import martingale_check  # noqa: E402
from engine.sequence import BernoulliData, BetaBernoulli, sample_paths  # noqa: E402

J, N, M, K = 200, 100, 200, 600
THETA = 0.5
WARMUP, REPEATS = 2, 15
GOAL_S = 2.0


def full_check(observed: torch.Tensor, generator: torch.Generator) -> tuple[float, float, dict]:
    """(seconds sampling the paths, seconds for the whole check, verdicts)"""
    t0 = time.perf_counter()
    paths = sample_paths(BetaBernoulli(), observed, M, J, generator=generator)
    t1 = time.perf_counter()
    check = martingale_check(paths, K, generator=generator)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t0, {key: v.flagged for key, v in check.verdicts.items()}


def measure(threads: int, observed: torch.Tensor, generator: torch.Generator) -> dict:
    torch.set_num_threads(threads)
    sampling, total, verdicts = [], [], []
    for i in range(WARMUP + REPEATS):
        s, t, v = full_check(observed, generator)
        if i >= WARMUP:
            sampling.append(s)
            total.append(t)
            verdicts.append(v)
    return {
        "threads": threads,
        "median_s": statistics.median(total),
        "min_s": min(total),
        "max_s": max(total),
        "median_path_sampling_s": statistics.median(sampling),
        "flagged_runs": {key: sum(v[key] for v in verdicts) for key in verdicts[0]},
        "all_s": total,
    }


def main() -> None:
    generator = torch.Generator().manual_seed(0)
    observed = BernoulliData(THETA).sample(N, generator)
    load_start = os.getloadavg()
    headline = measure(2, observed, generator)
    one_thread = measure(1, observed, generator)  # for comparison on a busy machine
    load_end = os.getloadavg()
    median = headline["median_s"]
    out = {
        "benchmark": "martingale_check",
        "script": "benchmarks/martingale_check.py",
        "goal": f"full check under {GOAL_S} s on 2 CPU cores (torch.set_num_threads(2))",
        "setting": {
            "model": "BetaBernoulli(1, 1)",
            "theta": THETA,
            "paths": J,
            "n": N,
            "m": M,
            "replicates": K,
            "statistics": list(headline["flagged_runs"]),
        },
        "warmup": WARMUP,
        "repeats": REPEATS,
        "median_s": median,
        "meets_goal": median < GOAL_S,
        "two_threads": headline,
        "one_thread": one_thread,
        "loadavg_at_start": load_start,
        "loadavg_at_end": load_end,
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "platform": platform.platform(),
            "processor": platform.processor(),
        },
        "date": date.today().isoformat(),
    }
    path = ROOT / "benchmarks" / "results" / "martingale_check.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    for r in (headline, one_thread):
        print(f"{r['threads']} thread(s): median {r['median_s']:.3f} s (min {r['min_s']:.3f}, max {r['max_s']:.3f})")
    print(f"{REPEATS} repeats each; load average {load_start[0]:.1f} -> {load_end[0]:.1f}")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
