"""Diagnostics computed on trained models: plain functions on tensors.

Layer 3 of the engine (beside inference): imports models, data, sequence and the bottom
modules; never training, store or anything above.
"""
