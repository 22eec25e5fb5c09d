"""Diagnostics computed on trained models: plain functions on tensors."""
