"""Choosing where tensors live: CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

import random

import numpy as np
import torch

from engine.errors import AtlasError


def pick_device(preference: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; any other value must be available."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(preference)
    except RuntimeError as err:
        raise AtlasError(f"unknown device {preference!r}; use auto, cpu, cuda, cuda:N or mps") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AtlasError("device 'cuda' was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise AtlasError("device 'mps' was asked for but MPS is not available; use --device cpu or auto")
    return device


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
