"""How soon the dashboard answers after it is started, against a bare Streamlit page started the
same way, in one run. Writes benchmarks/results/startup.json.

    .venv/bin/python benchmarks/startup.py            # about 2 minutes on 2 cores
    .venv/bin/python benchmarks/startup.py --quick    # a smoke test

Sides, interleaved over the repeats (A B C, C B A, ...), each a fresh server process:

- `bare streamlit page`: `python -m streamlit run bare.py`, where bare.py only sets a title;
- `latent-atlas app`: the launcher (`python -m engine.cli app`), which starts Streamlit on app/main.py;
- `./dev app`: the same behind the developer script (its set-up check and dataset check first).

All get the same server options (headless, a free local port, no usage statistics). Two times
per start: **health**, from starting the process to the first HTTP 200 of `/_stcore/health`
(polled every 10 ms); **title**, from then until a fresh Chromium page (the browser is started
once, before the first side) shows the first page's title, a `h1` in the main area. For the
dashboard that first page is Home, whose script loads the engine (torch) and the demo runs'
list. The JSON holds every start, the medians, the ratios to the bare page, and the load average.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

from benchmarks.common import cpu_name, display_path, loadavg  # noqa: E402

BARE_PAGE = 'import streamlit as st\n\nst.title("A bare Streamlit page")\n'
SERVER_OPTIONS = ["--server.headless", "true", "--browser.gatherUsageStats", "false"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(side: str, port: int, bare: Path, runs: Path) -> list[str]:
    if side == "bare streamlit page":
        return [sys.executable, "-m", "streamlit", "run", str(bare), "--server.port", str(port), *SERVER_OPTIONS]
    if side == "latent-atlas app":
        return [sys.executable, "-m", "engine.cli", "--runs-dir", str(runs), "app", "--headless", "--port", str(port)]
    return ["bash", str(ROOT / "dev"), "app", "--headless", "--port", str(port)]


def start_once(side: str, browser, bare: Path, runs: Path) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "LATENT_ATLAS_RUNS_DIR": str(runs), "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    process = subprocess.Popen(
        command(side, port, bare, runs), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if process.poll() is not None or time.perf_counter() - start > 60:
                    raise RuntimeError(f"{side} did not start") from None
                time.sleep(0.01)
        health = time.perf_counter() - start
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        opened = time.perf_counter()
        page.goto(url)
        page.wait_for_selector('[data-testid="stMain"] h1', timeout=120_000)
        title = time.perf_counter() - opened
        context.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
    return {"health_s": health, "title_s": title, "total_s": health + title}


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="a smoke test: one start per side")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "startup.json")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    sides = ["bare streamlit page", "latent-atlas app", "./dev app"]
    starts: dict[str, list[dict]] = {side: [] for side in sides}
    load_start = loadavg()
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        bare, runs = Path(tmp) / "bare.py", Path(tmp) / "runs"
        bare.write_text(BARE_PAGE)
        runs.mkdir()
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        start_once(sides[0], browser, bare, runs)  # untimed: the first start of all reads files from disk
        for repeat in range(repeats):
            for side in sides if repeat % 2 == 0 else sides[::-1]:
                result = start_once(side, browser, bare, runs)
                starts[side].append(result)
                print(f"{side:22} health {result['health_s']:.2f} s  title {result['title_s']:.2f} s")
        browser.close()
    medians = {
        side: {key: round(statistics.median(r[key] for r in results), 3) for key in ("health_s", "title_s", "total_s")}
        for side, results in starts.items()
    }
    bare_median = medians[sides[0]]
    ratios = {
        side: {key: round(values[key] / bare_median[key], 2) for key in values}
        for side, values in medians.items()
        if side != sides[0]
    }
    out = {
        "benchmark": "startup",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "goal": "server answers (health) within 1.5x the bare Streamlit page's time",
        "repeats": repeats,
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform()},
        "threads": {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "LATENT_ATLAS_THREADS")},
        "loadavg_at_start": load_start,
        "loadavg_at_end": loadavg(),
        "median": medians,
        "ratio_to_bare_page": ratios,
        "starts": starts,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"median": medians, "ratio_to_bare_page": ratios}, indent=2))
    print(f"wrote {display_path(args.out)}")


if __name__ == "__main__":
    main()
