"""Test ELBO and IWAE bound of every demo run in assets/runs, seeded, written as JSON.

Run before and after an engine change that must not alter behaviour, and compare:

    python scripts/demo_elbos.py --out before.json
    python scripts/demo_elbos.py --out after.json --compare before.json --tol 1e-4

Sequence models (the in-context learner) report their test NLL instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from engine.loading import evaluate_bounds, load_run_model
from engine.models import family_kind
from engine.store import Run

ROOT = Path(__file__).resolve().parents[1]


def demo_bounds(n: int, k: int) -> dict[str, dict[str, float]]:
    out = {}
    for path in sorted((ROOT / "assets" / "runs").iterdir()):
        if not (path / "config.json").exists():
            continue
        loaded = load_run_model(Run.from_dir(path))
        data = loaded.spec.load_data("test")
        with torch.no_grad():
            if family_kind(loaded.spec.family) == "sequence":
                metrics = loaded.model.evaluation_metrics(data, min(n, len(data)))
                out[path.name] = {key: float(v) for key, v in metrics.items() if isinstance(v, (int, float))}
            else:
                out[path.name] = evaluate_bounds(loaded.model, data, k=k, n=n)
        print(path.name, out[path.name], flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="test examples per demo")
    parser.add_argument("--k", type=int, default=100, help="importance samples of the IWAE bound")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--compare", type=Path, help="an earlier output to compare against")
    parser.add_argument("--tol", type=float, default=1e-4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = demo_bounds(args.n, args.k)
    args.out.write_text(json.dumps({"n": args.n, "k": args.k, "demos": result}, indent=1) + "\n")
    if args.compare is None:
        return 0
    before = json.loads(args.compare.read_text())["demos"]
    worst = 0.0
    for name, metrics in result.items():
        for key, value in metrics.items():
            if key in before.get(name, {}):
                diff = abs(value - before[name][key])
                worst = max(worst, diff)
                flag = "" if diff <= args.tol else "  <-- differs"
                print(f"{name:44} {key:8} {before[name][key]:12.6f} {value:12.6f} {diff:.2e}{flag}")
    missing = sorted(set(before) - set(result))
    if missing:
        print("missing demos:", ", ".join(missing))
    print(f"largest difference {worst:.2e} (tolerance {args.tol:g})")
    return 0 if worst <= args.tol and not missing else 1


if __name__ == "__main__":
    sys.exit(main())
