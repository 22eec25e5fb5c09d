"""The Seatbelt-VAE family (seed001 Def 5.1): its objective against the beta-TCVAE and
the ELBO, its importance weights and joint density against computations by hand,
training, saving and loading, and the generic pages on the published demo."""

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import TINY_TRAIN
from streamlit.testing.v1 import AppTest

from app.runs import available_runs
from app.state import RUN_KEY
from engine.errors import AtlasError
from engine.loading import evaluate_bounds, load_run_model
from engine.models import SeatbeltConfig, build_model
from engine.models.posteriors import DiagonalGaussian
from engine.models.total_correlation import total_correlation
from engine.numerics import logmeanexp, standard_normal_log_prob
from engine.store import Run
from engine.training import RunSpec, train
from tests.pagetest import assert_clean

PAGES = Path(__file__).resolve().parent.parent / "pages"


def digits_model(perturb: float = 0.0, **overrides):
    """A small digits model, the same weights for the same arguments; `perturb` adds noise
    of that size to every weight, moving the posteriors away from the prior (TC ~ 0 there)."""
    values = {
        "input_shape": [1, 8, 8],
        "layer_dims": [8, 4],
        "hidden": [64, 32],
        "link_hidden": 32,
        "dataset_size": 1000,
        **overrides,
    }
    torch.manual_seed(0)
    model = build_model("seatbelt", values)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(perturb * torch.randn(p.shape))
    return model


def batch(n=32, seed=1):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def seeded(fn, seed=3):
    torch.manual_seed(seed)
    return fn()


# -- the objective ----------------------------------------------------------------------
def test_one_layer_objective_is_the_beta_tcvae_objective_of_the_same_vae():
    """L = 1 reduces to the beta-TCVAE (seed001 Def 5.1): same weights, batch and noise,
    same loss and metrics as the VAE family's beta-tcvae objective."""
    torch.manual_seed(0)
    vae = build_model(
        "vae",
        {
            "input_shape": [1, 8, 8],
            "latent_dim": 6,
            "hidden": [64, 32],
            "objective": "beta-tcvae",
            "beta": 4.0,
            "dataset_size": 1000,
        },
    )
    seatbelt = digits_model(layer_dims=[6], beta=4.0)
    pairs = list(zip(vae.parameters(), seatbelt.parameters(), strict=True))
    with torch.no_grad():
        for a, b in pairs:
            assert a.shape == b.shape
            a.add_(0.3 * torch.randn(a.shape))  # away from the prior, so that the TC is not ~0
            b.copy_(a)
    x = batch()
    loss_vae, m_vae = seeded(lambda: vae.training_loss(x))
    loss_sb, m_sb = seeded(lambda: seatbelt.training_loss(x))
    # float32 round-off only (the two nets split the same matrix products differently)
    assert loss_sb.item() == pytest.approx(loss_vae.item(), rel=1e-5)
    for name in ("elbo", "recon", "tc"):
        assert m_sb[name].item() == pytest.approx(m_vae[name].item(), rel=1e-4, abs=1e-4), name
    assert m_sb["kl/z1"].item() == pytest.approx(m_vae["kl/z"].item(), rel=1e-5)
    assert abs(m_sb["tc"].item()) > 1e-2  # the penalty is there to compare


def test_beta_one_objective_is_the_elbo_and_beta_adds_the_top_layer_tc():
    x = batch()
    plain = digits_model(0.3, beta=1.0)
    loss, metrics = seeded(lambda: plain.training_loss(x))
    elbo = seeded(lambda: plain.elbo(x)).total.mean()
    assert loss.item() == pytest.approx(-elbo.item(), rel=1e-6)
    assert metrics["elbo"].item() == pytest.approx(elbo.item(), rel=1e-6)
    # beta = 3 on the same weights: minus (beta - 1) times the TC of the top layer's samples
    penalised = digits_model(0.3, beta=3.0)
    loss3, metrics3 = seeded(lambda: penalised.training_loss(x))
    zs, qs = seeded(lambda: penalised.posterior_chain(x))
    tc_top = total_correlation(zs[-1], qs[-1].mean, qs[-1].logvar, 1000, "mss").mean()
    tc_bottom = total_correlation(zs[0], qs[0].mean, qs[0].logvar, 1000, "mss").mean()
    assert metrics3["tc"].item() == pytest.approx(tc_top.item(), rel=1e-5)
    assert loss3.item() == pytest.approx(-(elbo - 2.0 * tc_top).item(), rel=1e-5)
    assert abs(tc_top - tc_bottom) > 1e-2  # it is the top layer's, not the bottom's


# -- the bound and the densities ------------------------------------------------------------
def chain_by_hand(model, x):
    """One ancestral draw of q(z1 | x) q(z2 | z1, x) from the model's networks, in the order
    the model draws its noise (bottom first), and its log q."""
    h = model.features(x)
    q1 = DiagonalGaussian.from_output(model.posterior_bottom(h))
    z1 = q1.mean + q1.std * torch.randn(q1.mean.shape)
    q2 = DiagonalGaussian.from_output(model.posterior_links[0](torch.cat([z1, h], -1)))
    z2 = q2.mean + q2.std * torch.randn(q2.mean.shape)
    return {"z1": z1, "z2": z2}, q1.log_prob(z1) + q2.log_prob(z2), q2


def test_elbo_and_log_weights_are_log_joint_minus_the_chains_log_q():
    model, x = digits_model(), batch(8)
    with torch.no_grad():
        z, log_q, q2 = seeded(lambda: chain_by_hand(model, x))
        log_w_hand = model.log_joint(x, z) - log_q
        log_w, recon, kl = seeded(lambda: model.log_weights(x, k=1))
        assert torch.allclose(log_w[0], log_w_hand, atol=1e-4)
        assert torch.allclose(recon[0] - kl[0], log_w[0], atol=1e-5)
        # elbo(k=1) scores the same draw, with the top layer's KL in closed form given z1
        top_sampled = q2.log_prob(z["z2"]) - standard_normal_log_prob(z["z2"])
        expected = log_w_hand + top_sampled - q2.kl_to_standard_normal()
        assert torch.allclose(seeded(lambda: model.elbo(x)).total, expected, atol=1e-4)


def test_log_joint_is_the_sum_of_the_component_densities():
    """A tiny model, every density written out with torch.distributions."""
    model = build_model(
        "seatbelt",
        {"input_shape": [3], "layer_dims": [2, 1], "hidden": [4], "link_hidden": 5, "likelihood": "gaussian"},
    )
    x = torch.randn(4, 3)
    z = {"z1": torch.randn(4, 2, requires_grad=True), "z2": torch.randn(4, 1, requires_grad=True)}
    N = torch.distributions.Normal
    mean = model.decoder(torch.cat([z["z1"], z["z2"]], -1))
    sd = model.likelihood.logvar.clamp(-9.0, 5.0).mul(0.5).exp()
    p_mean, p_logvar = model.prior_links[0](z["z2"]).chunk(2, -1)
    by_hand = (
        N(mean, sd).log_prob(x).sum(-1)
        + N(p_mean, p_logvar.clamp(-12, 8).mul(0.5).exp()).log_prob(z["z1"]).sum(-1)
        + N(0.0, 1.0).log_prob(z["z2"]).sum(-1)
    )
    got = model.log_joint(x, z)
    assert torch.allclose(got, by_hand, atol=1e-5)
    got.sum().backward()  # differentiable in z, for HMC
    assert z["z1"].grad.abs().sum() > 0 and z["z2"].grad.abs().sum() > 0
    with pytest.raises(AtlasError, match="z1, z2"):
        model.log_joint(x, {"z1": z["z1"]})
    with pytest.raises(AtlasError, match="dict"):
        model.log_joint(x, z["z1"])


def test_noise_space_maps_to_the_layers_and_carries_the_jacobian():
    model, x = digits_model(), batch(6)
    with torch.no_grad():
        eps = {"z1": torch.randn(3, 6, 8), "z2": torch.randn(3, 6, 4)}  # (chains, batch, d)
        z = model.latents_from_noise(eps)
        assert torch.equal(z["z2"], eps["z2"])
        log_sigma = model.prior_of(0, z["z2"]).logvar.sum(-1) / 2
        assert torch.allclose(model.log_joint_noise(x, eps), model.log_joint(x, z) + log_sigma, atol=1e-4)
        # the encoder's mean path, mapped to noise and back, is encode's means
        noise_means = {name: q.mean for name, q in model.encode_noise(x).items()}
        back = model.latents_from_noise(noise_means)
        for name, q in model.encode(x).items():
            assert torch.allclose(back[name], q.mean, atol=1e-5), name


def test_encode_is_the_deterministic_mean_path_and_shapes_follow_the_latents():
    model, x = digits_model(), batch(5)
    with torch.no_grad():
        q, again = model.encode(x), model.encode(x)
        assert [g.name for g in model.latent_groups] == ["z1", "z2"]
        assert {g.kind for g in model.latent_groups} == {"layer"}
        for name in q:
            assert torch.equal(q[name].mean, again[name].mean) and torch.equal(q[name].logvar, again[name].logvar)
        h = model.features(x)
        q2 = DiagonalGaussian.from_output(model.posterior_links[0](torch.cat([q["z1"].mean, h], -1)))
        assert torch.allclose(q["z2"].mean, q2.mean)
        assert model.decode({n: g.mean for n, g in q.items()}).shape == (5, 1, 8, 8)
        z = {"z1": torch.randn(7, 5, 8), "z2": torch.randn(7, 5, 4)}
        assert model.decode(z).shape == (7, 5, 1, 8, 8)
        g = torch.Generator().manual_seed(4)
        a = model.sample(9, generator=g)
        assert a.shape == (9, 1, 8, 8) and ((a >= 0) & (a <= 1)).all()
        assert torch.equal(a, model.sample(9, generator=torch.Generator().manual_seed(4)))
        assert not torch.equal(model.sample(9, temperature=0.0), a)
    conv = build_model(
        "seatbelt",
        {"input_shape": [3, 32, 32], "arch": "conv", "hidden": [64], "channels": [8, 16], "layer_dims": [6, 3]},
    )
    with torch.no_grad():
        y = torch.rand(2, 3, 32, 32)
        assert conv.decode({n: g.mean for n, g in conv.encode(y).items()}).shape == (2, 3, 32, 32)
        assert conv.sample(3).shape == (3, 3, 32, 32)
        assert conv.log_weights(y, k=4)[0].shape == (4, 2)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"layer_dims": []}, "layer_dims must list"),
        ({"layer_dims": [8, 0]}, "every entry of layer_dims"),
        ({"layer_dims": [8, 2.5]}, "every entry of layer_dims"),
        ({"hidden": []}, "size of the encoder features"),
        ({"arch": "conv", "input_shape": [10]}, "needs image inputs"),
        ({"arch": "rnn"}, "choose 'mlp' or 'conv'"),
        ({"beta": -1.0}, "beta must be"),
        ({"beta": float("nan")}, "beta must be"),
        ({"tc_estimator": "exact"}, "use 'mss' or 'mws'"),
        ({"likelihood": "poisson"}, "unknown likelihood"),
        ({"likelihood_sd": 0.1}, "gaussian likelihood only"),
        ({"link_hidden": 0}, "link_hidden"),
        ({"latent_dim": 8}, "unknown seatbelt config key"),
    ],
)
def test_config_errors_say_what_is_wrong(values, message):
    with pytest.raises(AtlasError, match=message):
        build_model("seatbelt", {"input_shape": [1, 8, 8], **values})


def test_config_round_trips_through_json_and_says_what_it_is():
    cfg = SeatbeltConfig(layer_dims=(12, 6, 3), beta=6.0)
    back = SeatbeltConfig(**{k: v for k, v in json.loads(json.dumps(cfg.to_dict())).items() if k != "family"})
    assert back == cfg and back.family == "seatbelt"
    assert "3 latent layer(s)" in cfg.summary() and "β = 6" in cfg.summary()


# -- training, the bound on a trained model, the store ----------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    spec = RunSpec.from_preset(
        "digits-seatbelt", {"train": {**TINY_TRAIN, "steps": 400, "eval_every": 200, "checkpoint_every": 200}}
    )
    return train(spec, runs_root=tmp_path_factory.mktemp("runs"), name="seatbelt")


def test_the_trainer_fills_in_the_dataset_size_and_training_raises_the_test_elbo(trained):
    loaded = load_run_model(trained)
    data = loaded.spec.load_data("test")
    assert loaded.spec.model["dataset_size"] == len(loaded.spec.load_data("train"))
    assert loaded.spec.model["beta"] == 6.0 and loaded.spec.model["family"] == "seatbelt"
    steps, _ = trained.metrics.scalars(["test/elbo"])["test/elbo"]
    assert list(steps) == [200, 400]
    _, tc = trained.metrics.scalars(["train/tc"])["train/tc"]
    assert len(tc) > 0 and all(math.isfinite(t) for t in tc)
    untrained = build_model("seatbelt", loaded.spec.model)
    before = evaluate_bounds(untrained, data, k=1, n=200)["elbo"]
    after = evaluate_bounds(loaded.model, data, k=1, n=200)["elbo"]
    assert after > before + 10  # nats per 8x8 image


def test_a_saved_run_loads_back_to_the_same_function(trained):
    loaded, again = load_run_model(trained), load_run_model(trained)
    twin = build_model("seatbelt", json.loads((trained.dir / "config.json").read_text())["model"])
    assert any(not torch.equal(a, b) for a, b in zip(twin.state_dict().values(), loaded.model.state_dict().values()))
    twin.load_state_dict(loaded.model.state_dict())
    z = {"z1": torch.randn(5, 8), "z2": torch.randn(5, 4)}
    with torch.no_grad():
        assert torch.equal(again.model.decode(z), loaded.model.decode(z))
        assert torch.equal(twin.decode(z), loaded.model.decode(z))
    assert list(trained.dir.glob("**/*.safetensors")) and not list(trained.dir.glob("**/*.pt"))


def test_iwae_bound_sits_above_the_elbo_and_grows_with_k(trained):
    """L^k from one pool of 2,000 importance weights split into blocks of k (seed003 §1.6)."""
    model = load_run_model(trained).model
    x = load_run_model(trained).spec.load_data("test").batch(torch.arange(100))
    torch.manual_seed(0)
    with torch.no_grad():
        elbo = torch.stack([model.elbo(x).total.mean() for _ in range(50)]).mean().item()
        log_w, _, _ = model.log_weights(x, k=2000)  # (2000, 100)
        iwae = model.elbo(x, k=200).total.mean().item()
    bound = {k: logmeanexp(log_w.reshape(2000 // k, k, -1), dim=1).mean().item() for k in (1, 5, 50, 500)}
    assert bound[1] == pytest.approx(elbo, abs=0.15)  # the same expectation, two estimators of the top KL
    assert elbo < bound[5] <= bound[50] <= bound[500], (elbo, bound)
    assert bound[50] - bound[1] > 0.05, bound  # nats: a real gain, not noise
    assert bound[5] < iwae < bound[500] + 0.1, (iwae, bound)


# -- the generic pages on the published demo ---------------------------------------------------
@pytest.fixture
def demo(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_ATLAS_RUNS_DIR", str(tmp_path / "runs"))
    for choice in available_runs():
        if (
            choice.key.startswith("demo/")
            and json.loads((choice.dir / "config.json").read_text())["family"] == "seatbelt"
        ):
            return choice.key
    pytest.fail("no Seatbelt-VAE demo under assets/runs (publish one trained with --preset digits-seatbelt)")


def open_page(name: str, run_key: str) -> AppTest:
    at = AppTest.from_file(str(PAGES / name), default_timeout=300)
    at.session_state[RUN_KEY] = run_key
    return at.run()


def test_bounds_page_shows_each_layers_kl_to_its_conditional_prior(demo):
    at = open_page("latent_activity.py", demo)
    assert_clean(at)
    table = next(d.value for d in at.dataframe if "group" in d.value.columns)
    assert list(table["group"]) == ["z1", "z2"]
    loaded = load_run_model(Run.from_dir(next(c for c in available_runs() if c.key == demo).dir, readonly=True))
    model, x = loaded.model, loaded.spec.load_data("test").batch(torch.arange(300))
    with torch.no_grad():
        torch.manual_seed(0)
        kl = {
            name: torch.stack([model.elbo(x).kl[name].mean() for _ in range(4)]).mean().item() for name in ("z1", "z2")
        }
    for name, value in zip(table["group"], table["KL (nats)"]):
        assert value == pytest.approx(kl[name], rel=0.1, abs=0.2), name


def test_traversals_of_a_layer_decode_live_on_the_demo(demo):
    at = open_page("traversals.py", demo)
    assert_clean(at)
    before = [img.url for element in at.get("image") for img in element.proto.imgs]
    at.radio[1].set_value("data").run()  # the Range control
    assert_clean(at)
    assert [img.url for element in at.get("image") for img in element.proto.imgs] != before
