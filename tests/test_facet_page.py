"""The Facet clusters page under Streamlit's AppTest, on the published demo runs (trains nothing)."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.runs import available_runs
from app.state import RUN_KEY
from tests.pagetest import assert_clean, image_urls

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "facet_clusters.py")


def demo_key(family_is_mfcvae: bool) -> str:
    """The first demo run under assets/runs that is (or is not) an MFCVAE; the demos ship
    with the repository, so a missing one is a failure."""
    for choice in available_runs():
        if not choice.key.startswith("demo/") or choice.info.status == "broken":
            continue
        if (choice.info.family == "mfcvae") == family_is_mfcvae:
            return choice.key
    pytest.fail(
        "no readable MFCVAE demo under assets/runs (publish one trained with --preset facet-digits-mfcvae)"
        if family_is_mfcvae
        else "no readable demo under assets/runs other than an MFCVAE (the digits-vae demo should be there)"
    )


@pytest.fixture(autouse=True)
def empty_runs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_ATLAS_RUNS_DIR", str(tmp_path / "runs"))


def open_page(run_key: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.session_state[RUN_KEY] = run_key
    return at.run()


def test_facet_page_on_an_mfcvae_demo():
    at = open_page(demo_key(family_is_mfcvae=True))
    assert_clean(at)
    assert not at.info, [i.value for i in at.info]
    assert len(at.get("plotly_chart")) >= 4
    before = image_urls(at)
    assert before

    next(s for s in at.selectbox if s.label == "Facet").set_value(1).run()
    assert_clean(at)
    after_facet = image_urls(at)
    assert after_facet[0] != before[0]  # the cluster grid is now facet 1's

    next(s for s in at.slider if s.label.startswith("Temperature")).set_value(1.0).run()
    assert_clean(at)
    after_temperature = image_urls(at)
    changed = [a != b for a, b in zip(after_facet, after_temperature)]
    assert any(changed) and not changed[0]  # only the sample grid changes, not the cluster grid


def test_facet_page_explains_itself_on_a_vae():
    at = open_page(demo_key(family_is_mfcvae=False))
    assert_clean(at)
    assert any("multi-facet clustering model" in i.value and "facet-digits-mfcvae" in i.value for i in at.info)


def test_interactions_reuse_the_encoded_test_set(monkeypatch):
    """The cluster grid encodes the whole test split once; changing facet, label or
    temperature reuses it (st.cache_data) instead of running the encoder again."""
    import app.state as state

    key = demo_key(family_is_mfcvae=True)
    calls = []
    real = state.encode_facets
    monkeypatch.setattr(state, "encode_facets", lambda *a, **k: calls.append(1) or real(*a, **k))
    state.facet_encoding.clear()
    at = open_page(key)
    assert_clean(at)
    assert len(calls) == 1
    next(s for s in at.selectbox if s.label == "Facet").set_value(1).run()
    next(s for s in at.slider if s.label.startswith("Temperature")).set_value(1.0).run()
    assert_clean(at)
    assert len(calls) == 1
