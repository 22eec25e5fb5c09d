"""The "HMC chains" page under Streamlit's AppTest: toy densities and a model's latent
posterior with inpainting, on the published demos (trains nothing)."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.runs import available_runs, run_slug
from app.state import RUN_KEY
from tests.pagetest import VARIANT_DEMOS, assert_clean

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "hmc_chains.py")


@pytest.fixture(autouse=True)
def empty_runs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_ATLAS_RUNS_DIR", str(tmp_path / "runs"))


def demo_key(preset: str) -> str:
    for choice in available_runs():
        if (
            choice.key.startswith("demo/")
            and json.loads((choice.dir / "config.json").read_text()).get("preset") == preset
        ):
            return choice.key
    raise AssertionError(f"no {preset} demo under assets/runs")


def small(at: AppTest) -> AppTest:
    for label, value in (("Warm-up", 100), ("Samples", 100), ("Chains", 4)):
        next(w for w in at.number_input if w.label == label).set_value(value)
    return at.run()


def test_toy_density_page_draws_chains_traces_and_the_convergence_table():
    at = small(AppTest.from_file(PAGE, default_timeout=300).run())
    assert_clean(at)
    assert len(at.get("plotly_chart")) == 3  # the 2-D view, the traces, the adaptation
    table = at.dataframe[0].value
    assert list(table["dimension"]) == ["z1", "z2"] and (table["R-hat"] > 0.9).all()
    funnel = next(s for s in at.selectbox if s.label == "Density")
    funnel.set_value("funnel").run()
    assert_clean(at)
    assert any("Divergent" in m.label for m in at.metric)


def test_latent_posterior_with_a_hidden_half_shows_encoder_and_hmc_errors():
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.session_state[RUN_KEY] = demo_key("digits-vae-2d")
    at.run()
    at.radio[0].set_value("latent posterior of the selected model").run()
    at = small(at)
    assert_clean(at)
    next(s for s in at.selectbox if s.label.startswith("Hide")).set_value("bottom half").run()
    assert_clean(at)
    errors = {m.label: float(m.value) for m in at.metric if "error" in m.label}
    assert len(errors) == 2 and all(v >= 0 for v in errors.values())
    assert len(at.image) == 2  # states along a chain, and the inpainting row


@pytest.mark.parametrize(
    "run_key",
    [c.key for c in available_runs() if c.key.startswith("demo/") and run_slug(c.info.id) not in VARIANT_DEMOS],
)
def test_chains_run_on_the_posterior_of_every_demo_model(run_key):
    """HMC only needs the LatentModel interface: every family's posterior can be sampled, but for
    the DCT-VAE, whose discrete context has no prior-noise space, and a hierarchy of codes, whose
    latents have no gradient: the page says so."""
    family = next(c.info.family for c in available_runs() if c.key == run_key)
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.session_state[RUN_KEY] = run_key
    at.session_state["hmc_source"] = "latent posterior of the selected model"
    at.session_state["hmc_chains"] = 2
    for defaults in ((60, 60, 5), (200, 200, 10)):  # the widgets of hierarchical and of flat models
        for name, value, default in zip(("warmup", "samples", "leapfrog"), (10, 20, 3), defaults):
            at.session_state[f"hmc_{name}_{default}"] = value
    at.run()
    if family == "dctvae":
        assert not at.exception, [e.value for e in at.exception]
        assert [e.value for e in at.error if "no noise-space parameterisation" in e.value]
        assert not at.dataframe
        return
    if family == "rrvq":
        assert_clean(at)
        assert [i.value for i in at.info if "discrete codes" in i.value and "Discrete codes" in i.value]
        assert not at.dataframe
        return
    assert_clean(at)
    assert at.dataframe[0].value["R-hat"].notna().all()


def test_a_table_row_is_imputed_by_encoder_and_hmc_and_features_are_acquired():
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.session_state[RUN_KEY] = demo_key("mixed-hhvaem")
    at.session_state["hmc_source"] = "latent posterior of the selected model"
    at.session_state["hmc_chains"] = 2
    for name, value, default in (("warmup", 10, 200), ("samples", 20, 200), ("leapfrog", 3, 10)):
        at.session_state[f"hmc_{name}_{default}"] = value
    at.run()
    next(w for w in at.number_input if w.label.startswith("Test input")).set_value(1).run()
    assert_clean(at)
    row = next(d.value for d in at.dataframe if "log-lik (HMC)" in d.value.columns)
    hidden = ~row["observed"]
    assert hidden.any() and row.loc[hidden, "HMC"].notna().all()
    assert row.loc[~hidden, "log-lik (HMC)"].isna().all()  # only held-out values are scored
    next(t for t in at.toggle if t.label.startswith("Run the acquisition")).set_value(True).run()
    assert_clean(at)
    names = {t.get("name") for c in at.get("plotly_chart") for t in json.loads(c.proto.spec)["data"]}
    assert {"by mutual information", "random order"} <= names
    assert any("#1" in d.value.columns for d in at.dataframe)
