"""The MFCVAE carry-over recipe (issue 19): its five datasets carry the two factors it is
scored on, and the recipe builds a model for every one of them."""

import pytest
import torch

from engine.data import load_dataset
from engine.models import build_model
from engine.training import RunSpec
from engine.training.presets import CARRY_OVER, mfcvae_recipe


@pytest.mark.parametrize("name", list(CARRY_OVER))
def test_every_carry_over_dataset_has_both_factors_and_the_recipe_builds_on_it(name):
    data, factors = CARRY_OVER[name]
    options = {**data["options"], "n": 400}
    test = load_dataset(data["name"], "test", 0, **options)
    assert len(factors) == 2
    for factor in factors:
        column = test.labels[factor]
        assert column.is_categorical and len(set(column.values.tolist())) > 1, factor
    recipe = mfcvae_recipe(data)
    spec = RunSpec.from_dict({**recipe, "data": {"name": data["name"], "options": options}})
    model = build_model(spec.family, spec.model_config(spec.load_data("train")))
    assert [g.name for g in model.latent_groups] == ["facet0", "facet1"]
    bound = model.elbo(test.batch(torch.arange(8))).total
    assert bound.shape == (8,) and bool(bound.isfinite().all())


@pytest.mark.parametrize("style", ["rotation", "thickness", "texture"])
def test_the_styled_digit_presets_are_the_recipe(style):
    data, _ = CARRY_OVER[style]
    spec = RunSpec.from_preset(f"styled-digits-{style}-mfcvae")
    recipe = mfcvae_recipe(data)
    assert spec.data == recipe["data"] and spec.model == recipe["model"]


def load_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "facet_carry_over.py"
    spec = importlib.util.spec_from_file_location("facet_carry_over", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(mfcvae, vade, kmeans):
    return {"mfcvae": mfcvae, "vade": vade, "kmeans": kmeans}


def test_the_summary_picks_each_factors_best_facet_and_the_factor_vade_loses(monkeypatch):
    script = load_script()
    monkeypatch.setattr(script, "pixel_variance_share", lambda dataset: {})
    # facet1 holds the colour, facet0 the digit; VaDE follows the colour (far below
    # k-means on the digit, above it on the colour); k-means at K = 30 for both facets
    seeds = [
        row(
            {"facet0/digit": d0, "facet0/colour": 0.2, "facet1/digit": 0.1, "facet1/colour": c1},
            {"facet0/digit": 0.2, "facet0/colour": 0.99},
            {"K=30": {"pixels/digit": 0.3, "pixels/colour": 0.9}},
        )
        for d0, c1 in ((0.8, 1.0), (0.25, 0.95))
    ]
    summary = script.summarise("facet-digits", seeds, [30, 30])
    assert summary["factors"]["digit"]["best facet"] == "facet0"
    assert summary["factors"]["colour"]["best facet"] == "facet1"
    assert summary["factor vade loses"] == "digit"
    assert summary["goals"] == {
        "digit: best facet beats k-means": True,  # mean 0.525 > 0.3
        "colour: best facet beats k-means": True,  # 0.975 > 0.9
        "digit: mfcvae beats vade": True,
    }
    # per seed: the second seed's digit facet (0.25) is below k-means (0.3)
    assert summary["seeds where goals hold"]["digit: best facet beats k-means"] == 1
    assert summary["seeds where goals hold"]["colour: best facet beats k-means"] == 2
    table = script.markdown({"facet-digits": {"summary": summary}})
    assert "| facet-digits | digit | facet0: 52.5 ± 38.9 | 30.0 ± 0.0 (K = 30) | 20.0 ± 0.0 |" in table
