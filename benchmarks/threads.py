"""Training steps per second from the CLI at each thread setting, on an idle machine and beside
a busy process. Writes benchmarks/results/threads.json.

    .venv/bin/python benchmarks/threads.py            # about 10 minutes on 2 cores
    .venv/bin/python benchmarks/threads.py --quick    # a smoke test

Each measurement is one `latent-atlas train --preset PRESET` in a fresh process, as a user runs
it, with the run's own throughput log (`train/samples_per_s`, one value per 25 steps) as the
clock: the median over the logged windows after the first few (start-up, first evaluation),
divided by the batch size. The variants:

- `default`: what the CLI chooses by itself (engine.threads: the cores other processes leave
  free, kept right during the run by its governor, every 2 s);
- `1 thread`, `2 threads`: `--threads N`, fixed (2 threads is what torch did before: all cores);
- `2 threads, PASSIVE`: the same with OMP_WAIT_POLICY=PASSIVE, OpenMP's threads sleeping at once
  when they wait instead of spinning a while.

Conditions: `idle`; `busy`, one other CPU-bound process (a pure-Python loop, one core) from
before the start; `busy mid-run`, that process started once the run is 30% through (the run is
twice as long and its rate is the median of the windows past 60%, when the governor has had
time to act). Variants are interleaved over the repeats, so that drift in machine load hits
all alike; the JSON holds every repeat, the medians, the fraction of the best per condition,
the load average before and after, and the thread counts each run logged.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_name, display_path, loadavg  # noqa: E402

CONDITIONS = ("idle", "busy", "busy mid-run")
BUSY_LOOP = "import time\nend = time.time() + 3600\nwhile time.time() < end:\n    pass\n"


def variants(cores: int) -> list[tuple[str, list[str], dict[str, str]]]:
    """(label, extra `train` arguments, environment)."""
    out = [("default", [], {})]
    for n in sorted({1, cores}):
        out.append((f"{n} thread{'s' * (n > 1)}", ["--threads", str(n)], {}))
    out.append((f"{cores} threads, PASSIVE", ["--threads", str(cores)], {"OMP_WAIT_POLICY": "PASSIVE"}))
    return out


def train_once(
    preset: str, steps: int, args: list[str], env_changes: dict[str, str], condition: str, skip: int
) -> dict:
    """One CLI training run; its median samples/s over the logged windows after the first `skip`,
    or, when the busy process starts mid-run, over the windows of the run's last 40%."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "LATENT_ATLAS_THREADS", "MKL_"))}
    env.update(env_changes)
    env["PYTHONPATH"] = str(ROOT)
    busy = None
    if condition == "busy":
        busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
        time.sleep(1.0)  # let it take its core before the choice is made
    with tempfile.TemporaryDirectory() as runs:
        command = [sys.executable, "-m", "engine.cli", "--runs-dir", runs, "train", "--preset", preset, *args]
        command += ["--steps", str(steps), "--quiet", "--set", "train.eval_every=100000"]
        command += ["--set", "train.checkpoint_every=100000"]
        process = subprocess.Popen(
            command, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT
        )
        try:
            if condition == "busy mid-run":
                while process.poll() is None and latest_step(Path(runs)) < steps * 0.3:
                    time.sleep(0.1)
                busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
            _, stderr = process.communicate(timeout=900)
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-2000:]}")
        chosen = [line for line in stderr.splitlines() if line.startswith("threads:")]
        metrics = only_run(Path(runs)).metrics.scalars(["train/samples_per_s", "train/threads"])
        at, rates = metrics["train/samples_per_s"]
        _, used = metrics["train/threads"]
    if condition == "busy mid-run":
        values = [float(v) for s, v in zip(at, rates) if s > 0.6 * steps]
    else:
        values = [float(v) for v in rates][skip:]
    return {
        "samples_per_s": statistics.median(values),
        "windows": len(values),
        "chosen": chosen[-1] if chosen else None,
        "threads_logged": [int(v) for v in used],
    }


def only_run(runs: Path):
    from engine.store import Run, RunStore

    infos = RunStore(runs).list_runs()
    return Run.from_dir(infos[0].dir, readonly=True) if infos else None


def latest_step(runs: Path) -> int:
    run = only_run(runs)
    return (run.metrics.max_step() or 0) if run is not None and (run.dir / "metrics.sqlite").exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="digits-vae")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a smoke test: few steps, one repeat")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "threads.json")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats = 150, 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    batch = 128
    skip = 4 if not args.quick else 1
    results: dict[str, dict[str, list]] = {}
    load_start = loadavg()
    for condition in CONDITIONS:
        steps = args.steps * (2 if condition == "busy mid-run" else 1)
        for repeat in range(args.repeats):
            order = variants(cores) if repeat % 2 == 0 else variants(cores)[::-1]
            for label, extra, env in order:
                result = train_once(args.preset, steps, extra, env, condition, skip)
                entry = results.setdefault(condition, {}).setdefault(label, [])
                entry.append({**result, "steps_per_s": result["samples_per_s"] / batch})
                print(f"{condition:12} {label:36} {result['samples_per_s'] / batch:7.1f} steps/s  {result['chosen']}")
    summary = {}
    for condition, by_label in results.items():
        medians = {label: statistics.median(r["steps_per_s"] for r in runs) for label, runs in by_label.items()}
        best = max(medians.values())
        summary[condition] = {
            label: {"steps_per_s": round(m, 1), "fraction_of_best": round(m / best, 3)} for label, m in medians.items()
        }
    out = {
        "benchmark": "threads",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "goal": "the default never more than 10% below the best thread count, idle and beside a busy process",
        "preset": args.preset,
        "steps": args.steps,
        "repeats": args.repeats,
        "skipped_windows": skip,
        "machine": {"cpu": cpu_name(), "cores": cores, "platform": platform.platform()},
        "loadavg_at_start": load_start,
        "loadavg_at_end": loadavg(),
        "summary": summary,
        "runs": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {display_path(args.out)}")


if __name__ == "__main__":
    main()
