"""The HMC page's engine (engine/inference/chains.py): the 2-D density view against direct
evaluations, masked posteriors for inpainting, the convergence table, and HMC beating the
encoder at filling in a hidden half of a digit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import demo_run_dir

from engine.errors import AtlasError
from engine.inference.chains import (
    HMCSettings,
    chain_summary,
    decoded_along_chain,
    density_view,
    hidden_region,
    inpaint,
    run_posterior,
    run_toy,
)
from engine.inference.posterior import latent_posterior
from engine.inference.targets import make_target
from engine.loading import load_run_model
from engine.store import Run

QUICK = HMCSettings(chains=4, num_warmup=100, num_samples=100, n_leapfrog=8)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batched tensors: a second thread only adds overhead
    yield
    torch.set_num_threads(threads)


def demo(preset: str):
    loaded = load_run_model(Run.from_dir(demo_run_dir(preset), readonly=True))
    return loaded.model, loaded.spec.load_data("test")


@pytest.fixture(scope="module")
def vae2d():
    return demo("digits-vae-2d")


def test_density_view_of_a_2d_posterior_is_log_joint_on_the_grid(vae2d):
    model, data = vae2d
    x = data.batch(torch.tensor([3]))
    run = run_posterior(model, x, QUICK)
    xs, ys, logp = density_view(run, n=25)
    i, j = 7, 18  # row i is y = ys[i], column j is x = xs[j]
    with torch.no_grad():
        direct = model.log_joint(x, torch.tensor([[xs[j], ys[i]]], dtype=torch.float32))
        peak = model.log_joint(
            x, torch.tensor(np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2), dtype=torch.float32).unsqueeze(1)
        ).max()
    assert logp.shape == (25, 25) and logp.max() == pytest.approx(0.0)
    assert logp[i, j] == pytest.approx(float(direct - peak), abs=1e-3)


def test_density_view_in_more_dimensions_holds_the_others_at_the_encoder_mean():
    model, data = demo("digits-vae")
    x = data.batch(torch.tensor([0]))
    run = run_posterior(model, x, QUICK, pair=(2, 5))
    xs, ys, logp = density_view(run, n=9)
    z = torch.tensor(run.encoder_mean, dtype=torch.float32).clone()
    z[2], z[5] = float(xs[4]), float(ys[1])
    with torch.no_grad():
        direct = model.log_joint(x, z.view(1, -1))
        z[2], z[5] = float(xs[0]), float(ys[0])
        corner = model.log_joint(x, z.view(1, -1))
    assert logp[1, 4] - logp[0, 0] == pytest.approx(float(direct - corner), abs=1e-3)


def test_a_mask_leaves_the_hidden_pixels_out_of_the_posterior(vae2d):
    model, data = vae2d
    x = data.batch(torch.tensor([5]))
    mask = hidden_region(tuple(x.shape[1:]), "bottom half")
    assert mask.sum() == mask.numel() / 2 and mask[..., :4, :].all() and not mask[..., 4:, :].any()
    changed = x.clone()
    changed[..., 4:, :] = 1.0 - changed[..., 4:, :]
    z = torch.randn(6, 1, 2)  # (chains, batch, dim) as the sampler asks
    with torch.no_grad():
        same = latent_posterior(model, x, mask).log_prob(z.transpose(0, 1))
        other = latent_posterior(model, changed, mask).log_prob(z.transpose(0, 1))
        unmasked = latent_posterior(model, changed).log_prob(z.transpose(0, 1))
    torch.testing.assert_close(same, other)
    assert not torch.allclose(unmasked, other)


def test_hmc_inpaints_a_hidden_half_better_than_the_encoder(vae2d):
    """seed002 §5.2's point on a digit with its bottom half hidden: the encoder never saw
    half-blank inputs, the posterior given the visible half does better (5 test inputs)."""
    model, data = vae2d
    enc, hmc = [], []
    for i in range(5):
        x = data.batch(torch.tensor([i]))
        mask = hidden_region(tuple(x.shape[1:]), "bottom half")
        run = run_posterior(model, x, HMCSettings(chains=4, num_warmup=150, num_samples=150, seed=i), mask=mask)
        result = inpaint(model, x, mask, run)
        assert torch.equal(result.hmc * mask, x * mask)  # the visible part is kept as it is
        enc.append(result.encoder_error)
        hmc.append(result.hmc_error)
    assert np.mean(hmc) < 0.8 * np.mean(enc), (enc, hmc)


def test_summary_flags_chains_that_disagree():
    good = run_toy("correlated gaussian", HMCSettings(chains=8, num_warmup=200, num_samples=400))
    rows = chain_summary(good)
    assert all(r["R-hat"] < 1.05 for r in rows)
    assert all(abs(r["error (MCSE)"]) < 5 for r in rows)  # the sample mean against the exact mean
    # chains that each sampled a different shifted copy: R-hat must catch it
    good.result.samples[:, 0] += torch.arange(8, dtype=good.result.samples.dtype).view(1, 8, 1) * 3.0
    bad = chain_summary(good)
    assert all(r["R-hat"] > 1.5 and not r["ok"] for r in bad)


def test_toy_view_is_the_target_density_and_decoding_follows_a_chain(vae2d):
    run = run_toy("banana", QUICK)
    xs, ys, logp = density_view(run, make_target("banana").log_prob, n=31)
    assert np.unravel_index(logp.argmax(), logp.shape)[1] in (14, 15, 16)  # the banana is symmetric in z1
    assert run.path.shape == (4, QUICK.num_warmup + QUICK.num_samples + 1, 2)
    model, data = vae2d
    chain = run_posterior(model, data.batch(torch.tensor([0])), QUICK)
    images = decoded_along_chain(model, chain, count=6)
    assert images.shape == (6, *data.shape) and 0 <= images.min() and images.max() <= 1


def test_bad_requests_say_what_to_do(vae2d):
    model, data = vae2d
    with pytest.raises(AtlasError, match="one input at a time"):
        run_posterior(model, data.batch(torch.arange(2)), QUICK)
    with pytest.raises(AtlasError, match="two different dimensions"):
        run_posterior(model, data.batch(torch.tensor([0])), QUICK, pair=(0, 0))
    with pytest.raises(AtlasError, match="chains"):
        run_toy("banana", HMCSettings(chains=0))
    with pytest.raises(AtlasError, match="unknown region"):
        hidden_region((1, 8, 8), "middle")
