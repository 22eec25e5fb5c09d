"""The Fashion-MNIST presets and demo: the demo's recorded test ELBO, the test images shipped in
assets/data that stand in for the dataset's files where they are missing, the demo's pages on
such a machine, and one training step of each preset."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
import torch
from conftest import demo_run_dir
from streamlit.testing.v1 import AppTest

from app.navigation import PAGES
from app.state import RUN_KEY
from engine.data import fashion_mnist as fm
from engine.data import load_dataset
from engine.errors import AtlasError
from engine.loading import evaluate_bounds, load_run_model
from engine.store import Run
from engine.training import RunSpec, train

ROOT = Path(__file__).resolve().parent.parent
# the demo's seeded test ELBO and IWAE bound (k = 100) on the first 500 test images, as
# scripts/demo_elbos.py computes them (evaluate_bounds, seed 0)
ELBO_500, IWAE_500 = -238.876, -237.137
SHIPPED = 2000  # test images in assets/data/fashion-mnist-test-subset.npz
MODEL_FREE = {p.file for p in PAGES if not p.uses_sidebar_model}


@pytest.fixture
def without_the_files(tmp_path, monkeypatch):
    """The real files' folder; meanwhile the loader looks in empty folders only."""
    monkeypatch.delenv(fm.ENV_VAR, raising=False)
    real_folder = fm.find_folder()
    monkeypatch.setattr(fm, "DEBIAN_FOLDER", tmp_path / "debian")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return real_folder


def readme_figures() -> dict[str, float]:
    """The fashion-vae row of assets/README.md's table: its test ELBO and IWAE bound (10,000 images)."""
    row = next(
        line for line in (ROOT / "assets" / "README.md").read_text().splitlines() if line.startswith("| fashion-vae |")
    )
    elbo, iwae = re.search(r"\| (−[\d.]+) \(IWAE k=1000: (−[\d.]+)\) \|$", row).groups()
    return {"elbo": float(elbo.replace("−", "-")), "iwae": float(iwae.replace("−", "-"))}


def test_the_demo_gives_its_recorded_test_elbo(without_the_files):
    loaded = load_run_model(Run.from_dir(demo_run_dir("fashion-vae"), readonly=True))
    assert loaded.spec.data == {"name": "fashion-mnist", "options": {}}
    model = loaded.model
    shipped = loaded.spec.load_data("test")  # the files are hidden: the shipped images
    full = load_dataset("fashion-mnist", split="test", path=str(without_the_files))
    assert shipped.meta["shipped_subset"] == SHIPPED and len(full) == 10_000
    on_shipped, on_full = (evaluate_bounds(model, data, k=100, n=500) for data in (shipped, full))
    assert on_shipped == on_full  # the same first 500 images
    assert on_full["elbo"] == pytest.approx(ELBO_500, abs=0.01)
    assert on_full["iwae"] == pytest.approx(IWAE_500, abs=0.01)
    assert on_full["elbo"] < on_full["iwae"]
    # the README's figures are over all 10,000 images: the 500's mean lies within four
    # standard errors of the per-image ELBO of it
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(1)
        per_image = model.elbo(full.x[:500]).total
    standard_error = float(per_image.std()) / 500**0.5
    recorded = readme_figures()
    assert abs(recorded["elbo"] - on_full["elbo"]) < 4 * standard_error
    assert recorded["elbo"] < recorded["iwae"] < recorded["elbo"] + 20


def test_the_test_split_falls_back_to_the_shipped_first_images(without_the_files):
    real = fm.read_split(without_the_files, "test", fm.SIZES["test"])
    data = load_dataset("fashion-mnist", split="test")
    assert data.meta["shipped_subset"] == SHIPPED == len(data)
    assert data.meta["path"] == str(fm.SUBSET_FILE)
    assert "first 2,000 of Fashion-MNIST's 10,000 test images" in data.meta["about"]
    assert "apt-get install dataset-fashion-mnist" in data.meta["about"]
    assert torch.equal(data.x, real[0][:SHIPPED]) and torch.equal(data.labels["class"].values, real[1][:SHIPPED])
    assert data.shape == (1, 28, 28) and data.value_range == (0.0, 1.0) and data.x.dtype == torch.float32
    assert data.labels["class"].categories == fm.CLASSES
    # the first 2,000 hold every class, 188 to 219 times each
    assert int(torch.bincount(data.labels["class"].values, minlength=10).min()) == 188


def test_no_fallback_for_the_train_split_nor_for_a_folder_the_user_named(without_the_files, tmp_path, monkeypatch):
    for split in ("train", "all"):
        with pytest.raises(AtlasError, match="are in none of .*apt-get install dataset-fashion-mnist"):
            load_dataset("fashion-mnist", split=split)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AtlasError, match="named by path=...\\) lacks"):
        load_dataset("fashion-mnist", split="test", path=str(tmp_path / "empty"))
    monkeypatch.setenv(fm.ENV_VAR, str(tmp_path / "empty"))
    with pytest.raises(AtlasError, match=f"named by \\${fm.ENV_VAR}\\) lacks"):
        load_dataset("fashion-mnist", split="test")
    monkeypatch.delenv(fm.ENV_VAR)
    monkeypatch.setattr(fm, "SUBSET_FILE", tmp_path / "absent.npz")  # e.g. installed without assets/
    with pytest.raises(AtlasError, match="are in none of"):
        load_dataset("fashion-mnist", split="test")


@pytest.mark.parametrize(
    "arrays, message",
    [
        (None, "not a Fashion-MNIST subset"),  # not an NPZ at all
        ({"images": np.zeros((3, 28, 28), np.uint8)}, "not a Fashion-MNIST subset"),  # no labels
        (
            {"images": np.zeros((3, 28, 28), np.uint8), "labels": np.zeros(4, np.uint8)},
            "uint8 \\(3, 28, 28\\) and labels uint8 \\(4,\\)",
        ),
        (
            {"images": np.zeros((3, 28, 27), np.uint8), "labels": np.zeros(3, np.uint8)},
            "found images uint8 \\(3, 28, 27",
        ),
        ({"images": np.zeros((3, 28, 28)), "labels": np.zeros(3, np.uint8)}, "found images float64"),
        ({"images": np.zeros((3, 28, 28), np.uint8), "labels": np.full(3, 10, np.uint8)}, "holds the label 10, but"),
        ({"images": np.zeros((0, 28, 28), np.uint8), "labels": np.zeros(0, np.uint8)}, "found images uint8 \\(0,"),
    ],
)
def test_a_damaged_subset_file_is_refused(without_the_files, tmp_path, monkeypatch, arrays, message):
    bad = tmp_path / "subset.npz"
    if arrays is None:
        bad.write_bytes(b"not a zip")
    else:
        np.savez_compressed(bad, **arrays)
    monkeypatch.setattr(fm, "SUBSET_FILE", bad)
    with pytest.raises(AtlasError, match=message):
        load_dataset("fashion-mnist", split="test")


@pytest.fixture
def fresh_app_caches():
    """No dataset cached by an earlier page test (app.state keeps them per run folder and split)."""
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.mark.parametrize("page", [p.file for p in PAGES if p.file not in MODEL_FREE])
def test_the_demo_pages_open_without_the_dataset(page, without_the_files, fresh_app_caches, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_ATLAS_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=180)
    at.session_state[RUN_KEY] = f"demo/{demo_run_dir('fashion-vae').name}"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value


@pytest.mark.parametrize("preset", ["fashion-vae", "fashion-conv-vae"])
def test_the_presets_build_and_train_a_step(preset, tmp_path):
    settings = {"steps": 2, "eval_every": 2, "eval_examples": 100, "checkpoint_every": 2, "progress": False}
    spec = RunSpec.from_preset(preset, {"train": settings})
    run = train(spec, runs_root=tmp_path, name=preset)
    config = json.loads((run.dir / "config.json").read_text())
    assert config["data"] == {"name": "fashion-mnist", "options": {}}
    assert config["model"]["input_shape"] == [1, 28, 28] and config["model"]["dataset_size"] == 60_000
    loaded = load_run_model(Run.from_dir(run.dir, readonly=True))
    assert loaded.step == 2
    hidden = [512, 256] if preset == "fashion-vae" else [256]
    assert list(loaded.spec.model["hidden"]) == hidden and loaded.spec.model["latent_dim"] == 16
    x = load_dataset("fashion-mnist", split="test").x[:100]
    with torch.no_grad():
        elbo = loaded.model.elbo(x).total
    # two steps from the initial weights: still near 784 fair coins, log 2 nats each, per image
    assert torch.isfinite(elbo).all() and -784 * np.log(2) * 1.2 < float(elbo.mean()) < -784 * np.log(2) * 0.6
    step, logged = run.metrics.latest("test/elbo")
    assert step == 2 and np.isfinite(logged)
