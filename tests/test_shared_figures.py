"""Figures that cost a rerun over a second to build are built once and shared by every
session: the Facet clusters page's latent scatter (some 300 Plotly traces for a facet of 150
clusters), under Streamlit's AppTest on the published MFCVAE demo."""

from pathlib import Path

import plotly.graph_objects as go
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from app.runs import available_runs
from app.state import RUN_KEY

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "facet_clusters.py")
MFCVAE = next(c.key for c in available_runs() if c.key.startswith("demo/") and c.info.family == "mfcvae")


@pytest.fixture(autouse=True)
def empty_runs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_ATLAS_RUNS_DIR", str(tmp_path / "runs"))


@pytest.fixture
def built_scatters(monkeypatch):
    """How many WebGL scatter traces the pages built."""
    built = []

    class Counted(go.Scattergl):
        def __init__(self, *args, **kwargs):
            built.append(kwargs.get("name"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(go, "Scattergl", Counted)
    return built


def session(colour_by: str | None = None) -> AppTest:
    """A new browser session on the Facet clusters page of the MFCVAE demo."""
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.session_state[RUN_KEY] = MFCVAE
    if colour_by is not None:
        at.session_state["colour-by"] = colour_by
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def scatter(at: AppTest):
    return next(c for c in at.get("plotly_chart") if '"scattergl"' in c.proto.spec)


def test_the_latent_scatter_is_built_once_for_every_session(built_scatters):
    st.cache_resource.clear()  # built by an earlier test in this process otherwise
    first = session()
    once = len(built_scatters)
    assert once >= 10  # one trace per used cluster of the default facet
    second = session()
    assert len(built_scatters) == once  # the second session and its rerun reuse the figure
    second.run()
    assert len(built_scatters) == once
    assert scatter(first).proto.spec == scatter(second).proto.spec


def test_another_colouring_builds_its_own_figure(built_scatters):
    st.cache_resource.clear()
    by_cluster = session()
    once = len(built_scatters)
    label = next(o for o in by_cluster.selectbox(key="colour-by").options if o != "cluster")
    by_label = session(colour_by=label)
    assert len(built_scatters) > once
    assert scatter(by_label).proto.spec != scatter(by_cluster).proto.spec
