"""The top-layer attack of seed004 App. H (engine.inference.layer_attacks) and the ladder and
compression views of App. G (engine.diagnostics.compression)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import scipy.fft
import torch
from PIL import Image

from engine.diagnostics.compression import jpeg, jpeg_at_psnr, ladder, psnr, scan_bytes
from engine.errors import AtlasError
from engine.inference.layer_attacks import attack_top_layers, mean_path, top_layer_divergence
from engine.models.context import bin_width
from engine.models.hvae import HVAE, HVAEConfig
from tests.test_dctvae import tiny as tiny_dctvae

HVAE_TINY = dict(input_shape=(1, 8, 8), encoder="8x2,8d2,4x2,4d4,1x1", decoder="1x1,4m1,4x2,8m4,8x2", width=8, zdim=2)


def scrambled(model):
    """Random weights everywhere (an untrained HVAE's zero-initialised projections make
    every posterior its prior, and every attack moot)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


def tiny_hvae() -> HVAE:
    torch.manual_seed(0)
    return scrambled(HVAE(HVAEConfig(**HVAE_TINY)))


def inputs(n: int = 6) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(2))


# -- PSNR and JPEG -----------------------------------------------------------------------
def test_psnr_of_a_known_error():
    x = torch.full((2, 1, 4, 4), 0.5, dtype=torch.float64)
    assert psnr(x, x + 0.1) == pytest.approx([20.0, 20.0], abs=1e-9)  # 10 log10(1 / 0.01)
    assert psnr(x, x + 0.01) == pytest.approx([40.0, 40.0], abs=1e-9)


def test_jpeg_matches_pillow_and_counts_the_file():
    x = inputs(3)
    result = jpeg(x, 50)
    img = Image.fromarray(np.round(x[1, 0].numpy() * 255).astype(np.uint8))
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=50, subsampling=0)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float64) / 255
    np.testing.assert_allclose(result.images[1, 0].numpy(), decoded)
    data = buffer.getvalue()
    assert result.bits_per_pixel[1] < 8 * len(data) / 64  # the headers are left out
    # the scan is what changes with the picture: a flat image codes to a few bytes of it
    flat = jpeg(torch.full((1, 1, 8, 8), 0.5), 50)
    assert flat.bits_per_pixel[0] < result.bits_per_pixel[1]
    # cutting the file at the scan's start leaves a file one scan shorter, the rest being headers
    sos = data.find(b"\xff\xda")
    scan_start = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    assert result.bits_per_pixel[1] * 64 == 8 * (len(data) - scan_start - 2)
    with pytest.raises(AtlasError, match="baseline JPEG"):
        scan_bytes(b"not a jpeg")


def test_jpeg_at_psnr_takes_the_lowest_quality_that_reaches_the_target():
    x = inputs(4)
    targets = np.array([18.0, 22.0, 26.0, 30.0])
    result, qualities = jpeg_at_psnr(x, targets)
    assert (result.psnr >= targets).all()
    for i, q in enumerate(qualities):
        if q > 1:
            assert jpeg(x[i : i + 1], int(q) - 1).psnr[0] < targets[i]
    assert qualities[0] <= qualities[-1]


def test_jpeg_refuses_bad_input():
    with pytest.raises(AtlasError, match="quality"):
        jpeg(inputs(2), 0)
    with pytest.raises(AtlasError, match="n, 1 or 3"):
        jpeg(torch.rand(2, 2, 8, 8), 50)


# -- ladder reconstructions --------------------------------------------------------------
def test_the_ladder_rate_grows_by_each_kept_layer_kl():
    """With one generator seed the kept layers' draws agree across n_top, so the rate of
    n_top + 1 is that of n_top plus one more (non-negative) KL."""
    model, x = tiny_hvae(), inputs()
    rates = [ladder(model, x, n, 1.0, torch.Generator().manual_seed(5)).bits_per_pixel for n in range(4)]
    assert (rates[0] == 0).all()
    for a, b in zip(rates, rates[1:]):
        assert (b >= a - 1e-9).all() and (b > a).any()


def test_ladder_with_every_layer_kept_at_temperature_zero_is_the_posterior_mean_path():
    model, x = tiny_hvae(), inputs()
    groups = len(model.latent_groups)
    # n_top = all with mode-free draws differs from the mean path; at n_top = 0 and t = 0 every
    # layer is its prior mean, which the top-down pass in mode "mean" without acts gives
    r0 = ladder(model, x, 0, 0.0)
    params, _ = model.top_down(None, len(x), mode="mean")
    torch.testing.assert_close(r0.images, model.likelihood.mean(params).detach())
    assert ladder(model, x, groups, 0.0).bits_per_pixel.min() > 0


def test_a_dctvae_ladder_of_one_keeps_the_context_and_pays_its_code_length():
    model = scrambled(tiny_dctvae())
    x = inputs()
    kept = ladder(model, x, 1, 0.0)
    with torch.no_grad():
        bits = -model.context_log_prior(model.context.encode(x), fixed_noise=True) / math.log(2)
        z = {"context": model.context.encode(x).flatten(1)}
        params, _ = model.top_down(None, len(x), z, mode="mean")
    np.testing.assert_allclose(kept.bits_per_pixel, (bits / 64).numpy(), rtol=1e-5)
    torch.testing.assert_close(kept.images, model.likelihood.mean(params))
    assert "context from q" in kept.what


def test_ladder_refuses_what_it_cannot_do():
    model = tiny_hvae()
    with pytest.raises(AtlasError, match="n_top"):
        ladder(model, inputs(), len(model.latent_groups) + 1)
    with pytest.raises(AtlasError, match="temperature"):
        ladder(model, inputs(), 1, float("nan"))


# -- the top-layer attack ----------------------------------------------------------------
def test_no_distortion_no_divergence_and_more_layers_never_less():
    model, x = tiny_hvae(), inputs()
    with torch.no_grad():
        d = 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
        values = []
        for n in range(1, 5):
            clean = mean_path(model, x, n)
            assert torch.allclose(top_layer_divergence(model, x, clean, n), torch.zeros(len(x)), atol=1e-6)
            values.append(top_layer_divergence(model, (x + d).clamp(0, 1), clean, n))
    for a, b in zip(values, values[1:]):
        assert (b >= a - 1e-6).all()


def test_the_context_stand_in_is_the_scaled_dct_distance_over_the_bin_width():
    model = scrambled(tiny_dctvae())
    x = inputs()
    x_adv = (x + 0.05).clamp(0, 1)
    with torch.no_grad():
        value = top_layer_divergence(model, x_adv, mean_path(model, x, 1), 1)

    def scaled(images):  # the unnormalised DCT-II of scipy, kept block, over the scale
        c = scipy.fft.dctn(images.numpy().astype(np.float64), type=2, axes=(-2, -1))[..., :3, :3]
        return np.clip(c / model.context.scale.numpy(), -1, 1)

    expected = ((scaled(x_adv) - scaled(x)) ** 2).reshape(len(x), -1).sum(1) / bin_width(2) ** 2
    np.testing.assert_allclose(value.numpy(), expected, rtol=1e-4)


@pytest.mark.parametrize("make", [tiny_hvae, lambda: scrambled(tiny_dctvae())])
def test_the_attack_stays_in_its_box_and_beats_random_distortions(make):
    model, x = make(), inputs()
    eps = 0.1
    result = attack_top_layers(model, x, 2, eps, steps=15, restarts=3, generator=torch.Generator().manual_seed(4))
    assert result.distortion.abs().max() <= eps + 1e-6
    attacked_inputs = x.unsqueeze(0) + result.distortion
    assert attacked_inputs.min() >= -1e-6 and attacked_inputs.max() <= 1 + 1e-6
    with torch.no_grad():
        clean = mean_path(model, x, 2)
        g = torch.Generator().manual_seed(9)
        random = [
            top_layer_divergence(model, (x + eps * (2 * torch.rand(x.shape, generator=g) - 1)).clamp(0, 1), clean, 2)
            for _ in range(5)
        ]
    assert result.divergence.mean() > torch.stack(random).mean().item()
    assert result.ms_ssim.shape == (3, len(x)) and (result.ms_ssim <= 1 + 1e-9).all()


def test_without_the_stand_in_the_context_alone_is_no_target():
    """Attacking only a DCT-VAE's context with no way through its rounding: the objective is
    zero whatever the distortion, so the attack ends where its random start put it."""
    model, x = scrambled(tiny_dctvae()), inputs()
    result = attack_top_layers(model, x, 1, 0.1, 5, 2, torch.Generator().manual_seed(0), context_stand_in=False)
    assert (result.divergence == 0).all()
    start = 0.1 * (2 * torch.rand((2, *x.shape), generator=torch.Generator().manual_seed(0)) - 1)
    start = (x.unsqueeze(0) + start).clamp(0, 1) - x.unsqueeze(0)
    torch.testing.assert_close(result.distortion, start)
    # with two groups the layer below the context drives it, and the stand-in adds to that
    with torch.no_grad():
        clean, d = mean_path(model, x, 2), (x + 0.05).clamp(0, 1)
        without = top_layer_divergence(model, d, clean, 2, context_stand_in=False)
        with_it = top_layer_divergence(model, d, clean, 2)
    assert (without > 0).any() and (with_it > without).all()


def test_a_tiny_budget_leaves_the_reconstruction_as_it_was():
    model, x = tiny_hvae(), inputs()
    result = attack_top_layers(model, x, 3, 1e-7, steps=2, restarts=2)
    assert result.ms_ssim.min() > 0.9999


def test_the_attack_refuses_bad_settings():
    model, x = tiny_hvae(), inputs()
    with pytest.raises(AtlasError, match="n_layers"):
        attack_top_layers(model, x, 0)
    with pytest.raises(AtlasError, match="epsilon"):
        attack_top_layers(model, x, 1, epsilon=-1.0)
    with pytest.raises(AtlasError, match="shape"):
        attack_top_layers(model, torch.rand(2, 1, 4, 4), 1)
