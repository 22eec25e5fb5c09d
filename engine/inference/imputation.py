"""Imputation, prediction and active feature acquisition with an HH-VAEM (engine.models.hhvaem)
from encoder samples or from HMC samples (seed002 §2.5, §2.6, §2.8).

Rows are x (batch, D) in the table's units with NaN where a value is missing; the target
column is always hidden (y is unobserved at test, seed002 §2.7). Two posteriors over the
noise eps are compared: the encoder's Gaussian q^(0)(eps | x_O) and the end points of the
model's learned HMC chains q^(T) (`LearnedHMC`: T transitions started from q^(0) with its
learned inflation and step sizes).

    result = impute(model, x, x_true)        # per row: both imputations, predictions, test log-liks
    curves = acquire(model, x_true)          # SAIA order and error curve, against random order
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.errors import AtlasError
from engine.models.base import TabularImputer
from engine.numerics import logmeanexp

SOURCES = ("encoder", "hmc")


@dataclass
class Imputation:
    """Per row; `encoder` from q^(0) samples, `hmc` from q^(T) samples."""

    x: torch.Tensor  # (batch, D) the input, the target column hidden
    encoder: torch.Tensor  # (batch, D) x with every missing entry imputed (target included)
    hmc: torch.Tensor  # (batch, D)
    loglik_encoder: torch.Tensor  # (batch, D) log p(x_j | x_O) of each held-out feature value (eq. 5.14), NaN elsewhere
    loglik_hmc: torch.Tensor  # (batch, D)
    target_loglik_encoder: torch.Tensor  # (batch,) log p(y | x_O) of the true target; NaN where unknown
    target_loglik_hmc: torch.Tensor  # (batch,)
    accept: torch.Tensor  # (batch,) mean acceptance probability of the HMC transitions
    target: int  # the target column

    def prediction(self, source: str) -> torch.Tensor:
        """The target predicted from `source` samples, (batch,)."""
        return getattr(self, _check_source(source))[:, self.target]

    def mean_loglik(self, source: str) -> float:
        """Test log-likelihood of the held-out feature values, nats per entry (seed002 eq. 5.14)."""
        values = getattr(self, f"loglik_{_check_source(source)}")
        return float(values[~torch.isnan(values)].mean())


def _check_source(source: str) -> str:
    if source not in SOURCES:
        raise AtlasError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    return source


def _check_rows(model: TabularImputer, x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(model, TabularImputer):
        raise AtlasError(f"imputation needs an hhvaem model (learned HMC over its noise), got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != len(model.kinds):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise AtlasError(f"{name} must be rows (batch, {len(model.kinds)}) of the model's table, got {shape}")
    return x.to(model.loc.device, model.loc.dtype)


def noise_samples(
    model: TabularImputer, values, observed, samples: int, generator: torch.Generator
) -> tuple[torch.Tensor, ...]:
    """Flat eps samples (samples, batch, M) from q^(0) and from q^(T), and the HMC
    acceptance (batch,)."""
    mean, std = model.noise_start(values, observed)  # (batch, M)
    shape = (samples, *mean.shape)
    encoder = mean + std * torch.randn(shape, generator=generator, device=mean.device, dtype=mean.dtype)
    chain = model.hmc(model.noise_log_prob(values, observed), mean, std, chains=samples, generator=generator)
    return encoder, chain.final.transpose(0, 1), chain.accept_prob.mean((0, 2))


def point_values(model: TabularImputer, values, observed, h1: torch.Tensor) -> torch.Tensor:
    """One value per column from samples h1 (samples, batch, m_1): the mean over samples of
    the decoded values of real and positive columns, the most frequent code otherwise;
    (batch, D)."""
    rows = model.rows_from_h1(values, observed, h1)  # (samples, batch, D)
    continuous = torch.tensor([k in ("real", "positive") for k in model.kinds], device=rows.device)
    return torch.where(continuous, rows.mean(0), rows.mode(0).values)


@torch.no_grad()
def impute(
    model: TabularImputer, x: torch.Tensor, x_true: torch.Tensor | None = None, samples: int = 100, seed: int = 0
) -> Imputation:
    """Impute the missing entries (NaN) of x (batch, D) and predict the target, from `samples`
    encoder samples and from as many HMC chains per row. Given the complete rows x_true
    (batch, D), also the test log-likelihood of every held-out value (missing in x, known in
    x_true): log (1/k) sum_i p(x_j | eps_i) (seed002 eq. 5.14, per entry), and of the target."""
    x = _check_rows(model, x, "x").clone()
    if not isinstance(samples, int) or samples < 1:
        raise AtlasError(f"samples must be a positive integer, got {samples!r}")
    x[:, model.target] = math.nan  # y unobserved at test (seed002 §2.7)
    values, observed = model.split_input(x)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    eps_encoder, eps_hmc, accept = noise_samples(model, values, observed, samples, generator)
    out = {"encoder": eps_encoder, "hmc": eps_hmc}
    result = {}
    if x_true is not None:
        x_true = _check_rows(model, x_true, "x_true")
        held_out = torch.isnan(x) & ~torch.isnan(x_true)
        true_values, _ = model.split_input(x_true)
    for source, e in out.items():
        h1 = model.h1_from_flat(e)  # (samples, batch, m_1)
        result[source] = torch.where(observed > 0, values, point_values(model, values, observed, h1))
        nan = torch.full_like(x, math.nan)
        result[f"loglik_{source}"], result[f"target_loglik_{source}"] = nan, nan[:, 0]
        if x_true is not None:
            merged = torch.where(observed > 0, values, true_values)  # x_O and the values to score
            lp = logmeanexp(model.column_log_likelihoods(merged, observed, h1), 0)  # (batch, D)
            features = held_out.clone()
            features[:, model.target] = False
            result[f"loglik_{source}"] = torch.where(features, lp, nan)
            result[f"target_loglik_{source}"] = torch.where(held_out[:, model.target], lp[:, model.target], math.nan)
    return Imputation(x=x, accept=accept, target=model.target, **result)


# -- sequential active feature acquisition (seed002 §2.6) ---------------------------------------
@dataclass
class Acquisition:
    """SAIA against a random order, over the same rows; feature columns are indices into the row."""

    order: torch.Tensor  # (batch, F) feature columns in the order acquired by estimated MI with the target
    error: torch.Tensor  # (F + 1,) prediction error with 0, 1, ..., F features acquired
    random_order: torch.Tensor  # (batch, F) a random order per row
    random_error: torch.Tensor  # (F + 1,)
    metric: str  # "rmse" for a real or positive target, "error rate" for binary or categorical


def bin_codes(s: torch.Tensor, kind: str, categories: int, bins: int) -> tuple[torch.Tensor, int]:
    """Histogram bins of samples s (samples, batch): codes for binary and categorical values,
    else `bins` uniform bins over each row's [min, max] of the samples (seed002 §2.6)."""
    if kind == "categorical":
        return s.long(), categories
    if kind == "binary":
        return s.long(), 2
    low, high = s.min(0).values, s.max(0).values
    width = (high - low).clamp_min(1e-12)
    return ((s - low) / width * bins).long().clamp(0, bins - 1), bins


def histogram_mi(a: torch.Tensor, n_a: int, b: torch.Tensor, n_b: int) -> torch.Tensor:
    """I(a; b) from the 2-D histogram of paired codes a, b (samples, batch) (seed002 eq. 5.13),
    sum_ij p(i, j) log p(i, j) / (p_a(i) p_b(j)); (batch,)."""
    joint = torch.einsum("kni,knj->nij", F.one_hot(a, n_a).double(), F.one_hot(b, n_b).double()) / a.shape[0]
    p_a, p_b = joint.sum(2, keepdim=True), joint.sum(1, keepdim=True)
    ratio = torch.where(joint > 0, joint / (p_a * p_b), 1.0)
    return (joint * ratio.log()).sum((1, 2))


def _prediction_error(model: TabularImputer, prediction: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    if model.kinds[model.target] in ("real", "positive"):
        return (prediction - truth).pow(2).mean().sqrt()
    return (prediction != truth).double().mean()


@torch.no_grad()
def acquire(
    model: TabularImputer, x_true: torch.Tensor, samples: int = 100, bins: int = 5, seed: int = 0
) -> Acquisition:
    """SAIA (seed002 §2.6) on complete rows x_true (batch, D): from nothing observed, acquire
    one feature at a time, the unobserved one with the highest I(y; x_i | x_O) (eq. 5.12)
    estimated by a histogram (eq. 5.13) of one x_i and one y draw per HMC sample; the target
    is predicted from HMC samples after every acquisition. The same for a random order."""
    x_true = _check_rows(model, x_true, "x_true")
    if torch.isnan(x_true).any():
        raise AtlasError("acquire needs complete rows (the values to acquire); drop the rows with missing values")
    if not isinstance(bins, int) or bins < 2:
        raise AtlasError(f"bins must be an integer >= 2, got {bins!r}")
    features, target = model.features, model.target
    truth = x_true[:, target]
    generator = torch.Generator(device=x_true.device).manual_seed(seed)
    batch, n_feat = x_true.shape[0], len(features)
    random_rank = torch.rand(batch, n_feat, generator=generator, device=x_true.device).argsort(1)
    random_order = torch.as_tensor(features, device=x_true.device)[random_rank]

    def run(choose) -> tuple[torch.Tensor, torch.Tensor]:
        seen = torch.zeros_like(x_true, dtype=torch.bool)
        order, errors = [], []
        for t in range(n_feat + 1):
            values, observed = model.split_input(torch.where(seen, x_true, math.nan))
            _, eps, _ = noise_samples(model, values, observed, samples, generator)
            h1 = model.h1_from_flat(eps)  # (samples, batch, m_1)
            errors.append(_prediction_error(model, point_values(model, values, observed, h1)[:, target], truth))
            if t == n_feat:
                break
            picked = choose(t, values, observed, h1)  # (batch,) a column index
            seen[torch.arange(batch), picked] = True
            order.append(picked)
        return torch.stack(order, 1), torch.stack(errors)

    def by_information(t, values, observed, h1):
        params = model.decoder(h1)
        x_draws = model.column_samples(model.column_params(params, features), features, generator)  # (k, batch, F)
        y_draw = model.column_samples([model.predictor_params(values, observed, h1, params)], [target], generator)
        y_codes, n_y = bin_codes(y_draw[..., 0], model.kinds[target], model.categories[target], bins)
        mi = torch.stack(
            [
                histogram_mi(*bin_codes(x_draws[..., i], model.kinds[j], model.categories[j], bins), y_codes, n_y)
                for i, j in enumerate(features)
            ],
            1,
        )  # (batch, F)
        mi = mi.masked_fill(observed[:, features] > 0, -math.inf)
        return torch.as_tensor(features, device=mi.device)[mi.argmax(1)]

    order, error = run(by_information)
    _, random_error = run(lambda t, *_: random_order[:, t])
    metric = "rmse" if model.kinds[target] in ("real", "positive") else "error rate"
    return Acquisition(order, error, random_order, random_error, metric)
