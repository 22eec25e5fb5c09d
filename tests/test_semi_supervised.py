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
