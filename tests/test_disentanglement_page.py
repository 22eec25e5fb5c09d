"""The disentanglement section of the Latent activity page, on the published demos (trains nothing):
its scores are the engine's on the same posterior means, and DCI comes when asked."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.runs import available_runs
from app.state import RUN_KEY, load_data, load_model
from engine.diagnostics.disentanglement import mig
from engine.projection.encoding import encode_points
from engine.projection.factors import disentanglement_report
from tests.test_hvae_pages import demo_key

pytestmark = pytest.mark.usefixtures("one_thread")
PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "latent_activity.py")


@pytest.fixture(autouse=True)
def empty_runs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_ATLAS_RUNS_DIR", str(tmp_path / "runs"))


def open_page(run_key: str, **state) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.session_state[RUN_KEY] = run_key
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def metric(at: AppTest, label: str) -> float:
    return float(next(m.value for m in at.metric if m.label == label))


def test_the_scores_are_the_engines_on_the_same_means_and_dci_comes_when_asked():
    key = demo_key("digits-vae")
    at = open_page(key)
    assert not at.exception and not at.error
    assert "Disentanglement against the known factors" in [h.value for h in at.subheader]
    run_dir = str(next(c.dir for c in available_runs() if c.key == key))
    test = load_data(run_dir, "test")
    codes = encode_points(load_model(run_dir, None).model, test, None, 2000)
    factors = test.labels["digit"].values[:2000].numpy()[:, None]
    assert metric(at, "MIG") == pytest.approx(mig(codes, factors).score, abs=5e-4)  # shown to 3 decimals
    assert not [m for m in at.metric if m.label.startswith("DCI")]
    at = open_page(key, **{"dis-dci": True})
    assert not at.exception and not at.error
    values = [metric(at, f"DCI {part}") for part in ("disentanglement", "completeness", "informativeness")]
    assert all(0 <= v <= 1 for v in values) and values[2] > 0.5  # the digit is readable from 8 latents


def test_the_six_factors_of_the_shapes_get_a_row_and_the_factor_vae_score_comes_when_asked():
    """shape and colour are categorical, scale, rotation, x and y numeric with few values: all six are
    factors; the FactorVAE score shown is the engine's on the same codes."""
    key = demo_key("shapes-vae")
    at = open_page(key, **{"dis-fvae": True})
    assert not at.exception and not at.error
    table = next(d.value for d in at.dataframe if "MIG" in d.value.columns)
    assert list(table["factor"]) == ["shape", "scale", "rotation", "x", "y", "colour"]
    assert ((table["MIG"] >= 0) & (table["MIG"] <= 1)).all()
    run_dir = str(next(c.dir for c in available_runs() if c.key == key))
    report = disentanglement_report(
        load_model(run_dir, None).model, load_data(run_dir, "test"), None, 2000, with_factor_vae=True
    )
    assert metric(at, "FactorVAE score") == pytest.approx(report["factor_vae"].score, abs=5e-4)
    assert 1 / 6 < report["factor_vae"].score <= 1  # better than naming a factor at random
