"""Downloading a file whose MD5 sum is published: into a temporary file beside the target,
checked, then renamed over the target, so that the target is either absent or whole and right.

Only `latent-atlas data fetch` downloads; nothing does at import, listing or loading.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from engine.errors import AtlasError

CHUNK = 1 << 20  # bytes read at a time
TIMEOUT_S = 60  # for connecting and for each read


def md5_of(path: Path) -> str:
    """The MD5 sum of a file, as 32 hex digits."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_checked(url: str, target: Path, md5: str, max_bytes: int) -> None:
    """Download `url` to `target` when its MD5 sum is `md5`; else leave nothing behind and raise.

    A response of more than `max_bytes` is cut off and refused.
    """
    if urlsplit(url).scheme not in ("http", "https"):
        raise AtlasError(f"{url!r} is not an http:// or https:// address; give the base URL of the files.")
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".part", delete=False) as f:
        part = Path(f.name)
    try:
        with part.open("wb") as out:
            digest = hashlib.md5(usedforsecurity=False)
            for chunk in _chunks(url, max_bytes):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        found = digest.hexdigest()
        if found != md5.lower():
            raise AtlasError(
                f"{target.name}: the download from {url} has MD5 {found} but the published checksum is {md5}; "
                "the file was deleted. Run the command again; if it fails again the server holds another file."
            )
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)


def _chunks(url: str, max_bytes: int) -> Iterator[bytes]:
    """The body of `url`, chunk by chunk, with network failures as AtlasError."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            yield from _bounded(response, url, max_bytes)
    except urllib.error.HTTPError as err:
        raise AtlasError(
            f"downloading {url} failed: the server answered HTTP {err.code} ({err.reason}). "
            "Check the address (--url), or get the files another way."
        ) from err
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise AtlasError(
            f"downloading {url} failed ({reason}); check the network connection and the address (--url)."
        ) from err


def _bounded(response: BinaryIO, url: str, max_bytes: int) -> Iterator[bytes]:
    size = 0
    while chunk := response.read(CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise AtlasError(f"{url} sends more than {max_bytes:,} bytes, far more than the file it should be.")
        yield chunk
