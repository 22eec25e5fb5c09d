"""The shipped facet-digits MFCVAE demo finds both factors (issue: Facet clusters).

Scored on the whole test split, exactly as scripts/facet_seeds.py scores every seed.
The goals are the issue's: at least 90% on digit from the content facet, 98% on colour
from the style facet, and at most 35% probe accuracy for digit from the style facet.
The demo is seed 0 of scripts/facet_seeds.py (all five seeds: scripts/results/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.diagnostics.facets import facet_accuracies, facet_probes
from engine.loading import load_run_model
from engine.store import Run

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "runs"


@pytest.fixture(scope="module")
def demo():
    dirs = [
        d
        for d in ASSETS.iterdir()
        if json.loads((d / "config.json").read_text()).get("preset") == "facet-digits-mfcvae"
    ]
    assert len(dirs) == 1, f"expected one facet-digits-mfcvae demo under assets/runs, found {dirs}"
    loaded = load_run_model(Run.from_dir(dirs[0], readonly=True))
    spec = loaded.spec
    return loaded.model, spec.load_data("train"), spec.load_data("test")


def test_style_facet_clusters_the_colour_and_content_facet_the_digit(demo):
    model, _, test = demo
    scores = facet_accuracies(model, test)
    assert scores["facet1"]["colour"]["accuracy"] >= 0.98
    assert scores["facet1"]["colour"]["method"] == "majority"  # K = 30 clusters for 20 colour pairs
    assert scores["facet0"]["digit"]["method"] == "majority"  # K = 150 clusters for 10 digits
    assert scores["facet0"]["digit"]["accuracy"] >= 0.90
    # and neither facet clusters the other's factor
    assert scores["facet1"]["digit"]["accuracy"] < 0.30
    assert scores["facet0"]["colour"]["accuracy"] < 0.35  # 150 clusters mapped by majority: chance is above 5%


def test_style_facet_holds_little_digit_information(demo):
    model, train, test = demo
    probes = facet_probes(model, train, test, n_train=3000, n_test=2000)
    assert probes["facet1"]["digit"] <= 0.35  # chance is 0.10; the paper's MNIST figure is 0.17
    assert probes["facet0"]["digit"] >= 0.90  # the content facet does hold the digit
