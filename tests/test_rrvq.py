"""The RRVQ-VAE family (seed001 ch. 3): responsibilities, KLs, bounds and the code-level
latents, checked against torch.distributions and exact enumeration of a tiny model."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.distributions as D
import torch.nn.functional as F

from engine.errors import AtlasError
from engine.inference.importance import proposal_log_weights
from engine.models import build_model
from engine.models.base import EmbeddedCodes, continuous_latents
from engine.models.posteriors import Categorical
from engine.models.rrvq import RRVQConfig, code_log_density, layer_kl
from engine.numerics import logmeanexp
from engine.randomness import random_stream

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**options):
    """A two-layer model on 4x4 images: 2x2 codes under one top code, K = 3: 3^5 = 243 configurations."""
    torch.manual_seed(0)
    values = {"input_shape": [1, 4, 4], "layers": 2, "codes": 3, "code_dim": 2, "width": 8, "likelihood": "bernoulli"}
    model = build_model("rrvq", {**values, **options})
    with torch.no_grad():  # spread the variances so that learned and unit variances differ
        for layer in model.layers:
            if layer.codes and layer.log_var.requires_grad:
                layer.log_var.copy_(torch.tensor([-0.5, 0.0, 0.7]))
    return model.eval()


def test_code_log_density_is_the_gaussian_density_of_each_code():
    torch.manual_seed(1)
    e, means, log_var = torch.randn(5, 7, 4), torch.randn(6, 4), torch.randn(6)
    ours = code_log_density(e, means, log_var)  # (5, 7, 6)
    sd = torch.exp(0.5 * log_var)[:, None].expand(6, 4)
    reference = D.Independent(D.Normal(means, sd), 1).log_prob(e.unsqueeze(-2))
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-4)


def test_responsibilities_are_the_mixture_posterior_and_unit_variances_give_rvq():
    """Eq. 3.9: the softmax of the codes' log-densities is the posterior over components of an
    equal-weight Gaussian mixture; with E_Sigma = 1 it is softmax(-||e - E_k||^2 / 2)."""
    torch.manual_seed(2)
    e, means, log_var = torch.randn(10, 3), torch.randn(4, 3), torch.randn(4)
    mixture = D.Independent(D.Normal(means, torch.exp(0.5 * log_var)[:, None].expand(4, 3)), 1)
    joint = mixture.log_prob(e.unsqueeze(-2)) + math.log(1 / 4)
    posterior = joint - torch.logsumexp(joint, -1, keepdim=True)
    torch.testing.assert_close(F.log_softmax(code_log_density(e, means, log_var), -1), posterior)
    rvq = F.log_softmax(-0.5 * torch.cdist(e, means).pow(2), -1)
    torch.testing.assert_close(F.log_softmax(code_log_density(e, means, torch.zeros(4)), -1), rvq, atol=1e-5, rtol=0)


def test_categorical_layer_kl_is_torchs_kl_summed_over_positions():
    q, p = torch.randn(3, 5, 4), torch.randn(3, 5, 4)
    reference = D.kl_divergence(D.Categorical(logits=q), D.Categorical(logits=p)).sum(1)
    torch.testing.assert_close(layer_kl(Categorical(q), Categorical(p)), reference)


def test_gumbel_max_draws_follow_the_tempered_softmax():
    logits = torch.tensor([0.0, 1.0, -1.0, 2.0])
    with random_stream(0):
        draws = Categorical(logits).hard_sample(40000, temperature=2.0)
    assert torch.all(draws.sum(-1) == 1)
    expected = torch.softmax(logits / 2.0, -1)
    torch.testing.assert_close(draws.mean(0), expected, atol=0.01, rtol=0)


def all_configurations(model) -> dict[str, torch.Tensor]:
    """Every joint configuration of the tiny model's codes as one-hot latents, (243, M, K) per layer."""
    sizes = [g.shape[0] for g in model.latent_groups]
    k = model.config.codes
    rows = torch.tensor(list(itertools.product(range(k), repeat=sum(sizes))))
    parts = rows.split(sizes, dim=1)
    return {g.name: F.one_hot(part, k).float() for g, part in zip(model.latent_groups, parts)}


@pytest.mark.parametrize("options", [{}, {"prior_form": "direct"}, {"code_variance": "unit"}])
def test_bounds_against_the_exact_marginal_likelihood(options):
    """log p(x) by enumerating all 243 code configurations through log_joint; the hard-code ELBO
    averaged over draws is below it and the importance-weighted bound with many draws meets it."""
    model = tiny(**options)
    torch.manual_seed(3)
    x = torch.rand(2, 1, 4, 4)
    z = all_configurations(model)
    with torch.no_grad():
        log_joint = model.log_joint(x, {n: t.unsqueeze(1).expand(-1, 2, -1, -1) for n, t in z.items()})  # (243, 2)
        log_px = torch.logsumexp(log_joint, 0)
        with random_stream(4):
            elbo = torch.stack([model.elbo(x).total for _ in range(400)]).mean(0)
            iwae = model.elbo(x, k=20000).total
    assert torch.all(elbo < iwae) and torch.all(iwae < log_px + 0.01)
    assert torch.all(iwae > log_px - 0.05)  # the bound's bias falls as 1 / k
    # the generic pages' proposal (each layer's posterior along the mode path, exact one-hot draws)
    with torch.no_grad(), random_stream(5):
        _, log_w = proposal_log_weights(model, x, 20000)
    assert torch.all((logmeanexp(log_w, 0) - log_px).abs() < 0.1)


def test_the_elbo_matches_its_value_by_enumeration():
    """E_q[log p(x|z)] - sum_l E_q[KL_l] with hard codes: the Monte Carlo mean of elbo() against
    sum over configurations of q(z) (log p(x, z) - log q(z))."""
    model = tiny()
    x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    z = all_configurations(model)
    with torch.no_grad():
        ups = model.bottom_up(x.expand(243, 1, 4, 4))
        _, layers = model.top_down(ups, 243, z=z)
        log_q = sum((layer["z"] * F.log_softmax(layer["q"].logits, -1)).flatten(1).sum(1) for layer in layers)
        exact = (log_q.exp() * (model.log_joint(x, {n: t.unsqueeze(1) for n, t in z.items()})[:, 0] - log_q)).sum()
        with random_stream(6):
            draws = torch.cat([model.elbo(x.expand(500, 1, 4, 4)).total for _ in range(8)])
    assert abs(draws.mean() - exact) < 4 * draws.std() / math.sqrt(len(draws))


def test_layerwise_latents_share_the_upper_layers_per_row_and_take_modes_below():
    model = tiny(layers=3, input_shape=[1, 8, 8])
    with random_stream(7):
        z = model.layerwise_latents("z2", rows=3, cols=5)
    top, middle, bottom = (z[n].view(3, 5, *z[n].shape[1:]) for n in ("z3", "z2", "z1"))
    assert torch.equal(top, top[:, :1].expand_as(top))  # one draw per row
    assert not torch.equal(middle, middle[:, :1].expand_as(middle))  # redrawn per column
    with torch.no_grad():  # the bottom layer is the prior's mode given the layers above
        _, layers = model.top_down(None, 15, z={"z3": z["z3"], "z2": z["z2"]}, draw="mode")
    assert torch.equal(z["z1"], layers[2]["z"])
    assert torch.all(bottom.sum(-1) == 1)
    images = model.layerwise_samples("z2", 3, 5, generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, 5, 1, 8, 8)


def test_codes_round_trip_through_indices_and_the_latent_map_uses_expected_embeddings():
    model = tiny()
    x = torch.rand(4, 1, 4, 4)
    indices = model.code_indices(x)
    assert indices["z1"].shape == (4, 2, 2) and indices["z2"].shape == (4, 1, 1)
    q = model.encode(x)
    assert torch.equal(indices["z1"].flatten(1), q["z1"].probs.argmax(-1))
    latents = model.one_hot(indices)
    assert latents["z1"].shape == (4, 4, 3)
    assert isinstance(model, EmbeddedCodes) and not continuous_latents(model)
    emb = model.code_embeddings(x)["z1"].view(4, 4, 2)
    torch.testing.assert_close(emb, q["z1"].probs @ model.layers[1].means)
    assert model.code_norms("z1").shape == (3,)


def test_unit_variances_stay_one_and_direct_priors_have_their_own_logits():
    unit = tiny(code_variance="unit")
    x = torch.rand(8, 1, 4, 4)
    unit.train()
    loss, _ = unit.training_loss(x)
    loss.backward()
    assert all(layer.log_var.grad is None for layer in unit.layers)
    assert torch.all(unit.code_variances("z1") == 1)
    direct = tiny(prior_form="direct")
    assert direct.layers[0].pstrap.out_channels == 3 and tiny().layers[0].pstrap.out_channels == 2


def test_gaussian_latents_make_the_spatial_vae():
    model = tiny(latent="gaussian")
    assert model.config.model_name == "Spatial-VAE" and continuous_latents(model)
    x = torch.rand(3, 1, 4, 4)
    with torch.no_grad():
        _, layers = model.top_down(model.bottom_up(x), 3)
    q, p = layers[1]["q"], layers[1]["p"]
    reference = D.kl_divergence(D.Normal(q.mean, q.std), D.Normal(p.mean, p.std)).flatten(1).sum(1)
    torch.testing.assert_close(layer_kl(q, p), reference, rtol=1e-5, atol=1e-5)
    with pytest.raises(AtlasError, match="Gaussian latents"):
        model.code_indices(x)


def test_free_bits_hold_each_layers_kl_at_its_floor():
    """With every layer's KL below its floor (free_bits x positions nats) the loss is the floors
    minus the reconstruction, per data dimension; the metrics still report the true KLs."""
    model = tiny(free_bits=5.0).train()
    x = torch.rand(8, 1, 4, 4)
    loss, metrics = model.training_loss(x)
    assert metrics["kl/z1"] < 5.0 * 4 and metrics["kl/z2"] < 5.0 * 1
    torch.testing.assert_close(loss * 16, 5.0 * (4 + 1) - metrics["recon"])
    torch.testing.assert_close(metrics["elbo"], metrics["recon"] - metrics["kl/z1"] - metrics["kl/z2"])


def test_names_and_checks():
    assert RRVQConfig(layers=1, code_variance="unit").model_name == "rVQ-VAE"
    assert RRVQConfig(prior_form="direct", code_variance="unit").model_name.startswith("RRVQ ablation (σ = 1")
    assert RRVQConfig(input_shape=(1, 28, 28), layers=5).resolutions == [14, 7, 4, 2, 1]
    for bad, message in [
        ({"input_shape": [1, 15, 15]}, "even side"),
        ({"latent": "binary"}, "unknown latent"),
        ({"codes": 0}, "codes must be"),
        ({"temperature": 0.0}, "temperature"),
        ({"prior_form": "uniform"}, "unknown prior_form"),
    ]:
        with pytest.raises(AtlasError, match=message):
            build_model("rrvq", bad)


def test_every_preset_of_the_family_builds_with_the_settings_it_names():
    from engine.models import check_model_size
    from engine.training.presets import PRESETS

    presets = {name: p for name, p in PRESETS.items() if p["family"] == "rrvq"}
    assert {"digits-rrvq", "digits-rvq", "digits-spatial-vae", "fashion-rrvq", "swatches-mlp-rvq"} <= set(presets)
    names = set()
    for name, preset in presets.items():
        config = RRVQConfig(**preset["model"])
        assert check_model_size("rrvq", config) > 0
        names.add(config.model_name)
        if name.endswith("-l5"):  # App. B.5: K = 256, d_e = 128, 4 residual blocks, batch 64, lr 2e-3
            assert (config.codes, config.code_dim, config.blocks, config.input_shape) == (256, 128, 4, (3, 32, 32))
            assert preset["train"]["batch_size"] == 64 and preset["train"]["lr"] == 2e-3
        if name.startswith("swatches"):  # §3.5: L = 1, M = a quarter of the pixels, d_e = K = 16
            assert config.layers == 1 and config.resolutions == [8] and config.codes == config.code_dim == 16
    corners = {"RRVQ ablation (σ = 1, Direct-Cat)", "RRVQ ablation (σ = 1, Embedding-Cat)"}
    corners |= {"RRVQ ablation (σ learned, Direct-Cat)"}
    assert {"RRVQ-VAE", "rVQ-VAE", "Spatial-VAE", "MLP rVQ-VAE"} | corners <= names


def test_layer_statistics_of_codes_agree_with_the_bound_and_the_expected_embeddings():
    """Per-layer KLs from the layer diagnostics sum to the ELBO's KL term (both averages over hard
    posterior draws, within their Monte Carlo error); a position's activity is the variance of
    its expected code embedding, code_embeddings' values."""
    from engine.data.base import TensorRows
    from engine.diagnostics.hvae import layer_statistics

    model = tiny(layers=3, input_shape=[1, 8, 8])
    x = torch.rand(400, 1, 8, 8, generator=torch.Generator().manual_seed(8))
    stats = layer_statistics(model, TensorRows(x), n=400, batch_size=100)
    assert stats.names == ["z3", "z2", "z1"] and list(stats.units) == [1, 4, 16]
    with torch.no_grad(), random_stream(9):
        kl = torch.stack([-(r.total - r.recon) for r in (model.elbo(x) for _ in range(4))]).flatten()
    assert abs(stats.kl.sum() - kl.mean().item()) < 4 * kl.std().item() / math.sqrt(len(kl)) + 1e-3
    emb = model.code_embeddings(x)["z1"].view(400, 16, 2)
    torch.testing.assert_close(torch.from_numpy(stats.unit_variance[2]), emb.double().var(0, unbiased=False).sum(-1))
    for units, layer_kl_mean in zip(stats.unit_kl, stats.kl):
        assert units.sum() == pytest.approx(layer_kl_mean)
