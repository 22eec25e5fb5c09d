"""The denoiser of the diffusion models: a Residual U-Net, or a Multi-ResNet whose encoder is
the Haar projection (seed000 ch. 4, Def. 4.1 and §4.5).

Resolutions are levels i = 0..L-1, level 0 the finest (the input's size) and each next one
half as wide; `widths[i]` is level i's channel count. The recursion of Def. 4.1,

    U_i(v_i) = D_i( U_{i+1}(P_i(E_i(v_i))) | E_i(v_i) ),

is unrolled: the encoder E_i runs residual blocks at level i, P_i is 2×2 average pooling (the
Haar projection onto the next coarser space, Thm 3.2), the bottleneck is U_L, and the decoder
D_i runs residual blocks on the upsampled coarse result concatenated with the skip E_i(v_i).

- `encoder="learned"`: a Residual U-Net; E_i and D_i are ResNets (preconditioned on the identity).
- `encoder="haar"`: a Multi-ResNet; E_i is the identity, so the skip at level i is the input
  itself averaged down to that level (the LL band of a Haar DWT, inverted) and the encoder has
  no parameters. The parameters it saves can go to the decoder (`decoder_blocks`, "v1").

Every level has its own head (image -> features) and tail (features -> image), so the network
can be run at any level's resolution: `forward(x, t, level=i)` takes x at level i's size and
uses only levels i..L-1. That is what staged training (Algorithm 1) trains, coarsest first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import AtlasError
from engine.models.blocks import check_size

ENCODERS = ("learned", "haar")
MAX_WIDTH = 4096


@dataclass
class UNetConfig:
    in_channels: int = 1
    out_channels: int = 1
    widths: tuple[int, ...] = (32, 64, 64)  # channels per level, finest first; one level per resolution
    blocks: int = 1  # residual blocks per level in the encoder, and in the decoder unless decoder_blocks is set
    decoder_blocks: int | None = None
    middle_blocks: int = 2
    encoder: str = "learned"  # "learned": Residual U-Net; "haar": Multi-ResNet
    groups: int = 8
    dropout: float = 0.0

    def __post_init__(self):
        self.widths = tuple(int(w) for w in self.widths)
        if self.encoder not in ENCODERS:
            raise AtlasError(f"unknown U-Net encoder {self.encoder!r}; use one of {', '.join(ENCODERS)}")
        if not self.widths:
            raise AtlasError("a U-Net needs at least one level in widths")
        for name in ("in_channels", "out_channels", "blocks", "middle_blocks"):
            check_size(name, getattr(self, name), 64 if name != "out_channels" else 2 * 64)
        if self.decoder_blocks is not None:
            check_size("decoder_blocks", self.decoder_blocks, 64)
        for w in self.widths:
            check_size("widths", w, MAX_WIDTH)
            if w % self.groups:
                raise AtlasError(
                    f"every width must be a multiple of groups ({self.groups}), got widths {list(self.widths)}"
                )
        if not 0 <= self.dropout < 1:
            raise AtlasError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def levels(self) -> int:
        return len(self.widths)

    def check_input(self, shape: tuple[int, ...]) -> None:
        """Refuse an input (C, H, W) the levels cannot halve evenly."""
        c, h, w = shape
        step = 2 ** (self.levels - 1)
        if c != self.in_channels or h % step or w % step:
            raise AtlasError(
                f"a U-Net with {self.levels} levels takes {self.in_channels}-channel images whose sides divide by "
                f"{step}, got {list(shape)}; use fewer widths or resize the images"
            )


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of the step t (batch,) -> (batch, dim), as in Transformers and DDPM."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], 1)


class ResBlock(nn.Module):
    """GroupNorm, SiLU, 3×3 conv, plus the step's embedding; again with dropout; added to the
    input (through a 1×1 conv when the width changes). The last conv starts at zero, so a
    fresh block is the identity: the block is preconditioned on it."""

    def __init__(self, cin: int, cout: int, time_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(math.gcd(groups, cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time = nn.Linear(time_dim, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.time(temb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class UNet(nn.Module):
    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        widths, levels = cfg.widths, cfg.levels
        time_dim = 4 * widths[0]
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(widths[0], time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))

        def block(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, time_dim, cfg.groups, cfg.dropout)

        learned = cfg.encoder == "learned"
        # a learned encoder reads the image through level i's head; a Haar one lifts only the coarsest image
        head_levels = range(levels) if learned else [levels - 1]
        self.heads = nn.ModuleDict({str(i): nn.Conv2d(cfg.in_channels, widths[i], 3, padding=1) for i in head_levels})
        self.encoder = nn.ModuleList(
            [
                nn.ModuleList([block(widths[i], widths[i]) for _ in range(cfg.blocks)] if learned else [])
                for i in range(levels)
            ]
        )
        self.down = nn.ModuleList(
            [nn.Identity()]
            + [
                nn.Conv2d(widths[i - 1], widths[i], 1) if learned and widths[i - 1] != widths[i] else nn.Identity()
                for i in range(1, levels)
            ]
        )
        self.middle = nn.ModuleList([block(widths[-1], widths[-1]) for _ in range(cfg.middle_blocks)])
        skip = [widths[i] if learned else cfg.in_channels for i in range(levels)]
        n_dec = cfg.decoder_blocks if cfg.decoder_blocks is not None else cfg.blocks
        self.decoder = nn.ModuleList(
            [
                nn.ModuleList(
                    [block(widths[i] + skip[i], widths[i])] + [block(widths[i], widths[i]) for _ in range(n_dec - 1)]
                )
                for i in range(levels)
            ]
        )
        self.up = nn.ModuleList(
            [
                nn.Conv2d(widths[i + 1], widths[i], 1) if widths[i + 1] != widths[i] else nn.Identity()
                for i in range(levels - 1)
            ]
        )
        self.tails = nn.ModuleList(
            [
                nn.Sequential(
                    nn.GroupNorm(cfg.groups, widths[i]), nn.SiLU(), nn.Conv2d(widths[i], cfg.out_channels, 3, padding=1)
                )
                for i in range(levels)
            ]
        )

    def level_modules(self, level: int) -> list[nn.Module]:
        """What level i adds to the network below it: its encoder, decoder and transitions
        (its head and tail excluded), the parts that Algorithm 1 may freeze once trained."""
        parts = [self.encoder[level], self.decoder[level], self.down[level]]
        if level < self.config.levels - 1:
            parts.append(self.up[level])
        else:
            parts.append(self.middle)
            if self.config.encoder == "haar":
                parts.append(self.heads[str(level)])
        return parts

    def forward(self, x: torch.Tensor, t: torch.Tensor, level: int = 0) -> torch.Tensor:
        """The denoiser's output for x (batch, C, H, W) at level `level`'s resolution and step t (batch,)."""
        cfg = self.config
        temb = self.time_mlp(timestep_embedding(t, cfg.widths[0]))
        skips: list[torch.Tensor] = []
        if cfg.encoder == "learned":
            h = self.heads[str(level)](x)
            for i in range(level, cfg.levels):
                if i > level:
                    h = self.down[i](F.avg_pool2d(h, 2))
                for blk in self.encoder[i]:
                    h = blk(h, temb)
                skips.append(h)
        else:  # the Haar projection onto each coarser level: E_i = Id, P_i = average pooling
            v = x
            for i in range(level, cfg.levels):
                if i > level:
                    v = F.avg_pool2d(v, 2)
                skips.append(v)
            h = self.heads[str(cfg.levels - 1)](v)
        for blk in self.middle:
            h = blk(h, temb)
        for i in reversed(range(level, cfg.levels)):
            if i < cfg.levels - 1:
                h = self.up[i](F.interpolate(h, scale_factor=2, mode="nearest"))
            blocks = self.decoder[i]
            h = blocks[0](torch.cat([h, skips[i - level]], 1), temb)
            for blk in blocks[1:]:
                h = blk(h, temb)
        return self.tails[level](h)
