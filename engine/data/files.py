"""Datasets from files a user brings: IDX (MNIST, Fashion-MNIST), NPZ arrays, CSV tables
and folders of PNG/JPEG images.

Each loader reads the whole file (split "all"; the registry splits it) and only reads:
input files are never written. Anything wrong with a file raises AtlasError naming the
file, what was expected and what was found.

Images come out as x (N, C, H, W) float32; tables as x (N, D) float32 with a schema in
which categorical columns hold integer codes, and meta["missing_mask"] (N, D) True where
a value was missing (those entries of x are 0). NaN or inf in image data is an error.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from engine.data.base import ColumnSpec, Dataset, LabelColumn
from engine.data.idx import IMAGES_MAGIC, LABELS_MAGIC, MAX_VALUES, read_idx, unit_images
from engine.data.images import resize
from engine.data.limits import (
    MAX_COLUMNS,
    MAX_IMAGE_FILES,
    MAX_IMAGE_PIXELS,
    check_csv_shape,
    check_zip_directory,
    npy_header,
)
from engine.data.tabular import table
from engine.errors import AtlasError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_CATEGORIES = 50  # a text column with more distinct values is not treated as categories
FEW_INTS = 10  # an integer column with at most this many distinct values is categorical
MAX_LABEL_CLASSES = 50  # integer labels with more distinct values are continuous


def _file(path: str | Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise AtlasError(f"{what} {str(path)!r} does not exist; check the path.")
    if not path.is_file():
        raise AtlasError(f"{what} {str(path)!r} is not a file; give the path of a file.")
    return path


# ---- IDX ---------------------------------------------------------------------------


def load_idx(images_path: str | Path, labels_path: str | Path | None = None) -> Dataset:
    """MNIST-style IDX images (gzipped or not) -> x (N, 1, H, W) in [0, 1].

    With `labels_path`, the label column "label" holds the class of each image.
    """
    images_file = _file(images_path, "IDX images file")
    images = read_idx(images_file, IMAGES_MAGIC, "images")  # (N, H, W) uint8
    labels = {}
    meta = {"path": str(images_file)}
    if labels_path is not None:
        labels_file = _file(labels_path, "IDX labels file")
        y = read_idx(labels_file, LABELS_MAGIC, "labels")  # (N,)
        if len(y) != len(images):
            raise AtlasError(
                f"{labels_file.name} holds {len(y):,} labels but {images_file.name} "
                f"holds {len(images):,} images; give the labels file that belongs "
                "to these images."
            )
        labels["label"] = to_label_column("label", y, labels_file.name)
        meta["labels_path"] = str(labels_file)
    x = unit_images(images)
    return Dataset(
        name=images_file.name,
        split="all",
        x=x,
        labels=labels,
        shape=tuple(x.shape[1:]),
        value_range=(0.0, 1.0),
        meta=meta,
    )


# ---- labels --------------------------------------------------------------------------


def to_label_column(name: str, values: np.ndarray, source: str) -> LabelColumn:
    """A label column from a 1-D array: text, booleans and integers with few distinct
    values become categories (named by their values); other numbers stay continuous."""
    values = np.asarray(values)
    if values.dtype.kind in "US":
        return _categorical_label(name, values)
    if values.dtype.kind not in "biuf":
        raise AtlasError(f"{source}: labels {name!r} have unsupported type {values.dtype}; use numbers or text.")
    numbers = values.astype(np.float64)
    if not np.isfinite(numbers).all():
        raise AtlasError(
            f"{source}: labels {name!r} contain missing, NaN or infinite values; every example needs a label."
        )
    if np.all(numbers == np.round(numbers)) and len(np.unique(numbers)) <= MAX_LABEL_CLASSES:
        return _categorical_label(name, numbers.astype(np.int64))
    return LabelColumn(name, torch.from_numpy(numbers.astype(np.float32)))


def _categorical_label(name: str, values: np.ndarray) -> LabelColumn:
    categories, codes = np.unique(values, return_inverse=True)
    return LabelColumn(
        name, torch.from_numpy(codes.astype(np.int64).reshape(-1)), [str(c) for c in categories.tolist()]
    )


# ---- NPZ -----------------------------------------------------------------------------


def load_npz(path: str | Path) -> Dataset:
    """An .npz archive (np.savez) with array `x` and optional labels `y` (N,).

    x (N, D) is a table; x (N, H, W), (N, C, H, W) or (N, H, W, C) with C in {1, 3} are
    images. Integer images are divided by 255. The arrays' headers are checked first
    (limits.npy_header: no Python objects, bounded sizes); they are read with allow_pickle=False.
    """
    path = _file(path, "NPZ file")
    with path.open("rb") as f:
        start = f.read(4)
    if start not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise AtlasError(
            f"{path.name}: not an NPZ archive (a zip file written by numpy.savez). "
            "Save your arrays with numpy.savez(path, x=..., y=...)."
        )
    try:
        with path.open("rb") as f:
            check_zip_directory(f, path.name)
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            if "x" not in keys:
                raise AtlasError(
                    f"{path.name}: the archive has no array named 'x' (it has "
                    f"{', '.join(map(repr, keys)) or 'no arrays'}). Save the examples "
                    "as x, e.g. numpy.savez(path, x=images, y=labels)."
                )
            _check_npz_headers(archive, path.name)
            x = archive["x"]
            y = archive["y"] if "y" in keys else None
    except ValueError as err:
        raise AtlasError(
            f"{path.name}: an array in the archive is damaged ({err}); write it again with numpy.savez."
        ) from err
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error, KeyError) as err:
        raise AtlasError(
            f"{path.name}: the archive is damaged or truncated ({err}); write it again with numpy.savez."
        ) from err

    labels = {}
    if y is not None:
        labels["label"] = to_label_column("label", y, path.name)
    meta = {"path": str(path), "ignored_keys": [k for k in keys if k not in ("x", "y")]}
    if x.ndim == 2:
        return _npz_table(path, x, labels, meta)
    return _npz_images(path, x, labels, meta)


def _check_npz_headers(archive, name: str) -> None:
    """x's and y's shapes and dtypes, read from their headers (npy_header) and checked before
    np.load sets aside memory for them: a header may claim any size."""
    x_shape, x_dtype = _npy_member_header(archive, "x", name)
    if x_dtype.kind not in "biuf":
        raise AtlasError(f"{name}: x has type {x_dtype}; expected numbers (ints or floats).")
    if len(x_shape) not in (2, 3, 4):
        raise AtlasError(
            f"{name}: x has shape {x_shape}; expected (N, D) for a table or "
            "(N, H, W), (N, C, H, W) or (N, H, W, C) for images."
        )
    if 0 in x_shape:
        raise AtlasError(f"{name}: x has shape {x_shape}, which holds no values.")
    if len(x_shape) == 2 and x_shape[1] > MAX_COLUMNS:
        raise AtlasError(f"{name}: the table x has {x_shape[1]:,} columns; at most {MAX_COLUMNS:,} are supported.")
    if "y" in archive.files:
        y_shape, _ = _npy_member_header(archive, "y", name)
        if y_shape != x_shape[:1]:
            raise AtlasError(f"{name}: y has shape {y_shape}; expected ({x_shape[0]},), one label per example of x.")


def _npy_member_header(archive, key: str, name: str) -> tuple[tuple[int, ...], np.dtype]:
    member = key if key in archive.zip.namelist() else f"{key}.npy"  # as np.load looks it up
    with archive.zip.open(member) as fp:
        return npy_header(fp, key, name)


def _npz_table(path: Path, x: np.ndarray, labels: dict, meta: dict) -> Dataset:
    values = x.astype(np.float64)
    if np.isinf(values).any():
        raise AtlasError(
            f"{path.name}: x contains infinite values; replace them by NaN (missing) or by finite numbers."
        )
    columns = [_numeric_column(f"x{j}", values[:, j], path.name) for j in range(values.shape[1])]
    return _table_from_columns(path.name, columns, labels, meta)


def _npz_images(path: Path, x: np.ndarray, labels: dict, meta: dict) -> Dataset:
    if x.ndim == 3:
        x = x[:, None]  # (N, 1, H, W)
    elif x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = np.transpose(x, (0, 3, 1, 2))  # (N, H, W, C) -> (N, C, H, W)
    if x.shape[1] not in (1, 3):
        raise AtlasError(
            f"{path.name}: image array has shape {x.shape}; expected 1 or 3 channels as (N, C, H, W) or (N, H, W, C)."
        )
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise AtlasError(
            f"{path.name}: the images contain NaN or infinite values; images must "
            "be complete. Fix or drop those images."
        )
    if x.dtype.kind in "iu":
        if x.min() < 0 or x.max() > 255:
            raise AtlasError(
                f"{path.name}: integer images must hold values 0..255; found "
                f"{x.min()}..{x.max()}. Save them as uint8 or as floats in [0, 1]."
            )
        images = torch.from_numpy(x.astype(np.float32) / 255.0)
    else:
        images = torch.from_numpy(x.astype(np.float32))
    low, high = float(images.min()), float(images.max())
    value_range = (0.0, 1.0) if low >= 0.0 and high <= 1.0 else (low, high)
    return Dataset(
        name=path.name,
        split="all",
        x=images.contiguous(),
        labels=labels,
        shape=tuple(images.shape[1:]),
        value_range=value_range,
        meta=meta,
    )


# ---- tables --------------------------------------------------------------------------


def _numeric_column(name: str, values: np.ndarray, source: str) -> tuple[np.ndarray, ColumnSpec]:
    """Column kind of numbers with NaN for missing: binary if only 0/1, categorical if at
    most FEW_INTS distinct integers, each seen twice on average (coded 0..K-1), positive if
    all > 0, else real."""
    observed = values[~np.isnan(values)]
    if len(observed) == 0:
        raise AtlasError(f"{source}: column {name!r} has no values at all; remove it.")
    distinct = np.unique(observed)
    if np.isin(distinct, (0.0, 1.0)).all():
        return values, ColumnSpec(name, "binary")
    few = len(distinct) <= min(FEW_INTS, len(observed) // 2)  # values repeat: codes, not amounts
    if few and np.all(distinct == np.round(distinct)):
        codes = np.where(np.isnan(values), np.nan, np.searchsorted(distinct, values))
        return codes, ColumnSpec(name, "categorical", [str(int(v)) for v in distinct])
    return values, ColumnSpec(name, "positive" if distinct[0] > 0 else "real")


def _text_column(name: str, values: list, source: str) -> tuple[np.ndarray, ColumnSpec]:
    """A column of text (None/NaN for missing) as categorical codes."""
    present = sorted({str(v) for v in values if not _is_missing(v)})
    if not present:
        raise AtlasError(f"{source}: column {name!r} has no values at all; remove it.")
    if len(present) > MAX_CATEGORIES:
        raise AtlasError(
            f"{source}: column {name!r} holds {len(present)} different texts (e.g. "
            f"{present[0]!r}); a text column is read as categories, at most "
            f"{MAX_CATEGORIES}. Remove the column or pass it as label_column."
        )
    code = {c: i for i, c in enumerate(present)}
    codes = np.array([np.nan if _is_missing(v) else code[str(v)] for v in values], dtype=np.float64)
    return codes, ColumnSpec(name, "categorical", present)


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _table_from_columns(name: str, columns: list[tuple[np.ndarray, ColumnSpec]], labels: dict, meta: dict) -> Dataset:
    x = torch.from_numpy(np.stack([values for values, _ in columns], axis=1).astype(np.float32))
    return table(name, x, [spec for _, spec in columns], labels, meta=meta)


def load_csv(path: str | Path, label_column: str | list[str] | None = None) -> Dataset:
    """A CSV table with a header row -> x (N, D) with inferred column kinds.

    Text columns are categorical; number columns binary (only 0/1), categorical (at most
    10 distinct integers, repeated), positive (all > 0) or real. Empty cells are missing.
    `label_column` (one name or a list) is kept out of x and becomes label columns.
    At most MAX_COLUMNS columns, lines of MAX_CSV_LINE_BYTES and MAX_CSV_CELLS rows x columns,
    checked (limits.check_csv_shape) before pandas reads the file.
    """
    path = _file(path, "CSV file")
    check_csv_shape(path)
    import pandas as pd  # after the check: a refused file costs no pandas import

    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError as err:
        raise AtlasError(
            f"{path.name}: the file is empty; a CSV needs a header row and at least one row of values."
        ) from err
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise AtlasError(
            f"{path.name}: could not be read as CSV ({err}). Check that it is a "
            "comma-separated text file with the same number of fields per "
            "row."
        ) from err
    if len(frame) == 0:
        raise AtlasError(f"{path.name}: the table has a header but no rows of values.")
    if label_column is None:
        wanted = []
    else:
        wanted = [label_column] if isinstance(label_column, str) else list(label_column)
    absent = [c for c in wanted if c not in frame.columns]
    if absent:
        raise AtlasError(
            f"{path.name}: no column named {', '.join(map(repr, absent))}; the columns "
            f"are {', '.join(map(repr, map(str, frame.columns)))}."
        )
    labels = {}
    for name in wanted:
        column = frame[name]
        if column.isna().any():
            raise AtlasError(f"{path.name}: label column {name!r} has empty cells; every row needs a label.")
        numeric = pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)
        values = column.to_numpy() if numeric else np.array([str(v) for v in column])
        labels[name] = to_label_column(name, values, path.name)
    features = frame.drop(columns=wanted)
    if features.shape[1] == 0:
        raise AtlasError(f"{path.name}: no columns are left besides the label columns.")
    columns = [_frame_column(str(name), features[name], path.name) for name in features.columns]
    return _table_from_columns(path.name, columns, labels, {"path": str(path)})


def _frame_column(name: str, column, source: str) -> tuple[np.ndarray, ColumnSpec]:
    import pandas as pd

    if pd.api.types.is_bool_dtype(column):
        return column.to_numpy(dtype=np.float64), ColumnSpec(name, "binary")
    if pd.api.types.is_numeric_dtype(column):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isinf(values).any():
            raise AtlasError(
                f"{source}: column {name!r} contains infinite values; replace them "
                "by finite numbers or leave the cells empty (missing)."
            )
        return _numeric_column(name, values, source)
    numbers = pd.to_numeric(column, errors="coerce")
    text = column[numbers.isna() & column.notna()]
    if text.empty:  # numbers stored as text, e.g. booleans with empty cells
        return _numeric_column(name, numbers.to_numpy(dtype=np.float64, na_value=np.nan), source)
    if numbers.notna().sum() > len(text):
        raise AtlasError(
            f"{source}: column {name!r} mixes numbers with text such as "
            f"{str(text.iloc[0])!r}; leave missing values as empty cells (or NA)."
        )
    return _text_column(name, column.tolist(), source)


# ---- folders of images -----------------------------------------------------------------

GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L")  # PIL modes decoded as one channel


def _image_files(folder: Path, found: int = 0) -> list[Path]:
    """The PNG/JPEG files in `folder`, by name; listing stops with an error past MAX_IMAGE_FILES
    (counting the `found` ones listed before)."""
    files = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") or Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if entry.is_file():
                files.append(folder / entry.name)
            if found + len(files) > MAX_IMAGE_FILES:
                raise AtlasError(
                    f"{folder.name}: more than {MAX_IMAGE_FILES:,} images; a folder may hold at most "
                    f"{MAX_IMAGE_FILES:,}. Use a sample of them."
                )
    return sorted(files)


def _check_size(size) -> tuple[int, int] | None:
    """size: None, an int (square) or (height, width) -> (height, width)."""
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 1024 for s in pair)
    ):
        raise AtlasError(f"option size must be an int or (height, width) with sides from 1 to 1024; got {size!r}.")
    return int(pair[0]), int(pair[1])


@contextmanager
def _opened_image(source, name: str, max_side: int | None):
    """A PNG or JPEG opened by PIL, which reads its header only: its size is checked (at most
    MAX_IMAGE_PIXELS, and `max_side` a side) before anything decodes its pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source, formats=("PNG", "JPEG")) as img:  # no other decoder (EPS would run Ghostscript)
            width, height = img.size
            if max_side is not None and max(width, height) > max_side:
                raise AtlasError(
                    f"{name}: the image is {width}x{height} pixels; images may be at most {max_side} pixels on a side."
                )
            if width * height > MAX_IMAGE_PIXELS:
                raise AtlasError(
                    f"{name}: the image is {width:,}x{height:,} pixels; an image may have at most "
                    f"{MAX_IMAGE_PIXELS:,} pixels. Use a smaller image."
                )
            yield img
    except UnidentifiedImageError as err:  # its message repeats the file object's repr
        raise AtlasError(f"{name}: not a readable PNG or JPEG image. Remove or replace the file.") from err
    except Image.DecompressionBombError as err:  # PIL's own ceiling, met before ours can look
        raise AtlasError(
            f"{name}: the image is too large ({err}); an image may have at most {MAX_IMAGE_PIXELS:,} pixels. "
            "Use a smaller image."
        ) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise AtlasError(f"{name}: not a readable PNG or JPEG image ({err}). Remove or replace the file.") from err


def image_header(source, name: str, max_side: int | None = None) -> tuple[int, int, int]:
    """(height, width, channels) of a PNG or JPEG as decode_image would return it, from its
    header alone (the size checks of decode_image included)."""
    with _opened_image(source, name, max_side) as img:
        return img.size[1], img.size[0], 1 if img.mode in GRAY_MODES else 3


def decode_image(source, name: str, max_side: int | None = None) -> np.ndarray:
    """A PNG or JPEG (a path or a binary file object) as (H, W) gray or (H, W, 3) RGB
    float32 in [0, 1]; an image of more than MAX_IMAGE_PIXELS pixels, or with `max_side`
    a longer side, is refused before it is decoded."""
    with _opened_image(source, name, max_side) as img:
        img.load()
        if img.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grayscale
            return np.asarray(img, dtype=np.float32) / 65535.0
        if img.mode in ("1", "L", "LA"):
            return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An (H, W) or (H, W, 3) float image resized to (height, width)."""
    t = torch.from_numpy(image)
    t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]  # (1, C, H, W)
    t = resize(t, size)[0]
    return (t[0] if image.ndim == 2 else t.permute(1, 2, 0)).numpy()


def load_image_folder(path: str | Path, size: int | tuple[int, int] | None = None) -> Dataset:
    """A folder of PNG/JPEG images -> x (N, C, H, W) in [0, 1].

    Images may lie in the folder itself or in one level of subfolders, whose names become
    the classes of the label column "label". All images must share one size unless `size`
    (an int or (height, width)) is given, then each is resized to it. Gray images stay
    one channel when all are gray; otherwise all become RGB (alpha is dropped).
    Every image's header is read first: at most MAX_IMAGE_FILES images of MAX_IMAGE_PIXELS
    each, and MAX_VALUES values in x, are checked before any image is decoded.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise AtlasError(f"{str(root)!r} is not a folder; give a folder of PNG or JPEG images.")
    target = _check_size(size)
    loose = _image_files(root)
    classes: dict[Path, list[Path]] = {}
    for folder in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        inside = _image_files(folder, len(loose) + sum(map(len, classes.values())))
        if inside:
            classes[folder] = inside
    if loose and classes:
        raise AtlasError(
            f"{root.name}: images lie both in the folder and in subfolders "
            f"({', '.join(d.name for d in classes)}). Put every image in a class "
            "subfolder, or all of them directly in the folder."
        )
    files = loose or [f for inside in classes.values() for f in inside]
    if not files:
        raise AtlasError(f"{root.name}: no .png, .jpg or .jpeg files in the folder or its subfolders.")

    headers = [image_header(f, str(f.relative_to(root))) for f in files]  # (height, width, channels)
    if target is None:
        sizes = {}
        for f, (h, w, _) in zip(files, headers):
            sizes.setdefault((h, w), []).append(f)
        if len(sizes) > 1:
            found = "; ".join(
                f"{h}x{w}: {len(fs)} (e.g. {fs[0].relative_to(root)})"
                for (h, w), fs in sorted(sizes.items(), key=lambda kv: -len(kv[1]))
            )
            raise AtlasError(
                f"{root.name}: the images have different sizes ({found}). Pass size=... to resize them all to one size."
            )
    height, width = target or headers[0][:2]
    channels = max(c for *_, c in headers)
    values = len(files) * channels * height * width
    if values > MAX_VALUES:
        raise AtlasError(
            f"{root.name}: {len(files):,} images of {channels} x {height} x {width} are {values:,} values; at most "
            f"{MAX_VALUES:,} are supported. Use fewer images, or pass a smaller size=..."
        )
    images = [decode_image(f, str(f.relative_to(root))) for f in files]
    if target is not None:
        images = [_resize(image, target) for image in images]
    rgb = channels == 3
    if rgb:
        images = [np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image for image in images]
    x = np.stack(images)  # (N, H, W) or (N, H, W, 3)
    x = torch.from_numpy(x).permute(0, 3, 1, 2) if rgb else torch.from_numpy(x)[:, None]
    labels = {}
    if classes:
        names = np.array([f.parent.name for f in files])
        labels["label"] = _categorical_label("label", names)
    return Dataset(
        name=root.name,
        split="all",
        x=x.contiguous(),
        labels=labels,
        shape=tuple(x.shape[1:]),
        value_range=(0.0, 1.0),
        meta={"path": str(root), "files": [str(f.relative_to(root)) for f in files]},
    )
