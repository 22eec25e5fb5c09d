"""`fashion-mnist`: Zalando's 70,000 28×28 grey photos of clothes in ten classes (Xiao,
Rasul & Vollgraf 2017), in the official split: 60,000 train, 10,000 test.

The four IDX files of the dataset's README (gzipped or not) are looked for, in this order:
  1. the folder given as the option path=..., else the one in $LATENT_ATLAS_FASHION_MNIST
     (a folder the user names must hold the files: it is never passed over);
  2. /usr/share/datasets/fashion-mnist, where Debian's package dataset-fashion-mnist puts them;
  3. the user's cache, $XDG_CACHE_HOME/latent-atlas/fashion-mnist (by default
     ~/.cache/latent-atlas/fashion-mnist), where `latent-atlas data fetch fashion-mnist` puts them.
Whatever their source, the files are checked as they are read (magic numbers, 60,000 / 10,000
images of 28×28, one label in 0..9 per image): Debian recompresses them, so their MD5 sums are
not the published ones. The decoded arrays are kept per process. Only fetch() downloads.

When no folder was named and neither 2. nor 3. holds the files, the test split falls back to
the first test images shipped in assets/data (SUBSET_FILE, made by scripts/fashion_test_subset.py),
so that the demo model's pages work on a machine without the dataset; that Dataset's meta says
so ("shipped_subset": its number of images). The train split, and a folder the user named,
have no fallback.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from engine.data.base import Dataset, LabelColumn
from engine.data.checks import check_seed, check_split
from engine.data.download import download_checked, md5_of
from engine.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx, unit_images
from engine.errors import AtlasError

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SIDE = 28
SIZES = {"train": 60_000, "test": 10_000}
PREFIX = {"train": "train", "test": "t10k"}  # the files' names for each split
FILES = [f"{PREFIX[split]}-{kind}-ubyte.gz" for split in SIZES for kind in ("images-idx3", "labels-idx1")]

ENV_VAR = "LATENT_ATLAS_FASHION_MNIST"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")

# The download links and MD5 sums published in the dataset's README, "Get the Data"
# (github.com/zalandoresearch/fashion-mnist/blob/master/README.md).
BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
MAX_DOWNLOAD_BYTES = 64 << 20  # the largest file is 26 MB
# The first test images and their labels as uint8 arrays `images` (n, 28, 28) and `labels` (n,).
SUBSET_FILE = Path(__file__).resolve().parents[2] / "assets" / "data" / "fashion-mnist-test-subset.npz"


def cache_folder() -> Path:
    """Where `fetch` puts the files by default: $XDG_CACHE_HOME (when absolute) or ~/.cache."""
    cache_home = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(cache_home) if os.path.isabs(cache_home) else Path.home() / ".cache"
    return root / "latent-atlas" / "fashion-mnist"


def _named_folder(path: str | Path | None) -> tuple[Path, str] | None:
    """The folder the user named (path=..., else the environment variable) and how it was named."""
    if path is not None:
        return Path(path).expanduser(), "path=..."
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser(), f"${ENV_VAR}"
    return None


def _file(folder: Path, name: str) -> Path | None:
    """`name` (gzipped) in `folder`, or the same file uncompressed; None when neither is there."""
    return next((f for f in (folder / name, folder / name.removesuffix(".gz")) if f.is_file()), None)


def _missing(folder: Path) -> list[str]:
    return [name for name in FILES if _file(folder, name) is None]


def how_to_get() -> str:
    return (
        f"Get them one of these ways: install Debian's package (apt-get install {DEBIAN_PACKAGE}, which puts "
        f"them in {DEBIAN_FOLDER}); or run `latent-atlas data fetch fashion-mnist` (downloads 30 MB into "
        f"{cache_folder()}); or put them in a folder and name it with path=... or ${ENV_VAR}."
    )


def find_folder(path: str | Path | None = None) -> Path:
    """The first folder holding the four files: the one named (path=, else $LATENT_ATLAS_FASHION_MNIST),
    else Debian's, else the user's cache."""
    named = _named_folder(path)
    if named is not None:
        folder, how = named
        missing = _missing(folder)
        if missing:
            raise AtlasError(
                f"the Fashion-MNIST folder {str(folder)!r} (named by {how}) lacks {', '.join(missing)}. "
                f"Put the four files there, or fetch them: latent-atlas data fetch fashion-mnist --to {folder}"
            )
        return folder
    for folder in (DEBIAN_FOLDER, cache_folder()):
        if not _missing(folder):
            return folder
    raise AtlasError(
        f"Fashion-MNIST's files ({', '.join(FILES)}) are in none of {DEBIAN_FOLDER} and {cache_folder()}. "
        + how_to_get()
    )


def read_split(folder: Path, split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `count` images (count, 1, 28, 28) in [0, 1] and labels (count,) of a split's files in
    `folder`, checked; kept per process while the files are unchanged."""
    images, labels = (_file(folder, f"{PREFIX[split]}-{kind}-ubyte.gz") for kind in ("images-idx3", "labels-idx1"))
    if images is None or labels is None:
        raise AtlasError(f"{folder} lacks the {split} files of Fashion-MNIST. " + how_to_get())
    stamp = tuple((f.stat().st_size, f.stat().st_mtime_ns) for f in (images, labels))
    return _decoded(images, labels, count, stamp)


@lru_cache(maxsize=4)
def _decoded(images_file: Path, labels_file: Path, count: int, stamp: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """stamp: the files' sizes and times, so that a changed file is read again."""
    images = read_idx(images_file, IMAGES_MAGIC, "images", (count, SIDE, SIDE), name=str(images_file))
    labels = read_idx(labels_file, LABELS_MAGIC, "labels", (count,), name=str(labels_file))
    if labels.max() >= len(CLASSES):
        raise AtlasError(
            f"{labels_file}: holds the label {labels.max()}, but Fashion-MNIST's labels are 0..9; get the file again."
        )
    return unit_images(images), torch.from_numpy(labels).long()


def load(split: str = "train", seed: int = 0, *, path: str | None = None) -> Dataset:
    """The official `split` ("all": train then test): x (n, 1, 28, 28) in [0, 1], label column
    "class". `seed` changes nothing: the split is the published one."""
    split = check_split(split)
    check_seed(seed)
    try:
        folder = find_folder(path)
    except AtlasError:
        if split == "test" and _named_folder(path) is None and SUBSET_FILE.is_file():
            return shipped_test_subset(SUBSET_FILE)
        raise
    if split == "all":
        (x_train, y_train), (x_test, y_test) = (read_split(folder, s, SIZES[s]) for s in ("train", "test"))
        x, y = torch.cat([x_train, x_test]), torch.cat([y_train, y_test])
    else:
        x, y = read_split(folder, split, SIZES[split])
    return Dataset(
        name="fashion-mnist",
        split=split,
        x=x,
        labels={"class": LabelColumn("class", y, list(CLASSES))},
        shape=(1, SIDE, SIDE),
        value_range=(0.0, 1.0),
        meta={"path": str(folder)},
    )


def shipped_test_subset(file: Path) -> Dataset:
    """The first test images shipped in `file` (the arrays of SUBSET_FILE), as load() gives the
    test split, with meta "shipped_subset": their number and "about": what they are."""
    images, labels = _read_subset(file, (file.stat().st_size, file.stat().st_mtime_ns))
    n = len(labels)
    return Dataset(
        name="fashion-mnist",
        split="test",
        x=unit_images(images),
        labels={"class": LabelColumn("class", torch.from_numpy(labels).long(), list(CLASSES))},
        shape=(1, SIDE, SIDE),
        value_range=(0.0, 1.0),
        meta={
            "path": str(file),
            "shipped_subset": n,
            "about": f"the first {n:,} of Fashion-MNIST's {SIZES['test']:,} test images, shipped with Latent "
            "Atlas because the dataset's files were not found. " + how_to_get(),
        },
    )


@lru_cache(maxsize=1)
def _read_subset(file: Path, stamp: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The arrays of a subset file, checked: uint8 images (n, 28, 28) and labels (n,) in 0..9,
    with 0 < n <= 10,000. stamp: the file's size and time, so that a changed file is read again."""
    try:
        with np.load(file, allow_pickle=False) as archive:
            images, labels = archive["images"], archive["labels"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise AtlasError(
            f"{file}: not a Fashion-MNIST subset ({err}); get the file again from the repository."
        ) from err
    n = labels.shape[0] if labels.ndim == 1 else -1
    if not (images.dtype == labels.dtype == np.uint8 and images.shape == (n, SIDE, SIDE) and 0 < n <= SIZES["test"]):
        raise AtlasError(
            f"{file}: expected uint8 arrays images (n, {SIDE}, {SIDE}) and labels (n,) with 0 < n <= "
            f"{SIZES['test']:,}, found images {images.dtype} {images.shape} and labels {labels.dtype} "
            f"{labels.shape}; get the file again from the repository."
        )
    if labels.max() >= len(CLASSES):
        raise AtlasError(
            f"{file}: holds the label {labels.max()}, but Fashion-MNIST's labels are 0..9; get the file again "
            "from the repository."
        )
    return images, labels


def fetch(
    folder: str | Path | None = None,
    base_url: str = BASE_URL,
    checksums: dict[str, str] = MD5,
    say: Callable[[str], None] = lambda message: None,
) -> Path:
    """Download the files named in `checksums` from `base_url` into `folder` (default: the one in
    $LATENT_ATLAS_FASHION_MNIST, else the user's cache), each checked against its MD5 sum; files
    already there with the right sum are kept. Returns the folder."""
    named = _named_folder(folder)
    target = named[0] if named else cache_folder()
    target.mkdir(parents=True, exist_ok=True)
    for name, md5 in checksums.items():
        file = target / name
        if file.is_file() and md5_of(file) == md5:
            say(f"{name}: already there")
            continue
        url = base_url.rstrip("/") + "/" + name
        say(f"{name}: downloading {url}")
        download_checked(url, file, md5, MAX_DOWNLOAD_BYTES)
    return target
