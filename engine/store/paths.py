"""Safe names for runs and files: nothing a user types can point outside the runs root."""

from __future__ import annotations

import re
from pathlib import Path

from engine.errors import AtlasError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_NAME_LEN = 200


def check_name(name: object, what: str = "name") -> str:
    """Return `name` if it is a plain ASCII file name, else raise AtlasError."""
    if not isinstance(name, str) or len(name) > MAX_NAME_LEN or ".." in name or not NAME_RE.fullmatch(name):
        raise AtlasError(
            f"Invalid {what} {name!r}: use only letters, digits, '.', '_' and '-', "
            f"start with a letter or digit, no '..' and no '/' (at most {MAX_NAME_LEN} characters)."
        )
    return name


def child_path(root: Path, name: str, what: str = "name") -> Path:
    """`root / name` after checking the name and that the result stays inside `root`."""
    path = Path(root) / check_name(name, what)
    if not path.resolve().is_relative_to(Path(root).resolve()):
        raise AtlasError(f"The {what} {name!r} points outside {root}; pick a name inside it.")
    return path
