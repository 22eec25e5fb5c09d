"""openai/vdvae's network held exactly, as an atlas HVAE (seed000 ch. 3; anchors A3).

The thesis measures residual norms and per-layer KLs of the official VDVAE checkpoints
(seed000 Fig. 3.6, B.4, B.5). This family has vdvae's own parameter names and arithmetic, so
a checkpoint loads by a near-identity key map (engine/adapters/vdvae.py), and it is an `HVAE`,
so the residual-norm and layer pages and engine/diagnostics/hvae.py work on it.

Where it differs from the atlas HVAE (engine/models/hvae.py), as vdvae's vae.py does it:
- input: pixels p (0..255, or 0..1 for ffhq1024) enter as (p + shift) * scale;
- encoder: `in_conv`, then blocks whose pooling is inside the block; a_R is the state after the
  last block that ends at R (the in_conv output at the image size), zero-padded where a custom
  width string widens the state; no weight sharing;
- decoder: one state per resolution; a block at R starts from that state (a learned `bias_xs`
  at R <= no_bias_above, zeros above), a mixin block ``RmS`` adds the state at S upsampled
  (its first channels); q and p are (mean, log sigma) without clamping, the KL analytic;
- output: x_R * gain + bias at the image size, then `out_net.out_conv` to 10 M channels of a
  discretised mixture of logistics over RGB with vdvae's autoregressive channel coefficients
  (`RGBLogistics`).
Latent layers are named and shaped as in the HVAE ("layer00", ... of zdim x R x R). A new model
is initialised as PyTorch does, without vdvae's sqrt(1 / blocks) scalings: the family is for
loading vdvae's weights.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import AtlasError
from engine.models.base import LatentGroup, Latents, check_input_shape
from engine.models.blocks import MAX_BLOCKS, MAX_LATENT_CHANNELS, MAX_MIXTURES, MAX_RESIDUAL_WIDTH, check_size
from engine.models.hvae import HVAE, Block, BlockSpec

_TOKEN = re.compile(r"^(\d+)(?:([xmd])(\d+))?$")


def parse_vdvae_blocks(text: str, side: str) -> list[BlockSpec]:
    """vdvae's block string: ``R`` one block, ``RxN`` N blocks at R; encoder ``RdK`` one block
    at R then average-pooling by K; decoder ``RmS`` one block at R that mixes in the state at S."""
    if not isinstance(text, str) or not text.strip():
        raise AtlasError(f"the vdvae {side} block string is empty; write e.g. '32x3,32d2,16x3'")
    specs: list[BlockSpec] = []
    for raw in text.replace(" ", "").split(","):
        m = _TOKEN.match(raw)
        if not m:
            raise AtlasError(f"cannot read {raw!r} in the vdvae {side} block string {text!r}; use R, RxN, RdK or RmS")
        res, op, n = int(m[1]), m[2] or "x", int(m[3] or 1)
        if res < 1 or n < 1:
            raise AtlasError(f"{raw!r} in the vdvae {side} block string has a zero; sizes and counts start at 1")
        if op == "d" and side != "encoder" or op == "m" and side != "decoder":
            raise AtlasError(
                f"{raw!r}: the {side} takes no {op!r} token (the encoder pools with 'd', the decoder mixes with 'm')"
            )
        if op == "x":
            specs.extend(BlockSpec(res, len(specs) + k) for k in range(n))
        elif op == "d":
            specs.append(BlockSpec(res, len(specs), down=n))
        else:
            specs.append(BlockSpec(res, len(specs), up_from=n))
        if len(specs) > MAX_BLOCKS:
            raise AtlasError(f"the vdvae {side} block string has more than {MAX_BLOCKS} blocks")
    return specs


def parse_widths(text: str) -> dict[int, int]:
    """vdvae's custom_width_str, "R:W,R:W", as {resolution: width}; "" for none."""
    if not isinstance(text, str):
        raise AtlasError(f"custom_width_str must be a string like '512:32,256:64', got {text!r}")
    widths = {}
    for item in filter(None, text.replace(" ", "").split(",")):
        m = re.fullmatch(r"(\d+):(\d+)", item)
        if not m:
            raise AtlasError(f"cannot read {item!r} in custom_width_str {text!r}; write resolution:width, e.g. 256:64")
        check_size(f"the width at {m[1]}x{m[1]}", int(m[2]), MAX_RESIDUAL_WIDTH)
        widths[int(m[1])] = int(m[2])
    return widths


@dataclass
class VDVAEConfig:
    """vdvae's hyperparameters (hps.py, data.py) under their own names; defaults are cifar10's."""

    input_shape: tuple[int, ...] = (3, 32, 32)
    enc_blocks: str = "32x11,32d2,16x6,16d2,8x6,8d2,4x3,4d4,1x3"
    dec_blocks: str = "1x1,4m1,4x2,8m4,8x5,16m8,16x10,32m16,32x21"
    width: int = 384
    zdim: int = 16
    bottleneck_multiple: float = 0.25
    num_mixtures: int = 10
    custom_width_str: str = ""
    no_bias_above: int = 64
    shift: float = -120.63838  # encoder input (pixel + shift) * scale (data.py, per dataset)
    scale: float = 1.0 / 64.16736
    pixel_max: float = 255.0  # the pixel scale shift and scale were set on (1.0 for ffhq1024)
    low_bit: bool = False  # ffhq256: the likelihood scores 5-bit pixels
    hps: str = ""  # the preset it came from, for display
    family: str = field(default="vdvae", init=False)

    def __post_init__(self):
        self.input_shape = tuple(int(s) for s in self.input_shape)
        if len(self.input_shape) != 3 or self.input_shape[0] != 3 or self.input_shape[1] != self.input_shape[2]:
            raise AtlasError(f"a vdvae model takes square RGB images (3, H, H), got {self.input_shape}")
        check_size("width", self.width, MAX_RESIDUAL_WIDTH)
        check_size("zdim", self.zdim, MAX_LATENT_CHANNELS)
        check_size("num_mixtures", self.num_mixtures, MAX_MIXTURES)
        check_size("no_bias_above", self.no_bias_above, 1 << 16)
        if not isinstance(self.bottleneck_multiple, (int, float)) or not 0 < self.bottleneck_multiple <= 4:
            raise AtlasError(f"bottleneck_multiple must be in (0, 4], got {self.bottleneck_multiple!r}")
        for name in ("shift", "scale", "pixel_max"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise AtlasError(f"{name} must be a finite number, got {value!r}")
        if not isinstance(self.low_bit, bool):
            raise AtlasError(f"low_bit must be true or false, got {self.low_bit!r}")
        if self.scale == 0 or self.pixel_max <= 0:
            raise AtlasError("scale must not be zero and pixel_max must be positive")
        self.check_layout()

    def widths(self) -> dict[int, int]:
        """{resolution: state width}, vdvae's get_width_settings; `width` where not given."""
        custom = parse_widths(self.custom_width_str)
        return {r: custom.get(r, self.width) for r in self.resolutions()}

    def resolutions(self) -> set[int]:
        enc, dec = parse_vdvae_blocks(self.enc_blocks, "encoder"), parse_vdvae_blocks(self.dec_blocks, "decoder")
        return {self.input_shape[1]} | {s.res for s in enc + dec} | {s.res // s.down for s in enc if s.down}

    def check_layout(self) -> None:
        """Refuse block strings vdvae's own code would crash on or read differently: a block at a
        resolution the state is not at, a pooling that does not divide, a decoder block without an
        encoder activation, a mixin from a state that does not exist yet, widths that cannot pad."""
        side = self.input_shape[1]
        widths = self.widths()
        enc = parse_vdvae_blocks(self.enc_blocks, "encoder")
        dec = parse_vdvae_blocks(self.dec_blocks, "decoder")
        if any(int(w * self.bottleneck_multiple) < 1 for w in widths.values()):
            raise AtlasError(f"bottleneck_multiple {self.bottleneck_multiple} leaves a block with no inner channels")
        if widths[side] != self.width:
            raise AtlasError(f"the width at the image size {side}x{side} must be `width` ({self.width})")
        res, acts = side, {side}
        for i, s in enumerate(enc):
            if s.res != res:
                raise AtlasError(f"encoder block {i} is at {s.res}x{s.res} but the state there is {res}x{res}")
            if s.down:
                if res % s.down or s.down == 1:
                    raise AtlasError(f"encoder block {i}: cannot pool {res}x{res} by {s.down}")
                if widths[res // s.down] < widths[res]:
                    raise AtlasError(f"encoder block {i}: the width shrinks from {res}x{res} to {res // s.down}x..")
                res //= s.down
            acts.add(res)
        states = {r for r in {s.res for s in dec} if r <= self.no_bias_above}
        for i, s in enumerate(dec):
            if s.res not in acts:
                raise AtlasError(f"decoder block {i} at {s.res}x{s.res} has no encoder activation at that resolution")
            if s.up_from:
                if s.up_from not in states:
                    raise AtlasError(
                        f"decoder block {i} mixes in the {s.up_from}x{s.up_from} state, which has none yet"
                    )
                if s.up_from >= s.res or s.res % s.up_from:
                    raise AtlasError(f"decoder block {i}: cannot upsample {s.up_from}x{s.up_from} to {s.res}x{s.res}")
                if widths[s.up_from] < widths[s.res]:
                    raise AtlasError(f"decoder block {i}: the {s.up_from}x{s.up_from} state is narrower than its own")
            states.add(s.res)
        if side not in {s.res for s in dec}:
            raise AtlasError(f"the decoder has no block at the image size {side}x{side}")

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        layers = len(parse_vdvae_blocks(self.dec_blocks, "decoder"))
        return (
            f"openai/vdvae network{f' ({self.hps})' if self.hps else ''}: {layers} latent layers of {self.zdim} "
            f"channels, width {self.width}, encoder `{self.enc_blocks}`, decoder `{self.dec_blocks}`, "
            f"RGB mixture of {self.num_mixtures} discretised logistics"
        )


class RGBLogistics(nn.Module):
    """vdvae's likelihood (PixelCNN++'s): per pixel one mixture of M discretised logistics over
    RGB in [-1, 1], green's and blue's means shifted by coefficients times the red (and green)
    value. params (..., 10 M, H, W): M logits, then per channel M means, M log-scales, M raw
    coefficients; x (..., 3, H, W) in [0, 1]."""

    def __init__(self, mixtures: int, low_bit: bool = False):
        super().__init__()
        self.m, self.low_bit = mixtures, low_bit

    def _split(self, params):
        p = params.movedim(-3, -1)  # (..., H, W, 10 M)
        m = self.m
        logits = p[..., :m]
        rest = p[..., m:].reshape(*p.shape[:-1], 3, 3 * m)  # (..., H, W, 3, 3 M)
        means, log_s = rest[..., :m], rest[..., m : 2 * m].clamp(min=-7.0)
        return logits, means, log_s, torch.tanh(rest[..., 2 * m :])

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """x in [0, 1] as vdvae's loss sees it, in [-1, 1]; 5-bit levels when `low_bit`."""
        if self.low_bit:
            return (torch.floor(torch.round(x * 255.0) / 8.0) * 8.0 - 127.5) / 127.5
        return x * 2.0 - 1.0

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x | params) in nats per image: (...,)."""
        logits, means, log_s, c = self._split(params)
        y = self.target(x).movedim(-3, -1).unsqueeze(-1)  # (..., H, W, 3, 1)
        r, g = y[..., 0, :], y[..., 1, :]
        means = torch.stack(
            [
                means[..., 0, :],
                means[..., 1, :] + c[..., 0, :] * r,
                means[..., 2, :] + c[..., 1, :] * r + c[..., 2, :] * g,
            ],
            dim=-2,
        )
        half = 1.0 / 31.0 if self.low_bit else 1.0 / 255.0
        inv_s = torch.exp(-log_s)
        centred = y - means
        plus, minus = inv_s * (centred + half), inv_s * (centred - half)
        delta = torch.sigmoid(plus) - torch.sigmoid(minus)
        mid = inv_s * centred
        log_mid = mid - log_s - 2.0 * F.softplus(mid) - math.log(15.5 if self.low_bit else 127.5)
        inner = torch.where(delta > 1e-5, torch.log(delta.clamp_min(1e-12)), log_mid)
        lp = torch.where(y < -0.999, plus - F.softplus(plus), torch.where(y > 0.999, -F.softplus(minus), inner))
        lp = torch.logsumexp(lp.sum(-2) + F.log_softmax(logits, dim=-1), dim=-1)  # (..., H, W)
        return lp.flatten(-2).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The mixture's mean image in [0, 1] (..., 3, H, W), each component's green and blue
        means taken at its own clipped red and green means, as vdvae's sampler clips."""
        logits, means, _, c = self._split(params)
        r = means[..., 0, :].clamp(-1.0, 1.0)
        g = (means[..., 1, :] + c[..., 0, :] * r).clamp(-1.0, 1.0)
        b = (means[..., 2, :] + c[..., 1, :] * r + c[..., 2, :] * g).clamp(-1.0, 1.0)
        w = F.softmax(logits, dim=-1).unsqueeze(-2)
        rgb = (torch.stack([r, g, b], dim=-2) * w).sum(-1)  # (..., H, W, 3)
        return ((rgb + 1.0) / 2.0).movedim(-1, -3).clamp(0.0, 1.0)


class DecBlock(nn.Module):
    """vdvae's top-down block: posterior `enc`, `prior` (zero last layer in training), `z_proj`
    and `resnet`; q and p come as (mean, logvar) for the atlas, logvar = 2 log sigma."""

    def __init__(self, width: int, mid: int, zdim: int, res: int):
        super().__init__()
        self.zdim = zdim
        self.enc = Block(2 * width, mid, 2 * zdim, res, residual=False)
        self.prior = Block(width, mid, 2 * zdim + width, res, residual=False, zero_last=True)
        self.z_proj = nn.Conv2d(zdim, width, 1)
        self.resnet = Block(width, mid, width, res, residual=True)

    def prior_of(self, y):
        out = self.prior(y)
        z = self.zdim
        return out[:, :z], 2.0 * out[:, z : 2 * z], out[:, 2 * z :]

    def posterior_of(self, y, act):
        mean, log_sigma = self.enc(torch.cat([y, act], 1)).chunk(2, dim=1)
        return mean, 2.0 * log_sigma


class VDVAE(HVAE):
    """See the module docstring. Parameters are named as in vdvae's VAE: `encoder.in_conv`,
    `encoder.enc_blocks.i.c1..c4`, `decoder.dec_blocks.i.{enc,prior,resnet}.c1..c4`,
    `decoder.dec_blocks.i.z_proj`, `decoder.bias_xs.j`, `decoder.gain`, `decoder.bias`,
    `decoder.out_net.out_conv`."""

    def __init__(self, config: VDVAEConfig):
        nn.Module.__init__(self)
        self.config = config
        side = config.input_shape[1]
        self.widths = config.widths()
        self.enc_specs = parse_vdvae_blocks(config.enc_blocks, "encoder")
        self.dec_specs = parse_vdvae_blocks(config.dec_blocks, "decoder")

        def mid(res: int) -> int:
            return int(self.widths[res] * config.bottleneck_multiple)

        self.encoder = nn.Module()
        self.encoder.in_conv = nn.Conv2d(3, config.width, 3, padding=1)
        self.encoder.enc_blocks = nn.ModuleList(
            Block(self.widths[s.res], mid(s.res), self.widths[s.res], s.res, residual=True) for s in self.enc_specs
        )
        self.decoder = nn.Module()
        self.decoder.dec_blocks = nn.ModuleList(
            DecBlock(self.widths[s.res], mid(s.res), config.zdim, s.res) for s in self.dec_specs
        )
        biased = sorted(r for r in {s.res for s in self.dec_specs} if r <= config.no_bias_above)
        self.decoder.bias_xs = nn.ParameterList(nn.Parameter(torch.zeros(1, self.widths[r], r, r)) for r in biased)
        self.decoder.out_net = nn.Module()
        self.decoder.out_net.out_conv = nn.Conv2d(config.width, 10 * config.num_mixtures, 1)
        self.decoder.gain = nn.Parameter(torch.ones(1, config.width, 1, 1))
        self.decoder.bias = nn.Parameter(torch.zeros(1, config.width, 1, 1))
        self.likelihood = RGBLogistics(config.num_mixtures, config.low_bit)
        self.names = [f"layer{i:02d}" for i in range(len(self.dec_specs))]
        self.layer_shapes = [(config.zdim, s.res, s.res) for s in self.dec_specs]
        self.latent_groups = [LatentGroup(n, (math.prod(s),), "layer") for n, s in zip(self.names, self.layer_shapes)]
        self._side = side

    # -- structure ------------------------------------------------------------------
    def enc_block(self, i: int) -> Block:
        return self.encoder.enc_blocks[i]

    def dec_block(self, i: int) -> DecBlock:
        return self.decoder.dec_blocks[i]

    # -- passes ---------------------------------------------------------------------
    def bottom_up(self, x: torch.Tensor, norms: list | None = None) -> dict[int, torch.Tensor]:
        """vdvae's Encoder.forward on x in [0, 1]: activations {R: a_R}; with `norms`, each block
        output's per-example L2 norm (App. B.7.2)."""
        check_input_shape(x, self.config.input_shape)
        c = self.config
        h = self.encoder.in_conv((x * c.pixel_max + c.shift) * c.scale)
        acts = {self._side: h}
        for spec, block in zip(self.enc_specs, self.encoder.enc_blocks):
            h = block(h)
            if spec.down:
                h = F.avg_pool2d(h, spec.down)
            width = self.widths[h.shape[-1]]
            if h.shape[1] != width:
                h = F.pad(h, (0, 0, 0, 0, 0, width - h.shape[1]))
            acts[h.shape[-1]] = h
            if norms is not None:
                norms.append(h.detach().flatten(1).norm(dim=1))
        return acts

    def top_down(
        self,
        acts: dict[int, torch.Tensor] | None,
        n: int,
        z: Latents | None = None,
        mode: str = "sample",
        use_posterior: list[bool] | None = None,
        temperature: float = 1.0,
        norms: list | None = None,
        generator: torch.Generator | None = None,
        noise: Latents | None = None,
        context: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[dict]]:
        """vdvae's Decoder.forward (posterior draws), forward_uncond (prior draws at a
        temperature) and forward_manual_latents (z given), with HVAE.top_down's options."""
        if context is not None:
            raise AtlasError("a vdvae model takes no context")
        ref = self.decoder.gain
        xs = {b.shape[-1]: b.expand(n, *b.shape[1:]) for b in self.decoder.bias_xs}
        layers = []
        for i, spec in enumerate(self.dec_specs):
            r = spec.res
            y = xs[r] if r in xs else ref.new_zeros(n, self.widths[r], r, r)
            if spec.up_from:
                y = y + F.interpolate(xs[spec.up_from][:, : y.shape[1]], scale_factor=r // spec.up_from)
            if norms is not None:
                norms.append(y.detach().flatten(1).norm(dim=1))
            block = self.decoder.dec_blocks[i]
            q = None
            if acts is not None and (use_posterior is None or use_posterior[i]):
                q = block.posterior_of(y, acts[r])
            pm, plv, y_plus = block.prior_of(y)
            y = y + y_plus
            zi = self._layer_z(i, n, q, (pm, plv), z, noise, mode, temperature, generator)
            xs[r] = block.resnet(y + block.z_proj(zi))
            layers.append({"z": zi, "q": q, "p": (pm, plv)})
        out = xs[self._side] * self.decoder.gain + self.decoder.bias
        return self.decoder.out_net.out_conv(out), layers

    def decode_one_group(self, base: Latents, group: str, z: torch.Tensor) -> torch.Tensor:
        """decode() of n latents that differ only in `group` (no shared work: vdvae's states per
        resolution make the HVAE's shortcut inexact)."""
        z = z.reshape(z.shape[0], -1)
        latents = {name: (z if name == group else v.reshape(1, -1).expand(len(z), -1)) for name, v in base.items()}
        return self.decode(latents)
