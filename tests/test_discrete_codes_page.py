"""The Discrete codes page (pages/discrete_codes.py) on a tiny RRVQ-VAE and a tiny Spatial-VAE
trained here, and on a model of another family; and the code-level diagnostics it draws
(engine/diagnostics/codes.py) against hand-computed cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.diagnostics.codes import colour_spread, index_map_tiles, swap_codes, usage_of, viridis
from engine.models import build_model
from engine.store import RunStore
from engine.training import RunSpec, train
from tests.pagetest import assert_clean, image_urls, open_run_page

pytestmark = pytest.mark.usefixtures("one_thread")
QUICK = {"steps": 20, "batch_size": 32, "eval_every": 10, "checkpoint_every": 10, "eval_examples": 50}
TINY = {"width": 8, "codes": 6, "code_dim": 4, "layers": 3}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One runs folder per model (the page opens the one run it finds); a few seconds in all."""
    made = {}
    for name, preset, model in (
        ("codes", "digits-rrvq", TINY),
        ("gaussian", "digits-spatial-vae", TINY),
        ("vae", "digits-vae", {"hidden": [32], "latent_dim": 2}),
    ):
        root = tmp_path_factory.mktemp(name)
        train_options = {**QUICK, "progress": False, "keep_checkpoints": 3}
        train(RunSpec.from_preset(preset, {"model": model, "train": train_options}), runs_root=str(root), name=name)
        made[name] = root
    return made


def open_page(root: Path, monkeypatch, **state):
    (info,) = RunStore(root).list_runs()
    return open_run_page("discrete_codes.py", root, monkeypatch, f"runs/{info.id}", **state)


def test_every_view_of_a_codes_model(runs, monkeypatch):
    at = open_page(runs["codes"], monkeypatch)
    assert_clean(at)
    assert [h.value for h in at.subheader] == [
        "Reconstructions and prior samples",
        "Layerwise resampling",
        "Index map",
        "Code usage",
        "Swap a code",
        "Patchwork samples: the swatch toy",
        "Why responsibilities: worst-case entropy",
    ]
    assert any("swatches-mlp-rvq" in i.value for i in at.info)  # no swatch run here: how to train them
    urls = image_urls(at)
    assert len(urls) == 4 and len(set(urls)) == 4  # samples, layerwise grid, index map, swapped codes
    table = at.dataframe[0].value
    assert list(table["layer"]) == ["z3", "z2", "z1"]
    assert (table["perplexity"] >= 1).all() and (table["perplexity"] <= 6).all()
    assert ((table["dead codes"] >= 0) & (table["dead codes"] < 6)).all()
    # usage bars, usage at the checkpoints (10 and 20), batch perplexity, the number grid, the entropy curves
    assert len(at.get("plotly_chart")) == 5


def test_swatch_runs_are_shown_side_by_side_with_their_colour_spread(tmp_path, monkeypatch):
    for preset in ("swatches-rvq", "swatches-mlp-rvq"):
        model = {"width": 8, "codes": 4, "code_dim": 4, "blocks": 1, "hidden": 32}
        train_options = {**QUICK, "steps": 10, "progress": False}
        spec = RunSpec.from_preset(preset, {"model": model, "data": {"options": {"n": 200}}, "train": train_options})
        train(spec, runs_root=str(tmp_path), name=preset)
    run = next(i for i in RunStore(tmp_path).list_runs() if "mlp" in i.id)
    at = open_run_page("discrete_codes.py", tmp_path, monkeypatch, f"runs/{run.id}")
    assert_clean(at)
    table = next(d.value for d in at.dataframe if "colour spread of samples" in d.value.columns)
    assert len(table) == 2 and (table["colour spread of samples"] >= 0).all()
    assert {name.split(" · ")[0] for name in table["run"]} == {"rVQ-VAE", "MLP rVQ-VAE"}


def test_other_choices_redraw(runs, monkeypatch):
    at = open_page(runs["codes"], monkeypatch)
    before = image_urls(at)
    at.selectbox(key="lw-layer").set_value("z3").run()
    at.selectbox(key="swap-where").set_value("row 1, column 0").run()
    at.slider(key="th-delta").set_value(0.5).run()
    assert_clean(at)
    after = image_urls(at)
    assert after[1] != before[1] and after[3] != before[3]


def test_a_spatial_vae_gets_the_views_that_apply_and_says_why_not_the_rest(runs, monkeypatch):
    at = open_page(runs["gaussian"], monkeypatch)
    assert_clean(at)
    assert [h.value for h in at.subheader][:2] == ["Reconstructions and prior samples", "Layerwise resampling"]
    assert "Index map" not in [h.value for h in at.subheader]
    assert any("Gaussian latents" in i.value for i in at.info)


def test_another_family_is_offered_the_theory_and_the_demos(runs, monkeypatch):
    at = open_page(runs["vae"], monkeypatch)
    assert_clean(at)
    assert [h.value for h in at.subheader] == ["Why responsibilities: worst-case entropy"]
    assert any("hierarchy of codes" in i.value for i in at.info)


def test_usage_counts_perplexity_and_dead_codes_by_hand():
    usage = usage_of(torch.tensor([[0, 0], [1, 3]]), codes=5)
    assert usage.counts.tolist() == [2, 1, 0, 1, 0] and usage.dead == 2 and usage.positions == 4
    p = np.array([0.5, 0.25, 0.25])
    assert usage.perplexity == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert usage_of(torch.zeros(10, dtype=torch.long), 4).perplexity == pytest.approx(1.0)


def test_index_map_tiles_stretch_each_code_over_its_patch():
    images = np.zeros((1, 4, 4, 1), np.uint8)
    norms = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    tiles = index_map_tiles(images, norms, 0.0, 1.0)
    assert tiles.shape == (2, 4, 4, 3)
    low, high = viridis(np.array(0.0)), viridis(np.array(1.0))
    assert (tiles[1, :2, :2] == low).all() and (tiles[1, :2, 2:] == high).all() and (tiles[1, 2:, :2] == high).all()
    assert tiles[0].sum() == 0


def test_swapping_the_inputs_own_codes_changes_nothing_and_checks_its_arguments():
    torch.manual_seed(0)
    model = build_model("rrvq", {"input_shape": [1, 8, 8], **TINY, "likelihood": "bernoulli"}).eval()
    x = torch.rand(2, 1, 8, 8)
    own = model.code_indices(x)["z2"]
    same = swap_codes(model, x[:1], "z2", int(own[0, 1, 0]), position=(1, 0))
    torch.testing.assert_close(same, model.decode(model.one_hot(model.code_indices(x[:1]))))
    changed = swap_codes(model, x[:1], "z2", (int(own[0, 1, 0]) + 1) % 6, position=(1, 0))
    assert not torch.equal(changed, same)
    both = swap_codes(model, x, "z2", [2, 4], position=(0, 1))  # code-major: 2 for both inputs, then 4
    torch.testing.assert_close(both[:2], swap_codes(model, x, "z2", 2, position=(0, 1)))
    torch.testing.assert_close(both[2:], swap_codes(model, x, "z2", 4, position=(0, 1)))
    for bad in [{"layer": "z9", "code": 0}, {"layer": "z2", "code": 6}, {"layer": "z2", "code": 0, "position": (2, 0)}]:
        with pytest.raises(Exception, match="layer|codes must|outside"):
            swap_codes(model, x[:1], **bad)


def test_colour_spread_is_zero_for_a_swatch_and_positive_for_a_patchwork():
    swatch = torch.ones(1, 3, 4, 4) * torch.tensor([0.2, 0.5, 0.9]).view(1, 3, 1, 1)
    patchwork = torch.rand(1, 3, 4, 4)
    assert colour_spread(swatch).item() == pytest.approx(0.0, abs=1e-7)
    assert colour_spread(patchwork).item() > 0.1


def test_a_swap_propagates_down_through_the_priors_modes():
    torch.manual_seed(1)
    model = build_model("rrvq", {"input_shape": [1, 8, 8], **TINY, "likelihood": "bernoulli"}).eval()
    x = torch.rand(1, 1, 8, 8)
    indices = model.code_indices(x)
    indices["z2"] = torch.full_like(indices["z2"], 3)
    with torch.no_grad():
        _, layers = model.top_down(None, 1, z=model.one_hot({"z3": indices["z3"], "z2": indices["z2"]}), draw="mode")
    below = layers[2]["z"].argmax(-1).view(1, 4, 4)  # z1's prior mode given the swapped z2 and x's z3
    expected = model.decode(model.one_hot({**indices, "z1": below}))
    torch.testing.assert_close(swap_codes(model, x, "z2", 3, below="mode"), expected)
