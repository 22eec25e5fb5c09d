"""The KL-regularised convolutional autoencoder of latent diffusion (Rombach et al. 2022),
laid out as diffusers' `AutoencoderKL` lays out its weights, so that a diffusers checkpoint
loads into it by name (engine.adapters.diffusers) without diffusers installed.

    x (C, H, W) in [0, 1] -> 2x - 1 -> Encoder -> quant_conv -> (mean, logvar) of z (L, H/f, W/f)
    z -> post_quant_conv -> Decoder -> (y + 1) / 2, clamped to [0, 1]

with f = 2^(number of blocks - 1). The encoder is conv_in, one block per entry of
block_out_channels (residual blocks, then a stride-2 downsampling except in the last), a middle
block (residual, self-attention, residual), group norm, SiLU and conv_out; the decoder mirrors
it with one more residual block per level and nearest-neighbour 2x upsampling.

The latent group "z" is spatial: shape (L, H/f, W/f), with the N(0, I) prior the KL term of
its training pulled towards. Such a model was trained with an L1 / perceptual / adversarial
reconstruction loss, not a likelihood: its ELBO here assumes p(x | z) = N(decode(z),
pixel_scale^2 I) in data units, a choice of ours that makes bounds, importance weights and HMC
defined, not a property of the model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import AtlasError
from engine.models.base import ELBOResult, LatentGroup, Latents, check_importance_samples, check_input_shape
from engine.models.blocks import MAX_LATENT_CHANNELS, MAX_WIDTH, check_size
from engine.models.latents import checked_latents
from engine.models.likelihoods import Gaussian
from engine.models.posteriors import DiagonalGaussian
from engine.numerics import gaussian_log_prob, logmeanexp
from engine.randomness import stream

DOWN_BLOCK = "DownEncoderBlock2D"
UP_BLOCK = "UpDecoderBlock2D"
MAX_BLOCKS = 8
MAX_LAYERS_PER_BLOCK = 8
NORM_EPS = 1e-6  # every group norm of the autoencoder
LOGVAR_RANGE = (-30.0, 20.0)  # the clamp diffusers applies to the encoder's log-variance
PIXEL_SCALE_RANGE = (0.02, 10.0)  # inside the Gaussian likelihood's log-variance clamp


@dataclass
class AutoencoderKLConfig:
    """The keys of a diffusers AutoencoderKL config.json that shape the network, plus the
    atlas's `input_shape` (C, H, W) and the assumed likelihood's `pixel_scale`."""

    input_shape: tuple[int, ...] = (3, 32, 32)
    in_channels: int = 3
    out_channels: int = 3
    down_block_types: tuple[str, ...] = (DOWN_BLOCK, DOWN_BLOCK)
    up_block_types: tuple[str, ...] = (UP_BLOCK, UP_BLOCK)
    block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    act_fn: str = "silu"
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int = 32
    scaling_factor: float = 0.18215  # what latent diffusion multiplies z by; the atlas shows z itself
    mid_block_add_attention: bool = True
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    pixel_scale: float = 0.1  # sd of the assumed Gaussian p(x | z), in data units ([0, 1] images)
    family: str = field(default="autoencoder-kl", init=False)

    def __post_init__(self):
        self.input_shape = tuple(int(s) for s in self.input_shape)
        self.block_out_channels = tuple(self.block_out_channels)
        self.down_block_types = tuple(self.down_block_types)
        self.up_block_types = tuple(self.up_block_types)
        for name in ("in_channels", "out_channels", "norm_num_groups", "sample_size"):
            check_size(name, getattr(self, name), MAX_WIDTH)
        check_size("latent_channels", self.latent_channels, MAX_LATENT_CHANNELS)
        check_size("layers_per_block", self.layers_per_block, MAX_LAYERS_PER_BLOCK)
        check_size("the number of blocks", len(self.block_out_channels), MAX_BLOCKS)
        for c in self.block_out_channels:
            check_size("a block_out_channels entry", c, MAX_WIDTH)
            if c % self.norm_num_groups:
                raise AtlasError(
                    f"norm_num_groups {self.norm_num_groups} does not divide block_out_channels entry {c}; "
                    "group norm needs every width to be a multiple of the group count"
                )
        n = len(self.block_out_channels)
        for key, kind, types in (("down", DOWN_BLOCK, self.down_block_types), ("up", UP_BLOCK, self.up_block_types)):
            if len(types) != n or any(t != kind for t in types):
                raise AtlasError(
                    f"{key}_block_types must be {n} x {kind!r} (one per block_out_channels entry), got {list(types)}; "
                    "other block types are not supported"
                )
        if self.act_fn != "silu":
            raise AtlasError(f"act_fn {self.act_fn!r} is not supported; this AutoencoderKL uses 'silu'")
        for name in ("mid_block_add_attention", "use_quant_conv", "use_post_quant_conv"):
            if not isinstance(getattr(self, name), bool):
                raise AtlasError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("scaling_factor", "pixel_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise AtlasError(f"{name} must be a finite number, got {value!r}")
        low, high = PIXEL_SCALE_RANGE
        if not low <= self.pixel_scale <= high:
            raise AtlasError(f"pixel_scale must be between {low} and {high} (data units), got {self.pixel_scale}")
        if len(self.input_shape) != 3:
            raise AtlasError(f"AutoencoderKL takes images (C, H, W), got input_shape {list(self.input_shape)}")
        c, h, w = self.input_shape
        if c != self.in_channels or c != self.out_channels:
            raise AtlasError(
                f"the images have {c} channels but the autoencoder takes {self.in_channels} and makes "
                f"{self.out_channels}; explore it on a dataset with {self.in_channels}-channel images"
            )
        f = self.factor
        if h % f or w % f or h < f or w < f:
            raise AtlasError(f"image height and width must be multiples of the downsampling factor {f}, got {h}x{w}")

    @property
    def factor(self) -> int:
        """How much smaller the latent map is than the image, per side."""
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        _, h, w = self.input_shape
        return (self.latent_channels, h // self.factor, w // self.factor)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        c, h, w = self.latent_shape
        return (
            f"diffusers-style AutoencoderKL, widths {list(self.block_out_channels)}, latents {c}x{h}x{w} "
            f"(diffusion uses them times {self.scaling_factor:g}); assumed Gaussian likelihood, sd {self.pixel_scale:g}"
        )


def group_norm(groups: int, channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=NORM_EPS)


class ResnetBlock(nn.Module):
    """norm, SiLU, 3x3 conv, twice, added to the input (through a 1x1 conv when the width changes)."""

    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.norm1 = group_norm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = group_norm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class SpatialSelfAttention(nn.Module):
    """One attention head over the h*w positions of a group-normed feature map, added back."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.group_norm = group_norm(groups, channels)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.group_norm(x).flatten(2).transpose(1, 2)  # (b, h w, c)
        a = F.scaled_dot_product_attention(self.to_q(t), self.to_k(t), self.to_v(t))
        return x + self.to_out[0](a).transpose(1, 2).reshape(b, c, h, w)


class MidBlock(nn.Module):
    """residual block, self-attention (unless switched off), residual block."""

    def __init__(self, channels: int, groups: int, attention: bool):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, groups) for _ in range(2)])
        self.attentions = nn.ModuleList([SpatialSelfAttention(channels, groups)] if attention else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.resnets[0](x)
        for attention in self.attentions:
            h = attention(h)
        return self.resnets[1](h)


class Downsample(nn.Module):
    """A stride-2 3x3 conv after padding one row and column on the bottom and right only."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """Residual blocks at one resolution, then a change of resolution unless it is the last level.
    `resample` is "downsamplers" (encoder) or "upsamplers" (decoder), the name the weights use."""

    def __init__(self, c_in: int, c_out: int, n: int, groups: int, resample: str | None):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(c_in if i == 0 else c_out, c_out, groups) for i in range(n)])
        self.resample = resample
        if resample is not None:
            sampler = Downsample(c_out) if resample == "downsamplers" else Upsample(c_out)
            self.add_module(resample, nn.ModuleList([sampler]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        if self.resample is not None:
            x = getattr(self, self.resample)[0](x)
        return x


class Encoder(nn.Module):
    """Images in [-1, 1] (b, C, H, W) -> (b, 2 L, H/f, W/f): the mean and log-variance maps."""

    def __init__(self, cfg: AutoencoderKLConfig):
        super().__init__()
        widths, groups, last = cfg.block_out_channels, cfg.norm_num_groups, len(cfg.block_out_channels) - 1
        self.conv_in = nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            Level(widths[max(i - 1, 0)], c, cfg.layers_per_block, groups, None if i == last else "downsamplers")
            for i, c in enumerate(widths)
        )
        self.mid_block = MidBlock(widths[-1], groups, cfg.mid_block_add_attention)
        self.conv_norm_out = group_norm(groups, widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for block in self.down_blocks:
            h = block(h)
        return self.conv_out(F.silu(self.conv_norm_out(self.mid_block(h))))


class Decoder(nn.Module):
    """Latents (b, L, H/f, W/f) -> images in about [-1, 1] (b, C, H, W)."""

    def __init__(self, cfg: AutoencoderKLConfig):
        super().__init__()
        widths, groups, last = cfg.block_out_channels[::-1], cfg.norm_num_groups, len(cfg.block_out_channels) - 1
        self.conv_in = nn.Conv2d(cfg.latent_channels, widths[0], 3, padding=1)
        self.mid_block = MidBlock(widths[0], groups, cfg.mid_block_add_attention)
        self.up_blocks = nn.ModuleList(
            Level(widths[max(i - 1, 0)], c, cfg.layers_per_block + 1, groups, None if i == last else "upsamplers")
            for i, c in enumerate(widths)
        )
        self.conv_norm_out = group_norm(groups, widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], cfg.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            h = block(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class AutoencoderKL(nn.Module):
    """q(z | x) = N(mean(x), diag exp(logvar(x))) over a spatial latent z (L, h, w), p(z) = N(0, I),
    p(x | z) = N(decode(z), pixel_scale^2 I) (assumed; see the module docstring)."""

    masked_likelihood = True  # log_joint takes a mask (engine.models.base.MaskedLikelihood)

    def __init__(self, config: AutoencoderKLConfig):
        super().__init__()
        self.config = config
        latents = config.latent_channels
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = nn.Conv2d(2 * latents, 2 * latents, 1) if config.use_quant_conv else None
        self.post_quant_conv = nn.Conv2d(latents, latents, 1) if config.use_post_quant_conv else None
        self.likelihood = Gaussian(config.input_shape, sd=config.pixel_scale)
        # a fixed setting of the config, not a weight: kept out of the state dict, which holds diffusers' names only
        self.likelihood.register_buffer("logvar", self.likelihood.logvar, persistent=False)
        self.latent_groups = [LatentGroup("z", config.latent_shape, "local")]

    # -- the network in diffusers' units ([-1, 1] images) ------------------------------------------
    def moments(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (b, C, H, W) -> the mean and log-variance maps (b, 2 L, h, w)."""
        h = self.encoder(x)
        return h if self.quant_conv is None else self.quant_conv(h)

    def pixels(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (b, L, h, w) -> the decoder's images in [-1, 1] units (b, C, H, W), unclamped."""
        return self.decoder(z if self.post_quant_conv is None else self.post_quant_conv(z))

    # -- the LatentModel interface ------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> dict[str, DiagonalGaussian]:
        """q(z | x) for images x (b, C, H, W) in [0, 1]; mean and logvar (b, L, h, w)."""
        check_input_shape(x, self.config.input_shape)
        return {"z": DiagonalGaussian.from_output(self.moments(2 * x - 1), logvar_range=LOGVAR_RANGE, dim=1)}

    def decode(self, z: Latents | torch.Tensor) -> torch.Tensor:
        """Images in [0, 1], (..., b, C, H, W), for latents (..., b, L, h, w)."""
        z = checked_latents(self, z)["z"]
        lead, shape = z.shape[:-3], self.latent_groups[0].shape
        y = self.pixels(z.reshape(-1, *shape))
        return ((y + 1) / 2).clamp(0.0, 1.0).reshape(*lead, *self.config.input_shape)

    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        p = next(self.parameters())
        shape = (n, *self.latent_groups[0].shape)
        z = torch.randn(shape, generator=stream(generator), device=p.device, dtype=p.dtype)
        return self.decode(temperature * z)

    def elbo(self, x: torch.Tensor, k: int = 1, chunk: int | None = None) -> ELBOResult:
        """E_q[log p(x | z)] - KL(q || N(0, I)) with the closed-form KL (k = 1), or the
        importance-weighted bound (k > 1, seed003 eq. 2.1); in nats per image."""
        check_importance_samples(k)
        q = self.encode(x)["z"]
        if k == 1:
            recon = self.likelihood.log_prob(x, self.decode(q.rsample()))
            kl = q.kl_to_standard_normal().flatten(1).sum(-1)
            return ELBOResult(total=recon - kl, recon=recon, kl={"z": kl})
        log_w, recon, kl = self.log_weights(x, k, chunk, q=q)
        return ELBOResult(total=logmeanexp(log_w, dim=0), recon=recon.mean(0), kl={"z": kl.mean(0)}, k=k)

    def log_weights(
        self, x: torch.Tensor, k: int, chunk: int | None = None, q: DiagonalGaussian | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log w, log p(x | z), log q(z | x) - log p(z)) for k draws z ~ q(z | x), each (k, b);
        the draws are decoded `chunk` at a time (default: about 2^24 image values)."""
        q = q if q is not None else self.encode(x)["z"]
        chunk = chunk or max(1, 2**24 // max(1, x.shape[0] * math.prod(self.config.input_shape)))
        recon, kl = [], []
        for start in range(0, k, chunk):
            z = q.rsample(min(chunk, k - start))  # (c, b, L, h, w)
            recon.append(self.likelihood.log_prob(x, self.decode(z)))
            kl.append((gaussian_log_prob(z, q.mean, q.logvar) - standard_normal(z)).flatten(2).sum(-1))
        recon, kl = torch.cat(recon), torch.cat(kl)
        return recon - kl, recon, kl

    def log_joint(self, x: torch.Tensor, z: Latents | torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x | z) + log p(z), (..., b) for z (..., b, L, h, w); with `mask` (b, C, H, W)
        of 0/1, only the observed pixels count."""
        z = checked_latents(self, z)["z"]
        prior = standard_normal(z).flatten(-3).sum(-1)
        return self.likelihood.log_prob(x, self.decode(z), mask) + prior

    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The negative ELBO under the assumed likelihood (an adapted run is explored, not trained)."""
        result = self.elbo(x)
        metrics = {"elbo": result.total.mean(), "recon": result.recon.mean(), "kl/z": result.kl["z"].mean()}
        return -result.total.mean(), {name: v.detach() for name, v in metrics.items()}


def standard_normal(z: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(z; 0, 1)."""
    return -0.5 * (math.log(2 * math.pi) + z.pow(2))
