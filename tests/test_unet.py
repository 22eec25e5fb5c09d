"""The U-Net and Multi-ResNet denoisers and the DDPM family built on them: shapes at every
resolution level, what each level's forward pass touches, the Haar skips of a Multi-ResNet,
staged training's levels and freezing, and a short training run that learns."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.errors import AtlasError
from engine.models import build_model, family_kind
from engine.models.ddpm import DDPM, DDPMConfig, stage_at
from engine.models.unet import ResBlock, UNet, UNetConfig, timestep_embedding

T = torch.tensor([1, 7, 300, 1000])


@pytest.mark.parametrize("encoder", ["learned", "haar"])
def test_every_level_maps_its_resolution_to_itself(encoder):
    net = UNet(UNetConfig(in_channels=3, out_channels=6, widths=(16, 32, 32), encoder=encoder))
    for level, side in enumerate((16, 8, 4)):
        assert net(torch.randn(4, 3, side, side), T, level).shape == (4, 6, side, side)


def test_a_fresh_residual_block_is_the_identity():
    block = ResBlock(16, 16, 32, 8, 0.0)
    x = torch.randn(3, 16, 5, 5)
    assert torch.equal(block(x, torch.randn(3, 32)), x)


def test_the_step_embedding_tells_steps_apart():
    e = timestep_embedding(torch.arange(1, 1001), 32)
    assert e.shape == (1000, 32)
    assert torch.cdist(e, e).add(torch.eye(1000) * 10).min() > 1e-3


def touched(net: UNet, level: int, side: int) -> set[str]:
    net.zero_grad(set_to_none=True)
    for p in net.parameters():  # give every block a non-zero last conv, so gradients reach all of it
        if p.ndim == 4 and not p.any():
            torch.nn.init.normal_(p, std=0.02)
    net(torch.randn(2, 1, side, side), T[:2], level).square().sum().backward()
    return {name.split(".")[0] + "." + name.split(".")[1] for name, p in net.named_parameters() if p.grad is not None}


def test_a_coarse_level_uses_only_its_own_head_and_tail_and_the_levels_below():
    net = UNet(UNetConfig(widths=(8, 16, 32)))  # every width change has a 1x1 conv
    assert touched(net, 1, 8) == {
        "heads.1",
        "encoder.1",
        "encoder.2",
        "down.2",
        "middle.0",
        "middle.1",
        "decoder.1",
        "decoder.2",
        "up.1",
        "tails.1",
        "time_mlp.0",
        "time_mlp.2",
    }
    assert {"heads.0", "encoder.0", "decoder.0", "tails.0", "up.0", "down.1"} <= touched(net, 0, 16)


def test_a_multi_resnet_encoder_has_no_parameters_and_its_skips_are_the_haar_projections():
    net = UNet(UNetConfig(widths=(8, 16, 16), encoder="haar"))
    assert sum(p.numel() for p in net.encoder.parameters()) == 0
    assert set(net.heads) == {"2"}  # only the coarsest image is lifted to features
    seen = []
    for i in range(3):
        net.decoder[i][0].register_forward_pre_hook(lambda _m, args: seen.append(args[0][:, -1:]))
    x = torch.rand(2, 1, 16, 16)
    net(x, T[:2])
    skips = {s.shape[-1]: s for s in seen}
    assert torch.equal(skips[16], x)
    assert torch.allclose(skips[8], F.avg_pool2d(x, 2)) and torch.allclose(skips[4], F.avg_pool2d(x, 4))


def test_a_multi_resnet_can_spend_the_saved_parameters_in_its_decoder():
    count = lambda cfg: sum(p.numel() for p in UNet(cfg).parameters())  # noqa: E731
    unet = count(UNetConfig(widths=(32, 64, 64)))
    unused = count(UNetConfig(widths=(32, 64, 64), encoder="haar"))
    used = count(UNetConfig(widths=(32, 64, 64), encoder="haar", decoder_blocks=2))
    assert unused < 0.7 * unet < used < unet


@pytest.mark.parametrize(
    "values, message",
    [
        ({"widths": (12, 16)}, "multiple of groups"),
        ({"widths": ()}, "at least one level"),
        ({"encoder": "wavelet"}, "learned, haar"),
        ({"blocks": 0}, "blocks must be"),
    ],
)
def test_bad_unet_configs_are_refused(values, message):
    with pytest.raises(AtlasError, match=message):
        UNetConfig(**values)


def test_an_input_the_levels_cannot_halve_is_refused():
    with pytest.raises(AtlasError, match="divide by 4"):
        build_model("ddpm", {"input_shape": [1, 14, 14], "widths": [8, 8, 8], "steps": 10})
    with pytest.raises(AtlasError, match="one stage per resolution"):
        DDPMConfig(widths=(8, 8, 8), stage_steps=(10, 10))


def test_ddpm_is_a_diffusion_family():
    assert family_kind("ddpm") == "diffusion"
    model = build_model("ddpm", {"input_shape": [1, 8, 8], "widths": [8, 8], "steps": 20})
    assert isinstance(model, DDPM)


def test_stages_run_coarsest_first_and_the_last_goes_on():
    assert [stage_at((5, 5, 5), s) for s in (0, 4, 5, 9, 10, 14, 15, 100)] == [0, 0, 1, 1, 2, 2, 2, 2]
    model = DDPM(DDPMConfig(input_shape=(1, 16, 16), widths=(8, 8, 8), steps=10, stage_steps=(5, 5, 5)))
    levels = []
    for step in (0, 5, 10):
        model.set_step(step)
        levels.append(model.training_level)
        _, metrics = model.training_loss(torch.rand(4, 1, 16, 16))
        assert metrics["resolution"].item() == 16 // 2**model.training_level
    assert levels == [2, 1, 0]


def test_freezing_stops_the_trained_levels_from_learning():
    model = DDPM(DDPMConfig(input_shape=(1, 16, 16), widths=(8, 8, 8), steps=10, stage_steps=(5, 5, 5), freeze=True))
    model.set_step(7)  # stage 2: level 1 trains, level 2 (4×4) is frozen
    frozen = {id(p) for m in model.unet.level_modules(2) for p in m.parameters()}
    assert frozen and all(not p.requires_grad for m in model.unet.level_modules(2) for p in m.parameters())
    assert all(p.requires_grad for m in model.unet.level_modules(1) for p in m.parameters())
    model.set_step(0)
    assert all(p.requires_grad for p in model.parameters())


def test_the_process_space_is_the_data_grid_in_minus_one_to_one():
    model = DDPM(DDPMConfig(input_shape=(1, 8, 8), widths=(8, 8), steps=10, bits=2))
    y = model.to_process(torch.tensor([0.0, 0.2, 0.5, 0.9, 1.0, 1.3]))
    assert torch.allclose(y, torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0, 1.0, 1.0]))
    assert model.config.bin_width == pytest.approx(2 / 3)


def test_a_short_training_run_learns_and_sampling_gives_images_at_every_level():
    """Three quarters of 8x8 images are one of two bars: the loss falls well below its start."""
    torch.manual_seed(0)
    model = DDPM(DDPMConfig(input_shape=(1, 8, 8), widths=(16, 16), steps=50, dropout=0.0))
    x = torch.zeros(64, 1, 8, 8)
    x[::2, :, 2:6, 3:5] = 1
    x[1::2, :, 3:5, 2:6] = 1
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(150):
        loss, _ = model.training_loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-20:]) / 20 < 0.5 * sum(losses[:5]) / 5
    for level, side in ((0, 8), (1, 4)):
        s = model.sample(3, level=level, generator=torch.Generator().manual_seed(0))
        assert s.shape == (3, 1, side, side) and 0 <= s.min() and s.max() <= 1
    bound = model.bound(x[:4], every_step=False, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(bound.total).all()
    assert (model.bits_per_dim(bound) > 0).all()
