"""Does watching a run slow it down? Training throughput with and without the Train page
open on it in Chromium (live refresh every 3 s), measured on one training process.

A `digits-vae` run trains in its own process (one torch thread, as the page starts
runs on a 2-core machine) against a local `latent-atlas app`. Its throughput is read from
the run's own `train/samples_per_s` metric (logged every 25 steps), in alternating
windows: page closed, page open, page closed, ... so that a drift in machine load
affects both sides alike. The result is the ratio of the medians.

    .venv/bin/python benchmarks/live_page.py [--windows 6] [--window-s 20]

Writes benchmarks/results/live_page.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from browser import CHROMIUM, CHROMIUM_ARGS, dashboard, wait_until_rendered  # noqa: E402

from benchmarks.common import cpu_name, loadavg  # noqa: E402
from engine.store import Run, RunStore  # noqa: E402
from engine.store.atomic import atomic_write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=6, help="windows per side (closed / open), alternating")
    parser.add_argument("--window-s", type=float, default=20.0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "live_page.json"))
    args = parser.parse_args()
    if CHROMIUM is None:
        sys.exit("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp())
    runs = tmp / "runs"
    load_before = loadavg()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    trainer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "--runs-dir",
            str(runs),
            "train",
            "--preset",
            "digits-vae",
            "--quiet",
            "--set",
            "train.steps=10000000",
            "--set",
            "train.eval_every=500",
            "--set",
            "train.checkpoint_every=100000",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    closed, opened = [], []
    try:
        with dashboard(runs, tmp / "app.log") as url, sync_playwright() as p:
            deadline = time.time() + 120
            while not (runs.exists() and RunStore(runs).list_runs()) and time.time() < deadline:
                time.sleep(0.5)
            run = Run.from_dir(RunStore(runs).list_runs()[0].dir, readonly=True)
            time.sleep(10)  # past start-up and the first evaluation
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for i in range(2 * args.windows):
                page_open = i % 2 == 1
                context = page = None
                if page_open:
                    context = browser.new_context(viewport={"width": 1400, "height": 2400})
                    page = context.new_page()
                    page.goto(f"{url}/training")
                    wait_until_rendered(page)
                t0 = time.time()
                time.sleep(args.window_s)
                values = [v for _, v in run.metrics.logged_between("train/samples_per_s", t0, time.time())]
                (opened if page_open else closed).append(statistics.median(values))
                if page_open:
                    step_text = page.locator('[data-testid="stMetric"]:has-text("Step")').first.inner_text()
                    assert "of" in step_text, "the page did not show the run"
                    context.close()
            browser.close()
    finally:
        trainer.terminate()
        trainer.wait(timeout=30)
    ratio = statistics.median(opened) / statistics.median(closed)
    result = {
        "benchmark": "training throughput with and without the live Train page open",
        "machine": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
        },
        "setup": {
            "preset": "digits-vae",
            "torch_threads": 1,
            "window_s": args.window_s,
            "windows_per_side": args.windows,
            "page_refresh_s": 3,
        },
        "samples_per_s": {"page_closed": closed, "page_open": opened},
        "summary": {
            "median_closed": statistics.median(closed),
            "median_open": statistics.median(opened),
            "slowdown_percent": round(100 * (1 - ratio), 2),
            "goal": "at most 5% slower with the page open",
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result)
    print(result["summary"])


if __name__ == "__main__":
    main()
