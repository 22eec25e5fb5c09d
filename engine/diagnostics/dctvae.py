"""What the DCT-VAE page shows, computed without a browser (seed004 App. C, E, G; §4.6 of the
seed notes): the context z_L = f(x) of test images, a traversal of one context value, the
diffusion prior's reverse trajectory over the context, samples at several temperatures with
their contexts, and the context's code length under the prior.

The context of a DCT-VAE (engine.models.context) is a (C, size, size) block of values on
2^bits levels in [-1, 1]: low DCT coefficients divided by their training-set maxima, or for
App. F's ablation the average-pooled image mapped to [-1, 1]. Its "image" is the model's own
decoding of it, x_context: the inverse DCT of the zero-padded, rescaled block (or the pooled
pixels blown back up), clamped to [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from engine.errors import AtlasError
from engine.models.context import DCTContext, bin_width, quantise
from engine.models.dctvae import DCTVAE
from engine.randomness import stream

SAMPLE_TEMPERATURES = (1.0, 0.8, 0.6, 0.4)  # the repo's logged sample grids (seed notes §3.10)
BELOW = ("posterior", "prior")  # where a traversal takes the layers under the context from


def _checked(model) -> DCTVAE:
    if not isinstance(model, DCTVAE):
        family = getattr(getattr(model, "config", None), "family", type(model).__name__)
        raise AtlasError(f"these views need a DCT-VAE (family 'dctvae'); got a {family!r} model")
    return model


def _checked_images(model: DCTVAE, x: torch.Tensor) -> torch.Tensor:
    shape = tuple(model.config.input_shape)
    if x.dim() != 4 or tuple(x.shape[1:]) != shape:
        raise AtlasError(f"expected images (n, {', '.join(map(str, shape))}), got shape {tuple(x.shape)}")
    return x.to(model.start.device, model.start.dtype)


def _checked_temperature(temperature: float) -> float:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise AtlasError(f"temperature must be a finite number >= 0, got {temperature!r}")
    return float(temperature)


def level_index(values: torch.Tensor, bits: int) -> torch.Tensor:
    """The level 0 .. 2^bits - 1 of quantised values (bin centres -1 + b (k + 1/2), b = 2 / 2^bits)."""
    return torch.round((values + 1) / bin_width(bits) - 0.5).long().clamp(0, 2**bits - 1)


def level_value(index: torch.Tensor | int, bits: int) -> torch.Tensor:
    """The value in [-1, 1] of level `index` (the inverse of level_index)."""
    return -1 + bin_width(bits) * (torch.as_tensor(index, dtype=torch.float32) + 0.5)


def context_levels(bits: int) -> torch.Tensor:
    """Every value a context entry takes: the 2^bits bin centres, lowest first."""
    return level_value(torch.arange(2**bits), bits)


def scaled_values(model: DCTVAE, x: torch.Tensor) -> torch.Tensor:
    """The context of x before quantisation: (n, C, size, size). For the DCT context the kept
    coefficients over their scale, not clamped (a test image may exceed the training maximum);
    for the pooling context the pooled pixels mapped to [-1, 1]."""
    context = model.context
    if isinstance(context, DCTContext):
        return context.coefficients(x) / context.scale
    return 2 * torch.nn.functional.avg_pool2d(x, context.factor) - 1


@dataclass
class ContextView:
    scaled: torch.Tensor  # (n, C, size, size) before quantisation (scaled_values)
    levels: torch.Tensor  # (n, C, size, size) level indices 0 .. 2^bits - 1, long
    values: torch.Tensor  # (n, C, size, size) the quantised context z_L = f(x) in [-1, 1]
    image: torch.Tensor  # (n, C, H, W) x_context, the context decoded to an image in [0, 1]
    kind: str  # "dct" or "pool"
    bits: int


@torch.no_grad()
def context_view(model: DCTVAE, x: torch.Tensor) -> ContextView:
    """The context of images x (n, C, H, W): scaled values, quantisation levels, z_L, x_context."""
    model = _checked(model)
    x = _checked_images(model, x)
    bits = model.config.context_bits
    values = model.context.encode(x)
    return ContextView(
        scaled=scaled_values(model, x).cpu(),
        levels=level_index(values, bits).cpu(),
        values=values.cpu(),
        image=model.context.decode(values).cpu(),
        kind=model.config.context,
        bits=bits,
    )


@dataclass
class ContextTraversal:
    coefficient: tuple[int, int, int]  # (channel, i, j) of the context that moves
    values: torch.Tensor  # (K,) the values it takes
    contexts: torch.Tensor  # (K, n, C, size, size) f(x) with that entry replaced
    context_images: torch.Tensor  # (K, n, C, H, W) x_context of each
    decoded: torch.Tensor  # (K, n, C, H, W) the model's decoding of each
    below: str  # "posterior": layers under the context at q's means; "prior": drawn at `temperature`
    temperature: float


@torch.no_grad()
def traverse_context(
    model: DCTVAE,
    x: torch.Tensor,
    coefficient: tuple[int, int, int],
    values: Sequence[float] | torch.Tensor | None = None,
    below: str = "posterior",
    temperature: float = 0.1,
    generator: torch.Generator | None = None,
) -> ContextTraversal:
    """Move one entry (channel, i, j) of the context f(x) of images x (n, C, H, W) over
    `values` (default: its 2^bits levels) and decode. The layers under the context come from
    q at its means given the changed context ("posterior"), or from the prior at
    `temperature` with one noise draw per input shared by every value ("prior"), so that the
    rows of one input differ only through the context."""
    model = _checked(model)
    x = _checked_images(model, x)
    c, s, _ = model.context_shape
    if len(coefficient) != 3 or not all(isinstance(v, int) for v in coefficient):
        raise AtlasError(f"a context coefficient is (channel, i, j), got {coefficient!r}")
    ch, i, j = coefficient
    if not (0 <= ch < c and 0 <= i < s and 0 <= j < s):
        raise AtlasError(f"coefficient {coefficient} is outside the context: channel 0-{c - 1}, i and j 0-{s - 1}")
    if below not in BELOW:
        raise AtlasError(f"below must be one of {', '.join(BELOW)}, got {below!r}")
    temperature = _checked_temperature(temperature)
    levels = context_levels(model.config.context_bits) if values is None else torch.as_tensor(values).float()
    if levels.dim() != 1 or len(levels) == 0:
        raise AtlasError("give at least one value for the coefficient, as a flat list")
    if not bool(torch.isfinite(levels).all()) or levels.abs().max() > 1:
        raise AtlasError(f"context values lie in [-1, 1], got {levels.tolist()}")
    n, k = x.shape[0], len(levels)
    device = model.start.device
    base = model.context.encode(x)  # (n, C, s, s)
    contexts = base.unsqueeze(0).repeat(k, 1, 1, 1, 1)
    contexts[:, :, ch, i, j] = levels.to(device)[:, None]
    flat = contexts.reshape(k * n, *model.context_shape)
    images = model.context.decode(flat)
    if below == "posterior":
        acts = {key: a.repeat(k, *[1] * (a.dim() - 1)) for key, a in model.bottom_up(x).items()}
        params, _ = model.top_down(acts, k * n, mode="mean", context=images)
    else:
        gen = stream(generator)
        noise = {}
        for name, shape in zip(model.names, model.layer_shapes):
            where = gen.device if gen is not None else device
            eps = torch.randn((n, *shape), generator=gen, device=where).to(device)
            noise[name] = (temperature * eps).repeat(k, *[1] * len(shape))
        params, _ = model.top_down(None, k * n, noise=noise, context=images)
    h, w = model.config.input_shape[1:]
    return ContextTraversal(
        coefficient=(ch, i, j),
        values=levels.cpu(),
        contexts=contexts.cpu(),
        context_images=images.reshape(k, n, c, h, w).cpu(),
        decoded=model.likelihood.mean(params).reshape(k, n, c, h, w).cpu(),
        below=below,
        temperature=temperature,
    )


@dataclass
class ContextTrajectory:
    steps: list[int]  # T, T - 1, ..., 0
    y: list[torch.Tensor]  # y_t per step (n, C, size, size), as the reverse process has it
    images: list[torch.Tensor]  # per step x_context of y_t clamped to [-1, 1]: (n, C, H, W)
    sample: torch.Tensor  # (n, C, size, size) y_0 quantised: the context model.sample_context draws
    sample_image: torch.Tensor  # (n, C, H, W) its x_context
    temperature: float


@torch.no_grad()
def context_trajectory(
    model: DCTVAE, n: int, temperature: float = 1.0, generator: torch.Generator | None = None
) -> ContextTrajectory:
    """The diffusion prior's reverse process y_T -> y_0 over the context for n draws at
    `temperature` (seed004 App. C): every step recorded. With the same generator state,
    `sample` is what model.sample_context(n, temperature, generator) returns. At temperature 0
    no noise is drawn: y_T = 0 and every step takes the mean, so the n draws are equal."""
    model = _checked(model)
    if not isinstance(n, int) or n < 1:
        raise AtlasError(f"n must be a positive number of draws, got {n!r}")
    temperature = _checked_temperature(temperature)
    steps = list(range(model.context_prior.steps, -1, -1))
    y0, kept = model.context_prior.sample(
        model.context_denoiser,
        (n, *model.context_shape),
        temperature,
        stream(generator),
        record=tuple(steps),
        device=model.start.device,
    )
    sample = quantise(y0, model.config.context_bits)
    return ContextTrajectory(
        steps=steps,
        y=[kept[s].cpu() for s in steps],
        images=[model.context.decode(kept[s].clamp(-1, 1)).cpu() for s in steps],
        sample=sample.cpu(),
        sample_image=model.context.decode(sample).cpu(),
        temperature=temperature,
    )


@dataclass
class ContextSamples:
    temperatures: list[float]
    contexts: list[torch.Tensor]  # per temperature (n, C, size, size), quantised
    context_images: list[torch.Tensor]  # per temperature (n, C, H, W)
    samples: list[torch.Tensor]  # per temperature (n, C, H, W): the decoder's mean
    seed: int


@torch.no_grad()
def samples_with_context(
    model: DCTVAE, n: int, temperatures: Sequence[float] = SAMPLE_TEMPERATURES, seed: int = 0
) -> ContextSamples:
    """Unconditional samples at each temperature with the context each was decoded from: the
    context from the diffusion prior, then the layers below from their priors, all at that
    temperature. Each temperature starts from a generator seeded with `seed`, so a row is
    model.sample(n, t, that generator) and columns compare across rows."""
    model = _checked(model)
    if not isinstance(n, int) or n < 1:
        raise AtlasError(f"n must be a positive number of samples, got {n!r}")
    temps = [_checked_temperature(t) for t in temperatures]
    if not temps:
        raise AtlasError("give at least one temperature")
    device = model.start.device
    contexts, images, samples = [], [], []
    for t in temps:
        generator = torch.Generator(device).manual_seed(int(seed))
        context = model.sample_context(n, t, generator)
        image = model.context.decode(context)
        params, _ = model.top_down(None, n, temperature=t, generator=generator, context=image)
        contexts.append(context.cpu())
        images.append(image.cpu())
        samples.append(model.likelihood.mean(params).cpu())
    return ContextSamples(temps, contexts, images, samples, int(seed))


@torch.no_grad()
def context_code_length(model: DCTVAE, data, n: int = 1000, batch_size: int = 250) -> torch.Tensor:
    """-L_DDGM(f(x)) in nats for the first n examples of `data` (n,): the context's term of the
    ELBO, a bound on its code length under the diffusion prior, over every step in eval mode
    with one fixed noise draw per step (model.context_log_prior's fixed_noise), so the value
    does not depend on the batch or on other draws."""
    model = _checked(model)
    n = min(int(n), len(data))
    if n < 1:
        raise AtlasError("the data set is empty")
    was = model.training
    model.eval()
    try:
        out = []
        for start in range(0, n, batch_size):
            x = _checked_images(model, data.batch(torch.arange(start, min(start + batch_size, n))))
            out.append(-model.context_log_prior(model.context.encode(x), fixed_noise=True).double().cpu())
    finally:
        model.train(was)
    return torch.cat(out)
