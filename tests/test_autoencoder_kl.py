"""diffusers' AutoencoderKL in the atlas: the "autoencoder-kl" family
(engine/models/autoencoder_kl.py) against diffusers itself on a tiny random model saved here,
its ELBO against a hand computation, the adapter (engine/adapters/diffusers.py) refusing
broken folders without touching the runs root, and the generic pages on the adapted run."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL as DiffusersAutoencoderKL
from safetensors.torch import load_file, save_file
from torch.distributions import Normal

from engine.adapters import adapt
from engine.adapters import diffusers as diffusers_adapter
from engine.adapters.diffusers import LIKELIHOOD_NOTE
from engine.diagnostics.activity import GroupActivity
from engine.errors import AtlasError
from engine.loading import load_run_model
from engine.models import build_model
from engine.models.base import ImportanceWeighted, LatentModel, MaskedLikelihood, WithLikelihood
from engine.projection.encoding import pooled_per_channel
from engine.store import RunStore
from engine.traversal import block_traversal_latents, channel_blocks, channel_order, position_label
from tests.pagetest import assert_clean, image_urls, open_run_page
from tests.test_hostile_inputs import refused_within_bounds, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {
    "block_out_channels": (8, 8, 16),
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "latent_channels": 2,
    "sample_size": 32,
}
DATA = {"name": "shapes", "options": {"n": 600}}  # 3 x 32 x 32 images in [0, 1]; 120 test images
WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, DiffusersAutoencoderKL]:
    """A tiny randomly initialised diffusers AutoencoderKL, saved as save_pretrained does."""
    torch.manual_seed(0)
    vae = DiffusersAutoencoderKL(**TINY).eval()
    folder = tmp_path_factory.mktemp("diffusers") / "vae"
    vae.save_pretrained(folder, safe_serialization=True)
    return folder, vae


@pytest.fixture(scope="module")
def adapted(saved, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    run = adapt("diffusers", saved[0], root, data=DATA, name="tiny-sd-vae")
    return root, run


def copy_of(saved, tmp_path: Path) -> Path:
    folder = tmp_path / "vae"
    shutil.copytree(saved[0], folder)
    return folder


# -- the model against diffusers ----------------------------------------------------------------------
def test_the_adapted_model_encodes_and_decodes_as_diffusers_does(saved, adapted):
    _, vae = saved
    model = load_run_model(adapted[1]).model.eval()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))  # atlas images in [0, 1]
    z = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        theirs = vae.encode(2 * x - 1).latent_dist  # diffusers works in [-1, 1]
        ours = model.encode(x)["z"]
        decoded = vae.decode(z).sample
        torch.testing.assert_close(ours.mean, theirs.mean, atol=1e-5, rtol=0)
        torch.testing.assert_close(ours.logvar, theirs.logvar, atol=1e-5, rtol=0)
        torch.testing.assert_close(model.pixels(z), decoded, atol=1e-5, rtol=0)
        torch.testing.assert_close(model.decode(z), ((decoded + 1) / 2).clamp(0, 1), atol=1e-5, rtol=0)
    assert model.latent_groups[0].shape == (2, 8, 8)
    assert isinstance(model, LatentModel) and isinstance(model, ImportanceWeighted)
    assert isinstance(model, WithLikelihood) and isinstance(model, MaskedLikelihood)


def test_the_conversion_says_where_it_came_from_and_that_the_likelihood_is_assumed(saved, adapted):
    converted = diffusers_adapter.convert(saved[0], pixel_scale=0.2)
    assert converted.family == "autoencoder-kl"
    assert converted.source.startswith("diffusers AutoencoderKL from vae/diffusion_pytorch_model.safetensors")
    assert converted.notes == [LIKELIHOOD_NOTE.format(scale=0.2)] and "not a likelihood" in converted.notes[0]
    assert tuple(converted.model["input_shape"]) == (3, 32, 32) and converted.model["pixel_scale"] == 0.2
    assert adapted[1].config["model"]["input_shape"] == [3, 32, 32]
    assert tuple(diffusers_adapter.convert(saved[0], image_size=[16, 24]).model["input_shape"]) == (3, 16, 24)


def test_elbo_is_the_gaussian_log_density_minus_the_closed_form_kl(adapted):
    model = load_run_model(adapted[1]).model.eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(4)
    result = model.elbo(x)
    torch.manual_seed(4)
    q = model.encode(x)["z"]
    z = q.mean + q.logvar.mul(0.5).exp() * torch.randn(q.mean.shape)
    mean = ((model.pixels(z) + 1) / 2).clamp(0, 1)
    recon = Normal(mean, 0.1).log_prob(x).sum((1, 2, 3))
    var = q.logvar.exp()
    kl = 0.5 * (q.mean**2 + var - 1 - q.logvar).sum((1, 2, 3))
    torch.testing.assert_close(result.recon, recon, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(result.kl["z"], kl, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(result.total, recon - kl, rtol=1e-5, atol=1e-3)
    # log_joint at z is the same Gaussian plus the standard normal prior
    prior = Normal(0.0, 1.0).log_prob(z).sum((1, 2, 3))
    torch.testing.assert_close(model.log_joint(x, z), recon + prior, rtol=1e-5, atol=1e-3)
    # the importance-weighted bound: log mean_i p(x, z_i) / q(z_i | x) over the same k draws
    torch.manual_seed(6)
    bound = model.elbo(x, k=4).total
    torch.manual_seed(6)
    std = q.logvar.mul(0.5).exp()
    draws = q.mean + std * torch.randn(4, *q.mean.shape)
    log_w = model.log_joint(x, draws) - Normal(q.mean, std).log_prob(draws).sum((2, 3, 4))
    torch.testing.assert_close(bound, torch.logsumexp(log_w, 0) - math.log(4), rtol=1e-5, atol=1e-3)


def test_samples_are_images_in_the_data_range_and_reproducible(adapted):
    model = load_run_model(adapted[1]).model.eval()
    with torch.no_grad():
        a = model.sample(4, generator=torch.Generator().manual_seed(5))
        b = model.sample(4, generator=torch.Generator().manual_seed(5))
    assert a.shape == (4, 3, 32, 32) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"act_fn": "relu"}, "act_fn 'relu' is not supported"),
        ({"down_block_types": ["AttnDownEncoderBlock2D"] * 3}, "DownEncoderBlock2D"),
        ({"norm_num_groups": 3}, "does not divide"),
        ({"input_shape": [3, 30, 30]}, "multiples of the downsampling factor 4"),
        ({"input_shape": [1, 32, 32]}, "3-channel images"),
        ({"pixel_scale": 0.0}, "pixel_scale"),
    ],
)
def test_configs_it_cannot_build_are_refused_with_what_to_change(change, message):
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()} | {"input_shape": [3, 32, 32]}
    with pytest.raises(AtlasError, match=message):
        build_model("autoencoder-kl", values | change)


# -- the adapter refuses broken folders ----------------------------------------------------------------
class Payload:
    """A pickle that touches a file when it is loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | changes))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file copied out of its memory map, so the file can be rewritten."""
    return {name: t.clone() for name, t in load_file(path).items()}


def edit_weights(folder: Path, edit) -> None:
    tensors = read_weights(folder / WEIGHTS)
    edit(tensors)
    save_file(tensors, folder / WEIGHTS)


def wrong_class(folder, tmp_path):
    edit_config(folder, _class_name="UNet2DModel")


def no_weights(folder, tmp_path):
    (folder / WEIGHTS).unlink()


def wrong_shape(folder, tmp_path):
    edit_weights(folder, lambda t: t.update({"quant_conv.weight": torch.zeros(4, 4, 3, 3)}))


def missing_tensor(folder, tmp_path):
    edit_weights(folder, lambda t: t.pop("decoder.conv_out.bias"))


def extra_tensor(folder, tmp_path):
    edit_weights(folder, lambda t: t.update({"encoder.stowaway": torch.zeros(3)}))


def nan_weights(folder, tmp_path):
    edit_weights(folder, lambda t: t["encoder.conv_in.weight"].fill_(math.nan))


def malformed_json(folder, tmp_path):
    (folder / "config.json").write_text('{"_class_name": "AutoencoderKL", ')


def absurd_widths(folder, tmp_path):
    edit_config(folder, block_out_channels=[100000] * 4, down_block_types=["DownEncoderBlock2D"] * 4)


def huge_model(folder, tmp_path):  # every width allowed, the whole far too large: refused on "meta"
    blocks = {"down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4}
    edit_config(folder, block_out_channels=[8192] * 4, norm_num_groups=32, **blocks)


def oversized_file(folder, tmp_path):  # more bytes than the config's model can hold: not read
    edit_weights(folder, lambda t: t.update({"encoder.ballast": torch.zeros(2_000_000)}))


def pickle_payload(folder, tmp_path):
    (folder / WEIGHTS).unlink()
    torch.save({"encoder.conv_in.weight": Payload(tmp_path / "pwned")}, folder / "diffusion_pytorch_model.bin")


HOSTILE = {
    "wrong class": (wrong_class, "only AutoencoderKL"),
    "no weights": (no_weights, "no diffusion_pytorch_model.safetensors"),
    "wrong shape": (wrong_shape, r"quant_conv.weight has shape \(4, 4, 3, 3\)"),
    "missing tensor": (missing_tensor, "missing decoder.conv_out.bias"),
    "extra tensor": (extra_tensor, "unexpected encoder.stowaway"),
    "NaN weights": (nan_weights, "NaN or infinite"),
    "malformed JSON": (malformed_json, "not valid JSON"),
    "absurd widths": (absurd_widths, "block_out_channels entry must be an integer between 1 and 8192"),
    "huge model": (huge_model, "more than the limit"),
    "oversized file": (oversized_file, "more than float32 weights of this config.json's model"),
    "pickle with code": (pickle_payload, "could not be opened as plain weights"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_broken_folder_is_refused_and_the_runs_root_is_unchanged(case, saved, adapted, tmp_path):
    root = adapted[0]
    folder = copy_of(saved, tmp_path)
    damage, message = HOSTILE[case]
    damage(folder, tmp_path)
    before = snapshot(root)
    refused_within_bounds(lambda: adapt("diffusers", folder, root, data=DATA, name="broken"), message)
    assert snapshot(root) == before
    assert not (tmp_path / "pwned").exists()


def test_older_attention_names_and_conv_shaped_weights_are_renamed(saved, tmp_path):
    folder = copy_of(saved, tmp_path)
    new_to_old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}

    def legacy(tensors):
        for name in [n for n in tensors if ".attentions." in n]:
            path, _, leaf = name.rpartition(".")
            for new, old in new_to_old.items():
                if path.endswith("." + new):
                    t = tensors.pop(name)
                    tensors[f"{path.removesuffix(new)}{old}.{leaf}"] = t[:, :, None, None] if t.dim() == 2 else t

    tensors = read_weights(folder / WEIGHTS)
    legacy(tensors)
    (folder / WEIGHTS).unlink()  # and the older file format too: a plain torch.save dict
    torch.save(tensors, folder / "diffusion_pytorch_model.bin")
    run = adapt("diffusers", folder, tmp_path / "runs", data=DATA, name="legacy")
    ours = load_run_model(run).model.state_dict()
    expected = saved[1].state_dict()
    assert set(ours) == set(expected)
    assert all(torch.equal(ours[k], expected[k]) for k in expected)


def test_unknown_options_are_refused(saved, tmp_path):
    with pytest.raises(AtlasError, match="no option colour"):
        adapt("diffusers", saved[0], tmp_path / "runs", data=DATA, colour=True)
    assert not (tmp_path / "runs").exists()


# -- the generic pages on the adapted run ----------------------------------------------------------------
@pytest.mark.parametrize("page", ["sample_grids.py", "traversals.py", "latent_map.py", "latent_activity.py"])
def test_the_generic_pages_render_on_the_adapted_run(page, adapted, monkeypatch):
    root, run = adapted
    at = open_run_page(page, root, monkeypatch, f"runs/{run.id}")
    assert_clean(at)
    if page != "latent_activity.py":
        assert image_urls(at) or at.get("plotly_chart")


def test_adapted_run_is_listed(adapted):
    assert [info.id for info in RunStore(adapted[0]).list_runs()] == [adapted[1].id]


def test_a_whole_channel_traversal_moves_every_position_of_the_channel_together():
    shape = (2, 2, 3)  # channels, rows, columns: 12 flat dimensions
    base = torch.arange(12.0)
    low, high = -torch.ones(12), torch.linspace(1.0, 2.0, 12)
    blocks = channel_blocks(shape)
    assert [b.tolist() for b in blocks] == [list(range(6)), list(range(6, 12))]
    grid = block_traversal_latents(base, [blocks[1]], low, high, steps=3)  # (1 row, 3 steps, 12)
    assert grid.shape == (1, 3, 12)
    torch.testing.assert_close(grid[0, :, :6], base[:6].expand(3, 6))  # channel 0 stays at the start
    torch.testing.assert_close(grid[0, 0, 6:], low[6:])
    torch.testing.assert_close(grid[0, 1, 6:], (low[6:] + high[6:]) / 2)
    torch.testing.assert_close(grid[0, 2, 6:], high[6:])
    with pytest.raises(AtlasError, match="spatial latent group"):
        channel_blocks((12,))


def test_positions_are_named_by_channel_row_and_column_and_channels_ordered_by_kl():
    assert position_label(0, (2, 2, 3)) == "z[0, 0, 0]"
    assert position_label(11, (2, 2, 3)) == "z[1, 1, 2]"
    assert position_label(4, (8,)) == "z4"
    kl = torch.tensor([0.1, 0.1, 0.1, 0.1, 1.0, 0.0, 0.0, 0.0])  # channel 0: 0.4 nats, channel 1: 1.0
    zeros = torch.zeros(8)
    activity = GroupActivity(kl, zeros, zeros, zeros, zeros, zeros)
    assert channel_order(activity, (2, 2, 2)) == [1, 0]


def test_pooling_per_channel_is_the_mean_over_positions():
    points = np.arange(24, dtype=np.float32).reshape(2, 12)  # two points of a (3, 2, 2) group
    pooled = pooled_per_channel(points, (3, 2, 2))
    np.testing.assert_allclose(pooled, [[1.5, 5.5, 9.5], [13.5, 17.5, 21.5]])
    with pytest.raises(AtlasError, match="spatial group"):
        pooled_per_channel(points, (12,))


def test_the_traversal_page_moves_a_whole_channel_of_the_spatial_latent(adapted, monkeypatch):
    root, run = adapted
    at = open_run_page("traversals.py", root, monkeypatch, f"runs/{run.id}")
    one_position = image_urls(at)
    choice = next(r for r in at.radio if r.label == "Traverse")
    assert choice.options == ["one position", "whole channel"]
    at = choice.set_value("whole channel").run()
    assert_clean(at)
    assert image_urls(at) != one_position
    assert any("all positions of one channel" in c.value for c in at.caption)


def test_the_latent_map_pools_the_spatial_latent_per_channel(adapted, monkeypatch):
    root, run = adapted
    at = open_run_page("latent_map.py", root, monkeypatch, f"runs/{run.id}")
    assert any("128 latent dimensions" in c.value for c in at.caption)  # 2 channels x 8 x 8
    at = next(r for r in at.radio if r.label == "Spatial latents").set_value("pooled per channel").run()
    assert_clean(at)
    assert any("2 latent dimensions" in c.value for c in at.caption)
