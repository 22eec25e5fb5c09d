"""How often do the martingale checks flag each predictor? (issue: Martingale checks)

For each predictor (the exact Beta(1, 1)-Bernoulli model, the +0.05 bias, exponential
forgetting with lambda = 0.95, and the trained neural in-context learner demo) and each
theta* and path length m in {n/2, 2n}, draws `--reps` fresh observed sequences z_1..n,
imagines J paths after each (all sequences in one batched call), runs the full check
against K bootstrap replicates of the conjugate model, and counts how often each statistic
falls outside its band.

    python scripts/martingale_report.py [--reps 20] [--n 50]

Writes scripts/results/martingale.json and prints the table the README quotes.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from engine.diagnostics.martingale import martingale_check
from engine.loading import load_run_model
from engine.sequence import BernoulliData, sample_paths
from engine.sequence.choices import make_predictor
from engine.store import Run

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


def neural_demo():
    for d in sorted((ROOT / "assets" / "runs").iterdir()):
        if json.loads((d / "config.json").read_text()).get("preset") == "bernoulli-icl":
            return load_run_model(Run.from_dir(d, readonly=True)).model, d.name
    raise SystemExit("no bernoulli-icl demo under assets/runs")


def flag_rates(predictor, theta: float, n: int, m: int, reps: int, paths: int, replicates: int, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    observed = BernoulliData(theta).sample(reps * n, gen).reshape(reps, n)
    with torch.no_grad():
        batch = sample_paths(predictor, observed, m, paths, generator=gen)  # z: (reps, J, m)
    counts: dict[str, int] = {}
    for r in range(reps):
        one = type(batch)(
            observed=batch.observed[r],
            z=batch.z[r],
            predictive_mean=batch.predictive_mean[r],
            family=batch.family,
            permuted=batch.permuted,
            quantum=batch.quantum,
        )
        for key, v in martingale_check(one, replicates, generator=gen).verdicts.items():
            counts[key] = counts.get(key, 0) + int(v.flagged)
    return {key: c / reps for key, c in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--paths", type=int, default=200)
    parser.add_argument("--replicates", type=int, default=300)
    parser.add_argument("--thetas", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, demo = neural_demo()
    predictors = {
        "exact Bayes": make_predictor("bayes", "bernoulli"),
        "bias +0.05": make_predictor("biased", "bernoulli", 0.05),
        "forgetting 0.95": make_predictor("forgetting", "bernoulli", 0.95),
        f"neural learner ({demo})": model,
    }
    started = time.time()
    rows = []
    for name, predictor in predictors.items():
        for m in (args.n // 2, 2 * args.n):
            for i, theta in enumerate(args.thetas):
                rates = flag_rates(
                    predictor, theta, args.n, m, args.reps, args.paths, args.replicates, seed=1000 * i + m
                )
                rows.append({"predictor": name, "theta": theta, "n": args.n, "m": m, "flag_rate": rates})
                print(name, f"theta={theta} m={m}", {k: f"{v:.0%}" for k, v in rates.items()}, flush=True)
    out = {
        "script": "scripts/martingale_report.py",
        "settings": vars(args),
        "seconds": round(time.time() - started, 1),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "martingale.json").write_text(json.dumps(out, indent=1))
    print(f"wrote {(RESULTS / 'martingale.json').relative_to(ROOT)}")


if __name__ == "__main__":
    main()
