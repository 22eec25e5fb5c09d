"""HH-VAEM: a hierarchical VAE for mixed-type tables with missing values, after seed002
ch. 5 (§2.2-2.5; `ipeis/HH-VAEM`, anchors A5).

Inputs. A row x (batch, D) holds the table's values in their own units (categorical
columns as integer codes), NaN where a value is missing; every method also takes an
optional `mask` (batch, D) of 0/1, 1 = observed, combined with the NaNs. Missing entries
are zero-filled and the mask is given to the encoder ([x * m, m], seed002 §2.3), and every
likelihood counts only the observed entries. Load tables with `missing_as_nan=True`.

Columns. One likelihood per column kind, in the table's units (so the log-densities are
those of the data as stored): real -> Gaussian on the standardised value, positive ->
log-normal (a Gaussian on the standardised log), binary -> Bernoulli, categorical ->
categorical (seed002 §2.2); one learned variance per Gaussian column. One column is
the target y; a predictor p(y | x_hat, h_1) replaces its decoder (seed002 §2.4).

Latents. Two layers in the reparameterised hierarchy of seed002 eq. 5.5: h_2 = eps_2,
h_1 = f_mu(h_2) + f_sigma(h_2) * eps_1, p(eps_l) = N(0, I). The groups "z1" (h_1, next to
the data) and "z2" (h_2) are of kind "layer", so `engine.inference.posterior.latent_posterior`
runs HMC over eps (encode_noise, log_joint_noise, latents_from_noise). The encoder is
bottom-up and factorised over layers in eps-space (seed002 §2.3).

Training (seed002 Algorithm 1, stages 2 and 3; the marginal VAEs of stage 1 are left out,
the decoder reads h_1 directly, as the thesis's image models do): `vi_steps` steps on the
ELBO (eq. 5.6), then the encoder keeps training on the ELBO while the decoder, prior,
predictor and HMC step sizes maximise E_q^(T)[log p(x_O, y_O, eps)] (eq. 5.9) and the
inflation minimises the SKSD (eq. 5.10). The trainer sees one loss; `routed_loss` gives
each parameter group the gradient of its own objective.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import AtlasError
from engine.models.base import (
    ELBOResult,
    LatentGroup,
    Latents,
    check_importance_samples,
    check_input_shape,
    model_device,
)
from engine.models.blocks import mlp
from engine.models.latents import checked_latents, flatten_latents, split_latents
from engine.models.learned_hmc import LearnedHMC
from engine.models.posteriors import DiagonalGaussian
from engine.numerics import gaussian_log_prob, logmeanexp, standard_normal_log_prob
from engine.randomness import stream

KINDS = ("real", "positive", "binary", "categorical")
LOGVAR_RANGE = (math.log(0.01), math.log(2.0))  # of a Gaussian column, in standardised units


@dataclass
class HHVAEMConfig:
    input_shape: tuple[int, ...] = (10,)  # (D,)
    columns: tuple[tuple[str, str, int], ...] = ()  # (name, kind, categories) per column, from the schema
    target: str = ""  # the column the predictor learns; "" = the last column
    latent_dims: tuple[int, int] = (8, 4)  # (m_1, m_2): h_1 next to the data, h_2 on top
    hidden: int = 128
    hmc_steps: int = 10  # T transitions of the learned sampler, step sizes from U(0.05, 0.2) (seed002 §2.5)
    n_leapfrog: int = 5
    vi_steps: int = 2000  # ELBO pre-training steps before the HMC stage (Algorithm 1)
    kl_warmup: int = 500  # linear KL annealing over the first steps (HH-VAEM code)
    train_missing: float = 0.99  # each training row hides extra entries with p ~ this * U(0, 1)
    sksd_every: int = 10  # inflation update every this many HMC-stage steps (HH-VAEM code)
    sksd_rows: int = 16
    sksd_chains: int = 30
    family: str = field(default="hhvaem", init=False)

    def __post_init__(self):
        self.input_shape = tuple(int(s) for s in self.input_shape)
        self.columns = tuple((str(n), str(k), int(c)) for n, k, c in self.columns)
        self.latent_dims = tuple(int(m) for m in self.latent_dims)
        if not self.columns:
            raise AtlasError(
                "hhvaem needs the table's columns; train it through a RunSpec (which fills them in from the "
                "dataset schema) or pass columns=[[name, kind, categories], ...]"
            )
        if self.input_shape != (len(self.columns),):
            raise AtlasError(f"hhvaem input_shape {self.input_shape} does not match {len(self.columns)} columns")
        for name, kind, categories in self.columns:
            if kind not in KINDS:
                raise AtlasError(f"column {name!r} is of kind {kind!r}; hhvaem models {', '.join(KINDS)} columns")
            if kind == "categorical" and categories < 2:
                raise AtlasError(f"categorical column {name!r} needs at least 2 categories, got {categories}")
        names = [c[0] for c in self.columns]
        if self.target and self.target not in names:
            raise AtlasError(f"target column {self.target!r} is not in the table; its columns are {', '.join(names)}")
        if len(self.columns) < 2:
            raise AtlasError("hhvaem needs a target column and at least one feature column")
        if len(self.latent_dims) != 2 or min(self.latent_dims) < 1:
            raise AtlasError(f"latent_dims must be two positive sizes (m_1, m_2), got {self.latent_dims}")
        for name in ("hidden", "hmc_steps", "n_leapfrog", "kl_warmup", "sksd_every", "sksd_rows", "sksd_chains"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise AtlasError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= self.train_missing < 1.0:
            raise AtlasError(f"train_missing must be in [0, 1), got {self.train_missing}")

    @classmethod
    def fields_from_data(cls, train_data) -> dict:
        return {"columns": columns_from_schema(train_data.schema)}

    @property
    def target_index(self) -> int:
        names = [c[0] for c in self.columns]
        return names.index(self.target) if self.target else len(names) - 1

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        kinds = [k for _, k, _ in self.columns]
        counts = ", ".join(f"{kinds.count(k)} {k}" for k in KINDS if k in kinds)
        m1, m2 = self.latent_dims
        target = self.columns[self.target_index][0]
        return (
            f"HH-VAEM-style hierarchical VAE for a table with missing values ({counts} columns): latent layers "
            f"h_1 ({m1}) and h_2 ({m2}) in the reparameterised hierarchy, a predictor for {target!r}, "
            f"HMC with learned step sizes (T = {self.hmc_steps}, {self.n_leapfrog} leapfrog steps) after "
            f"{self.vi_steps} ELBO steps"
        )


def columns_from_schema(schema) -> list[list]:
    """The `columns` config entry from a dataset schema (ColumnSpec list)."""
    if schema is None:
        raise AtlasError("hhvaem models tables; this dataset has no column schema (pick a tabular dataset)")
    return [[c.name, c.kind, len(c.categories or [])] for c in schema]


# -- per-column likelihoods ------------------------------------------------------------------
def column_width(kind: str, categories: int) -> int:
    """Decoder outputs (and encoded features) for a column: K logits for categorical, else 1."""
    return categories if kind == "categorical" else 1


def column_log_prob(
    kind: str,
    x: torch.Tensor,
    params: torch.Tensor,
    loc: float | torch.Tensor = 0.0,
    scale: float | torch.Tensor = 1.0,
    logvar: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """log p(x | params) of one column in the table's units; x (batch,) observed values
    (no NaN), params (..., batch, width) -> (..., batch).

    real:        N(x; loc + scale * mu, scale^2 var)      (a Gaussian on u = (x - loc) / scale)
    positive:    LogNormal(x; loc + scale * mu, scale^2 var), u = (log x - loc) / scale
    binary:      Bernoulli(x; sigmoid(logit))
    categorical: Categorical(x; softmax(logits)), x an integer code
    """
    if kind in ("real", "positive"):
        value = x.log() if kind == "positive" else x
        u = (value - loc) / scale
        lp = gaussian_log_prob(u, params[..., 0], torch.as_tensor(logvar)) - torch.log(torch.as_tensor(scale))
        return lp - value if kind == "positive" else lp  # the Jacobian d log x / dx = 1 / x
    if kind == "binary":
        return -F.binary_cross_entropy_with_logits(params[..., 0], x.expand(params.shape[:-1]), reduction="none")
    codes = x.long().expand(params.shape[:-1]).unsqueeze(-1)
    return params.log_softmax(-1).gather(-1, codes).squeeze(-1)


class HHVAEM(nn.Module):
    masked_likelihood = True  # log_joint takes a mask (engine.models.base.MaskedLikelihood)

    def __init__(self, config: HHVAEMConfig):
        super().__init__()
        self.config = config
        cfg = config
        self.kinds = [k for _, k, _ in cfg.columns]
        self.categories = [c for _, _, c in cfg.columns]
        self.widths = [column_width(k, c) for k, c in zip(self.kinds, self.categories)]
        self.target = cfg.target_index
        self.features = [j for j in range(len(self.kinds)) if j != self.target]  # the columns x, besides y
        D, E, H = len(self.kinds), sum(self.widths), cfg.hidden
        E_x = E - self.widths[self.target]
        m1, m2 = cfg.latent_dims
        # encoder, bottom-up: r_0 = [x_O * m, m], r_l = f(r_{l-1}), q(eps_l) = N(g(r_l)) (seed002 §2.3)
        self.enc_1 = nn.Sequential(nn.Linear(E + D, H), nn.ReLU())
        self.enc_2 = nn.Sequential(nn.Linear(H, H), nn.ReLU())
        self.q_1, self.q_2 = nn.Linear(H, 2 * m1), nn.Linear(H, 2 * m2)
        # prior net of eq. 5.5: h_2 -> (f_mu, log f_sigma^2) of h_1
        self.prior_1 = mlp([m2, H, 2 * m1], nn.ReLU)
        self.decoder = mlp([m1, H, E_x], nn.ReLU)
        # predictor p(y | x_hat, h_1), input [h_1, x_hat, missing indicator] (seed002 §2.4)
        self.predictor = mlp([m1 + E_x + len(self.features), H, self.widths[self.target]], nn.ReLU)
        self.logvar = nn.Parameter(torch.full((D,), math.log(0.1)))  # Gaussian columns' variance (0.1 at start)
        self.hmc = LearnedHMC(m1 + m2, cfg.hmc_steps, cfg.n_leapfrog, layer_sizes=[m1, m2], step_init=(0.05, 0.2))
        self.register_buffer("loc", torch.zeros(D))  # standardisation of real and log-positive columns
        self.register_buffer("scale", torch.ones(D))
        self.latent_groups = [LatentGroup("z1", (m1,), "layer"), LatentGroup("z2", (m2,), "layer")]
        self.step = 0

    # -- data in and out ----------------------------------------------------------------------
    @torch.no_grad()
    def initialize(self, train_data) -> None:
        """Standardise real and log-positive columns with the observed training values."""
        x = train_data.x
        missing = train_data.meta.get("missing_mask")
        if missing is not None and missing.any() and not torch.isnan(x[missing]).all():
            raise AtlasError("hhvaem reads missing values as NaN; load the table with the option missing_as_nan=true")
        values, observed = self.split_input(x.to(self.loc.device))
        for j, kind in enumerate(self.kinds):
            if kind in ("real", "positive"):
                v = values[observed[:, j] > 0, j]
                v = v.log() if kind == "positive" else v
                if v.numel() > 1:
                    self.loc[j], self.scale[j] = v.mean(), v.std().clamp_min(1e-3)

    def split_input(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (batch, D), NaN = missing, and an optional 0/1 mask -> (values, observed), both
        (batch, D): observed entries as given, the others filled with a harmless value
        (so no NaN reaches a gradient), observed as 0/1 floats."""
        check_input_shape(x, self.config.input_shape)
        observed = ~torch.isnan(x)
        if mask is not None:
            observed = observed & (mask.expand_as(x) > 0)
        positive = torch.tensor([k == "positive" for k in self.kinds], device=x.device)
        if (observed & positive & ~(x > 0)).any():
            raise AtlasError("a positive column holds a value <= 0; mark missing values as NaN (missing_as_nan=true)")
        fill = torch.where(positive, 1.0, 0.0).to(x.dtype).expand_as(x)
        return torch.where(observed, x, fill), observed.to(x.dtype)

    def encode_features(self, values: torch.Tensor, observed: torch.Tensor, columns: list[int]) -> torch.Tensor:
        """The encoded columns (batch, sum of widths): standardised (log) values, 0/1, one-hot
        codes; 0 where a value is missing."""
        parts = []
        for j in columns:
            kind, v, m = self.kinds[j], values[..., j], observed[..., j]
            if kind == "categorical":
                parts.append(F.one_hot(v.long(), self.categories[j]).to(v.dtype) * m.unsqueeze(-1))
                continue
            if kind in ("real", "positive"):
                v = ((v.log() if kind == "positive" else v) - self.loc[j]) / self.scale[j]
            parts.append(torch.where(m > 0, v, 0.0).unsqueeze(-1))
        return torch.cat(parts, -1)

    def column_params(self, params: torch.Tensor, columns: list[int]) -> list[torch.Tensor]:
        """Split decoder outputs (..., sum of widths) into one tensor per column of `columns`."""
        return list(params.split([self.widths[j] for j in columns], -1))

    def _logvar(self, j: int) -> torch.Tensor:
        return self.logvar[j].clamp(*LOGVAR_RANGE)

    # -- the hierarchy (seed002 eq. 5.5) ------------------------------------------------------
    def encode_noise(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, DiagonalGaussian]:
        """q(eps_1 | x_O), q(eps_2 | x_O): the encoder, factorised over layers in eps-space."""
        return self._encode_noise(*self.split_input(x, mask))

    def _encode_noise(self, values, observed) -> dict[str, DiagonalGaussian]:
        r0 = torch.cat([self.encode_features(values, observed, list(range(len(self.kinds)))), observed], -1)
        r1 = self.enc_1(r0)
        r2 = self.enc_2(r1)
        return {
            name: DiagonalGaussian.from_output(head(r), logvar_range=(-12.0, 6.0))
            for name, head, r in (("z1", self.q_1, r1), ("z2", self.q_2, r2))
        }

    def prior_of_h1(self, h2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f_mu(h_2), log f_sigma^2(h_2)), each (..., m_1)."""
        p = DiagonalGaussian.from_output(self.prior_1(h2), logvar_range=(-12.0, 6.0))
        return p.mean, p.logvar

    def latents_from_noise(self, eps: Latents) -> Latents:
        """h_2 = eps_2, h_1 = f_mu(h_2) + f_sigma(h_2) eps_1 (seed002 eq. 5.5); values (..., batch, m)."""
        mean, logvar = self.prior_of_h1(eps["z2"])
        return {"z1": mean + torch.exp(0.5 * logvar) * eps["z1"], "z2": eps["z2"]}

    # -- likelihood ---------------------------------------------------------------------------
    def log_likelihood(self, values, observed, h1: torch.Tensor) -> torch.Tensor:
        """log p(x_O | h_1) + log p(y_O | x_hat, h_1) (seed002 eq. 5.6): h1 (..., batch, m_1) -> (..., batch)."""
        return (self.column_log_likelihoods(values, observed, h1) * observed).sum(-1)

    def column_log_likelihoods(self, values, observed, h1: torch.Tensor) -> torch.Tensor:
        """log p(x_j = values_j | h_1) of every column j, (..., batch, D), whether observed or
        not (for scoring held-out values); the target's through the predictor, whose x_hat
        sees only the observed entries."""
        params = self.decoder(h1)
        cols = []
        for j, p in zip(self.features, self.column_params(params, self.features)):
            cols.append(column_log_prob(self.kinds[j], values[:, j], p, self.loc[j], self.scale[j], self._logvar(j)))
        y = self.target
        y_lp = column_log_prob(
            self.kinds[y],
            values[:, y],
            self.predictor_params(values, observed, h1, params),
            self.loc[y],
            self.scale[y],
            self._logvar(y),
        )
        cols.insert(y, y_lp)
        return torch.stack(cols, -1)

    def impute_encoded(self, values, observed, params: torch.Tensor) -> torch.Tensor:
        """x_hat: observed feature values, and where missing the decoder's mean (Gaussian),
        argmax (categorical) or round(sigmoid) (Bernoulli), seed002 §2.4; encoded,
        (..., batch, sum of feature widths)."""
        imputed = []
        for j, p in zip(self.features, self.column_params(params, self.features)):
            kind = self.kinds[j]
            if kind == "categorical":
                imputed.append(F.one_hot(p.argmax(-1), self.categories[j]).to(p.dtype))
            elif kind == "binary":
                imputed.append((p > 0).to(p.dtype))
            else:
                imputed.append(p)
        imputed = torch.cat(imputed, -1)
        seen = self.encode_features(values, observed, self.features)
        m = torch.cat([observed[:, j : j + 1].expand(-1, self.widths[j]) for j in self.features], -1)
        return seen * m + imputed * (1 - m)

    def predictor_params(self, values, observed, h1: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        """Parameters of p(y | x_hat, h_1), (..., batch, width of y)."""
        params = self.decoder(h1) if params is None else params
        x_hat = self.impute_encoded(values, observed, params)
        missing = (1 - observed[:, self.features]).expand(*h1.shape[:-1], -1)
        return self.predictor(torch.cat([h1, x_hat, missing], -1))

    def column_values(self, params: list[torch.Tensor], columns: list[int]) -> torch.Tensor:
        """Point values in the table's units from per-column parameters: mean (real), median
        exp(mu) (positive), round(sigmoid) (binary), argmax code (categorical); (..., len(columns))."""
        out = []
        for j, p in zip(columns, params):
            kind = self.kinds[j]
            if kind == "categorical":
                out.append(p.argmax(-1).to(p.dtype))
            elif kind == "binary":
                out.append((p[..., 0] > 0).to(p.dtype))
            else:
                u = self.loc[j] + self.scale[j] * p[..., 0]
                out.append(u.exp() if kind == "positive" else u)
        return torch.stack(out, -1)

    def column_samples(self, params: list[torch.Tensor], columns: list[int], generator=None) -> torch.Tensor:
        """One draw per column from p(x_j | params), in encoded units for real and positive
        columns (standardised (log) values), codes otherwise; (..., len(columns))."""
        out = []
        for j, p in zip(columns, params):
            kind = self.kinds[j]
            noise = torch.rand(p.shape, generator=stream(generator), device=p.device, dtype=p.dtype)
            if kind == "categorical":
                out.append((p - torch.log(-torch.log(noise.clamp(1e-12, 1 - 1e-7)))).argmax(-1).to(p.dtype))  # Gumbel
            elif kind == "binary":
                out.append((noise[..., 0] < torch.sigmoid(p[..., 0])).to(p.dtype))
            else:
                normal = torch.randn(p.shape[:-1], generator=stream(generator), device=p.device, dtype=p.dtype)
                out.append(p[..., 0] + torch.exp(0.5 * self._logvar(j)) * normal)
        return torch.stack(out, -1)

    def rows_from_h1(self, values, observed, h1: torch.Tensor) -> torch.Tensor:
        """Point values of every column decoded from h_1 (..., batch, m_1) -> (..., batch, D);
        the target from the predictor given x_O and the imputations."""
        params = self.decoder(h1)
        feats = self.column_values(self.column_params(params, self.features), self.features)
        y = self.column_values([self.predictor_params(values, observed, h1, params)], [self.target])
        return torch.cat([feats[..., : self.target], y, feats[..., self.target :]], -1)

    # -- the LatentModel interface -------------------------------------------------------------
    def encode(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, DiagonalGaussian]:
        """Gaussians over the layers z1 = h_1, z2 = h_2: q(h_2) = q(eps_2), and h_1 given h_2 at
        its posterior mean, N(f_mu + f_sigma mu_1, f_sigma^2 sigma_1^2). HMC uses encode_noise."""
        q = self.encode_noise(x, mask)
        mean, logvar = self.prior_of_h1(q["z2"].mean)
        q1 = DiagonalGaussian(mean + torch.exp(0.5 * logvar) * q["z1"].mean, q["z1"].logvar + logvar)
        return {"z1": q1, "z2": q["z2"]}

    def decode(self, z: Latents | torch.Tensor) -> torch.Tensor:
        """A table row (..., batch, D) from the layers, nothing observed: each column's point value."""
        h1 = checked_latents(self, z)["z1"]
        nothing = torch.full((h1.shape[-2], len(self.kinds)), math.nan, device=h1.device, dtype=h1.dtype)
        return self.rows_from_h1(*self.split_input(nothing), h1)

    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        device = model_device(self)
        eps = {
            g.name: temperature * torch.randn(n, g.size, generator=stream(generator), device=device)
            for g in self.latent_groups
        }
        return self.decode(self.latents_from_noise(eps))

    def elbo(self, x: torch.Tensor, k: int = 1, mask: torch.Tensor | None = None) -> ELBOResult:
        """The ELBO of the observed entries (seed002 eq. 5.6; KL of rows with nothing observed
        is 0) or, k > 1, the importance-weighted bound over eps."""
        check_importance_samples(k)
        values, observed = self.split_input(x, mask)
        q = self._encode_noise(values, observed)
        any_seen = (observed.sum(-1) > 0).to(values.dtype)
        if k == 1:
            eps = {name: qn.rsample() for name, qn in q.items()}
            recon = self.log_likelihood(values, observed, self.latents_from_noise(eps)["z1"])
            kl = {name: qn.kl_to_standard_normal() * any_seen for name, qn in q.items()}
            return ELBOResult(total=recon - sum(kl.values()), recon=recon, kl=kl)
        recon, kl = self._log_weights(values, observed, q, k, 128)
        log_w = recon - sum(kl.values())
        kl = {name: v.mean(0) for name, v in kl.items()}
        return ELBOResult(total=logmeanexp(log_w, 0), recon=recon.mean(0), kl=kl, k=k)

    def log_weights(
        self, x: torch.Tensor, k: int, chunk: int | None = None, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log w_i = log p(x_O, eps_i) - log q(eps_i | x_O) for k draws eps_i ~ q, with its two
        parts log p(x_O | eps_i) and log q(eps_i | x_O) - log p(eps_i); each (k, batch)."""
        values, observed = self.split_input(x, mask)
        recon, kl = self._log_weights(values, observed, self._encode_noise(values, observed), k, chunk or 128)
        kl = sum(kl.values())
        return recon - kl, recon, kl

    def _log_weights(self, values, observed, q: dict[str, DiagonalGaussian], k: int, chunk: int):
        """log p(x_O | eps_i) (k, batch) and, per layer, log q(eps_i) - log p(eps_i) (k, batch)."""
        recon, kl = [], {name: [] for name in q}
        for start in range(0, k, chunk):
            eps = {name: qn.rsample(min(chunk, k - start)) for name, qn in q.items()}  # (c, batch, m)
            recon.append(self.log_likelihood(values, observed, self.latents_from_noise(eps)["z1"]))
            for name, e in eps.items():
                kl[name].append(q[name].log_prob(e) - standard_normal_log_prob(e))
        return torch.cat(recon), {name: torch.cat(v) for name, v in kl.items()}

    def log_joint(self, x: torch.Tensor, z: Latents | torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x_O, h_1, h_2) = log p(x_O | h_1) + log N(h_1; f_mu(h_2), f_sigma^2) + log N(h_2; 0, I)."""
        z = checked_latents(self, z)
        values, observed = self.split_input(x, mask)
        mean, logvar = self.prior_of_h1(z["z2"])
        prior = gaussian_log_prob(z["z1"], mean, logvar).sum(-1) + standard_normal_log_prob(z["z2"])
        return self.log_likelihood(values, observed, z["z1"]) + prior

    def log_joint_noise(self, x: torch.Tensor, eps: Latents, mask: torch.Tensor | None = None) -> torch.Tensor:
        """HMC's target p*(eps) = log p(x_O | h_1(eps)) + sum_l log N(eps_l; 0, I) (seed002 §2.5);
        eps values (..., batch, m) -> (..., batch)."""
        return self._log_joint_noise(*self.split_input(x, mask), eps)

    def _log_joint_noise(self, values, observed, eps: Latents) -> torch.Tensor:
        h1 = self.latents_from_noise(eps)["z1"]
        return self.log_likelihood(values, observed, h1) + sum(standard_normal_log_prob(e) for e in eps.values())

    def noise_log_prob(self, values, observed):
        """The flat target for the samplers: eps (batch, chains, m_1 + m_2) -> (batch, chains)."""

        def log_prob(e):
            eps = split_latents(e.transpose(0, 1), self.latent_groups)  # (chains, batch, m_l)
            return self._log_joint_noise(values, observed, eps).transpose(0, 1)

        return log_prob

    def noise_start(self, values, observed) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's Gaussian over the flat eps: mean, std (batch, m_1 + m_2)."""
        q = self._encode_noise(values, observed)
        mean = flatten_latents({name: qn.mean for name, qn in q.items()}, self.latent_groups)
        return mean, flatten_latents({name: qn.stddev for name, qn in q.items()}, self.latent_groups)

    def h1_from_flat(self, e: torch.Tensor) -> torch.Tensor:
        """Flat eps (..., m_1 + m_2) -> h_1 (..., m_1)."""
        return self.latents_from_noise(split_latents(e, self.latent_groups))["z1"]

    # -- training (seed002 Algorithm 1) ------------------------------------------------------------
    def set_step(self, step: int) -> None:
        self.step = step

    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.config
        values, observed = self.split_input(x)
        if self.training and cfg.train_missing > 0:  # seed002 §2.7: p = 0.99 U(0, 1) per row
            p = cfg.train_missing * torch.rand(x.shape[0], 1, device=x.device)
            observed = observed * (torch.rand_like(observed) >= p).to(observed.dtype)
        q = self._encode_noise(values, observed)
        any_seen = (observed.sum(-1) > 0).to(values.dtype)
        eps = {name: qn.rsample() for name, qn in q.items()}
        recon = self.log_likelihood(values, observed, self.latents_from_noise(eps)["z1"])
        kl = {name: qn.kl_to_standard_normal() * any_seen for name, qn in q.items()}
        anneal = min(1.0, (self.step + 1) / cfg.kl_warmup)
        elbo = recon - sum(kl.values())
        vi_loss = -(recon - anneal * sum(kl.values())).mean()
        metrics = {"elbo": elbo.mean(), "recon": recon.mean(), **{f"kl/{n}": v.mean() for n, v in kl.items()}}
        if self.step < cfg.vi_steps:
            return vi_loss, {k: v.detach() for k, v in metrics.items()}

        # stage 3: the decoder side and the step sizes on L_HMC, the inflation on SKSD
        log_prob = self.noise_log_prob(values, observed)
        mean = flatten_latents({name: qn.mean for name, qn in q.items()}, self.latent_groups)
        std = flatten_latents({name: qn.stddev for name, qn in q.items()}, self.latent_groups)
        chain = self.hmc(log_prob, mean, std, chains=1)
        end_lp = log_prob(chain.final).mean(1)  # (batch,)
        hmc_objective = (end_lp * any_seen).sum() / any_seen.sum().clamp_min(1.0)  # seed002 eq. 5.9
        encoder = [*self.enc_1.parameters(), *self.enc_2.parameters(), *self.q_1.parameters(), *self.q_2.parameters()]
        decoder = [
            *self.prior_1.parameters(),
            *self.decoder.parameters(),
            *self.predictor.parameters(),
            self.logvar,
            self.hmc.log_step,
        ]
        objectives = [(encoder, vi_loss), (decoder, -hmc_objective)]
        if (self.step - cfg.vi_steps) % cfg.sksd_every == 0:
            rows = torch.nonzero(any_seen).flatten()[: cfg.sksd_rows]
            if len(rows) > 0:
                sub = self.noise_log_prob(values[rows], observed[rows])
                wide = self.hmc(sub, mean[rows], std[rows], chains=cfg.sksd_chains)
                sksd = LearnedHMC.sksd_loss(sub, wide)  # seed002 eq. 5.10
                objectives.append(([self.hmc.log_inflation], sksd))
                metrics["sksd"] = sksd
        metrics.update(
            hmc_objective=hmc_objective,
            accept=chain.accept_prob.mean(),
            step_size=self.hmc.step_sizes.mean(),
            inflation=self.hmc.log_inflation.exp().mean(),
        )
        return routed_loss(vi_loss, objectives), {k: v.detach() for k, v in metrics.items()}


def routed_loss(value: torch.Tensor, objectives: list[tuple[list[nn.Parameter], torch.Tensor]]) -> torch.Tensor:
    """A scalar equal to `value` whose gradient, for each (parameters, objective) pair, is the
    gradient of that objective with respect to those parameters and nothing else: the
    separate optimisers of seed002 Algorithm 1 behind the trainer's single loss."""
    surrogate = value.new_zeros(())
    for params, objective in objectives:
        grads = torch.autograd.grad(objective, params, allow_unused=True, retain_graph=True)
        surrogate = surrogate + sum((p * g.detach()).sum() for p, g in zip(params, grads) if g is not None)
    return value.detach() + surrogate - surrogate.detach()
