"""The Compare models page (pages/compare.py) on the published demos, under Streamlit's AppTest:
the default pair, a link that names the runs, models of different shapes, a model of codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.pagetest import assert_clean, image_urls

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "compare.py")


@pytest.fixture(autouse=True)
def empty_runs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_ATLAS_RUNS_DIR", str(tmp_path / "runs"))


def open_link(**params: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.query_params.update(params)
    return at.run()


def test_a_link_opens_three_models_side_by_side_and_the_url_follows_the_choice():
    at = open_link(runs="digits-vae,digits-tcvae,digits-seatbelt")
    assert_clean(at)
    table = at.dataframe[0].value
    assert list(table["model"]) == ["digits-vae", "digits-tcvae", "digits-seatbelt"]
    assert ((table["MIG"] >= 0) & (table["MIG"] <= 1)).all()
    assert len(image_urls(at)) == 5  # samples, reconstructions, one traversal grid per model
    keys = at.multiselect[0].value
    at.multiselect[0].set_value(keys[:2]).run()
    assert_clean(at)
    assert at.query_params["runs"] == "digits-vae,digits-tcvae"


def test_without_a_link_it_opens_the_first_two_models_that_share_their_data():
    at = open_link()
    assert_clean(at)
    table = at.dataframe[0].value
    assert len(table) == 2 and table["data"].nunique() == 1


def test_models_of_different_shapes_are_not_compared_and_unknown_names_are_named():
    at = open_link(runs="digits-vae,digits-hvae,no-such-model")
    assert_clean(at)
    assert any("no-such-model" in w.value for w in at.warning)
    assert any("different shapes" in i.value for i in at.info)
    assert not at.dataframe


def test_a_model_of_codes_is_compared_without_traversals():
    at = open_link(runs="digits-hvae,digits-rrvq")
    assert_clean(at)
    assert any("discrete codes" in c.value for c in at.caption)
    assert len(image_urls(at)) == 3  # samples, reconstructions, the HVAE's traversals
