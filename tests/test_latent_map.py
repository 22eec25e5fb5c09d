"""The latent map page: selections carry global ids, hover thumbnails sit where their
sprite sheets say, cached maps replace PCA, a missing map is computed by a background
job, and a selection reaches the traversal page."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from streamlit.testing.v1 import AppTest

import engine.projection
from app.components import latent_scatter
from app.maps import map_figure, selected_ids, trace_positions
from app.runs import available_runs
from app.state import MAP_SELECTION_KEY, RUN_KEY
from engine.data import load_dataset
from engine.images import to_pixels
from engine.loading import load_run_model
from engine.projection import MapKey, PointsKey, Projection, ProjectionCache, sprites
from engine.projection.sprites import SpriteAtlas, sprite_atlas, sprite_layout
from engine.store import Run

ROOT = Path(__file__).resolve().parent.parent
MFCVAE = next(c for c in available_runs() if c.key.startswith("demo/") and "facet-digits-mfcvae" in c.key)


def test_every_point_carries_its_global_id_and_a_selection_maps_back_to_the_traces():
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(500, 2)).astype(np.float32)
    categories = rng.integers(0, 4, 500)
    fig = map_figure(coords, "class", categories, {c: f"k{c}" for c in range(4)})
    assert len(fig.data) == 4 and sum(len(t.x) for t in fig.data) == 500
    for trace in fig.data:  # customdata names the point drawn there, whatever its trace
        ids = np.asarray(trace.customdata)
        np.testing.assert_array_equal(coords[ids], np.stack([trace.x, trace.y], 1))
        assert (categories[ids] == int(trace.name[1:])).all()
    chosen = [3, 17, 250, 499]
    positions = trace_positions(fig, chosen)  # what the component marks as selected in a new figure
    assert sorted(int(fig.data[t].customdata[i]) for t, p in enumerate(positions) for i in p) == chosen
    assert positions != [[], [], [], []] and all(p == sorted(p) for p in positions)


def test_continuous_colouring_keeps_ids_in_the_first_customdata_column():
    coords = np.arange(20, dtype=np.float32).reshape(10, 2)
    values = np.linspace(0, 1, 10)
    fig = map_figure(coords, "error", values=values)
    assert len(fig.data) == 1
    np.testing.assert_array_equal(np.asarray(fig.data[0].customdata)[:, 0], np.arange(10))
    assert trace_positions(fig, [4, 7]) == [[4, 7]]


def test_a_selection_value_becomes_sorted_unique_ids_of_drawn_points():
    assert selected_ids({"ids": [7, 3, 3, 12.0, 9]}, n=10) == [3, 7, 9]  # 12 is not drawn
    assert selected_ids(None, 10) == [] and selected_ids({"ids": []}, 10) == []
    assert selected_ids({"points": [1]}, 10) == [] and selected_ids({"ids": "1,2"}, 10) == []


def shapes(n: int, size: int = 12) -> torch.Tensor:
    """n distinct colour images (n, 3, size, size) in [-1, 1]."""
    g = torch.Generator().manual_seed(n)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def tiles(atlas: SpriteAtlas, ids) -> np.ndarray:
    """Where the browser looks for each point (scatter.js's tileOf and tileOffsets):
    (len(ids), 3) int of sheet, left px, top px; a row of -1 for a point without a tile."""
    ids, layout = np.asarray(ids, dtype=np.int64), atlas.layout
    k = np.searchsorted(atlas.ids, ids).clip(0, len(atlas.ids) - 1)
    sheet, within = np.divmod(k, layout.per_sheet)
    row, col = np.divmod(within, layout.cols)
    found = atlas.ids[k] == ids
    return np.where(found[:, None], np.stack([sheet, col * layout.tile_w, row * layout.tile_h], 1), -1)


def crop(atlas: SpriteAtlas, ids) -> np.ndarray:
    """The tiles of `ids` cut out of the decoded sprite sheets: (len(ids), h, w, 3)."""
    sheets = [np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) for png in atlas.sheets]
    h, w = atlas.layout.tile_h, atlas.layout.tile_w
    return np.stack([sheets[s][top : top + h, left : left + w] for s, left, top in tiles(atlas, ids)])


def test_sprite_tiles_show_each_points_own_image():
    x = shapes(300)
    atlas = sprite_atlas(lambda i: x[i], 300, value_range=(-1, 1))
    assert not atlas.subsampled and (atlas.layout.tile_h, atlas.layout.tile_w) == (12, 12)  # own size
    ids = [0, 1, 170, 171, 299]
    np.testing.assert_array_equal(crop(atlas, ids), to_pixels(x[ids], (-1, 1)))
    for s, png in enumerate(atlas.sheets):  # what the frame is told about each sheet
        assert Image.open(io.BytesIO(png)).size == atlas.layout.sheet_size(s)


def test_too_many_thumbnails_shrink_then_a_subset_gets_them(monkeypatch):
    monkeypatch.setattr(sprites, "SHEET_PX", 64)  # a budget of 4 sheets of 64 x 64 px
    x = shapes(300, size=16)
    shrunk = sprite_atlas(lambda i: x[i], 100)  # 4 sheets hold 64 of 16 px, 100 of 12 px
    assert (shrunk.layout.tile_h, shrunk.layout.count, len(shrunk.sheets)) == (12, 100, 4)
    np.testing.assert_array_equal(
        crop(shrunk, [0, 26, 99]), to_pixels(F.interpolate(x[[0, 26, 99]], size=(12, 12), mode="area"))
    )

    sub = sprite_atlas(lambda i: x[i], 300)  # even at 8 px (the least) only 4 * 8 * 8 = 256 fit
    assert (sub.layout.tile_h, len(sub.ids)) == (8, 256) and sub.subsampled
    assert (np.diff(sub.ids) > 0).all() and sub.ids.max() < 300
    missing = np.setdiff1d(np.arange(300), sub.ids)
    assert (tiles(sub, missing) == -1).all()
    np.testing.assert_array_equal(
        crop(sub, sub.ids[-3:]), to_pixels(F.interpolate(x[sub.ids[-3:]], size=(8, 8), mode="area"))
    )


def test_the_sprite_budget_for_large_maps():
    budget = sprites.MAX_SHEETS * sprites.SHEET_PX**2
    for n, side in [(1_797, 8), (4_000, 32), (70_000, 28), (200_000, 32), (1_000_000, 32)]:
        layout = sprite_layout(n, (side, side))
        assert layout.count * layout.tile_h * layout.tile_w <= budget and layout.tile_h <= side
    assert sprite_layout(4_000, (32, 32)).tile_h == 32  # small maps: the images' own size
    assert (sprite_layout(200_000, (32, 32)).tile_h, sprite_layout(200_000, (32, 32)).count) == (9, 200_000)
    assert (sprite_layout(1_000_000, (32, 32)).tile_h, sprite_layout(1_000_000, (32, 32)).count) == (8, 262_144)


def test_the_component_serves_plotly_and_its_payloads_itself(monkeypatch):
    assert (latent_scatter.SERVED / "plotly.min.js").read_bytes() == latent_scatter.PLOTLY_JS.read_bytes()
    for name in ("index.html", "scatter.js"):  # no CDN, no network
        assert "http" not in (latent_scatter.SERVED / name).read_text()
    a = latent_scatter.publish(b"first", ".json")
    assert a == latent_scatter.publish(b"first", ".json") != latent_scatter.publish(b"second", ".json")
    assert (latent_scatter.SERVED / a).read_bytes() == b"first"
    monkeypatch.setattr(latent_scatter, "MAX_SERVED_BYTES", 1)
    b = latent_scatter.publish(b"third", ".json")
    assert (latent_scatter.SERVED / b).exists() and not (latent_scatter.SERVED / a).exists()  # the oldest go

    x = shapes(10)
    manifest = latent_scatter.manifest(sprite_atlas(lambda i: x[i], 10))
    assert manifest["ids"] is None and manifest["count"] == 10 and len(manifest["sheets"]) == 1
    assert (manifest["sheets"][0]["width"], manifest["sheets"][0]["height"]) == (120, 12)


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_ATLAS_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path / "runs"


def open_map(run_key: str, method: str | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "latent_map.py"), default_timeout=180)
    at.session_state[RUN_KEY] = run_key
    at.run()
    if method is not None:
        at.radio(key="map-method").set_value(method).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def test_a_cached_map_replaces_pca_and_a_missing_one_starts_a_job(runs, monkeypatch):
    started = []
    monkeypatch.setattr(engine.projection, "start_map_job", lambda cache, key, points: started.append(key))
    at = open_map(MFCVAE.key, "umap")
    assert len(started) == 1 and started[0].method == "umap" and started[0].group == "facet0"
    assert "PCA" in at.caption[0].value  # shown while UMAP computes

    run = Run.from_dir(MFCVAE.dir, readonly=True)
    n = started[0].points.n
    coords = np.random.default_rng(1).normal(size=(n, 2)).astype(np.float32)
    ProjectionCache.for_runs(runs).put(started[0], Projection(coords, "umap", started[0].params, n, 0, 1.0))
    at = open_map(MFCVAE.key, "umap")
    assert len(started) == 1  # found in the cache: no second job
    assert "UMAP" in at.caption[0].value and f"{n:,} points" in at.caption[0].value
    assert started[0].points == PointsKey(
        run.id, started[0].points.step, "facet-digits", run.config["data"]["options"], "test", n
    )
    assert isinstance(started[0], MapKey)


def test_the_traversal_page_offers_the_maps_selection(runs):
    at = AppTest.from_file(str(ROOT / "pages" / "traversals.py"), default_timeout=180)
    at.session_state[RUN_KEY] = MFCVAE.key
    at.session_state[MAP_SELECTION_KEY] = {str(MFCVAE.dir): [5, 17, 40]}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    chooser = next(s for s in at.selectbox if s.label == "Use test example")
    assert chooser.options == ["#5", "#17", "#40"]


def test_the_map_offers_the_whole_data_set_train_then_test(runs, monkeypatch):
    """Fashion-MNIST with its files: train + test is 70,000 points, encoded in that order and keyed
    as the "all" split."""
    started = []
    monkeypatch.setattr(engine.projection, "start_map_job", lambda cache, key, points: started.append(key))
    fashion = next(c for c in available_runs() if c.key.startswith("demo/") and "fashion-vae" in c.key)
    at = open_map(fashion.key)
    assert at.radio(key="map-split").options == ["test (10,000)", "train + test"]
    assert at.caption[0].value.startswith("10,000 points")
    at.radio(key="map-split").set_value("all").run()
    assert not at.exception and not at.error
    assert at.caption[0].value.startswith("70,000 points") and "shrunk from 28×28" in at.caption[0].value
    at.radio(key="map-method").set_value("umap").run()
    key = started[-1].points
    assert (key.split, key.n, key.dataset) == ("all", 70_000, "fashion-mnist")

    means = ProjectionCache.for_runs(runs).get_latents(key).means["z"]
    model = load_run_model(Run.from_dir(fashion.dir, readonly=True)).model
    train, test = (load_dataset("fashion-mnist", split=s) for s in ("train", "test"))
    with torch.no_grad():  # point 60,000 is the first test image
        for point, x in ((0, train.x[:1]), (60_000, test.x[:1]), (69_999, test.x[-1:])):
            np.testing.assert_allclose(means[point], model.encode(x)["z"].mean[0].numpy(), atol=1e-5)
