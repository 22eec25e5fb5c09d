"""What the diffusion pages show, computed without a browser: the reverse trajectory with the
denoiser's guess of x_0 along it, test images noised and denoised in one step, the bound
split by step, and where a staged model's training stages end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from engine.models.ddpm import DDPM, stage_at


def trajectory_steps(steps: int, count: int = 8) -> list[int]:
    """`count` steps from T down to 0, spaced more finely near 0 where the image forms."""
    fractions = np.linspace(1, 0, count) ** 2
    return sorted({int(round(f * steps)) for f in fractions}, reverse=True)


@dataclass
class Trajectory:
    steps: list[int]  # T ... 0
    x: list[torch.Tensor]  # x_t per step, images in [0, 1] (n, C, H, W)
    x0: list[torch.Tensor]  # the denoiser's x̂_0 at that step (x_0 itself at t = 0)


@torch.no_grad()
def reverse_trajectory(
    model: DDPM, n: int, steps: list[int], temperature: float = 1.0, level: int = 0, seed: int = 0
) -> Trajectory:
    y, kept = model.trajectory(n, temperature, level, torch.Generator().manual_seed(seed), record=tuple(steps))
    xs, x0s = [], []
    for s in steps:
        xs.append(model.to_images(kept[s]))
        if s == 0:
            x0s.append(model.to_images(y))
        else:
            t = torch.full((n,), s, device=y.device)
            x0, _ = model.diffusion.predict(model.denoiser(level), kept[s], t)
            x0s.append(model.to_images(x0.clamp(-1, 1)))
    return Trajectory(list(steps), xs, x0s)


@torch.no_grad()
def noised_and_denoised(model: DDPM, x: torch.Tensor, steps: list[int], seed: int = 0) -> Trajectory:
    """Test images x in [0, 1] taken to x_t ~ q(x_t | x_0) for each step (one noise draw,
    shared across steps) and the denoiser's one-step x̂_0 from each."""
    y = model.to_process(x)
    noise = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed)).to(y.device)
    xs, x0s = [], []
    for s in steps:
        if s == 0:
            xs.append(model.to_images(y))
            x0s.append(model.to_images(y))
            continue
        t = torch.full((len(y),), s, device=y.device)
        yt = model.diffusion.q_sample(y, t, noise)
        x0, _ = model.diffusion.predict(model.denoiser(0), yt, t)
        xs.append(model.to_images(yt))
        x0s.append(model.to_images(x0.clamp(-1, 1)))
    return Trajectory(list(steps), xs, x0s)


@dataclass
class BoundBySteps:
    """The bound's terms in bits per dimension, averaged over test images: L_0 (-ln p(x_0|x_1)),
    L_{t-1} for t = 2..T, and L_T; their sum is the test bits/dim."""

    recon: float
    steps: np.ndarray  # (T - 1,) for t = 2..T
    prior: float

    @property
    def total(self) -> float:
        return self.recon + float(self.steps.sum()) + self.prior


@torch.no_grad()
def bound_by_steps(model: DDPM, x: torch.Tensor, seed: int = 0) -> BoundBySteps:
    bound = model.bound(x, every_step=True, generator=torch.Generator().manual_seed(seed))
    per_dim = float(np.prod(model.config.input_shape)) * np.log(2)
    return BoundBySteps(
        recon=-bound.recon.mean().item() / per_dim,
        steps=bound.steps.mean(0).cpu().numpy() / per_dim,
        prior=bound.prior.mean().item() / per_dim,
    )


def stage_ends(model: DDPM, checkpoint_steps: list[int]) -> list[tuple[int, int]]:
    """(checkpoint step, the level its last training step trained) for the checkpoints that
    close a stage of a staged model; [] when the model was not trained in stages."""
    stages = model.config.stage_steps
    if not stages:
        return []
    ends = set(np.cumsum(stages).tolist())
    return [(s, model.levels - 1 - stage_at(stages, s - 1)) for s in checkpoint_steps if s in ends]


def at_full_size(x: torch.Tensor, size: int) -> torch.Tensor:
    """Coarse images shown at the full resolution: each pixel a block (nearest upsampling),
    as the seed's figures show the stages."""
    return F.interpolate(x, size=(size, size), mode="nearest") if x.shape[-1] != size else x


@dataclass
class BlockNorms:
    """Per-example L2 norms of every U-Net residual block's output, in the order the forward
    pass runs them, averaged within bins of diffusion time."""

    blocks: list[str]  # "encoder 16×16 #1", "middle 4×4 #1", "decoder 8×8 #2", ...
    edges: list[int]  # bin b holds t in (edges[b], edges[b + 1]]
    mean: np.ndarray  # (bins, blocks)
    sd: np.ndarray  # (bins, blocks)


def block_label(name: str, side: int, levels: int) -> str:
    """ "encoder.1.0" -> "encoder 8×8 #1" for a U-Net whose level 0 is side × side."""
    parts = name.split(".")
    if parts[0] == "middle":
        res, index = side // 2 ** (levels - 1), int(parts[1])
    else:
        res, index = side // 2 ** int(parts[1]), int(parts[2])
    return f"{parts[0]} {res}×{res} #{index + 1}"


@torch.no_grad()
def block_norms_by_time(model: DDPM, x: torch.Tensor, bins: int = 5, seed: int = 0) -> BlockNorms:
    """Noise test images x (in [0, 1]) to a uniform t within each of `bins` equal bins of
    1..T and record the output norm of every residual block of the full-resolution denoiser."""
    from engine.models.unet import ResBlock

    named = [(n, m) for n, m in model.unet.named_modules() if isinstance(m, ResBlock)]
    order: list[str] = []
    seen: dict[str, torch.Tensor] = {}

    def record(name: str):
        def hook(_module, _inputs, out: torch.Tensor) -> None:
            order.append(name)
            seen[name] = out.flatten(1).norm(dim=1)

        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in named]
    g = torch.Generator().manual_seed(seed)
    y = model.to_process(x)
    T = model.config.steps
    edges = np.linspace(0, T, bins + 1).round().astype(int).tolist()
    means, sds = [], []
    try:
        for lo, hi in zip(edges[:-1], edges[1:]):
            t = torch.randint(lo + 1, hi + 1, (len(y),), generator=g).to(y.device)
            noise = torch.randn(y.shape, generator=g).to(y.device)
            order.clear()
            model.unet(model.diffusion.q_sample(y, t, noise), t)
            norms = torch.stack([seen[n] for n in order], 1)  # (batch, blocks) in execution order
            means.append(norms.mean(0).cpu().numpy())
            sds.append(norms.std(0).cpu().numpy())
    finally:
        for h in hooks:
            h.remove()
    side, levels = model.config.input_shape[-1], model.levels
    return BlockNorms([block_label(n, side, levels) for n in order], edges, np.stack(means), np.stack(sds))
