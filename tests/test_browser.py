"""The dashboard in a real browser: every page renders, the live traversal slider decodes
a new image, and hovering a latent map's point shows its input while a click or a box
selects. Screenshots land in test-artifacts/screenshots/."""

import io
import re
import runpy
import time
from pathlib import Path
from urllib.parse import urljoin

import numpy as np
import pytest
import torch
from browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    CHROMIUM_MISSING,
    ROOT,
    SCATTER,
    dashboard,
    image_src,
    map_points,
    scatter_frame,
    slider_input,
    wait_until_rendered,
)
from PIL import Image

from app.navigation import PAGES

SHOTS = ROOT / "test-artifacts" / "screenshots"


@pytest.fixture(scope="module", autouse=True)
def chromium() -> str:
    """The browser every test here drives: a missing one fails them, before a dashboard starts."""
    if CHROMIUM is None:
        pytest.fail(CHROMIUM_MISSING)
    return CHROMIUM


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("browser") / "runs"


@pytest.fixture(scope="module")
def app_url(runs_dir):
    with dashboard(runs_dir, runs_dir.parent / "app.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 2400})
    yield context.new_page()
    context.close()


@pytest.mark.parametrize("spec", PAGES, ids=[p.file for p in PAGES])
def test_page_renders_in_chromium(app_url, page, spec):
    path = "" if spec is PAGES[0] else Path(spec.file).stem
    page.goto(f"{app_url}/{path}")
    wait_until_rendered(page)
    if spec.file == "facet_clusters.py":  # this page needs a multi-facet model: pick the MFCVAE demo
        choose_model(page, "mfcvae")
    if spec.file in ("hvae_norms.py", "layer_diagnostics.py"):  # these need a hierarchical VAE
        choose_model(page, "digits-hvae")
    if spec.file == "classes_and_clusters.py":  # a model with a discrete latent y
        choose_model(page, "digits-gmdgm")
    if spec.file == "global_latents.py":  # a model with a latent shared by a group
        choose_model(page, "digits-ugvae")
    if spec.file == "dctvae.py":  # a DCT-VAE
        choose_model(page, "digits-dctvae")
    if spec.file == "receptive_fields.py":  # a TD-VAE
        choose_model(page, "patches-tdvae-long")
    if spec.file == "ica_sources.py":  # a Bijecta
        choose_model(page, "digits-bijecta")
    if spec.file == "discrete_codes.py":  # a hierarchy of codes
        choose_model(page, "digits-rrvq")
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator('[data-testid="stAlert"]:has-text("cannot")').count() == 0
    assert page.locator("h1").first.inner_text().strip() == spec.title or spec is PAGES[0]
    if spec.file == "import_data.py":  # nothing to draw before an upload: the uploaders are the page
        assert page.locator('[data-testid="stFileUploader"]').count() == 5  # a dataset, a run (2), a pythae model (2)
    else:
        assert_drawn(page)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{Path(spec.file).stem}.png"), full_page=True)


def assert_drawn(page) -> None:
    """At least one image or chart, every image loaded."""
    images = page.locator('[data-testid="stImage"] img')
    charts = page.locator(".js-plotly-plot, [data-testid='stVegaLiteChart']")
    deadline = time.time() + 120  # a slow view may still be on its way after a quiet second
    while images.count() + charts.count() == 0 and time.time() < deadline:
        time.sleep(0.5)
    wait_until_rendered(page)
    assert images.count() + charts.count() > 0, "nothing was drawn"
    for i in range(images.count()):  # every image actually loaded and has a size
        assert images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")


def choose_model(page, text: str) -> None:
    """Pick the first model in the sidebar whose label contains `text`."""
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
    page.locator('[role="option"]', has_text=text).first.click()
    picker = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"] input').first  # holds the choice
    deadline = time.time() + 30
    while text not in picker.input_value() and time.time() < deadline:  # the choice has reached the app
        time.sleep(0.1)
    page.wait_for_timeout(500)
    wait_until_rendered(page)


def test_a_link_opens_its_model_and_facet_and_the_url_keeps_the_model_across_pages(app_url, page):
    from app.runs import available_runs, run_slug

    mfcvae = next(c for c in available_runs() if run_slug(c.info.id) == "facet-digits-mfcvae")
    page.goto(f"{app_url}/facet_clusters?run=facet-digits-mfcvae&facet=1")
    wait_until_rendered(page)
    model = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"] input').first
    assert "facet-digits-mfcvae" in model.input_value()
    facet = page.locator('[data-testid="stMain"] [data-testid="stSelectbox"] input').first  # the page's first
    assert facet.input_value().startswith("facet1 (")
    page.wait_for_url(f"**/facet_clusters?run={mfcvae.info.id}&facet=1")  # the name becomes the run's id
    page.get_by_role("link", name="HMC chains").click()  # Streamlit clears the query string on a page change
    page.wait_for_url(f"**/hmc_chains?run={mfcvae.info.id}&toy=correlated+gaussian")
    wait_until_rendered(page)
    choose_model(page, "digits-hvae ")  # and the URL follows the sidebar
    hvae = next(c for c in available_runs() if run_slug(c.info.id) == "digits-hvae")
    page.wait_for_url(f"**/hmc_chains?run={hvae.info.id}&toy=correlated+gaussian")
    assert page.locator('[data-testid="stException"]').count() == 0


def test_moving_a_traversal_slider_changes_the_decoded_image(app_url, page):
    page.goto(f"{app_url}/traversals")
    wait_until_rendered(page)
    page.get_by_text("Move the latents yourself").scroll_into_view_if_needed()
    before = image_src(page, "decoded")
    thumb = slider_input(page, "z")
    thumb.focus()
    for _ in range(10):
        thumb.press("ArrowRight")
    deadline = time.time() + 30
    while image_src(page, "decoded") == before and time.time() < deadline:
        time.sleep(0.1)
    assert image_src(page, "decoded") != before
    assert page.locator('[data-testid="stException"]').count() == 0


def test_the_train_page_follows_a_run_live_without_a_reload(app_url, runs_dir, page):
    """A run logged by another process (as a script using RunLogger would) shows its new
    steps on the open page within seconds, with no click or reload."""
    from engine.store import RunStore

    run = RunStore(runs_dir).create_run(
        {"family": "vae", "model": {}, "data": {"name": "digits"}, "train": {"steps": 10_000, "batch_size": 8}},
        name_hint="live",
    )
    run.set_status("running")
    run.metrics.log_scalars(1, {"train/loss": 5.0, "train/samples_per_s": 100.0})
    page.goto(f"{app_url}/training")
    wait_until_rendered(page)
    step = page.locator('[data-testid="stMetric"]:has-text("Step") [data-testid="stMetricValue"]').first
    assert step.inner_text() == "1"
    run.metrics.log_scalars(250, {"train/loss": 4.0, "train/samples_per_s": 100.0})
    deadline = time.time() + 10
    while step.inner_text() != "250" and time.time() < deadline:
        time.sleep(0.2)
    assert step.inner_text() == "250"
    run.set_status("finished")


def open_latent_map(page, app_url):
    """The Latent map page on the default model: (its frame, the test set it maps)."""
    from app.runs import available_runs
    from app.state import load_data

    page.goto(f"{app_url}/latent_map")
    wait_until_rendered(page)
    label = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"] input').first.input_value()
    choice = next(c for c in available_runs() if c.label == label)
    return scatter_frame(page), load_data(str(choice.dir), "test")


def test_hovering_a_latent_map_point_shows_its_input(app_url, page):
    """The thumbnail beside the cursor is the hovered point's own image: the tile that
    engine/projection/sprites.py put it in, with that input's pixels."""
    from engine.images import to_pixels
    from engine.projection.sprites import sprite_layout

    frame, data = open_latent_map(page, app_url)
    point = map_points(frame, isolated=True)
    assert point["gap"] > 6  # no other point under the cursor
    origin = page.locator(SCATTER).bounding_box()
    page.mouse.move(origin["x"] + point["x"], origin["y"] + point["y"])
    thumb = frame.locator("#thumb")
    thumb.wait_for(state="visible", timeout=10_000)
    assert thumb.get_attribute("data-id") == str(point["id"])

    layout = sprite_layout(len(data), data.shape[-2:])
    sheet, within = divmod(point["id"], layout.per_sheet)  # every point has a tile: tile k is point k
    row, col = divmod(within, layout.cols)
    left, top = col * layout.tile_w, row * layout.tile_h
    style = thumb.evaluate("t => ({w: t.clientWidth, url: t.style.backgroundImage, pos: t.style.backgroundPosition})")
    scale = style["w"] // layout.tile_w
    assert scale * layout.tile_w == style["w"] and style["w"] >= 64  # upscaled by whole pixels
    assert style["pos"] == f"{-left * scale}px {-top * scale}px"
    png = page.request.get(urljoin(frame.url, style["url"][5:-2])).body()  # url("…")
    sheet_pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    tile = sheet_pixels[top : top + layout.tile_h, left : left + layout.tile_w]
    expected = to_pixels(data.batch(torch.tensor([point["id"]])), data.value_range)[0]
    assert sheet == 0 and layout.tile_h == data.shape[-2]  # a small test set: one sheet, own size
    np.testing.assert_array_equal(tile, np.broadcast_to(expected, tile.shape))
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "latent_map_hover.png"))


def test_a_box_or_a_click_on_the_latent_map_shows_those_inputs(app_url, page):
    frame, _ = open_latent_map(page, app_url)
    origin = page.locator(SCATTER).bounding_box()
    point = map_points(frame, isolated=True)
    page.mouse.click(origin["x"] + point["x"], origin["y"] + point["y"])
    clicked = gallery(page)
    assert clicked == [point["id"]]

    frame = scatter_frame(page)
    frame.click('[data-title="Box Select"]')
    (x0, y0), (x1, y1) = (point["x"] - 70, point["y"] - 50), (point["x"] + 70, point["y"] + 50)
    page.mouse.move(origin["x"] + x0, origin["y"] + y0)
    page.mouse.down()
    page.mouse.move(origin["x"] + x1, origin["y"] + y1, steps=8)
    page.mouse.up()
    shown = gallery(page, before=clicked)
    points = map_points(frame)
    inside = {p["id"] for p in points if x0 + 2 < p["x"] < x1 - 2 and y0 + 2 < p["y"] < y1 - 2}
    near = {p["id"] for p in points if x0 - 2 < p["x"] < x1 + 2 and y0 - 2 < p["y"] < y1 + 2}
    assert len(inside) > 1 and inside <= set(shown) <= near  # up to points on the box's edge
    assert page.locator('[data-testid="stException"]').count() == 0


def gallery(page, before: list[int] | None = None, timeout_s: float = 60.0) -> list[int]:
    """The input numbers under the selection's thumbnails, once "N selected" shows a
    selection other than `before`."""
    heading = page.locator('[data-testid="stMarkdownContainer"]', has_text=" selected").first
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if heading.count():
            wait_until_rendered(page)
            n = int(heading.inner_text().split(" selected")[0].replace(",", ""))
            captions = [c.strip() for c in page.locator('[data-testid="stImageCaption"]').all_inner_texts()]
            ids = [int(c[1:]) for c in captions if c.startswith("#") and " " not in c]  # not the neighbours'
            assert len(ids) == min(n, 48)
            if ids != before:
                return ids
        time.sleep(0.2)
    raise TimeoutError("no new selection was shown")


SCREENSHOTS = ROOT / "docs" / "screenshots"


def test_every_page_has_a_readme_screenshot_and_no_screenshot_outlives_its_page():
    """docs/screenshots holds one PNG per page of the navigation, named after its file, and no
    other; the README shows each of them and names no other; scripts/screenshots.py takes them all."""
    readme = (ROOT / "README.md").read_text()
    pages = {Path(spec.file).stem for spec in PAGES}
    assert {png.stem for png in SCREENSHOTS.glob("*.png")} == pages
    shown = set(re.findall(r"!\[[^\]]*\]\(docs/screenshots/([^)/]+)\.png\)", readme))
    assert shown == pages
    for spec in PAGES:  # and its row in the tour
        assert f"| **{spec.title}** |" in readme
        with Image.open(SCREENSHOTS / f"{Path(spec.file).stem}.png") as shot:
            assert shot.width == 1400 and shot.height >= 800
    script = runpy.run_path(str(ROOT / "scripts" / "screenshots.py"), run_name="screenshots")
    assert set(script["SHOTS"]) == {spec.file for spec in PAGES}


def test_the_home_page_links_every_page_and_no_other(app_url, page):
    page.goto(app_url)
    wait_until_rendered(page)
    links = page.locator('[data-testid="stMain"] [data-testid="stPageLink"] a')
    found = {links.nth(i).inner_text().strip(): links.nth(i).get_attribute("href") for i in range(links.count())}
    assert {title.split("\n")[-1] for title in found} == {spec.title for spec in PAGES[1:]}
    for href in found.values():
        assert urljoin(app_url + "/", href).removeprefix(app_url + "/") in {Path(s.file).stem for s in PAGES[1:]}
