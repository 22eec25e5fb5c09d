"""IDX files, the format of MNIST and Fashion-MNIST, read header first.

An IDX file is a 4-byte magic number 0x000008nn (unsigned bytes, nn dimensions), nn sizes
as big-endian uint32, then the values in row-major order; it is often gzipped (it then
starts with 1f 8b). The header is checked (the magic, the sizes a caller expects, a ceiling
on their product) before anything is set aside for the values, which are then read in
chunks: a header claiming 10^9 images is refused at once, and a file holding less than its
header claims costs only what it holds.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from engine.errors import AtlasError

IMAGES_MAGIC = 0x00000803  # 2051: unsigned bytes, 3 dimensions (N, H, W)
LABELS_MAGIC = 0x00000801  # 2049: unsigned bytes, 1 dimension (N,)
MAX_VALUES = 1 << 30  # 1 GiB of pixels (4 GiB as float32); MNIST's training images are 47 million
GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1 << 22  # bytes read at a time


def read_idx(
    path: Path, magic: int, what: str, expected: tuple[int | None, ...] | None = None, name: str | None = None
) -> np.ndarray:
    """The uint8 array in an IDX file (gzipped or not) whose magic must equal `magic`.

    what:     "images" or "labels", for the messages
    expected: the sizes the header must give, None where any size will do
    name:     how the messages call the file (default its name)
    """
    name = name or path.name
    try:
        raw = path.open("rb")
    except OSError as err:
        raise AtlasError(f"{name}: cannot be read ({err.strerror}); check the file and its permissions.") from err
    with raw:
        zipped = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if zipped else raw
        try:
            return _parse(stream, magic, what, expected, name)
        except (gzip.BadGzipFile, EOFError, zlib.error) as err:
            raise AtlasError(
                f"{name}: the gzip data is damaged or truncated ({err}); download the file again."
            ) from err


def _parse(stream: BinaryIO, magic: int, what: str, expected: tuple[int | None, ...] | None, name: str) -> np.ndarray:
    start = stream.read(4)
    if len(start) < 4:
        raise AtlasError(
            f"{name}: {len(start)} bytes is too short for an IDX file (the header alone is at least 8 bytes)."
        )
    found = struct.unpack(">I", start)[0]
    if found != magic:
        raise AtlasError(
            f"{name}: expected an IDX {what} file (magic 0x{magic:08X}) but the "
            f"file starts with 0x{found:08X}. Give the MNIST-style {what} file "
            "(e.g. train-images-idx3-ubyte.gz for images, train-labels-idx1-ubyte.gz "
            "for labels)."
        )
    ndim = magic & 0xFF
    sizes = stream.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise AtlasError(
            f"{name}: the file is truncated inside its IDX header ({4 + len(sizes)} of {4 + 4 * ndim} bytes)."
        )
    dims = struct.unpack(f">{ndim}I", sizes)
    shown = " x ".join(f"{d:,}" for d in dims)
    if expected is not None and any(e is not None and d != e for d, e in zip(dims, expected)):
        wanted = " x ".join("any" if e is None else f"{e:,}" for e in expected)
        raise AtlasError(f"{name}: its header says {shown} {what} but {wanted} were expected; get the file again.")
    need = math.prod(dims)
    if need == 0:
        raise AtlasError(f"{name}: the IDX header says {shown}: no data.")
    if need > MAX_VALUES:
        raise AtlasError(
            f"{name}: its header claims {shown} = {need:,} values, more than the {MAX_VALUES:,} an IDX file "
            "may hold here; the file is damaged or not an IDX file."
        )
    data = bytearray()
    while len(data) < need and (chunk := stream.read(min(CHUNK, need - len(data)))):
        data += chunk
    if len(data) < need:
        raise AtlasError(
            f"{name}: the file is truncated: its header promises {shown} = {need:,} values but it holds "
            f"{len(data):,} bytes of data. Download the file again."
        )
    if stream.read(1):
        raise AtlasError(
            f"{name}: the file has extra bytes at the end: its header promises {shown} = {need:,} values "
            "but more bytes follow them. Download the file again."
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def unit_images(images: np.ndarray) -> torch.Tensor:
    """IDX images (N, H, W) uint8 -> (N, 1, H, W) float32 in [0, 1]."""
    return torch.from_numpy(images).unsqueeze(1).float().div_(255.0)
