"""Time to first render of the "Facet clusters" page for the MFCVAE demo, in Debian's
Chromium driven by Playwright against a local `latent-atlas app`.

A render counts as done when the page's title, its cluster grid image and at least four
charts are on screen and no spinner or running indicator is showing. Measured:
- cold: the first visit after the server starts (loads the model, encodes the test split,
  trains the probes), timed from picking the model in the sidebar;
- warm: later visits in fresh browser sessions (Streamlit's caches are warm);
- interaction: switching the facet, timed from the choice to the new cluster grid.

    .venv/bin/python benchmarks/page_render.py [--repeats 5]

Writes benchmarks/results/page_render.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from browser import CHROMIUM, CHROMIUM_ARGS, dashboard, wait_until_rendered  # noqa: E402

from benchmarks.common import environment, loadavg  # noqa: E402

READY_JS = """() => {
  const main = document.querySelector('[data-testid="stMain"]');
  if (!main || !main.querySelector('h1')) return false;
  if (document.querySelector('[data-testid="stStatusWidget"], [data-testid="stSpinner"], [data-testid="stSkeleton"]'))
    return false;
  const imgs = [...main.querySelectorAll('[data-testid="stImage"] img')];
  const charts = main.querySelectorAll('.js-plotly-plot').length;
  return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0) && charts >= 4;
}"""


def time_until_ready(page, start: float, timeout_s: float = 300.0) -> float:
    page.wait_for_function(READY_JS, timeout=timeout_s * 1000, polling=50)
    return time.perf_counter() - start


def pick_mfcvae(page) -> float:
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
    option = page.locator('[role="option"]', has_text="mfcvae").first
    start = time.perf_counter()
    option.click()
    page.wait_for_timeout(100)  # let the rerun start before checking for readiness
    return time_until_ready(page, start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if CHROMIUM is None:
        sys.exit("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp())
    load_at_start = loadavg()
    warm, switch = [], []
    with dashboard(tmp / "runs", tmp / "app.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for i in range(args.repeats + 1):
            context = browser.new_context(viewport={"width": 1400, "height": 2400})
            page = context.new_page()
            page.goto(f"{url}/facet_clusters")
            wait_until_rendered(page)
            elapsed = pick_mfcvae(page)
            if i == 0:
                cold = elapsed
            else:
                warm.append(elapsed)
            wait_until_rendered(page)
            facet = page.locator('[data-testid="stMain"] [data-testid="stSelectbox"]').first
            facet.click()
            option = page.locator('[role="option"]', has_text="facet1").first
            start = time.perf_counter()
            option.click()
            page.wait_for_timeout(100)
            switch.append(time_until_ready(page, start))
            context.close()
        browser.close()
    out = {
        "benchmark": "facet_page_first_render",
        "page": "Facet clusters",
        "model": "facet-digits-mfcvae demo (4,000 test inputs)",
        "cold_s": round(cold, 2),
        "warm_median_s": round(statistics.median(warm), 2),
        "warm_s": [round(v, 2) for v in warm],
        "facet_switch_median_s": round(statistics.median(switch), 2),
        "facet_switch_s": [round(v, 2) for v in switch],
        "environment": environment(load_at_start),
    }
    path = ROOT / "benchmarks" / "results" / "page_render.json"
    path.write_text(json.dumps(out, indent=2))
    print(
        f"cold {out['cold_s']} s, warm {out['warm_median_s']} s, facet switch {out['facet_switch_median_s']} s; "
        f"wrote {path.relative_to(ROOT)}"
    )


if __name__ == "__main__":
    main()
