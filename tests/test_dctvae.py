"""The DCT-VAE (seed004 App. C, E, F): its context (quantiser, DCT block, pooling) and the
model around it: the ELBO's context term, importance weighting, decoding, sampling,
training and the checkpointed scale."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import torch
import torch.nn.functional as F

from engine.data.base import Dataset
from engine.dct import idct2
from engine.errors import AtlasError
from engine.loading import load_run_model
from engine.models import build_model
from engine.models.base import NoiseSpace
from engine.models.context import DCTContext, PoolContext, bin_width, make_context, quantise
from engine.models.dctvae import DCTVAE
from engine.models.hvae import HVAE
from engine.store import RunStore
from engine.training import RunSpec
from engine.training.trainer import Trainer

TINY = {
    "input_shape": [1, 8, 8],
    "encoder": "8x1,8d2,4x1",
    "decoder": "4x2,8m4,8x1",
    "width": 8,
    "zdim": 2,
    "context_size": 3,
    "prior_steps": 3,
    "prior_width": 8,
    "prior_blocks": 1,
}


def images(x: torch.Tensor) -> Dataset:
    return Dataset("random", "train", x, {}, tuple(x.shape[1:]), (0.0, 1.0))


def tiny(**overrides) -> DCTVAE:
    torch.manual_seed(0)
    model = build_model("dctvae", {**TINY, **overrides})
    model.initialize(images(torch.rand(40, 1, 8, 8)))
    return model


# -- the quantiser -----------------------------------------------------------------------
@pytest.mark.parametrize("bits", [1, 2, 3, 5])
def test_the_quantiser_has_2_to_the_bits_levels_at_bin_centres(bits):
    b = bin_width(bits)
    assert b == 2 / 2**bits
    y = torch.linspace(-1.5, 1.5, 3001, dtype=torch.float64)
    q = quantise(y, bits)
    levels = torch.unique(q)
    expected = -1 + b * (torch.arange(2**bits, dtype=torch.float64) + 0.5)
    torch.testing.assert_close(levels, expected)
    inside = y.abs() <= 1
    assert ((q - y)[inside].abs() <= b / 2 + 1e-12).all()  # every value goes to its own bin's centre
    torch.testing.assert_close(quantise(q, bits), q, rtol=0, atol=0)  # idempotent


def test_the_repo_quantiser_on_two_bits():
    """u = (y + 1) / 2 with u = 0.999 at the top, q = (floor(4u) + 0.5) / 4, 2q - 1."""
    y = torch.tensor([-1.0, -0.6, -0.5, -0.1, 0.0, 0.49, 0.5, 0.99, 1.0])
    expected = torch.tensor([-0.75, -0.75, -0.25, -0.25, 0.25, 0.25, 0.75, 0.75, 0.75])
    torch.testing.assert_close(quantise(y, 2), expected)


# -- the contexts ------------------------------------------------------------------------
def test_the_dct_block_is_scipys_and_the_scale_is_the_training_maximum():
    x = torch.from_numpy(np.random.default_rng(0).random((6, 2, 8, 8))).float()
    context = DCTContext((2, 8, 8), size=3, bits=2)
    full = scipy.fft.dct(scipy.fft.dct(x.double().numpy(), type=2, axis=-1), type=2, axis=-2)
    np.testing.assert_allclose(context.coefficients(x).numpy(), full[..., :3, :3], rtol=1e-5, atol=1e-4)
    context.initialize(images(x), batch_size=4)  # two batches
    np.testing.assert_allclose(context.scale.numpy(), np.abs(full[..., :3, :3]).max(0), rtol=1e-5)
    expected = quantise(torch.from_numpy(full[..., :3, :3] / np.abs(full[..., :3, :3]).max(0)).float(), 2)
    torch.testing.assert_close(context.encode(x), expected)


def test_an_image_whose_dct_is_on_the_grid_in_the_kept_block_comes_back():
    context = DCTContext((1, 8, 8), size=3, bits=2)
    scale = torch.full((1, 3, 3), 0.3)
    scale[0, 0, 0] = 4 * 64 * 0.5 / 0.75  # a DC level of 0.75 is a mean of 0.5
    context.scale.copy_(scale)
    g = torch.Generator().manual_seed(0)
    z = quantise(torch.rand(5, 1, 3, 3, generator=g) * 2 - 1, 2)
    z[:, 0, 0, 0] = 0.75
    image = idct2(F.pad(z * scale, (0, 5, 0, 5)))
    assert 0 < image.min() and image.max() < 1
    torch.testing.assert_close(context.encode(image), z)
    torch.testing.assert_close(context.decode(z), image)


def test_the_pooling_context_is_the_quantised_average_pool_upsampled_back():
    x = torch.rand(3, 1, 8, 8)
    context = PoolContext((1, 8, 8), size=2, bits=3)
    z = context.encode(x)
    torch.testing.assert_close(z, quantise(2 * F.avg_pool2d(x, 4) - 1, 3))
    image = context.decode(z)
    torch.testing.assert_close(image, ((z + 1) / 2).repeat_interleave(4, -1).repeat_interleave(4, -2))
    torch.testing.assert_close(F.avg_pool2d(image, 4), (z + 1) / 2)  # the pooled image is on the grid


def test_bad_contexts_are_refused():
    with pytest.raises(AtlasError, match="unknown context"):
        make_context("wavelet", (1, 8, 8), 2, 2)
    with pytest.raises(AtlasError, match="divides the image side"):
        make_context("pool", (1, 8, 8), 3, 2)
    with pytest.raises(AtlasError, match="context_bits"):
        make_context("dct", (1, 8, 8), 2, 0)
    with pytest.raises(AtlasError, match="context_size"):
        build_model("dctvae", {**TINY, "context_size": 9})


# -- the model ---------------------------------------------------------------------------
def test_the_context_is_the_top_latent_group_with_a_point_posterior():
    model = tiny()
    x = torch.rand(4, 1, 8, 8)
    q = model.encode(x)
    assert [g.name for g in model.latent_groups] == ["context", *model.names] == list(q)
    assert len(model.names) == 4  # the HVAE's layers below the context
    torch.testing.assert_close(q["context"].mean, model.context.encode(x).flatten(1))
    assert (q["context"].stddev < 1e-4).all()
    assert not isinstance(model, NoiseSpace)  # no prior noise for a discrete context: HMC refuses it


def test_the_elbos_context_term_is_minus_the_diffusion_bound_of_the_encoded_context():
    model = tiny().eval()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        torch.manual_seed(1)
        result = model.elbo(x)
        torch.manual_seed(1)
        layers = HVAE.elbo(model, x)  # the same draws for the layers, then the context's bound
        bound = model.context_prior.bound(model.context_denoiser, model.context.encode(x), 0.5, every_step=True)
    torch.testing.assert_close(result.kl["context"], -bound.total)
    torch.testing.assert_close(result.total, layers.total + bound.total)
    assert list(result.kl) == ["context", *model.names]
    assert torch.isfinite(result.total).all()


def test_importance_weighting_only_the_layers_below_the_context_raises_the_bound():
    model = tiny().eval()
    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        torch.manual_seed(0)
        elbo = torch.stack([model.elbo(x).total for _ in range(30)]).mean(0)
        iwae = torch.stack([model.elbo(x, k=30).total for _ in range(3)]).mean(0)
    assert torch.isfinite(iwae).all()
    assert iwae.mean() >= elbo.mean()


def test_decoding_depends_on_the_context():
    model = tiny().eval()
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        z = {name: q.mean for name, q in model.encode(x).items()}
        changed = dict(z, context=z["context"].clone())
        changed["context"][:, 1] = -z["context"][:, 1]  # one coefficient to another level
        a, b = model.decode(z), model.decode(changed)
        one = model.decode_one_group({k: v[0] for k, v in z.items()}, "context", changed["context"][:1])
    assert (a - b).abs().amax() > 1e-4
    torch.testing.assert_close(one, b[:1])


def test_log_joint_adds_the_context_bound_and_is_a_function_of_z():
    model = tiny().eval()
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        z = {name: q.mean for name, q in model.encode(x).items()}
        first, again = model.log_joint(x, z), model.log_joint(x, z)
        layers = HVAE.log_joint(model, x, z)
    torch.testing.assert_close(first, again)
    assert torch.isfinite(first).all() and (first < layers).all()  # the bound is a log-probability below 0


@pytest.mark.parametrize("context", ["dct", "pool"])
def test_samples_at_the_repos_temperatures(context):
    model = tiny(context=context, context_size=2).eval()
    for temperature in (1.0, 0.8, 0.6, 0.4):
        g = torch.Generator().manual_seed(0)
        images = model.sample(5, temperature=temperature, generator=g)
        assert images.shape == (5, 1, 8, 8) and torch.isfinite(images).all()
        assert 0 <= images.min() and images.max() <= 1
    a = model.sample(3, generator=torch.Generator().manual_seed(3))
    b = model.sample(3, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    contexts = model.sample_context(50, 0.4)
    levels = -1 + 0.5 * (torch.arange(4) + 0.5)
    assert torch.isin(contexts, levels).all()


def test_training_on_the_digits_lowers_the_loss_and_the_checkpoint_keeps_the_scale(tmp_path):
    spec = RunSpec.from_preset(
        "digits-dctvae",
        {
            "model": {"encoder": "16x1,16d2,8x1,8d2,4x1", "decoder": "4x1,8m4,8x1,16m8", "width": 16},
            "train": {
                "steps": 300,
                "batch_size": 32,
                "log_every": 10,
                "eval_every": 300,
                "eval_examples": 64,
                "checkpoint_every": 300,
            },
        },
    )
    spec.train.progress = False
    train_data, test_data = spec.load_data("train"), spec.load_data("test")
    spec.model = spec.model_config(train_data)
    torch.manual_seed(0)
    model = build_model("dctvae", spec.model)
    run = RunStore(tmp_path).create_run(spec.to_dict())
    Trainer(model, train_data, test_data, spec.train, run).fit()
    _, loss = run.metrics.scalars(["train/loss"])["train/loss"]
    assert loss[-5:].mean() < 0.8 * loss[:5].mean()
    coefficients = model.context.coefficients(train_data.x).abs().amax(0)
    torch.testing.assert_close(model.context.scale, coefficients)
    loaded = load_run_model(run).model
    assert isinstance(loaded, DCTVAE)
    torch.testing.assert_close(loaded.context.scale, model.context.scale)
    x = test_data.x[:8]
    with torch.no_grad():
        assert math.isfinite(float(loaded.elbo(x).total.mean()))
