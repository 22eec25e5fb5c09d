"""engine.diagnostics.global_latents: the Fig. 4.4 panels, structured test groups, group
posteriors, the beta map and Table 4.2's classifiers, against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.data import load_dataset
from engine.data.groups import RANDOM, SERIES, series_digits
from engine.diagnostics.global_latents import (
    GroupPosteriors,
    beta_map,
    chance_level,
    classifier_table,
    component_usage,
    global_local_panels,
    group_posteriors,
    group_structures,
    panel_components,
    posterior_features,
    separation,
    spread_and_width,
    structured_groups,
)
from engine.errors import AtlasError
from engine.models import build_model
from engine.models.ugvae import global_local_grid


def small(**overrides):
    torch.manual_seed(0)
    values = dict(
        input_shape=[1, 8, 8], components=4, local_dim=3, global_dim=5, hidden=[16], cluster_hidden=8, prior_hidden=8
    )
    return build_model("ugvae", {**values, **overrides})


@pytest.fixture(scope="module")
def digits_test():
    return load_dataset("digits", split="test")


# -- components and panels ---------------------------------------------------------------------------------
def test_the_panels_are_the_grids_of_their_components():
    model = small()
    panels = global_local_panels(model, [2, 0, 3], n_rows=5, n_cols=5, beta_span=1.2, z_span=2.0)
    assert panels.shape == (3, 5, 5, 1, 8, 8)
    for panel, component in zip(panels, (2, 0, 3)):
        grid = global_local_grid(model, component, n_rows=5, n_cols=5, beta_span=1.2, z_span=2.0)
        torch.testing.assert_close(panel.reshape(25, 1, 8, 8), grid)
    with pytest.raises(AtlasError, match="component must be an integer in 0..3"):
        global_local_panels(model, [4])
    with pytest.raises(AtlasError, match="at least one component"):
        global_local_panels(model, [])
    with pytest.raises(AtlasError, match="no global latent"):
        global_local_panels(small(variant="gmvae"), [0])


def test_component_usage_counts_the_argmax_component(digits_test):
    model = small()
    with torch.no_grad():  # make component 2 win for every input: a large bias on its logit
        model.cluster_encoder[-1].bias.copy_(torch.tensor([0.0, 0.0, 50.0, 0.0]))
    usage = component_usage(model, digits_test, n=250, chunk=100)
    assert usage.tolist() == [0, 0, 250, 0]
    assert panel_components(np.array([3, 9, 9, 1]), 3) == [1, 2, 0]  # most used first, ties in order
    assert panel_components(np.array([5]), 3) == [0]
    assert component_usage(small(variant="mlvae", components=1), digits_test, n=40).tolist() == [40]


# -- structured groups -----------------------------------------------------------------------------------
def test_structured_groups_share_what_they_are_named_for(digits_test):
    digits = digits_test.labels["digit"].values
    assert group_structures(digits_test) == ["parity", "series", "label:digit"]
    assert "domains" in group_structures(load_dataset("digits-domains", split="test"))
    parity = structured_groups(digits_test, "parity", 8, epochs=2, seed=1)
    assert parity.names == {0: "even", 1: "odd"} and parity.group_size == 8
    for group, kind in zip(parity.groups, parity.kinds):
        assert (digits[group] % 2 == kind).all()
    assert len(parity) == 2 * sum(int((digits % 2 == p).sum()) // 8 for p in (0, 1))
    series = structured_groups(digits_test, "series", 10)
    for group, kind in zip(series.groups, series.kinds):
        assert digits[group].tolist() == series_digits(SERIES[kind], 10).tolist()
    mixed = structured_groups(digits_test, "label:digit", 12, random_share=0.25, epochs=3)
    structured = int((mixed.kinds != RANDOM).sum())
    assert int((mixed.kinds == RANDOM).sum()) == round(structured / 3) and mixed.names[RANDOM] == "random"
    assert mixed.names[7] == "7" and set(np.unique(mixed.kinds)) == {RANDOM, *range(10)}
    randoms = mixed.groups[mixed.kinds == RANDOM]
    assert all(len(torch.unique(g)) == 12 for g in randoms)  # a random group has no example twice
    domains_data = load_dataset("digits-domains", split="test")
    domains = structured_groups(domains_data, "domains", 16)
    for group, kind in zip(domains.groups, domains.kinds):
        assert (domains_data.labels["domain"].values[group] == kind).all()
    assert domains.names == {0: "digits", 1: "inverted"}
    with pytest.raises(AtlasError, match="cannot be grouped by 'domains'; choose one of parity, series"):
        structured_groups(digits_test, "domains", 16)
    with pytest.raises(AtlasError, match="random_share must be in"):
        structured_groups(digits_test, "parity", 16, random_share=1.0)


def test_group_posteriors_are_each_groups_own_posterior(digits_test):
    model = small()
    groups = structured_groups(digits_test, "parity", 8, random_share=0.2)
    post = group_posteriors(model, digits_test, groups, chunk_rows=24)  # 3 groups a chunk
    assert post.mean.shape == (len(groups), 5) and np.array_equal(post.kinds, groups.kinds)
    with torch.no_grad():
        for i in (0, 4, len(groups) - 1):
            q = model.encode_group(digits_test.x[groups.groups[i]])
            np.testing.assert_allclose(post.mean[i], q.mean.numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(post.sd[i], q.logvar.mul(0.5).exp().numpy(), rtol=1e-5)


# -- the map ---------------------------------------------------------------------------------------------
def test_the_map_of_means_in_a_plane_keeps_their_distances_and_the_path_is_straight():
    rng = np.random.default_rng(0)
    plane = np.linalg.qr(rng.standard_normal((6, 2)))[0]  # an orthonormal basis of a plane in 6-D
    means = rng.standard_normal((30, 2)) * [3.0, 1.0] @ plane.T + 4.0
    bmap = beta_map(means, 3, 17, steps=5)
    assert bmap.method == "pca" and bmap.points.shape == (30, 2) and bmap.path.shape == (5, 2)
    distances = np.linalg.norm(means[:, None] - means[None], axis=-1)
    mapped = np.linalg.norm(bmap.points[:, None] - bmap.points[None], axis=-1)
    np.testing.assert_allclose(mapped, distances, atol=1e-9)
    np.testing.assert_allclose(bmap.explained.sum(), 1.0)
    assert bmap.explained[0] > bmap.explained[1]
    np.testing.assert_allclose(bmap.path[[0, -1]], bmap.points[[3, 17]])
    np.testing.assert_allclose(np.diff(bmap.path, axis=0), np.diff(bmap.path, axis=0)[:1].repeat(4, 0))
    np.testing.assert_allclose(bmap.path_betas[2], (means[3] + means[17]) / 2)
    raw = beta_map(means[:, :1], 0, 1, steps=3)
    assert raw.method == "raw" and np.array_equal(raw.points[:, 0], means[:, 0]) and not raw.points[:, 1].any()
    with pytest.raises(AtlasError, match="group b must be in 0..29"):
        beta_map(means, 0, 30)


# -- Table 4.2 -------------------------------------------------------------------------------------------
def synthetic(n: int, gap: float, seed: int) -> GroupPosteriors:
    """Two kinds of groups whose means differ by `gap` along the first of 4 dims, and random
    groups halfway between them, spread like either kind."""
    rng = np.random.default_rng(seed)
    kinds = np.repeat([0, 1, RANDOM], n)
    centre = np.select([kinds == 0, kinds == 1], [-gap / 2, gap / 2], 0.0)
    mean = rng.standard_normal((3 * n, 4))
    mean[:, 0] += centre
    return GroupPosteriors(mean, np.full((3 * n, 4), 0.1), kinds, {0: "a", 1: "b", RANDOM: "random"})


def test_the_classifiers_tell_separated_kinds_apart_and_the_random_class_costs_accuracy():
    train, test = synthetic(60, 8.0, 0), synthetic(60, 8.0, 1)
    rows = classifier_table(train, test, draws=3, seed=0)
    assert [(r["classes"], r["classifier"]) for r in rows] == [
        ("a vs b", "linear SVM"),
        ("a vs b", "RBF SVM"),
        ("a vs b vs random", "linear SVM"),
        ("a vs b vs random", "RBF SVM"),
    ]
    two, three = rows[:2], rows[2:]
    assert all(r["test_accuracy"] > 0.97 for r in two)  # 8 sd apart
    # random groups sit 4 sd from each kind: the best rule errs on ~3% of the groups
    assert all(0.85 < r["test_accuracy"] < 0.99 for r in three)
    assert all(r3["test_accuracy"] < r2["test_accuracy"] for r2, r3 in zip(two, three))
    assert two[0]["test_chance"] == 0.5 and abs(three[0]["test_chance"] - 1 / 3) < 1e-12
    assert two[0]["train_groups"] == 120 and three[0]["test_groups"] == 180 and two[0]["draws_per_group"] == 3
    same = classifier_table(synthetic(60, 0.0, 2), synthetic(60, 0.0, 3), draws=0)
    assert all(r["test_accuracy"] < 0.68 for r in same[:2])  # nothing to tell: near chance (0.5)


def test_posterior_draws_scatter_around_the_means_by_their_sd():
    post = GroupPosteriors(
        np.array([[0.0, 10.0], [5.0, 5.0]]), np.array([[1.0, 0.1], [2.0, 0.0]]), np.array([0, 1]), {}
    )
    x, y = posterior_features(post, draws=20000, seed=4)
    assert x.shape == (40000, 2) and (np.bincount(y) == 20000).all()
    for kind in (0, 1):
        np.testing.assert_allclose(x[y == kind].mean(0), post.mean[kind], atol=0.05)
        np.testing.assert_allclose(x[y == kind].std(0), post.sd[kind], atol=0.05)
    means, kinds = posterior_features(post, keep=np.array([False, True]))
    assert np.array_equal(means, post.mean[1:]) and kinds.tolist() == [1]


def test_separation_is_the_silhouette_of_the_means_by_kind():
    """Against the silhouette computed by hand: for each point, a = mean distance to its own kind,
    b = smallest mean distance to another kind, s = (b - a) / max(a, b), averaged."""
    rng = np.random.default_rng(5)
    mean = rng.standard_normal((12, 3)) + np.repeat([[0, 0, 0], [2, 0, 0], [0, 3, 0]], 4, 0)
    kinds = np.repeat([0, 1, RANDOM], 4)
    post = GroupPosteriors(mean, np.ones_like(mean), kinds, {})

    def by_hand(keep):
        m, k = mean[keep], kinds[keep]
        d = np.linalg.norm(m[:, None] - m[None], axis=-1)
        s = []
        for i in range(len(m)):
            own = (k == k[i]) & (np.arange(len(m)) != i)
            a = d[i, own].mean()
            b = min(d[i, k == other].mean() for other in np.unique(k) if other != k[i])
            s.append((b - a) / max(a, b))
        return np.mean(s)

    np.testing.assert_allclose(separation(post), by_hand(kinds != RANDOM))
    np.testing.assert_allclose(separation(post, with_random=True), by_hand(np.ones(12, bool)))
    assert chance_level(np.array([0, 0, 1, RANDOM])) == 0.5
    with pytest.raises(AtlasError, match="at least two kinds"):
        separation(GroupPosteriors(mean[:4], mean[:4], kinds[:4], {}))


def test_spread_and_width_compare_the_means_scatter_with_the_posteriors_width():
    mean = np.array([[0.0, 1.0], [2.0, 1.0], [100.0, 100.0]])
    sd = np.array([[0.5, 1.5], [0.5, 1.5], [9.0, 9.0]])
    post = GroupPosteriors(mean, sd, np.array([0, 1, RANDOM]), {})
    assert spread_and_width(post) == (0.5, 1.0)  # dims: sds 1 and 0 of the means; widths 0.5 and 1.5
    spread, width = spread_and_width(post, with_random=True)
    assert spread > 40 and width == pytest.approx(11 / 3)
