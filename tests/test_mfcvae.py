"""MFCVAE (seed000 ch. 2): responsibilities, the eq. A.48 loss on a hand-checkable case,
shapes, sampling, bounds, the progressive schedule, the registry and a short run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.data import load_dataset
from engine.errors import AtlasError
from engine.models import build_model
from engine.models.mfcvae import MFCVAE, MFCVAEConfig, fade_in_weights
from engine.models.posteriors import DiagonalGaussian


def randomise_prior(model: MFCVAE, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for j in range(len(model.names)):
            model.pi_logits[j].copy_(torch.randn(model.pi_logits[j].shape, generator=g))
            model.means[j].copy_(torch.randn(model.means[j].shape, generator=g))
            model.scale_raw[j].copy_(0.6 + 0.2 * torch.randn(model.scale_raw[j].shape, generator=g))


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_responsibilities_equal_bayes_rule(covariance):
    cfg = MFCVAEConfig(input_shape=(6,), facet_dims=(3, 2), clusters=(4, 5), hidden=(16, 16), covariance=covariance)
    model = MFCVAE(cfg)
    randomise_prior(model)
    z = torch.randn(7, 3)
    got = model.responsibilities_log(0, z).exp()
    # Bayes' rule with explicit densities: p(c|z) = pi_c N(z; mu_c, Sigma_c) / sum_c' ...
    pi = torch.softmax(model.pi_logits[0].detach(), -1)
    sigma = model.prior_variances(0).detach()
    if covariance == "diag":
        sigma = torch.diag_embed(sigma)
    dens = torch.stack(
        [
            torch.distributions.MultivariateNormal(model.means[0][c].detach(), covariance_matrix=sigma[c])
            .log_prob(z)
            .exp()
            * pi[c]
            for c in range(4)
        ],
        -1,
    )
    torch.testing.assert_close(got.detach(), dens / dens.sum(-1, keepdim=True), rtol=1e-4, atol=1e-6)

    x = torch.rand(7, 6)
    probs = model.cluster_probabilities(x, use_mean=True)
    q = model.encode(x)
    torch.testing.assert_close(probs[1], model.responsibilities_log(1, q["facet1"].mean).exp())
    assert [p.shape for p in probs] == [(7, 4), (7, 5)]
    assert [p.shape for p in model.predict_clusters(x)] == [(7,), (7,)]


def test_loss_on_a_hand_checkable_case(monkeypatch):
    """J = 1, K = 2, d = 1, fixed encoder and decoder outputs: each term of eq. A.48 and
    the closed-form KLs of eq. 2.14 against numpy."""
    cfg = MFCVAEConfig(input_shape=(3,), facet_dims=(1,), clusters=(2,), hidden=(4,))
    model = MFCVAE(cfg)
    m, logvar = 0.3, math.log(0.25)
    mu, var, pi = np.array([-0.5, 1.0]), np.array([0.2, 0.5]), np.array([0.3, 0.7])
    with torch.no_grad():
        model.means[0].copy_(torch.tensor(mu).view(2, 1))
        model.scale_raw[0].copy_(torch.log(torch.expm1(10 * torch.tensor(var))).view(2, 1) / 10)
        model.pi_logits[0].copy_(torch.tensor(np.log(pi)))
    logits = torch.tensor([0.5, -1.0, 2.0])
    x = torch.tensor([[1.0, 0.0, 1.0]])
    monkeypatch.setattr(model.net, "encode", lambda x: [torch.tensor([[m, logvar]]).expand(x.shape[0], 2)])
    monkeypatch.setattr(model.net, "decode", lambda zs, alpha: logits.expand(zs[0].shape[0], 3))

    torch.manual_seed(3)
    loss, metrics = model.training_loss(x)
    torch.manual_seed(3)
    z = m + 0.5 * torch.randn(1, 1).item()

    def log_normal(v, mean, variance):
        return -0.5 * (np.log(2 * np.pi * variance) + (v - mean) ** 2 / variance)

    p = 1 / (1 + np.exp(-logits.numpy()))
    recon = float(np.sum(x.numpy() * np.log(p) + (1 - x.numpy()) * np.log(1 - p)))
    log_n = log_normal(z, mu, var)
    gamma = pi * np.exp(log_n) / np.sum(pi * np.exp(log_n))
    log_q = log_normal(z, m, 0.25)
    terms = [recon, np.sum(gamma * log_n), np.sum(gamma * np.log(pi)), -log_q, -np.sum(gamma * np.log(gamma))]
    assert loss.item() == pytest.approx(-sum(terms), rel=1e-5)
    assert metrics["recon"].item() == pytest.approx(recon, rel=1e-5)
    assert metrics["kl_z/facet0"].item() == pytest.approx(log_q - terms[1], rel=1e-5)
    assert metrics["kl_c/facet0"].item() == pytest.approx(-terms[4] - terms[2], rel=1e-5)

    # eq. 2.14 with closed-form Gaussian KLs, gamma at the same draw
    torch.manual_seed(3)
    result = model.elbo(x)
    kl_gauss = 0.5 * (0.25 / var + (mu - m) ** 2 / var - 1 + np.log(var / 0.25))
    kl = np.sum(gamma * kl_gauss) + np.sum(gamma * np.log(gamma / pi))
    assert result.kl["facet0"].item() == pytest.approx(kl, rel=1e-5)
    assert result.total.item() == pytest.approx(recon - kl, rel=1e-5)


def test_beta_weights_each_facets_kl_in_the_loss_only():
    """beta_j multiplies facet j's KL terms in the training loss; the reported ELBO is unchanged."""
    cfg = dict(input_shape=(3, 8, 8), facet_dims=(4, 2), clusters=(5, 3), hidden=(16, 16))
    base, weighted = MFCVAE(MFCVAEConfig(**cfg)), MFCVAE(MFCVAEConfig(**cfg, beta=(3.0, 0.5)))
    weighted.load_state_dict(base.state_dict())
    x = torch.rand(7, 3, 8, 8)
    torch.manual_seed(0)
    loss1, m1 = base.training_loss(x)
    torch.manual_seed(0)
    loss2, m2 = weighted.training_loss(x)
    assert m1["elbo"].item() == pytest.approx(m2["elbo"].item(), rel=1e-6)
    expected = loss1 + 2.0 * m1["kl/facet0"] - 0.5 * m1["kl/facet1"]
    assert loss2.item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(AtlasError, match="beta"):
        MFCVAEConfig(**cfg, beta=(1.0,))
    with pytest.raises(AtlasError, match="beta"):
        MFCVAEConfig(**cfg, beta=(1.0, -1.0))


def test_fixed_sd_gaussian_likelihood_is_the_normal_density():
    cfg = MFCVAEConfig(
        input_shape=(2,), facet_dims=(1,), clusters=(2,), hidden=(4,), likelihood="gaussian", likelihood_sd=0.6
    )
    model = MFCVAE(cfg)
    assert not any("logvar" in name for name, _ in model.named_parameters())  # fixed, not learned
    x, mean = torch.tensor([[0.2, 0.9]]), torch.tensor([[0.5, 0.1]])
    expected = torch.distributions.Normal(mean, 0.6).log_prob(x).sum()
    assert model.likelihood.log_prob(x, mean).item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(AtlasError, match="gaussian"):
        MFCVAE(MFCVAEConfig(input_shape=(2,), facet_dims=(1,), clusters=(2,), hidden=(4,), likelihood_sd=0.6))
    with pytest.raises(AtlasError, match="likelihood_sd"):
        MFCVAE(
            MFCVAEConfig(
                input_shape=(2,), facet_dims=(1,), clusters=(2,), hidden=(4,), likelihood="gaussian", likelihood_sd=-1.0
            )
        )


def test_full_covariance_kl_matches_torch_distributions():
    cfg = MFCVAEConfig(input_shape=(4,), facet_dims=(3,), clusters=(2,), hidden=(8,), covariance="full")
    model = MFCVAE(cfg)
    randomise_prior(model, seed=1)
    q = DiagonalGaussian(torch.randn(5, 3), torch.randn(5, 3))
    got = model.gaussian_kl(0, q)
    qd = torch.distributions.MultivariateNormal(q.mean, covariance_matrix=torch.diag_embed(q.logvar.exp()))
    for c in range(2):
        pc = torch.distributions.MultivariateNormal(model.means[0][c], scale_tril=model.scale_tril(0)[c])
        torch.testing.assert_close(got[:, c], torch.distributions.kl_divergence(qd, pc), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch,shape", [("mlp", (3, 8, 8)), ("conv", (3, 16, 16))])
@pytest.mark.parametrize("covariance,head", [("diag", 0), ("full", 0), ("diag", 12)])
def test_output_shapes(arch, shape, covariance, head):
    cfg = MFCVAEConfig(
        input_shape=shape,
        facet_dims=(4, 2),
        clusters=(5, 3),
        arch=arch,
        hidden=(32, 32),
        channels=(8, 16),
        covariance=covariance,
        head=head,
    )
    model = MFCVAE(cfg)
    x = torch.rand(6, *shape)
    q = model.encode(x)
    assert {n: g.mean.shape for n, g in q.items()} == {"facet0": (6, 4), "facet1": (6, 2)}
    z = {"facet0": torch.randn(2, 6, 4, requires_grad=True), "facet1": torch.randn(2, 6, 2)}
    assert model.decode(z).shape == (2, 6, *shape)
    lj = model.log_joint(x, z)
    assert lj.shape == (2, 6)
    lj.sum().backward()
    assert torch.isfinite(z["facet0"].grad).all()
    assert model.sample(5).shape == (5, *shape)
    r1, r3 = model.elbo(x), model.elbo(x, k=3)
    assert r1.total.shape == r3.total.shape == (6,) and set(r1.kl) == set(r3.kl) == {"facet0", "facet1"}
    log_w, recon, kl = model.log_weights(x, 4, chunk=3)
    assert log_w.shape == recon.shape == kl["facet1"].shape == (4, 6)
    loss, metrics = model.training_loss(x)
    loss.backward()
    assert {"elbo", "recon", "kl/facet0", "kl/facet1"} <= set(metrics)
    with pytest.raises(AtlasError):
        model.encode(torch.rand(2, 5))
    with pytest.raises(AtlasError):
        model.decode({"facet0": torch.randn(3, 4)})


def test_conditional_sampling_at_temperature_zero_decodes_the_cluster_mean():
    model = MFCVAE(MFCVAEConfig(input_shape=(3, 8, 8), facet_dims=(4, 2), clusters=(5, 3), hidden=(32, 32)))
    randomise_prior(model)
    assert model.sample_conditions == {"cluster_facet0": list(range(5)), "cluster_facet1": list(range(3))}
    got = model.sample(4, temperature=0.0, cluster_facet0=2, cluster_facet1=1)
    want = model.decode({"facet0": model.means[0][2].expand(4, 4), "facet1": model.means[1][1].expand(4, 2)})
    torch.testing.assert_close(got, want)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    torch.testing.assert_close(
        model.sample(3, generator=g1, cluster_facet1=0), model.sample(3, generator=g2, cluster_facet1=0)
    )
    with pytest.raises(AtlasError):
        model.sample(2, cluster_facet0=5)
    with pytest.raises(AtlasError):
        model.sample(2, cluster_facet7=0)


def test_fade_in_schedule():
    torch.testing.assert_close(fade_in_weights(0, (100, 0), 50, 2), torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(fade_in_weights(125, (100, 0), 50, 2), torch.tensor([0.5, 1.0]))
    torch.testing.assert_close(fade_in_weights(10_000, (100, 0), 50, 2), torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(fade_in_weights(0, (), 50, 3), torch.ones(3))
    cfg = MFCVAEConfig(
        input_shape=(3, 8, 8),
        facet_dims=(4, 2),
        clusters=(5, 3),
        hidden=(32, 32),
        fade_in_steps=10,
        facet_start_steps=(20, 0),
    )
    model = MFCVAE(cfg)
    x = torch.rand(4, 3, 8, 8)
    model.set_step(0)  # facet0 not looped in: it changes nothing and gets no gradient
    z = {"facet0": torch.randn(4, 4), "facet1": torch.randn(4, 2)}
    torch.testing.assert_close(model.decode(z), model.decode({**z, "facet0": torch.randn(4, 4)}))
    loss, metrics = model.training_loss(x)
    loss.backward()
    assert metrics["alpha/facet0"] == 0.0
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in model.net.enc_rungs[0].parameters())
    model.set_step(25)
    assert model.alpha.tolist() == [0.5, 1.0]
    assert model.state_dict()["step"].item() == 25  # the schedule position is saved with the weights


def test_registry_round_trip_and_validation():
    cfg = MFCVAEConfig(
        input_shape=(3, 16, 16),
        facet_dims=(5, 2),
        clusters=(10, 20),
        arch="conv",
        covariance="full",
        facet_start_steps=(100, 0),
    )
    model = build_model("mfcvae", cfg.to_dict())
    assert isinstance(model, MFCVAE) and model.config == cfg and model.config.family == "mfcvae"
    bad = [
        {"facet_dims": [2, 2], "clusters": [3]},
        {"covariance": "spherical"},
        {"arch": "conv", "input_shape": [3, 12, 12]},
        {"facet_start_steps": [0]},
    ]
    for values in bad:
        with pytest.raises(AtlasError):
            build_model("mfcvae", values)


@pytest.fixture(scope="module")
def briefly_trained():
    """An MLP MFCVAE trained for 200 steps on 8x8 facet-digits (one thread: small layers
    run slower on two threads of a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = load_dataset("facet-digits", size=8, n=1000)
    cfg = MFCVAEConfig(input_shape=(3, 8, 8), facet_dims=(6, 3), clusters=(10, 20), hidden=(64, 64))
    model = MFCVAE(cfg)
    model.initialize(data)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _step in range(200):
        x = data.batch(torch.randint(len(data), (64,)))
        loss, _ = model.training_loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    return model.eval(), data


def test_initialize_sets_means_from_a_gmm(briefly_trained):
    model = MFCVAE(MFCVAEConfig(input_shape=(3, 8, 8), facet_dims=(6, 3), clusters=(10, 20), hidden=(32, 32)))
    _, data = briefly_trained
    before = model.means[1].detach().clone()
    with torch.no_grad():
        model.initialize(data)
    z = model.encode(data.batch(torch.arange(500)))["facet1"].mean
    assert not torch.equal(before, model.means[1])
    assert (model.means[1].min(0).values >= z.min(0).values - 1e-3).all()  # means inside the encoded cloud
    torch.testing.assert_close(model.prior_variances(1), torch.full((20, 3), 0.01))


def test_iwae_bound_is_at_least_the_elbo(briefly_trained):
    model, data = briefly_trained
    x = data.batch(torch.arange(200))
    torch.manual_seed(1)
    with torch.no_grad():
        elbo = model.elbo(x).total.mean()
        iwae = model.elbo(x, k=32).total.mean()
    assert torch.isfinite(iwae) and iwae >= elbo, f"IWAE bound (k = 32) {iwae:.3f} below the ELBO {elbo:.3f}"


def test_short_progressive_run_clusters_above_chance():
    """1,000 steps on 8x8 facet-digits, colour facet first and the digit facet faded in
    from step 300 (about 15 s on one thread). Chance is about 0.1 for the digit (K = 10,
    Hungarian) and 0.2-0.3 for the colours (K = 20, majority mapping)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    train = load_dataset("facet-digits", size=8, n=3000)
    test = load_dataset("facet-digits", "test", size=8, n=3000)
    cfg = MFCVAEConfig(
        input_shape=(3, 8, 8),
        facet_dims=(6, 3),
        clusters=(10, 20),
        hidden=(128, 128),
        fade_in_steps=200,
        facet_start_steps=(300, 0),
    )
    model = MFCVAE(cfg)
    with torch.no_grad():
        model.initialize(train)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for step in range(1000):
        model.set_step(step)
        loss, _ = model.training_loss(train.batch(torch.randint(len(train), (128,))))
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = model.eval().evaluation_metrics(test, 600)
    torch.set_num_threads(threads)
    assert acc["acc/facet1/stroke"] > 0.6 and acc["acc/facet1/background"] > 0.6
    assert acc["acc/facet0/digit"] > 0.18
