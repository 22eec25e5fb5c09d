"""The Robustness and Importance weights pages under AppTest, on the digits demos."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.runs import available_runs, run_slug
from app.state import RUN_KEY

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def empty_runs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_ATLAS_RUNS_DIR", str(tmp_path / "runs"))


def demo_key(slug: str) -> str:
    for choice in available_runs():
        if choice.key.startswith("demo/") and run_slug(choice.info.id) == slug:
            return choice.key
    raise AssertionError(f"no {slug} demo under assets/runs")


def open_page(file: str, slug: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / file), default_timeout=300)
    at.session_state[RUN_KEY] = demo_key(slug)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(label))


def test_robustness_page_attacks_compares_and_bounds_the_margin():
    at = open_page("robustness.py", "digits-vae")
    # the attack: its best distortion makes the target's reconstruction likelier than no attack
    assert float(metric(at, "Distortion")) > 0
    nll_delta = next(m for m in at.metric if m.label.startswith("−log p(target")).proto.delta
    assert float(nll_delta.split()[0]) < 0
    # the comparison: the three digits models, each attacked successfully on every pair
    table = next(df.value for df in at.dataframe if "mean Δ" in df.value.columns)
    assert set(table["model"]) == {"digits-vae", "digits-tcvae", "digits-seatbelt"}
    assert table["divergence lowered on every pair"].all()
    # their MIG against the digit, the one known factor (so no FactorVAE score), set against β and Δ
    assert ((table["MIG"] >= 0) & (table["MIG"] <= 1)).all() and table["FactorVAE score"].isna().all()
    assert any("Fig. D.4" in c.proto.spec for c in at.get("plotly_chart"))
    # the margin of the input under each model: Theorem 6.1's bound sits below the empirical margin
    margins = next(df.value for df in at.dataframe if "empirical_margin" in df.value.columns)
    assert list(margins["model"]) == ["digits-vae", "digits-tcvae", "digits-seatbelt"]
    assert ((0 < margins["bound"]) & (margins["bound"] <= margins["empirical_margin"])).all()
    report = margins.iloc[0]
    # p(||Delta(x, delta*)|| <= r) against ||delta||: from p(r) at delta = 0 to below one half past the margin
    [curve] = [json.loads(c.proto.spec) for c in at.get("plotly_chart") if "most damaging" in c.proto.spec]
    xs, ys = curve["data"][0]["x"], curve["data"][0]["y"]
    assert xs[0] == 0 and ys[0] == pytest.approx(report["p_within"], abs=0.05)
    assert ys[-1] < 0.5 < ys[0] and xs[-1] > report["empirical_margin"]
    assert report["p_within"] == pytest.approx(0.9, abs=0.04)  # r from one set of draws, p from another
    # another attack mode reruns cleanly
    mode = next(s for s in at.selectbox if s.label == "Attack")
    mode.set_value("output (ELBO)").run()
    assert not at.exception, [e.value for e in at.exception]


def test_robustness_page_waits_for_a_click_on_a_large_model():
    at = open_page("robustness.py", "digits-hvae")
    assert not at.metric  # nothing computed yet: the four sections wait on their toggles
    assert len(at.toggle) == 4


def test_robustness_page_attacks_the_top_layers_of_a_hierarchy():
    at = open_page("robustness.py", "digits-hvae")
    next(s for s in at.slider if s.label == "Attacked groups, up to").set_value(2)
    next(s for s in at.select_slider if s.label == "Test inputs").set_value(4)
    next(s for s in at.select_slider if s.label == "Random starts").set_value(1)
    next(m for m in at.multiselect if m.label == "Beside it").set_value([])
    at.toggle(key="layer-attack-go").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    table = next(df.value for df in at.dataframe if "MS-SSIM mean" in df.value.columns)
    assert list(table["attacked groups"]) == [1, 2] and set(table["model"]) == {"digits-hvae"}
    # an attack of 0.1 per pixel damages the reconstruction, but not to nothing
    assert ((0.05 < table["MS-SSIM mean"]) & (table["MS-SSIM mean"] < 0.999)).all()
    captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
    assert "digits-hvae: 2 groups attacked, the worst start per input" in captions
    # an HVAE has no context: attacking as plain gradients would changes nothing
    next(c for c in at.checkbox if "context" in c.label).uncheck().run()
    assert not at.exception, [e.value for e in at.exception]
    again = next(df.value for df in at.dataframe if "MS-SSIM mean" in df.value.columns)
    assert list(again["MS-SSIM mean"]) == list(table["MS-SSIM mean"])


def test_importance_weights_page_shows_a_rising_bound_and_sir_in_the_latent_plane():
    at = open_page("importance_weights.py", "digits-vae-2d")
    curve = next(df.value for df in at.dataframe if "bound (nats)" in df.value.columns)
    assert curve["k"].iloc[0] == 1 and curve["k"].iloc[-1] >= 1000
    assert curve["bound (nats)"].iloc[-1] > curve["bound (nats)"].iloc[0]  # L^K above the ELBO
    assert not at.radio or all(r.label != "2-D view" for r in at.radio)  # a 2-D latent is its own view
    assert any("ESS of the" in c.value for c in at.caption)
    ess, _, pool = metric(at, "Effective sample size").split()  # "E of K"
    assert 1 <= float(ess) <= int(pool) == curve["k"].iloc[-1]


def test_robustness_page_leaves_out_models_whose_posterior_is_not_gaussian():
    """GM-DGM's q(z|x) is a mixture with no closed-form KL: the page says so and offers a VAE,
    and the comparison does not list the mixture models."""
    at = open_page("robustness.py", "digits-gmdgm")
    assert "GaussianMixturePosterior" in at.info[0].value and at.button[0].label.startswith("Open the")
    assert "gmdgm" not in at.button[0].label
    at = open_page("robustness.py", "digits-vae")
    models = next(m for m in at.multiselect if m.label == "Models")
    assert models.options and not any("gmdgm" in o or "ssvae" in o for o in models.options)
