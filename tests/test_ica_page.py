"""The ICA sources page (pages/ica_sources.py) on a tiny Bijecta trained here, on a model of another
family, and the HMC page on the posterior of a Bijecta with two sources."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.store import RunStore
from engine.training import RunSpec, train
from tests.pagetest import assert_clean, image_urls, open_run_page

QUICK = {"eval_every": 60, "checkpoint_every": 60, "eval_examples": 50, "progress": False}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One runs folder per model (the page opens the one run it finds): a Bijecta with 4 sources on the
    8x8 digits, one with 2 sources, and a tiny VAE. About 10 s in all on one thread."""
    made = {}
    for name, preset, overrides in (
        ("bijecta", "digits-bijecta", {"model": {"source_dim": 4, "flow_layers": 2, "coupling_hidden": [32]}}),
        ("bijecta-2", "digits-bijecta", {"model": {"source_dim": 2, "flow_layers": 1, "coupling_hidden": [32]}}),
        ("vae", "digits-vae", {"model": {"hidden": [32], "latent_dim": 2}}),
    ):
        root = tmp_path_factory.mktemp(name)
        spec = RunSpec.from_preset(preset, {**overrides, "train": {"steps": 60, "batch_size": 64, **QUICK}})
        train(spec, runs_root=str(root), name=name)
        made[name] = root
    return made


def open_page(file: str, root: Path, monkeypatch, **state) -> AppTest:
    (info,) = RunStore(root).list_runs()
    return open_run_page(file, root, monkeypatch, f"runs/{info.id}", **state)


def test_the_page_draws_every_view_of_a_bijecta(runs, monkeypatch):
    at = open_page("ica_sources.py", runs["bijecta"], monkeypatch)
    assert_clean(at)
    assert [h.value for h in at.subheader] == [
        "The mixing matrix's columns beside FastICA's",
        "The posterior over the prior",
        "Decoding a grid of two sources",
        "Moving one source at a time from a test input",
        "Samples from the factorised aggregate posterior and from the prior",
        "How much of f⁻¹(X) the first directions explain",
    ]
    urls = image_urls(at)
    assert len(urls) >= 5 and len(set(urls)) == len(urls)  # columns, grid, input, traversals, samples
    assert len(at.get("plotly_chart")) == 3  # posterior over the prior, centroids, explained variance
    labels = [m.label for m in at.metric]
    assert "Mean |cos| to FastICA" in labels and "R² of source → centroid (affine)" in labels
    assert any(label.startswith("Variance of f⁻¹(X)") for label in labels)
    table = at.dataframe[0].value
    assert list(table.columns) == ["source", "aggregate sd", "FastICA column", "|cos|"] and len(table) == 4
    assert ((table["|cos|"] >= 0) & (table["|cos|"] <= 1 + 1e-9)).all()
    assert sorted(table["FastICA column"]) == [0, 1, 2, 3]  # a one-to-one match


def test_another_pair_of_sources_and_other_settings_run_clean(runs, monkeypatch):
    at = open_page("ica_sources.py", runs["bijecta"], monkeypatch)
    before = image_urls(at)
    sources = [int(label.removeprefix("s[").removesuffix("]")) for label in at.selectbox(key="ica-a").options]
    assert sorted(sources) == [0, 1, 2, 3] and at.selectbox(key="ica-a").value == sources[0]
    at.selectbox(key="ica-a").set_value(sources[2]).run()
    assert_clean(at)
    at.selectbox(key="ica-b").set_value(sources[3]).run()
    assert_clean(at)
    assert (at.selectbox(key="ica-a").value, at.selectbox(key="ica-b").value) == (sources[2], sources[3])
    at.selectbox(key="ica-a").set_value(sources[3]).run()  # onto the second's choice: the second moves on
    assert_clean(at)
    assert at.selectbox(key="ica-b").value != sources[3]
    assert image_urls(at) != before  # the grid shows the new pair
    at.number_input(key="ica-input").set_value(3).run()
    at.number_input(key="ica-samples-seed").set_value(7).run()
    assert_clean(at)
    assert len(at.get("plotly_chart")) == 3


def test_the_page_says_what_it_needs_on_another_family(runs, monkeypatch):
    at = open_page("ica_sources.py", runs["vae"], monkeypatch)
    assert_clean(at)
    assert len(at.info) == 1 and "Bijecta" in at.info[0].value and "hearts-bijecta" in at.info[0].value
    assert not at.get("plotly_chart") and not image_urls(at)


def test_the_hmc_page_samples_the_posterior_of_a_bijecta_with_two_sources(runs, monkeypatch):
    at = open_page("hmc_chains.py", runs["bijecta-2"], monkeypatch)
    at.radio(key="hmc_source").set_value("latent posterior of the selected model").run()
    assert_clean(at)
    assert len(at.get("plotly_chart")) >= 2
    assert "s[0]" in at.dataframe[0].value.to_string()
    # a Bijecta has no masked likelihood, so the page offers no region to hide
    assert next(w for w in at.selectbox if w.label == "Hide (inpaint)").options == ["nothing"]
