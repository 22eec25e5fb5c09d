"""Spatial hierarchies of codes: the RRVQ-VAE, the rVQ-VAE and the Spatial-VAE (seed001
ch. 3, App. B; Defs 3.2 and 3.3).

One backbone, one latent kind per model:

- ``latent="codes"``: every layer l holds a grid of M_l categorical codes. Each code has a
  mean E_mu[l, k] (d_e values) and, with ``code_variance="learned"``, a variance E_Sigma[l, k]
  (one positive scalar per code). The posterior over a position's code is the Gaussian
  mixture's responsibility of an embedding e_phi (seed001 eq. 3.9):

      pi_k  ∝  N(e_phi; E_mu[k], E_Sigma[k] I)  = softmax_k(log N(e_phi; E_mu[k], E_Sigma[k] I))

  and the prior's conditional is the same responsibility of an embedding e_theta from the
  top-down state, with the same codebooks (eq. 3.12; ``prior_form="embedding"``), or a
  softmax of K logits the prior network outputs directly (``prior_form="direct"``, the
  Direct-Cat corner of Table 3.3). With ``code_variance="unit"`` every E_Sigma is 1 and the
  posterior is the rVQ-VAE's, pi_k ∝ exp(-½ ||e - E_mu[k]||²). A chosen code enters the
  top-down state through its mean, E_mu z (App. B.1: a delta posterior on e given z).
- ``latent="gaussian"``: every layer holds d_e Gaussian channels at each position; this
  is the Spatial-VAE of Def 3.2, the continuous member of the family.

The rVQ-VAE of Table 3.1 is the single-layer model with unit variances. With ``arch="mlp"``
(one layer) an MLP replaces the convolutions on both sides, so every code reaches the whole
image: §3.5's counter-example to the patchwork samples of spatially arranged codes.

Backbone (App. B.3, ResNet-VAE style): a stride-2 convolution (enc1), then per layer
`blocks` residual blocks at the layer's resolution and a rescale to the next one
(resolutions halve from side / 2, rounding up: 28 -> 14, 7, 4, 2, 1). Top-down, a learned
state d_{L+1} at the top resolution; per layer the prior embedding is pstrap(d), the
posterior embedding is qstrap(d) + qladder(d̂_l) (d̂_l the bottom-up state there), the code
(or Gaussian draw) is added to d through pladder, then residual blocks and the rescale to
the layer below; a stride-2 transposed convolution (dec1) gives the likelihood's parameters.
The generative and inference networks share the downward chain d (the "blue arrows").

Objective (eq. B.5): E_q[log p(x | z)] - sum_l E_q[KL(q(z_l | z_>l, x) || p(z_l | z_>l))],
each KL between categoricals (or diagonal Gaussians) in closed form and summed over the
layer's positions. Training draws Gumbel-softmax codes at `temperature` (a choice the thesis
leaves open, §8) and applies free bits: each layer's batch-mean KL counts as at least
`free_bits` nats per position (Kingma et al. 2016; the thesis gives no value, §8). In
evaluation (`model.eval()`) codes are hard one-hot draws, so the ELBO and the importance-
weighted bound are those of the discrete model (the bits/dim of Table 3.1).

Latent groups are the layers, top first, named by the thesis's index: ``z4, z3, z2, z1`` for
L = 4 (z1 the finest). A codes layer's group has shape (M_l, K) of one-hot rows and
`categories` K; a Gaussian layer's group is flat (d_e * M_l,), channels first.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import AtlasError
from engine.models.base import ELBOResult, LatentGroup, Latents, check_importance_samples, check_input_shape
from engine.models.blocks import MAX_LATENT_CHANNELS, MAX_LAYERS, MAX_RESIDUAL_WIDTH, MAX_WIDTH, check_size, mlp
from engine.models.hvae import Block, image_likelihood
from engine.models.latents import checked_latents, leading_shape
from engine.models.posteriors import Categorical, DiagonalGaussian
from engine.numerics import LOG_2PI, gaussian_kl_elementwise, gaussian_log_prob, logmeanexp
from engine.randomness import stream

MAX_CODES = 4096  # codebook entries per layer


@dataclass
class RRVQConfig:
    input_shape: tuple[int, ...] = (1, 16, 16)
    layers: int = 4  # L; resolutions halve from side / 2
    arch: Literal["conv", "mlp"] = "conv"  # "mlp": one layer whose codes each reach the whole image (§3.5)
    hidden: int = 512  # the MLP's hidden width (arch "mlp")
    width: int = 32  # channels of the backbone
    blocks: int = 1  # residual blocks between latent layers (App. B.5's L = 5 model: 4)
    latent: Literal["codes", "gaussian"] = "codes"
    codes: int = 32  # K per layer
    code_dim: int = 16  # d_e, the embedding's (or the Gaussian layer's) channels
    code_variance: Literal["learned", "unit"] = "learned"  # E_Sigma learned, or 1 (Table 3.3's rows)
    prior_form: Literal["embedding", "direct"] = "embedding"  # Table 3.3's columns
    temperature: float = 0.5  # Gumbel-softmax temperature in training
    free_bits: float = 0.1  # nats per latent position, per layer (0: none)
    likelihood: Literal["bernoulli", "gaussian", "dmol"] = "dmol"
    mixtures: int = 3  # components of the discretised logistic mixture
    dataset_size: int = 0  # filled in by the trainer; unused
    family: str = field(default="rrvq", init=False)

    def __post_init__(self):
        self.input_shape = tuple(int(s) for s in self.input_shape)
        if len(self.input_shape) != 3 or self.input_shape[1] != self.input_shape[2] or self.input_shape[1] % 2:
            raise AtlasError(
                f"a spatial hierarchy needs square images of an even side (C, H, H), got {self.input_shape}"
            )
        check_size("layers", self.layers, MAX_LAYERS)
        check_size("width", self.width, MAX_RESIDUAL_WIDTH)
        check_size("blocks", self.blocks, 16)
        check_size("codes", self.codes, MAX_CODES)
        check_size("code_dim", self.code_dim, MAX_LATENT_CHANNELS)
        check_size("mixtures", self.mixtures, 32)
        choices = {
            "latent": ("codes", "gaussian"),
            "arch": ("conv", "mlp"),
            "code_variance": ("learned", "unit"),
            "prior_form": ("embedding", "direct"),
            "likelihood": ("bernoulli", "gaussian", "dmol"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise AtlasError(f"unknown {name} {getattr(self, name)!r}; choose {' or '.join(map(repr, allowed))}")
        check_size("hidden", self.hidden, MAX_WIDTH)
        if self.arch == "mlp" and self.layers != 1:
            raise AtlasError(f"an MLP hierarchy of codes has one layer (layers=1), got layers={self.layers}")
        if not 0.01 <= float(self.temperature) <= 10:
            raise AtlasError(f"temperature must be in [0.01, 10], got {self.temperature!r}")
        if not 0 <= float(self.free_bits) <= 10:
            raise AtlasError(f"free_bits must be in [0, 10] nats per position, got {self.free_bits!r}")

    @property
    def resolutions(self) -> list[int]:
        """Each layer's side, finest first (z1, z2, ...)."""
        return [math.ceil(self.input_shape[1] / 2 ** (i + 1)) for i in range(self.layers)]

    @property
    def model_name(self) -> str:
        """What the thesis calls this configuration."""
        if self.latent == "gaussian":
            return "Spatial-VAE"
        if self.code_variance == "learned" and self.prior_form == "embedding":
            return "RRVQ-VAE"
        if self.layers == 1 and self.code_variance == "unit":
            return "MLP rVQ-VAE" if self.arch == "mlp" else "rVQ-VAE"
        sigma = "σ learned" if self.code_variance == "learned" else "σ = 1"
        prior = "Embedding-Cat" if self.prior_form == "embedding" else "Direct-Cat"
        return f"RRVQ ablation ({sigma}, {prior})"

    @classmethod
    def fields_from_data(cls, train_data) -> dict:
        return {"dataset_size": len(train_data)}

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        sides = " → ".join(f"{r}×{r}" for r in reversed(self.resolutions))
        if self.latent == "gaussian":
            what = f"{self.code_dim} Gaussian channels per position"
        else:
            sigma = "learned variances" if self.code_variance == "learned" else "unit variances"
            what = f"{self.codes} codes of {self.code_dim} dims with {sigma}, {self.prior_form} prior"
        net = (
            f"an MLP of {self.hidden} hidden units each way"
            if self.arch == "mlp"
            else f"backbone width {self.width} with {self.blocks} residual block(s) per layer"
        )
        return f"{self.model_name}: {self.layers} latent layers ({sides}), {what}, {net}, {self.likelihood} likelihood"


def code_log_density(e: torch.Tensor, means: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """log N(e; E_mu[k], E_Sigma[k] I) for every code k (seed001 eq. 3.9 in log space):
    e (..., d), means (K, d), log_var (K,) -> (..., K). The responsibilities are its softmax."""
    d = e.shape[-1]
    sq = e.pow(2).sum(-1, keepdim=True) - 2 * e @ means.T + means.pow(2).sum(-1)  # ||e - E_mu[k]||², (..., K)
    return -0.5 * (d * (LOG_2PI + log_var) + sq.clamp_min(0) * torch.exp(-log_var))


def rescale(h: torch.Tensor, side: int) -> torch.Tensor:
    """The differentiable resize on the identity path (App. B.3): average pooling down,
    nearest-neighbour up, to side x side."""
    if h.shape[-1] == side:
        return h
    if h.shape[-1] > side:
        return F.adaptive_avg_pool2d(h, side)
    return F.interpolate(h, size=(side, side), mode="nearest")


class CodeLayer(nn.Module):
    """One latent layer: its networks and, for codes, its codebooks."""

    def __init__(self, config: RRVQConfig, side: int, n_layers: int):
        super().__init__()
        w, de, k = config.width, config.code_dim, config.codes
        self.side, self.codes = side, config.latent == "codes"
        spatial = config.arch == "conv"  # an MLP model's positions do not see each other here
        kernel = 3 if side > 2 and spatial else 1

        def conv(c_in: int, c_out: int) -> nn.Conv2d:
            return nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)

        q_out = de if self.codes else 2 * de
        p_out = (k if config.prior_form == "direct" else de) if self.codes else 2 * de
        self.qstrap, self.qladder, self.pstrap = conv(w, q_out), conv(w, q_out), conv(w, p_out)
        self.pladder = conv(de, w)
        mid = max(1, w // 2)
        self.blocks = nn.Sequential(
            *(Block(w, mid, w, side if spatial else 1, residual=True) for _ in range(config.blocks))
        )
        with torch.no_grad():
            for block in self.blocks:
                block.c4.weight.mul_(math.sqrt(1.0 / n_layers))
        if self.codes:
            self.means = nn.Parameter(0.1 * torch.randn(k, de))  # E_mu, small so that every code starts in reach
            self.log_var = nn.Parameter(torch.zeros(k), requires_grad=config.code_variance == "learned")  # log E_Sigma
            self.direct = config.prior_form == "direct"

    def responsibilities_logits(self, e: torch.Tensor) -> torch.Tensor:
        """Unnormalised log-responsibilities (n, M, K) of embeddings e (n, d_e, R, R)."""
        return code_log_density(e.flatten(2).transpose(1, 2), self.means, self.log_var)

    def posterior(self, d: torch.Tensor, up: torch.Tensor):
        h = self.qstrap(d) + self.qladder(up)
        return Categorical(self.responsibilities_logits(h)) if self.codes else DiagonalGaussian.from_output(h, dim=1)

    def prior(self, d: torch.Tensor):
        h = self.pstrap(d)
        if not self.codes:
            return DiagonalGaussian.from_output(h, dim=1)
        return Categorical(h.flatten(2).transpose(1, 2) if self.direct else self.responsibilities_logits(h))

    def embed(self, z: torch.Tensor) -> torch.Tensor:
        """What the top-down state receives from z: the codes' means E_mu z (n, d_e, R, R) for a
        one-hot (or relaxed) z (n, M, K), z itself (n, d_e, R, R) for a Gaussian layer."""
        if not self.codes:
            return z
        e = z @ self.means  # (n, M, d_e)
        return e.transpose(1, 2).reshape(z.shape[0], -1, self.side, self.side)


def mode_of(dist) -> torch.Tensor:
    """The most probable value: the one-hot argmax of a categorical, the mean of a Gaussian."""
    if isinstance(dist, Categorical):
        return torch.zeros_like(dist.logits).scatter_(-1, dist.logits.argmax(-1, keepdim=True), 1.0)
    return dist.mean


Draw = Literal["sample", "relaxed", "mode"]


class RRVQVAE(nn.Module):
    """See the module docstring."""

    def __init__(self, config: RRVQConfig):
        super().__init__()
        self.config = config
        c_img, w = config.input_shape[0], config.width
        self.sides = list(reversed(config.resolutions))  # top first, as the top-down pass runs
        mid = max(1, w // 2)
        if config.arch == "mlp":  # every code reaches every pixel: §3.5's counter-example
            pixels, state = math.prod(config.input_shape), w * config.resolutions[0] ** 2
            self.enc1 = nn.Sequential(nn.Flatten(), mlp([pixels, config.hidden, state]))
            self.up_blocks = nn.ModuleList([nn.Identity()])
        else:
            self.enc1 = nn.Conv2d(c_img, w, 3, stride=2, padding=1)
            self.up_blocks = nn.ModuleList(
                nn.Sequential(*(Block(w, mid, w, s, residual=True) for _ in range(config.blocks)))
                for s in config.resolutions
            )
        self.layers = nn.ModuleList(CodeLayer(config, s, config.layers) for s in self.sides)
        self.start = nn.Parameter(torch.zeros(w, self.sides[0], self.sides[0]))  # d_{L+1}
        self.likelihood, n_out = image_likelihood(config)
        if config.arch == "mlp":
            side = config.input_shape[1]
            self.dec1 = nn.Sequential(
                nn.Flatten(), mlp([state, config.hidden, n_out * side * side]), nn.Unflatten(1, (n_out, side, side))
            )
        else:
            self.dec1 = nn.ConvTranspose2d(w, n_out, 4, stride=2, padding=1)
        self.names = [f"z{config.layers - i}" for i in range(config.layers)]
        codes = config.latent == "codes"
        self.latent_groups = [
            LatentGroup(name, (s * s, config.codes), "layer", categories=config.codes)
            if codes
            else LatentGroup(name, (config.code_dim * s * s,), "layer")
            for name, s in zip(self.names, self.sides)
        ]

    @property
    def discrete(self) -> bool:
        return self.config.latent == "codes"

    # -- passes ---------------------------------------------------------------------
    def bottom_up(self, x: torch.Tensor) -> list[torch.Tensor]:
        """d̂_l for every layer, top first, each (n, width, R_l, R_l)."""
        check_input_shape(x, self.config.input_shape)
        side = self.config.resolutions[0]
        h = self.enc1(x).reshape(x.shape[0], self.config.width, side, side)
        ups = []
        for blocks, side in zip(self.up_blocks, self.config.resolutions):
            h = blocks(rescale(h, side))
            ups.append(h)
        return ups[::-1]

    def top_down(
        self,
        ups: list[torch.Tensor] | None,
        n: int,
        z: Latents | None = None,
        draw: Draw | list[Draw] = "sample",
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, list[dict]]:
        """The top-down pass over n examples. Layer l's z comes from `z` when it names the
        layer; otherwise from q (when `ups`, the bottom-up states, are given) or p at
        `temperature`, drawn per `draw` (one for all layers or one per layer, top first):
        "sample" a hard one-hot code or a Gaussian draw, "relaxed" a Gumbel-softmax code
        (training), "mode" the most probable code or the mean. Returns the likelihood's
        parameters and per layer {z, q (a posterior or None), p}."""
        draws = [draw] * len(self.layers) if isinstance(draw, str) else list(draw)
        d = self.start.unsqueeze(0).expand(n, *self.start.shape)
        out = []
        for i, (layer, name) in enumerate(zip(self.layers, self.names)):
            d = rescale(d, layer.side)
            p = layer.prior(d)
            q = layer.posterior(d, ups[i]) if ups is not None else None
            if z is not None and name in z:
                zi = self._unflatten(z[name], n, i)
            else:
                zi = self._draw(q if q is not None else p, draws[i], 1.0 if q is not None else temperature, generator)
            d = layer.blocks(d + layer.pladder(layer.embed(zi)))
            out.append({"z": zi, "q": q, "p": p})
        return self.dec1(rescale(d, self.config.input_shape[1] // 2)), out

    def _draw(self, dist, how: Draw, temperature: float, generator) -> torch.Tensor:
        if how == "mode":
            return mode_of(dist)
        if isinstance(dist, Categorical):
            if how == "relaxed":
                return dist.rsample(temperature=self.config.temperature)
            return dist.hard_sample(temperature=temperature, generator=generator)
        eps = torch.randn(dist.mean.shape, generator=stream(generator), device=dist.mean.device, dtype=dist.mean.dtype)
        return dist.mean + temperature * dist.std * eps

    def _flat_latents(self, z: Latents | torch.Tensor) -> tuple[Latents, tuple[int, ...]]:
        """Checked latents with their leading dims (samples, chains, batch) folded into one, and those dims."""
        z = checked_latents(self, z)
        lead = leading_shape(z, self.latent_groups)
        n = math.prod(lead)
        return {g.name: z[g.name].expand(*lead, *g.shape).reshape(n, *g.shape) for g in self.latent_groups}, lead

    def _unflatten(self, zi: torch.Tensor, n: int, i: int) -> torch.Tensor:
        """A group's latents (n, *group.shape) as the layer holds them."""
        if self.discrete:
            return zi.reshape(n, *self.latent_groups[i].shape)
        return zi.reshape(n, self.config.code_dim, self.sides[i], self.sides[i])

    # -- the LatentModel interface --------------------------------------------------
    def encode(self, x: torch.Tensor) -> dict:
        """Each layer's posterior along the mode path (upper layers at their most probable
        codes, or means): Categorical (batch, M, K) or DiagonalGaussian (batch, d_e M)."""
        _, layers = self.top_down(self.bottom_up(x), x.shape[0], draw="mode")
        if self.discrete:
            return {name: layer["q"] for name, layer in zip(self.names, layers)}
        return {
            name: DiagonalGaussian(layer["q"].mean.flatten(1), layer["q"].logvar.flatten(1))
            for name, layer in zip(self.names, layers)
        }

    def decode(self, z: Latents | torch.Tensor) -> torch.Tensor:
        flat, lead = self._flat_latents(z)
        params, _ = self.top_down(None, math.prod(lead), z=flat)
        mean = self.likelihood.mean(params)
        return mean.view(*lead, *mean.shape[1:])

    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        params, _ = self.top_down(None, n, temperature=temperature, generator=generator)
        return self.likelihood.mean(params)

    def elbo(self, x: torch.Tensor, k: int = 1, chunk: int | None = None) -> ELBOResult:
        """The ELBO of eq. B.5 with closed-form KLs (relaxed codes in training, hard codes in
        evaluation), or for k > 1 the importance-weighted bound with hard codes."""
        check_importance_samples(k)
        if k == 1:
            draw = "relaxed" if self.training else "sample"
            params, layers = self.top_down(self.bottom_up(x), x.shape[0], draw=draw)
            recon = self.likelihood.log_prob(x, params)
            kl = {name: layer_kl(layer["q"], layer["p"]) for name, layer in zip(self.names, layers)}
            return ELBOResult(total=recon - sum(kl.values()), recon=recon, kl=kl)
        log_w, recon, kl = self.log_weights(x, k, chunk)
        return ELBOResult(total=logmeanexp(log_w, dim=0), recon=recon.mean(0), kl={"all": kl.mean(0)}, k=k)

    def log_weights(self, x: torch.Tensor, k: int, chunk: int | None = None):
        """log w = log p(x, z) - log q(z | x) for k draws of hard codes z ~ q, with its parts
        log p(x | z) and log q(z | x) - log p(z); each (k, batch)."""
        ups = self.bottom_up(x)
        b = x.shape[0]
        chunk = chunk or max(1, 2**24 // max(1, b * self.config.width * self.config.input_shape[1] ** 2))
        recon, kl = [], []
        for start in range(0, k, chunk):
            c = min(chunk, k - start)
            rep = [u.repeat(c, 1, 1, 1) for u in ups]
            params, layers = self.top_down(rep, c * b, draw="sample")
            recon.append(self.likelihood.log_prob(x.repeat(c, 1, 1, 1), params).view(c, b))
            kl.append(sum(log_density(l["q"], l["z"]) - log_density(l["p"], l["z"]) for l in layers).view(c, b))
        recon, kl = torch.cat(recon), torch.cat(kl)
        return recon - kl, recon, kl

    def log_joint(self, x: torch.Tensor, z: Latents | torch.Tensor) -> torch.Tensor:
        """log p(x | z) + sum_l log p(z_l | z_>l); z values (..., batch, *group.shape) -> (..., batch)."""
        flat, lead = self._flat_latents(z)
        params, layers = self.top_down(None, math.prod(lead), z=flat)
        xs = x.expand(*lead, *x.shape[-3:]).reshape(-1, *x.shape[-3:])
        prior = sum(log_density(layer["p"], layer["z"]) for layer in layers)
        return (self.likelihood.log_prob(xs, params) + prior).view(*lead)

    # -- training -------------------------------------------------------------------
    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The negative ELBO per data dimension with free bits: each layer's batch-mean KL
        counts as at least free_bits x (its positions) nats. The metrics are per image and
        include each codes layer's perplexity: exp of the entropy of the batch's mean
        posterior over codes, averaged over positions (K when every code is used evenly, 1 at
        index collapse)."""
        params, layers = self.top_down(self.bottom_up(x), x.shape[0], draw="relaxed")
        recon = self.likelihood.log_prob(x, params)
        metrics = {"recon": recon.mean()}
        penalty = 0.0
        for name, layer, side in zip(self.names, layers, self.sides):
            kl = layer_kl(layer["q"], layer["p"]).mean()
            penalty = penalty + kl.clamp_min(self.config.free_bits * side * side)
            metrics[f"kl/{name}"] = kl
            if self.discrete:
                metrics[f"perplexity/{name}"] = batch_perplexity(layer["q"].probs)
        dims = math.prod(self.config.input_shape)
        elbo = metrics["recon"] - sum(metrics[f"kl/{name}"] for name in self.names)
        metrics["elbo"] = elbo
        metrics["bits_per_dim"] = -elbo / (dims * math.log(2))
        return (penalty - recon.mean()) / dims, {k: v.detach() for k, v in metrics.items()}

    # -- code-level views (seed001 Figs 3.3, B.1) ------------------------------------
    @torch.no_grad()
    def code_indices(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each codes layer's most probable code per position along the mode path: {name: (batch, R, R)}."""
        self._need_codes()
        _, layers = self.top_down(self.bottom_up(x), x.shape[0], draw="mode")
        return {
            name: layer["z"].argmax(-1).view(-1, side, side)
            for name, layer, side in zip(self.names, layers, self.sides)
        }

    def one_hot(self, indices: dict[str, torch.Tensor]) -> Latents:
        """Latents from code indices {name: (..., R, R)} -> {name: (..., M, K)}."""
        self._need_codes()
        return {
            name: F.one_hot(indices[name].flatten(-2).long(), self.config.codes).float()
            for name in self.names
            if name in indices
        }

    @torch.no_grad()
    def layerwise_latents(
        self, layer: str, rows: int, cols: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> Latents:
        """The latents of Fig. 3.3's grid, rows x cols examples row by row: each row draws the
        layers above `layer` from the prior once; each column redraws `layer` given them; the
        layers below take their most probable value given everything above."""
        if layer not in self.names:
            raise AtlasError(f"this model has no layer {layer!r}; its layers are {', '.join(self.names)}")
        index = self.names.index(layer)
        _, upper = self.top_down(None, rows, temperature=temperature, generator=generator)
        z = {name: l["z"].repeat_interleave(cols, 0) for name, l in zip(self.names[:index], upper[:index])}
        draws: list[Draw] = ["sample"] * (index + 1) + ["mode"] * (len(self.names) - index - 1)
        _, layers = self.top_down(None, rows * cols, z=z, draw=draws, temperature=temperature, generator=generator)
        return {
            name: l["z"].reshape(rows * cols, *g.shape) for name, l, g in zip(self.names, layers, self.latent_groups)
        }

    @torch.no_grad()
    def layerwise_samples(
        self, layer: str, rows: int, cols: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Fig. 3.3's grid decoded: (rows, cols, *input_shape); see `layerwise_latents`."""
        z = self.layerwise_latents(layer, rows, cols, temperature, generator)
        return self.decode(z).view(rows, cols, *self.config.input_shape)

    def code_norms(self, layer: str) -> torch.Tensor:
        """||E_mu[k]|| of every code of `layer`, (K,): the colours of the index map (Fig. B.1)."""
        self._need_codes()
        return self.layers[self.names.index(layer)].means.detach().norm(dim=-1)

    def code_variances(self, layer: str) -> torch.Tensor:
        """E_Sigma[k] of every code of `layer`, (K,)."""
        self._need_codes()
        return self.layers[self.names.index(layer)].log_var.detach().exp()

    @torch.no_grad()
    def code_embeddings(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The posterior's expected code mean per position, sum_k pi_k E_mu[k], along the mode
        path: {name: (batch, M * d_e)}, the points of the latent map for a codes model."""
        self._need_codes()
        _, layers = self.top_down(self.bottom_up(x), x.shape[0], draw="mode")
        return {
            name: (layer["q"].probs @ block.means).flatten(1)
            for name, layer, block in zip(self.names, layers, self.layers)
        }

    @torch.no_grad()
    def sample_mixed(self, x: torch.Tensor, top_layers: int, temperature: float = 1.0) -> torch.Tensor:
        """Decode x with its `top_layers` highest layers drawn from the posterior and the rest
        from the prior at `temperature` (seed000 Fig. B.12 by layer: one layer per resolution here)."""
        ups = self.bottom_up(x)
        _, upper = self.top_down(ups, x.shape[0])
        z = {name: layer["z"] for name, layer in zip(self.names[:top_layers], upper[:top_layers])}
        params, _ = self.top_down(None, x.shape[0], z=z, temperature=temperature)
        return self.likelihood.mean(params)

    def posterior_share(self, top_layers: int) -> float:
        """Fraction of the latent positions (or values) that `sample_mixed(x, top_layers)` draws from q."""
        sizes = [g.shape[0] if self.discrete else g.size for g in self.latent_groups]
        return sum(sizes[:top_layers]) / sum(sizes)

    def _need_codes(self) -> None:
        if not self.discrete:
            raise AtlasError("this Spatial-VAE has Gaussian latents, not codes; code-level views need latent='codes'")


def layer_kl_units(q, p) -> torch.Tensor:
    """KL(q || p) of one layer per latent unit, (batch, units): per position for codes (a
    categorical KL over the K codes), per value for a Gaussian layer."""
    if isinstance(q, Categorical):
        log_q, log_p = F.log_softmax(q.logits, -1), F.log_softmax(p.logits, -1)
        return (log_q.exp() * (log_q - log_p)).sum(-1).flatten(1)
    return gaussian_kl_elementwise(q.mean, q.logvar, p.mean, p.logvar).flatten(1)


def layer_kl(q, p) -> torch.Tensor:
    """KL(q || p) of one layer summed over its positions, (batch,): categorical or Gaussian."""
    return layer_kl_units(q, p).sum(1)


def log_density(dist, z: torch.Tensor) -> torch.Tensor:
    """log dist(z) summed over the layer, (batch,): one-hot z (batch, M, K) or Gaussian z."""
    if isinstance(dist, Categorical):
        return (z * F.log_softmax(dist.logits, -1)).flatten(1).sum(1)
    return gaussian_log_prob(z, dist.mean, dist.logvar).flatten(1).sum(1)


def batch_perplexity(probs: torch.Tensor) -> torch.Tensor:
    """exp(H(mean over the batch of probs)), averaged over positions; probs (batch, M, K)."""
    usage = probs.mean(0)  # (M, K)
    entropy = -(usage * usage.clamp_min(1e-12).log()).sum(-1)
    return entropy.exp().mean()
