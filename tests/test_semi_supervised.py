"""GM-DGM and SSVAE (seed001 ch. 2): the on-purpose prior, the enumerated unlabelled bound,
the label regimes, and both models learning the digits from a fifth of their labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.data import load_dataset
from engine.data.label_regimes import label_mask, labelled_classes
from engine.errors import AtlasError
from engine.models.semi_supervised import SemiSupervisedConfig, SemiSupervisedVAE, on_purpose_log_prior


def test_the_on_purpose_prior_puts_half_the_mass_on_the_labelled_classes():
    """seed001 §1.5 with (F-)MNIST's K = 5 + 40."""
    p = on_purpose_log_prior(5, 45).exp()
    assert p.shape == (45,) and float(p.sum()) == pytest.approx(1.0)
    assert torch.allclose(p[:5], torch.full((5,), 0.1)) and torch.allclose(p[5:], torch.full((40,), 1 / 80))
    with pytest.raises(AtlasError, match="extra components"):
        on_purpose_log_prior(10, 10)


def test_the_unlabelled_bound_is_gibbs_bound_on_the_enumerated_labelled_bounds(monkeypatch):
    """L_u(x) = sum_y q(y|x) L_l(x, y) + H(q) <= log sum_y exp L_l(x, y), with equality exactly
    when q(y|x) is proportional to exp L_l(x, y) (Gibbs' inequality). The labelled bound is
    replaced by a fixed table indexed by the input's row and y, so a mix-up of inputs and
    values of y in the enumeration breaks the identity."""
    torch.manual_seed(0)
    n, k = 6, 4
    model = SemiSupervisedVAE(SemiSupervisedConfig(input_shape=(3,), components=k, hidden=8, latent_dim=2))
    table = torch.randn(n, k) * 3
    x = torch.zeros(n, 3)
    x[:, 0] = torch.arange(n, dtype=torch.float32)  # the row id travels with the input

    def fixed(xs, ys):
        return table[xs[:, 0].long(), ys.argmax(-1)]

    monkeypatch.setattr(model, "labelled_bound", fixed)
    best = torch.logsumexp(table, -1)
    monkeypatch.setattr(model, "classify", lambda x_: torch.log_softmax(table[x_[:, 0].long()], -1))
    assert torch.allclose(model.unlabelled_bound(x), best, atol=1e-5)
    other = torch.log_softmax(torch.randn(n, k), -1)
    monkeypatch.setattr(model, "classify", lambda x_: other)
    gap = best - model.unlabelled_bound(x)
    q = other.exp()
    posterior = torch.softmax(table, -1)
    kl = (q * (q.log() - posterior.log())).sum(-1)  # the gap is KL(q || softmax(L_l))
    assert torch.allclose(gap, kl, atol=1e-5) and (gap > 0).all()


@pytest.mark.parametrize("model_kind", ["gmdgm", "ssvae"])
def test_the_objective_is_finite_and_differentiable_in_both_batches(model_kind):
    torch.manual_seed(0)
    model = SemiSupervisedVAE(SemiSupervisedConfig(input_shape=(16,), model=model_kind, components=3, hidden=16))
    x = torch.rand(5, 16)
    loss, metrics = model.objective(x[:2], torch.tensor([0, 2]), x[2:])
    loss.backward()
    assert torch.isfinite(loss) and set(metrics) == {"labelled_bound", "classifier_log_q", "unlabelled_bound"}
    assert all(p.grad is not None for p in model.classifier.parameters())
    with pytest.raises(AtlasError, match="both were empty"):
        model.objective(x[:0], torch.tensor([], dtype=torch.long), x[:0])


def test_label_regimes_keep_a_seeded_fraction_of_the_right_classes():
    labels = np.repeat(np.arange(10), [50, 60, 70, 80, 90, 100, 110, 120, 130, 140])
    ss = label_mask(labels, "ss", 0.2, seed=1)
    sus = label_mask(labels, "sus", 0.2, seed=1)
    for c, n_c in zip(range(10), [50, 60, 70, 80, 90, 100, 110, 120, 130, 140]):
        assert ss[labels == c].sum() == round(0.2 * n_c)
        assert sus[labels == c].sum() == (round(0.2 * n_c) if c < 5 else 0)
    assert not label_mask(labels, "us").any()
    assert np.array_equal(label_mask(labels, "sus", 0.2, seed=1), sus)
    assert not np.array_equal(label_mask(labels, "sus", 0.2, seed=2), sus)
    assert labelled_classes(labels, "accidental-sus").tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(AtlasError, match="unknown label regime"):
        label_mask(labels, "semi")


@pytest.mark.parametrize("model_kind", ["gmdgm", "ssvae"])
def test_both_models_learn_the_digits_from_a_fifth_of_their_labels(model_kind):
    """SS regime, 20% of the training labels of every class: after 600 steps the classifier
    q(y|x) names most test digits (chance is 10%)."""
    torch.manual_seed(0)
    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    x, y = train.x.flatten(1), train.labels["digit"].values
    keep = torch.as_tensor(label_mask(y.numpy(), "ss", 0.2, seed=0))
    xl, yl, xu = x[keep], y[keep], x[~keep]
    model = SemiSupervisedVAE(
        SemiSupervisedConfig(input_shape=(64,), model=model_kind, components=10, hidden=200, latent_dim=5, alpha=50.0)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(600):
        il = torch.randint(0, len(xl), (32,), generator=g)
        iu = torch.randint(0, len(xu), (64,), generator=g)
        loss, _ = model.objective(xl[il], yl[il], xu[iu])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        accuracy = (model.classify(test.x.flatten(1)).argmax(-1) == test.labels["digit"].values).float().mean()
    assert accuracy > 0.8, float(accuracy)
    assert math.isfinite(float(loss))


# -- the registered families: y summed out ----------------------------------------------------------
def small(family: str, **values):
    from engine.models import build_model

    torch.manual_seed(0)
    return build_model(family, {"input_shape": [1, 2, 3], "components": 4, "latent_dim": 2, "hidden": 16, **values})


@pytest.mark.parametrize("family", ["gmdgm", "ssvae"])
def test_log_joint_sums_y_out_of_the_generative_model(family):
    """log p(x, z) against a loop over y with torch.distributions: log sum_y p(y) p(z|y) p(x|y,z)."""
    model = small(family, prior="on-purpose", labelled_classes=1)
    if family == "gmdgm":
        with torch.no_grad():
            model.prior_mean.mul_(3)  # components apart, so a wrong row of the table shows
    x = torch.rand(5, 1, 2, 3).round()
    z = torch.randn(3, 5, 2)
    terms = []
    for y in range(4):
        onehot = torch.nn.functional.one_hot(torch.full((3, 5), y), 4).float()
        if family == "gmdgm":
            mean, logvar = model.prior_mean[y], model.prior_logvar[y]
            logits = model.decoder(z)
        else:
            mean, logvar = torch.zeros(2), torch.zeros(2)
            logits = model.decoder(torch.cat([z, onehot], -1))
        log_pz = torch.distributions.Normal(mean, (0.5 * logvar).exp()).log_prob(z).sum(-1)
        log_px = torch.distributions.Bernoulli(logits=logits).log_prob(x.flatten(1)).sum(-1)
        terms.append(model.log_py[y] + log_pz + log_px)
    want = torch.logsumexp(torch.stack(terms), 0)
    torch.testing.assert_close(model.log_joint(x, z), want, atol=1e-4, rtol=1e-5)


def test_the_mixture_posterior_is_the_mixture_torch_builds():
    model = small("gmdgm")
    x = torch.rand(6, 1, 2, 3)
    q = model.encode(x)["z"]
    ref = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=q.log_weights),
        torch.distributions.Independent(torch.distributions.Normal(q.means, (0.5 * q.logvars).exp()), 1),
    )
    z = torch.randn(7, 6, 2)
    torch.testing.assert_close(q.log_prob(z), ref.log_prob(z), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(q.mean, ref.mean, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(q.stddev, ref.variance.sqrt(), atol=1e-6, rtol=1e-5)
    draws = q.rsample(20000)
    assert draws.shape == (20000, 6, 2)
    torch.testing.assert_close(draws.mean(0), ref.mean, atol=0.05, rtol=0)
    torch.testing.assert_close(draws.std(0), ref.variance.sqrt(), atol=0.05, rtol=0.05)


@pytest.mark.parametrize("family", ["gmdgm", "ssvae"])
def test_the_elbo_is_the_unlabelled_bound_split_into_its_terms_and_bounds_log_px(family):
    """elbo(x) = L_u(x) draw for draw, KL_y = KL(q(y|x) || p(y)) >= 0; with a 1-D z, log p(x)
    by quadrature of log_joint lies above the ELBO's mean and the 4000-draw IW bound is close to it."""
    model = small(family, latent_dim=1)
    x = torch.rand(4, 1, 2, 3).round()
    torch.manual_seed(1)
    result = model.elbo(x)
    torch.manual_seed(1)
    torch.testing.assert_close(result.total, model.unlabelled_bound(x))
    log_qy = model.classify(x)
    torch.testing.assert_close(result.kl["y"], (log_qy.exp() * (log_qy - model.log_py)).sum(-1))
    assert (result.kl["y"] >= 0).all() and (result.kl["z"] >= 0).all()
    with torch.no_grad():
        grid = torch.linspace(-12, 12, 24001)
        log_px = torch.logsumexp(model.log_joint(x, grid[:, None, None].expand(-1, 4, 1)), 0) + math.log(
            grid[1] - grid[0]
        )
        elbo = torch.stack([model.elbo(x).total for _ in range(200)]).mean(0)
        iw = model.elbo(x, k=4000).total
    assert (elbo < log_px).all()
    torch.testing.assert_close(iw, log_px, atol=0.05, rtol=0)


def test_a_component_is_sampled_from_its_own_prior_row():
    model = small("gmdgm", latent_dim=2)
    with torch.no_grad():
        model.prior_mean.copy_(torch.arange(8.0).view(4, 2))
        model.prior_logvar.fill_(math.log(0.25))
    model.decode_y = lambda z, y: z  # the draws of z themselves
    z = model.sample(20000, component=2)
    torch.testing.assert_close(z.mean(0), torch.tensor([4.0, 5.0]), atol=0.02, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([0.5, 0.5]), atol=0.02, rtol=0)
    assert model.sample_conditions == {"component": [0, 1, 2, 3]}
    with pytest.raises(AtlasError, match="component must be one of 0..3"):
        model.sample(2, component=4)


def test_pixels_that_do_not_vary_are_neither_scored_nor_decoded():
    """App. A.1's sd > 0.1 filter: a constant pixel keeps its training value in decode and
    does not change log p(x, z)."""
    from engine.data.base import Dataset

    model = small("gmdgm", min_pixel_sd=0.1)
    x = torch.rand(50, 1, 2, 3)
    x[:, 0, 1, 2] = 0.3
    model.initialize(Dataset("toy", "train", x, {}, (1, 2, 3), (0.0, 1.0)))
    assert model.pixel_mask.tolist() == [1, 1, 1, 1, 1, 0]
    other = x[:4].clone()
    other[:, 0, 1, 2] = 1.0
    z = torch.randn(4, 2)
    torch.testing.assert_close(model.log_joint(x[:4], z), model.log_joint(other, z))
    assert torch.allclose(model.decode(z)[:, 0, 1, 2], torch.tensor(0.3))


def test_majority_mapping_maps_every_cluster_to_its_commonest_class_even_at_k_equal_c():
    from engine.models.cluster_accuracy import cluster_accuracy

    pred = [0, 0, 0, 1, 1, 2, 2, 2]
    labels = [0, 0, 1, 0, 0, 2, 2, 1]
    majority = cluster_accuracy(pred, labels, 3, 3, method="majority")
    assert majority.mapping == {0: 0, 1: 0, 2: 2} and majority.accuracy == pytest.approx(6 / 8)
    assert cluster_accuracy(pred, labels, 3, 3).accuracy == pytest.approx(5 / 8)  # one to one


def test_the_gumbel_temperature_falls_geometrically_to_its_floor():
    model = small("gmdgm", marginalise="gumbel", temperature=2.0, temperature_min=0.5, anneal_steps=100)
    taus = []
    for step in (0, 50, 100, 400):
        model.set_step(step)
        taus.append(model.tau)
    assert taus == pytest.approx([2.0, 1.0, 0.5, 0.5])
    fixed = small("gmdgm", marginalise="gumbel", temperature=0.7)
    fixed.set_step(10**6)
    assert fixed.tau == 0.7
    with pytest.raises(AtlasError, match="temperature_min must be in"):
        small("gmdgm", temperature=1.0, temperature_min=2.0)
