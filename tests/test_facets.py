"""engine/diagnostics/facets.py against independent checks: Fig. 2.4's ordering by
confidence, the facet swap, the cluster-mean grid, projections and their ellipses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.data.base import Dataset, LabelColumn
from engine.diagnostics.facets import (
    cluster_grid,
    cluster_mean_grid,
    clusters_of_means,
    ellipse,
    encode_facets,
    facet_probes,
    mixture_parameters,
    project_facet,
    swap_facet,
    swapped_latents,
)
from engine.errors import AtlasError
from engine.models.mfcvae import MFCVAE, MFCVAEConfig


def small_model(covariance: str = "diag") -> MFCVAE:
    torch.manual_seed(0)
    cfg = MFCVAEConfig(
        input_shape=(1, 4, 4), facet_dims=(2, 3), clusters=(3, 4), hidden=(16, 16), covariance=covariance
    )
    model = MFCVAE(cfg).eval()
    with torch.no_grad():
        for j in range(2):
            model.pi_logits[j].copy_(torch.randn(model.pi_logits[j].shape))
    return model


def small_data(n: int = 37) -> Dataset:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 4, 4, generator=g)
    labels = {"parity": LabelColumn("parity", torch.arange(n) % 2, ["even", "odd"])}
    return Dataset("toy", "test", x, labels, (1, 4, 4), (0.0, 1.0))


def test_encoding_matches_the_model_and_is_deterministic():
    model, data = small_model(), small_data()
    enc = encode_facets(model, data, batch_size=10)  # several batches
    with torch.no_grad():
        q = model.encode(data.x)
        probs = model.cluster_probabilities(data.x, use_mean=True)
    for j, name in enumerate(model.names):
        np.testing.assert_allclose(enc.means[j], q[name].mean.numpy(), atol=1e-6)
        np.testing.assert_allclose(enc.probs[j], probs[j].numpy(), atol=1e-6)
        np.testing.assert_array_equal(enc.clusters(j), probs[j].argmax(1).numpy())
        np.testing.assert_allclose(enc.confidence(j), probs[j].max(1).values.numpy(), atol=1e-6)
    again = encode_facets(model, data, batch_size=37)
    np.testing.assert_array_equal(again.probs[0], enc.probs[0])
    sub = encode_facets(model, data, n=5, seed=3)
    assert len(sub.index) == 5 and len(set(sub.index.tolist())) == 5
    np.testing.assert_allclose(sub.means[1], enc.means[1][sub.index], atol=1e-6)


def test_clusters_of_cached_means_match_the_encoding():
    model, data = small_model(), small_data()
    enc = encode_facets(model, data)
    for j, name in enumerate(model.names):
        assert (clusters_of_means(model, name, enc.means[j], batch_size=7) == enc.probs[j].argmax(1)).all()
    with pytest.raises(AtlasError, match="no facet"):
        clusters_of_means(model, "facet9", enc.means[0])


def test_cluster_grid_sorts_clusters_by_mean_confidence_and_members_by_confidence():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 5, size=200)
    pred[pred == 3] = 4  # cluster 3 is empty
    conf = rng.uniform(0.2, 1.0, size=200)
    grid = cluster_grid(pred, conf, n_clusters=5, per_cluster=7)
    # independent: mean confidence per cluster by a loop
    means = {c: conf[pred == c].mean() if (pred == c).any() else 0.0 for c in range(5)}
    assert grid.order.tolist() == sorted(range(5), key=lambda c: -means[c])
    assert grid.order[-1] == 3 and grid.sizes[-1] == 0 and grid.mean_confidence[-1] == 0
    np.testing.assert_allclose(grid.mean_confidence, [means[c] for c in grid.order])
    assert np.all(np.diff(grid.mean_confidence) <= 0)
    for c, size, members in zip(grid.order, grid.sizes, grid.members):
        assert size == (pred == c).sum()
        assert len(members) == min(7, size)
        assert np.all(pred[members] == c)
        expected = sorted(np.flatnonzero(pred == c), key=lambda i: -conf[i])[:7]
        np.testing.assert_array_equal(members, expected)


def test_cluster_grid_refuses_ids_beyond_k():
    with pytest.raises(AtlasError, match="cluster ids"):
        cluster_grid(np.array([0, 5]), np.array([0.9, 0.8]), n_clusters=3)


def test_swap_gives_each_input_the_other_ones_facet():
    za = {"facet0": torch.zeros(1, 2), "facet1": torch.zeros(1, 3)}
    zb = {"facet0": torch.ones(1, 2), "facet1": 2 * torch.ones(1, 3)}
    sa, sb = swapped_latents(za, zb, "facet1")
    assert torch.equal(sa["facet1"], zb["facet1"]) and torch.equal(sa["facet0"], za["facet0"])
    assert torch.equal(sb["facet1"], za["facet1"]) and torch.equal(sb["facet0"], zb["facet0"])
    with pytest.raises(AtlasError, match="no facet"):
        swapped_latents(za, zb, "facet7")


def test_swap_facet_decodes_the_swapped_posterior_means():
    model, data = small_model(), small_data()
    xa, xb = data.x[:2], data.x[2:4]
    hat_a, hat_b = swap_facet(model, xa, xb, "facet0")
    with torch.no_grad():
        qa, qb = model.encode(xa), model.encode(xb)
        want_a = model.decode({"facet0": qb["facet0"].mean, "facet1": qa["facet1"].mean})
        want_b = model.decode({"facet0": qa["facet0"].mean, "facet1": qb["facet1"].mean})
    torch.testing.assert_close(hat_a, want_a)
    torch.testing.assert_close(hat_b, want_b)
    # swapping a facet with itself is a reconstruction
    same_a, _ = swap_facet(model, xa, xa, "facet1")
    with torch.no_grad():
        torch.testing.assert_close(same_a, model.decode({n: q.mean for n, q in qa.items()}))


def test_cluster_mean_grid_decodes_each_pair_of_means():
    model = small_model()
    images = cluster_mean_grid(model, rows=1, cols=0, row_clusters=[3, 0], col_clusters=[2, 1, 0])
    assert images.shape == (2, 3, 1, 4, 4)
    with torch.no_grad():
        one = model.decode({"facet0": model.means[0][1][None], "facet1": model.means[1][0][None]})
    torch.testing.assert_close(images[1, 1], one[0])
    with pytest.raises(AtlasError, match="two different facets"):
        cluster_mean_grid(model, 0, 0)


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_mixture_parameters_give_full_covariances(covariance):
    model = small_model(covariance)
    means, covs, pi = mixture_parameters(model, 1)
    assert means.shape == (4, 3) and covs.shape == (4, 3, 3) and pi.shape == (4,)
    np.testing.assert_allclose(pi.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(covs, np.swapaxes(covs, 1, 2), atol=1e-7)


def test_ellipse_of_an_axis_aligned_gaussian_has_the_right_axes():
    outline = ellipse(np.array([1.0, -2.0]), np.diag([4.0, 1.0]), n_sd=2.0, n_points=201)
    centred = outline - [1.0, -2.0]
    # the 2-sd contour of N(0, diag(4, 1)): x^2 / 4^2 + y^2 / 2^2 = 1
    np.testing.assert_allclose((centred[:, 0] / 4) ** 2 + (centred[:, 1] / 2) ** 2, 1.0, atol=1e-9)
    np.testing.assert_allclose(np.abs(centred).max(0), [4.0, 2.0], atol=1e-3)
    np.testing.assert_allclose(outline[0], outline[-1])


def test_ellipse_of_a_rotated_gaussian_follows_its_eigenvectors():
    rot = np.array([[np.cos(0.5), -np.sin(0.5)], [np.sin(0.5), np.cos(0.5)]])
    cov = rot @ np.diag([9.0, 0.25]) @ rot.T
    centred = ellipse(np.zeros(2), cov, n_sd=1.0, n_points=401)
    # Mahalanobis radius 1 everywhere, longest radius 3 along the first eigenvector
    maha = np.einsum("ni,ij,nj->n", centred, np.linalg.inv(cov), centred)
    np.testing.assert_allclose(maha, 1.0, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(centred, axis=1).max(), 3.0, atol=1e-3)


def test_projection_is_raw_in_2d_and_pca_above():
    rng = np.random.default_rng(0)
    z2 = rng.normal(size=(50, 2))
    means, covs = rng.normal(size=(3, 2)), np.stack([np.diag([1.0, 2.0])] * 3)
    raw = project_facet(z2, means, covs)
    assert raw.method == "raw"
    np.testing.assert_allclose(raw.points, z2)
    np.testing.assert_allclose(raw.covariances, covs)
    # 3-D points that vary only in the plane of axes 0 and 2: PCA recovers that plane
    u = rng.normal(size=(100, 2))
    u, _ = np.linalg.qr(u - u.mean(0))  # centred, uncorrelated columns
    z3 = np.zeros((100, 3))
    z3[:, 0], z3[:, 2] = 50 * u[:, 0], 10 * u[:, 1]
    cov3 = np.stack([np.diag([1.0, 7.0, 3.0])] * 2)
    proj = project_facet(z3, np.zeros((2, 3)), cov3)
    assert proj.method == "pca"
    np.testing.assert_allclose(np.abs(proj.axes), [[1, 0, 0], [0, 0, 1]], atol=1e-6)
    np.testing.assert_allclose(proj.explained.sum(), 1.0, atol=1e-6)
    # the projected covariance is the marginal in that plane: the variance 7 of axis 1 is gone
    np.testing.assert_allclose(proj.covariances[0], np.diag([1.0, 3.0]), atol=1e-6)
    with pytest.raises(AtlasError, match="same facet"):
        project_facet(z3, np.zeros((2, 2)), cov3)


def test_facet_probes_cover_every_facet_label_and_all_facets():
    model, data = small_model(), small_data(60)
    table = facet_probes(model, data, data, n_train=40, n_test=20, epochs=2)
    assert set(table) == {"facet0", "facet1", "all"}
    assert all(set(row) == {"parity"} and 0 <= row["parity"] <= 1 for row in table.values())
