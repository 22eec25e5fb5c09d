"""Inference on trained models: HMC, importance sampling, attacks and imputation.

Layer 3 of the engine (beside diagnostics): imports models, data, sequence and the bottom
modules; never training, store or anything above.
"""
