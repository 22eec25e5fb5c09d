"""Flattening a training state into safetensors tensors + JSON meta, and back.

A checkpoint holds
    model.<name>        the weights
    ema.<name>          the exponential moving average of the weights, if kept
    optim.<i>.<key>     per-parameter optimiser tensors (Adam's moments, step)
    rng.cpu / rng.cuda  random-number-generator states, for exact resumption
and a JSON meta dict: step, counters, the optimiser's param_groups and its non-tensor
per-parameter state. Nothing in it can run code when loaded.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.errors import AtlasError


def pack_training_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    ema: dict[str, torch.Tensor] | None,
    meta: dict,
) -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {f"model.{k}": v.detach().cpu().clone() for k, v in model.state_dict().items()}
    meta = dict(meta)
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().clone() for k, v in ema.items()})
    if optimizer is not None:
        state = optimizer.state_dict()
        scalars: dict[str, dict] = {}
        for idx, per_param in state["state"].items():
            for key, value in per_param.items():
                if torch.is_tensor(value):
                    tensors[f"optim.{idx}.{key}"] = value.detach().cpu().clone()
                else:
                    scalars.setdefault(str(idx), {})[key] = value
        meta["optimizer"] = {"param_groups": state["param_groups"], "scalars": scalars}
        tensors["rng.cpu"] = torch.get_rng_state()
        if torch.cuda.is_available():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
    return tensors, meta


def restore_training_state(
    tensors: dict[str, torch.Tensor],
    meta: dict,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: dict[str, torch.Tensor] | None,
) -> None:
    load_weights(model, tensors, prefix="model.")
    if ema is not None:
        for k in ema:
            if f"ema.{k}" in tensors:
                ema[k].copy_(tensors[f"ema.{k}"])
    opt_meta = meta.get("optimizer")
    if opt_meta is None:
        raise AtlasError("this checkpoint has no optimiser state (a weights-only export) and cannot be resumed")
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, values in opt_meta["scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": opt_meta["param_groups"]})
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], prefix: str = "model.") -> None:
    """Copy `prefix`-named tensors into the model, checking names, shapes, dtypes and
    finiteness first so that a mismatched or damaged checkpoint is refused whole."""
    expected = model.state_dict()
    found = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise AtlasError(
            "checkpoint does not match the model in config.json: "
            + (f"missing {', '.join(missing[:5])} " if missing else "")
            + (f"unexpected {', '.join(unexpected[:5])}" if unexpected else "")
            + "; was it written by another model configuration?"
        )
    for name, want in expected.items():
        got = found[name]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise AtlasError(
                f"checkpoint tensor {prefix}{name} has shape {tuple(got.shape)} and dtype {got.dtype}, "
                f"but the model needs {tuple(want.shape)} and {want.dtype}; the checkpoint and config.json disagree"
            )
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise AtlasError(
                f"checkpoint tensor {prefix}{name} contains NaN or infinite values; use an earlier checkpoint"
            )
    model.load_state_dict(found)
