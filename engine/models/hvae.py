"""A VDVAE-style hierarchical VAE (seed000 ch. 3 / App. B; anchors A3).

Bottom-up: an input convolution, then residual blocks given by a block string, e.g.
``"16x3,16d2,8x3,8d2,4x2,4d4,1x2"`` (``RxN``: N blocks at R x R; ``RdK``: one block
then average-pooling by K; ``RrN``: one block applied N times with shared weights).

Top-down: the residual state starts from a learned constant at the lowest resolution
and flows through blocks given by a second string, e.g. ``"1x1,4m1,4x2,8m4,8x2,16m8,16x3"``
(``RmS``: upsample the state from S x S to R x R by nearest interpolation, then a
block). Every top-down block holds one latent layer:

    (p_mean, p_logvar, y_+) = prior(y)          y <- y + y_+     (seed000 §2.1, Z_{i,+})
    (q_mean, q_logvar)      = posterior([y, a_R])                (a_R: bottom-up activation)
    z ~ q (inference) or p (generation)         y <- y + proj(z)
    y <- y + resnet(y)

`RrN` in the decoder string shares one top-down block (prior, posterior, projection and
resnet) across N consecutive layers: the time-homogeneous model of seed000 B.1.6.

`normalise_state=True` divides every bottom-up block output and every top-down block
input by its per-example L2 norm (the ablation of seed000 Table 3.2).

Latent groups are the top-down layers in order, top first ("layer00", ...), each a flat
vector of zdim x R x R values, so every generic tool (sample grids, traversals, HMC,
importance weights) works on this model through the `LatentModel` interface:
- `encode(x)`: each layer's posterior q(z_l | z_{<l}, x) along the mean path (upper
  layers at their posterior means);
- `decode(z)` / `log_joint(x, z)`: the top-down pass with every z_l given.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import AtlasError
from engine.models.base import ELBOResult, LatentGroup, Latents, check_importance_samples, check_input_shape
from engine.models.blocks import MAX_BLOCKS, MAX_LATENT_CHANNELS, MAX_MIXTURES, MAX_RESIDUAL_WIDTH, check_size
from engine.models.latents import checked_latents, leading_shape
from engine.models.likelihoods import make_likelihood
from engine.models.posteriors import DiagonalGaussian
from engine.numerics import gaussian_kl_elementwise, gaussian_log_prob, logmeanexp, standard_normal_log_prob
from engine.randomness import stream

_TOKEN = re.compile(r"^(\d+)(?:([xrdm])(\d+)(?:[x×](\d+))?)?$")


@dataclass(frozen=True)
class BlockSpec:
    """One block of a block string: its resolution, and for the encoder a pooling
    factor (`down`), for the decoder the resolution it upsamples from (`up_from`).
    Blocks with the same `share` id use one set of weights."""

    res: int
    share: int
    down: int = 0
    up_from: int = 0


def parse_blocks(text: str, side: Literal["encoder", "decoder"]) -> list[BlockSpec]:
    """Parse a VDVAE block string. Tokens, comma separated:
    ``RxN`` N blocks at R (``R`` alone: one); ``RrN`` one block used N times;
    ``RrNxM`` (also written ``RrN×M``) M blocks each used N times;
    encoder ``RdK`` one block at R then average-pool by K; decoder ``RmS`` upsample
    from S to R then one block."""
    if not isinstance(text, str) or not text.strip():
        raise AtlasError(f"the {side} block string is empty; write e.g. '16x3,16d2,8x2'")
    blocks: list[BlockSpec] = []
    share = 0
    for raw in text.replace(" ", "").split(","):
        m = _TOKEN.match(raw)
        if not m:
            raise AtlasError(f"cannot read {raw!r} in the {side} block string {text!r}; use RxN, RrN, RdK or RmS")
        res, op, n, times = int(m[1]), m[2] or "x", int(m[3] or 1), int(m[4] or 1)
        if res < 1 or n < 1 or times < 1:
            raise AtlasError(f"{raw!r} in the {side} block string has a zero; sizes and counts start at 1")
        if op == "x":
            for _ in range(n * times):
                blocks.append(BlockSpec(res, share))
                share += 1
        elif op == "r":
            for _ in range(times):
                blocks.extend(BlockSpec(res, share) for _ in range(n))
                share += 1
        elif op == "d":
            if side != "encoder":
                raise AtlasError(
                    f"{raw!r}: 'd' (pooling) belongs in the encoder string, the decoder upsamples with 'm'"
                )
            if res % n:
                raise AtlasError(f"{raw!r}: cannot pool {res}x{res} by {n}")
            blocks.append(BlockSpec(res, share, down=n))
            share += 1
        else:  # "m"
            if side != "decoder":
                raise AtlasError(f"{raw!r}: 'm' (upsampling) belongs in the decoder string, the encoder pools with 'd'")
            if n >= res or res % n:
                raise AtlasError(f"{raw!r}: cannot upsample {n}x{n} to {res}x{res}")
            blocks.append(BlockSpec(res, share, up_from=n))
            share += 1
        if len(blocks) > MAX_BLOCKS:
            raise AtlasError(f"the {side} block string has more than {MAX_BLOCKS} blocks")
    return blocks


def check_encoder(blocks: list[BlockSpec], image_side: int) -> None:
    res = image_side
    for i, b in enumerate(blocks):
        if b.res != res:
            raise AtlasError(f"encoder block {i} is at {b.res}x{b.res} but the state there is {res}x{res}")
        if b.down:
            res //= b.down


def check_decoder(blocks: list[BlockSpec], image_side: int, encoder_res: set[int]) -> None:
    res = blocks[0].res
    if blocks[0].up_from:
        raise AtlasError("the decoder string must start at its lowest resolution, without 'm'")
    for i, b in enumerate(blocks):
        if b.up_from:
            if b.up_from != res:
                raise AtlasError(
                    f"decoder block {i} upsamples from {b.up_from}x{b.up_from} but the state is {res}x{res}"
                )
            res = b.res
        elif b.res != res:
            raise AtlasError(f"decoder block {i} is at {b.res}x{b.res} but the state is {res}x{res}; add an 'm' token")
        if b.res not in encoder_res:
            raise AtlasError(f"decoder block {i} at {b.res}x{b.res} has no encoder activation at that resolution")
    if res != image_side:
        raise AtlasError(f"the decoder ends at {res}x{res}; it must end at the image size {image_side}x{image_side}")


@dataclass
class HVAEConfig:
    input_shape: tuple[int, ...] = (1, 16, 16)
    encoder: str = "16x2,16d2,8x2,8d2,4x2,4d4,1x2"
    decoder: str = "1x1,4m1,4x2,8m4,8x2,16m8,16x2"
    width: int = 32  # residual-state channels (Table B.3: 32 on MNIST)
    zdim: int = 4  # latent channels per layer (Table B.3: 8 on MNIST)
    bottleneck: float = 0.25  # block inner width = bottleneck x width (Table B.2)
    likelihood: Literal["bernoulli", "gaussian", "dmol"] = "bernoulli"
    mixtures: int = 5  # components of the discretised logistic mixture ("dmol")
    normalise_state: bool = False  # the Table 3.2 ablation
    dataset_size: int = 0  # filled in by the trainer; unused
    family: str = field(default="hvae", init=False)

    def __post_init__(self):
        self.input_shape = tuple(int(s) for s in self.input_shape)
        if len(self.input_shape) != 3 or self.input_shape[1] != self.input_shape[2]:
            raise AtlasError(f"an HVAE needs square images (C, H, H), got {self.input_shape}")
        check_size("width", self.width, MAX_RESIDUAL_WIDTH)
        check_size("zdim", self.zdim, MAX_LATENT_CHANNELS)
        check_size("mixtures", self.mixtures, MAX_MIXTURES)
        if not 0 < float(self.bottleneck) <= 4:
            raise AtlasError(f"bottleneck must be in (0, 4], got {self.bottleneck!r}")
        if self.likelihood not in ("bernoulli", "gaussian", "dmol"):
            raise AtlasError(f"unknown likelihood {self.likelihood!r}; choose 'bernoulli', 'gaussian' or 'dmol'")
        enc = parse_blocks(self.encoder, "encoder")
        dec = parse_blocks(self.decoder, "decoder")
        side = self.input_shape[1]
        check_encoder(enc, side)
        check_decoder(dec, side, {b.res for b in enc})

    @classmethod
    def fields_from_data(cls, train_data) -> dict:
        return {"dataset_size": len(train_data)}

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        layers = len(parse_blocks(self.decoder, "decoder"))
        state = "normalised to unit norm at every block" if self.normalise_state else "not normalised"
        return (
            f"VDVAE-style top-down hierarchy, {layers} latent layers of {self.zdim} channels, "
            f"residual state of width {self.width} ({state}), encoder `{self.encoder}`, "
            f"decoder `{self.decoder}`, {self.likelihood} likelihood"
        )


class Block(nn.Module):
    """VDVAE's bottleneck block: 1x1, 3x3, 3x3, 1x1 convolutions with GELU in between
    (1x1 throughout at 2x2 and below); optionally residual."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, res: int, residual: bool, zero_last: bool = False):
        super().__init__()
        k = 3 if res > 2 else 1
        self.c1 = nn.Conv2d(c_in, c_mid, 1)
        self.c2 = nn.Conv2d(c_mid, c_mid, k, padding=k // 2)
        self.c3 = nn.Conv2d(c_mid, c_mid, k, padding=k // 2)
        self.c4 = nn.Conv2d(c_mid, c_out, 1)
        self.residual = residual
        if zero_last:
            nn.init.zeros_(self.c4.weight)
            nn.init.zeros_(self.c4.bias)

    def forward(self, x):
        h = self.c4(F.gelu(self.c3(F.gelu(self.c2(F.gelu(self.c1(F.gelu(x))))))))
        return x + h if self.residual else h


def unit_norm(x: torch.Tensor) -> torch.Tensor:
    return x / x.flatten(1).norm(dim=1).clamp_min(1e-6).view(-1, *([1] * (x.dim() - 1)))


class TopDownBlock(nn.Module):
    def __init__(self, width: int, mid: int, zdim: int, res: int, n_layers: int):
        super().__init__()
        self.zdim = zdim
        self.posterior = Block(2 * width, mid, 2 * zdim, res, residual=False)
        self.prior = Block(width, mid, 2 * zdim + width, res, residual=False, zero_last=True)
        self.proj = nn.Conv2d(zdim, width, 1)
        self.resnet = Block(width, mid, width, res, residual=True)
        scale = math.sqrt(1.0 / n_layers)  # VDVAE scales these by sqrt(1 / number of layers)
        with torch.no_grad():
            self.proj.weight.mul_(scale)
            self.resnet.c4.weight.mul_(scale)

    def prior_of(self, y):
        """(p_mean, p_logvar, y_+) from the state y, (batch, channels, R, R) each."""
        out = self.prior(y)
        p = DiagonalGaussian.from_output(out[:, : 2 * self.zdim], logvar_range=(-12.0, 8.0), dim=1)
        return p.mean, p.logvar, out[:, 2 * self.zdim :]

    def posterior_of(self, y, act):
        """(q_mean, q_logvar) from the state y and the bottom-up activation at its resolution."""
        q = DiagonalGaussian.from_output(self.posterior(torch.cat([y, act], 1)), logvar_range=(-12.0, 8.0), dim=1)
        return q.mean, q.logvar


class DMoL(nn.Module):
    """Discretised mixture of logistics over 256 levels of each channel of x in [0, 1]
    (channels independent given the decoder output; PixelCNN++ / VDVAE without the
    RGB coupling). params: (..., C * 3M, H, W) = logits, means, log-scales per channel."""

    def __init__(self, event_shape: tuple[int, ...], mixtures: int):
        super().__init__()
        self.c, self.m = event_shape[0], mixtures
        self.event_shape = event_shape

    def n_params(self) -> int:
        return self.c * 3 * self.m

    def _split(self, params):
        lead = params.shape[:-3]
        p = params.reshape(*lead, self.c, 3, self.m, *params.shape[-2:])
        return p[..., :, 0, :, :, :], p[..., :, 1, :, :, :], p[..., :, 2, :, :, :].clamp(min=-7.0)

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        logits, means, log_s = self._split(params)  # (..., C, M, H, W)
        y = (x * 2.0 - 1.0).unsqueeze(-3)  # [-1, 1], (batch, C, 1, H, W)
        inv_s = torch.exp(-log_s)
        half = 1.0 / 255.0
        cdf_plus = torch.sigmoid(inv_s * (y - means + half))
        cdf_minus = torch.sigmoid(inv_s * (y - means - half))
        log_cdf_plus = (inv_s * (y - means + half)) - F.softplus(inv_s * (y - means + half))
        log_one_minus_cdf_minus = -F.softplus(inv_s * (y - means - half))
        mid = inv_s * (y - means)
        log_pdf_mid = mid - log_s - 2.0 * F.softplus(mid) + math.log(2 * half)
        delta = (cdf_plus - cdf_minus).clamp_min(1e-12)
        inner = torch.where(delta > 1e-5, torch.log(delta), log_pdf_mid)
        lp = torch.where(y < -0.999, log_cdf_plus, torch.where(y > 0.999, log_one_minus_cdf_minus, inner))
        lp = torch.logsumexp(lp + F.log_softmax(logits, dim=-3), dim=-3)  # (..., C, H, W)
        return lp.flatten(-3).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        logits, means, _ = self._split(params)
        w = F.softmax(logits, dim=-3)
        return (((w * means).sum(-3) + 1.0) / 2.0).clamp(0.0, 1.0)


def image_likelihood(config) -> tuple[nn.Module, int]:
    """p(x | z) of an image model from its config's `likelihood`, `mixtures` and `input_shape`,
    and the channels its parameters take."""
    if config.likelihood == "dmol":
        likelihood = DMoL(config.input_shape, config.mixtures)
        return likelihood, likelihood.n_params()
    return make_likelihood(config.likelihood, config.input_shape), config.input_shape[0]


class HVAE(nn.Module):
    """See the module docstring."""

    def __init__(self, config: HVAEConfig):
        super().__init__()
        self.config = config
        c_img, side, _ = config.input_shape
        w, mid = config.width, max(1, int(config.width * config.bottleneck))
        self.enc_specs = parse_blocks(config.encoder, "encoder")
        self.dec_specs = parse_blocks(config.decoder, "decoder")
        self.in_conv = nn.Conv2d(c_img, w, 3, padding=1)
        enc_shared: dict[int, Block] = {}
        for b in self.enc_specs:
            enc_shared.setdefault(b.share, Block(w, mid, w, b.res, residual=True))
        self.enc_blocks = nn.ModuleList(enc_shared[s] for s in sorted(enc_shared))
        dec_shared: dict[int, TopDownBlock] = {}
        for b in self.dec_specs:
            dec_shared.setdefault(b.share, TopDownBlock(w, mid, config.zdim, b.res, len(self.dec_specs)))
        self.dec_blocks = nn.ModuleList(dec_shared[s] for s in sorted(dec_shared))
        self._enc_index = {s: i for i, s in enumerate(sorted(enc_shared))}
        self._dec_index = {s: i for i, s in enumerate(sorted(dec_shared))}
        self.start = nn.Parameter(torch.zeros(w, self.dec_specs[0].res, self.dec_specs[0].res))
        self.likelihood, n_out = image_likelihood(config)
        self.out_conv = nn.Conv2d(w, n_out, 1)
        self.names = [f"layer{i:02d}" for i in range(len(self.dec_specs))]
        self.layer_shapes = [(config.zdim, b.res, b.res) for b in self.dec_specs]
        self.latent_groups = [LatentGroup(n, (math.prod(s),), "layer") for n, s in zip(self.names, self.layer_shapes)]

    # -- structure ------------------------------------------------------------------
    def enc_block(self, i: int) -> Block:
        return self.enc_blocks[self._enc_index[self.enc_specs[i].share]]

    def dec_block(self, i: int) -> TopDownBlock:
        return self.dec_blocks[self._dec_index[self.dec_specs[i].share]]

    @property
    def decoder_resolutions(self) -> list[int]:
        return [b.res for b in self.dec_specs]

    # -- passes ---------------------------------------------------------------------
    def bottom_up(self, x: torch.Tensor, norms: list | None = None) -> dict[int, torch.Tensor]:
        """Activations a_R (the last block output at each resolution R). With `norms`, the
        per-example L2 norm of every block's output is appended to it (App. B.7.2)."""
        check_input_shape(x, self.config.input_shape)
        h = self.in_conv(x)
        acts: dict[int, torch.Tensor] = {}
        for i, spec in enumerate(self.enc_specs):
            h = self.enc_block(i)(h)
            if self.config.normalise_state:
                h = unit_norm(h)
            acts[spec.res] = h
            if spec.down:
                h = F.avg_pool2d(h, spec.down)
            if norms is not None:
                norms.append(h.detach().flatten(1).norm(dim=1))
        return acts

    def top_down(
        self,
        acts: dict[int, torch.Tensor] | None,
        n: int,
        z: Latents | None = None,
        mode: Literal["sample", "mean"] = "sample",
        use_posterior: list[bool] | None = None,
        temperature: float = 1.0,
        norms: list | None = None,
        generator: torch.Generator | None = None,
        noise: Latents | None = None,
        context: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[dict]]:
        """The top-down pass over n examples. Layer l's z is taken from `z` when given;
        from `noise` as z_l = p_mean_l + p_std_l * eps_l (the prior's reparameterisation,
        seed002 eq. 5.5) when that is given; otherwise drawn from q (when `acts` is given
        and use_posterior[l] is not False) or from p at `temperature`; mode "mean" takes
        means instead of draws. `context` (n, C, H, W) is an image a subclass adds to the
        state where each resolution starts (`_enter_layer`; the DCT-VAE's x_context). Returns
        the likelihood parameters and per layer {z, q: (mean, logvar) or None, p: (mean, logvar)}."""
        y = self.start.unsqueeze(0).expand(n, *self.start.shape)
        layers = []
        for i, spec in enumerate(self.dec_specs):
            y = self._enter_layer(i, y, context)
            if norms is not None:
                norms.append(y.detach().flatten(1).norm(dim=1))
            block = self.dec_block(i)
            q = None
            if acts is not None and (use_posterior is None or use_posterior[i]):
                q = block.posterior_of(y, acts[spec.res])
            pm, plv, y_plus = block.prior_of(y)
            y = y + y_plus
            zi = self._layer_z(i, n, q, (pm, plv), z, noise, mode, temperature, generator)
            y = y + block.proj(zi)
            y = block.resnet(y)
            layers.append({"z": zi, "q": q, "p": (pm, plv)})
        return self.out_conv(y), layers

    def _layer_z(self, i, n, q, p, z, noise, mode, temperature, generator) -> torch.Tensor:
        """Layer i's z in `top_down` (see there) from its posterior q and prior p, (mean, logvar)
        each, (n, zdim, R, R); one place for the rule, which the VDVAE subclass shares."""
        name = self.names[i]
        if z is not None and name in z:
            return z[name].reshape(n, *self.layer_shapes[i])
        if noise is not None:
            return p[0] + torch.exp(0.5 * p[1]) * noise[name].reshape(n, *self.layer_shapes[i])
        mean, logvar, t = (q[0], q[1], 1.0) if q is not None else (p[0], p[1], temperature)
        if mode == "mean":
            return mean
        eps = torch.randn(mean.shape, generator=stream(generator), device=mean.device, dtype=mean.dtype)
        return mean + t * torch.exp(0.5 * logvar) * eps

    def _enter_layer(self, i: int, y: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """The state as top-down layer i receives it: upsampled to its resolution, normalised if
        configured. The HVAE has no context; a subclass that has one adds it here."""
        spec = self.dec_specs[i]
        if spec.up_from:
            y = F.interpolate(y, scale_factor=spec.res // spec.up_from, mode="nearest")
        return unit_norm(y) if self.config.normalise_state else y

    # -- the LatentModel interface --------------------------------------------------
    def encode(self, x: torch.Tensor) -> dict[str, DiagonalGaussian]:
        acts = self.bottom_up(x)
        _, layers = self.top_down(acts, x.shape[0], mode="mean")
        return {
            name: DiagonalGaussian(layer["q"][0].flatten(1), layer["q"][1].flatten(1))
            for name, layer in zip(self.names, layers)
        }

    def decode(self, z: Latents | torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self._decoder_params(z)[0])

    def decode_one_group(self, base: Latents, group: str, z: torch.Tensor) -> torch.Tensor:
        """decode() of n latents that differ only in the layer `group`: z (n, size) for that
        layer, every other layer at base[name] (size,). The layers above `group` see the same
        state for all n, so they run once on one example; the layers below add their fixed z
        through a projection computed once and broadcast. The state runs channels-last, where
        oneDNN's 1x1 convolutions with these few channels are many times faster (a 1x1
        convolution from 8 to 40 channels on 44 images of 16 x 16: 2.6 ms in NCHW, 0.14 ms
        channels-last on one core). Returns (n, *input_shape)."""
        index = self.names.index(group)
        y = self.start.unsqueeze(0).contiguous(memory_format=torch.channels_last)  # (1, width, R, R)
        for i in range(len(self.dec_specs)):
            y = self._enter_layer(i, y)
            block = self.dec_block(i)
            y = y + block.prior(y)[:, 2 * block.zdim :]  # y_+; the prior's mean and variance are not needed
            if i == index:
                zi = z.reshape(-1, *self.layer_shapes[i])
            else:
                zi = base[self.names[i]].reshape(1, *self.layer_shapes[i])
            y = (y + block.proj(zi)).contiguous(memory_format=torch.channels_last)  # from layer `index` on, n
            y = block.resnet(y)
        return self.likelihood.mean(self.out_conv(y)).contiguous()

    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        params, _ = self.top_down(None, n, temperature=temperature, generator=generator)
        return self.likelihood.mean(params)

    @torch.no_grad()
    def sample_mixed(self, x: torch.Tensor, per_resolution: int, temperature: float = 1.0) -> torch.Tensor:
        """Decode x with the first `per_resolution` latent layers of every resolution drawn
        from the posterior and the rest from the prior (seed000 Fig. B.12)."""
        use = []
        seen: dict[int, int] = {}
        for spec in self.dec_specs:
            use.append(seen.get(spec.res, 0) < per_resolution)
            seen[spec.res] = seen.get(spec.res, 0) + 1
        params, _ = self.top_down(self.bottom_up(x), x.shape[0], use_posterior=use, temperature=temperature)
        return self.likelihood.mean(params)

    def posterior_share(self, per_resolution: int) -> float:
        """Fraction of all latent values that `sample_mixed(x, per_resolution)` draws from q."""
        seen: dict[int, int] = {}
        total = taken = 0
        for spec, shape in zip(self.dec_specs, self.layer_shapes):
            size = math.prod(shape)
            total += size
            taken += size if seen.get(spec.res, 0) < per_resolution else 0
            seen[spec.res] = seen.get(spec.res, 0) + 1
        return taken / total

    def layers_per_resolution(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for spec in self.dec_specs:
            out[spec.res] = out.get(spec.res, 0) + 1
        return out

    def elbo(self, x: torch.Tensor, k: int = 1, chunk: int | None = None) -> ELBOResult:
        check_importance_samples(k)
        if k == 1:
            params, layers = self.top_down(self.bottom_up(x), x.shape[0])
            recon = self.likelihood.log_prob(x, params)
            kl = {name: gaussian_kl(layer["q"], layer["p"]) for name, layer in zip(self.names, layers)}
            return ELBOResult(total=recon - sum(kl.values()), recon=recon, kl=kl)
        log_w, recon, kl = self.log_weights(x, k, chunk)
        return ELBOResult(total=logmeanexp(log_w, dim=0), recon=recon.mean(0), kl={"all": kl.mean(0)}, k=k)

    def log_weights(self, x: torch.Tensor, k: int, chunk: int | None = None):
        """log w = log p(x, z) - log q(z | x) for k joint draws z ~ q from the top-down
        pass, with its parts log p(x|z) and log q(z|x) - log p(z); each (k, batch)."""
        acts = self.bottom_up(x)
        b = x.shape[0]
        per_draw = b * (self.config.width * self.config.input_shape[1] ** 2 * 4)
        chunk = chunk or max(1, 2**25 // max(1, per_draw))
        recon, kl = [], []
        for start in range(0, k, chunk):
            c = min(chunk, k - start)
            rep = {res: a.repeat(c, *([1] * (a.dim() - 1))) for res, a in acts.items()}
            params, layers = self.top_down(rep, c * b)
            recon.append(self.likelihood.log_prob(x.repeat(c, 1, 1, 1), params).view(c, b))
            log_q_minus_p = sum(
                (gaussian_log_prob(layer["z"], *layer["q"]) - gaussian_log_prob(layer["z"], *layer["p"]))
                .flatten(1)
                .sum(1)
                for layer in layers
            )
            kl.append(log_q_minus_p.view(c, b))
        recon, kl = torch.cat(recon), torch.cat(kl)
        return recon - kl, recon, kl

    def log_joint(self, x: torch.Tensor, z: Latents | torch.Tensor) -> torch.Tensor:
        """log p(x|z) + sum_l log p(z_l | z_{<l}); z values (..., batch, size) -> (..., batch)."""
        params, layers, lead = self._decoder_params(z, with_layers=True)
        xs = x.expand(*lead, *x.shape[-3:]).reshape(-1, *x.shape[-3:])
        recon = self.likelihood.log_prob(xs, params)
        prior = sum(gaussian_log_prob(layer["z"], *layer["p"]).flatten(1).sum(1) for layer in layers)
        return (recon + prior).view(*lead)

    # -- the prior's noise space, where HMC runs (seed002 §2.5, §5.2.4) ---------------
    def encode_noise(self, x: torch.Tensor) -> dict[str, DiagonalGaussian]:
        """The encoder's Gaussian mapped to the noise eps_l = (z_l - p_mean_l) / p_std_l of
        each layer, along the mean path (upper layers at their posterior means)."""
        _, layers = self.top_down(self.bottom_up(x), x.shape[0], mode="mean")
        out = {}
        for name, layer in zip(self.names, layers):
            (qm, qlv), (pm, plv) = layer["q"], layer["p"]
            out[name] = DiagonalGaussian(((qm - pm) * torch.exp(-0.5 * plv)).flatten(1), (qlv - plv).flatten(1))
        return out

    def latents_from_noise(self, eps: Latents) -> Latents:
        """z(eps) by the prior top-down pass; eps values (..., batch, size) -> z alike."""
        _, layers, lead = self._decoder_params(eps, with_layers=True, noise=True)
        return {name: layer["z"].reshape(*lead, -1) for name, layer in zip(self.names, layers)}

    def log_joint_noise(self, x: torch.Tensor, eps: Latents) -> torch.Tensor:
        """HMC's target in noise space, log p(x | z(eps)) + sum_l log N(eps_l; 0, I)
        (seed002 §2.5); eps values (..., batch, size) -> (..., batch). It equals
        log_joint(x, z(eps)) + sum_l sum log p_std_l, the log-determinant of dz/deps."""
        params, _, lead = self._decoder_params(eps, with_layers=True, noise=True)
        xs = x.expand(*lead, *x.shape[-3:]).reshape(-1, *x.shape[-3:])
        recon = self.likelihood.log_prob(xs, params)
        prior = sum(standard_normal_log_prob(e.reshape(recon.shape[0], -1)) for e in eps.values())
        return (recon + prior).view(*lead)

    # -- training -------------------------------------------------------------------
    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The negative ELBO in nats per data dimension, as VDVAE trains: the gradient-clip and
        skip thresholds of the thesis (Table B.3: clip 200, skip 3,000) are set on that scale. Per
        image the untrained MNIST model's gradient norm is about 4,900, so every update would be
        skipped; Adam's steps do not depend on the loss's scale. The metrics stay per image."""
        result = self.elbo(x)
        dims = math.prod(self.config.input_shape)
        metrics = {"elbo": result.total.mean(), "recon": result.recon.mean()}
        for name, kl in result.kl.items():
            metrics[f"kl/{name}"] = kl.mean()
        metrics["bits_per_dim"] = -result.total.mean() / (dims * math.log(2))
        return -result.total.mean() / dims, {k: v.detach() for k, v in metrics.items()}

    # -- diagnostics ----------------------------------------------------------------
    @torch.no_grad()
    def state_norms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example L2 norms (batch, blocks) of every bottom-up block output and every
        top-down block input, the top-down pass using posterior samples (App. B.7.2)."""
        up, down = [], []
        acts = self.bottom_up(x, norms=up)
        self.top_down(acts, x.shape[0], norms=down)
        return torch.stack(up, 1), torch.stack(down, 1)

    # -- helpers --------------------------------------------------------------------
    def _decoder_params(self, z: Latents | torch.Tensor, with_layers: bool = False, noise: bool = False):
        z = checked_latents(self, z)
        lead = leading_shape(z, self.latent_groups)  # (..., batch)
        n = math.prod(lead)
        flat = {g.name: z[g.name].expand(*lead, g.size).reshape(n, g.size) for g in self.latent_groups}
        params, layers = self.top_down(None, n, noise=flat) if noise else self.top_down(None, n, z=flat)
        if with_layers:
            return params, layers, lead
        return params.view(*lead, *params.shape[1:]), layers


def gaussian_kl_units(q: tuple[torch.Tensor, torch.Tensor], p: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """KL(N(q) || N(p)) per latent unit between diagonal Gaussians given as (mean, logvar):
    (batch, units)."""
    return gaussian_kl_elementwise(*q, *p).flatten(1)


def gaussian_kl(q: tuple[torch.Tensor, torch.Tensor], p: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """KL(N(q) || N(p)) summed per example: (batch,)."""
    return gaussian_kl_units(q, p).sum(1)
