"""engine.diagnostics.ica against independent facts: known permutations, covariances, centroids,
affine maps, a known two-source mixture, and the decodes of a tiny untrained Bijecta."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.data.base import TensorRows
from engine.diagnostics.ica import (
    centroids,
    embed,
    embedding_total_correlation,
    explained_variance,
    factorised_samples,
    fastica_columns,
    linearity_r2,
    match_columns,
    mixing_columns,
    source_grid,
    traversal,
)
from engine.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_bijecta():
    torch.manual_seed(0)
    return build_model("bijecta", {"input_shape": [1, 4, 4], "source_dim": 3, "flow_layers": 1, "coupling_hidden": [8]})


def test_match_columns_recovers_a_permutation_ignoring_signs_and_scales():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 10))
    perm = np.array([2, 0, 3, 1])
    b = np.empty_like(a)
    b[perm] = a * np.array([[-1.0], [2.0], [-0.5], [3.0]])
    index, cos = match_columns(a, b)
    assert np.array_equal(index, perm) and np.allclose(cos, 1.0)


def test_explained_variance_follows_known_eigenvalues():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    z = (rng.normal(size=(200_000, 4)) * np.sqrt([1.0, 6.0, 2.0, 1.0])) @ q.T
    assert np.allclose(explained_variance(z), np.cumsum([6, 2, 1, 1]) / 10, atol=0.01)


def test_centroids_of_a_pixel_and_of_a_symmetric_blob():
    image = np.zeros((1, 8, 10))
    image[0, 2, 7] = 0.9
    assert np.allclose(centroids(image), [7, 2])
    rows, cols = np.mgrid[:9, :11]
    blob = np.exp(-((rows - 5) ** 2 + (cols - 4) ** 2) / 2)[None]
    two = np.stack([np.concatenate([blob, -blob]), np.concatenate([blob, blob])])  # (2, 2, 9, 11)
    assert np.allclose(centroids(two), [[4, 5], [4, 5]], atol=1e-3)


def test_linearity_r2_is_one_for_an_affine_map_and_near_zero_for_noise():
    rng = np.random.default_rng(2)
    s = rng.uniform(-1, 1, size=(500, 2))
    assert linearity_r2(s, s @ np.array([[2.0, 0.5], [-1.0, 3.0]]) + [4, -2]) == pytest.approx(1.0)
    assert abs(linearity_r2(s, rng.normal(size=(500, 2)))) < 0.02


def test_fastica_recovers_the_directions_of_two_mixed_uniform_sources():
    rng = np.random.default_rng(3)
    mixing = np.array([[1.0, 0.3, -0.5, 0.2, 0.0], [0.4, -1.0, 0.1, 0.6, 0.9]])  # (sources, D)
    z = rng.uniform(-1, 1, size=(2000, 2)) @ mixing
    _, cos = match_columns(mixing, fastica_columns(z, 2, seed=0))
    assert (cos > 0.99).all()


def test_factorised_samples_keep_the_marginals_and_break_the_correlation():
    rng = np.random.default_rng(4)
    u = rng.normal(size=4000)
    means = np.column_stack([2 + 3 * u, -1 + 0.5 * (u + 0.1 * rng.normal(size=4000))])
    samples = factorised_samples(means, 20_000, seed=0)
    assert samples.shape == (20_000, 2)
    assert np.allclose(samples.mean(0), means.mean(0), atol=0.1)
    assert np.allclose(samples.std(0), means.std(0), rtol=0.05)  # the KDE adds its small bandwidth
    assert np.corrcoef(means.T)[0, 1] > 0.99 and abs(np.corrcoef(samples.T)[0, 1]) < 0.03


def test_grid_traversal_and_embedding_shapes_of_a_tiny_bijecta():
    model = tiny_bijecta()
    assert source_grid(model, np.linspace(-1, 1, 5)).shape == (5, 5, 1, 4, 4)
    grid = source_grid(model, np.array([[-1.0, 1.0], [0.0, 0.5]]), dims=(0, 2))
    s = torch.tensor([[1.0, 0.0, 0.5]])
    assert np.allclose(grid[1, 1], model.decode(s).detach().numpy()[0], atol=1e-6)
    x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    path = traversal(model, x, dim=1, sd=0.3, steps=7)
    assert path.shape == (7, 1, 4, 4)
    with torch.no_grad():
        centre = model.decode(model.encode(x)["s"].mean).double().numpy()[0]
    assert np.allclose(path[3], centre) and not np.allclose(path[0], path[-1])
    e = embed(model, TensorRows(torch.rand(30, 1, 4, 4)), n=20)
    assert e.z.shape == (20, 16) and e.means.shape == e.scales.shape == (20, 3)
    assert mixing_columns(model).shape == (3, 16)


def test_total_correlation_is_small_for_independent_and_large_for_correlated_dims():
    rng = np.random.default_rng(5)
    n = 2000
    scales = np.full((n, 2), 0.05)
    independent = rng.uniform(-1, 1, size=(n, 2))
    u = rng.uniform(-1, 1, size=n)
    correlated = np.column_stack([u, u + 0.01 * rng.normal(size=n)])
    low = embedding_total_correlation(independent, scales, n)
    high = embedding_total_correlation(correlated, scales, n)
    assert abs(low) < 0.15 and high > 1.0
    # the same posteriors read as Gaussians of equal variance: close, not the same estimate
    as_gaussian = embedding_total_correlation(correlated, np.sqrt(2) * scales, n, gaussian=True)
    assert as_gaussian > 1.0 and as_gaussian != pytest.approx(high, rel=1e-3)
