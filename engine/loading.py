"""Loading a trained model from a run directory (config.json + safetensors)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.device import pick_device
from engine.errors import AtlasError
from engine.models import build_model
from engine.randomness import random_stream
from engine.store import Run
from engine.training import RunSpec
from engine.training.checkpointing import load_weights


@dataclass
class LoadedModel:
    model: nn.Module
    spec: RunSpec
    run: Run
    step: int
    weights: str  # "ema" or "model"


def load_run_model(
    run: Run, checkpoint: int | str = "latest", prefer_ema: bool = True, device: str = "cpu"
) -> LoadedModel:
    """Build the model named by the run's config.json and load a checkpoint into it.

    The EMA weights are used when the checkpoint has them (and prefer_ema). Any
    mismatch between config and checkpoint raises AtlasError; nothing is modified.
    """
    spec = run_spec(run.config)
    model = build_model(spec.family, spec.model)
    info = run.latest_checkpoint() if checkpoint == "latest" else None
    if checkpoint == "latest" and info is None:
        raise AtlasError(f"run {run.id} has no checkpoint yet; train it first or pick another run")
    step = info.step if info is not None else checkpoint
    tensors, meta = run.load_checkpoint(step)
    weights = "model"
    if prefer_ema and any(k.startswith("ema.") for k in tensors):
        tensors = {**tensors, **{"model." + k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}}
        weights = "ema"
    load_weights(model, tensors, prefix="model.")
    model.to(pick_device(device)).eval()
    return LoadedModel(model=model, spec=spec, run=run, step=int(meta.get("step", step)), weights=weights)


def run_spec(config: dict) -> RunSpec:
    """RunSpec.from_dict, with a config whose sections have the wrong JSON types (a
    hand-edited or hostile config.json) refused by AtlasError too."""
    try:
        return RunSpec.from_dict(config)
    except (TypeError, ValueError) as err:  # e.g. "model": 5
        raise AtlasError(
            f"config.json has a section of the wrong type ({err}); 'model', 'data' and 'train' are JSON objects"
        ) from err


@torch.no_grad()
def evaluate_bounds(
    model: nn.Module, data, k: int = 100, n: int = 500, batch_size: int = 100, seed: int = 0
) -> dict[str, float]:
    """Mean test ELBO and IWAE bound (nats per example) over the first n examples."""
    device = next(model.parameters()).device
    n = min(n, len(data))
    elbo, iwae = [], []
    with random_stream(seed, device):
        for start in range(0, n, batch_size):
            x = data.batch(torch.arange(start, min(start + batch_size, n))).to(device)
            elbo.append(model.elbo(x).total)
            iwae.append(model.elbo(x, k=k).total)
    return {"elbo": torch.cat(elbo).mean().item(), "iwae": torch.cat(iwae).mean().item(), "k": k, "n": n}
