"""The README's screenshots, taken again from the running dashboard in Debian's Chromium:
one per page of the navigation, docs/screenshots/<page file's name>.png, each on the demo
model that suits the page.

    .venv/bin/python scripts/screenshots.py [--only latent_map traversals ...] [--out DIR]

The dashboard starts on a free port with its runs root in the temporary folder
(latent-atlas-screenshots/runs), which holds nothing but what the dashboard caches there: only
the demo models are listed, and the latent map's UMAP is computed once. Each page is opened
by a link that names its demo (`?run=fashion-vae`), given its main choice where it needs one,
and shot once it has finished (no spinner or running indicator for a second, every image
loaded, every chart drawn), whole or, for a long page, down to a subheading. The Latent map
is Fashion-MNIST's train and test splits (70,000 images) under UMAP, so it needs the
dataset's files (./dev installs Debian's dataset-fashion-mnist when it runs as root; or
`latent-atlas data fetch fashion-mnist`).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from browser import CHROMIUM, CHROMIUM_ARGS, CHROMIUM_MISSING, dashboard, wait_until_rendered  # noqa: E402

from app.navigation import PAGES  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
# The dashboard's runs root, which the Runs, Train and Import pages name: in the temporary folder, under a
# fixed name, so that the shots name no folder of the machine that took them and the map's UMAP is kept.
RUNS_DIR = Path(tempfile.gettempdir()) / "latent-atlas-screenshots" / "runs"
VIEWPORT = {"width": 1400, "height": 1000}  # then as tall as the page (Streamlit scrolls inside its main area)
MAX_HEIGHT = 6000
UMAP_TIMEOUT_S = 1800  # UMAP of 70,000 points took 15 s on two cores

# Every image loaded, every Plotly chart and Vega-Lite chart drawn, every map component drawn.
DRAWN_JS = """() => {
  const main = document.querySelector('[data-testid="stMain"]');
  const images = [...main.querySelectorAll('[data-testid="stImage"] img')];
  const plots = [...main.querySelectorAll('.js-plotly-plot')];
  const vega = [...main.querySelectorAll('[data-testid="stVegaLiteChart"]')];
  const frames = [...main.querySelectorAll('iframe[title*="latent_scatter"]')];
  return images.every(i => i.complete && i.naturalWidth > 0)
    && plots.every(p => p.querySelector('.main-svg'))
    && vega.every(v => v.querySelector('canvas, svg'))
    && frames.every(f => { const d = f.contentDocument && f.contentDocument.getElementById('plot');
                            return d && d._fullData; });
}"""


@dataclass(frozen=True)
class Shot:
    demo: str | None  # the demo model the page is shown on (its name in a ?run= link); None: the default
    query: str = ""  # more of the link: the page's main choice
    prepare: Callable | None = None  # what to do on the page before the shot
    until: str | None = None  # a long page: shot down to this subheading, not the whole page


def pick(page, label: str, option: str) -> None:
    """Choose `option` in the main area's selectbox labelled `label`."""
    page.locator('[data-testid="stMain"] [data-testid="stSelectbox"]', has_text=label).first.click()
    page.locator('[role="option"]', has_text=option).first.click()
    page.wait_for_timeout(500)
    wait_until_rendered(page)


def whole_fashion_mnist_under_umap(page) -> None:
    """The map of all 70,000 Fashion-MNIST images (train then test) under UMAP, computed in the
    page's background job (or found in the runs root's cache), then a point hovered."""
    page.get_by_text("train + test", exact=True).click()
    page.wait_for_timeout(500)
    wait_until_rendered(page, timeout_s=600)
    page.locator('[data-testid="stMain"] [data-testid="stRadio"]', has_text="Method").get_by_text(
        "UMAP", exact=True
    ).click()
    caption = page.locator('[data-testid="stCaptionContainer"]', has_text="70,000 points").first
    deadline = time.time() + UMAP_TIMEOUT_S
    while "map: UMAP" not in (caption.inner_text() if caption.count() else ""):
        if time.time() > deadline:
            raise TimeoutError(f"UMAP of 70,000 points was not done in {UMAP_TIMEOUT_S} s")
        time.sleep(5)
    wait_until_rendered(page, timeout_s=600)
    print(f"  {caption.inner_text()}", flush=True)
    hover_a_point(page)


def hover_a_point(page) -> None:
    """Hover a point of the map, so that the shot shows its input beside the cursor."""
    frame_box = page.locator('iframe[title*="latent_scatter"]').bounding_box()
    frame = page.frame_locator('iframe[title*="latent_scatter"]')
    x, y = frame.locator("#plot").evaluate(
        """gd => { const fl = gd._fullLayout, s = fl._size, t = gd._fullData[0];
                   return [s.l + fl.xaxis.l2p(t.x[0]), s.t + fl.yaxis.l2p(t.y[0])]; }"""
    )
    page.mouse.move(frame_box["x"] + x, frame_box["y"] + y)
    frame.locator("#thumb").wait_for(state="visible", timeout=10_000)


def neural_learner(page) -> None:
    pick(page, "Predictor", "Neural in-context learner")


def colour_label(page) -> None:
    pick(page, "Label", "colour")


def beside_the_dctvae(page) -> None:
    pick(page, "Compare with", "digits-dctvae")
    page.mouse.move(VIEWPORT["width"] - 4, 200)  # off the charts, so that no toolbar shows


# The demo each page is shown on, by the page's file: every page of the navigation has one.
SHOTS = {
    "home.py": Shot("fashion-vae"),
    "sample_grids.py": Shot("fashion-vae"),
    "traversals.py": Shot("fashion-vae"),
    "latent_map.py": Shot("fashion-vae", prepare=whole_fashion_mnist_under_umap),
    "facet_clusters.py": Shot("facet-digits-mfcvae", "facet=1", colour_label, "The facet's latent space"),
    "classes_and_clusters.py": Shot("digits-gmdgm"),
    "global_latents.py": Shot("digits-domains-ugvae"),
    "hvae_norms.py": Shot("digits-hvae"),
    "multiresolution.py": Shot(None),  # needs no model
    "diffusion.py": Shot(None),  # its own run picker: the digits-ddpm-staged demo comes first
    "dctvae.py": Shot("digits-dctvae"),
    "receptive_fields.py": Shot("patches-tdvae-long"),
    "ica_sources.py": Shot("digits-bijecta"),
    "discrete_codes.py": Shot("digits-rrvq"),
    "compare.py": Shot(None, "runs=digits-vae,digits-tcvae,digits-seatbelt"),
    "layer_diagnostics.py": Shot("digits-hvae", prepare=beside_the_dctvae),
    "runs.py": Shot(None),
    "latent_activity.py": Shot("facet-digits-mfcvae"),
    "importance_weights.py": Shot("digits-vae"),
    "robustness.py": Shot("digits-seatbelt"),
    "hmc_chains.py": Shot(None),  # a toy density, the page's default target
    "martingale_checks.py": Shot(None, prepare=neural_learner),  # the bernoulli-icl demo learner
    "training.py": Shot(None),
    "import_data.py": Shot(None),
}


def fit_height(page) -> None:
    """Make the window as tall as the page's content (at most MAX_HEIGHT), so that one shot holds it all."""
    page.set_viewport_size(VIEWPORT)  # the content's height shows only in a window no taller than it
    while True:
        height = min(MAX_HEIGHT, page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight"))
        if height <= page.viewport_size["height"]:
            return
        page.set_viewport_size({"width": VIEWPORT["width"], "height": height})
        page.wait_for_timeout(500)
        wait_until_rendered(page)


def take(page, url: str, file: str, shot: Shot, out: Path) -> Path:
    query = "&".join(q for q in (f"run={shot.demo}" if shot.demo else "", shot.query) if q)
    path = "" if file == PAGES[0].file else Path(file).stem
    page.goto(f"{url}/{path}" + (f"?{query}" if query else ""))
    wait_until_rendered(page, timeout_s=600)
    if shot.demo is not None:
        chosen = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"] input').first.input_value()
        if f" {shot.demo} " not in chosen:
            raise RuntimeError(f"{file}: the link did not open the {shot.demo} demo (the sidebar shows {chosen!r})")
    page.mouse.move(VIEWPORT["width"] - 4, 200)  # nothing hovered (the main area's right margin)
    if shot.prepare is not None:
        fit_height(page)  # a selectbox out of view does not open
        shot.prepare(page)
    page.evaluate("document.activeElement && document.activeElement.blur()")  # no focus ring
    page.wait_for_function(DRAWN_JS, timeout=600_000)
    wait_until_rendered(page, timeout_s=600)
    problems = page.locator('[data-testid="stException"], [data-testid="stAlert"]:has-text("cannot")')
    if problems.count():
        raise RuntimeError(f"{file}: the page shows an error: {problems.first.inner_text()[:300]}")
    fit_height(page)
    clip = None
    if shot.until is not None:
        heading = page.locator('[data-testid="stMain"] h2, [data-testid="stMain"] h3', has_text=shot.until).first
        clip = {"x": 0, "y": 0, "width": VIEWPORT["width"], "height": heading.bounding_box()["y"] - 8}
    target = out / f"{Path(file).stem}.png"
    png = page.screenshot(clip=clip)
    Image.open(io.BytesIO(png)).convert("RGB").save(target, optimize=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="PAGE", help="only these pages (file names without .py)")
    parser.add_argument("--out", type=Path, default=OUT, help="where the PNGs go (default: docs/screenshots)")
    args = parser.parse_args()
    navigation = [spec.file for spec in PAGES]
    if set(SHOTS) != set(navigation):
        sys.exit(f"SHOTS must name every page of the navigation: {sorted(set(SHOTS) ^ set(navigation))}")
    files = navigation if args.only is None else [f"{name}.py" for name in args.only]
    unknown = [f for f in files if f not in SHOTS]
    if unknown:
        sys.exit(f"no such page: {', '.join(unknown)}; the pages are {', '.join(Path(f).stem for f in navigation)}")
    if CHROMIUM is None:
        sys.exit(CHROMIUM_MISSING)
    from playwright.sync_api import sync_playwright

    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with dashboard(RUNS_DIR, RUNS_DIR.parent / "app.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for file in files:
            start = time.time()
            context = browser.new_context(viewport=VIEWPORT)
            target = take(context.new_page(), url, file, SHOTS[file], args.out)
            context.close()
            size = Image.open(target).size
            print(
                f"{target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}: {size[0]}×{size[1]} px, "
                f"{target.stat().st_size / 1024:.0f} KB, {time.time() - start:.0f} s",
                flush=True,
            )
        browser.close()


if __name__ == "__main__":
    main()
