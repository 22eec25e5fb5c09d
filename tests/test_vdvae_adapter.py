"""openai/vdvae checkpoints through engine/adapters/vdvae.py into the "vdvae" family.

The checkpoints here are made by a small reimplementation of vdvae's vae.py written in this
file (its names, shapes and arithmetic: Block, Encoder, DecBlock, Decoder, the DmolNet loss),
randomly initialised at tiny sizes, so that the atlas model is checked against vdvae's
arithmetic and not against itself.
"""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.adapters import adapt
from engine.adapters.vdvae import PRESETS, convert, expected_shapes
from engine.diagnostics.hvae import layer_statistics, residual_norms
from engine.errors import AtlasError
from engine.loading import load_run_model
from engine.models import HVAE, VDVAE, config_from_dict
from engine.models.hvae import gaussian_kl
from engine.store.uploads import save_dataset
from tests.pagetest import assert_clean, open_run_page
from tests.test_hostile_inputs import Payload, refused_within_bounds, snapshot

# a mixin at every upsampling, a pooling by 2 and by 4, custom widths (the encoder pads 8 -> 12, the
# 8x8 mixin takes the first 8 of 12 channels), 8x8 above no_bias_above (its state starts at zero)
TINY = {
    "hparam_sets": "cifar10",
    "width": 8,
    "zdim": 3,
    "enc_blocks": "8x1,8d2,4x2,4d4,1x1",
    "dec_blocks": "1x1,4m1,4x1,8m4,8x1",
    "bottleneck_multiple": 0.5,
    "num_mixtures": 2,
    "custom_width_str": "1:12,4:12",
    "no_bias_above": 4,
    "image_size": 8,
}
SHIFT, SCALE = -120.63838, 1 / 64.16736  # vdvae's data.py, cifar10


# -- vdvae's network, reimplemented from its definitions -----------------------------------------------


def ref_blocks(text: str) -> list[tuple[int, int | None]]:
    out = []
    for token in text.split(","):
        if "x" in token:
            res, count = token.split("x")
            out += [(int(res), None)] * int(count)
        elif "m" in token or "d" in token:
            res, other = re.split("[md]", token)
            out.append((int(res), int(other)))
        else:
            out.append((int(token), None))
    return out


def ref_widths(h) -> dict:
    custom = dict(tuple(int(v) for v in item.split(":")) for item in h.custom_width_str.split(",") if item)
    return {r: custom.get(r, h.width) for r in (1, 2, 4, 8, 16, 32)}


class RefBlock(nn.Module):
    def __init__(self, c_in, c_mid, c_out, down=None, residual=False, big=True):
        super().__init__()
        k = 3 if big else 1
        self.c1 = nn.Conv2d(c_in, c_mid, 1)
        self.c2 = nn.Conv2d(c_mid, c_mid, k, padding=k // 2)
        self.c3 = nn.Conv2d(c_mid, c_mid, k, padding=k // 2)
        self.c4 = nn.Conv2d(c_mid, c_out, 1)
        self.down, self.residual = down, residual

    def forward(self, x):
        h = x
        for conv in (self.c1, self.c2, self.c3, self.c4):
            h = conv(F.gelu(h))
        out = x + h if self.residual else h
        return F.avg_pool2d(out, self.down, self.down) if self.down else out


class RefEncoder(nn.Module):
    def __init__(self, h):
        super().__init__()
        self.w = ref_widths(h)
        self.in_conv = nn.Conv2d(3, h.width, 3, padding=1)
        self.enc_blocks = nn.ModuleList(
            RefBlock(self.w[r], int(self.w[r] * h.bottleneck_multiple), self.w[r], d, True, r > 2)
            for r, d in ref_blocks(h.enc_blocks)
        )

    def forward(self, x_nhwc):
        x = self.in_conv(x_nhwc.permute(0, 3, 1, 2))
        acts = {x.shape[2]: x}
        for block in self.enc_blocks:
            x = block(x)
            r = x.shape[2]
            if x.shape[1] != self.w[r]:
                x = torch.cat([x, x.new_zeros(x.shape[0], self.w[r] - x.shape[1], r, r)], 1)
            acts[r] = x
        return acts


class RefDecBlock(nn.Module):
    def __init__(self, h, res, mixin):
        super().__init__()
        w = ref_widths(h)
        self.base, self.mixin, self.zdim, self.width = res, mixin, h.zdim, w[res]
        mid = int(w[res] * h.bottleneck_multiple)
        self.enc = RefBlock(2 * w[res], mid, 2 * h.zdim, big=res > 2)
        self.prior = RefBlock(w[res], mid, 2 * h.zdim + w[res], big=res > 2)
        self.z_proj = nn.Conv2d(h.zdim, w[res], 1)
        self.resnet = RefBlock(w[res], mid, w[res], residual=True, big=res > 2)

    def state(self, xs, n, like):
        x = xs[self.base] if self.base in xs else like.new_zeros(n, self.width, self.base, self.base)
        if x.shape[0] != n:
            x = x.repeat(n, 1, 1, 1)
        if self.mixin is not None:
            x = x + F.interpolate(xs[self.mixin][:, : x.shape[1]], scale_factor=self.base // self.mixin)
        return x

    def forward(self, xs, acts, eps):
        """The posterior path with given noise: (z, elementwise KL); xs updated."""
        a = acts[self.base]
        x = self.state(xs, a.shape[0], a)
        qm, qs = self.enc(torch.cat([x, a], 1)).chunk(2, 1)
        feats = self.prior(x)
        pm, ps, x_plus = feats[:, : self.zdim], feats[:, self.zdim : 2 * self.zdim], feats[:, 2 * self.zdim :]
        z = torch.exp(qs) * eps + qm
        kl = -0.5 + ps - qs + 0.5 * (torch.exp(qs) ** 2 + (qm - pm) ** 2) / torch.exp(ps) ** 2
        xs[self.base] = self.resnet(x + x_plus + self.z_proj(z))
        return z, kl

    def forward_latents(self, xs, z):
        x = self.state(xs, z.shape[0], z)
        x = x + self.prior(x)[:, 2 * self.zdim :]
        xs[self.base] = self.resnet(x + self.z_proj(z))


class RefDecoder(nn.Module):
    def __init__(self, h):
        super().__init__()
        self.h, w = h, ref_widths(h)
        blocks = ref_blocks(h.dec_blocks)
        self.dec_blocks = nn.ModuleList(RefDecBlock(h, r, m) for r, m in blocks)
        resolutions = sorted({r for r, _ in blocks})
        self.bias_xs = nn.ParameterList(
            nn.Parameter(torch.zeros(1, w[r], r, r)) for r in resolutions if r <= h.no_bias_above
        )
        self.out_net = nn.Module()
        self.out_net.out_conv = nn.Conv2d(h.width, 10 * h.num_mixtures, 1)
        self.gain = nn.Parameter(torch.ones(1, h.width, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, h.width, 1, 1))

    def out(self, xs):
        return self.out_net.out_conv(xs[self.h.image_size] * self.gain + self.bias).permute(0, 2, 3, 1)

    def forward(self, acts, eps):
        xs = {b.shape[2]: b for b in self.bias_xs}
        zs, kls = [], []
        for block, e in zip(self.dec_blocks, eps):
            z, kl = block(xs, acts, e)
            zs.append(z)
            kls.append(kl)
        return self.out(xs), zs, kls

    def forward_latents(self, n, zs):
        xs = {b.shape[2]: b.repeat(n, 1, 1, 1) for b in self.bias_xs}
        for block, z in zip(self.dec_blocks, zs):
            block.forward_latents(xs, z)
        return self.out(xs)


class RefVAE(nn.Module):
    def __init__(self, h):
        super().__init__()
        self.encoder = RefEncoder(h)
        self.decoder = RefDecoder(h)


def ref_log_likelihood(x, l, m):
    """PixelCNN++'s discretised logistic mixture over RGB: x (B, H, W, 3) in [-1, 1], l (B, H, W, 10 m)
    -> log-likelihood per image (B,)."""
    logits = l[..., :m]
    rest = l[..., m:].reshape(*x.shape, 3 * m)
    means, log_s, coeff = rest[..., :m], torch.clamp(rest[..., m : 2 * m], min=-7.0), torch.tanh(rest[..., 2 * m :])
    xr, xg = x[..., 0:1], x[..., 1:2]
    mean_r = means[..., 0, :]
    mean_g = means[..., 1, :] + coeff[..., 0, :] * xr
    mean_b = means[..., 2, :] + coeff[..., 1, :] * xr + coeff[..., 2, :] * xg
    centred = x.unsqueeze(-1) - torch.stack([mean_r, mean_g, mean_b], -2)
    inv = torch.exp(-log_s)
    up, down = inv * (centred + 1 / 255), inv * (centred - 1 / 255)
    delta = torch.sigmoid(up) - torch.sigmoid(down)
    mid = inv * centred
    edge_low, edge_high = up - F.softplus(up), -F.softplus(down)
    middle = torch.where(
        delta > 1e-5, torch.log(torch.clamp(delta, min=1e-12)), mid - log_s - 2 * F.softplus(mid) - np.log(127.5)
    )
    xe = x.unsqueeze(-1)
    per = torch.where(xe < -0.999, edge_low, torch.where(xe > 0.999, edge_high, middle))
    mixed = torch.logsumexp(per.sum(3) + torch.log_softmax(logits, -1), -1)
    return mixed.sum((1, 2))


# -- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference() -> RefVAE:
    torch.manual_seed(0)
    ref = RefVAE(SimpleNamespace(**TINY))
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0.0, 0.15)  # every weight, bias, gain and bias_xs away from vdvae's init
        m = TINY["num_mixtures"]
        for c in range(3):  # narrow logistics, so that some pixels take the density branch of the likelihood
            ref.decoder.out_net.out_conv.bias[m + 3 * m * c + m : m + 3 * m * c + 2 * m] -= 5.0
    return ref.eval()


def pixels(n: int, seed: int = 0) -> np.ndarray:
    """uint8 images (n, 8, 8, 3) with both extreme values present."""
    x = np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    x[0, 0, 0], x[0, 0, 1] = 0, 255
    return x


def save_checkpoint(folder: Path, state: dict, name: str = "latest-model-ema.th", hparams: dict | None = TINY):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / name)
    if hparams is not None:
        (folder / "hparams.json").write_text(json.dumps(hparams))
    return folder


@pytest.fixture
def place(tmp_path, reference):
    root = tmp_path / "runs"
    out = io.BytesIO()
    np.savez(out, x=pixels(48))
    saved = save_dataset(root, "pix", out.getvalue(), "pix.npz")
    folder = save_checkpoint(tmp_path / "vdvae", reference.state_dict())
    return SimpleNamespace(
        root=root, folder=folder, data={"name": saved.dataset, "options": {}}, marker=tmp_path / "pwned"
    )


# -- the mapping and the arithmetic ---------------------------------------------------------------------


def test_the_atlas_model_has_exactly_vdvaes_names_and_shapes(reference, tmp_path):
    converted = convert(save_checkpoint(tmp_path / "f", reference.state_dict()))
    config = config_from_dict("vdvae", converted.model)
    want = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert expected_shapes(config) == want
    assert {k: tuple(v.shape) for k, v in VDVAE(config).state_dict().items()} == want
    assert converted.family == "vdvae" and converted.model["input_shape"] == (3, 8, 8)
    assert all(torch.equal(converted.weights[k], v) for k, v in reference.state_dict().items())


@pytest.mark.parametrize("prefix", ["", "module."])
def test_an_adapted_checkpoint_computes_what_vdvae_computes(place, reference, prefix):
    state = {prefix + k: v for k, v in reference.state_dict().items()}
    save_checkpoint(place.folder, state, hparams=None)
    run = adapt("vdvae", place.folder, place.root, data=place.data, hps=json.dumps(TINY))
    model = load_run_model(run).model
    assert isinstance(model, HVAE) and run.config["family"] == "vdvae"

    x8 = torch.from_numpy(pixels(5, seed=1)).float()  # (B, H, W, 3) 0..255, as vdvae's loader gives
    x = x8.permute(0, 3, 1, 2) / 255.0  # the atlas's images
    g = torch.Generator().manual_seed(3)
    eps = [torch.randn(5, 3, r, r, generator=g) for r, _ in ref_blocks(TINY["dec_blocks"])]
    with torch.no_grad():
        ref_acts = reference.encoder((x8 + SHIFT) * SCALE)
        ref_l, zs, kls = reference.decoder(ref_acts, eps)
        ref_ll = ref_log_likelihood((x8 - 127.5) / 127.5, ref_l, TINY["num_mixtures"])

        acts = model.bottom_up(x)
        params, layers = model.top_down(acts, 5, z={n: z.flatten(1) for n, z in zip(model.names, zs)})
        assert sorted(acts) == sorted(ref_acts)
        for r in acts:
            torch.testing.assert_close(acts[r], ref_acts[r], rtol=1e-5, atol=1e-5)
        for layer, kl in zip(layers, kls):
            torch.testing.assert_close(gaussian_kl(layer["q"], layer["p"]), kl.sum((1, 2, 3)), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(params.permute(0, 2, 3, 1), ref_l, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.likelihood.log_prob(x, params), ref_ll, rtol=1e-5, atol=1e-4)

        # the prior path with the latents given: vdvae's forward_manual_latents
        decoded, _ = model.top_down(None, 5, z={n: z.flatten(1) for n, z in zip(model.names, zs)})
        torch.testing.assert_close(decoded.permute(0, 2, 3, 1), reference.decoder.forward_latents(5, zs))
        # the posterior's own draws, from the same generator in the same order
        drawn, layers = model.top_down(acts, 5, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(drawn.permute(0, 2, 3, 1), ref_l, rtol=1e-5, atol=1e-5)
        elbo = model.elbo(x)
        assert elbo.total.shape == (5,) and torch.isfinite(elbo.total).all()
        sample = model.sample(4)
        assert sample.shape == (4, 3, 8, 8) and 0 <= sample.min() and sample.max() <= 1


def test_the_hvae_diagnostics_and_pages_run_on_an_adapted_checkpoint(place, monkeypatch):
    run = adapt("vdvae", place.folder, place.root, data=place.data, name="tiny-vdvae")
    loaded = load_run_model(run)
    data = loaded.spec.load_data("test")
    profile = residual_norms(loaded.model, data, n_batches=2, batch_size=4)
    assert profile.up_res == [8, 4, 4, 4, 1, 1] and profile.down_res == [1, 4, 4, 8, 8]
    assert np.isfinite(profile.up_mean).all() and np.isfinite(profile.down_mean).all()
    stats = layer_statistics(loaded.model, data, n=8, batch_size=4)
    assert list(stats.units) == [3, 48, 48, 192, 192] and (stats.kl > 0).all()

    at = open_run_page("hvae_norms.py", place.root, monkeypatch, f"runs/{run.id}")
    assert_clean(at)
    assert at.get("plotly_chart")
    at = open_run_page("layer_diagnostics.py", place.root, monkeypatch, f"runs/{run.id}")
    assert_clean(at)
    assert len(at.get("plotly_chart")) == 3 and len(at.get("image")) == 2


def test_the_presets_are_vdvaes():
    from engine.adapters.vdvae import hyperparameters
    from engine.models import check_model_size

    counts = {}
    for name in PRESETS:
        values, _ = hyperparameters(Path("/nonexistent"), name, {})
        counts[name] = (values["input_shape"], check_model_size("vdvae", config_from_dict("vdvae", values)))
    assert counts["cifar10"] == ((3, 32, 32), 39_145_700)  # "VDVAE 39M" on CIFAR-10
    assert counts["imagenet32"][1] == 119_280_868  # seed000: VDVAE* 119m on ImageNet32
    assert counts["ffhq1024"][0] == (3, 1024, 1024)


# -- refusals ---------------------------------------------------------------------------------------------


def tampered(change):
    """An attempt on a checkpoint whose state dict `change` alters."""

    def attempt(p, reference):
        state = dict(reference.state_dict())
        change(state, p)
        torch.save(state, p.folder / "latest-model-ema.th")
        return adapt("vdvae", p.folder, p.root, data=p.data)

    return attempt


def with_options(**options):
    return lambda p, reference: adapt("vdvae", p.folder, p.root, data=p.data, **options)


def with_file(data: bytes):
    def attempt(p, reference):
        (p.folder / "latest-model-ema.th").write_bytes(data)
        return adapt("vdvae", p.folder, p.root, data=p.data)

    return attempt


def payload(state, p):
    state["decoder.gain"] = Payload(p.marker)


def not_finite(state, p):
    state["decoder.gain"] = state["decoder.gain"].clone()
    state["decoder.gain"][0, 0] = math.nan


REFUSALS = {
    "unknown-hps": (with_options(hps="cifar100"), "no hyperparameter set 'cifar100'"),
    "wider-than-hps": (
        with_options(width=16, custom_width_str="1:16,4:16"),
        "its width is 8 (encoder.in_conv.weight (8, 3, 3, 3)) but hps cifar10 with your changes says width=16",
    ),
    "other-zdim": (with_options(zdim=4), "its zdim is 3"),
    "fewer-blocks": (with_options(dec_blocks="1x1,4m1,8m4,8x1"), "it has 5 dec_blocks but"),
    "missing-tensor": (tampered(lambda s, p: s.pop("decoder.bias_xs.1")), "missing decoder.bias_xs.1"),
    "unexpected-tensor": (tampered(lambda s, p: s.update(extra=torch.zeros(1))), "unexpected extra"),
    "wrong-shape": (
        tampered(lambda s, p: s.update({"decoder.gain": torch.ones(1, 8, 1, 2)})),
        "decoder.gain has shape (1, 8, 1, 2)",
    ),
    "nan": (tampered(not_finite), "decoder.gain contains NaN"),
    "pickle-payload": (tampered(payload), "could not be opened as plain weights"),
    "not-a-torch-file": (with_file(b"this is not a checkpoint\n"), "could not be opened as plain weights"),
    "half-prefixed": (
        tampered(lambda s, p: s.update({"module.decoder.gain": s.pop("decoder.gain")})),
        "some tensor names start with 'module.'",
    ),
    "malformed-block-string": (with_options(dec_blocks="1x1,4q1,4x1,8m4,8x1"), "cannot read '4q1'"),
    "mixin-from-nowhere": (with_options(dec_blocks="1x1,4m2,4x1,8m4,8x1"), "mixes in the 2x2 state"),
    "unknown-setting": (with_options(widht=8), "unknown vdvae setting(s) widht"),
    "checkpoint-outside": (with_options(checkpoint="../runs/x.th"), "must be the name of a file"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_bad_checkpoint_or_setting_is_refused_and_the_runs_root_is_unchanged(place, reference, case):
    attempt, message = REFUSALS[case]
    before = snapshot(place.root)
    refused_within_bounds(lambda: attempt(place, reference), re.escape(message))
    assert snapshot(place.root) == before
    assert not place.marker.exists(), "a pickle payload ran"


def test_several_checkpoints_need_a_name(place, reference):
    for name in ("iter-10-model-ema.th", "iter-20-model-ema.th"):
        torch.save(reference.state_dict(), place.folder / name)
    (place.folder / "latest-model-ema.th").unlink()
    with pytest.raises(AtlasError, match="several vdvae checkpoints"):
        convert(place.folder)
    assert convert(place.folder, checkpoint="iter-20-model-ema.th").source.startswith("openai/vdvae")
