"""Reading a TD-VAE (engine/diagnostics/sparse_codes.py) and its page, Receptive fields."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from engine.data import load_dataset
from engine.data.patches import cut
from engine.diagnostics.sparse_codes import (
    contrast_order,
    correlation_study,
    field_census,
    projective_fields,
    texture_decoding,
    unit_statistics,
)
from engine.models import build_model
from engine.store import RunStore
from engine.training import RunSpec, train
from tests.pagetest import assert_clean, image_urls, open_run_page

SMALL = {"input_shape": [1, 8, 8], "z1_dim": 24, "z2_dim": 3, "hidden": [32], "head_hidden": [16]}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("tdvae", SMALL).eval()


@pytest.fixture(scope="module")
def patches():
    return load_dataset("patches", split="test", seed=0, size=8, n=2000)


def test_projective_fields_are_twice_the_shift_times_the_decoder_columns(model):
    fields = projective_fields(model, shift=0.7)
    expected = 1.4 * model.decoder.weight.detach().T.reshape(24, 8, 8).numpy()
    np.testing.assert_allclose(fields, expected, rtol=1e-5, atol=1e-6)


def test_unit_statistics_read_the_laplace_scale_and_the_gaussian_sd(model, patches):
    stats = unit_statistics(model, patches, n=300)
    with torch.no_grad():
        q = model.encode(patches.batch(torch.arange(300)))
    np.testing.assert_allclose(stats["z1"].loc_mean, q["z1"].mean.mean(0).numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["z1"].scale_mean, q["z1"].base_dist.scale.mean(0).numpy(), rtol=1e-4)
    np.testing.assert_allclose(stats["z2"].scale_mean, q["z2"].stddev.mean(0).numpy(), rtol=1e-4)
    np.testing.assert_allclose(stats["z2"].loc_sd, q["z2"].mean.std(0, unbiased=False).numpy(), rtol=1e-3)
    assert stats["z1"].scale_name == "Laplace scale b" and stats["z2"].scale_name == "Gaussian sd"


def test_the_census_counts_every_active_unit_once(model, patches):
    census = field_census(model, patches, n=300)
    assert sum(census.counts.values()) == len(census.units) == len(census.fits) == len(census.labels)
    assert set(census.labels) <= {"localised", "non-localised", "other"}


def test_contrast_order_sorts_by_the_raw_patch_sd(patches):
    order = contrast_order(patches)
    raw_sd = cut(patches.meta["origins"], 8).flatten(1).std(1).numpy()
    assert np.all(np.diff(raw_sd[order]) <= 1e-7)
    assert sorted(order.tolist()) == list(range(len(patches)))


def test_texture_decoding_and_correlations_run_on_both_families(patches):
    for family, extra in (("tdvae", {}), ("tdiwae", {"k": 3})):
        torch.manual_seed(0)
        m = build_model(family, {**SMALL, **extra}).eval()
        train_t = load_dataset("textures", split="train", seed=0, size=8, n=600)
        test_t = load_dataset("textures", split="test", seed=0, size=8, n=600)
        result = texture_decoding(m, train_t, test_t, n_train=400, n_test=100)
        assert 0 <= result.z2.accuracy <= 1 and result.z2.confusion.shape == (5, 5)
        assert result.families == ["gratings", "sticks", "discs", "checks", "bubbles"]
        study = correlation_study(m, patches, n_patches=5, n_samples=100, proposals=5)
        d = len(study.units)
        assert study.example.shape == (d, d) and np.isnan(np.diag(study.example)).all()
        assert len(study.top5_mean) == 5 and np.isfinite(study.consistency)


# -- the page ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tdvae-runs")
    small = {"z1_dim": 24, "z2_dim": 3, "hidden": [32], "head_hidden": [16], "beta_steps": 200}
    spec = RunSpec.from_preset(
        "patches-tdvae",
        {
            "model": small,
            "data": {"options": {"size": 8, "n": 3000, "test_fraction": 0.2}},
            "train": {"steps": 400, "eval_every": 200, "checkpoint_every": 400, "eval_examples": 50, "progress": False},
        },
    )
    train(spec, runs_root=str(root), name="patches-tdvae")
    return root


def open_page(file: str, root: Path, monkeypatch, **state) -> AppTest:
    (info,) = RunStore(root).list_runs()
    return open_run_page(file, root, monkeypatch, f"runs/{info.id}", **state)


def test_the_page_shows_fields_textures_and_the_beta_schedule(runs_root, monkeypatch):
    at = open_page("receptive_fields.py", runs_root, monkeypatch)
    assert_clean(at)
    assert len(image_urls(at)) >= 2  # the gallery and one unit's field beside its fit
    labels = [m.label for m in at.metric]
    assert "Active z1 units" in labels and "z2 decodes the family" in labels
    charts = at.get("plotly_chart")
    assert len(charts) >= 4  # z2 histograms, texture scatter, confusion, KL and beta
    at.toggle(key="corr-on").set_value(True).run()
    assert_clean(at)
    assert "Consistency ratio" in [m.label for m in at.metric]


def test_latent_activity_shows_every_units_location_and_scale(runs_root, monkeypatch):
    at = open_page("latent_activity.py", runs_root, monkeypatch)
    assert_clean(at)
    at.selectbox(key="unit-group").set_value("z1").run()
    assert_clean(at)
    assert any("Laplace scale b" in e.value for ex in at.expander for e in ex.markdown)


def test_importance_weights_put_the_bound_terms_of_the_run_in_a_table(runs_root, monkeypatch):
    at = open_page("importance_weights.py", runs_root, monkeypatch)
    assert_clean(at)
    (table,) = [t for t in at.dataframe if "kl_z1" in t.value.columns]
    row = table.value.iloc[0]
    assert row["training k"] == 0  # a TD-VAE
    assert row["neg_iwae_k100"] <= row["neg_elbo"] + 1e-6  # the IWAE bound is the tighter one
    assert abs(row["neg_elbo"] - (-row["recon"] + row["kl_z1"] + row["kl_z2"])) < 1e-3 * abs(row["neg_elbo"])


def test_the_latent_map_can_plot_two_latent_axes_the_lowest_variance_ones_first(runs_root, monkeypatch):
    at = open_page("latent_map.py", runs_root, monkeypatch, **{"map-method": "axes"})
    assert_clean(at)
    horizontal = next(s for s in at.selectbox if s.label == "Horizontal axis")
    vertical = next(s for s in at.selectbox if s.label == "Vertical axis")
    group = next(s for s in at.selectbox if s.label == "Latent group").value
    from app.state import unit_statistics_table

    (info,) = RunStore(runs_root).list_runs()
    sd = unit_statistics_table(str(info.dir), None)[group].scale_mean
    assert [horizontal.value, vertical.value] == list(np.argsort(sd, kind="stable")[:2])
