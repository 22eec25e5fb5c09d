"""The shared model base: latents checked and flattened in one place, the importance-sample
check, and the optional abilities as Protocols that tell the families apart by isinstance."""

import inspect

import pytest
import torch

from engine.data import load_dataset
from engine.errors import AtlasError
from engine.models import FAMILIES, PLUGINS, build_model
from engine.models.base import (
    ClusteredPrior,
    ConditionalSampler,
    Configured,
    DataInitialised,
    EmbeddedCodes,
    EvaluationMetrics,
    FieldsFromData,
    GroupedBatch,
    ImportanceWeighted,
    LabelledTraining,
    LatentGroup,
    LatentModel,
    MaskedLikelihood,
    NoiseSpace,
    StepScheduled,
    TabularImputer,
    Trainable,
    WithLikelihood,
    sample_conditions,
)
from engine.models.ddpm import DiffusionModel
from engine.models.latents import checked_latents, flatten_latents, leading_shape, split_latents

SMALL = {
    "vae": {"input_shape": [1, 8, 8], "latent_dim": 3, "hidden": [16]},
    "mfcvae": {"input_shape": [6], "facet_dims": [3, 2], "clusters": [4, 5], "hidden": [16, 16]},
    "hvae": {"input_shape": [1, 8, 8], "encoder": "8x1,8d2,4x1", "decoder": "4x1,8m4,8x1", "width": 8, "zdim": 2},
    "vdvae": {
        "input_shape": [3, 8, 8],
        "enc_blocks": "8x1,8d2,4x1",
        "dec_blocks": "4x1,8m4,8x1",
        "width": 8,
        "zdim": 2,
        "num_mixtures": 2,
    },
    "dctvae": {
        "input_shape": [1, 8, 8],
        "encoder": "8x1,8d2,4x1",
        "decoder": "4x1,8m4,8x1",
        "width": 8,
        "zdim": 2,
        "context_size": 2,
        "prior_steps": 3,
        "prior_width": 8,
        "prior_blocks": 1,
    },
    "seatbelt": {"input_shape": [5], "layer_dims": [4, 2], "hidden": [16], "link_hidden": 8},
    "hhvaem": {
        "input_shape": [3],
        "columns": [["a", "real", 0], ["b", "binary", 0], ["c", "categorical", 3]],
        "hidden": 8,
    },
    "icl": {},
    "gmdgm": {"input_shape": [1, 8, 8], "components": 3, "latent_dim": 2, "hidden": 16},
    "ssvae": {"input_shape": [1, 8, 8], "components": 3, "latent_dim": 2, "hidden": 16},
    "ugvae": {
        "input_shape": [1, 8, 8],
        "components": 3,
        "local_dim": 2,
        "global_dim": 2,
        "hidden": [16],
        "cluster_hidden": 8,
        "prior_hidden": 8,
    },
    "ddpm": {"input_shape": [1, 8, 8], "widths": [8, 8], "steps": 10},
    "tdvae": {"input_shape": [1, 8, 8], "z1_dim": 6, "z2_dim": 2, "hidden": [16], "head_hidden": [8]},
    "tdiwae": {"input_shape": [1, 8, 8], "z1_dim": 6, "z2_dim": 2, "hidden": [16], "head_hidden": [8], "k": 3},
    "bijecta": {"input_shape": [1, 8, 8], "source_dim": 2, "flow_layers": 1, "coupling_hidden": [16]},
    "rrvq": {"input_shape": [1, 8, 8], "layers": 2, "width": 8, "codes": 4, "code_dim": 2},
    "pythae-vae": {"input_shape": [1, 4, 4], "latent_dim": 2, "reconstruction_loss": "mse"},
    "autoencoder-kl": {
        "input_shape": [3, 8, 8],
        "block_out_channels": [4, 4],
        "norm_num_groups": 2,
        "latent_channels": 2,
        "sample_size": 8,
    },
}


# the built-in families (an installed plugin's, such as the example ppca, are tested in test_plugins.py)
BUILT_IN = {name: classes for name, classes in FAMILIES.items() if name not in PLUGINS.sources}


def small(family: str):
    torch.manual_seed(0)
    return build_model(family, SMALL[family])


def test_every_registered_family_has_a_small_config_here():
    assert set(SMALL) == set(BUILT_IN)


# -- latents ----------------------------------------------------------------------------------
def test_checked_latents_says_which_groups_were_expected_and_which_came():
    model = small("seatbelt")
    z = {"z1": torch.randn(2, 4), "z2": torch.randn(2, 2)}
    assert list(checked_latents(model, {"z2": z["z2"], "z1": z["z1"]})) == ["z1", "z2"]  # in group order
    with pytest.raises(AtlasError, match=r"groups z1, z2; missing z2; unknown z3"):
        checked_latents(model, {"z1": z["z1"], "z3": z["z2"]})
    with pytest.raises(AtlasError, match=r"2 latent groups; pass latents as a dict \{z1, z2: tensor\}, got a tensor"):
        checked_latents(model, z["z1"])
    with pytest.raises(AtlasError, match=r"z2 latents must have shape \(\.\.\., 2\), got \(2, 3\)"):
        checked_latents(model, {"z1": z["z1"], "z2": torch.randn(2, 3)})
    with pytest.raises(AtlasError, match=r"leading shapes do not match: z1 \(2,\), z2 \(3,\)"):
        checked_latents(model, {"z1": z["z1"], "z2": torch.randn(3, 2)})


def test_a_lone_tensor_is_a_one_group_models_latents():
    model = small("vae")
    z = torch.randn(5, 2, 3)
    assert checked_latents(model, z)["z"] is z
    with pytest.raises(AtlasError, match=r"z latents must have shape \(\.\.\., 3\)"):
        checked_latents(model, torch.randn(2, 4))


class ManyGroups:
    latent_groups = [LatentGroup(f"g{i:02d}", (1,), "layer") for i in range(12)]


def test_many_groups_are_listed_briefly():
    with pytest.raises(AtlasError, match=r"missing g01, g02, g03, g04, g05, g06, g07, g08, \.\.\. \(11 in all\)$"):
        checked_latents(ManyGroups(), {"g00": torch.zeros(1, 1)})


def test_flatten_and_split_are_inverse_and_keep_the_group_order():
    groups = [LatentGroup("a", (2, 3)), LatentGroup("b", (4,)), LatentGroup("c", (1,))]
    z = {"a": torch.randn(5, 7, 2, 3), "b": torch.randn(5, 7, 4), "c": torch.randn(7, 1)}  # c broadcasts
    flat = flatten_latents(z, groups)
    assert flat.shape == (5, 7, 11) and leading_shape(z, groups) == (5, 7)
    torch.testing.assert_close(flat[..., :6], z["a"].reshape(5, 7, 6))
    torch.testing.assert_close(flat[..., 6:10], z["b"])
    torch.testing.assert_close(flat[..., 10:], z["c"].expand(5, 7, 1))
    back = split_latents(flat, groups)
    assert list(back) == ["a", "b", "c"]
    torch.testing.assert_close(back["a"], z["a"])
    torch.testing.assert_close(back["b"], z["b"])
    with pytest.raises(AtlasError, match="11 entries"):
        split_latents(flat[..., :10], groups)


@pytest.mark.parametrize(
    "family",
    [
        "vae",
        "mfcvae",
        "hvae",
        "vdvae",
        "dctvae",
        "seatbelt",
        "ugvae",
        "tdvae",
        "tdiwae",
        "bijecta",
        "rrvq",
        "autoencoder-kl",
        "pythae-vae",
    ],
)
def test_decode_and_log_joint_accept_latents_with_extra_leading_dims(family):
    model = small(family).eval()
    x = torch.rand(2, *SMALL[family]["input_shape"])
    z = {g.name: torch.randn(3, 2, *g.shape) for g in model.latent_groups}
    with torch.no_grad():
        lp = model.log_joint(x, z)
        one = model.log_joint(x, {name: t[1] for name, t in z.items()})
    assert lp.shape == (3, 2)
    torch.testing.assert_close(lp[1], one)


LATENT = {
    "vae",
    "mfcvae",
    "hvae",
    "vdvae",
    "dctvae",
    "seatbelt",
    "hhvaem",
    "gmdgm",
    "ssvae",
    "ugvae",
    "tdvae",
    "tdiwae",
    "bijecta",
    "rrvq",
    "autoencoder-kl",
    "pythae-vae",
}


@pytest.mark.parametrize("family", sorted(LATENT))
def test_a_bound_with_no_importance_samples_is_refused(family):
    model = small(family)
    x = torch.rand(2, *SMALL[family]["input_shape"])
    with pytest.raises(AtlasError, match="k must be a positive number of importance samples, got 0"):
        model.elbo(x, k=0)


# -- abilities ------------------------------------------------------------------------------
BUILT_FROM_CONFIG = LATENT | {"icl", "ddpm"}
ABILITIES = {
    LatentModel: LATENT,
    ImportanceWeighted: LATENT,
    NoiseSpace: {"hvae", "vdvae", "seatbelt", "hhvaem", "tdvae", "tdiwae"},
    MaskedLikelihood: {"vae", "seatbelt", "hhvaem", "autoencoder-kl", "pythae-vae"},
    ConditionalSampler: {"mfcvae", "gmdgm", "ssvae", "ugvae"},
    ClusteredPrior: {"mfcvae"},
    WithLikelihood: {
        "vae",
        "mfcvae",
        "hvae",
        "vdvae",
        "dctvae",
        "seatbelt",
        "gmdgm",
        "ssvae",
        "ugvae",
        "tdvae",
        "tdiwae",
        "rrvq",
        "autoencoder-kl",
        "pythae-vae",
    },
    EmbeddedCodes: {"rrvq"},
    Configured: BUILT_FROM_CONFIG,
    Trainable: BUILT_FROM_CONFIG,
    LabelledTraining: {"gmdgm", "ssvae"},
    GroupedBatch: {"ugvae"},
    DataInitialised: {"mfcvae", "dctvae", "hhvaem", "icl", "gmdgm", "ssvae", "bijecta"},
    StepScheduled: {"mfcvae", "hhvaem", "gmdgm", "ssvae", "ddpm", "tdvae", "tdiwae"},
    EvaluationMetrics: {"mfcvae", "icl", "gmdgm", "ssvae", "ddpm", "bijecta"},
    TabularImputer: {"hhvaem"},
    DiffusionModel: {"ddpm"},
}


@pytest.mark.parametrize("ability", list(ABILITIES), ids=lambda a: a.__name__)
def test_isinstance_tells_which_families_have_an_ability(ability):
    have = {family for family in BUILT_IN if isinstance(small(family), ability)}
    assert have == ABILITIES[ability]


def test_the_masked_likelihood_declaration_matches_the_log_joint_signature():
    """The declaration is what isinstance reads; it must say what log_joint really takes."""
    for family in BUILT_IN:
        model = small(family)
        if isinstance(model, LatentModel):
            takes_mask = "mask" in inspect.signature(model.log_joint).parameters
            assert isinstance(model, MaskedLikelihood) == takes_mask, family


def test_configs_name_the_fields_the_training_data_decides():
    data = load_dataset("mixed", split="train", seed=0, n=50)
    have = {family for family, (config_cls, _) in BUILT_IN.items() if issubclass(config_cls, FieldsFromData)}
    assert have == {"vae", "mfcvae", "hvae", "dctvae", "seatbelt", "hhvaem", "bijecta", "rrvq", "pythae-vae"}
    for family in ("vae", "mfcvae", "hvae", "dctvae", "seatbelt"):
        assert FAMILIES[family][0].fields_from_data(data) == {"dataset_size": len(data)}
    columns = FAMILIES["hhvaem"][0].fields_from_data(data)["columns"]
    assert [c[0] for c in columns] == [c.name for c in data.schema]


def test_sample_conditions_of_a_model_that_takes_none_is_empty():
    assert sample_conditions(small("vae")) == {}
    assert sample_conditions(small("mfcvae")) == {"cluster_facet0": list(range(4)), "cluster_facet1": list(range(5))}
