"""What the Diffusion models page shows: the engine's views (trajectories, noising and
one-step denoising, the bound split by step, the ends of training stages) and the page
itself under Streamlit's AppTest, on a small staged DDPM trained here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from engine.diagnostics.diffusion import (
    at_full_size,
    block_norms_by_time,
    bound_by_steps,
    noised_and_denoised,
    reverse_trajectory,
    stage_ends,
    trajectory_steps,
)
from engine.models.ddpm import DDPM, DDPMConfig
from engine.training import RunSpec, train
from tests.pagetest import image_urls

PAGE = Path(__file__).resolve().parent.parent / "pages" / "diffusion.py"
SMALL = {"widths": [8, 8, 8], "steps": 20, "dropout": 0.0, "stage_steps": [10, 10, 10]}
SHORT = {"steps": 30, "eval_every": 30, "checkpoint_every": 10, "eval_examples": 50, "progress": False}


def small_model() -> DDPM:
    torch.manual_seed(0)
    return DDPM(DDPMConfig(input_shape=(1, 16, 16), **SMALL)).eval()


def test_trajectory_steps_run_from_t_to_zero_finer_near_zero():
    steps = trajectory_steps(250)
    assert steps[0] == 250 and steps[-1] == 0 and steps == sorted(steps, reverse=True)
    gaps = -np.diff(steps)
    assert gaps[-1] < gaps[0]


def test_the_reverse_trajectory_ends_at_the_sample_and_starts_at_the_noise():
    model = small_model()
    tr = reverse_trajectory(model, 3, [20, 10, 0], seed=4)
    direct = model.sample(3, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(tr.x[-1], direct) and torch.equal(tr.x0[-1], tr.x[-1])
    assert tr.x[0].shape == (3, 1, 16, 16) and not torch.allclose(tr.x[0], tr.x[-1])


def test_noising_at_step_zero_is_the_image_and_noise_grows_with_t():
    model = small_model()
    x = torch.rand(4, 1, 16, 16)
    tr = noised_and_denoised(model, x, [0, 2, 10, 20])
    assert torch.allclose(tr.x[0], model.to_images(model.to_process(x)))
    error = [(v - tr.x[0]).pow(2).mean().item() for v in tr.x[1:]]
    assert error == sorted(error)


def test_the_bound_by_steps_adds_up_to_the_bits_per_dimension():
    model = small_model()
    x = torch.rand(5, 1, 16, 16)
    split = bound_by_steps(model, x, seed=2)
    whole = model.bound(x, every_step=True, generator=torch.Generator().manual_seed(2))
    assert split.steps.shape == (19,)
    assert split.total == pytest.approx(model.bits_per_dim(whole).mean().item(), rel=1e-5)


def test_stage_ends_name_each_closing_checkpoint_and_its_level():
    model = small_model()
    assert stage_ends(model, [5, 10, 20, 25, 30, 40]) == [(10, 2), (20, 1), (30, 0)]
    plain = DDPM(DDPMConfig(input_shape=(1, 16, 16), widths=(8, 8, 8), steps=20))
    assert stage_ends(plain, [10, 20]) == []


def test_coarse_images_are_shown_as_blocks_at_full_size():
    x = torch.arange(4.0).reshape(1, 1, 2, 2)
    big = at_full_size(x, 4)
    assert big.shape == (1, 1, 4, 4) and torch.equal(big[0, 0, :2, :2], torch.zeros(2, 2))


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddpm-runs")
    spec = RunSpec.from_preset("digits-ddpm-staged", {"model": dict(SMALL), "train": dict(SHORT)})
    train(spec, runs_root=str(root), name="digits-ddpm-staged")
    return root


def open_page(runs_root, monkeypatch) -> AppTest:
    """The page on the runs under runs_root only (the digits-ddpm-staged demo is on test_pages's list)."""
    monkeypatch.setenv("LATENT_ATLAS_RUNS_DIR", str(runs_root))
    monkeypatch.setattr("app.runs.DEMO_ROOT", Path(str(runs_root)) / "no-demos")
    at = AppTest.from_file(str(PAGE), default_timeout=300)
    return at.run()


def test_the_page_shows_every_view_of_a_staged_run(runs_root, monkeypatch):
    at = open_page(runs_root, monkeypatch)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert [s.value for s in at.subheader] == [
        "Samples",
        "What each training stage learned",
        "The reverse process, step by step",
        "Noising test images, and what the denoiser recovers in one step",
        "Where the bits go: the bound split by step",
        "U-Net block norms by diffusion time",
    ]
    assert len(image_urls(at)) == 4  # samples, stages, trajectory, forward process
    bound = float(at.metric[0].value.split()[0])
    parts = float(at.metric[1].value.split()[0]) + float(at.metric[2].value.split()[0])
    assert bound > parts > 0  # the steps' terms come on top of L_0 and L_T


def test_the_sample_grid_follows_the_seed_and_the_resolution(runs_root, monkeypatch):
    at = open_page(runs_root, monkeypatch)
    before = image_urls(at)[0]
    next(w for w in at.number_input if w.label == "Seed").set_value(5).run()
    after_seed = image_urls(at)[0]
    next(w for w in at.selectbox if w.label == "Resolution").set_value("4×4").run()
    assert not at.exception, [e.value for e in at.exception]
    coarse = image_urls(at)[0]
    assert len({before, after_seed, coarse}) == 3


def test_the_page_says_how_to_train_one_when_there_is_no_diffusion_run(tmp_path, monkeypatch):
    at = open_page(tmp_path, monkeypatch)
    assert not at.exception
    assert "latent-atlas train --preset digits-ddpm" in at.info[0].value


def test_block_norms_follow_the_forward_pass_and_measure_each_block():
    """At initialisation every residual block of equal width is the identity (its last conv is
    zero), so the first encoder block's output is the head's: its norms, recomputed here from
    the same draws of t and noise, match."""
    model = DDPM(DDPMConfig(input_shape=(1, 16, 16), widths=(8, 16, 16), steps=50)).eval()
    x = torch.rand(6, 1, 16, 16)
    norms = block_norms_by_time(model, x, bins=2, seed=3)
    assert norms.blocks == [
        "encoder 16×16 #1",
        "encoder 8×8 #1",
        "encoder 4×4 #1",
        "middle 4×4 #1",
        "middle 4×4 #2",
        "decoder 4×4 #1",
        "decoder 8×8 #1",
        "decoder 16×16 #1",
    ]
    assert norms.edges == [0, 25, 50] and norms.mean.shape == (2, 8)
    g = torch.Generator().manual_seed(3)
    y = model.to_process(x)
    for b, (lo, hi) in enumerate(((0, 25), (25, 50))):
        t = torch.randint(lo + 1, hi + 1, (6,), generator=g)
        noise = torch.randn(y.shape, generator=g)
        with torch.no_grad():
            head = model.unet.heads["0"](model.diffusion.q_sample(y, t, noise))
        assert norms.mean[b, 0] == pytest.approx(head.flatten(1).norm(dim=1).mean().item(), rel=1e-5)
