"""Shared fixtures: a small, quickly trained digits VAE reused across tests."""

from __future__ import annotations

import pytest
import torch

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


@pytest.fixture(scope="session")
def trained_digits_run(tmp_path_factory):
    """An MLP VAE trained for 600 steps on the 8x8 digits (a few seconds on a CPU)."""
    from engine.training import RunSpec, train

    root = tmp_path_factory.mktemp("runs")
    spec = RunSpec.from_preset("digits-vae", {"train": dict(TINY_TRAIN)})
    return train(spec, runs_root=root, name="fixture")
