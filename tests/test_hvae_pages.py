"""The HVAE pages under Streamlit's AppTest, on the published demo runs (trains nothing)."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.runs import available_runs
from app.state import RUN_KEY
from engine.store import RunStore
from tests.pagetest import assert_clean

PAGES = Path(__file__).resolve().parent.parent / "pages"


@pytest.fixture(autouse=True)
def empty_runs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_ATLAS_RUNS_DIR", str(tmp_path / "runs"))


def demo_key(preset: str) -> str:
    for choice in available_runs():
        if choice.key.startswith("demo/"):
            if json.loads((choice.dir / "config.json").read_text()).get("preset") == preset:
                return choice.key
    raise AssertionError(f"no {preset} demo under assets/runs")


def open_page(file: str, run_key: str) -> AppTest:
    at = AppTest.from_file(str(PAGES / file), default_timeout=180)
    at.session_state[RUN_KEY] = run_key
    return at.run()


def traces(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec)["data"] for c in at.get("plotly_chart")]


def test_norm_page_overlays_checkpoints_and_runs():
    at = open_page("hvae_norms.py", demo_key("digits-hvae"))
    assert_clean(at)
    first = traces(at)[0]
    named = {t.get("name") for t in first if t.get("name")}
    assert len(named) == 3 and all(n.startswith("step") for n in named)  # first, middle and last checkpoint
    assert at.dataframe  # the Spearman table
    at.radio[0].set_value("other HVAE runs").run()
    assert_clean(at)
    runs = next(m for m in at.multiselect if m.label == "Runs")
    hvae_demos = [
        c.label for c in available_runs() if json.loads((c.dir / "config.json").read_text()).get("family") == "hvae"
    ]
    assert runs.options == hvae_demos
    runs.set_value(runs.options).run()  # every HVAE demo
    assert_clean(at)
    assert len({t.get("name") for t in traces(at)[0] if t.get("name")}) == len(runs.options) >= 3


def test_norm_profile_is_computed_once_per_checkpoint(monkeypatch):
    import app.state as state

    calls = []
    real = state.residual_norms
    monkeypatch.setattr(state, "residual_norms", lambda *a, **k: calls.append(1) or real(*a, **k))
    state.norm_profile.clear()
    at = open_page("hvae_norms.py", demo_key("digits-hvae"))
    assert_clean(at)
    assert len(calls) == 3  # three checkpoints overlaid
    at.toggle[0].set_value(True).run()  # log scale: a redraw, no new measurement
    assert_clean(at)
    assert len(calls) == 3


def test_layer_page_draws_everything_on_the_demo():
    at = open_page("layer_diagnostics.py", demo_key("digits-hvae"))
    assert_clean(at)
    assert len(at.get("plotly_chart")) == 3  # KL, active units, per-unit heat map
    assert len(at.get("image")) == 2  # the mixing grid and the temperature grid
    before = [img.url for e in at.get("image") for img in e.proto.imgs]
    next(n for n in at.number_input if n.key == "mix_seed").set_value(3).run()
    assert_clean(at)
    after = [img.url for e in at.get("image") for img in e.proto.imgs]
    assert after[0] != before[0] and after[1] == before[1]  # only the mixing grid is redrawn


def test_layer_page_reads_a_hierarchy_of_codes_by_position():
    at = open_page("layer_diagnostics.py", demo_key("digits-rrvq"))
    assert_clean(at)
    assert len(at.get("plotly_chart")) == 3 and len(at.get("image")) == 2
    table = next(d.value for d in at.dataframe if "units" in d.value.columns)
    assert list(table["layer"]) == ["z4", "z3", "z2", "z1"] and list(table["units"]) == [1, 4, 16, 64]  # positions
    assert any("top 4 layers" in c.value for c in at.caption)  # the mixing grid goes by layer, all of them from q last


@pytest.mark.parametrize("page", ["hvae_norms.py", "layer_diagnostics.py"])
def test_hvae_pages_explain_themselves_on_other_models(page):
    at = open_page(page, demo_key("digits-vae"))
    assert_clean(at)
    assert any("hierarchical VAE" in i.value and "digits-hvae" in i.value for i in at.info)


def test_the_run_list_gives_each_runs_family_and_input_shape_as_its_config_does(tmp_path):
    demos = [c for c in available_runs(kind=None) if c.key.startswith("demo/")]
    for choice in demos:
        config = json.loads((choice.dir / "config.json").read_text())
        assert choice.info.family == config["family"], choice.key
        assert choice.info.input_shape == tuple(config["model"]["input_shape"]), choice.key
    assert {c.info.family for c in demos} >= {"vae", "mfcvae", "hvae", "hhvaem", "icl", "seatbelt"}

    store = RunStore(tmp_path / "other")
    store.create_run({"model": "resnet", "dataset": "cifar"}, name_hint="script")  # a script's own config
    store.create_run({"family": "vae", "model": {"input_shape": "8x8"}}, name_hint="odd")
    for info in store.list_runs():
        assert info.input_shape is None
        assert info.family == ("vae" if "odd" in info.id else "")
