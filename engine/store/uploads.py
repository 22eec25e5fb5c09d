"""Datasets uploaded through the dashboard: checked in full, then saved under the runs root.

    saved = save_dataset(runs_root, "my-digits", data, "digits.npz")
    load_dataset(saved.dataset)                      # "file:<runs root>/.data/my-digits.npz"

An upload is one of
- an NPZ archive (numpy.savez) with x and optional labels y, kept as it came;
- a CSV table with a header row, kept as it came;
- a zip of PNG/JPEG images, loose or in one folder per class, stored as an NPZ of uint8
  images (N, H, W) or (N, H, W, 3) with the class names as y.

Nothing is written unless every check passes: the byte limit, the format (the file's
content must be what its name says), the parse (the same loaders training uses, so
pickled arrays are refused), at least one row, no NaN or infinite values (a table's
missing values only when asked), images of one size of at most MAX_IMAGE_SIDE pixels a
side with values in [0, 1] or 0..255, and a plain file name that stays in the runs root.
Then the file is written atomically, never over another unless asked.

What a file's size lets it cost is bounded before that cost is paid (engine/data/limits.py):
a CSV's columns, line length and rows x columns before pandas parses it; an NPZ's arrays
from their headers before numpy loads them; a zip's number of members from its directory
before zipfile lists them, each member's size (declared, then while it is read) and each
image's pixels from its header before it is decoded.
"""

from __future__ import annotations

import io
import re
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from engine.data.base import Dataset
from engine.data.files import decode_image, image_header, load_csv, load_npz
from engine.data.limits import check_zip_directory
from engine.errors import AtlasError
from engine.limits import MAX_UPLOAD_BYTES
from engine.store.atomic import atomic_write_bytes
from engine.store.paths import check_name, child_path

DATA_DIR = ".data"  # under the runs root; hidden, so the run list skips it
MAX_UNPACKED_BYTES = 512 * 1024 * 1024  # an NPZ's arrays or a zip's images, decompressed
MAX_IMAGE_SIDE = 1024
MAX_IMAGE_FILE_BYTES = 32 << 20  # one image in a zip, unpacked: a 1024 x 1024 RGBA PNG is at most 4 MB
MAX_ABS_VALUE = 1e9  # a table value beyond this is almost surely an error (and overflows float32 maths)
UPLOAD_FORMATS = {".npz": "NPZ archive", ".csv": "CSV table", ".zip": "zip of PNG/JPEG images"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SKIPPED_MEMBERS = ("__MACOSX/", ".DS_Store", "Thumbs.db")
# Presets that train on any dataset of a kind (their model takes its input shape from the data).
TRAIN_PRESETS = {"image": ("digits-vae", "digits-tcvae", "facet-digits-vae"), "tabular": ("mixed-vae",)}


@dataclass(frozen=True)
class SavedDataset:
    """An uploaded dataset as saved: where, and what it holds."""

    path: Path
    kind: str  # "image" or "tabular"
    n: int
    shape: tuple[int, ...]  # of one example
    classes: list[str]  # label categories, if the data has class labels
    missing: int  # missing table values

    @property
    def dataset(self) -> str:
        """The name to train on: `latent-atlas train --dataset <this>`."""
        return f"file:{self.path}"

    def train_command(self, runs_root: str | Path) -> str:
        preset = TRAIN_PRESETS[self.kind][0]
        return f"latent-atlas --runs-dir {runs_root} train --preset {preset} --dataset {self.dataset}"


def save_dataset(
    runs_root: str | Path,
    name: str,
    data: bytes,
    upload_name: str,
    *,
    overwrite: bool = False,
    allow_missing: bool = False,
    max_bytes: int = MAX_UPLOAD_BYTES,
) -> SavedDataset:
    """Check an uploaded file (its bytes `data`; `upload_name` is the name it came with and
    says its format) and save it as `<runs_root>/.data/<name>.npz|.csv`."""
    name = check_name(name, "dataset name")
    suffix = PurePosixPath(str(upload_name)).suffix.lower()
    if suffix not in UPLOAD_FORMATS:
        raise AtlasError(
            f"{upload_name!r} is not a format Latent Atlas reads; upload "
            + ", ".join(f"a {what} ({s})" for s, what in UPLOAD_FORMATS.items())
            + "."
        )
    check_upload_size(data, upload_name, max_bytes)
    stored = _image_zip_as_npz(data, upload_name) if suffix == ".zip" else data
    suffix = ".npz" if suffix == ".zip" else suffix
    dataset = _read_file(stored, upload_name, suffix)
    missing = _check_values(dataset, upload_name, allow_missing)
    target = child_path(Path(runs_root) / DATA_DIR, name + suffix, "dataset name")
    if target.exists() and not overwrite:
        raise AtlasError(f"a dataset named {target.name} exists already; pick another name, or ask to replace it.")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, stored, replace=overwrite)
    except FileExistsError:
        raise AtlasError(
            f"a dataset named {target.name} was saved by someone else a moment ago; pick another name."
        ) from None
    except OSError as err:
        raise AtlasError(f"could not save {target.name} ({err}); nothing was kept.") from err
    label = next(iter(dataset.labels.values()), None)
    return SavedDataset(
        target,
        "tabular" if dataset.kind == "tabular" else "image",
        len(dataset),
        tuple(dataset.shape),
        list(label.categories or []) if label else [],
        missing,
    )


def saved_datasets(runs_root: str | Path) -> list[Path]:
    """The datasets saved under the runs root, by name."""
    folder = Path(runs_root) / DATA_DIR
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix in (".npz", ".csv") and not p.name.startswith(".")
    )


def check_upload_size(data: bytes, what: str, max_bytes: int) -> None:
    if len(data) == 0:
        raise AtlasError(f"{what!r} is empty (0 bytes).")
    if len(data) > max_bytes:
        raise AtlasError(
            f"{what!r} is {describe_bytes(len(data))}, more than the limit of "
            f"{describe_bytes(max_bytes)} for an upload."
        )


def describe_bytes(n: int) -> str:
    return f"{n / 2**20:,.1f} MB" if n >= 2**20 else f"{n:,} bytes"


def _read_file(data: bytes, upload_name: str, suffix: str) -> Dataset:
    """An NPZ or CSV upload, parsed by the loader training uses, from a private temp file."""
    is_zip = data[:4] in (b"PK\x03\x04", b"PK\x05\x06")
    if suffix == ".npz" and not is_zip:
        raise AtlasError(f"{upload_name!r} is named .npz but is not an NPZ archive (a zip written by numpy.savez).")
    if suffix == ".csv" and (is_zip or b"\x00" in data[:65536]):
        raise AtlasError(f"{upload_name!r} is named .csv but holds binary data, not comma-separated text.")
    if suffix == ".npz":
        _check_unpacked_size(_zip_members(data, upload_name), upload_name)
    with tempfile.TemporaryDirectory(prefix="atlas-upload-") as tmp:
        path = Path(tmp) / f"{suggest_name(upload_name)}{suffix}"  # the loaders' messages name this file
        path.write_bytes(data)
        try:
            return load_npz(path) if suffix == ".npz" else load_csv(path)
        except MemoryError:  # an array header that promises more than the data holds
            raise AtlasError(
                f"{upload_name!r} declares arrays too large to load; save it again with numpy.savez."
            ) from None


def _check_values(dataset: Dataset, what: str, allow_missing: bool) -> int:
    """Raise unless the examples are usable for training; returns the missing table values."""
    if len(dataset) == 0:
        raise AtlasError(f"{what!r} holds no examples (zero rows).")
    x = dataset.x
    if dataset.kind != "tabular":
        _, _, h, w = x.shape
        if max(h, w) > MAX_IMAGE_SIDE:
            raise AtlasError(
                f"{what!r}: the images are {h}x{w}; images may be at most {MAX_IMAGE_SIDE} pixels on a side."
            )
        low, high = dataset.value_range
        if low < 0.0 or high > 1.0:
            raise AtlasError(
                f"{what!r}: image values run from {low:g} to {high:g}; save images as floats "
                "in [0, 1] or as integers 0..255."
            )
        return 0
    mask = dataset.meta["missing_mask"]
    missing = int(mask.sum())
    if missing and not allow_missing:
        row, col = (int(i) for i in mask.nonzero()[0])
        raise AtlasError(
            f"{what!r} has {missing:,} missing or NaN values (the first in row {row + 1}, column "
            f"{dataset.schema[col].name!r}); fill them in, or allow missing values to keep them "
            "as missing."
        )
    biggest = float(x.abs().max())
    if biggest > MAX_ABS_VALUE:
        raise AtlasError(
            f"{what!r} holds a value of magnitude {biggest:.3g}, beyond the limit of "
            f"{MAX_ABS_VALUE:.0e}; rescale the column."
        )
    return missing


def _image_zip_as_npz(data: bytes, upload_name: str) -> bytes:
    """A zip of PNG/JPEG images, loose or one folder per class (inside at most one top
    folder), decoded in memory (nothing is extracted) into NPZ bytes: x uint8 (N, H, W) or
    (N, H, W, 3), and the class names as y."""
    members = [m for m in _zip_members(data, upload_name) if not m.is_dir() and not _skipped(m.filename)]
    archive = zipfile.ZipFile(io.BytesIO(data))  # readable: _zip_members opened it
    if not members:
        raise AtlasError(f"{upload_name!r} holds no images; zip .png, .jpg or .jpeg files, one folder per class.")
    _check_unpacked_size(members, upload_name)
    paths = [_member_parts(m.filename, upload_name) for m in members]
    if len({p[0] for p in paths}) == 1 and all(len(p) > 1 for p in paths):
        paths = [p[1:] for p in paths]  # one top folder, as zipping a folder makes
    depths = {len(p) for p in paths}
    if len(depths) > 1 or depths - {1, 2}:
        raise AtlasError(
            f"{upload_name!r}: put every image in a class folder (class/image.png), or all of them "
            "at the top; found images at several depths."
        )
    for member, parts in zip(members, paths):
        if not parts[-1].lower().endswith(IMAGE_SUFFIXES):
            raise AtlasError(f"{upload_name!r}: {member.filename!r} is not a .png, .jpg or .jpeg file; remove it.")
    images, pixels = [], 0
    for member in members:
        content = io.BytesIO(_read_member(archive, member, upload_name))
        height, width, channels = image_header(content, member.filename, max_side=MAX_IMAGE_SIDE)
        pixels += height * width * channels  # bytes of the image as stored (uint8)
        if pixels > MAX_UNPACKED_BYTES:
            raise AtlasError(
                f"{upload_name!r}: the images hold more than {describe_bytes(MAX_UNPACKED_BYTES)} "
                "of pixels; upload fewer or smaller images."
            )
        image = decode_image(content, member.filename, max_side=MAX_IMAGE_SIDE)
        images.append(np.rint(image * 255).astype(np.uint8))
    sizes: dict[tuple[int, int], list[str]] = {}
    for member, image in zip(members, images):
        sizes.setdefault(image.shape[:2], []).append(member.filename)
    if len(sizes) > 1:
        found = "; ".join(
            f"{h}x{w}: {len(names)} (e.g. {names[0]!r})"
            for (h, w), names in sorted(sizes.items(), key=lambda kv: -len(kv[1]))
        )
        raise AtlasError(f"{upload_name!r}: the images have different sizes ({found}); resize them to one size.")
    if any(image.ndim == 3 for image in images):  # any colour image: all become RGB
        images = [np.repeat(im[:, :, None], 3, axis=2) if im.ndim == 2 else im for im in images]
    arrays = {"x": np.stack(images)}
    if depths == {2}:
        arrays["y"] = np.array([parts[0] for parts in paths])
    out = io.BytesIO()
    np.savez_compressed(out, **arrays)
    return out.getvalue()


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, upload_name: str) -> bytes:
    """A member's bytes, at most MAX_IMAGE_FILE_BYTES by the size the directory declares, and
    read no further: asked for that many bytes, zipfile inflates no more (read() with no size
    would inflate all it reads in one go), then checks the CRC, so a member holding more than
    its directory entry says fails at the cost of what it said."""
    if member.file_size > MAX_IMAGE_FILE_BYTES:
        raise AtlasError(
            f"{upload_name!r}: {member.filename!r} unpacks to {describe_bytes(member.file_size)}; an image "
            f"file may be at most {describe_bytes(MAX_IMAGE_FILE_BYTES)}."
        )
    try:
        with archive.open(member) as f:
            return f.read(member.file_size)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError, zlib.error) as err:
        raise AtlasError(f"{upload_name!r}: {member.filename!r} cannot be unpacked ({err}).") from err


def _zip_members(data: bytes, upload_name: str) -> list[zipfile.ZipInfo]:
    """The members of a zip, listed by zipfile once check_zip_directory has bounded their number."""
    check_zip_directory(io.BytesIO(data), repr(upload_name))
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise AtlasError(f"{upload_name!r} is not a readable zip archive ({err}).") from err


def _check_unpacked_size(members: list[zipfile.ZipInfo], upload_name: str) -> None:
    """Refuse a zip bomb from the sizes its directory declares, before anything is unpacked
    (reading a member stops at its declared size)."""
    unpacked = sum(m.file_size for m in members)
    if unpacked > MAX_UNPACKED_BYTES:
        raise AtlasError(
            f"{upload_name!r} unpacks to {describe_bytes(unpacked)}, more than the limit of "
            f"{describe_bytes(MAX_UNPACKED_BYTES)}."
        )


def _skipped(filename: str) -> bool:
    """Files that archivers add on their own (macOS resource forks, folder thumbnails)."""
    name = filename.rsplit("/", 1)[-1]
    return filename.startswith(SKIPPED_MEMBERS[0]) or name in SKIPPED_MEMBERS[1:] or name.startswith("._")


def _member_parts(filename: str, upload_name: str) -> tuple[str, ...]:
    """The parts of a member's path; absolute paths, drive letters and '..' are refused."""
    path = PurePosixPath(filename.replace("\\", "/"))
    parts = tuple(p for p in path.parts if p not in ("", "."))
    if path.is_absolute() or ".." in parts or any(":" in p or "\x00" in p for p in parts):
        raise AtlasError(
            f"{upload_name!r}: the member {filename!r} points outside the archive; zip relative paths only."
        )
    if not parts:
        raise AtlasError(f"{upload_name!r}: the archive has a member without a name.")
    return parts


def suggest_name(upload_name: str) -> str:
    """A dataset name made from an upload's file name: its stem in letters, digits, '.', '_', '-'."""
    stem = PurePosixPath(str(upload_name).replace("\\", "/")).stem
    name = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "-", stem)).strip("-._")[:100]
    return name or "dataset"
