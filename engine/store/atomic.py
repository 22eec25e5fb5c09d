"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Each write goes to a temporary file in the target's directory, is flushed to disk
(fsync) and then renamed over the target with os.replace. If anything fails the
temporary file is removed and the old target is left as it was.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from engine.errors import AtlasError

FILE_MODE = 0o644
CHUNK = 1 << 20


def atomic_write_bytes(path: str | os.PathLike, data: bytes, replace: bool = True) -> None:
    """Write `data` to `path` atomically (temp file + fsync + os.replace). With
    replace=False an existing file is kept and FileExistsError raised (a hard link
    puts the new file in place only where no file is)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            _write_all(fd, memoryview(data))
            if hasattr(os, "fchmod"):
                os.fchmod(fd, FILE_MODE)
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            os.unlink(tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike, obj: object) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise AtlasError(
            f"Cannot save {Path(path).name}: {e}. Use only numbers, strings, booleans, lists and dicts."
        ) from e
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def _write_all(fd: int, data: memoryview) -> None:
    """os.write until every byte is written (os.write may write less than asked)."""
    while data:
        n = os.write(fd, data[:CHUNK])
        data = data[n:]


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable; skipped where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
