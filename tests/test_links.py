"""Links that open a view (app/links.py), and the pages that offer the demo they need,
under Streamlit's AppTest on the published demo runs."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.links import RUN_KEY, STEP_KEY
from app.runs import available_runs, checkpoint_steps, run_slug
from engine.models import family_kind
from tests.pagetest import assert_clean

ROOT = Path(__file__).resolve().parent.parent
DEMOS = {run_slug(c.info.id): c for c in available_runs(kind=None) if c.key.startswith("demo/")}
DEFAULT = next(iter(DEMOS.values()))  # the sidebar's first model: what a link that names none opens
HVAE, MFCVAE, VAE, TABLE = (
    DEMOS["digits-hvae"],
    DEMOS["facet-digits-mfcvae"],
    DEMOS["digits-vae"],
    DEMOS["mixed-hhvaem"],
)
SMALL_HMC = {"hmc_chains": 2, "hmc_warmup_300": 20, "hmc_samples_300": 20, "hmc_warmup_200": 20, "hmc_samples_200": 20}


@pytest.fixture(autouse=True)
def empty_runs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_ATLAS_RUNS_DIR", str(tmp_path / "runs"))


def open_link(script: str, state: dict | None = None, **params: str) -> AppTest:
    """`script` (a page, or app/main.py for the whole app) opened in a new tab from a link with `params`."""
    at = AppTest.from_file(str(ROOT / script), default_timeout=180)
    for key, value in (state or {}).items():
        at.session_state[key] = value
    at.query_params.update(params)
    return at.run()


def warnings(at: AppTest) -> list[str]:
    """The warnings about the link (the HMC page also warns about short chains)."""
    return [w.value for w in at.warning if w.value.startswith("The link")]


def checkpoint_line(at: AppTest) -> str:
    return next(m.value for m in at.markdown if "**Checkpoint:**" in m.value)


def shows_latest(at: AppTest) -> bool:
    """Whether the sidebar's checkpoint picker shows "latest", its first option (None). Its
    value is None also when the picker shows nothing chosen, which it does when the state
    sets it to None; so the state must leave it to its default instead."""
    picker = next(s for s in at.sidebar.selectbox if s.label == "Checkpoint")
    return picker.value is None and picker.proto.default == 0 and not picker.proto.set_value


def test_the_hvae_demo_has_several_checkpoints_to_link_to():
    assert len(checkpoint_steps(HVAE)) >= 3


def test_a_link_opens_its_run_at_its_checkpoint():
    step = checkpoint_steps(HVAE)[-1]  # the oldest, not the default
    at = open_link("pages/home.py", run=HVAE.info.id, step=str(step))
    assert_clean(at)
    assert not warnings(at)
    assert f"step {step:,} " in checkpoint_line(at) and HVAE.info.id in checkpoint_line(at)
    assert at.session_state[RUN_KEY] == HVAE.key and at.session_state[STEP_KEY] == step
    assert at.query_params == {"run": HVAE.info.id, "step": str(step)}


@pytest.mark.parametrize("name", ["slug", "key"])
def test_a_link_may_name_a_demo_by_its_name_or_its_key(name):
    at = open_link("pages/home.py", run="digits-hvae" if name == "slug" else HVAE.key)
    assert_clean(at)
    assert not warnings(at)
    assert HVAE.info.id in checkpoint_line(at)
    assert at.query_params == {"run": HVAE.info.id}  # written back as the id; no step: the latest


def test_an_unknown_run_warns_and_opens_the_default_model():
    at = open_link("pages/home.py", run="no-such-model[click](http://example.com)")
    assert_clean(at)
    (message,) = warnings(at)
    assert "`no-such-model[click](http://example.com)`" in message and DEFAULT.label in message
    assert at.session_state[RUN_KEY] == DEFAULT.key
    assert DEFAULT.info.id in checkpoint_line(at)
    assert at.query_params == {"run": DEFAULT.info.id}


@pytest.mark.parametrize("step", ["999", "abc", "-1", "1e3", ""])
def test_a_checkpoint_the_run_lacks_warns_and_opens_the_latest(step):
    at = open_link("pages/home.py", run=HVAE.info.id, step=step)
    assert_clean(at)
    (message,) = warnings(at)
    assert f"step `{step}`" in message and "3,000" in message and "latest" in message
    assert STEP_KEY not in at.session_state  # the picker's default: the latest
    assert f"step {checkpoint_steps(HVAE)[0]:,} " in checkpoint_line(at)
    assert at.query_params == {"run": HVAE.info.id}


def test_a_link_opens_a_facet_and_the_url_follows_the_facet():
    at = open_link("pages/facet_clusters.py", run="facet-digits-mfcvae", facet="1")
    assert_clean(at)
    assert not warnings(at)
    facet = next(s for s in at.selectbox if s.label == "Facet")
    assert facet.value == 1
    assert at.query_params == {"run": MFCVAE.info.id, "facet": "1"}
    facet.set_value(0).run()
    assert_clean(at)
    assert at.query_params == {"run": MFCVAE.info.id, "facet": "0"}


@pytest.mark.parametrize("facet", ["7", "x", "-1"])
def test_a_facet_the_model_lacks_warns_and_opens_the_first(facet):
    at = open_link("pages/facet_clusters.py", run=MFCVAE.info.id, facet=facet)
    assert_clean(at)
    (message,) = warnings(at)
    assert f"facet `{facet}`" in message and "0–1" in message
    assert next(s for s in at.selectbox if s.label == "Facet").value == 0
    assert at.query_params["facet"] == "0"


def test_a_link_opens_a_toy_density_on_the_hmc_page_and_follows_it():
    at = open_link("pages/hmc_chains.py", SMALL_HMC, toy="banana")
    assert_clean(at)
    density = next(s for s in at.selectbox if s.label == "Density")
    assert density.value == "banana" and at.query_params["toy"] == "banana"
    density.set_value("funnel").run()
    assert_clean(at)
    assert at.query_params["toy"] == "funnel"


def test_an_unknown_toy_density_warns_and_opens_the_first():
    at = open_link("pages/hmc_chains.py", SMALL_HMC, toy="volcano")
    assert_clean(at)
    (message,) = warnings(at)
    assert "`volcano`" in message and "`banana`" in message
    assert next(s for s in at.selectbox if s.label == "Density").value == "correlated gaussian"


def test_a_link_to_a_test_input_opens_the_hmc_page_on_the_models_posterior():
    at = open_link("pages/hmc_chains.py", SMALL_HMC, run="digits-vae", input="3")
    assert_clean(at)
    assert at.radio[0].value == "latent posterior of the selected model"
    assert next(w for w in at.number_input if w.label.startswith("Test input")).value == 3
    assert at.query_params == {"run": VAE.info.id, "input": "3"}
    at.radio[0].set_value("toy density").run()  # the input leaves the URL, the density enters it
    assert_clean(at)
    assert at.query_params == {"run": VAE.info.id, "toy": "correlated gaussian"}


@pytest.mark.parametrize(
    "page, label", [("importance_weights.py", "Test input"), ("robustness.py", "Input (test example)")]
)
def test_a_link_opens_a_test_input_and_the_url_follows_it(page, label):
    at = open_link(f"pages/{page}", run="digits-vae", input="5")
    assert_clean(at)
    box = next(w for w in at.number_input if w.label == label)
    assert box.value == 5 and at.query_params["input"] == "5"
    box.set_value(7).run()
    assert_clean(at)
    assert at.query_params == {"run": VAE.info.id, "input": "7"}


def test_a_test_input_beyond_the_test_set_warns_and_opens_the_first():
    at = open_link("pages/importance_weights.py", run="digits-vae", input="10000000")
    assert_clean(at)
    (message,) = warnings(at)
    assert "input `10000000`" in message
    assert next(w for w in at.number_input if w.label == "Test input").value == 0
    assert at.query_params["input"] == "0"


def test_the_whole_app_follows_the_sidebar_and_keeps_the_model_across_pages():
    at = open_link("app/main.py", run="digits-hvae")
    assert_clean(at)
    assert next(s for s in at.sidebar.selectbox if s.label == "Model").value == HVAE.key
    assert shows_latest(at)
    step = checkpoint_steps(HVAE)[1]
    next(s for s in at.sidebar.selectbox if s.label == "Checkpoint").set_value(step).run()
    assert at.query_params == {"run": HVAE.info.id, "step": str(step)}
    next(s for s in at.sidebar.selectbox if s.label == "Model").set_value(VAE.key).run()
    assert at.query_params == {"run": VAE.info.id}  # a new model opens at its latest checkpoint
    assert shows_latest(at)
    at.query_params.clear()  # what the browser does on going to another page
    for key, value in SMALL_HMC.items():
        at.session_state[key] = value
    at.switch_page("../pages/hmc_chains.py").run()
    assert_clean(at)
    assert at.title[0].value == "HMC chains"
    assert at.query_params == {"run": VAE.info.id, "toy": "correlated gaussian"}


@pytest.mark.parametrize(
    "page, needs, offered",
    [
        ("facet_clusters.py", "multi-facet clustering model", ["facet-digits-mfcvae"]),
        ("hvae_norms.py", "hierarchical VAE", ["digits-hvae", "digits-hvae-shared", "digits-hvae-normalised"]),
        (
            "layer_diagnostics.py",
            "hierarchical VAE",
            ["digits-hvae", "digits-hvae-shared", "digits-hvae-normalised", "digits-dctvae"],
        ),
        ("dctvae.py", "DCT-VAE", ["digits-dctvae"]),
    ],
)
def test_a_page_for_another_kind_of_model_lists_its_demos_and_opens_the_first(page, needs, offered):
    at = open_link(f"pages/{page}", run=VAE.info.id)
    assert_clean(at)
    (info,) = [i.value for i in at.info if needs in i.value]
    assert all(f"`{name}`" in info for name in offered)
    assert "`digits-vae`" not in info  # the selected model is not offered
    (button,) = at.button
    assert button.label == f"Open the {offered[0]} demo"
    if page == "hvae_norms.py":  # the others open the same way; layer statistics take a while
        return
    button.click().run()
    assert_clean(at)
    assert not [i.value for i in at.info if needs in i.value]
    assert at.session_state[RUN_KEY] == DEMOS[offered[0]].key
    assert at.query_params["run"] == DEMOS[offered[0]].info.id


@pytest.mark.parametrize("page", ["traversals.py", "robustness.py"])
def test_an_image_page_on_a_table_model_offers_the_image_demos(page):
    at = open_link(f"pages/{page}", run=TABLE.info.id)
    assert_clean(at)
    (info,) = [i.value for i in at.info if "trained on a table" in i.value]
    images = [  # the latent models of images (a diffusion model has pages of its own)
        name
        for name, c in DEMOS.items()
        if c.info.input_shape and len(c.info.input_shape) == 3 and family_kind(c.info.model) == "latent"
    ]
    assert "`mixed-hhvaem`" not in info and all(f"`{name}`" in info for name in images)
    (button,) = at.button
    assert button.label == f"Open the {images[0]} demo"
    if page == "traversals.py":
        button.click().run()
        assert_clean(at)
        assert at.session_state[RUN_KEY] == DEMOS[images[0]].key
        assert at.query_params["run"] == DEMOS[images[0]].info.id
        assert at.get("image")  # the traversal grid


def test_martingale_checks_offer_the_demo_learner_when_none_learns_the_chosen_data():
    at = AppTest.from_file(str(ROOT / "pages" / "martingale_checks.py"), default_timeout=180)
    at.session_state["martingale_family"] = "gaussian"
    at.run()
    next(s for s in at.selectbox if s.label == "Predictor").set_value("neural").run()
    assert_clean(at)
    (message,) = [w.value for w in at.warning]
    assert "No trained gaussian in-context learner" in message and "`bernoulli-icl` (bernoulli)" in message
    assert any(h.value == "Train a neural in-context learner" for h in at.subheader)  # "train one below" is there
    next(b for b in at.button if b.label.startswith("Open the bernoulli-icl demo")).click().run()
    assert_clean(at)
    assert at.radio[0].value == "bernoulli"
    assert next(s for s in at.selectbox if s.label == "Run").value.key == DEMOS["bernoulli-icl"].key
    assert any(h.value == "Verdicts" for h in at.subheader)
