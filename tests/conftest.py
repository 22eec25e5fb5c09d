"""Shared fixtures: a small, quickly trained digits VAE reused across tests."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest
import torch

DEMO_RUNS = Path(__file__).resolve().parent.parent / "assets" / "runs"

torch.set_num_threads(2)

TINY_TRAIN = {
    "steps": 600,
    "batch_size": 64,
    "log_every": 50,
    "eval_every": 300,
    "eval_examples": 200,
    "checkpoint_every": 300,
    "progress": False,
}


@pytest.fixture
def one_thread():
    """One torch thread for a test, as its timings were measured (a module opts in with
    `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def trained_digits_run(tmp_path_factory):
    """An MLP VAE trained for 600 steps on the 8x8 digits (a few seconds on a CPU)."""
    from engine.training import RunSpec, train

    root = tmp_path_factory.mktemp("runs")
    spec = RunSpec.from_preset("digits-vae", {"train": dict(TINY_TRAIN)})
    return train(spec, runs_root=root, name="fixture")


def demo_run_dir(preset: str) -> Path:
    """The shipped demo run made by `preset`."""
    dirs = [
        d for d in sorted(DEMO_RUNS.iterdir()) if json.loads((d / "config.json").read_text()).get("preset") == preset
    ]
    assert dirs, f"no {preset} demo under {DEMO_RUNS}"
    return dirs[-1]


@lru_cache(maxsize=8)
def demo_model_and_data(preset: str):
    """A demo model (loaded once per test process, read-only use) and its test split."""
    from engine.loading import load_run_model
    from engine.store import Run

    loaded = load_run_model(Run.from_dir(demo_run_dir(preset), readonly=True))
    return loaded.model, loaded.spec.load_data("test")
