"""Unsupervised attacks on the top latent layers of a hierarchical VAE (seed004 App. H).

The seed follows Kuzina et al. (2022) and does not state the objective; this is ours, in
their unsupervised form: find a distortion d with ||d||_inf <= epsilon (x + d kept in
[0, 1]) that moves the posteriors of the top n latent groups as far as possible,

    maximise  sum_{l < n} SKL( q_l(. | x + d), q_l(. | x) ),   SKL(a, b) = KL(a||b) + KL(b||a),

each q_l the Gaussian of layer l along its own posterior-mean path (q_l(. | z_<l, x) at
z_<l = the means of the layers above). A DCT-VAE's context counts as its first group. It
is a quantised function of x, so it has no gradient; the attacker gets a smooth stand-in:
the SKL of two Gaussians of standard deviation b (the bin width) at the context's values
before quantisation, ||v(x + d) - v(x)||^2 / b^2, which grows as a coefficient moves
across bins. What is scored is not the stand-in but what the model does: the MS-SSIM
between the reconstruction of x and of x + d, both decoded along the posterior-mean path
(the context at its quantised value).

Projected gradient ascent on the sign of the gradient (the L-inf steepest ascent), from
`restarts` random starts uniform in the box: the seed's "5 random initialisations". Each
restart is scored; `attack_top_layers` returns all of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from engine.diagnostics.similarity import ms_ssim
from engine.errors import AtlasError
from engine.models.context import bin_width
from engine.models.hvae import HVAE, gaussian_kl


@dataclass
class TopLayerAttack:
    n_layers: int
    epsilon: float
    reconstruction: torch.Tensor  # (batch, C, H, W): x decoded along the posterior-mean path
    attacked: torch.Tensor  # (restarts, batch, C, H, W): x + d decoded the same way
    distortion: torch.Tensor  # (restarts, batch, C, H, W): d
    divergence: np.ndarray  # (restarts, batch): the objective at the end
    ms_ssim: np.ndarray  # (restarts, batch): MS-SSIM(reconstruction, attacked)


def _has_context(model: HVAE) -> bool:
    return len(model.latent_groups) > len(model.names)


def mean_path(model: HVAE, x: torch.Tensor, n_layers: int | None = None):
    """The posterior-mean pass of x: (likelihood parameters, [(mean, logvar) of each Gaussian
    layer's q], the context's values before quantisation or None). With n_layers, only
    the top n_layers groups' posteriors are computed, and no likelihood (None)."""
    acts = model.bottom_up(x)
    context = model.context.values(x) if _has_context(model) else None
    n = x.shape[0]
    if n_layers is None:
        params, layers = model.top_down(acts, n, mode="mean")
        return params, [layer["q"] for layer in layers], context
    gaussian = n_layers - 1 if context is not None else n_layers
    qs = []
    if gaussian > 0:
        # only the attacked layers' posteriors are needed; the layers below take their prior means
        # (HVAE.top_down has no early stop, so the pass still runs through them)
        use = [i < gaussian for i in range(len(model.names))]
        _, layers = model.top_down(acts, n, mode="mean", use_posterior=use)
        qs = [layer["q"] for layer in layers[:gaussian]]
    return None, qs, context


def top_layer_divergence(
    model: HVAE, x_adv: torch.Tensor, clean, n_layers: int, context_stand_in: bool = True
) -> torch.Tensor:
    """The attack's objective (batch,) for attacked inputs, against `clean` = mean_path(x);
    without `context_stand_in` a DCT-VAE's context adds nothing (it is attacked only through
    what moving the layers below does to it, as an attacker without a way through the
    rounding would)."""
    _, qs, context = mean_path(model, x_adv, n_layers)
    _, clean_qs, clean_context = clean
    total = torch.zeros(x_adv.shape[0], dtype=x_adv.dtype, device=x_adv.device)
    for q, q0 in zip(qs, clean_qs):
        total = total + gaussian_kl(q, q0) + gaussian_kl(q0, q)
    if context is not None and context_stand_in:
        b = bin_width(model.context.bits)
        total = total + (context - clean_context).flatten(1).pow(2).sum(1) / b**2
    return total


def decode_mean_path(model: HVAE, x: torch.Tensor) -> torch.Tensor:
    params, _, _ = mean_path(model, x)
    return model.likelihood.mean(params)


def attack_top_layers(
    model: HVAE,
    x: torch.Tensor,
    n_layers: int,
    epsilon: float = 0.1,
    steps: int = 20,
    restarts: int = 5,
    generator: torch.Generator | None = None,
    context_stand_in: bool = True,
) -> TopLayerAttack:
    """Attack the top `n_layers` latent groups of x (batch, C, H, W) in [0, 1]; see the
    module docstring. Step size 2.5 epsilon / steps. `context_stand_in`: see
    top_layer_divergence."""
    if not isinstance(model, HVAE):
        raise AtlasError("the top-layer attack needs a hierarchical VAE (family 'hvae' or 'dctvae')")
    groups = len(model.latent_groups)
    if not isinstance(n_layers, int) or not 1 <= n_layers <= groups:
        raise AtlasError(f"n_layers must be between 1 and {groups} (the model's latent groups), got {n_layers!r}")
    if not (isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon > 0):
        raise AtlasError(f"epsilon must be a positive number (the L-inf budget on [0, 1] images), got {epsilon!r}")
    if steps < 1 or restarts < 1:
        raise AtlasError(f"steps and restarts must be at least 1, got {steps} and {restarts}")
    if x.dim() != 4 or x.shape[1:] != tuple(model.config.input_shape):
        raise AtlasError(f"inputs must have shape (batch, {model.config.input_shape}), got {tuple(x.shape)}")
    was = model.training
    model.eval()
    batch = x.shape[0]
    xs = x.repeat(restarts, 1, 1, 1)
    with torch.no_grad():
        clean = mean_path(model, xs, n_layers)
        reconstruction = decode_mean_path(model, x)
    u = torch.rand(xs.shape, generator=generator, device=x.device, dtype=x.dtype)
    delta = epsilon * (2 * u - 1)
    delta = (xs + delta).clamp(0, 1) - xs
    step = 2.5 * epsilon / steps
    for _ in range(steps):
        delta.requires_grad_(True)
        with torch.enable_grad():
            objective = top_layer_divergence(model, xs + delta, clean, n_layers, context_stand_in).sum()
            if not objective.requires_grad:  # nothing attacked depends on x: the start stays
                break
            (grad,) = torch.autograd.grad(objective, delta)
        delta = (delta.detach() + step * grad.sign()).clamp(-epsilon, epsilon)
        delta = (xs + delta).clamp(0, 1) - xs
    delta = delta.detach()
    with torch.no_grad():
        divergence = top_layer_divergence(model, xs + delta, clean, n_layers, context_stand_in)
        attacked = decode_mean_path(model, xs + delta)
        similarity = ms_ssim(reconstruction.repeat(restarts, 1, 1, 1).double(), attacked.double())
    model.train(was)
    shape = (restarts, batch)
    return TopLayerAttack(
        n_layers=n_layers,
        epsilon=float(epsilon),
        reconstruction=reconstruction.cpu(),
        attacked=attacked.view(*shape, *x.shape[1:]).cpu(),
        distortion=delta.view(*shape, *x.shape[1:]).cpu(),
        divergence=divergence.view(shape).cpu().numpy(),
        ms_ssim=similarity.view(shape).cpu().numpy(),
    )
