"""The disentanglement section of the Latent activity page, on the published demos (trains nothing):
its scores are the engine's on the same posterior means, and DCI comes when asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app.runs import available_runs
from app.state import RUN_KEY, load_data, load_model
from engine.diagnostics.disentanglement import mig
from engine.projection.encoding import encode_points
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


def test_every_categorical_factor_of_the_shapes_gets_a_row():
    key = demo_key("shapes-vae")
    at = open_page(key)
    assert not at.exception and not at.error
    table = next(d.value for d in at.dataframe if "MIG" in d.value.columns)
    test = load_data(str(next(c.dir for c in available_runs() if c.key == key)), "test")
    varied = [n for n, c in test.labels.items() if c.is_categorical and len(np.unique(c.values[:2000])) > 1]
    assert list(table["factor"]) == varied and len(varied) >= 2
    assert ((table["MIG"] >= 0) & (table["MIG"] <= 1)).all()
