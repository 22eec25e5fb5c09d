"""The predictors the martingale checks offer by name, each with at most one parameter.

    make_predictor("biased", "bernoulli", 0.05)    # Beta(1, 1)-Bernoulli with +0.05 on its mean

Every choice wraps the conjugate reference model of its family (`reference_model`:
Beta(1, 1)-Bernoulli, or N(theta, 1) with the prior N(0, 100)), so the exact one passes the
checks by construction and each control breaks them in a known way (seed000 §4.5).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from engine.errors import AtlasError
from engine.sequence.conjugate import reference_model
from engine.sequence.controls import Biased, Sharpened
from engine.sequence.predictor import SequentialPredictor


@dataclass(frozen=True)
class PredictorChoice:
    title: str
    parameter: str | None  # the parameter's name, None when there is none
    default: float = 0.0
    low: float = 0.0
    high: float = 0.0
    about: str = ""


CHOICES: dict[str, PredictorChoice] = {
    "bayes": PredictorChoice(
        "Exact Bayes (conjugate)", None, about="the posterior predictive of the reference model: a martingale"
    ),
    "biased": PredictorChoice(
        "Biased: mean + δ",
        "δ",
        0.05,
        -0.2,
        0.2,
        about="every prediction moved by δ; imputed paths drift, which T1 sees",
    ),
    "sharpened": PredictorChoice(
        "Sharpened: predictive^β",
        "β",
        1.5,
        1.0,
        4.0,
        about="over-confident predictions pulled toward the nearer end; T1 on short paths",
    ),
    "forgetting": PredictorChoice(
        "Exponential forgetting λ",
        "λ",
        0.95,
        0.8,
        1.0,
        about="old observations down-weighted by λ^age; too spread for T3",
    ),
    "fractional": PredictorChoice(
        "Fractional posterior α",
        "α",
        0.5,
        0.1,
        4.0,
        about="the likelihood raised to α; for 0/1 data Bayes with another prior",
    ),
}


def make_predictor(kind: str, family: str, value: float | None = None) -> SequentialPredictor:
    """The predictor `kind` (a key of CHOICES) for `family` data, with its parameter
    `value` (its default when None)."""
    if kind not in CHOICES:
        raise AtlasError(f"unknown predictor {kind!r}; choose one of {', '.join(CHOICES)}")
    choice, base = CHOICES[kind], reference_model(family)
    v = choice.default if value is None else float(value)
    if choice.parameter is not None and not choice.low <= v <= choice.high:
        raise AtlasError(f"{choice.title}: {choice.parameter} must lie in [{choice.low:g}, {choice.high:g}], got {v:g}")
    if kind == "bayes":
        return base
    if kind == "biased":
        return Biased(base, v)
    if kind == "sharpened":
        return Sharpened(base, v)
    if kind == "forgetting":
        return replace(base, forget=v)
    return replace(base, alpha=v)
