"""HH-VAEM (engine.models.hhvaem) and its imputation / acquisition (engine.inference.imputation)."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from engine.data import load_dataset
from engine.errors import AtlasError
from engine.inference.imputation import acquire, histogram_mi, impute
from engine.inference.posterior import latent_posterior
from engine.loading import load_run_model
from engine.models import build_model
from engine.models.hhvaem import column_log_prob, routed_loss
from engine.store import Run
from engine.training import RunSpec

DEMOS = Path(__file__).resolve().parent.parent / "assets" / "runs"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """HMC over a few thousand chains of small MLPs: a second thread costs more than it
    gains on a shared 2-core machine (measured: about 5x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def demo(preset: str):
    dirs = sorted(DEMOS.glob(f"*-{preset}-*"))
    assert dirs, f"no {preset} demo under {DEMOS}"
    return load_run_model(Run.from_dir(dirs[-1], readonly=True))


def small_model(seed: int = 0):
    """An untrained model on the mixed table, its loc/scale from the data."""
    spec = RunSpec.from_dict(
        {
            "family": "hhvaem",
            "model": {"target": "real_0", "hidden": 16},
            "data": {"name": "mixed", "options": {"n": 200, "missing_rate": 0.3, "missing_as_nan": True}},
        }
    )
    data = spec.load_data("train")
    torch.manual_seed(seed)
    model = build_model("hhvaem", spec.model_config(data))
    model.initialize(data)
    return model.eval(), data


def test_column_likelihoods_match_scipy():
    x = torch.tensor([0.7, -1.2, 2.5])
    mu, logvar, loc, scale = torch.tensor([[0.3], [-0.5], [1.1]]), math.log(0.4), 0.2, 1.7
    sd = scale * math.sqrt(0.4)
    got = column_log_prob("real", x, mu, loc, scale, logvar)
    want = stats.norm(loc + scale * mu[:, 0].numpy(), sd).logpdf(x.numpy())
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)

    xp = torch.tensor([0.5, 2.0, 7.3])
    got = column_log_prob("positive", xp, mu, loc, scale, logvar)
    want = stats.lognorm(s=sd, scale=np.exp(loc + scale * mu[:, 0].numpy())).logpdf(xp.numpy())
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)

    xb, logits = torch.tensor([1.0, 0.0, 1.0]), torch.tensor([[0.4], [-2.0], [3.0]])
    got = column_log_prob("binary", xb, logits)
    want = stats.bernoulli(torch.sigmoid(logits[:, 0]).numpy()).logpmf(xb.numpy())
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)

    xc, logits = torch.tensor([2.0, 0.0]), torch.tensor([[0.1, -0.3, 1.2, 0.0], [2.0, 1.0, 0.0, -1.0]])
    got = column_log_prob("categorical", xc, logits)
    probs = torch.softmax(logits, -1).numpy()
    want = [stats.multinomial(1, p).logpmf(np.eye(4)[int(c)]) for p, c in zip(probs, xc.long())]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


def test_missing_entries_do_not_change_the_elbo_or_log_joint():
    model, data = small_model()
    x = data.meta["x_complete"][:32]
    mask = (torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) > 0.4).float()
    changed = torch.where(mask > 0, x, x + 3.0 + torch.rand(x.shape))  # other values where missing
    as_nan = x.masked_fill(mask == 0, math.nan)
    z = {"z1": torch.randn(5, 32, 8), "z2": torch.randn(5, 32, 4)}

    def elbo(rows, m=None):
        torch.manual_seed(0)
        return model.elbo(rows, mask=m).total

    for f in (
        lambda r, m=None: model.log_joint(r, z, mask=m),
        lambda r, m=None: model.log_joint_noise(r, z, mask=m),
        elbo,
        lambda r, m=None: model.encode_noise(r, mask=m)["z1"].mean,
    ):
        base = f(x, mask)
        assert torch.isfinite(base).all()
        assert torch.equal(base, f(changed, mask))
        assert torch.equal(base, f(as_nan))  # NaN marks missing just as the mask does
        observed_changed = x.clone()
        observed_changed[mask > 0] += 0.5  # but the observed values matter
        assert not torch.allclose(base, f(observed_changed, mask))


def test_hierarchical_reparameterisation_maps_noise_to_latents():
    model, data = small_model()
    x = data.x[:16]
    eps = {"z1": torch.randn(3, 16, 8), "z2": torch.randn(3, 16, 4)}
    z = model.latents_from_noise(eps)
    mean, logvar = model.prior_of_h1(eps["z2"])
    assert torch.equal(z["z2"], eps["z2"])  # h_2 = eps_2
    torch.testing.assert_close(z["z1"], mean + torch.exp(0.5 * logvar) * eps["z1"])  # seed002 eq. 5.5
    # densities: log p(x, eps) = log p(x, z(eps)) + log |dz/deps|, dz_1/deps_1 = f_sigma(h_2)
    torch.testing.assert_close(model.log_joint_noise(x, eps), model.log_joint(x, z) + 0.5 * logvar.sum(-1))
    # the generic HMC target runs in noise space and maps back through the same map
    post = latent_posterior(model, x)
    assert post.space == "noise" and post.names == ["z1", "z2"]
    start = post.initial(chains=2)  # (batch, chains, 12)
    latents = post.to_latents(start)
    flat = {"z1": start[..., :8].transpose(0, 1), "z2": start[..., 8:].transpose(0, 1)}
    torch.testing.assert_close(latents["z1"], model.latents_from_noise(flat)["z1"])
    torch.testing.assert_close(post.log_prob(start), model.log_joint_noise(x, flat).transpose(0, 1))


def test_routed_loss_gives_each_group_its_own_gradient():
    a, b = torch.nn.Parameter(torch.tensor(2.0)), torch.nn.Parameter(torch.tensor(3.0))
    shared = a * b
    loss = routed_loss(shared, [([a], shared**2), ([b], -shared)])
    assert float(loss.detach()) == 6.0
    loss.backward()
    assert float(a.grad) == pytest.approx(2 * 6 * 3) and float(b.grad) == pytest.approx(-2)


def test_both_training_stages_run_and_refuse_zero_filled_tables():
    model, data = small_model()
    model.train()
    x = data.x[:20]
    for step in (0, model.config.vi_steps):
        model.set_step(step)
        loss, metrics = model.training_loss(x)
        loss.backward()
        assert torch.isfinite(loss)
    assert "hmc_objective" in metrics and "sksd" in metrics
    assert model.hmc.log_inflation.grad is not None and model.hmc.log_step.grad is not None
    zero_filled = load_dataset("mixed", n=200, missing_rate=0.3)
    with pytest.raises(AtlasError, match="missing_as_nan"):
        model.initialize(zero_filled)
    with pytest.raises(AtlasError, match="kind"):
        build_model("hhvaem", {"input_shape": [2], "columns": [["a", "count", 0], ["b", "real", 0]]})


def test_histogram_mi():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, (4000, 2), generator=g)
    b = torch.stack([a[:, 0], torch.randint(0, 4, (4000,), generator=g)], 1)  # copy, independent
    mi = histogram_mi(a, 4, b, 4)
    assert mi[0] == pytest.approx(math.log(4), abs=0.02) and mi[1] < 0.01


@pytest.mark.parametrize("preset", ["mixed-hhvaem"])
def test_hmc_imputation_beats_the_encoder_on_held_out_entries(preset):
    """seed002 Table 5.1's direction: q^(T) gives the missing entries a higher test log-likelihood."""
    loaded = demo(preset)
    test = loaded.spec.load_data("test")
    rows = slice(0, 200)
    result = impute(loaded.model, test.x[rows], test.meta["x_complete"][rows], samples=40, seed=0)
    encoder, hmc = result.mean_loglik("encoder"), result.mean_loglik("hmc")
    assert hmc > encoder + 0.005, (encoder, hmc)  # measured: -0.824 vs -0.806
    assert not torch.isnan(result.hmc).any()
    observed = ~torch.isnan(result.x)
    assert torch.equal(result.hmc[observed], test.x[rows][observed])


def test_saia_beats_random_order_on_mixed():
    loaded = demo("mixed-hhvaem")
    test = loaded.spec.load_data("test")
    curves = acquire(loaded.model, test.meta["x_complete"][:40], samples=40, seed=0)
    n_feat = len(loaded.model.features)
    assert curves.order.shape == (40, n_feat)
    assert all(sorted(row) == sorted(loaded.model.features) for row in curves.order.tolist())
    assert curves.error[0] == pytest.approx(float(curves.random_error[0]), rel=0.2)  # nothing acquired yet
    saia, random = float(curves.error[1:4].mean()), float(curves.random_error[1:4].mean())
    assert saia < random, (
        f"SAIA's error after 1-3 acquired features {saia:.4f} is not below random order's {random:.4f}"
    )


def test_table_options_for_hhvaem():
    wine = load_dataset("wine", split="all", missing_rate=0.3, missing_as_nan=True, label_as_column=True)
    assert wine.x.shape == (178, 14) and wine.schema[-1].name == "class" and wine.schema[-1].kind == "categorical"
    assert torch.equal(torch.isnan(wine.x), wine.meta["missing_mask"])
    complete = wine.meta["x_complete"]
    assert torch.equal(complete[:, -1].long(), wine.labels["class"].values) and not torch.isnan(complete).any()
    diabetes = load_dataset("diabetes", split="test", label_as_column=True)
    assert diabetes.schema[-1].kind == "positive" and torch.equal(diabetes.x[:, -1], diabetes.labels["target"].values)
    with pytest.raises(AtlasError, match="missing_as_nan"):
        load_dataset("mixed", n=100, missing_as_nan="yes")
