"""Path sampling for the neural in-context learner: the batched, cached sampler against the
naive way (issue 7, "Speed").

- cached: `engine.sequence.sample_paths`, all J paths at once, one key/value-cache step
  per new token (`ICLTransformer.start` / `update`);
- naive: `engine.models.icl.naive_paths`, one path at a time, the transformer re-run
  on the whole context for every new token.

Both draw J paths of length m after n observations (the martingale check's setting, seed000
§4.5 Algorithm A). The naive side is timed on fewer paths (--naive-paths) and scaled to J;
the JSON says so. The model is the bernoulli-icl demo in assets/runs (the timing does not
depend on the weights, only on the architecture).

Usage (from the repository root):
    .venv/bin/python benchmarks/icl_paths.py            # about a minute on a quiet 2-core machine
    .venv/bin/python benchmarks/icl_paths.py --quick    # smoke test

Results go to benchmarks/results/icl_paths.json (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks.common import environment, loadavg  # noqa: E402
from engine.loading import load_run_model  # noqa: E402
from engine.models.icl import naive_paths  # noqa: E402
from engine.sequence import BernoulliData, sample_paths  # noqa: E402
from engine.store import Run, RunStore  # noqa: E402


def demo_run() -> Run:
    for info in RunStore(REPO / "assets" / "runs").list_runs():
        run = Run.from_dir(info.dir, readonly=True)
        if run.config.get("preset") == "bernoulli-icl":
            return run
    raise SystemExit("no bernoulli-icl demo under assets/runs; see assets/README.md")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--m", type=int, default=100)
    parser.add_argument("--paths", type=int, default=200, help="J, the paths of the cached sampler")
    parser.add_argument("--naive-paths", type=int, default=5, help="paths the naive side is timed on")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="n = 20, m = 20, J = 50, one repeat")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "icl_paths.json"))
    args = parser.parse_args()
    if args.quick:
        args.n, args.m, args.paths, args.naive_paths, args.repeats = 20, 20, 50, 2, 1
    torch.set_num_threads(args.threads)
    load_at_start = loadavg()

    run = demo_run()
    model = load_run_model(run).model
    observed = BernoulliData(0.5).sample(args.n, torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    sample_paths(model, observed, m=4, paths=8, generator=gen)  # warm-up
    naive_paths(model, observed, m=4, paths=1, generator=gen)

    cached, naive = [], []
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits both sides alike
        cached.append(timed(lambda: sample_paths(model, observed, m=args.m, paths=args.paths, generator=gen)))
        naive.append(timed(lambda: naive_paths(model, observed, m=args.m, paths=args.naive_paths, generator=gen)))
    cached_s = statistics.median(cached)
    naive_s = statistics.median(naive) * args.paths / args.naive_paths
    result = {
        "what": "J continuation paths of length m after n Bernoulli observations from the bernoulli-icl demo",
        "n": args.n,
        "m": args.m,
        "paths": args.paths,
        "model": str(run.dir.relative_to(REPO)),
        "model_summary": model.config.summary(),
        "cached_seconds": cached_s,
        "naive_seconds_scaled": naive_s,
        "naive_timed_on_paths": args.naive_paths,
        "naive_note": f"the naive sampler was timed on {args.naive_paths} paths and scaled linearly to {args.paths}",
        "ratio": naive_s / cached_s,
        "cached_repeats_seconds": cached,
        "naive_repeats_seconds": naive,
        "threads": args.threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "environment": environment(load_at_start),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"cached {cached_s:.2f} s, naive {naive_s:.1f} s (scaled from {args.naive_paths} paths): "
        f"{result['ratio']:.0f}x -> {args.out}"
    )


if __name__ == "__main__":
    main()
