"""Traversal ranges, grids and interpolations; latent activity statistics."""

import math

import pytest
import torch

from engine.diagnostics.activity import group_activity, latent_activity
from engine.errors import AtlasError
from engine.models import VAE, VAEConfig
from engine.models.posteriors import DiagonalGaussian
from engine.traversal import grid_2d, interpolate, traversal_latents, traversal_range


def posteriors(mean, logvar, batches=4):
    return [DiagonalGaussian(m, v) for m, v in zip(mean.chunk(batches), logvar.chunk(batches))]


def test_activity_statistics_match_their_definitions():
    gen = torch.Generator().manual_seed(0)
    n = 4000
    mean = torch.stack([2.0 * torch.randn(n, generator=gen), 0.05 * torch.randn(n, generator=gen) + 1.0], 1)
    logvar = torch.stack([torch.full((n,), math.log(0.25)), torch.zeros(n)], 1)
    act = group_activity(posteriors(mean, logvar))
    assert act.active.tolist() == [True, False]  # Var_x E[z|x]: 4 vs 0.0025
    torch.testing.assert_close(act.mean_variance, mean.var(0, unbiased=False), rtol=1e-5, atol=1e-7)
    # KL(N(m, s2) || N(0, 1)) = (m^2 + s2 - 1 - log s2) / 2, averaged over x
    kl0 = 0.5 * (mean[:, 0].pow(2) + 0.25 - 1 - math.log(0.25)).mean()
    assert act.kl[0].item() == pytest.approx(kl0.item(), rel=1e-5)
    # the aggregate posterior's sd against samples drawn from the mixture
    z = mean + logvar.mul(0.5).exp() * torch.randn(n, 2, generator=gen)
    torch.testing.assert_close(act.aggregate_std, z.std(0), rtol=0.05, atol=0.01)
    assert act.order().tolist() == [0, 1]


def test_latent_activity_marks_a_dimension_the_encoder_ignores():
    torch.manual_seed(0)
    model = VAE(VAEConfig(input_shape=(5,), latent_dim=3, hidden=(), likelihood="gaussian"))
    with torch.no_grad():
        enc = model.encoder[1][0]
        enc.weight[2].zero_()  # dimension 2's mean ignores x
        enc.bias[2] = 0.3

    class Data:
        x = torch.randn(600, 5)

        def __len__(self):
            return len(self.x)

        def batch(self, idx):
            return self.x[idx]

    act = latent_activity(model, Data(), n=600, batch_size=128)["z"]
    assert act.active[2].item() is False
    assert act.mean_variance[2].item() == pytest.approx(0.0, abs=1e-10)
    assert act.active[:2].all()


def test_traversal_moves_one_dimension_across_its_range():
    base = torch.tensor([0.1, -0.2, 0.3, 0.4])
    low, high = torch.tensor([-1.0, -2, -3, -4]), torch.tensor([1.0, 2, 3, 4])
    grid = traversal_latents(base, [2, 0], low, high, steps=5)
    assert grid.shape == (2, 5, 4)
    torch.testing.assert_close(grid[0, :, 2], torch.linspace(-3, 3, 5))
    torch.testing.assert_close(grid[1, :, 0], torch.linspace(-1, 1, 5))
    others = grid[0][:, [0, 1, 3]]
    assert torch.equal(others, base[[0, 1, 3]].expand(5, 3))


def test_range_modes():
    mean = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, -1.0]])
    act = group_activity(posteriors(mean, torch.zeros(3, 2), batches=1))
    low, high = traversal_range("prior", act, k=3)
    assert low.tolist() == [-3, -3] and high.tolist() == [3, 3]
    low, high = traversal_range("data", act)
    assert low.tolist() == [0, -1] and high.tolist() == [4, 3]
    low, high = traversal_range("posterior", act)
    torch.testing.assert_close((low + high) / 2, mean.mean(0))
    torch.testing.assert_close((high - low) / 4, act.aggregate_std)
    with pytest.raises(AtlasError, match="unknown traversal range"):
        traversal_range("bogus", act)


def test_grid_2d_axes():
    base = torch.zeros(3)
    g = grid_2d(base, 0, 2, -torch.ones(3), torch.ones(3), steps=3)
    assert g[0, 2].tolist() == [1.0, 0.0, -1.0]  # top row: lowest dim_y; last column: highest dim_x
    assert g[2, 0].tolist() == [-1.0, 0.0, 1.0]
    with pytest.raises(AtlasError):
        grid_2d(base, 1, 1, -torch.ones(3), torch.ones(3))


def test_interpolations_hit_the_endpoints_and_slerp_keeps_the_norm():
    a, b = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([0.0, 3.0, 0.0])
    for mode in ("linear", "spherical"):
        path = interpolate(a, b, steps=7, mode=mode)
        torch.testing.assert_close(path[0], a)
        torch.testing.assert_close(path[-1], b)
    sph = interpolate(a, b, steps=7, mode="spherical")
    torch.testing.assert_close(sph.norm(dim=1), torch.full((7,), 3.0))
    lin = interpolate(a, b, steps=7, mode="linear")
    assert lin.norm(dim=1)[3] < 3.0 - 0.5  # the straight line cuts through the low-norm middle


def generic_decode(model, base, group, z):
    """decode_group's path for a model without decode_one_group: every group in one batch."""
    n = len(z)
    return model.decode({name: z if name == group else value.expand(n, -1) for name, value in base.items()})


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"normalise_state": True},  # the state divided by its norm at every layer
        {"decoder": "1x1,4m1,4r2,8m4,8r2", "encoder": "8r2,8d2,4x2,4d4,1x1"},  # weights shared across layers
        {"likelihood": "dmol", "input_shape": (3, 8, 8)},
    ],
)
def test_an_hvae_decodes_one_group_as_its_full_decode_does(options):
    """decode_one_group runs the layers above the traversed one once and the state
    channels-last; it must give the images of the full top-down pass, for every layer."""
    from engine.models.base import OneGroupDecoder
    from engine.models.hvae import HVAE, HVAEConfig
    from engine.traversal import decode_group

    config = {"input_shape": (1, 8, 8), "encoder": "8x2,8d2,4x2,4d4,1x1", "decoder": "1x1,4m1,4x2,8m4,8x2"}
    torch.manual_seed(0)
    model = HVAE(HVAEConfig(**{**config, "width": 16, "zdim": 3, **options})).eval()
    with torch.no_grad():  # a trained model's zero-initialised last layers are not zero
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    assert isinstance(model, OneGroupDecoder)
    base = {g.name: torch.randn(g.size) for g in model.latent_groups}
    for group in model.latent_groups:
        low, high = -2 * torch.ones(group.size), 2 * torch.ones(group.size)
        z = traversal_latents(base[group.name], list(range(min(5, group.size))), low, high, steps=4)  # (rows, 4, dim)
        got = decode_group(model, base, group.name, z)
        with torch.no_grad():
            want = generic_decode(model, base, group.name, z.reshape(-1, group.size)).reshape(got.shape)
        assert got.shape == (*z.shape[:2], *model.config.input_shape)
        assert got.is_contiguous()
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)  # float32 sums in another order
        # the traversed layer changes the image (with a normalised state, only the lowest layers visibly)
        if not options.get("normalise_state") or group == model.latent_groups[-1]:
            assert not torch.allclose(got[0, 0], got[0, -1], atol=1e-3)


def test_a_conv_decoder_gives_the_images_of_its_nchw_layers():
    """The conv decoder runs its feature maps channels-last; the images are those of the
    same layers in the default layout, and come back contiguous."""
    torch.manual_seed(0)
    model = VAE(VAEConfig(input_shape=(3, 16, 16), arch="conv", channels=(16, 32), hidden=(64,), latent_dim=5)).eval()
    z = torch.randn(7, 5)
    with torch.no_grad():
        got = model.decoder(z)
        want = model.decoder.body(model.decoder.head(z).view(-1, *model.decoder.start_shape).contiguous())
    assert got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
