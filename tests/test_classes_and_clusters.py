"""The views of a model with a discrete latent y (engine.diagnostics.semi_supervised) on
hand-made cases, and the Classes and clusters page on the shipped GM-DGM and SSVAE demos."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from app.runs import available_runs
from app.state import RUN_KEY
from engine.data.base import Dataset, LabelColumn
from engine.diagnostics.semi_supervised import class_report, entropy_densities, most_confident, regime_table, yz_grid
from engine.errors import AtlasError
from engine.models import build_model

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "classes_and_clusters.py")


class FixedClassifier(torch.nn.Module):
    """classify(x) reads q(y|x) from the input's first value (a row of a fixed table)."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.tensor(table, dtype=torch.float64)
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def classify(self, x):
        return self.table[x[:, 0].long()].log()


def test_the_report_maps_components_to_classes_and_counts_the_confusion_by_hand():
    # 3 components, 2 classes; inputs 0..5: components 0, 0, 1, 1, 2, 2; classes 0, 0, 1, 0, 1, 1
    table = [[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.5, 0.4], [0.1, 0.2, 0.7], [0.3, 0.1, 0.6]]
    x = torch.arange(6, dtype=torch.float32)[:, None]
    data = Dataset(
        "toy",
        "test",
        x,
        {"c": LabelColumn("c", torch.tensor([0, 0, 1, 0, 1, 1]), ["a", "b"])},
        (1,),
        (0.0, 5.0),
        kind="tabular",
    )
    rep = class_report(FixedClassifier(table), data)
    assert rep.components.tolist() == [0, 0, 1, 1, 2, 2]
    # component 1 holds one of each class: the tie goes to the lower class id
    assert rep.accuracy.mapping == {0: 0, 1: 0, 2: 1} and rep.accuracy.accuracy == pytest.approx(5 / 6)
    assert rep.confusion.tolist() == [[3, 0], [1, 2]]
    p = np.array(table)
    np.testing.assert_allclose(rep.entropy, -(p * np.log(p)).sum(1))
    with pytest.raises(AtlasError, match="not a categorical label"):
        class_report(FixedClassifier(table), data, factor="colour")


def test_the_most_confident_members_come_first_and_empty_components_are_absent():
    probs = np.array([[0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.95, 0.05, 0.0], [0.2, 0.8, 0.0]])
    best = most_confident(probs, per_component=2)
    assert set(best) == {0, 1}
    assert best[0].tolist() == [2, 0] and best[1].tolist() == [3]


def test_a_row_of_the_generation_grid_shares_one_standardised_draw():
    torch.manual_seed(0)
    model = build_model("gmdgm", {"input_shape": [3], "components": 4, "latent_dim": 3, "hidden": 8})
    with torch.no_grad():
        model.prior_mean.copy_(torch.randn(4, 3) * 4)
        model.prior_logvar.copy_(torch.randn(4, 3))
    model.decode_y = lambda z, y: z  # the grid's latents themselves
    z = yz_grid(model, rows=5, components=[3, 0, 2], seed=7).view(5, 3, 3)
    mean, sd = model.prior_mean[[3, 0, 2]], (0.5 * model.prior_logvar[[3, 0, 2]]).exp()
    eps = (z - mean) / sd  # (rows, columns, d_z)
    torch.testing.assert_close(eps, eps[:, :1].expand_as(eps))
    assert not torch.allclose(eps[0], eps[1])
    torch.testing.assert_close(yz_grid(model, 5, [3, 0, 2], seed=7), z.flatten(0, 1))
    with pytest.raises(AtlasError, match="values of y in 0..3"):
        yz_grid(model, 2, [4])


def test_the_entropy_densities_are_kdes_of_each_side_of_the_split():
    from scipy.stats import gaussian_kde

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    entropy = np.where(labels < 2, rng.gamma(2, 0.1, 200), rng.gamma(2, 0.5, 200))
    curves = entropy_densities(entropy, labels, [0, 1])
    grid, seen = curves["labelled classes"]
    _, unseen = curves["never-labelled classes"]
    np.testing.assert_allclose(seen, gaussian_kde(entropy[:100])(grid))
    np.testing.assert_allclose(unseen, gaussian_kde(entropy[100:])(grid))
    assert grid[np.argmax(seen)] < grid[np.argmax(unseen)]  # the surer side peaks at lower entropy


def test_the_regime_table_averages_runs_per_model_and_regime():
    runs = [
        {"model": "gmdgm", "regime": "sus", "accuracy": 0.90},
        {"model": "gmdgm", "regime": "sus", "accuracy": 0.94},
        {"model": "ssvae", "regime": None, "accuracy": 0.3},
        {"model": "ssvae", "regime": "ss", "accuracy": float("nan")},
    ]
    rows = {r["model"]: r for r in regime_table(runs)}
    assert rows["gmdgm"]["sus"] == f"92.0 ± {math.sqrt(8):.1f} (2)"
    assert rows["ssvae"]["us"] == "30.0 (1)" and rows["ssvae"]["ss"] == "" and rows["gmdgm"]["us"] == ""


# -- the page -------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def empty_runs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_ATLAS_RUNS_DIR", str(tmp_path / "runs"))


def demo(family: str) -> str:
    for choice in available_runs():
        if choice.key.startswith("demo/") and choice.info.family == family and choice.info.status != "broken":
            return choice.key
    pytest.fail(f"no readable {family} demo under assets/runs (publish one trained with --preset digits-{family})")


@pytest.mark.parametrize("family", ["gmdgm", "ssvae"])
def test_the_page_shows_the_confusion_grid_and_entropy_of_a_demo(family):
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.session_state[RUN_KEY] = demo(family)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error and not at.info, [e.value for e in [*at.error, *at.info]]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Label regime"] == "SUS" and float(metrics["Cluster accuracy (majority mapping)"].rstrip("%")) > 50
    assert len(at.get("plotly_chart")) == 2 and len(at.get("image")) == 2
    table = at.get("dataframe")[0].value
    assert set(table["model"]) == {"gmdgm", "ssvae"} and all(table["sus"].str.endswith("(1)"))


def test_the_page_offers_the_demos_for_a_model_without_a_discrete_latent():
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.session_state[RUN_KEY] = next(c.key for c in available_runs() if c.info.family == "vae")
    at.run()
    assert not at.exception
    assert "discrete latent y" in at.info[0].value and at.button[0].label.startswith("Open the")
