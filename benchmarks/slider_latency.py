"""Browser round trip from a traversal-slider change to the new decoded image, in
Debian's Chromium driven by Playwright against a local `latent-atlas app`.

For each move: press an arrow key on a live slider and time, on the browser's own
clock, from the keydown event to the moment the decoded image's new PNG has loaded.
Reports median and p95 over the moves. Writes benchmarks/results/slider_latency.json.

    .venv/bin/python benchmarks/slider_latency.py [--moves 40]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from browser import CHROMIUM, CHROMIUM_ARGS, dashboard, image_src, slider_input, wait_until_rendered  # noqa: E402
from common import cpu_name, loadavg  # noqa: E402

from app.runs import available_runs  # noqa: E402

CAPTION = "decoded"
# Record the time of every keydown, and of every load of the decoded image's new src.
WATCH_JS = """caption => {
  document.addEventListener('keydown', () => { window.__atlasKeydown = performance.now(); }, true);
  document.addEventListener('load', event => {
    const img = event.target;
    if (img.tagName === 'IMG' && img.closest('[data-testid="stImage"]')?.innerText.includes(caption)) {
      window.__atlasLoaded = {src: img.src, t: performance.now()};
    }
  }, true);
}"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--moves", type=int, default=40)
    parser.add_argument(
        "--pause",
        type=float,
        default=0.0,
        help="seconds to wait between moves (0: press again as soon as the image has loaded)",
    )
    args = parser.parse_args()
    if CHROMIUM is None:
        sys.exit("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    load_start = loadavg()
    tmp = Path(tempfile.mkdtemp())
    latencies = []
    with dashboard(tmp / "runs", tmp / "app.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2400})
        page.goto(f"{url}/traversals")
        wait_until_rendered(page)
        slider = slider_input(page, "z")
        slider.scroll_into_view_if_needed()
        page.evaluate(WATCH_JS, CAPTION)
        for i in range(args.moves + 3):
            before = image_src(page, CAPTION)
            slider.focus()
            slider.press("ArrowLeft" if (i // 10) % 2 else "ArrowRight")
            page.wait_for_function(
                "prev => window.__atlasLoaded && window.__atlasLoaded.src !== prev", arg=before, timeout=30000
            )
            elapsed = page.evaluate("() => window.__atlasLoaded.t - window.__atlasKeydown")
            if i >= 3:  # the first moves warm caches up
                latencies.append(elapsed)
            time.sleep(args.pause)
        browser.close()
    latencies.sort()
    out = {
        "benchmark": "slider_round_trip",
        "goal": "p95 under 300 ms on 2 CPU cores",
        "model": available_runs()[0].label,  # the sidebar's default
        "moves": len(latencies),
        "pause_between_moves_s": args.pause,
        "median_ms": statistics.median(latencies),
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))],
        "max_ms": latencies[-1],
        "all_ms": [round(v, 1) for v in latencies],
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu_name(),
            "loadavg_at_start": load_start,
            "loadavg_at_end": loadavg(),
            "server_torch_threads": "app/state.py's default: half the cores (1 here)",
        },
    }
    path = ROOT / "benchmarks" / "results" / f"slider_latency{'_pause' if args.pause else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"median {out['median_ms']:.0f} ms, p95 {out['p95_ms']:.0f} ms over {out['moves']} moves; wrote {path}")


if __name__ == "__main__":
    main()
