"""TD-VAE and TD-IWAE (engine/models/tdvae.py) against closed forms, quadrature and each other."""

from __future__ import annotations

import math

import pytest
import torch

from engine.data import load_dataset
from engine.errors import AtlasError
from engine.models import build_model, config_from_dict
from engine.models.posteriors import Laplace
from engine.randomness import random_stream
from engine.training import RunSpec

TINY = {"input_shape": [6], "z1_dim": 5, "z2_dim": 2, "hidden": [16], "head_hidden": [8]}


def tiny(family: str = "tdvae", **changes) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(family, {**TINY, **changes}).double()


def test_laplace_kl_is_the_closed_form_and_the_monte_carlo_estimate():
    q = Laplace(torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64), torch.tensor([0.5, 1.2, 0.2], dtype=torch.float64))
    p = Laplace(
        torch.tensor([-0.4, -1.0, 0.0], dtype=torch.float64), torch.tensor([1.5, 0.7, 0.9], dtype=torch.float64)
    )
    b1, b2 = q.base_dist.scale, p.base_dist.scale
    d = (q.base_dist.loc - p.base_dist.loc).abs()
    closed = (torch.log(b2 / b1) + d / b2 + (b1 / b2) * torch.exp(-d / b1) - 1).sum()  # spec §2.4
    torch.testing.assert_close(q.kl_to(p), closed)
    with random_stream(0):
        z = q.rsample(400_000)
    mc = (q.log_prob(z) - p.log_prob(z)).mean()
    assert abs(mc.item() - closed.item()) < 0.01


def test_laplace_draws_follow_the_stream_and_the_distribution():
    q = Laplace(torch.tensor([1.0]), torch.tensor([2.0]))
    with random_stream(3):
        a = q.rsample(200_000)
    with random_stream(3):
        b = q.rsample(200_000)
    assert torch.equal(a, b)
    assert abs(a.mean().item() - 1.0) < 0.02 and abs(a.std().item() - 2.0 * math.sqrt(2)) < 0.03
    assert abs((a - 1).abs().mean().item() - 2.0) < 0.02  # E|z - loc| = scale


def test_elbo_terms_add_up_and_the_log_weights_are_the_log_joint_minus_log_q():
    model = tiny()
    x = torch.randn(4, 6, dtype=torch.float64)
    with random_stream(1):
        result = model.elbo(x)
    torch.testing.assert_close(result.total, result.recon - result.kl["z1"] - result.kl["z2"])
    q = model.encode(x)
    z = {"z1": q["z1"].mean, "z2": q["z2"].mean}
    manual = model.likelihood.log_prob(x, model.decode(z)) + model.prior_z1(z["z2"]).log_prob(z["z1"])
    manual = manual - 0.5 * (z["z2"] ** 2 + math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(model.log_joint(x, z), manual)


def test_tdiwae_with_one_sample_is_the_tdvae_objective_in_expectation():
    """k = 1: the Monte Carlo KLs of eq. 4.2 average to the analytic KLs, with beta inside too."""
    vae, iwae = tiny("tdvae", beta_steps=100), tiny("tdiwae", k=1, beta_steps=100)
    iwae.load_state_dict(vae.state_dict())
    for m in (vae, iwae):
        m.set_step(50)
    assert vae.beta == pytest.approx(0.55)
    x = torch.randn(3, 6, dtype=torch.float64).repeat(20_000, 1)
    with random_stream(2):
        loss_vae, _ = vae.training_loss(x)
        loss_iwae, _ = iwae.training_loss(x)
    assert abs(loss_vae.item() - loss_iwae.item()) < 0.02 * abs(loss_vae.item())


GRID_Z1 = torch.linspace(-25, 25, 8001, dtype=torch.float64)
GRID_Z2 = torch.linspace(-7, 7, 561, dtype=torch.float64)


def joint_on_grid(model, x: torch.Tensor) -> torch.Tensor:
    """log p(x, z1, z2) of a model with z1_dim = z2_dim = 1 on the grid, (z1, z2, batch)."""
    with torch.no_grad():
        return model.log_joint(x, {"z1": GRID_Z1[:, None, None, None], "z2": GRID_Z2[None, :, None, None]})


def exact_log_px(model, x: torch.Tensor) -> torch.Tensor:
    """log p(x) by quadrature on the grid (the integrand is negligible outside it)."""
    log_joint = joint_on_grid(model, x)
    top = log_joint.amax((0, 1))
    inner = torch.trapezoid((log_joint - top).exp(), GRID_Z1, dim=0)
    return top + torch.trapezoid(inner, GRID_Z2, dim=0).log()


def test_the_bounds_approach_log_px_from_below():
    model = tiny(input_shape=[3], z1_dim=1, z2_dim=1)
    x = torch.tensor([[0.3, -0.5, 1.0], [-1.2, 0.4, 0.1]], dtype=torch.float64)
    log_px = exact_log_px(model, x)
    with random_stream(4):
        elbo = model.elbo(x.repeat(2000, 1)).total.reshape(2000, 2).mean(0)
        iwae = model.elbo(x, k=20_000).total
    assert (elbo < log_px).all()
    assert (iwae < log_px + 0.01).all()
    assert (log_px - iwae < 0.25 * (log_px - elbo)).all()


def test_sir_draws_move_towards_the_exact_posterior_mean():
    model = tiny(input_shape=[3], z1_dim=1, z2_dim=1, family="tdiwae", k=2)
    x = torch.tensor([[2.0, -1.5, 1.0]], dtype=torch.float64)
    log_joint = joint_on_grid(model, x)[..., 0]
    w = torch.trapezoid((log_joint - log_joint.max()).exp(), GRID_Z1, dim=0)  # unnormalised p(z2 | x)
    exact = (torch.trapezoid(w * GRID_Z2, GRID_Z2) / torch.trapezoid(w, GRID_Z2)).item()
    errors = []
    for proposals in (10, 200, 3000):
        with random_stream(5):
            errors.append(abs(model.posterior_samples(x, 1000, proposals=proposals)["z2"].mean().item() - exact))
    proposal_error = abs(model.encode(x)["z2"].mean.item() - exact)
    assert proposal_error > 0.9  # the untrained q(z2 | x) is far off
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.06


def test_posterior_samples_have_the_shapes_of_the_groups():
    for family, extra in (("tdvae", {}), ("tdiwae", {"k": 4})):
        model = tiny(family, **extra)
        with random_stream(0):
            draws = model.posterior_samples(torch.randn(3, 6, dtype=torch.float64), 7, proposals=5)
        assert draws["z1"].shape == (7, 3, 5) and draws["z2"].shape == (7, 3, 2)


def test_projective_fields_are_the_decoder_columns():
    model = tiny()
    z1 = torch.randn(5, dtype=torch.float64)
    z2 = torch.zeros(2, dtype=torch.float64)
    c, j = 1.5, 3
    shift = torch.zeros(5, dtype=torch.float64)
    shift[j] = c
    diff = model.decode({"z1": z1 + shift, "z2": z2}) - model.decode({"z1": z1 - shift, "z2": z2})
    torch.testing.assert_close(diff, 2 * c * model.decoder.weight[:, j].detach())


def test_samples_repeat_with_a_generator_and_shrink_with_temperature():
    model = tiny()
    a = model.sample(5, generator=torch.Generator().manual_seed(7))
    b = model.sample(5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.shape == (5, 6)
    cold = model.sample(2000, temperature=0.0, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(cold, cold[0].expand_as(cold))


def test_beta_schedule_and_config_checks():
    model = tiny(beta_steps=10, beta_start=0.2)
    assert model.beta == pytest.approx(0.2)
    model.set_step(5)
    assert model.beta == pytest.approx(0.6)
    model.set_step(50)
    assert model.beta == 1.0
    with pytest.raises(AtlasError, match="family 'tdiwae'"):
        build_model("tdvae", {**TINY, "k": 4})
    with pytest.raises(AtlasError, match="beta_start"):
        build_model("tdvae", {**TINY, "beta_start": 1.5})
    with pytest.raises(AtlasError, match="k must be"):
        build_model("tdiwae", {**TINY, "k": 0})
    config = config_from_dict("tdiwae", {**TINY, "k": 10})
    again = config_from_dict("tdiwae", config.to_dict())
    assert again.family == "tdiwae" and again.k == 10


@pytest.mark.parametrize("family,extra", [("tdvae", {}), ("tdiwae", {"k": 4})])
def test_training_on_patches_lowers_the_loss(family, extra):
    data = load_dataset("patches", split="train", seed=0, size=8, n=2000)
    torch.manual_seed(0)
    model = build_model(
        family, {"input_shape": [1, 8, 8], "z1_dim": 48, "z2_dim": 4, "hidden": [64], "head_hidden": [32], **extra}
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    x_eval = data.batch(torch.arange(500))
    with torch.no_grad(), random_stream(0):
        before = -model.elbo(x_eval).total.mean().item()
    for _ in range(300):
        x = data.batch(torch.randint(0, len(data), (100,)))
        loss, _ = model.training_loss(x)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad(), random_stream(0):
        after = -model.elbo(x_eval).total.mean().item()
    assert after < before - 10


def test_the_noise_maps_are_inverse_and_push_a_normal_to_a_laplace():
    from scipy import stats

    from engine.models.tdvae import laplace_to_normal, normal_to_laplace

    e = torch.linspace(-8, 8, 401, dtype=torch.float64)
    torch.testing.assert_close(laplace_to_normal(normal_to_laplace(e)), e)
    draws = normal_to_laplace(torch.randn(100_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    assert stats.kstest(draws.numpy(), stats.laplace.cdf).pvalue > 0.01


def test_hmc_noise_space_changes_variables_with_the_jacobian():
    """log_joint_noise(x, eps) = log_joint(x, z(eps)) + log |det dz / d eps|, by autograd."""
    from engine.models.base import NoiseSpace

    model = tiny()
    assert isinstance(model, NoiseSpace)
    x = torch.randn(1, 6, dtype=torch.float64)
    eps = torch.randn(7, dtype=torch.float64)

    def z_of(flat):
        z = model.latents_from_noise({"z1": flat[:5], "z2": flat[5:]})
        return torch.cat([z["z1"], z["z2"]])

    jacobian = torch.autograd.functional.jacobian(z_of, eps)
    z = z_of(eps)
    with torch.no_grad():
        noise = model.log_joint_noise(x, {"z1": eps[:5], "z2": eps[5:]})
        joint = model.log_joint(x, {"z1": z[:5], "z2": z[5:]})
    torch.testing.assert_close(noise, joint + torch.linalg.slogdet(jacobian).logabsdet)
    start = model.encode_noise(x)
    back = model.latents_from_noise({name: q.mean for name, q in start.items()})
    torch.testing.assert_close(back["z1"], model.encode(x)["z1"].mean)  # the start is the posterior location


@pytest.mark.parametrize("preset", ["patches-tdvae", "patches-tdiwae-k10", "patches-tdvae-20", "patches-tdvae-thesis"])
def test_the_patch_presets_build_at_their_data_size_with_beta_over_half_of_training(preset):
    spec = RunSpec.from_preset(preset)
    size = spec.data["options"]["size"]
    model = build_model(spec.family, config_from_dict(spec.family, spec.model).to_dict())
    assert model.config.input_shape == (1, size, size)
    assert model.config.beta_steps == spec.train.steps // 2 and model.config.beta_start == pytest.approx(0.1)
    groups = {g.name: g.size for g in model.latent_groups}
    if size == 20:  # the thesis's sizes (seed003 §2.4)
        assert groups == {"z1": 450, "z2": 20} and model.config.hidden == (1000,)
    fields = model.decode({"z1": torch.zeros(2, groups["z1"]), "z2": torch.zeros(2, groups["z2"])})
    assert fields.shape == (2, 1, size, size)
