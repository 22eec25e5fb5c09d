"""Linear decoding, selective dimensions and posterior correlations (engine.diagnostics.decoding)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from engine.diagnostics.decoding import (
    consistency_ratio,
    greedy_selective_dims,
    linear_decoding,
    pair_correlations,
    posterior_correlations,
    top_pairs,
)
from engine.errors import AtlasError


def blobs(n: int, means: np.ndarray, rng: np.random.Generator, labels=None):
    """n points around class means (C, d) with unit noise, and their labels."""
    y = rng.integers(0, len(means), n)
    x = means[y] + rng.standard_normal((n, means.shape[1]))
    return x, (y if labels is None else np.asarray(labels)[y])


def test_well_separated_classes_decode_perfectly():
    rng = np.random.default_rng(0)
    means = 10.0 * np.eye(3, 4)
    (x, y), (xt, yt) = blobs(600, means, rng), blobs(600, means, rng)
    result = linear_decoding(x, y, xt, yt)
    assert result.accuracies.shape == (5,)
    assert result.accuracy > 0.99
    assert result.chance == pytest.approx(1 / 3)
    np.testing.assert_allclose(result.confusion.sum(1), 1.0)
    np.testing.assert_allclose(result.confusion, np.eye(3), atol=0.02)


def test_noise_features_decode_at_chance():
    rng = np.random.default_rng(1)
    x, xt = rng.standard_normal((2000, 10)), rng.standard_normal((3000, 10))
    y, yt = rng.integers(0, 4, 2000), rng.integers(0, 4, 3000)
    result = linear_decoding(torch.from_numpy(x), torch.from_numpy(y), xt, yt)
    assert result.chance == 0.25
    assert abs(result.accuracy - 0.25) < 0.04
    np.testing.assert_allclose(result.confusion.sum(1), 1.0)


def test_confusion_shows_which_classes_mix_and_keeps_the_labels():
    rng = np.random.default_rng(2)
    # classes 3 and 7 overlap, class 9 stands apart
    means = np.array([[0.0, 0.0], [0.5, 0.0], [8.0, 8.0]])
    (x, y), (xt, yt) = blobs(1500, means, rng, [3, 7, 9]), blobs(1500, means, rng, [3, 7, 9])
    result = linear_decoding(x, y, xt, yt, repeats=3)
    np.testing.assert_array_equal(result.classes, [3, 7, 9])
    assert result.confusion[2, 2] > 0.99
    assert result.confusion[0, 1] > 0.2 and result.confusion[1, 0] > 0.2
    # averaged over repeats with one test set, the diagonal weighted by class size is the mean accuracy
    sizes = np.array([(yt == c).sum() for c in (3, 7, 9)])
    assert (np.diag(result.confusion) * sizes).sum() / len(yt) == pytest.approx(result.accuracy)


def test_one_fit_matches_scikit_learn_directly():
    rng = np.random.default_rng(3)
    means = rng.normal(0.0, 1.0, (4, 6))
    (x, y), (xt, yt) = blobs(800, means, rng), blobs(800, means, rng)
    result = linear_decoding(x, y, xt, yt, repeats=1, bootstrap=False)
    scaler = StandardScaler().fit(x)
    direct = LogisticRegression(max_iter=5000).fit(scaler.transform(x), y).score(scaler.transform(xt), yt)
    assert result.accuracy == pytest.approx(direct, abs=2 / len(yt))  # a shuffle moves the optimum by solver tolerance


def test_bootstrap_repeats_differ_and_shuffles_do_not():
    rng = np.random.default_rng(4)
    means = rng.normal(0.0, 0.7, (5, 8))
    (x, y), (xt, yt) = blobs(600, means, rng), blobs(2000, means, rng)
    boot = linear_decoding(x, y, xt, yt, bootstrap=True)
    assert len(np.unique(boot.accuracies)) > 1
    shuffled = linear_decoding(x, y, xt, yt, bootstrap=False)
    assert np.ptp(shuffled.accuracies) <= 2 / len(yt)
    assert linear_decoding(x, y, xt, yt, seed=0).accuracies.tolist() == boot.accuracies.tolist()


def test_decoding_refuses_mismatched_inputs():
    x, y = np.zeros((10, 3)), np.arange(10) % 2
    with pytest.raises(AtlasError, match="same features"):
        linear_decoding(x, y, np.zeros((10, 4)), y)
    with pytest.raises(AtlasError, match="one label per example"):
        linear_decoding(x, y[:5], x, y)
    with pytest.raises(AtlasError, match="single class"):
        linear_decoding(x, np.zeros(10), x, y)


def selective_data(n: int, rng: np.random.Generator):
    """20 noise dims; dims 2 and 5 carry the two bits of a 4-class label."""
    y = rng.integers(0, 4, n)
    x = rng.standard_normal((n, 20))
    x[:, 2] += 2.0 * np.where(y % 2, 1.0, -1.0)
    x[:, 5] += 2.0 * np.where(y // 2, 1.0, -1.0)
    return x, y


def test_greedy_selection_finds_the_label_carrying_dims():
    rng = np.random.default_rng(5)
    (x, y), (xt, yt) = selective_data(5000, rng), selective_data(2000, rng)
    found = greedy_selective_dims(x, y, xt, yt)
    assert sorted(found.dims) == [2, 5]
    assert len(found.curve) == 2 and found.baseline < found.curve[0] < found.curve[1]
    assert found.curve[0] == pytest.approx(0.5, abs=0.05)  # one bit of two
    assert found.selected.accuracy > 0.9
    assert abs(found.rest.accuracy - 0.25) < 0.04
    # the selection never looks at the test set: scrambled test labels change only the test scores
    scrambled = greedy_selective_dims(x, y, xt, rng.permutation(yt))
    assert scrambled.dims == found.dims and scrambled.curve == found.curve
    assert scrambled.selected.accuracy < 0.35


def test_greedy_selection_tolerance_and_max_dims():
    rng = np.random.default_rng(6)
    (x, y), (xt, yt) = selective_data(2000, rng), selective_data(500, rng)
    assert len(greedy_selective_dims(x, y, xt, yt, max_dims=1).dims) == 1
    assert greedy_selective_dims(x, y, xt, yt, tolerance=0.9).dims == []  # no single dim adds 0.9
    everything = greedy_selective_dims(x, y, xt, yt, tolerance=-1.0, max_dims=None)
    assert sorted(everything.dims) == list(range(20)) and everything.rest is None


def test_posterior_correlations_match_numpy():
    rng = np.random.default_rng(7)
    samples = rng.standard_normal((500, 6)) @ rng.standard_normal((6, 6))
    r = posterior_correlations(samples)
    expected = np.corrcoef(samples, rowvar=False)
    off = ~np.eye(6, dtype=bool)
    np.testing.assert_allclose(r[off], expected[off], atol=1e-12)
    assert np.isnan(np.diag(r)).all()
    # a batch of patches gives one matrix each
    batch = rng.standard_normal((3, 200, 6))
    np.testing.assert_allclose(
        posterior_correlations(torch.from_numpy(batch))[1][off], posterior_correlations(batch[1])[off]
    )


@pytest.mark.filterwarnings("error")
def test_zero_variance_dims_give_nan_without_warnings():
    rng = np.random.default_rng(8)
    samples = rng.standard_normal((100, 4))
    samples[:, 2] = 0.7
    r = posterior_correlations(samples)
    assert np.isnan(r[2]).all() and np.isnan(r[:, 2]).all()
    assert np.isfinite(r[0, 1]) and np.isfinite(r[3, 0])
    pairs = pair_correlations(samples, [0, 2, 1], [1, 3, 1])
    assert pairs[0] == pytest.approx(r[0, 1]) and np.isnan(pairs[1]) and np.isnan(pairs[2])


def test_pair_correlations_equal_the_matrix_entries():
    samples = np.random.default_rng(9).standard_normal((4, 300, 7))
    i, j = np.array([0, 3, 6, 2]), np.array([1, 5, 2, 6])
    np.testing.assert_allclose(pair_correlations(samples, i, j), posterior_correlations(samples)[:, i, j])
    with pytest.raises(AtlasError, match="dimensions in 0..6"):
        pair_correlations(samples, [0], [7])


def test_top_pairs_orders_by_absolute_value_and_skips_nan():
    r = np.full((4, 4), np.nan)
    upper = {(0, 1): 0.1, (0, 2): -0.6, (0, 3): 0.3, (1, 2): np.nan, (1, 3): 0.45, (2, 3): -0.05}
    for (i, j), v in upper.items():
        r[i, j] = r[j, i] = v
    assert top_pairs(r, 3) == [(0, 2, -0.6), (1, 3, 0.45), (0, 3, 0.3)]
    assert len(top_pairs(r, 10)) == 5  # the NaN pair is left out
    assert top_pairs(r, 0) == []


def test_consistency_ratio_by_hand():
    # three other patches; pair (0, 1) has r 0.1, 0.2, 0.3 and pair (1, 2) has -0.2, 0.0, 0.2
    other = np.zeros((3, 3, 3))
    for p, (a, b) in enumerate([(0.1, -0.2), (0.2, 0.0), (0.3, 0.2)]):
        other[p, 0, 1] = other[p, 1, 0] = a
        other[p, 1, 2] = other[p, 2, 1] = b
    reference = [(0, 1, 0.5), (1, 2, -0.4)]
    # ddof = 0: |0.2 - 0.5| / sqrt(0.02 / 3) and |0 + 0.4| / sqrt(0.08 / 3)
    by_hand = (0.3 / math.sqrt(0.02 / 3) + 0.4 / math.sqrt(0.08 / 3)) / 2
    assert consistency_ratio(reference, other) == pytest.approx(by_hand)
    # ddof = 1: std 0.1 and 0.2, ratios 3 and 2
    assert consistency_ratio(reference, other, ddof=1) == pytest.approx(2.5)
    # a function of the pairs gives the same
    assert consistency_ratio(reference, lambda i, j: other[:, i, j]) == pytest.approx(by_hand)


def test_consistency_ratio_from_samples_through_pair_correlations():
    rng = np.random.default_rng(10)
    samples = rng.standard_normal((20, 100, 5))
    reference = top_pairs(posterior_correlations(rng.standard_normal((100, 5))), 3)
    from_matrices = consistency_ratio(reference, posterior_correlations(samples))
    from_pairs = consistency_ratio(reference, lambda i, j: pair_correlations(samples, i, j))
    assert from_pairs == pytest.approx(from_matrices)
    with pytest.raises(AtlasError, match="no pairs"):
        consistency_ratio([], posterior_correlations(samples))
