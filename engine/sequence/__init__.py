"""Sequential predictors p_M(z_{t+1} | z_1..t) and their continuation paths, for the
martingale checks of seed000 ch. 5 (`engine.diagnostics.martingale`).

The protocol and an example of a user's own predictor: `engine.sequence.predictor`.

Layer 1 of the engine (beside `engine.data`, which imports it and which it never imports):
imports only the bottom modules (errors, numerics).
"""

from engine.sequence.conjugate import BetaBernoulli, BetaPosterior, ConjugateState, NormalNormal, NormalPosterior
from engine.sequence.controls import Biased, Sharpened
from engine.sequence.data import BernoulliData, GaussianData, quantize, sample_observations
from engine.sequence.paths import Paths, check_observed, sample_paths
from engine.sequence.predictor import (
    FAMILIES,
    BernoulliPredictive,
    GaussianPredictive,
    Predictive,
    SequentialPredictor,
)

__all__ = [
    "FAMILIES",
    "BernoulliData",
    "BernoulliPredictive",
    "BetaBernoulli",
    "BetaPosterior",
    "Biased",
    "ConjugateState",
    "GaussianData",
    "GaussianPredictive",
    "NormalNormal",
    "NormalPosterior",
    "Paths",
    "Predictive",
    "SequentialPredictor",
    "Sharpened",
    "check_observed",
    "quantize",
    "sample_observations",
    "sample_paths",
]
