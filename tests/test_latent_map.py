"""The latent map page: selections carry global ids, cached maps replace PCA, a missing
map is computed by a background job, and a selection reaches the traversal page."""

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import engine.projection
from app.maps import map_figure, selected_ids
from app.runs import available_runs
from app.state import MAP_SELECTION_KEY, RUN_KEY
from engine.projection import MapKey, PointsKey, Projection, ProjectionCache
from engine.store import Run

ROOT = Path(__file__).resolve().parent.parent
MFCVAE = next(c for c in available_runs() if c.key.startswith("demo/") and "facet-digits-mfcvae" in c.key)


class Event(dict):
    """What st.plotly_chart returns: a dict with attribute access."""

    def __getattr__(self, name):
        value = self[name]
        return Event(value) if isinstance(value, dict) else value


def plotly_selection(fig, chosen_per_trace: dict[int, list[int]]) -> Event:
    """A selection event as Plotly reports it: point_index counts within each trace."""
    points = [{"curve_number": t, "point_index": i, "x": fig.data[t].x[i], "y": fig.data[t].y[i],
               "customdata": fig.data[t].customdata[i]} for t, idx in chosen_per_trace.items() for i in idx]  # fmt: skip
    return Event(selection={"points": points})


def test_selected_points_map_back_to_global_ids_across_traces():
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(500, 2)).astype(np.float32)
    categories = rng.integers(0, 4, 500)
    fig = map_figure(coords, "class", categories, {c: f"k{c}" for c in range(4)})
    assert len(fig.data) == 4 and sum(len(t.x) for t in fig.data) == 500
    event = plotly_selection(fig, {1: [0, 3], 3: [2]})
    ids = selected_ids(event)
    expected = sorted([*np.flatnonzero(categories == 1)[[0, 3]], np.flatnonzero(categories == 3)[2]])
    assert ids == expected
    for i in ids:  # the id names the point that was drawn there
        trace = next(t for t in fig.data if i in set(np.asarray(t.customdata).ravel()))
        assert categories[i] == int(trace.name[1:])
    naive = sorted(p["point_index"] for p in event.selection.points)
    assert naive != ids  # per-trace indices would name other points


def test_continuous_colouring_keeps_ids_in_the_first_customdata_column():
    coords = np.arange(20, dtype=np.float32).reshape(10, 2)
    values = np.linspace(0, 1, 10)
    fig = map_figure(coords, "error", values=values)
    assert len(fig.data) == 1
    assert selected_ids(plotly_selection(fig, {0: [4, 7]})) == [4, 7]
    assert selected_ids(None) == [] and selected_ids(Event(selection={"points": []})) == []


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
    assert started[0].points == PointsKey(run.id, started[0].points.step, "facet-digits", run.config["data"]["options"],
                                          "test", n)  # fmt: skip
    assert isinstance(started[0], MapKey)


def test_the_traversal_page_offers_the_maps_selection(runs):
    at = AppTest.from_file(str(ROOT / "pages" / "traversals.py"), default_timeout=180)
    at.session_state[RUN_KEY] = MFCVAE.key
    at.session_state[MAP_SELECTION_KEY] = {str(MFCVAE.dir): [5, 17, 40]}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    chooser = next(s for s in at.selectbox if s.label == "Use test example")
    assert chooser.options == ["#5", "#17", "#40"]
