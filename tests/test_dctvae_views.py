"""The DCT-VAE page's views (engine.diagnostics.dctvae): the context of test images, a
traversal of one context value, the prior's reverse trajectory, samples with their contexts
and the context's code length; then the page itself under Streamlit's AppTest."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.fft
import torch
import torch.nn.functional as F
from streamlit.testing.v1 import AppTest
from test_dctvae import TINY, tiny

from app.runs import available_runs, run_slug
from app.state import RUN_KEY
from engine.data.base import Dataset
from engine.dct import idct2
from engine.diagnostics.dctvae import (
    context_code_length,
    context_levels,
    context_trajectory,
    context_view,
    level_index,
    level_value,
    samples_with_context,
    traverse_context,
)
from engine.diagnostics.hvae import COLLAPSED_NATS
from engine.errors import AtlasError
from engine.models import build_model
from engine.models.context import quantise
from engine.store import RunStore
from engine.training import RunSpec, train
from tests.pagetest import PAGES, assert_clean, image_urls, open_run_page


def inputs(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


# -- the context of inputs -----------------------------------------------------------------
def test_the_context_image_is_the_inverse_dct_of_the_zero_padded_rescaled_block():
    model = tiny().eval()
    x = inputs()
    view = context_view(model, x)
    scale = model.context.scale
    full = scipy.fft.dct(scipy.fft.dct(x.double().numpy(), type=2, axis=-1), type=2, axis=-2)
    np.testing.assert_allclose(view.scaled.numpy(), full[..., :3, :3] / scale.numpy(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(view.values, quantise(view.scaled, 2))
    padded = F.pad(view.values * scale, (0, 5, 0, 5))
    torch.testing.assert_close(view.image, idct2(padded).clamp(0, 1))
    assert view.levels.dtype == torch.long and view.levels.min() >= 0 and view.levels.max() <= 3
    torch.testing.assert_close(level_value(view.levels, 2), view.values)


def test_a_pooling_context_shows_the_pooled_image():
    model = tiny(context="pool", context_size=4).eval()
    x = inputs()
    view = context_view(model, x)
    pooled = x.reshape(4, 1, 4, 2, 4, 2).mean((3, 5))
    torch.testing.assert_close(view.scaled, 2 * pooled - 1)
    torch.testing.assert_close(view.image, ((view.values + 1) / 2).repeat_interleave(2, -1).repeat_interleave(2, -2))


@pytest.mark.parametrize("bits", [1, 2, 3, 5])
def test_level_indices_round_trip(bits):
    levels = context_levels(bits)
    assert len(levels) == 2**bits and levels[0] > -1 and levels[-1] < 1
    torch.testing.assert_close(level_index(levels, bits), torch.arange(2**bits))
    torch.testing.assert_close(level_value(level_index(levels, bits), bits), levels)
    y = torch.linspace(-1, 1, 501)
    torch.testing.assert_close(level_value(level_index(quantise(y, bits), bits), bits), quantise(y, bits))


# -- the traversal ---------------------------------------------------------------------------
def test_traversal_rows_differ_only_in_the_chosen_coefficient_and_the_own_level_reconstructs():
    model = tiny().eval()
    x = inputs()
    walk = traverse_context(model, x, (0, 1, 2))
    base = model.context.encode(x)
    assert walk.contexts.shape == (4, 4, 1, 3, 3) and walk.decoded.shape == (4, 4, 1, 8, 8)
    other = torch.ones(1, 3, 3, dtype=torch.bool)
    other[0, 1, 2] = False
    for k, value in enumerate(context_levels(2)):
        assert torch.equal(walk.contexts[k][:, other], base[:, other])
        assert (walk.contexts[k][:, 0, 1, 2] == value).all()
        torch.testing.assert_close(walk.context_images[k], model.context.decode(walk.contexts[k]))
    assert not torch.allclose(walk.decoded[0], walk.decoded[-1])  # the decoder reads the context
    # where the moved value is the input's own level, the row is the posterior-mean reconstruction
    params, _ = model.top_down(model.bottom_up(x), 4, mode="mean")
    own = model.likelihood.mean(params)
    levels = level_index(base[:, 0, 1, 2], 2)
    for n in range(4):
        torch.testing.assert_close(walk.decoded[levels[n], n], own[n])


def test_traversal_from_the_prior_shares_each_inputs_noise_across_values():
    model = tiny().eval()
    x = inputs(3)
    walk = traverse_context(
        model,
        x,
        (0, 0, 0),
        [0.25, -0.75, 0.25],
        below="prior",
        temperature=0.5,
        generator=torch.Generator().manual_seed(3),
    )
    torch.testing.assert_close(walk.decoded[0], walk.decoded[2])  # the same value and the same noise
    assert not torch.allclose(walk.decoded[0], walk.decoded[1])
    assert not torch.allclose(walk.decoded[0, 0], walk.decoded[0, 1])  # each input has its own draw
    cold = traverse_context(model, x, (0, 0, 0), [0.25], below="prior", temperature=0.0)
    context = model.context.encode(x)
    context[:, 0, 0, 0] = 0.25
    params, _ = model.top_down(None, 3, mode="mean", context=model.context.decode(context))
    torch.testing.assert_close(cold.decoded[0], model.likelihood.mean(params))  # t = 0: the prior means


@pytest.mark.parametrize(
    "coefficient, values, below, message",
    [
        ((1, 0, 0), None, "posterior", "outside the context"),
        ((0, 3, 0), None, "posterior", "outside the context"),
        ((0, 0, -1), None, "posterior", "outside the context"),
        ((0, 0), None, "posterior", "(channel, i, j)"),
        ((0, 0, 0), [0.5, 1.5], "posterior", "[-1, 1]"),
        ((0, 0, 0), [], "posterior", "at least one value"),
        ((0, 0, 0), None, "both", "below must be"),
    ],
)
def test_traversal_refuses_what_it_cannot_do(coefficient, values, below, message):
    with pytest.raises(AtlasError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        traverse_context(tiny(), inputs(), coefficient, values, below=below)


def test_the_views_refuse_other_models_and_other_shapes():
    hvae = build_model("hvae", {k: v for k, v in TINY.items() if not k.startswith(("context", "prior"))})
    for call in (
        lambda: context_view(hvae, inputs()),
        lambda: context_trajectory(hvae, 2),
        lambda: samples_with_context(hvae, 2),
    ):
        with pytest.raises(AtlasError, match="DCT-VAE"):
            call()
    with pytest.raises(AtlasError, match=r"expected images \(n, 1, 8, 8\)"):
        context_view(tiny(), torch.rand(2, 1, 16, 16))
    with pytest.raises(AtlasError, match="temperature"):
        context_trajectory(tiny(), 2, temperature=-1.0)


# -- the prior's trajectory and samples -----------------------------------------------------
def test_the_trajectorys_last_step_is_the_models_context_sample():
    model = tiny().eval()
    path = context_trajectory(model, 5, 0.8, torch.Generator().manual_seed(4))
    assert path.steps == [3, 2, 1, 0] and len(path.y) == len(path.images) == 4
    drawn = model.sample_context(5, 0.8, torch.Generator().manual_seed(4))
    torch.testing.assert_close(path.sample, drawn, rtol=0, atol=0)
    torch.testing.assert_close(quantise(path.y[-1], 2), path.sample)
    torch.testing.assert_close(path.sample_image, model.context.decode(drawn))
    torch.testing.assert_close(path.images[-1], model.context.decode(path.y[-1].clamp(-1, 1)))
    assert path.y[0].std() > 0.3  # y_T: noise at temperature 0.8


def test_at_temperature_zero_the_trajectory_starts_at_zero_and_every_draw_is_the_same():
    path = context_trajectory(tiny().eval(), 3, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(path.y[0], torch.zeros_like(path.y[0]))
    for y in path.y:
        torch.testing.assert_close(y, y[:1].expand_as(y), rtol=0, atol=1e-6)  # equal up to rounding


def test_samples_come_with_the_context_they_were_decoded_from():
    model = tiny().eval()
    result = samples_with_context(model, 3, [1.0, 0.4], seed=5)
    for t, context, image, sample in zip(result.temperatures, result.contexts, result.context_images, result.samples):
        torch.testing.assert_close(sample, model.sample(3, t, torch.Generator().manual_seed(5)))
        torch.testing.assert_close(image, model.context.decode(context))
        torch.testing.assert_close(quantise(context, 2), context)  # on the levels
    assert not torch.allclose(result.samples[0], result.samples[1])


def test_the_code_length_is_the_bound_per_input_whatever_the_batch():
    model = tiny()  # in training mode: the measurement switches to every step and back
    x = inputs(6)
    data = Dataset("random", "test", x, {}, (1, 8, 8), (0.0, 1.0))
    whole = context_code_length(model, data, n=6, batch_size=6)
    split = context_code_length(model, data, n=5, batch_size=2)
    assert model.training and whole.shape == (6,) and split.shape == (5,)
    torch.testing.assert_close(split, whole[:5])
    model.eval()
    expected = -model.context_log_prior(model.context.encode(x), fixed_noise=True).double()
    torch.testing.assert_close(whole, expected)
    assert (whole > 0).all()  # a discrete context costs a positive number of nats


# -- the pages -----------------------------------------------------------------------------------
SMALL_LAYERS = {"encoder": "16x1,16d2,8x1,8d2,4x1", "decoder": "4x2,8m4,8x1,16m8", "width": 8, "zdim": 2}
SHORT = {"steps": 30, "eval_every": 30, "checkpoint_every": 30, "eval_examples": 50, "progress": False}


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    """A small DCT-VAE and a small plain HVAE on the 16x16 digits, trained briefly."""
    root = tmp_path_factory.mktemp("dctvae-runs")
    small_dct = {**SMALL_LAYERS, "context_size": 4, "prior_steps": 3, "prior_width": 8, "prior_blocks": 1}
    spec = RunSpec.from_preset("digits-dctvae", {"model": small_dct, "train": dict(SHORT)})
    train(spec, runs_root=str(root), name="digits-dctvae")
    hvae = {**SMALL_LAYERS, "decoder": "1x1,4m1,4x1,8m4,8x1,16m8", "encoder": "16x1,16d2,8x1,8d2,4x1,4d4,1x1"}
    train(RunSpec.from_preset("digits-hvae", {"model": hvae, "train": dict(SHORT)}), runs_root=str(root))
    return root


def run_key(root: Path, family: str) -> str:
    (info,) = [i for i in RunStore(root).list_runs() if i.family == family]
    return f"runs/{info.id}"


def open_page(file: str, root: Path, monkeypatch, family: str = "dctvae", **state) -> AppTest:
    """A page on the runs under `root` only (no demos), with the run of `family` selected."""
    return open_run_page(file, root, monkeypatch, run_key(root, family), **state)


def test_the_page_shows_every_view_and_compares_with_the_hvae_and_jpeg(runs_root, monkeypatch):
    at = open_page("dctvae.py", runs_root, monkeypatch)
    assert_clean(at)
    assert [s.value for s in at.subheader] == [
        "The context of test images",
        "Moving one value of the context",
        "The prior's reverse process over the context",
        "Samples at four temperatures, with their contexts",
        "Ladder reconstructions",
        "Compression with the top of the hierarchy (App. G)",
    ]
    assert len(image_urls(at)) == 7  # context, traversal (contexts, decoded), trajectory, samples, ladder, compression
    assert len(at.get("plotly_chart")) == 3  # coefficient maps, trajectory values, ladder curve
    hvae = next(s for s in at.selectbox if s.label == "Plain HVAE to compare")
    assert hvae.value.key == run_key(runs_root, "hvae") and len(hvae.options) == 1
    table = at.dataframe[0].value
    assert list(table["method"]) == ["DCT-VAE, context only", "HVAE, top 2 layers", "JPEG at the DCT-VAE's PSNR"]
    dct, _, jpg = table["PSNR (dB)"]
    qualities = next(c.value for c in at.caption if c.value.startswith("JPEG qualities")).split(":")[1]
    assert jpg >= dct - 1e-6 or "95" in qualities.split(", ")  # each image reaches the target unless at 95
    assert table["bits per pixel"][0] > 0 and table["bits per pixel"][2] > 0  # the context costs bits; a JPEG file too
    assert "t = 0.1" in table["kept"][0] and "context" in table["kept"][0]


def test_moving_a_coefficient_redraws_only_the_traversal(runs_root, monkeypatch):
    at = open_page("dctvae.py", runs_root, monkeypatch)
    before = image_urls(at)
    next(s for s in at.selectbox if s.label.startswith("Row")).set_value(1).run()
    assert_clean(at)
    after = image_urls(at)
    assert after[1] != before[1] and after[2] != before[2]  # the traversal's contexts and decodings
    assert after[0] == before[0] and after[3:] == before[3:]
    temperature = next(s for s in at.slider if s.key == "walk-t")
    assert temperature.disabled  # posterior means: no temperature
    at.radio(key="walk-below").set_value("prior at a low temperature").run()
    assert_clean(at)
    assert not next(s for s in at.slider if s.key == "walk-t").disabled
    now = image_urls(at)
    assert now[1] == after[1] and now[2] != after[2]  # the same contexts, decoded from the prior


def test_the_page_on_a_plain_hvae_says_what_it_needs(runs_root, monkeypatch):
    at = open_page("dctvae.py", runs_root, monkeypatch, family="hvae")
    assert_clean(at)
    (info,) = [i.value for i in at.info]
    assert "DCT-VAE" in info and "latent-atlas train --preset digits-dctvae" in info
    assert not at.subheader


def test_without_a_plain_hvae_the_compression_panel_compares_with_jpeg_only(runs_root, tmp_path, monkeypatch):
    alone = tmp_path / "alone"
    alone.mkdir()
    dct_dir = RunStore(runs_root).list_runs()
    (info,) = [i for i in dct_dir if i.family == "dctvae"]
    shutil.copytree(info.dir, alone / info.id)
    at = open_page("dctvae.py", alone, monkeypatch)
    assert_clean(at)
    assert list(at.dataframe[0].value["method"]) == ["DCT-VAE, context only", "JPEG at the DCT-VAE's PSNR"]
    assert any("No plain HVAE" in i.value for i in at.info)


def test_layer_diagnostics_put_a_second_run_beside_the_dctvae_with_its_context_term(runs_root, monkeypatch):
    at = open_page("layer_diagnostics.py", runs_root, monkeypatch)
    assert_clean(at)
    compare = next(s for s in at.selectbox if s.label == "Compare with")
    assert compare.value is None  # no digits-hvae demo here: nothing by default
    assert len(at.get("plotly_chart")) == 3
    context = next(m for m in at.metric if m.label == "Context −L_DDGM")
    nats = float(context.value.split()[0])
    assert nats > 0
    assert compare.options[0] == "nothing" and len(compare.options) == 2
    compare.select_index(1).run()
    assert_clean(at)
    assert len(at.get("plotly_chart")) == 5  # KL and active units, side by side
    table = at.dataframe[1].value
    assert list(table["latent layers"]) == [5, 6]  # 4x2,8m4,8x1,16m8; and 1x1,4m1,4x1,8m4,8x1,16m8
    assert table["context −L_DDGM (nats)"][0] == pytest.approx(nats, abs=0.05)
    assert pd.isna(table["context −L_DDGM (nats)"][1])
    used = table[f"layers above {COLLAPSED_NATS} nats per unit"]
    assert all(0 <= u <= n for u, n in zip(used, table["latent layers"]))


def test_layer_diagnostics_of_a_plain_hvae_show_no_context_term(runs_root, monkeypatch):
    at = open_page("layer_diagnostics.py", runs_root, monkeypatch, family="hvae")
    assert_clean(at)
    assert not [m for m in at.metric if "L_DDGM" in m.label]
    assert next(s for s in at.selectbox if s.label == "Compare with").value is None


def test_layer_diagnostics_of_the_dctvae_demo_open_beside_the_hvae_demo(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_ATLAS_RUNS_DIR", str(tmp_path / "runs"))
    demos = {run_slug(c.info.id): c for c in available_runs() if c.key.startswith("demo/")}
    at = AppTest.from_file(str(PAGES / "layer_diagnostics.py"), default_timeout=300)
    at.session_state[RUN_KEY] = demos["digits-dctvae"].key
    at.run()
    assert_clean(at)
    assert next(s for s in at.selectbox if s.label == "Compare with").value.key == demos["digits-hvae"].key
    assert len(at.get("plotly_chart")) == 5
    table = at.dataframe[1].value
    assert list(table["run"]) == ["digits-dctvae (selected)", "digits-hvae"]
    assert table["context −L_DDGM (nats)"][0] > 0 and pd.isna(table["context −L_DDGM (nats)"][1])
