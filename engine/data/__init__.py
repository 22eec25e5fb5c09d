"""The dataset registry: embedded datasets and files a user brings, by name.

    load_dataset("digits", split="test", seed=1, size=16)
    load_dataset("fashion-mnist", split="test")          # the official 10,000 test images
    load_dataset("shapes", n=500_000)                  # rendered lazily
    load_dataset("file:/data/train-images-idx3-ubyte.gz")
    load_dataset("csv", path="/data/table.csv", label_column="species")

Registered datasets (`list_datasets()`) need no download, except `fashion-mnist`, whose files
come from Debian's package dataset-fashion-mnist or `latent-atlas data fetch fashion-mnist`
(engine/data/fashion_mnist.py says where they are looked for). Files are named either as
"file:<path>" (the format follows from the path: a folder of images, .npz, .csv, or an
IDX file such as *-idx3-ubyte[.gz], whose *-labels-idx1-ubyte[.gz] sibling is used when
present) or by format (`list_file_formats()`) with the option `path`.

Every dataset is split deterministically from `seed`: "train" and "test" are disjoint
(test holds about `test_fraction`, default 0.2, of the examples; stratified by class where
there is one) and "all" is their union. Files are split the same way. `fashion-mnist` keeps its
published split (60,000 train, 10,000 test) whatever the seed.

Layer 1 of the engine (with `engine.sequence`, which it may import): imports only the
bottom modules (errors, numerics, images, device) and `engine.sequence`; never models or above.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.data import (
    digit_domains,
    digits,
    exchangeable,
    facet_digits,
    fashion_mnist,
    files,
    patches,
    shapes,
    styled_digits,
    swatches,
    tabular,
)
from engine.data.base import ColumnSpec, Dataset, LabelColumn, LazyTensor
from engine.data.checks import check_fraction, check_seed, check_split
from engine.data.groups import GROUP_OPTIONS, with_group_order
from engine.data.label_regimes import LABEL_REGIME_OPTIONS, with_label_regime
from engine.data.split import split_indices, subset
from engine.data.tabular import missing_mask
from engine.errors import AtlasError

__all__ = [
    "ColumnSpec",
    "Dataset",
    "DatasetInfo",
    "LabelColumn",
    "LazyTensor",
    "dataset_info",
    "list_datasets",
    "list_file_formats",
    "load_dataset",
    "missing_mask",
]

FILE_PREFIX = "file:"


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is and which options it takes: option name -> (default, help).
    kind: what its examples are, as `Dataset.kind` ("image", "tabular" or "sequence"), or
    None for a file format that holds either images or a table (npz)."""

    name: str
    description: str
    options: dict[str, tuple[Any, str]]
    kind: str | None


@dataclass(frozen=True)
class _Entry:
    load: Callable[..., Dataset]
    description: str
    help: dict[str, str]  # option name -> help text
    kind: str | None = "image"  # DatasetInfo.kind


_SPLIT = {"test_fraction": "share of the examples in the test split, in (0, 1)"}
_MISSING = {
    "missing_rate": "share of the table's values hidden at random (MCAR), in [0, 1)",
    "missing_as_nan": "missing values as NaN instead of 0 (for models that read the mask "
    "from their input, e.g. hhvaem)",
}
_LABEL = {"label_as_column": "append the label as the last column (a target column to predict)"}
_PATH = {"path": "the file or folder to load (required)"}

_DATASETS = {
    "digits": _Entry(
        digits.load,
        "scikit-learn's 1,797 real 8x8 handwritten digits, gray, in [0, 1].",
        {"size": "image side: 8, 16, 28 or 32 (bilinear resize)", **_SPLIT},
    ),
    "facet-digits": _Entry(
        facet_digits.load,
        "The real digits in colour with three known facets: digit, stroke and background colour.",
        {"n": "number of images over train + test", "size": "image side: 8, 16, 28 or 32", **_SPLIT},
    ),
    "shapes": _Entry(
        shapes.load,
        "dSprites-like shapes with six known factors (shape, scale, rotation, x, y, colour), rendered on demand.",
        {
            "n": "number of images over train + test (up to 10 million)",
            "size": "image side: 32 or 64",
            "fix": "factors held at one value, comma separated (e.g. 'x,y': centred objects)",
            "shape": "keep one shape kind: square, ellipse, heart or triangle (empty: all four)",
            "grey": "one channel, the shape's coverage, instead of RGB colour",
            **_SPLIT,
        },
    ),
    "wine": _Entry(
        tabular.load_wine,
        "scikit-learn's wine table: 178 wines, 13 positive measurements, 3 classes.",
        {**_SPLIT, **_MISSING, **_LABEL},
        kind="tabular",
    ),
    "diabetes": _Entry(
        tabular.load_diabetes,
        "scikit-learn's diabetes table in original units: 442 patients, 10 variables, continuous target.",
        {**_SPLIT, **_MISSING, **_LABEL},
        kind="tabular",
    ),
    "mixed": _Entry(
        tabular.load_mixed,
        "Synthetic mixed-type table (real, positive, binary, categorical columns) from 3 known latent factors.",
        {"n": "number of rows over train + test", **_SPLIT, **_MISSING},
        kind="tabular",
    ),
    "exchangeable": _Entry(
        exchangeable.load,
        "Exchangeable sequences: theta from a prior, then i.i.d. observations (Bernoulli with "
        "theta ~ Beta(1, 1), or N(theta, 1) with theta ~ N(0, 1)); for in-context learners.",
        {
            "family": "bernoulli or gaussian",
            "n": "number of sequences over train + test",
            "length": "observations per sequence",
            **_SPLIT,
        },
        kind="sequence",
    ),
    "digits-domains": _Entry(
        digit_domains.load,
        "The real 8x8 digits in two domains, half of the images inverted (1 - x); label 'domain' says which. "
        "For UG-VAE's domain alignment (group_by='domains').",
        {"size": "image side: 8, 16, 28 or 32 (bilinear resize)", **_SPLIT},
    ),
    "styled-digits": _Entry(
        styled_digits.load,
        "The real digits with a second known factor that is not a colour: rotation (4 angles), stroke "
        "thickness (3 levels) or a striped background texture (4 patterns); grey, for multi-facet clustering.",
        {
            "style": "the second factor: rotation, thickness or texture",
            "n": "number of images over train + test",
            "size": "image side: 16 or 32",
            **_SPLIT,
        },
    ),
    "patches": _Entry(
        patches.load,
        "Grey patches of scikit-learn's two sample photographs (china, flower), ZCA-whitened and "
        "standardised per patch (seed003 §2.6); train and test from disjoint image regions, cut on demand.",
        {
            "n": "number of patches over train + test (up to 1 million)",
            "size": "patch side in pixels, 4 to 64 (20 as in the thesis, 12 for quick runs)",
            **_SPLIT,
        },
    ),
    "textures": _Entry(
        patches.load_textures,
        "Five procedural texture families (gratings, sticks, dead-leaves discs, checks, bubbles), "
        "label 'family', whitened and standardised as patches; rendered on demand.",
        {
            "n": "number of textures over train + test (up to 1 million)",
            "size": "patch side in pixels, 4 to 64 (20 as in the thesis, 12 for quick runs)",
            **_SPLIT,
        },
    ),
    "swatches": _Entry(
        swatches.load,
        "Nine uniform colour swatches, one colour per image (seed001 §3.5's toy data).",
        {"n": "number of images over train + test", "size": "image side: 8, 16 or 32", **_SPLIT},
    ),
    "fashion-mnist": _Entry(
        fashion_mnist.load,
        "Zalando's Fashion-MNIST: 70,000 real 28x28 grey photos of clothes in 10 classes, in [0, 1]; "
        "the official split, 60,000 train and 10,000 test. Files: apt-get install dataset-fashion-mnist, "
        "or latent-atlas data fetch fashion-mnist.",
        {
            "path": "folder holding the four IDX files (default: $LATENT_ATLAS_FASHION_MNIST, else "
            "/usr/share/datasets/fashion-mnist, else ~/.cache/latent-atlas/fashion-mnist)"
        },
    ),
}

_FORMATS = {
    "idx": _Entry(
        files.load_idx,
        "MNIST / Fashion-MNIST IDX images, gzipped or not, with optional labels.",
        {**_PATH, "labels_path": "the IDX labels file (optional)", **_SPLIT},
    ),
    "npz": _Entry(
        files.load_npz,
        "NumPy .npz archive with array x (images or a table) and optional labels y.",
        {**_PATH, **_SPLIT},
        kind=None,
    ),
    "csv": _Entry(
        files.load_csv,
        "CSV table with a header row; column kinds are inferred, empty cells are missing.",
        {**_PATH, "label_column": "column name (or list of names) kept out of x as labels", **_SPLIT},
        kind="tabular",
    ),
    "image-folder": _Entry(
        files.load_image_folder,
        "Folder of PNG/JPEG images; subfolders name the classes.",
        {**_PATH, "size": "resize every image to this side, or to (height, width)", **_SPLIT},
    ),
}


def list_datasets() -> list[str]:
    """Names of the registered datasets (no file needed; fashion-mnist reads installed or fetched files)."""
    return list(_DATASETS)


def list_file_formats() -> list[str]:
    """Names of the file formats, loaded with load_dataset(format, path=...)."""
    return list(_FORMATS)


def _entry(name: str) -> _Entry:
    if not isinstance(name, str) or name not in {**_DATASETS, **_FORMATS}:
        raise AtlasError(
            f"unknown dataset {name!r}. Known datasets: {', '.join(_DATASETS)}; "
            f"file formats: {', '.join(_FORMATS)} (with path=...), or 'file:<path>'."
        )
    return _DATASETS.get(name) or _FORMATS[name]


def _defaults(name: str, entry: _Entry) -> dict[str, Any]:
    """Option name -> default, from the loader's signature."""
    params = inspect.signature(entry.load).parameters.values()
    if name in _FORMATS:
        _, *rest = params  # the first parameter is the path
        defaults = {"path": None, **{p.name: p.default for p in rest}}
        return {**defaults, "test_fraction": 0.2}
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def dataset_info(name: str) -> DatasetInfo:
    """Description, options (name -> (default, help)) and kind of a dataset or file format."""
    entry = _entry(name)
    defaults = _defaults(name, entry)
    options = {opt: (default, entry.help.get(opt, "")) for opt, default in defaults.items()}
    if entry.kind != "sequence":
        options.update(LABEL_REGIME_OPTIONS)
        options.update(GROUP_OPTIONS)
    return DatasetInfo(name, entry.description, options, entry.kind)


def load_dataset(name: str, split: str = "train", seed: int = 0, **options) -> Dataset:
    """The `split` ("train", "test" or "all") of a dataset, fixed by `seed`.

    name: an embedded dataset (list_datasets()), a file format (list_file_formats(), with
    path=...) or "file:<path>". Options are those of dataset_info(name), and for any dataset
    with a categorical label the label regime of semi-(un)supervised training (LABEL_REGIME_OPTIONS):
    the training split then records which of its labels a model may see (engine.data.label_regimes).
    The group options (GROUP_OPTIONS) set the order of groups a grouped model (UG-VAE) trains on:
    the training split records it in meta["group_order"] (engine.data.groups).
    """
    split, seed = check_split(split), check_seed(seed)
    regime = {opt: options.pop(opt) for opt in LABEL_REGIME_OPTIONS if opt in options}
    grouping = {opt: options.pop(opt) for opt in GROUP_OPTIONS if opt in options}
    data = _load(name, split, seed, options)
    data = with_label_regime(data, seed=seed, **regime) if regime else data
    return with_group_order(data, **grouping) if grouping else data


def _load(name: str, split: str, seed: int, options: dict) -> Dataset:
    if isinstance(name, str) and name.startswith(FILE_PREFIX):
        path = name[len(FILE_PREFIX) :]
        path = path[2:] if path.startswith("///") else path
        if "path" in options:
            raise AtlasError(f"give the path once: either {name!r} or path=..., not both.")
        name, options = _format_of(Path(path)), {"path": path, **options}
        if name == "idx" and "labels_path" not in options:
            options["labels_path"] = _idx_labels_sibling(Path(path))
    entry = _entry(name)
    known = _defaults(name, entry)
    unknown = [opt for opt in options if opt not in known]
    if unknown:
        known.update({opt: default for opt, (default, _) in {**LABEL_REGIME_OPTIONS, **GROUP_OPTIONS}.items()})
        shown = ", ".join(f"{opt} (default {default!r})" for opt, default in known.items())
        raise AtlasError(f"dataset {name!r} has no option {', '.join(map(repr, unknown))}; its options are: {shown}.")
    if name in _DATASETS:
        return entry.load(split, seed, **options)

    path = options.pop("path", None)
    if path is None:
        raise AtlasError(f"file format {name!r} needs path=... (the file or folder to load).")
    test_fraction = check_fraction("test_fraction", options.pop("test_fraction", 0.2))
    data = entry.load(path, **options)
    stratify = next((col.values for col in data.labels.values() if col.is_categorical), None)
    return subset(data, split_indices(len(data), split, seed, test_fraction, stratify), split)


def _format_of(path: Path) -> str:
    """The file format a path names: folder, .npz, .csv or IDX (*idx*/*ubyte*, maybe .gz)."""
    if path.is_dir():
        return "image-folder"
    stem = path.name.lower().removesuffix(".gz")
    if stem.endswith(".npz"):
        return "npz"
    if stem.endswith(".csv"):
        return "csv"
    if "idx" in stem or stem.endswith("ubyte"):
        return "idx"
    if not path.exists():
        raise AtlasError(f"{str(path)!r} does not exist; check the path.")
    raise AtlasError(
        f"cannot tell the format of {path.name!r}: expected a folder of images, a "
        ".npz, a .csv, or an IDX file (name containing 'idx' or ending in 'ubyte', "
        "maybe .gz). Or name the format: load_dataset(format, path=...) with one of "
        f"{', '.join(_FORMATS)}."
    )


def _idx_labels_sibling(images: Path) -> str | None:
    """MNIST naming: x-images-idx3-ubyte[.gz] -> x-labels-idx1-ubyte[.gz] when it exists."""
    if "images-idx3" not in images.name:
        return None
    base = images.name.replace("images-idx3", "labels-idx1").removesuffix(".gz")
    for candidate in (images.with_name(base), images.with_name(base + ".gz")):
        if candidate.is_file():
            return str(candidate)
    return None
