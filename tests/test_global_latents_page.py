"""The Global and local latents page under Streamlit's AppTest, on UG-VAE runs trained here."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app.runs import available_runs
from app.state import RUN_KEY
from engine.training import RunSpec, train
from tests.pagetest import assert_clean, image_urls

PAGES_DIR = Path(__file__).resolve().parent.parent / "pages"
PAGE = PAGES_DIR / "global_latents.py"
SHORT = {"steps": 150, "eval_every": 150, "checkpoint_every": 150, "eval_examples": 200, "progress": False}


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    """digits-ugvae, its ML-VAE ablation and the two-domain UG-VAE, 150 steps each (seconds)."""
    root = tmp_path_factory.mktemp("ugvae-runs")
    for preset in ("digits-mlvae", "digits-domains-ugvae", "digits-ugvae"):
        train(RunSpec.from_preset(preset, {"train": dict(SHORT)}), runs_root=str(root), name=preset)
    return root


@pytest.fixture
def runs(runs_root, monkeypatch):
    monkeypatch.setenv("LATENT_ATLAS_RUNS_DIR", str(runs_root))
    return {
        json.loads((c.dir / "config.json").read_text())["preset"]: c
        for c in available_runs()
        if c.key.startswith("runs/")
    }


def open_page(run_key: str, page: Path = PAGE) -> AppTest:
    at = AppTest.from_file(str(page), default_timeout=180)
    at.session_state[RUN_KEY] = run_key
    return at.run()


def values(array) -> np.ndarray:
    """A trace's coordinates as Plotly's JSON holds them: a list, or typed binary data."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"])
    return np.asarray(array, dtype=float)


def map_traces(at: AppTest) -> list[dict]:
    return json.loads(at.get("plotly_chart")[0].proto.spec)["data"]


def test_the_page_draws_the_grids_the_map_and_the_table(runs):
    at = open_page(runs["digits-ugvae"].key)
    assert_clean(at)
    assert at.title[0].value == "Global and local latents"
    assert len(image_urls(at)) == 4  # three component panels and the alignment grid
    traces = map_traces(at)
    names = [t.get("name") for t in traces]
    assert names == ["even", "odd", "random", "interpolation path"]  # parity groups open the page
    path = np.stack([values(traces[-1]["x"]), values(traces[-1]["y"])], 1)
    assert len(path) == 7  # a straight, evenly stepped path from a group of even digits to one of odd digits
    np.testing.assert_allclose(np.diff(path, axis=0), np.diff(path, axis=0)[:1].repeat(6, 0), atol=1e-9)
    even = np.stack([values(traces[0]["x"]), values(traces[0]["y"])], 1)
    odd = np.stack([values(traces[1]["x"]), values(traces[1]["y"])], 1)
    assert np.abs(even - path[0]).sum(1).min() < 1e-9 and np.abs(odd - path[-1]).sum(1).min() < 1e-9
    table = at.dataframe[0].value
    assert list(table["classes"]) == ["even vs odd"] * 2 + ["even vs odd vs random"] * 2
    assert ((table["test_accuracy"] >= 0) & (table["test_accuracy"] <= 1)).all()
    assert np.allclose(table["test_chance"][:2], 0.5, atol=0.1)


def test_the_ml_vae_grid_is_drawn_beside_when_picked(runs):
    at = open_page(runs["digits-ugvae"].key)
    before = image_urls(at)
    compare = at.selectbox(key="gl-compare")
    assert runs["digits-mlvae"].label in compare.options
    compare.set_value(runs["digits-mlvae"].label).run()
    assert_clean(at)
    after = image_urls(at)
    assert len(after) == 5 and after[:3] == before[:3]
    captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
    assert any("d = 0" in c and runs["digits-mlvae"].label in c for c in captions)


def test_controls_change_what_is_drawn(runs):
    at = open_page(runs["digits-ugvae"].key)
    before = image_urls(at)
    at.slider(key="gl-beta-span").set_value(2.5).run()
    assert_clean(at)
    after = image_urls(at)
    assert after[:3] != before[:3] and after[3] == before[3]  # the panels change, the alignment grid does not
    at.selectbox(key="gm-structure").set_value("series").run()
    assert_clean(at)
    assert [t.get("name") for t in map_traces(at)][:4] == ["even", "odd", "fibonacci", "primes"]
    assert list(at.dataframe[0].value["classes"])[0] == "even vs odd vs fibonacci vs primes"


def test_a_two_domain_run_opens_on_its_domains(runs):
    at = open_page(runs["digits-domains-ugvae"].key)
    assert_clean(at)
    assert at.selectbox(key="gm-structure").value == "domains"
    assert [t.get("name") for t in map_traces(at)] == ["digits", "inverted", "random", "interpolation path"]
    assert [img.caption for element in at.get("image") for img in element.proto.imgs][-1] == "digits → inverted"


def test_other_models_get_an_explanation_not_an_error(runs, trained_digits_run):
    from shutil import copytree

    copytree(trained_digits_run.dir, Path(runs["digits-ugvae"].dir).parent / trained_digits_run.dir.name)
    vae = next(c for c in available_runs() if c.info.family == "vae" and c.key.startswith("runs/"))
    at = open_page(vae.key)
    assert_clean(at)
    assert any("global latent shared by a group" in i.value and "digits-ugvae" in i.value for i in at.info)
