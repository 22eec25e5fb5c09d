"""Latent maps (engine/projection): encoding, PCA/UMAP/t-SNE with a fitted subsample, the
disk cache, background jobs and the TensorBoard projector bundle."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.manifold import trustworthiness

from engine.errors import AtlasError
from engine.loading import load_run_model
from engine.models.hvae import HVAE, HVAEConfig
from engine.models.mfcvae import MFCVAE, MFCVAEConfig
from engine.models.vae import VAE, VAEConfig
from engine.processes import pid_alive, wait
from engine.projection import (
    MapKey,
    PointsKey,
    ProjectionCache,
    compute_map,
    encode_dataset,
    encode_points,
    export_projector,
    jobs,
    map_job_status,
    projector,
    start_map_job,
)
from engine.projection import cache as cache_module
from engine.projection.encoding import squared_error
from engine.projection.maps import FIT_EPOCHS, exact_knn, pca_basis, weighted_mean_init
from engine.store import Run

DEMO_RUNS = Path(__file__).resolve().parents[1] / "assets" / "runs"


def clusters(n: int, k: int = 5, d: int = 10, spread: float = 0.3, seed: int = 0):
    """n points in k well-separated Gaussian clusters in d dimensions, and their labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 10.0, (k, d))
    labels = rng.integers(0, k, n)
    return (centres[labels] + spread * rng.normal(size=(n, d))).astype(np.float32), labels


def knn_purity(coords: np.ndarray, labels: np.ndarray, k: int = 10) -> np.ndarray:
    """Per point, the share of its k nearest map neighbours that carry its label."""
    index, _ = exact_knn(coords.astype(np.float32), coords.astype(np.float32), k + 1, self_first=True)
    return (labels[index[:, 1:]] == labels[:, None]).mean(1)


POINTS = PointsKey("run-a", 100, "digits", {"size": 8}, "test", 300)


# ---- PCA ----------------------------------------------------------------------------------


def test_pca_of_points_on_a_plane_recovers_the_plane_coordinates():
    rng = np.random.default_rng(1)
    basis, _ = np.linalg.qr(rng.normal(size=(6, 2)))  # orthonormal u, v in R^6
    ab = rng.normal(size=(500, 2)) * [3.0, 1.0]
    ab -= ab.mean(0)
    ab = ab @ np.linalg.svd(ab, full_matrices=False)[2].T  # uncorrelated: the principal axes are a and b
    offset = rng.normal(size=6)
    points = ab @ basis.T + offset
    projection = compute_map(points, "pca")
    assert projection.coords.dtype == np.float32 and projection.coords.shape == (500, 2)
    np.testing.assert_allclose(np.abs(projection.coords), np.abs(ab), atol=1e-4)
    var = ab.var(0)
    np.testing.assert_allclose(projection.explained_variance_ratio, var / var.sum(), rtol=1e-6)
    assert projection.n_fit == 500 and projection.method == "pca"


def test_pca_explained_variance_of_a_known_covariance_and_the_sign_convention():
    rng = np.random.default_rng(2)
    rotation, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    variances = np.array([9.0, 4.0, 1.0, 0.25])
    points = (rng.normal(size=(40_000, 4)) * np.sqrt(variances)) @ rotation.T
    projection = compute_map(points, "pca")
    np.testing.assert_allclose(projection.explained_variance_ratio, variances[:2] / variances.sum(), atol=0.01)
    basis = pca_basis(points, 2)
    largest = np.abs(basis.components).argmax(1)
    assert (basis.components[[0, 1], largest] > 0).all()
    flipped = compute_map(-points, "pca").coords  # same axes, so every coordinate flips
    np.testing.assert_allclose(flipped, -projection.coords, atol=1e-4)


def test_pca_projection_matches_numpy_svd_of_the_centred_points_up_to_sign():
    rng = np.random.default_rng(3)
    points = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 5.0
    coords = pca_basis(points, 2).project(points)
    centred = points - points.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ vt[:2].T
    signs = np.sign((coords * expected).sum(0))
    np.testing.assert_allclose(coords, expected * signs, rtol=1e-4, atol=1e-4)


# ---- UMAP and t-SNE: subsample, then place the rest ---------------------------------------


def test_umap_fits_a_subsample_and_places_every_other_point_near_its_cluster():
    points, labels = clusters(1500)
    stages = []
    projection = compute_map(
        points,
        "umap",
        {"n_epochs": 60},
        fit_size=400,
        seed=3,
        progress=lambda stage, fraction: stages.append((stage, fraction)),
    )
    assert projection.n_fit == 400 and projection.coords.shape == (1500, 2)
    assert np.isfinite(projection.coords).all()
    purity = knn_purity(projection.coords, labels)
    assert purity.mean() > 0.97
    assert trustworthiness(points, projection.coords, n_neighbors=10) > 0.85
    assert "placing" in [s for s, _ in stages] and stages[-1] == ("done", 1.0)
    fractions = [f for _, f in stages]
    assert fractions == sorted(fractions)
    again = compute_map(points, "umap", {"n_epochs": 60}, fit_size=400, seed=3)
    np.testing.assert_array_equal(again.coords, projection.coords)


def test_umap_turns_on_numba_caching_for_umap_functions():
    from engine.projection.numba_cache import cached_functions

    compute_map(clusters(50)[0], "umap", {"n_epochs": 5})
    turned_on = cached_functions()["turned_on"]
    assert "umap.layouts._nb_optimize_layout_euclidean_single_epoch" in turned_on
    assert "umap.umap_.smooth_knn_dist" in turned_on


def test_new_points_start_where_umap_learns_init_graph_transform_puts_them():
    from scipy.sparse import coo_matrix
    from umap.umap_ import init_graph_transform

    rng = np.random.default_rng(5)
    reference = rng.normal(size=(40, 2)).astype(np.float32)
    indices = np.stack([rng.choice(40, 6, replace=False) for _ in range(30)]).astype(np.int32)
    weights = rng.uniform(0.05, 0.9, size=(30, 6)).astype(np.float32)
    weights[3, 2] = weights[3, 4] = 1.0  # a copy of two fitted points: umap takes the lower index
    weights[7] = 0.0  # no neighbour left: NaN
    weights[9, 1:] = 0.0  # one neighbour: its position
    rows = np.repeat(np.arange(30), 6)
    graph = coo_matrix((weights.ravel(), (rows, indices.ravel())), shape=(30, 40)).tocsr()
    graph.eliminate_zeros()
    expected = init_graph_transform(graph, reference)
    assert np.isnan(expected[7]).all() and not np.isnan(np.delete(expected, 7, 0)).any()
    np.testing.assert_allclose(weighted_mean_init(indices, weights, reference), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n, given, fitted_with", [(10_001, None, FIT_EPOCHS), (10_000, None, None), (10_001, 7, 7)])
def test_umap_fits_more_than_10000_points_with_fewer_epochs_unless_told(monkeypatch, n, given, fitted_with):
    import umap

    epochs = []

    def fit_transform(self, x):
        epochs.append(self.n_epochs)
        return np.zeros((len(x), 2), dtype=np.float32)

    monkeypatch.setattr(umap.UMAP, "fit_transform", fit_transform)
    points = np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32)
    compute_map(points, "umap", {"n_epochs": given})
    assert epochs == [fitted_with]


def test_tsne_fits_a_subsample_and_places_the_rest():
    points, labels = clusters(700, k=4)
    projection = compute_map(
        points, "tsne", {"perplexity": 20, "n_iter": 150, "early_exaggeration_iter": 50}, fit_size=300, seed=0
    )
    assert projection.n_fit == 300 and projection.coords.shape == (700, 2)
    assert knn_purity(projection.coords, labels).mean() > 0.95


def test_high_dimensional_points_are_reduced_by_pca_before_the_neighbour_graph():
    points, labels = clusters(300, k=3, d=80)
    projection = compute_map(points, "umap", {"n_epochs": 30, "pca_dims": 10})
    assert projection.params["pca_dims"] == 10
    assert knn_purity(projection.coords, labels).mean() > 0.95


@pytest.mark.parametrize("d", [5, 30])  # the k-d tree and the brute-force path
def test_exact_knn_matches_brute_force(d):
    rng = np.random.default_rng(4)
    ref, query = rng.normal(size=(300, d)).astype(np.float32), rng.normal(size=(70, d)).astype(np.float32)
    index, dist = exact_knn(query, ref, 4, chunk=16)
    full = np.linalg.norm(query[:, None] - ref[None], axis=-1)
    np.testing.assert_array_equal(index, np.argsort(full, 1)[:, :4])
    np.testing.assert_allclose(dist, np.sort(full, 1)[:, :4], rtol=1e-5)
    ref[1] = ref[0]  # a duplicate ties with the point itself
    self_index, self_dist = exact_knn(ref, ref, 3, self_first=True, chunk=64)
    assert (self_index[:, 0] == np.arange(300)).all() and (self_dist[:, 0] == 0).all()
    assert self_index[0, 1] == 1 and self_index[1, 1] == 0


@pytest.mark.parametrize(
    "points, method, params, fit_size, message",
    [
        (np.zeros((20, 3)), "mds", None, None, "unknown map method"),
        (np.zeros((0, 3)), "pca", None, None, "at least 2 points"),
        (np.zeros(5), "pca", None, None, "2-D array"),
        (np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 1.0]]), "pca", None, None, "NaN or infinite"),
        (np.zeros((5, 3)), "umap", None, None, "Use PCA"),
        (np.zeros((20, 3)), "umap", {"neighbours": 5}, None, "unknown umap parameter"),
        (np.zeros((20, 3)), "umap", {"n_neighbors": 2.5}, None, "whole number"),
        (np.zeros((20, 3)), "tsne", {"perplexity": -1}, None, "non-negative"),
        (np.zeros((20, 3)), "umap", None, 3, "fit_size"),
    ],
)
def test_bad_map_input_is_refused_with_a_message(points, method, params, fit_size, message):
    with pytest.raises(AtlasError, match=message):
        compute_map(points, method, params, fit_size)


# ---- cache --------------------------------------------------------------------------------


def test_cache_hit_returns_the_stored_map_without_computing_again(tmp_path, monkeypatch):
    cache = ProjectionCache.for_runs(tmp_path)
    assert cache.root == tmp_path / ".cache" / "projections"
    points = clusters(300)[0]
    calls = []
    real = cache_module.compute_map
    monkeypatch.setattr(cache_module, "compute_map", lambda *a, **k: calls.append(1) or real(*a, **k))
    key = MapKey.create(POINTS, "z", "pca")
    first = cache.get_or_compute(key, points)
    second = cache.get_or_compute(key, points)
    assert len(calls) == 1
    np.testing.assert_array_equal(first.coords, second.coords)
    np.testing.assert_array_equal(first.explained_variance_ratio, second.explained_variance_ratio)
    assert (second.n_fit, second.method, second.params) == (first.n_fit, "pca", {})
    assert ProjectionCache(cache.root).get(key) is not None  # on disk, not only in memory


def test_defaults_spelled_out_name_the_same_map():
    a = MapKey.create(POINTS, "z", "umap", {})
    b = MapKey.create(POINTS, "z", "umap", {"n_neighbors": 15.0, "min_dist": 0.1}, fit_size=20_000)
    assert a.digest() == b.digest()


@pytest.mark.parametrize(
    "change",
    [
        {"points": PointsKey("run-b", 100, "digits", {"size": 8}, "test", 300)},
        {"points": PointsKey("run-a", 200, "digits", {"size": 8}, "test", 300)},
        {"points": PointsKey("run-a", 100, "shapes", {"size": 8}, "test", 300)},
        {"points": PointsKey("run-a", 100, "digits", {"size": 16}, "test", 300)},
        {"points": PointsKey("run-a", 100, "digits", {"size": 8}, "train", 300)},
        {"points": PointsKey("run-a", 100, "digits", {"size": 8}, "test", 301)},
        {"group": "facet1"},
        {"method": "tsne"},
        {"params": {"n_neighbors": 30}},
        {"fit_size": 500},
        {"seed": 1},
    ],
)
def test_every_key_component_invalidates(tmp_path, change):
    cache = ProjectionCache(tmp_path)
    base = dict(points=POINTS, group="facet0", method="umap", params={}, fit_size=None, seed=0)
    cache.put(MapKey.create(**base), compute_map(clusters(30)[0], "pca"))
    assert cache.get(MapKey.create(**base)) is not None
    assert cache.get(MapKey.create(**{**base, **change})) is None


def test_a_new_format_version_invalidates(tmp_path, monkeypatch):
    cache = ProjectionCache(tmp_path)
    key = MapKey.create(POINTS, None, "pca")
    cache.put(key, compute_map(clusters(30)[0], "pca"))
    monkeypatch.setattr(cache_module, "FORMAT_VERSION", cache_module.FORMAT_VERSION + 1)
    assert cache.get(key) is None


@pytest.mark.parametrize("damage", ["garbled tensors", "truncated json", "wrong shape", "missing tensors"])
def test_a_corrupt_entry_is_a_miss_and_is_removed(tmp_path, damage):
    cache = ProjectionCache(tmp_path)
    key = MapKey.create(POINTS, None, "pca")
    cache.put(key, compute_map(clusters(30)[0], "pca"))
    tensors, description = cache.paths("maps", key.digest())
    if damage == "garbled tensors":
        tensors.write_bytes(b"\x00\xff" * 40)
    elif damage == "truncated json":
        description.write_text(description.read_text()[:25])
    elif damage == "wrong shape":
        info = json.loads(description.read_text())
        description.write_text(json.dumps({**info, "n": info["n"] + 1}))
    else:
        tensors.unlink()
    assert cache.get(key) is None
    assert not tensors.exists() and not description.exists()
    cache.put(key, compute_map(clusters(30)[0], "pca"))  # and the slot works again
    assert cache.get(key) is not None


def test_latents_round_trip_and_corruption(tmp_path):
    cache = ProjectionCache(tmp_path)
    model = tiny_vae()
    encoded = encode_dataset(model, torch.rand(40, 1, 8, 8))
    cache.put_latents(POINTS, encoded)
    back = cache.get_latents(POINTS)
    np.testing.assert_array_equal(back.means["z"], encoded.means["z"])
    np.testing.assert_array_equal(back.recon_error, encoded.recon_error)
    assert cache.get_latents(PointsKey("run-a", 101, "digits", {"size": 8}, "test", 300)) is None
    cache.paths("latents", POINTS.digest())[0].write_bytes(b"not safetensors")
    assert cache.get_latents(POINTS) is None


# ---- background jobs ----------------------------------------------------------------------


def wait_for(cache, key, timeout=60.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = map_job_status(cache, key)
        if status and status["state"] != "running":
            return status
        time.sleep(0.2)
    raise AssertionError(f"the job did not finish in {timeout} s: {map_job_status(cache, key)}")


def test_a_background_job_writes_the_map_and_its_status(tmp_path):
    cache = ProjectionCache(tmp_path)
    points = clusters(500)[0]
    key = MapKey.create(POINTS, "z", "pca")
    assert map_job_status(cache, key) is None
    job = start_map_job(cache, key, points, threads=1)
    assert job == key.digest()
    status = wait_for(cache, key)
    assert status["state"] == "done" and status["fraction"] == 1.0 and status["error"] is None
    np.testing.assert_allclose(cache.get(key).coords, compute_map(points, "pca").coords, atol=1e-6)
    assert not jobs.job_paths(cache, job)["lock"].exists()
    assert "threads: 1 (LATENT_ATLAS_THREADS" in jobs.job_paths(cache, job)["log"].read_text()  # chosen, logged
    assert start_map_job(cache, key, points) == job  # cached: nothing started
    assert map_job_status(cache, key)["state"] == "done"


def test_a_failing_job_reports_its_error(tmp_path):
    cache = ProjectionCache(tmp_path)
    key = MapKey(POINTS, "z", "pca", {"bogus": 1}, None, 0)  # not through create: only the child checks
    start_map_job(cache, key, clusters(50)[0], threads=1)
    status = wait_for(cache, key)
    assert status["state"] == "error" and "unknown pca parameter(s) bogus" in status["error"]
    assert cache.get(key) is None


def test_a_running_job_is_not_started_twice_and_a_killed_one_reports_an_error(tmp_path):
    cache = ProjectionCache(tmp_path)
    key = MapKey.create(POINTS, "z", "pca")
    points = clusters(50)[0]
    job = start_map_job(cache, key, points, threads=1)
    lock = jobs.job_paths(cache, job)["lock"]
    pid = int(lock.read_text())
    assert pid_alive(pid, command_contains=job)
    assert start_map_job(cache, key, points) == job
    assert int(lock.read_text()) == pid  # the same child, no second one
    os.kill(pid, signal.SIGKILL)
    assert wait(pid, timeout_s=10)
    status = map_job_status(cache, key)
    assert status["state"] == "error" and "stopped without finishing" in status["error"]
    assert start_map_job(cache, key, points, threads=1) == job  # a dead job's lock does not block a new one
    assert int(lock.read_text()) != pid
    assert wait_for(cache, key)["state"] == "done"


def test_bad_points_are_refused_before_a_job_starts(tmp_path):
    with pytest.raises(AtlasError, match="NaN"):
        start_map_job(ProjectionCache(tmp_path), MapKey.create(POINTS, "z", "pca"), np.full((10, 2), np.nan))
    assert not (tmp_path / "jobs").exists()


# ---- TensorBoard projector bundle ---------------------------------------------------------


def read_zip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_projector_bundle_parses_with_a_header_only_for_several_columns():
    latents = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    meta = pd.DataFrame({"label": np.arange(50) % 10, "error": np.linspace(0, 1, 50)})
    images = torch.rand(50, 1, 8, 8)
    bundle = export_projector(latents, meta, images)
    files = read_zip(bundle.data)
    assert set(files) == {"tensors.tsv", "metadata.tsv", "sprite.png", "projector_config.pbtxt", "config.json"}
    rows = files["tensors.tsv"].decode().splitlines()
    assert len(rows) == 50 and all(len(r.split("\t")) == 4 for r in rows)
    np.testing.assert_allclose(np.loadtxt(io.StringIO(files["tensors.tsv"].decode())), latents, rtol=1e-6)
    lines = files["metadata.tsv"].decode().splitlines()
    assert lines[0] == "label\terror" and len(lines) == 51
    sprite = Image.open(io.BytesIO(files["sprite.png"]))
    assert sprite.size == (64, 64)  # ceil(sqrt(50)) = 8 columns of 8 px
    config = json.loads(files["config.json"])["embeddings"][0]
    assert config["tensorShape"] == [50, 4] and config["sprite"]["singleImageDim"] == [8, 8]
    pbtxt = files["projector_config.pbtxt"].decode()
    assert 'tensor_path: "tensors.tsv"' in pbtxt and "single_image_dim: 8" in pbtxt
    assert not bundle.subsampled and bundle.n_points == 50

    single = read_zip(export_projector(latents, meta[["label"]]).data)
    assert single["metadata.tsv"].decode().splitlines()[0] == "0"  # one column: no header row
    assert "sprite.png" not in single


def test_projector_subsamples_when_the_sprite_would_exceed_its_limit(monkeypatch):
    monkeypatch.setattr(projector, "MAX_SPRITE_PX", 64)  # room for 8 x 8 images of 8 px
    latents = np.arange(100 * 2, dtype=np.float32).reshape(100, 2)
    bundle = export_projector(latents, pd.DataFrame({"label": np.arange(100)}), torch.rand(100, 3, 8, 8))
    assert bundle.subsampled and bundle.n_points == 64 and "64 of 100" in bundle.note
    files = read_zip(bundle.data)
    sprite = Image.open(io.BytesIO(files["sprite.png"]))
    assert sprite.size[0] == sprite.size[1] <= 64
    meta = pd.read_csv(io.BytesIO(files["metadata.tsv"]), sep="\t")
    assert list(meta.columns) == ["point", "label"] and len(meta) == 64
    kept = np.loadtxt(io.StringIO(files["tensors.tsv"].decode()))
    np.testing.assert_array_equal(kept, latents[meta["point"].to_numpy()])


def test_projector_refuses_mismatched_inputs():
    with pytest.raises(AtlasError, match="one row per point"):
        export_projector(np.zeros((5, 2)), pd.DataFrame({"a": range(4)}))
    with pytest.raises(AtlasError, match="1 or 3 channels"):
        export_projector(np.zeros((5, 2)), None, torch.rand(5, 2, 4, 4))


# ---- encoding -----------------------------------------------------------------------------


def tiny_vae() -> VAE:
    torch.manual_seed(0)
    return VAE(VAEConfig(input_shape=(1, 8, 8), latent_dim=3, hidden=(16,))).eval()


def test_encode_points_gives_the_models_posterior_means_in_batches():
    model = tiny_vae()
    x = torch.rand(23, 1, 8, 8)
    means = encode_points(model, x, "z", batch_size=5)
    with torch.no_grad():
        direct = model.encode(x)["z"].mean.numpy()
    assert means.dtype == np.float32 and means.shape == (23, 3)
    np.testing.assert_allclose(means, direct, atol=1e-6)
    np.testing.assert_allclose(encode_points(model, x, None, n=7), means[:7], atol=1e-6)


def test_reconstruction_error_is_the_mean_squared_error_of_the_decoded_means():
    model = tiny_vae()
    x = torch.rand(10, 1, 8, 8)
    encoded = encode_dataset(model, x, batch_size=4)
    with torch.no_grad():
        recon = model.decode(model.encode(x)["z"].mean)
    np.testing.assert_allclose(encoded.recon_error, (recon - x).pow(2).flatten(1).mean(1).numpy(), rtol=1e-5)


def test_missing_entries_are_left_out_of_the_reconstruction_error():
    x = torch.tensor([[1.0, math.nan, 3.0], [math.nan, math.nan, math.nan]])
    errors = squared_error(torch.zeros(2, 3), x)
    assert errors[0].item() == pytest.approx(5.0) and math.isnan(errors[1].item())


def test_a_tabular_model_with_missing_values_encodes_its_layers():
    run = Run.from_dir(DEMO_RUNS / "20261201-182127-mixed-hhvaem-4b70", readonly=True)
    loaded = load_run_model(run)
    data = loaded.spec.load_data("test")
    assert torch.isnan(data.x).any()
    encoded = encode_dataset(loaded.model, data, n=100)
    assert {k: v.shape for k, v in encoded.means.items()} == {"z1": (100, 8), "z2": (100, 4)}
    assert np.isfinite(encoded.recon_error).all() and np.isfinite(encoded.group(None)).all()


def test_groups_of_hierarchical_and_multi_facet_models():
    torch.manual_seed(0)
    hvae = HVAE(
        HVAEConfig(input_shape=(1, 8, 8), encoder="8x2,8d2,4x2,4d4,1x1", decoder="1x1,4m1,4x2,8m4,8x2", width=8, zdim=2)
    ).eval()
    x = torch.rand(6, 1, 8, 8)
    encoded = encode_dataset(hvae, x)
    assert list(encoded.means) == [g.name for g in hvae.latent_groups]
    for group in hvae.latent_groups:
        assert encoded.means[group.name].shape == (6, group.size)
    with torch.no_grad():
        np.testing.assert_allclose(encoded.group("layer03"), hvae.encode(x)["layer03"].mean.numpy(), atol=1e-6)
    assert encoded.group(None).shape == (6, sum(g.size for g in hvae.latent_groups))
    mfcvae = MFCVAE(MFCVAEConfig(input_shape=(6,), facet_dims=(3, 2), clusters=(4, 5), hidden=(16, 16))).eval()
    facets = encode_dataset(mfcvae, torch.rand(9, 6))
    assert {k: v.shape for k, v in facets.means.items()} == {"facet0": (9, 3), "facet1": (9, 2)}
    with pytest.raises(AtlasError, match="no latent group 'z'.*facet0, facet1"):
        encode_points(mfcvae, torch.rand(9, 6), "z")


def test_encoding_nothing_is_refused():
    with pytest.raises(AtlasError, match="no examples"):
        encode_points(tiny_vae(), torch.rand(0, 1, 8, 8), "z")
