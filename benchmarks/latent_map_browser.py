"""Is the latent map still responsive with 200,000 points? Chromium driven by Playwright
against a local `latent-atlas app`, on the `shapes-vae` demo's map of a 200,000-input
test split of `shapes` (PCA).

Measured, in one browser session:
- first map: from asking for 200,000 points to the map drawn (includes encoding the
  inputs once and caching their latents on disk), and again in a fresh session (cached);
- hover: from moving the mouse onto a point to its thumbnail (from the sprite sheets) on
  screen beside the cursor;
- selection: from releasing a lasso to the selected inputs' gallery on screen (a rerun
  of the page: the selection goes to the server, the gallery comes back).

    .venv/bin/python benchmarks/latent_map_browser.py [--points 200000] [--repeats 10]

Writes benchmarks/results/latent_map_browser.json.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urljoin

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from browser import CHROMIUM, CHROMIUM_ARGS, dashboard, scatter_frame, wait_until_rendered  # noqa: E402

from benchmarks.common import cpu_name, environment, loadavg  # noqa: E402
from engine.store.atomic import atomic_write_json  # noqa: E402


def pick_model(page, text: str) -> None:
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
    page.locator('[role="option"]', has_text=text).first.click()
    page.wait_for_timeout(300)
    wait_until_rendered(page, timeout_s=600)


def ask_for_points(page, n: int) -> float:
    box = page.locator('[data-testid="stNumberInput"] input').first
    box.fill(str(n))
    start = time.perf_counter()
    box.press("Enter")
    page.wait_for_timeout(300)
    page.wait_for_function(
        f"""() => [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
        .some(c => c.innerText.startsWith('{n:,} points'))""",
        timeout=900_000,
        polling=100,
    )
    wait_until_rendered(page, timeout_s=900)
    return time.perf_counter() - start


def plot_box(page) -> dict:
    """The plot area, in page pixels."""
    return scatter_frame(page).locator(".nsewdrag").first.bounding_box()


def hover_once(page, fx: float, fy: float) -> float | None:
    box, thumb = plot_box(page), scatter_frame(page).locator("#thumb")
    page.mouse.move(box["x"] + 5, box["y"] + 5)
    page.wait_for_timeout(200)
    before = thumb.get_attribute("data-id")
    start = time.perf_counter()
    page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
    try:
        thumb.wait_for(state="visible", timeout=5000)
        if thumb.get_attribute("data-id") == before:  # still the last point's: wait for this one's
            scatter_frame(page).wait_for_function(
                f"() => document.getElementById('thumb').dataset.id !== '{before}'", timeout=5000, polling=5
            )
    except Exception:  # no point under the cursor here
        return None
    return time.perf_counter() - start


def lasso_once(page, cx: float, cy: float, r: float) -> float:
    box = plot_box(page)
    x0, y0, w, h = box["x"], box["y"], box["width"], box["height"]
    page.mouse.move(x0 + (cx + r) * w, y0 + cy * h)
    page.mouse.down()
    for k in range(1, 25):
        a = 2 * math.pi * k / 24
        page.mouse.move(x0 + (cx + r * math.cos(a)) * w, y0 + (cy + r * math.sin(a)) * h)
    start = time.perf_counter()
    page.mouse.up()
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="stMarkdownContainer"]')]
        .some(m => / selected/.test(m.innerText))""",
        timeout=120_000,
        polling=20,
    )
    elapsed = time.perf_counter() - start
    wait_until_rendered(page, timeout_s=120)  # the gallery's images, before the next lasso
    return elapsed


def payload(page) -> dict:
    """Bytes the browser fetched for the map: the figure's JSON and the hover sprites."""
    frame = scatter_frame(page)
    urls = frame.evaluate(
        "() => ({figure: shown.figure, manifest: shown.sprites, sheets: atlas.sheets.map(s => s.url),"
        " tile: [atlas.tile_w, atlas.tile_h], count: atlas.count})"
    )

    def size(url: str) -> int:
        return len(page.request.get(urljoin(frame.url, url)).body())

    return {
        "figure_json_bytes": size(urls["figure"]),
        "sprite_manifest_bytes": size(urls["manifest"]),
        "sprite_sheets": len(urls["sheets"]),
        "sprite_bytes": sum(map(size, urls["sheets"])),
        "tile_px": urls["tile"],
        "thumbnails": urls["count"],
    }


def map_session(browser, url: str, n: int):
    """A fresh browser session on the shapes-vae map of n points; (context, page, seconds
    from asking for the points to the map on screen)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1600})
    page = context.new_page()
    page.goto(f"{url}/latent_map")
    wait_until_rendered(page, timeout_s=300)
    pick_model(page, "shapes-vae")
    return context, page, ask_for_points(page, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "latent_map_browser.json"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    if CHROMIUM is None:
        sys.exit("Debian's chromium is not installed (apt-get install chromium)")
    tmp, load_before = Path(tempfile.mkdtemp()), loadavg()
    hovers, lassos = [], []
    with dashboard(tmp / "runs", tmp / "app.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, "--use-gl=swiftshader", "--enable-unsafe-swiftshader"]
        )
        context, page, first = map_session(browser, url, args.points)  # encodes the inputs, caches the latents
        context.close()
        context, page, cached = map_session(browser, url, args.points)
        scatter_frame(page, timeout_s=300)  # the figure and the sprites' manifest loaded
        sizes = payload(page)
        for i in range(args.repeats * 3):
            if len(hovers) >= args.repeats:
                break
            t = hover_once(page, 0.3 + 0.4 * ((i * 0.37) % 1), 0.3 + 0.4 * ((i * 0.61) % 1))
            if t is not None:
                hovers.append(t)
        for i in range(args.repeats):
            lassos.append(lasso_once(page, 0.4 + 0.2 * ((i * 0.37) % 1), 0.4 + 0.2 * ((i * 0.61) % 1), 0.05))
        exceptions = page.locator('[data-testid="stException"]').count()
        browser.close()

    def stats(values):
        return (
            {"median_s": statistics.median(values), "p95_s": float(np.percentile(values, 95)), "values_s": values}
            if values
            else None
        )

    result = {
        "benchmark": f"latent map in Chromium with {args.points:,} points (shapes-vae demo, PCA)",
        "machine": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
            "webgl": "SwiftShader (software)",
            "threads": environment()["threads"],
        },
        "first_map_s": {"encode_and_draw": first, "cached_latents": cached},
        "payload": sizes,
        "hover_thumbnail": stats(hovers),
        "lasso_round_trip": stats(lassos),
        "exceptions_on_page": exceptions,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result)
    print({k: v for k, v in result.items() if k != "machine"})


if __name__ == "__main__":
    main()
