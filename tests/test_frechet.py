"""The Fréchet distance against closed forms and SciPy's matrix square root, and the
classifier whose features it is computed on."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from engine.data import load_dataset
from engine.diagnostics.frechet import classifier_frechet_distance, frechet_distance, train_feature_classifier
from engine.errors import AtlasError


def test_diagonal_gaussians_give_the_closed_form():
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = 1 + 0 + 4 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected)


def test_full_covariances_match_scipys_square_root():
    rng = np.random.default_rng(0)
    for _ in range(5):
        m1, m2 = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
        c1, c2 = m1 @ m1.T + 0.1 * np.eye(6), m2 @ m2.T
        mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
        root = scipy.linalg.sqrtm(c1 @ c2).real
        expected = ((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * root)
        assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-6)
        assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(frechet_distance(mu2, c2, mu1, c1), rel=1e-6)
        assert frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0, abs=1e-6)


def test_mismatched_dimensions_are_refused():
    with pytest.raises(AtlasError, match="one dimension"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_the_classifier_learns_the_digits_and_its_distance_tells_digits_from_noise():
    train = load_dataset("digits", split="train", seed=0)
    test = load_dataset("digits", split="test", seed=0)
    x, y = train.batch(torch.arange(len(train))), train.labels["digit"].values
    xt, yt = test.batch(torch.arange(len(test))), test.labels["digit"].values
    trained = train_feature_classifier(x, y, xt, yt, steps=400)
    assert trained.test_accuracy > 0.9
    real = classifier_frechet_distance(trained.net, xt, x)
    collapsed = classifier_frechet_distance(trained.net, xt, x[y < 3])  # a model that draws only 0, 1 and 2
    noise = classifier_frechet_distance(trained.net, xt, torch.rand_like(x))
    assert real < 0.5 * collapsed and real < 0.5 * noise
