"""Clustering accuracy, NMI/ARI and the latent probe against truths computed independently.

Hungarian matching is checked against brute force over every assignment of clusters to
classes; the majority mapping against a table worked by hand; the probe against latents
that do or do not carry the label.
"""

import itertools

import numpy as np
import pytest
import torch

from engine.diagnostics.clustering import (
    ari,
    clustering_report,
    display_order,
    nmi,
    probe_accuracy,
    probe_table,
)
from engine.errors import AtlasError
from engine.models.cluster_accuracy import cluster_accuracy, confusion_matrix


def from_table(table) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ids and labels whose contingency table is `table` (rows clusters, cols classes)."""
    pred, labels = [], []
    for (k, c), count in np.ndenumerate(np.asarray(table)):
        pred += [k] * count
        labels += [c] * count
    return np.array(pred), np.array(labels)


def brute_force_accuracy(table: np.ndarray) -> float:
    """Best one-to-one assignment of clusters to distinct classes (K <= C), by enumeration."""
    k, c = table.shape
    best = max(sum(table[i, cls] for i, cls in enumerate(perm)) for perm in itertools.permutations(range(c), k))
    return best / table.sum()


def test_permuted_labels_give_accuracy_one():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=300)
    perm = np.array([3, 0, 4, 1, 2])
    acc = cluster_accuracy(perm[labels], labels)
    assert acc.accuracy == 1.0
    assert acc.method == "hungarian"
    assert acc.mapping == {int(perm[c]): c for c in range(5)}
    assert acc.note == ""


def greedy_accuracy(table: np.ndarray) -> float:
    """Match the largest cell left whose cluster and class are both still free, repeatedly."""
    free_k, free_c, matched = set(range(table.shape[0])), set(range(table.shape[1])), 0
    while free_k and free_c:
        k, c = max(((k, c) for k in free_k for c in free_c), key=lambda kc: table[kc])
        matched += table[k, c]
        free_k.remove(k)
        free_c.remove(c)
    return matched / table.sum()


def test_hungarian_on_a_three_by_three_table_beats_greedy():
    # greedy takes the 7 first (cluster 0 -> class 0) and ends at 7 + 5 + 1 = 13;
    # the unique optimum is 0->1, 1->0, 2->2: 6 + 6 + 5 = 17 out of 29
    table = np.array([[7, 6, 0], [6, 1, 0], [0, 4, 5]])
    acc = cluster_accuracy(*from_table(table))
    greedy = greedy_accuracy(table)
    assert greedy == pytest.approx(13 / 29)
    assert acc.accuracy > greedy, (acc.accuracy, greedy)
    assert acc.accuracy == pytest.approx(17 / 29)
    assert acc.mapping == {0: 1, 1: 0, 2: 2}
    assert acc.accuracy == pytest.approx(brute_force_accuracy(table))


def test_hungarian_matches_brute_force_on_random_tables():
    rng = np.random.default_rng(1)
    for _ in range(150):
        c = int(rng.integers(2, 6))
        k = int(rng.integers(1, c + 1))  # K == C and K < C both use Hungarian
        table = rng.integers(0, 8, size=(k, c))
        table[0, 0] += 1  # at least one example
        acc = cluster_accuracy(*from_table(table), n_clusters=k, n_classes=c)
        assert acc.method == "hungarian"
        assert acc.accuracy == pytest.approx(brute_force_accuracy(table))
        assert len(set(acc.mapping.values())) == k  # one to one
        assert (acc.note != "") == (k < c)


def test_majority_mapping_by_hand():
    # K = 4 clusters, C = 2 classes. Majority classes: 0, 1, 0 (tie -> lowest), 1.
    # Correct: 3 + 2 + 2 + 4 = 11 of 15.
    table = [[3, 1], [0, 2], [2, 2], [1, 4]]
    acc = cluster_accuracy(*from_table(table))
    assert acc.method == "majority"
    assert acc.accuracy == pytest.approx(11 / 15)
    assert acc.mapping == {0: 0, 1: 1, 2: 0, 3: 1}
    np.testing.assert_array_equal(acc.table, table)


def test_declared_empty_cluster_counts_towards_k_and_gets_no_class():
    pred, labels = from_table([[4, 0], [0, 3]])
    acc = cluster_accuracy(pred, labels, n_clusters=3)  # cluster 2 is empty
    assert acc.method == "majority"
    assert acc.n_clusters == 3 and acc.n_classes == 2
    assert acc.accuracy == 1.0
    assert acc.mapping == {0: 0, 1: 1}


def test_fewer_clusters_than_classes_says_so():
    pred, labels = from_table([[5, 1, 3], [0, 4, 2]])
    acc = cluster_accuracy(pred, labels)
    assert acc.method == "hungarian"
    assert acc.accuracy == pytest.approx(9 / 15)
    assert "unmatched" in acc.note


def test_confusion_matrix_counts_pairs_and_display_order_diagonalises():
    rng = np.random.default_rng(2)
    pred = rng.integers(0, 4, size=200)
    labels = rng.integers(0, 3, size=200)
    table = confusion_matrix(pred, labels, 4, 3)
    expected = np.zeros((4, 3), dtype=int)
    for k, c in zip(pred, labels):
        expected[k, c] += 1
    np.testing.assert_array_equal(table, expected)

    table = np.array([[0, 9], [8, 1], [0, 0], [2, 5]])
    order = display_order(table, {0: 1, 1: 0, 3: 1})
    # class 0 first (cluster 1), then class 1 by size (cluster 0 with 9, cluster 3 with 7), empty last
    np.testing.assert_array_equal(order, [1, 0, 3, 2])


def test_nmi_and_ari_of_a_relabelling_are_one_and_of_independent_labels_about_zero():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 6, size=20_000)
    relabelled = np.array([5, 3, 1, 0, 2, 4])[labels]
    assert nmi(relabelled, labels) == pytest.approx(1.0)
    assert ari(relabelled, labels) == pytest.approx(1.0)
    independent = rng.integers(0, 6, size=20_000)
    assert abs(ari(independent, labels)) < 0.005
    assert nmi(independent, labels) < 0.005


def test_clustering_report_covers_every_label_column():
    rng = np.random.default_rng(4)
    shape = rng.integers(0, 3, size=500)
    colour = rng.integers(0, 4, size=500)
    pred = torch.from_numpy(shape * 4 + colour)  # 12 clusters that split both labels exactly
    report = clustering_report(pred, {"shape": shape, "colour": colour.astype(float)})
    assert set(report) == {"shape", "colour"}
    for row in report.values():
        assert row["method"] == "majority"
        assert row["accuracy"] == 1.0
        assert set(row) == {"accuracy", "method", "nmi", "ari", "note"}
    assert report["shape"]["ari"] < 1.0  # more clusters than classes: ARI is below 1


def separable_latent(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Three classes split by two hyperplanes of a 4-D latent, with a margin, at an odd scale."""
    z = rng.normal(size=(n, 4))
    y = (z[:, 0] > 0).astype(int) + (z[:, 1] > 0.5).astype(int)
    keep = (np.abs(z[:, 0]) > 0.1) & (np.abs(z[:, 1] - 0.5) > 0.1)
    return 100.0 + 50.0 * z[keep], y[keep]


def test_probe_reads_a_separable_latent():
    rng = np.random.default_rng(5)
    z_train, y_train = separable_latent(1500, rng)
    z_test, y_test = separable_latent(1500, rng)
    assert probe_accuracy(z_train, y_train, z_test, y_test) > 0.95


def test_probe_on_an_independent_latent_is_at_chance():
    # y uniform over 4 classes and independent of z: any classifier is right 1/4 of the
    # time in expectation; sd of the test accuracy on 2,000 points is about 0.01
    rng = np.random.default_rng(6)
    z = rng.normal(size=(4000, 3))
    y = rng.integers(0, 4, size=4000)
    acc = probe_accuracy(z[:2000], y[:2000], z[2000:], y[2000:], epochs=10)
    assert acc == pytest.approx(0.25, abs=0.04)


def test_probe_is_deterministic_and_leaves_global_state_alone():
    rng = np.random.default_rng(7)
    z = rng.normal(size=(600, 2))
    y = (z[:, 0] + 0.3 * rng.normal(size=600) > 0).astype(int)
    torch.manual_seed(123)
    expected_draw = torch.rand(1)
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    first = probe_accuracy(z[:300], y[:300], z[300:], y[300:], epochs=5, seed=3)
    assert torch.equal(torch.rand(1), expected_draw)
    assert torch.get_num_threads() == threads
    second = probe_accuracy(z[:300], y[:300], z[300:], y[300:], epochs=5, seed=3)
    assert first == second


def test_probe_table_has_every_facet_and_label():
    rng = np.random.default_rng(8)
    z1, digit = separable_latent(800, rng)
    z2 = rng.normal(size=(len(z1), 2))
    style = rng.integers(0, 2, size=len(z1))
    half = len(z1) // 2
    split = lambda a: (a[:half], a[half:])  # noqa: E731
    table = probe_table(
        {"z1": split(z1), "z2": split(z2)},
        {"digit": split(digit), "style": split(style)},
        epochs=40,
        hidden=(32,),
        lr=1e-2,
    )
    assert set(table) == {"z1", "z2"}
    assert all(set(row) == {"digit", "style"} for row in table.values())
    assert table["z1"]["digit"] > 0.9
    assert table["z2"]["digit"] < 0.7


GOOD = np.array([0, 1, 1, 2])


@pytest.mark.parametrize(
    "pred, labels, match",
    [
        (GOOD, GOOD[:3], "one entry per example"),
        (np.array([0, -1, 1, 2]), GOOD, ">= 0"),
        (GOOD, np.array([0.0, 0.5, 1.0, 2.0]), "integer ids"),
        (GOOD, np.array([0.0, np.nan, 1.0, 2.0]), "integer ids"),
        (GOOD, np.array(["a", "b", "a", "b"]), "integer ids"),
        (np.array([], dtype=int), np.array([], dtype=int), "empty"),
        (GOOD.reshape(2, 2), GOOD, "1-D"),
    ],
)
def test_bad_cluster_inputs_raise_atlas_error(pred, labels, match):
    for fn in (cluster_accuracy, nmi, ari):
        with pytest.raises(AtlasError, match=match):
            fn(pred, labels)


def test_ids_beyond_the_declared_counts_raise_atlas_error():
    with pytest.raises(AtlasError, match="only ids 0..1"):
        confusion_matrix(GOOD, GOOD, n_clusters=2, n_classes=3)
    with pytest.raises(AtlasError, match="at least one"):
        clustering_report(GOOD, {})


def test_bad_probe_inputs_raise_atlas_error():
    z = np.zeros((4, 2))
    with pytest.raises(AtlasError, match="rows"):
        probe_accuracy(z, GOOD[:3], z, GOOD)
    with pytest.raises(AtlasError, match="latent dimensions"):
        probe_accuracy(z, GOOD, np.zeros((4, 3)), GOOD)
    with pytest.raises(AtlasError, match="NaN"):
        probe_accuracy(np.full((4, 2), np.nan), GOOD, z, GOOD)
    with pytest.raises(AtlasError, match="empty"):
        probe_accuracy(np.zeros((0, 2)), np.array([], dtype=int), z, GOOD)
    with pytest.raises(AtlasError, match="integer ids"):
        probe_accuracy(z, GOOD + 0.5, z, GOOD)
