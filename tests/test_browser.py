"""The dashboard in a real browser: every page renders, and the live traversal slider
decodes a new image. Screenshots land in test-artifacts/screenshots/."""

import time
from pathlib import Path

import pytest

from app.navigation import PAGES
from browser import CHROMIUM, CHROMIUM_ARGS, ROOT, dashboard, image_src, slider_input, wait_until_rendered

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
SHOTS = ROOT / "test-artifacts" / "screenshots"


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("browser") / "runs"


@pytest.fixture(scope="module")
def app_url(runs_dir):
    with dashboard(runs_dir, runs_dir.parent / "app.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
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
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator('[data-testid="stAlert"]:has-text("cannot")').count() == 0
    assert page.locator("h1").first.inner_text().strip() == spec.title or spec is PAGES[0]
    if spec.file == "import_data.py":  # nothing to draw before an upload: the uploaders are the page
        assert page.locator('[data-testid="stFileUploader"]').count() == 3
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

    run = RunStore(runs_dir).create_run({"family": "vae", "model": {}, "data": {"name": "digits"},
                                         "train": {"steps": 10_000, "batch_size": 8}}, name_hint="live")  # fmt: skip
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
