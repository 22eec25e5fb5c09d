"""A neural in-context learner: a small causal transformer trained by maximum likelihood
on exchangeable sequences (theta ~ prior, z_i ~ p(. | theta) i.i.d.; seed000 §4.5,
"a small GRU/LSTM/Transformer ... an ICL analogue"). A Bayes-optimal learner of these data
would be the conjugate posterior predictive, a martingale; the martingale checks ask how
close the trained network comes.

The network (nanoGPT-style, pre-LN):

    tokens  h_0 = [BOS, embed(z_1), ..., embed(z_n)] + sinusoidal(position)   (batch, n + 1, width)
    blocks  h <- h + attn(LN(h));  h <- h + mlp(LN(h))                         causal self-attention
    head    LN(h_t) -> the predictive of z_{t+1}: a logit (Bernoulli) or (mean, log std) (Gaussian)

It is a `SequentialPredictor` (engine.sequence.predictor) with a key/value cache as its
state: `start(context)` runs the network once over the context, `update(state, z)` feeds one
token through the cache, the cost of one step. `naive_paths` is the way without a cache
(re-run the network on the whole context for every new token, one path at a time), kept
for the benchmark and the equivalence tests.

Positions are sinusoidal, so a context longer than the training sequences is defined
(how well the learner extrapolates there is what long martingale paths probe).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import AtlasError
from engine.sequence.conjugate import PRIORS, ConjugateState
from engine.sequence.data import quantize
from engine.sequence.paths import Paths, check_observed
from engine.sequence.predictor import FAMILIES, BernoulliPredictive, GaussianPredictive, Predictive

MAX_WIDTH = 1024
LOG_STD_RANGE = (-7.0, 5.0)  # the Gaussian head's log std is clamped to this


@dataclass
class ICLConfig:
    observation: Literal["bernoulli", "gaussian"] = "bernoulli"
    width: int = 64
    layers: int = 3
    heads: int = 4
    mlp_ratio: int = 4
    input_shape: tuple[int, ...] = (128,)  # (L,): the training sequences' length; the trainer fills it in
    family: str = field(default="icl", init=False)

    def __post_init__(self):
        self.input_shape = tuple(int(s) for s in self.input_shape)
        if self.observation not in FAMILIES:
            raise AtlasError(f"unknown observation {self.observation!r}; choose one of {', '.join(FAMILIES)}")
        for name in ("width", "layers", "heads", "mlp_ratio"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= MAX_WIDTH:
                raise AtlasError(f"icl model.{name} must be an integer from 1 to {MAX_WIDTH}, got {value!r}")
        if self.width % self.heads:
            raise AtlasError(f"the width ({self.width}) must be a multiple of the number of heads ({self.heads})")
        if len(self.input_shape) != 1:
            raise AtlasError(f"an icl model reads sequences (L,), got input_shape {self.input_shape}")

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"causal transformer in-context learner for {self.observation} sequences: {self.layers} pre-LN "
            f"layers of width {self.width} ({self.heads} heads), sinusoidal positions, trained on sequences "
            f"of length {self.input_shape[0]}"
        )


def sinusoidal(positions: torch.Tensor, width: int) -> torch.Tensor:
    """positions (T,) int -> (T, width): sin/cos at geometric frequencies (Vaswani et al. 2017)."""
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, width, 2, device=positions.device) / width)
    angle = positions.float()[:, None] * freq[None]  # (T, width / 2)
    return torch.stack([angle.sin(), angle.cos()], -1).flatten(-2)[:, :width]


@dataclass
class KVCache:
    """The learner's state: per layer the keys and values of every token so far, and the
    head's output at the last token (the predictive of the next observation)."""

    keys: list[torch.Tensor]  # per layer (batch, heads, length, head_dim)
    values: list[torch.Tensor]
    out: torch.Tensor  # (batch, outputs)

    @property
    def length(self) -> int:
        """Tokens in the cache: BOS and the observations."""
        return self.keys[0].shape[2]


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None):
        """x: (B, T, W); past keys and values (B, H, S, W/H) or None.

        Without past: causal attention over the T tokens. With past: T must be 1 and the
        new token attends to the S past tokens and itself. Returns (y, (keys, values))."""
        b, t, w = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, T, hd)
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=past is None)
        return self.proj(y.transpose(1, 2).reshape(b, t, w)), (k, v)


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))

    def forward(self, x: torch.Tensor, past=None):
        a, kv = self.attn(self.ln1(x), past)
        x = x + a
        return x + self.mlp(self.ln2(x)), kv


class ICLTransformer(nn.Module):
    """The in-context learner; a `SequentialPredictor` for ``config.observation`` data."""

    def __init__(self, config: ICLConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.bos = nn.Parameter(torch.zeros(w))
        self.embed = nn.Linear(1, w)
        self.blocks = nn.ModuleList(Block(w, config.heads, config.mlp_ratio) for _ in range(config.layers))
        self.ln_f = nn.LayerNorm(w)
        self.head = nn.Linear(w, 1 if config.observation == "bernoulli" else 2)

    @property
    def family(self) -> str:
        """The observation family ("bernoulli" or "gaussian"), as the predictor protocol names it."""
        return self.config.observation

    # -- the network ---------------------------------------------------------------------
    def tokens(self, z: torch.Tensor, start: int) -> torch.Tensor:
        """z: (B, T) observations at positions start.. -> (B, T, W) input tokens."""
        pos = torch.arange(start, start + z.shape[1], device=z.device)
        return self.embed(z.unsqueeze(-1)) + sinusoidal(pos, self.config.width)

    def forward(self, context: torch.Tensor) -> tuple[torch.Tensor, KVCache]:
        """context: (B, n) -> head outputs (B, n + 1, outputs), the predictive of z_{t+1}
        for t = 0..n, and the cache of the n + 1 tokens."""
        b = context.shape[0]
        bos = self.bos + sinusoidal(torch.zeros(1, dtype=torch.long, device=self.bos.device), self.config.width)
        h = torch.cat([bos.expand(b, 1, -1), self.tokens(context, 1)], 1)  # (B, n + 1, W)
        keys, values = [], []
        for block in self.blocks:
            h, (k, v) = block(h)
            keys.append(k)
            values.append(v)
        out = self.head(self.ln_f(h))
        return out, KVCache(keys, values, out[:, -1])

    def step(self, cache: KVCache, z: torch.Tensor) -> KVCache:
        """The cache with z: (B,) appended, one token through every layer."""
        h = self.tokens(z.unsqueeze(1), cache.length)  # (B, 1, W)
        keys, values = [], []
        for block, k_past, v_past in zip(self.blocks, cache.keys, cache.values):
            h, (k, v) = block(h, (k_past, v_past))
            keys.append(k)
            values.append(v)
        return KVCache(keys, values, self.head(self.ln_f(h))[:, 0])

    def predictive_from(self, out: torch.Tensor) -> Predictive:
        """Head outputs (..., outputs) -> the predictive distribution, batch (...)."""
        if self.config.observation == "bernoulli":
            return BernoulliPredictive(torch.sigmoid(out[..., 0]))
        return GaussianPredictive(out[..., 0], out[..., 1].clamp(*LOG_STD_RANGE).exp())

    # -- the SequentialPredictor protocol ---------------------------------------------------
    @torch.no_grad()
    def start(self, context: torch.Tensor) -> KVCache:
        """context: (batch, n) -> its cache (one run of the network)."""
        return self(self._to_device(context))[1]

    def predictive(self, state: KVCache) -> Predictive:
        return self.predictive_from(state.out.float().cpu())

    @torch.no_grad()
    def update(self, state: KVCache, z: torch.Tensor) -> KVCache:
        return self.step(state, self._to_device(z))

    def _to_device(self, z: torch.Tensor) -> torch.Tensor:
        return z.to(self.bos.device, self.bos.dtype)

    # -- training ------------------------------------------------------------------------
    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """Next-token negative log-likelihood (nats) of x: (B, L) at every position, (B, L)."""
        out, _ = self(x[:, :-1])  # predicts z_1..z_L from BOS, z_1..z_{L-1}
        return -log_prob(self.predictive_from(out), x)

    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The mean next-token NLL per observation (logged as train/loss)."""
        return self.nll(x).mean(), {}

    @torch.no_grad()
    def evaluation_metrics(self, data, n: int) -> dict[str, float]:
        """Test next-token NLL per observation of the model and of the Bayes predictive of
        the data's prior (the best any learner can do), and their gap."""
        x = data.batch(torch.arange(min(n, len(data))))
        model_nll = torch.cat([self.nll(x[i : i + 250].to(self.bos.device)).cpu() for i in range(0, len(x), 250)])
        bayes = bayes_nll(PRIORS[data.meta["family"]], x)
        return {
            "nll": model_nll.mean().item(),
            "bayes_nll": bayes.mean().item(),
            "nll_gap": (model_nll - bayes).mean().item(),
        }

    def initialize(self, train_data) -> None:
        """Called by the trainer on a fresh run: the data must be what the head predicts."""
        family = train_data.meta.get("family") if train_data.kind == "sequence" else None
        if family != self.config.observation:
            raise AtlasError(
                f"an icl model for {self.config.observation} observations needs exchangeable "
                f"{self.config.observation} sequences, got dataset {train_data.name!r}"
                + (f" of {family} sequences" if family else "")
                + "; set data.family and model.observation to the same value"
            )


def log_prob(pred: Predictive, z: torch.Tensor) -> torch.Tensor:
    """log p(z) under a Bernoulli or Gaussian predictive; z broadcasts against its batch."""
    if isinstance(pred, BernoulliPredictive):
        p = pred.prob.clamp(1e-7, 1 - 1e-7)
        return z * p.log() + (1 - z) * (1 - p).log()
    return -0.5 * ((z - pred.mean) / pred.std).square() - pred.std.log() - 0.5 * math.log(2 * math.pi)


def bayes_nll(prior, x: torch.Tensor) -> torch.Tensor:
    """Next-token NLL (B, L) of x: (B, L) under a conjugate model's posterior predictive
    (engine.sequence.conjugate), which at position t has seen z_1..z_{t-1}."""
    count = torch.arange(x.shape[1], dtype=x.dtype).expand_as(x)  # t - 1 observations before z_t
    total = torch.cumsum(x, 1) - x
    return -log_prob(prior.predictive(ConjugateState(count, total)), x)


@torch.no_grad()
def naive_paths(
    model: ICLTransformer,
    observed: torch.Tensor,
    m: int,
    paths: int = 200,
    *,
    permute: bool = True,
    quantum: float | None = None,
    generator: torch.Generator | None = None,
) -> Paths:
    """`sample_paths` the naive way: one path at a time, the network re-run on the whole
    context for every new token (no cache). observed: (n,). For benchmarks and tests."""
    observed = check_observed(observed, model.family)
    if observed.dim() != 1:
        raise AtlasError(f"naive_paths takes one observed sequence (n,), got shape {tuple(observed.shape)}")
    z_paths, mean_paths = [], []
    for _ in range(paths):
        context = observed[torch.rand(len(observed), generator=generator).argsort()] if permute else observed
        zs, means = [], []
        for _ in range(m):
            out, _ = model(context[None].to(model.bos.device))
            pred = model.predictive_from(out[:, -1].cpu())  # batch (1,)
            z = quantize(pred.sample(generator), quantum)
            zs.append(z)
            means.append(pred.mean)
            context = torch.cat([context, z])
        out, _ = model(context[None].to(model.bos.device))
        means.append(model.predictive_from(out[:, -1].cpu()).mean)
        z_paths.append(torch.cat(zs))
        mean_paths.append(torch.cat(means))
    return Paths(
        observed=observed,
        z=torch.stack(z_paths),
        predictive_mean=torch.stack(mean_paths),
        family=model.family,
        permuted=permute,
        quantum=quantum,
    )
