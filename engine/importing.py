"""Importing a run trained elsewhere: its config.json and a safetensors checkpoint.

    run = import_run(runs_root, config_bytes, checkpoint_bytes, name="friends-vae")

Every check runs before anything is written, so a refused import leaves the runs root as
it was: the byte limits; config.json is UTF-8 JSON naming a known model family, with
settings the family accepts and sizes that fit in memory (checked on the "meta" device,
without allocating), a valid train section, and a dataset that is embedded or uploaded
under the runs root (so that a run cannot make the dashboard read a file elsewhere); the
checkpoint is safetensors (never a pickle) whose tensors have exactly the names, shapes
and dtypes of the model config.json builds, with finite values. The run is then written
with the weights only (model. and ema.; optimiser and RNG state are dropped), and
removed again if a write fails.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from engine.data import dataset_info, list_datasets, list_file_formats
from engine.errors import AtlasError
from engine.limits import MAX_UPLOAD_BYTES
from engine.loading import run_spec
from engine.models import build_model, check_model_size, config_from_dict
from engine.store.checkpoints import parse_checkpoint
from engine.store.paths import check_name
from engine.store.runs import Run, RunStore
from engine.store.uploads import DATA_DIR, check_upload_size
from engine.training import RunSpec
from engine.training.checkpointing import load_weights

MAX_CONFIG_BYTES = 1024 * 1024
WEIGHT_PREFIXES = ("model.", "ema.")
DROPPED_PREFIXES = ("optim.", "rng.")  # training state: an imported run is explored, not resumed
PICKLE_START, ZIP_START = b"\x80", b"PK\x03\x04"  # pickle protocol 2+, and torch.save's zip


def import_run(
    runs_root: str | Path,
    config: bytes,
    checkpoint: bytes,
    name: str = "",
    *,
    max_bytes: int = MAX_UPLOAD_BYTES,
) -> Run:
    """Check an uploaded config.json and checkpoint in full, then add them to the runs
    root as a new, finished run (its id ends in `name`, or in the model and dataset)."""
    if name:
        check_name(name, "run name")
    check_upload_size(config, "config.json", MAX_CONFIG_BYTES)
    check_upload_size(checkpoint, "the checkpoint", max_bytes)
    spec = parse_config(config, Path(runs_root))
    safetensors_like = checkpoint[8:9] == b"{"  # 8 bytes of header length, then the JSON header
    if not safetensors_like and (checkpoint[:1] == PICKLE_START or checkpoint[:4] == ZIP_START):
        raise AtlasError(
            "the checkpoint is a pickle or a torch.save file, which can run code when opened, so it "
            "is not opened; save the weights with safetensors (safetensors.torch.save_file)"
        )
    tensors, meta = parse_checkpoint(checkpoint, "(the uploaded file)")
    strangers = sorted(k for k in tensors if not k.startswith(WEIGHT_PREFIXES + DROPPED_PREFIXES))
    if strangers:
        raise AtlasError(
            f"the checkpoint holds tensors no Latent Atlas model has: {', '.join(strangers[:5])}; "
            "tensor names start with 'model.' (and 'ema.' for averaged weights)"
        )
    model = build_model(spec.family, spec.model)  # the sizes were checked before this allocates
    load_weights(model, tensors, prefix="model.")  # names, shapes, dtypes and finite values
    if any(k.startswith("ema.") for k in tensors):
        load_weights(model, tensors, prefix="ema.")
    step = meta.get("step", 0)
    step = step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else 0
    weights = {k: v for k, v in tensors.items() if k.startswith(WEIGHT_PREFIXES)}
    run = None
    try:
        run = RunStore(runs_root).create_run(spec.to_dict(), name_hint=name)
        kept = {k: meta[k] for k in ("adapted_from", "notes") if k in meta}  # what engine.adapters says it was
        run.save_checkpoint(step, weights, {"imported": True, **kept})
        run.set_status("finished", reason=f"imported at step {step}")
    except BaseException as err:
        if run is not None:
            shutil.rmtree(run.dir, ignore_errors=True)
        if isinstance(err, OSError):
            raise AtlasError(f"could not write the imported run ({err}); nothing was kept") from err
        raise
    return run


def parse_config(data: bytes, runs_root: Path) -> RunSpec:
    """A run's config.json, checked as import_run does (see the module docstring)."""
    spec = run_spec(json_object(data, "config.json"))
    if not isinstance(spec.family, str):
        raise AtlasError(f"config.json 'family' must be a model family's name, got {spec.family!r}")
    model_config = config_from_dict(spec.family, spec.model)
    check_model_size(spec.family, model_config)
    spec.model = model_config.to_dict()
    check_dataset(spec.data, runs_root)
    return spec


def json_object(data: bytes, what: str) -> dict:
    """The JSON object in `data` (UTF-8, a BOM allowed), or an AtlasError that names `what`."""
    try:
        value = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise AtlasError(f"{what} is not UTF-8 text ({err})") from err
    except (ValueError, RecursionError) as err:
        raise AtlasError(f"{what} is not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise AtlasError(f"{what} must hold a JSON object, not a {type(value).__name__}")
    return value


def check_dataset(data: dict, runs_root: Path) -> None:
    """An embedded dataset with options it takes, or a file uploaded under the runs root."""
    name, options = data["name"], data["options"]
    if not isinstance(name, str):
        raise AtlasError(f"config.json 'data.name' must be a dataset's name, got {name!r}")
    if name.startswith("file:"):
        paths = [name[len("file:") :], *(v for k, v in options.items() if k.endswith("path"))]
    elif name in list_file_formats():
        paths = [v for k, v in options.items() if k.endswith("path")]
    elif name in list_datasets():
        unknown = sorted(set(options) - set(dataset_info(name).options))
        if unknown:
            raise AtlasError(f"config.json: dataset {name!r} has no option {', '.join(map(repr, unknown))}")
        named = sorted(k for k in options if k.endswith("path"))
        if named:  # e.g. fashion-mnist's folder: this machine finds the files itself
            raise AtlasError(
                f"config.json names where the files of dataset {name!r} are ({', '.join(named)}); an imported run "
                "may not point the dashboard at a folder: remove the option and install the dataset here"
            )
        return
    else:
        raise AtlasError(
            f"config.json names the dataset {name!r}, which is neither embedded "
            f"({', '.join(list_datasets())}) nor a file"
        )
    allowed = (runs_root / DATA_DIR).resolve()
    for path in paths:
        if not isinstance(path, str) or "\x00" in path or not Path(path).resolve().is_relative_to(allowed):
            raise AtlasError(
                f"config.json's dataset reads {path!r}, outside the uploaded datasets in {allowed}; "
                f"upload the data first and point data.name at file:{runs_root / DATA_DIR}/<name>"
            )
