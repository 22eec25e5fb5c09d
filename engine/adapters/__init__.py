"""Models trained elsewhere, brought in as read-only atlas runs.

    run = adapt("pythae", folder, runs_root, data={"name": "digits", "options": {}}, name="their-vae")

An adapter reads a saved model folder of another project (pythae, diffusers, openai/vdvae),
checks it, and converts it into an atlas family's config and state dict (`Converted`). The
run is then written by `engine.importing.import_run`, with every check an upload gets (sizes
on the "meta" device first, names, shapes, dtypes and finite values of every tensor, a
dataset this machine has), so a refused folder leaves the runs root as it was.

Nothing in a folder runs code: JSON is parsed as data, weights are safetensors or
`torch.load(weights_only=True)` of a plain dict of tensors, and a pickled module (pythae's
encoder.pkl for custom networks, for instance) is refused with what to do instead.

Layer 5 of the engine (beside importing, which it builds on, and the CLI, which calls it):
imports every layer below; nothing in the engine imports it but the CLI.
"""

from __future__ import annotations

import importlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine.errors import AtlasError
from engine.importing import import_run, json_object
from engine.models import FAMILIES, build_model, register_family
from engine.models.base import LatentModel
from engine.models.plugins import factory_family
from engine.store.checkpoints import parse_checkpoint, save_tensors
from engine.store.runs import Run, RunStore
from engine.training import RunSpec

ADAPTERS = {  # kind: (module, what it reads)
    "pythae": ("engine.adapters.pythae", "a saved pythae model folder (model_config.json and model.pt)"),
    "diffusers": ("engine.adapters.diffusers", "a diffusers AutoencoderKL folder (config.json and safetensors)"),
    "vdvae": ("engine.adapters.vdvae", "an openai/vdvae checkpoint (model.th or model-ema.th) and its hparams"),
}
MAX_JSON_BYTES = 1024 * 1024
MAX_WEIGHT_BYTES = 4 * 2**30  # a local folder the user names: larger than an upload, still bounded


@dataclass
class Converted:
    """What an adapter makes of a folder: an atlas family, its config (with `input_shape`),
    the model's state dict under the atlas names, and a line saying where it came from."""

    family: str
    model: dict
    weights: dict[str, torch.Tensor]
    source: str
    notes: list[str] = field(default_factory=list)


def adapter(kind: str):
    """The module of an adapter kind; it has `convert(folder, **options) -> Converted`."""
    if kind not in ADAPTERS:
        raise AtlasError(f"no adapter for {kind!r}; the adapters are {', '.join(ADAPTERS)}")
    return importlib.import_module(ADAPTERS[kind][0])


def adapt(
    kind: str,
    folder: str | Path,
    runs_root: str | Path,
    data: dict,
    name: str = "",
    **options,
) -> Run:
    """Convert the model in `folder` with the adapter `kind` and add it to `runs_root` as a
    finished run explored on the dataset `data` ({"name": ..., "options": {...}})."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AtlasError(f"{folder} is not a folder; name the folder the model was saved in")
    converted = adapter(kind).convert(folder, **options)
    check_data_shape(data, converted)
    config = {
        "family": converted.family,
        "model": converted.model,
        "data": data,
    }
    meta = {"atlas_meta": json.dumps({"step": 0, "adapted_from": converted.source, "notes": converted.notes})}
    checkpoint = save_tensors({f"model.{k}": v.contiguous() for k, v in converted.weights.items()}, metadata=meta)
    run = import_run(runs_root, json.dumps(config).encode(), checkpoint, name=name, max_bytes=MAX_WEIGHT_BYTES)
    run.set_status("finished", reason="; ".join([f"adapted from {converted.source}", *converted.notes]))
    return run


def add_model_run(family: str, runs_root: str | Path, data: dict, name: str = "") -> Run:
    """The run of a model object that a user's factory builds (`latent-atlas app --model
    package.module:factory`, registered as the family `family` by engine/models/plugins.py):
    the model is built, checked against the LatentModel interface on two examples of the
    dataset `data`, and its weights written as the checkpoint of a finished run, the same
    run again on the next start (its checkpoint is replaced), so that runs do not pile up."""
    if family not in FAMILIES:  # this process imported engine.models before the flag set LATENT_ATLAS_MODEL
        try:
            made = factory_family(family, FAMILIES)
        except Exception as err:  # noqa: BLE001 - the user's module: say what failed
            raise AtlasError(f"--model {family}: {err}") from err
        register_family(made.name, made.config_cls, made.model_cls, made.kind)
    spec = RunSpec.from_dict({"family": family, "model": {}, "data": data})
    test = spec.load_data("test")
    spec.model = {"input_shape": list(test.shape)}
    try:
        model = build_model(family, spec.model).eval()
    except AtlasError:
        raise
    except Exception as err:  # noqa: BLE001 - the user's factory failed: say so, do not crash the CLI
        raise AtlasError(f"{family}() failed: {type(err).__name__}: {err}") from err
    if not isinstance(model, LatentModel):
        missing = [
            m for m in ("latent_groups", "encode", "decode", "sample", "elbo", "log_joint") if not hasattr(model, m)
        ]
        raise AtlasError(
            f"{family}() returned a {type(model).__name__}, which lacks {', '.join(missing)} of the LatentModel "
            "interface (engine/models/base.py)"
        )
    x = torch.as_tensor(test.x[:2]).float()
    try:
        with torch.no_grad():
            total = model.elbo(x).total
    except Exception as err:  # noqa: BLE001 - the user's code: say what failed, do not crash the CLI
        raise AtlasError(f"{family}: elbo() failed on two examples of {data.get('name')!r}: {err}") from err
    if tuple(total.shape) != (2,):
        raise AtlasError(f"{family}: elbo(x).total must hold one value per example, got shape {tuple(total.shape)}")
    weights = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    store = RunStore(runs_root)
    config = spec.to_dict()
    same = [
        r.id
        for r in store.list_runs()
        if r.status != "broken"
        and {k: store.open_run(r.id).config.get(k) for k in ("family", "data")}
        == {
            "family": family,
            "data": config["data"],
        }
    ]
    run = store.open_run(same[0]) if same else store.create_run(config, name_hint=name or "user-model")
    run.save_checkpoint(0, weights, {"step": 0, "factory": family})  # replaces the last start's, atomically
    run.set_status("finished", reason=f"built by {family}")
    return run


def check_data_shape(data: dict, converted: Converted) -> None:
    """The dataset the run is explored on must have the model's input shape."""
    spec = RunSpec.from_dict({"family": converted.family, "model": converted.model, "data": data})
    try:
        shape = tuple(spec.load_data("test").shape)
    except AtlasError as err:
        raise AtlasError(f"the dataset to explore the model on could not be loaded: {err}") from err
    want = tuple(converted.model["input_shape"])
    if shape != want:
        raise AtlasError(
            f"the model takes inputs of shape {list(want)}, and the dataset {data.get('name')!r} has examples of "
            f"shape {list(shape)}; choose a dataset of the model's shape (or upload one)"
        )


# -- reading other projects' files, bounded and without running code -----------------------------------


def read_json(path: Path, what: str, max_bytes: int = MAX_JSON_BYTES) -> dict:
    """A JSON object from `path` (at most `max_bytes`), or an AtlasError naming `what`."""
    if not path.is_file():
        raise AtlasError(f"{what} is missing: expected {path.name} in {path.parent}")
    size = path.stat().st_size
    if size > max_bytes:
        raise AtlasError(f"{what} ({path.name}) is {size / 2**20:.1f} MB; a config may be at most {max_bytes >> 20} MB")
    return json_object(path.read_bytes(), f"{what} ({path.name})")


def check_weight_file(path: Path, what: str) -> int:
    if not path.is_file():
        raise AtlasError(f"{what} is missing: expected {path.name} in {path.parent}")
    size = path.stat().st_size
    if size > MAX_WEIGHT_BYTES:
        raise AtlasError(f"{what} ({path.name}) is {size / 2**30:.1f} GB, above the {MAX_WEIGHT_BYTES >> 30} GB limit")
    return size


def read_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (which holds data only)."""
    check_weight_file(path, what)
    tensors, _ = parse_checkpoint(path.read_bytes(), path)
    return tensors


def read_torch_weights(path: Path, what: str, key: str | None = None) -> dict[str, torch.Tensor]:
    """A state dict saved with torch.save, opened with `weights_only=True` (no code runs: the
    unpickler takes tensors and plain containers only); `key` picks the state dict out of an
    outer dict (pythae's {"model_state_dict": ...}). Anything but names to tensors is refused."""
    check_weight_file(path, what)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except Exception as err:  # noqa: BLE001 - the unpickler's refusals come as several types
        raise AtlasError(
            f"{what} ({path.name}) could not be opened as plain weights: {(str(err).splitlines() or [type(err).__name__])[0][:300]}. "
            "Only tensors and plain containers are read (torch.load with weights_only=True); "
            "save the state dict itself, or convert it to safetensors"
        ) from err
    if key is not None:
        if not isinstance(loaded, dict) or key not in loaded:
            raise AtlasError(f"{what} ({path.name}) has no {key!r} entry; is it a {what}?")
        loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise AtlasError(f"{what} ({path.name}) is not a state dict (names to tensors)")
    return loaded


def check_tensors(
    tensors: dict[str, torch.Tensor],
    expected: dict[str, tuple[int, ...]],
    what: str,
    against: str = "its config",
    hint: str = "",
) -> None:
    """Every expected name present with its shape, nothing else, floating point and finite;
    `against` names what says so in the messages, `hint` ends a message about the names."""

    def some(names: list[str]) -> str:
        return ", ".join(names[:4]) + (" …" if len(names) > 4 else "")

    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise AtlasError(
            f"{what} does not match {against}: "
            + "; ".join(
                [
                    *([f"missing {some(missing)}"] if missing else []),
                    *([f"unexpected {some(unexpected)}"] if unexpected else []),
                ]
            )
            + (f"; {hint}" if hint else "")
        )
    for name, shape in expected.items():
        got = tensors[name]
        if tuple(got.shape) != tuple(shape):
            raise AtlasError(f"{what}: {name} has shape {tuple(got.shape)}, but {against} needs {tuple(shape)}")
        if not got.is_floating_point():
            raise AtlasError(f"{what}: {name} holds {got.dtype}, not floating-point weights")
        if not torch.isfinite(got).all():
            raise AtlasError(f"{what}: {name} contains NaN or infinite values; use another checkpoint")


def positive_int(config: dict, key: str, what: str, at_most: int = 1 << 16) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= at_most:
        raise AtlasError(f"{what}: {key!r} must be a whole number from 1 to {at_most}, got {value!r}")
    return value


def numel(shape) -> int:
    return math.prod(int(s) for s in shape)
