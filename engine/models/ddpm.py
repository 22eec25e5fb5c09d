"""A denoising diffusion model of images: the DDPM process of diffusion.py with the U-Net of
unet.py (a Residual U-Net or a Multi-ResNet), trained in one go or in stages, coarsest
resolution first (seed000 Algorithm 1).

A diffusion model is not a `LatentModel` (no encoder, no per-example posterior): it is a
`DiffusionModel`, which the trainer trains through `training_loss`, and whose pages sample
it, follow its trajectories and measure its bound. Images come in [0, 1] and the process
runs on them mapped to [-1, 1].

Staged training (Algorithm 1): `stage_steps` = (n_1, ..., n_L) trains level L-1 (the coarsest,
e.g. 4×4) for n_1 steps on the data averaged down to it, then level L-2 preconditioned on
what was learned below it, and so on up to the full resolution. Each level has its own head
and tail; with `freeze` the levels already trained stop learning, so the model can still
sample at every resolution.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import AtlasError
from engine.models.blocks import check_size
from engine.models.diffusion import (
    SCHEDULES,
    DiffusionBound,
    GaussianDiffusion,
    beta_schedule,
    check_steps,
)
from engine.models.unet import UNet, UNetConfig


@runtime_checkable
class DiffusionModel(Protocol):
    """A model of data through a diffusion: the process, its denoiser per resolution level,
    and samples in data space."""

    diffusion: GaussianDiffusion

    def denoiser(self, level: int = 0): ...

    def sample(self, n: int, temperature: float = 1.0, **kwargs) -> torch.Tensor: ...


@dataclass
class DDPMConfig:
    input_shape: tuple[int, ...] = (1, 16, 16)
    steps: int = 1000
    schedule: str = "linear"
    parametrization: str = "eps"
    variance: str = "fixed_small"
    widths: tuple[int, ...] = (32, 64, 64)  # U-Net channels per resolution, finest first
    blocks: int = 1
    decoder_blocks: int | None = None  # a Multi-ResNet's decoder may take the encoder's saved parameters
    encoder: str = "learned"  # "learned": Residual U-Net; "haar": Multi-ResNet
    groups: int = 8
    dropout: float = 0.1
    bits: int = 8  # the data's grid for the discretised likelihood: 2^bits levels
    stage_steps: tuple[int, ...] = ()  # Algorithm 1: steps per stage, coarsest level first; () = all at once
    freeze: bool = False  # Algorithm 1's FREEZE: a trained level stops learning

    def __post_init__(self):
        self.input_shape = tuple(int(s) for s in self.input_shape)
        self.widths = tuple(int(w) for w in self.widths)
        self.stage_steps = tuple(int(s) for s in self.stage_steps)
        if len(self.input_shape) != 3:
            raise AtlasError(f"a DDPM models images (C, H, W), got input_shape {list(self.input_shape)}")
        check_steps(self.steps)
        if self.schedule not in SCHEDULES:
            raise AtlasError(f"unknown β schedule {self.schedule!r}; use one of {', '.join(SCHEDULES)}")
        check_size("bits", self.bits, 16)
        self.unet_config().check_input(self.input_shape)
        if self.stage_steps and len(self.stage_steps) != len(self.widths):
            raise AtlasError(
                f"staged training needs one stage per resolution ({len(self.widths)}, coarsest first), "
                f"got stage_steps {list(self.stage_steps)}"
            )
        for s in self.stage_steps:
            check_size("a stage's steps", s, 10**9)

    def unet_config(self) -> UNetConfig:
        c = self.input_shape[0]
        return UNetConfig(
            in_channels=c,
            out_channels=2 * c if self.variance == "learned" else c,
            widths=self.widths,
            blocks=self.blocks,
            decoder_blocks=self.decoder_blocks,
            encoder=self.encoder,
            groups=self.groups,
            dropout=self.dropout,
        )

    @property
    def bin_width(self) -> float:
        return 2 / (2**self.bits - 1)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        c, h, _ = self.input_shape
        net = "Residual U-Net" if self.encoder == "learned" else "Multi-ResNet (Haar encoder)"
        sizes = ", ".join(str(h // 2**i) for i in range(len(self.widths)))
        staged = (
            f", trained in stages ({', '.join(f'{s:,}' for s in self.stage_steps)} steps, coarsest first"
            + (", trained levels frozen)" if self.freeze else ")")
            if self.stage_steps
            else ""
        )
        return (
            f"DDPM with T = {self.steps} ({self.schedule} β, {self.parametrization}-prediction, "
            f"{self.variance.replace('_', ' ')} variance); {net} at {sizes} px with widths "
            f"{', '.join(map(str, self.widths))}{staged}"
        )


def stage_at(stage_steps: tuple[int, ...], step: int) -> int:
    """The stage (0 = the first, coarsest) that training step `step` belongs to; the last
    stage goes on past its nominal end."""
    ends = torch.tensor(stage_steps).cumsum(0)
    return min(int((ends <= step).sum()), len(stage_steps) - 1)


class DDPM(nn.Module):
    def __init__(self, config: DDPMConfig):
        super().__init__()
        self.config = config
        self.unet = UNet(config.unet_config())
        betas = beta_schedule(config.schedule, config.steps)
        self.diffusion = GaussianDiffusion(betas, config.parametrization, config.variance)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    # -- resolution levels ---------------------------------------------------------------
    @property
    def levels(self) -> int:
        return self.config.unet_config().levels

    def level_shape(self, level: int) -> tuple[int, int, int]:
        c, h, w = self.config.input_shape
        return c, h // 2**level, w // 2**level

    @property
    def training_level(self) -> int:
        """The resolution level trained now: the current stage's, or 0 (full) when not staged."""
        if not self.config.stage_steps:
            return 0
        return self.levels - 1 - stage_at(self.config.stage_steps, int(self.step))

    def set_step(self, step: int) -> None:
        """Move to the stage of `step`; with `freeze`, the levels below it stop learning."""
        self.step.fill_(step)
        if self.config.freeze and self.config.stage_steps:
            for level in range(self.levels):
                frozen = level > self.training_level
                for module in self.unet.level_modules(level):
                    module.requires_grad_(not frozen)

    def denoiser(self, level: int = 0):
        if not 0 <= level < self.levels:
            raise AtlasError(f"this model has resolution levels 0 to {self.levels - 1}, got {level}")
        return lambda x, t: self.unet(x, t, level)

    # -- data space ------------------------------------------------------------------------
    @staticmethod
    def downsample(x: torch.Tensor, level: int) -> torch.Tensor:
        """Images averaged down by 2^level per side: the Haar projection's coarse coefficients."""
        return F.avg_pool2d(x, 2**level) if level else x

    def to_process(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> the process's space [-1, 1], on the data's grid of 2^bits levels."""
        levels = 2**self.config.bits - 1
        return torch.round(x.clamp(0, 1) * levels) / levels * 2 - 1

    @staticmethod
    def to_images(y: torch.Tensor) -> torch.Tensor:
        return ((y + 1) / 2).clamp(0, 1)

    # -- training and evaluation -----------------------------------------------------------
    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        level = self.training_level
        y = self.to_process(self.downsample(x, level))
        loss = self.diffusion.loss(self.denoiser(level), y).mean()
        return loss, {"resolution": torch.tensor(float(y.shape[-1]))}

    def bound(
        self, x: torch.Tensor, level: int = 0, every_step: bool = True, generator: torch.Generator | None = None
    ) -> DiffusionBound:
        """The bound of seed004 eq. 13 on images x in [0, 1] at a level's resolution, in nats,
        with the discretised likelihood on the 2^bits grid."""
        y = self.to_process(self.downsample(x, level))
        return self.diffusion.bound(self.denoiser(level), y, self.config.bin_width, every_step, generator)

    def bits_per_dim(self, bound: DiffusionBound) -> torch.Tensor:
        dims = bound.total.new_tensor(float(math.prod(self.config.input_shape)))
        return -bound.total / (dims * math.log(2))

    @torch.no_grad()
    def evaluation_metrics(self, test_data, n: int) -> dict[str, float]:
        """Bits per dimension of the bound at full resolution on n test images (L_0 exact, the
        other steps' sum estimated from one sampled step each, unbiased), and the simple loss."""
        device = self.step.device
        generator = torch.Generator().manual_seed(0)
        x = test_data.batch(torch.arange(min(n, len(test_data)))).to(device)
        bound = self.bound(x, every_step=False, generator=generator)
        loss = self.diffusion.loss(self.denoiser(0), self.to_process(x), generator=generator)
        return {"bpd": self.bits_per_dim(bound).mean().item(), "simple_loss": loss.mean().item()}

    # -- sampling --------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        n: int,
        temperature: float = 1.0,
        level: int = 0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """n images in [0, 1] at a level's resolution, by ancestral sampling (x̂_0 clipped to [-1, 1])."""
        return self.to_images(self.trajectory(n, temperature, level, generator)[0])

    @torch.no_grad()
    def trajectory(
        self,
        n: int,
        temperature: float = 1.0,
        level: int = 0,
        generator: torch.Generator | None = None,
        record: tuple[int, ...] = (),
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Samples in the process's space and {t: x_t} for the steps in `record`."""
        shape = (n, *self.level_shape(level))
        return self.diffusion.sample(
            self.denoiser(level), shape, temperature, generator, clip=True, record=record, device=self.step.device
        )
