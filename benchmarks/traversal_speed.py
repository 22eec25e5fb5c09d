"""How long the traversal grid takes for every demo model that has latents: what the Latent
traversals page computes when a control changes, timed at 2 threads (the goal) and at 1
(the dashboard's own setting on a 2-core machine). Writes benchmarks/results/traversal_speed.json.

    .venv/bin/python benchmarks/traversal_speed.py     # about 3 minutes on a quiet 2-core machine

The page's defaults: the start is the posterior mean of test input #0, the range is the
prior's +- 2 sd, 11 steps, and the rows are the group's most informative dimensions (by
KL over the first 1,000 test inputs, as `activity_table` orders them), at most 24. The
grid is built by `engine.traversal.traversal_latents` and decoded in one batch by
`decode_group`, as the page does. For each demo the group the page opens on (the first)
is timed `--repeats` times after 5 warm-up grids at each thread count; every other group
(an HVAE's deeper layers, a facet, a second layer) `--other-repeats` times after one, at 2 threads. Beside it, interleaved, the
baseline: the generic path `decode_group` took before models could decode one group on
their own (`model.decode` of every group at full batch, under `torch.no_grad`).
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
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_name, loadavg  # noqa: E402
from engine.diagnostics.activity import latent_activity  # noqa: E402
from engine.loading import load_run_model  # noqa: E402
from engine.models import family_kind  # noqa: E402
from engine.models.base import OneGroupDecoder, posterior_means  # noqa: E402
from engine.store import Run, RunStore  # noqa: E402
from engine.traversal import decode_group, traversal_latents, traversal_range  # noqa: E402

STEPS = 11
MAX_ROWS = 24  # pages/traversals.py MAX_GRID_ROWS
WARMUP = 5
GOAL_MS = 30.0


def generic_decode(model, base: dict[str, torch.Tensor], group: str, z: torch.Tensor) -> torch.Tensor:
    """The baseline: every group at full batch through model.decode (decode_group's only path before)."""
    flat = z.reshape(-1, z.shape[-1])
    latents = {
        name: (flat if name == group else value.reshape(1, -1).expand(len(flat), -1)).reshape(-1, *g.shape)
        for (name, value), g in zip(base.items(), model.latent_groups)
    }
    with torch.no_grad():
        out = model.decode(latents)
    return out.reshape(*z.shape[:-1], *out.shape[1:])


def percentile(sorted_ms: list[float], q: float) -> float:
    return sorted_ms[round(q * (len(sorted_ms) - 1))]


def summary(ms: list[float]) -> dict:
    ms = sorted(ms)
    return {"median_ms": round(statistics.median(ms), 3), "p95_ms": round(percentile(ms, 0.95), 3)}


def time_group(model, base, group, rows, low, high, repeats: int, warmup: int = WARMUP) -> dict:
    """Median and p95 of the page's grid and of the baseline, interleaved, and their largest difference."""
    ours, baseline = [], []
    for i in range(repeats + warmup):
        t0 = time.perf_counter()
        latents = traversal_latents(base[group.name], rows, low, high, steps=STEPS)
        images = decode_group(model, base, group.name, latents)
        t1 = time.perf_counter()
        reference = generic_decode(model, base, group.name, traversal_latents(base[group.name], rows, low, high, STEPS))
        t2 = time.perf_counter()
        if i >= warmup:
            ours.append((t1 - t0) * 1000)
            baseline.append((t2 - t1) * 1000)
    return {
        "group": group.name,
        "rows": len(rows),
        "images_per_grid": len(rows) * STEPS,
        **summary(ours),
        "baseline": summary(baseline),
        "max_abs_difference_from_baseline": float((images - reference).abs().max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=50, help="timed grids of the page's default group")
    parser.add_argument("--other-repeats", type=int, default=5, help="timed grids of each other group (first count)")
    parser.add_argument("--threads", default="2,1", help="torch thread counts to time at, the first is the goal's")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "traversal_speed.json")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    load_start = loadavg()
    demos = []
    for info in sorted(RunStore(ROOT / "assets" / "runs").list_runs(), key=lambda i: i.id):
        if family_kind(info.model) != "latent":  # a sequence predictor has no latents to traverse
            continue
        loaded = load_run_model(Run.from_dir(info.dir, readonly=True))
        model, test = loaded.model, loaded.spec.load_data("test")
        activity = latent_activity(model, test, n=1000)
        with torch.no_grad():
            base = {name: m[0].flatten() for name, m in posterior_means(model, test.batch(torch.tensor([0]))).items()}
        entry = {
            "run": info.id,
            "family": info.model,
            "dataset": loaded.spec.data["name"],
            "data_kind": test.kind,  # the page draws traversals for images only
            "input_shape": list(model.config.input_shape),
            "one_group_decoder": isinstance(model, OneGroupDecoder),
            "groups": [{"name": g.name, "size": g.size} for g in model.latent_groups],
            "by_threads": {},
        }
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            timed = []
            for i, group in enumerate(model.latent_groups):
                if i > 0 and n_threads != threads[0]:
                    break  # the other groups at the goal's thread count only
                act = activity[group.name]
                low, high = traversal_range("prior", act)
                rows = act.order()[:MAX_ROWS].tolist()
                if i == 0:
                    timed.append(time_group(model, base, group, rows, low, high, args.repeats))
                else:
                    timed.append(time_group(model, base, group, rows, low, high, args.other_repeats, warmup=1))
            entry["by_threads"][str(n_threads)] = {"default_group": timed[0], "other_groups": timed[1:]}
            print(
                f"{info.id} {n_threads} thread(s): {timed[0]['group']} {timed[0]['images_per_grid']} images, "
                f"median {timed[0]['median_ms']:.2f} ms, p95 {timed[0]['p95_ms']:.2f} ms "
                f"(baseline p95 {timed[0]['baseline']['p95_ms']:.2f} ms)",
                flush=True,
            )
        demos.append(entry)
    goal_threads = str(threads[0])
    worst = max(demos, key=lambda d: d["by_threads"][goal_threads]["default_group"]["p95_ms"])
    worst_p95 = worst["by_threads"][goal_threads]["default_group"]["p95_ms"]
    out = {
        "benchmark": "traversal_grid",
        "what": "the Latent traversals page's grid for its default group and every other group: "
        f"the {MAX_ROWS} most informative dimensions at most x {STEPS} steps, start at test input #0's "
        "posterior mean, prior range +- 2 sd; traversal_latents + decode_group",
        "goal": f"default group's p95 under {GOAL_MS:.0f} ms at {goal_threads} threads for every demo",
        "summary": {
            "demos": len(demos),
            "worst_default_group_p95_ms": worst_p95,
            "worst_demo": worst["run"],
            "goal_met": worst_p95 < GOAL_MS,
        },
        "repeats": {"default_group": args.repeats, "other_groups": args.other_repeats, "warmup": WARMUP},
        "machine": {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads_timed": threads,
            "torch_interop_threads": torch.get_num_interop_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "loadavg_at_start": load_start,
            "loadavg_at_end": loadavg(),
        },
        "demos": demos,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"worst default-group p95 {worst_p95:.2f} ms ({worst['run']}); wrote {args.out.name}")


if __name__ == "__main__":
    main()
