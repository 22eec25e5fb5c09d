"""Checkpoints as safetensors files: tensors plus a JSON meta dict, never pickles.

A checkpoint is `<run>/checkpoints/ckpt-{step:08d}.safetensors`. The meta dict (step,
epoch, optimizer settings, config hash, ...) is stored as a JSON string under the
safetensors metadata key "atlas_meta". safetensors holds only raw tensor bytes and a
JSON header, so loading a checkpoint cannot run code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from engine.errors import AtlasError
from engine.store.atomic import atomic_write_bytes

META_KEY = "atlas_meta"
CKPT_RE = re.compile(r"ckpt-(\d{8,})\.safetensors")
HEADER_LEN_BYTES = 8
MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint file, found by name (its header is not read)."""

    step: int
    path: Path
    size: int


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:08d}.safetensors"


def list_checkpoints(directory: Path) -> list[CheckpointInfo]:
    """Checkpoints in `directory`, sorted by step; temp files and strangers ignored."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = CKPT_RE.fullmatch(path.name)
        if match and path.is_file():
            found.append(CheckpointInfo(int(match.group(1)), path, path.stat().st_size))
    return sorted(found, key=lambda c: c.step)


def write_checkpoint(directory: Path, step: int, tensors: dict[str, torch.Tensor], meta: dict) -> CheckpointInfo:
    """Save `tensors` (moved to contiguous CPU copies) and `meta` atomically."""
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise AtlasError(f"Checkpoint step must be an integer >= 0, got {step!r}.")
    meta = {**meta, "step": step}
    try:
        meta_json = json.dumps(meta, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise AtlasError(f"Checkpoint meta must be JSON-serialisable: {e}.") from e
    data = save_tensors(_prepare(tensors), metadata={META_KEY: meta_json})
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / checkpoint_name(step)
    atomic_write_bytes(path, data)
    return CheckpointInfo(step, path, len(data))


def read_checkpoint(path: Path, device: str | torch.device = "cpu") -> tuple[dict, dict]:
    """Load (tensors, meta) from a safetensors file; AtlasError if missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise AtlasError(f"No checkpoint file at {path}.")
    tensors, meta = parse_checkpoint(path.read_bytes(), path)
    if torch.device(device).type != "cpu":
        tensors = {name: t.to(device) for name, t in tensors.items()}
    return tensors, meta


def parse_checkpoint(data: bytes, source: str | Path) -> tuple[dict, dict]:
    """(tensors, meta) from the bytes of a safetensors file; `source` names it in errors."""
    try:
        tensors = load_tensors(data)
    except Exception as e:  # safetensors raises its own error type for any bad header
        raise AtlasError(f"Checkpoint {source} is corrupt or not a safetensors file ({e}).") from e
    return tensors, _parse_meta(source, _header(data, source).get("__metadata__") or {})


def read_checkpoint_meta(path: Path) -> dict:
    """Only the meta dict, from the file's header (cheap: tensor bytes are not read)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(HEADER_LEN_BYTES)
            n = int.from_bytes(head, "little") if len(head) == HEADER_LEN_BYTES else -1
            header = f.read(n) if 0 < n <= MAX_HEADER_BYTES else b""
    except OSError as e:
        raise AtlasError(f"Cannot read checkpoint {path}: {e}.") from e
    return _parse_meta(path, _header(head + header, path).get("__metadata__") or {})


def prune_checkpoints(directory: Path, keep_last: int) -> None:
    """Delete all but the `keep_last` checkpoints with the highest steps."""
    if keep_last < 1:
        raise AtlasError(f"keep_last must be at least 1, got {keep_last}.")
    for info in list_checkpoints(directory)[:-keep_last]:
        info.path.unlink(missing_ok=True)


def _prepare(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors; a tensor sharing storage with an earlier one is cloned."""
    out, seen = {}, set()
    for name, t in tensors.items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor):
            raise AtlasError(
                f"Checkpoint tensors must be a dict of str -> torch.Tensor; "
                f"got {type(name).__name__} -> {type(t).__name__} for {name!r}."
            )
        t = t.detach().to("cpu").contiguous()
        storage = t.untyped_storage().data_ptr()
        if storage in seen:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def _header(data: bytes, path: str | Path) -> dict:
    try:
        n = int.from_bytes(data[:HEADER_LEN_BYTES], "little")
        header = json.loads(data[HEADER_LEN_BYTES : HEADER_LEN_BYTES + n])
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        return header
    except ValueError as e:
        raise AtlasError(f"Checkpoint {path} has a corrupt header ({e}).") from e


def _parse_meta(path: str | Path, metadata: dict) -> dict:
    if META_KEY not in metadata:
        return {}
    try:
        meta = json.loads(metadata[META_KEY])
        if not isinstance(meta, dict):
            raise ValueError("meta is not a JSON object")
        return meta
    except (TypeError, ValueError) as e:
        raise AtlasError(f"Checkpoint {path} has corrupt meta data ({e}).") from e
