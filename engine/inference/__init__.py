"""Inference on trained models: importance sampling (and, later, HMC and attacks)."""
