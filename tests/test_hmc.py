"""HMC: the integrator, the adaptation, moments on toy targets against their known values,
a VAE posterior against the grid, the HVAE noise space, and the HH-VAEM learned sampler."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import stats

from engine.diagnostics import mcmc
from engine.errors import AtlasError
from engine.hamiltonian import init_state, leapfrog
from engine.inference import targets
from engine.inference.adaptation import slow_windows, step_size_final, step_size_init, step_size_update
from engine.inference.chains import HMCSettings, run_toy
from engine.inference.hmc import sample_hmc
from engine.inference.posterior import latent_posterior
from engine.models.learned_hmc import LearnedHMC


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: a second thread only adds synchronisation (20x slower on
    a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gaussian_log_prob(scales):
    return lambda z: -0.5 * ((z / scales) ** 2).sum(-1)


# -- the integrator ----------------------------------------------------------------------
def test_leapfrog_is_reversible_and_nearly_energy_preserving():
    scales = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    lp = gaussian_log_prob(scales)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    r = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    inv_mass = torch.ones_like(z)
    step = torch.tensor(0.05, dtype=torch.float64)
    start = init_state(lp, z)
    end, r_end = leapfrog(lp, start, r, step, inv_mass, 40)
    back, r_back = leapfrog(lp, end, -r_end, step, inv_mass, 40)
    torch.testing.assert_close(back.z, z, atol=1e-10, rtol=0)
    torch.testing.assert_close(-r_back, r, atol=1e-10, rtol=0)
    h0 = -start.log_prob + 0.5 * (r * r).sum(-1)

    def energy_error(step, n):
        out, r_out = leapfrog(lp, start, r, torch.tensor(step, dtype=torch.float64), inv_mass, n)
        return (-out.log_prob + 0.5 * (r_out * r_out).sum(-1) - h0).abs().max()

    assert energy_error(0.05, 40) < 2e-3 * h0.max()
    ratio = energy_error(0.05, 40) / energy_error(0.025, 80)  # same trajectory, half the step
    assert 3.0 < ratio < 5.0  # the energy error is O(step^2)

    # volume preservation: the Jacobian of (z, r) -> (z', r'), by central differences,
    # has determinant 1
    def flow(zr):
        s = init_state(lp, zr[:3].view(1, 1, 3))
        out, r_out = leapfrog(lp, s, zr[3:].view(1, 1, 3), torch.tensor(0.3, dtype=torch.float64), inv_mass[:1, :1], 7)
        return torch.cat([out.z.flatten(), r_out.flatten()])

    point, h = torch.cat([z[0, 0], r[0, 0]]), 1e-5
    jac = torch.stack(
        [(flow(point + h * e) - flow(point - h * e)) / (2 * h) for e in torch.eye(6, dtype=torch.float64)], 1
    )
    assert torch.linalg.det(jac).item() == pytest.approx(1.0, abs=1e-6)


def test_huge_step_size_is_flagged_divergent_and_rejected():
    lp = gaussian_log_prob(torch.tensor([0.1, 1.0], dtype=torch.float64))
    z0 = torch.randn(1, 8, 2, dtype=torch.float64)
    res = sample_hmc(
        lp, z0, num_warmup=0, num_samples=20, step_size=5.0, adapt_step_size=False, adapt_mass=False, jitter=0.0
    )
    assert res.divergent.all()
    assert (res.accept_prob == 0).all()
    torch.testing.assert_close(res.samples[-1], z0)  # every proposal rejected
    ok = sample_hmc(lp, z0, num_warmup=0, num_samples=20, step_size=0.02, adapt_step_size=False, adapt_mass=False)
    assert not ok.divergent.any()


def test_slow_windows_follow_stan():
    assert slow_windows(1000) == [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    assert slow_windows(100) == [(15, 90)]  # 15% / 75% / 10% when warm-up is short
    assert slow_windows(10) == []


def test_shapes_and_input_checks():
    lp = gaussian_log_prob(torch.ones(3))
    res = sample_hmc(lp, torch.zeros(2, 4, 3), num_warmup=30, num_samples=10, n_leapfrog=3)
    assert res.samples.shape == (10, 2, 4, 3)
    assert res.warmup_samples.shape == (30, 2, 4, 3)
    assert res.accept_prob.shape == res.step_size.shape == res.divergent.shape == (40, 2, 4)
    assert res.draws(1).shape == (4, 10, 3)
    with pytest.raises(AtlasError, match="batch, chains, dim"):
        sample_hmc(lp, torch.zeros(4, 3))
    with pytest.raises(AtlasError, match="target_accept"):
        sample_hmc(lp, torch.zeros(1, 2, 3), target_accept=1.5)
    with pytest.raises(AtlasError, match="one value per chain"):
        sample_hmc(lambda z: z.sum(), torch.zeros(1, 2, 3))


# -- adaptation ------------------------------------------------------------------------
@pytest.mark.parametrize("target", [0.65, 0.8])
def test_adaptation_reaches_target_acceptance(target):
    """Anisotropic 50-D Gaussian (scales 0.1 .. 10): the shared per-posterior adaptation
    reaches the target within 0.05 and the mass matrix learns the scales."""
    scales = torch.logspace(-1, 1, 50, dtype=torch.float64)
    z0 = torch.randn(2, 32, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * scales
    res = sample_hmc(
        gaussian_log_prob(scales),
        z0,
        num_warmup=400,
        num_samples=200,
        target_accept=target,
        adapt_per="posterior",
        seed=1,
    )
    accept = res.mean_accept.mean(1)  # (batch,)
    print(f"target {target}: mean acceptance after warm-up {accept.tolist()}")
    assert (accept - target).abs().max() < 0.05
    ratio = res.inv_mass.sqrt() / scales
    assert ((ratio > 0.7) & (ratio < 1.4)).all()


PAGE = HMCSettings()  # the HMC chains page's defaults on a toy: 8 chains, 300 + 300 draws, 10 leapfrog steps


@pytest.mark.parametrize("target", [0.6, 0.7, 0.8, 0.9])
def test_adaptation_reaches_target_acceptance_with_the_page_defaults(target):
    """In 2 to 10 dimensions, with a fixed number of leapfrog steps, the acceptance falls
    from ~0.9 to ~0.3 while the step grows by a factor 1.8 (the integrator's stability
    limit); dual averaging jumped across that cliff and its averaged step accepted
    0.71-0.94 for these targets. On the page's correlated Gaussian and on a 10-D Gaussian with variances
    1 .. 1000, the mean acceptance after warm-up is within 0.08 of the target."""
    toy = run_toy("correlated gaussian", replace(PAGE, target_accept=target)).result
    scales = torch.logspace(0, 1.5, 10, dtype=torch.float64)  # variances 1 .. 1000
    z0 = torch.randn(1, PAGE.chains, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ill = sample_hmc(
        gaussian_log_prob(scales),
        z0,
        num_warmup=PAGE.num_warmup,
        num_samples=PAGE.num_samples,
        n_leapfrog=PAGE.n_leapfrog,
        step_size=0.2,
        target_accept=target,
        adapt_per="posterior",
    )
    accept = [toy.mean_accept.mean().item(), ill.mean_accept.mean().item()]
    print(f"target {target}: mean acceptance after warm-up {accept[0]:.3f} (correlated), {accept[1]:.3f} (10-D)")
    assert abs(accept[0] - target) < 0.08 and abs(accept[1] - target) < 0.08


def test_step_size_settles_where_a_steep_acceptance_curve_crosses_the_target():
    """Acceptance a(eps) = sigmoid(-12 log(eps / 0.5)), a cliff as steep as HMC's on the
    toys, observed with the noise of 8 pooled chains: over 64 runs the final step is on
    average within 2% (0.06 in acceptance) of the root 0.5 exp(-logit(target) / 12), and
    unbiased to 1%."""
    g = torch.Generator().manual_seed(0)
    for target in (0.6, 0.9):
        s = step_size_init(torch.full((1, 64), 2.0, dtype=torch.float64))  # 64 independent runs, 4x too large
        for t in range(60):
            curve = torch.sigmoid(-12 * (s.log_step - math.log(0.5)))
            observed = (torch.rand(8, 1, 64, generator=g, dtype=torch.float64) < curve).double().mean(0)
            s = step_size_update(s, observed, target, average=t >= 30)
        root = 0.5 * math.exp(-math.log(target / (1 - target)) / 12)
        error = (step_size_final(s) / root).log()
        print(f"target {target}: log error of the final step, mean {error.mean():+.4f}, max {error.abs().max():.4f}")
        assert error.abs().mean() < 0.02 and error.mean().abs() < 0.01


def test_per_chain_adaptation_gives_each_chain_its_own_step():
    scales = torch.logspace(-1, 1, 10, dtype=torch.float64)
    z0 = torch.randn(1, 16, 10, dtype=torch.float64) * scales
    res = sample_hmc(gaussian_log_prob(scales), z0, num_warmup=300, num_samples=100, seed=2)
    assert res.final_step_size.unique().numel() == 16
    assert abs(res.mean_accept.mean() - 0.65) < 0.05


# -- moments on toy targets --------------------------------------------------------------
CASES = {
    "correlated gaussian": (targets.correlated_gaussian, dict(num_warmup=400, num_samples=800)),
    # at 0.65 with 10 leapfrog steps the banana's ESS halves (1,400 of 12,800 draws) and R-hat hovers at 1.01
    "banana": (lambda: targets.banana(b=0.1, sigma1=3.0), dict(num_warmup=400, num_samples=800, target_accept=0.8)),
    "wave": (targets.wave, dict(num_warmup=400, num_samples=1500, n_leapfrog=20)),
    "dual moon": (targets.dual_moon, dict(num_warmup=400, num_samples=800)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_moments_within_4_mcse_and_rhat_below_1_01(name):
    make, settings = CASES[name]
    target = make()
    z0 = torch.randn(1, 16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * target.var.sqrt()
    res = sample_hmc(target.log_prob, z0, seed=3, **settings)
    draws = res.draws(0)  # (chains, draws, 2)
    mean, var = target.mean.numpy(), target.var.numpy()
    if name == "dual moon":
        # two moons that chains rarely cross: test what does not depend on which moon a
        # chain sits in (z1^2, z2); E[z1^2] = Var z1 as the density is symmetric
        draws = np.stack([draws[..., 0] ** 2, draws[..., 1]], -1)
        mean, var = np.array([var[0], mean[1]]), None
    z_mean = (draws.mean((0, 1)) - mean) / mcmc.mcse_mean(draws)
    rhat = mcmc.rhat(draws)
    msg = f"{name}: mean error {z_mean.round(2)} MCSE, R-hat {rhat.round(4)}, ESS bulk {mcmc.ess_bulk(draws).round(0)}"
    if var is not None:
        sq = (draws - mean) ** 2
        z_var = (sq.mean((0, 1)) - var) / mcmc.mcse_mean(sq)
        msg += f", variance error {z_var.round(2)} MCSE"
        assert np.abs(z_var).max() < 4, msg
    print(msg)
    assert np.abs(z_mean).max() < 4, msg
    assert rhat.max() < 1.01, msg


def test_quadrature_moments_agree_with_closed_forms():
    """grid_moments, used for wave and dual moon, recovers the banana's closed form."""
    b = targets.banana(b=0.1, sigma1=3.0)
    mean, var = targets.grid_moments(b.log_prob, ((-20.0, 20.0), (-30.0, 10.0)), n=1601)
    torch.testing.assert_close(mean, b.mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(var, b.var, rtol=1e-4, atol=0)


def test_funnel_neck_produces_divergences():
    f = targets.funnel(dim=3)
    z0 = torch.randn(1, 16, 3, dtype=torch.float64)
    res = sample_hmc(f.log_prob, z0, num_warmup=200, num_samples=200, seed=0)
    assert res.divergent[200:].any()


# -- a VAE with a 2-D latent against its posterior on a grid ------------------------------
@pytest.fixture(scope="module")
def vae_2d():
    from sklearn.datasets import load_digits

    from engine.models.vae import VAE, VAEConfig

    torch.manual_seed(0)
    x = torch.tensor(load_digits().data / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    model = VAE(VAEConfig(input_shape=(1, 8, 8), latent_dim=2, hidden=(64,)))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _step in range(300):
        loss, _ = model.training_loss(x[torch.randint(0, len(x), (128,))])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.double().eval(), x[:2].double()


def test_vae_posterior_matches_the_grid(vae_2d):
    model, x = vae_2d
    post = latent_posterior(model, x)
    assert post.space == "z" and post.mean.shape == (2, 2)
    res = sample_hmc(post.log_prob, post.initial(16), num_warmup=300, num_samples=400, seed=4)
    for b in range(2):
        draws = res.draws(b)  # (16, 600, 2)
        m, s = post.mean[b], post.std[b]
        box = ((m[0] - 7 * s[0]).item(), (m[0] + 7 * s[0]).item()), ((m[1] - 7 * s[1]).item(), (m[1] + 7 * s[1]).item())
        xs, ys, logp = targets.density_grid(
            lambda z, b=b: model.log_joint(x[b : b + 1], z.reshape(-1, 1, 2)).view(z.shape[:-1]),
            box,
            n=400,
        )
        w = torch.softmax(logp.flatten(), 0).view_as(logp)
        assert w[[0, -1]].sum() + w[:, [0, -1]].sum() < 1e-6  # the box holds the mass
        # thin to about independent draws, then a KS test per marginal against the grid CDF
        thin = max(1, int(math.ceil(draws.shape[0] * draws.shape[1] / mcmc.ess_bulk(draws).min())))
        kept = draws[:, ::thin].reshape(-1, 2)
        for j, (grid, marginal) in enumerate(((xs, w.sum(0)), (ys, w.sum(1)))):
            h = (grid[1] - grid[0]).item()
            cdf_values = torch.cumsum(marginal, 0).numpy()
            cdf = lambda t: np.interp(t, grid.numpy() + h / 2, cdf_values)  # noqa: B023, E731
            p = stats.kstest(kept[:, j], cdf).pvalue
            print(
                f"example {b}, z{j + 1}: KS p = {p:.3f} on {len(kept)} thinned draws; R-hat {mcmc.rhat(draws)[j]:.4f}"
            )
            assert p > 0.01
        assert mcmc.rhat(draws).max() < 1.01


# -- the HVAE noise space ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_hvae():
    from engine.models.hvae import HVAE, HVAEConfig

    torch.manual_seed(0)
    config = HVAEConfig(
        input_shape=(1, 4, 4), encoder="4x1,4d2,2x1,2d2,1x1", decoder="1x1,2m1,2x1,4m2,4x1", width=8, zdim=1
    )
    model = HVAE(config).double().eval()
    x = (torch.rand(3, 1, 4, 4, dtype=torch.float64) > 0.5).double()
    return model, x


def test_hvae_noise_target_is_the_change_of_variables(tiny_hvae):
    """log p(x|z(eps)) + log N(eps) = log p(x, z(eps)) + log|det dz/deps|, with the
    Jacobian computed numerically (it is triangular with the prior std on the diagonal)."""
    model, x = tiny_hvae
    sizes = [g.size for g in model.latent_groups]
    names = [g.name for g in model.latent_groups]
    eps = torch.randn(sum(sizes), dtype=torch.float64)

    def split(flat):
        return {n: t.view(1, -1) for n, t in zip(names, flat.split(sizes))}

    def to_z(flat):
        return torch.cat([model.latents_from_noise(split(flat))[n].flatten() for n in names])

    jac = torch.autograd.functional.jacobian(to_z, eps)
    logdet = torch.linalg.slogdet(jac).logabsdet
    lhs = model.log_joint_noise(x[:1], split(eps))
    rhs = model.log_joint(x[:1], split(to_z(eps))) + logdet
    torch.testing.assert_close(lhs, rhs, atol=1e-8, rtol=0)
    assert torch.allclose(torch.triu(jac, 1), torch.zeros_like(jac))  # upper layers do not depend on lower noise


def test_hvae_encoder_in_noise_space_maps_back_to_its_means(tiny_hvae):
    model, x = tiny_hvae
    q_eps = model.encode_noise(x)
    z = model.latents_from_noise({n: q.mean for n, q in q_eps.items()})
    for name, q in model.encode(x).items():
        torch.testing.assert_close(z[name], q.mean, atol=1e-10, rtol=0)


def test_hvae_latent_posterior_runs_in_noise_space(tiny_hvae):
    model, x = tiny_hvae
    post = latent_posterior(model, x)
    assert post.space == "noise"
    z0 = post.initial(4)  # (3, 4, 41)
    flat = {n: t for n, t in zip(post.names, z0.transpose(0, 1).split(post.sizes, -1))}
    torch.testing.assert_close(post.log_prob(z0), model.log_joint_noise(x, flat).T)
    res = sample_hmc(post.log_prob, z0, num_warmup=60, num_samples=10, n_leapfrog=3)
    assert torch.isfinite(res.samples).all() and res.mean_accept.mean() > 0.3
    latents = post.to_latents(res.samples)  # {name: (draws, chains, batch, size)}
    assert latents["layer04"].shape == (10, 4, 3, 16)
    assert model.decode(latents).shape == (10, 4, 3, 1, 4, 4)


# -- HH-VAEM: learned step sizes and inflation ------------------------------------------
def test_learned_step_sizes_increase_the_hmc_objective():
    target = targets.wave()
    sampler = LearnedHMC(dim=2, T=5, n_leapfrog=5).double()
    mean = torch.tensor([[0.0, 1.5]], dtype=torch.float64)  # off the wave's ridge
    std = torch.tensor([[0.2, 0.2]], dtype=torch.float64)

    def objective():
        with torch.no_grad():
            chain = sampler(target.log_prob, mean, std, chains=512, generator=torch.Generator().manual_seed(9))
        return LearnedHMC.objective(target.log_prob, chain).item()

    before = objective()
    opt = torch.optim.Adam([sampler.log_step], lr=0.05)
    for _step in range(60):
        chain = sampler(target.log_prob, mean, std, chains=32)
        loss = -LearnedHMC.objective(target.log_prob, chain)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = objective()
    print(f"HMC objective (eq. 5.9) {before:.3f} -> {after:.3f}; mean step {sampler.step_sizes.mean().item():.3f}")
    assert after > before + 0.2
    assert sampler.step_sizes.shape == (5, 2)


def test_sksd_widens_a_too_tight_start():
    """Start at N(0, 0.1^2) on a N(0, I) target with a short chain: minimising SKSD (eq.
    5.10) inflates the start towards the target's spread, per layer."""
    lp = gaussian_log_prob(torch.ones(3, dtype=torch.float64))
    sampler = LearnedHMC(dim=3, T=2, n_leapfrog=2, layer_sizes=[1, 2]).double()
    mean = torch.zeros(2, 3, dtype=torch.float64)
    std = torch.full((2, 3), 0.1, dtype=torch.float64)
    opt = torch.optim.Adam([sampler.log_inflation], lr=0.1)
    for _step in range(60):
        loss = LearnedHMC.sksd_loss(lp, sampler(lp, mean, std, chains=30))
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"inflation per layer after SKSD training: {sampler.log_inflation.exp().tolist()}")
    assert (sampler.log_inflation.exp() > 3.0).all()


def test_learned_hmc_checks_its_layers():
    with pytest.raises(AtlasError, match="add up"):
        LearnedHMC(dim=3, layer_sizes=[1, 1])
