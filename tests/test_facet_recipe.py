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
