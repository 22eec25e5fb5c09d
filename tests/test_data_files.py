"""Loaders for files users bring: good files load, broken ones raise AtlasError, and no
input file is ever changed."""

import gzip
import hashlib
import struct
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.data import load_dataset
from engine.data.files import load_csv, load_idx, load_image_folder, load_npz
from engine.errors import AtlasError


@contextmanager
def untouched(*paths: Path):
    """Asserts that the files (or every file under the folders) keep their bytes."""

    def digest():
        found = {}
        for path in paths:
            for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
                if f.is_file():
                    found[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
        return found

    before = digest()
    yield
    assert digest() == before


def raises(message: str, *paths: Path):
    """AtlasError whose message matches `message`, with the inputs left unchanged."""

    @contextmanager
    def check():
        with untouched(*paths), pytest.raises(AtlasError, match=message):
            yield

    return check()


# ---- IDX ---------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx(path: Path, array: np.ndarray, magic: int, zipped: bool = False) -> Path:
    data = idx_bytes(array, magic)
    path.write_bytes(gzip.compress(data) if zipped else data)
    return path


@pytest.fixture
def mnist_like():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(30, 6, 5), dtype=np.uint8)
    labels = (np.arange(30) % 10).astype(np.uint8)
    return images, labels


@pytest.mark.parametrize("zipped", [False, True])
def test_idx_images_and_labels_load(tmp_path, mnist_like, zipped):
    images, labels = mnist_like
    suffix = ".gz" if zipped else ""
    x_path = write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, 0x803, zipped)
    y_path = write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, 0x801, zipped)
    with untouched(x_path, y_path):
        data = load_idx(x_path, y_path)
    assert data.x.shape == (30, 1, 6, 5) and data.x.dtype == torch.float32
    assert torch.allclose(data.x[:, 0] * 255, torch.from_numpy(images).float())
    assert data.labels["label"].categories == [str(d) for d in range(10)]
    assert torch.equal(data.labels["label"].values, torch.from_numpy(labels).long())
    # through the registry: the labels file is found beside the images, then split
    with untouched(x_path, y_path):
        every = load_dataset(f"file:{x_path}", split="all")
        train = load_dataset(f"file:{x_path}", split="train")
        test = load_dataset("idx", path=str(x_path), labels_path=str(y_path), split="test")
    assert torch.equal(every.x, data.x) and "label" in every.labels
    assert len(train) + len(test) == 30 and len(test) == 6


def test_idx_images_without_labels(tmp_path, mnist_like):
    path = write_idx(tmp_path / "images.idx", mnist_like[0], 0x803)
    data = load_idx(path)
    assert data.labels == {} and len(data) == 30


def test_idx_broken_files_are_explained(tmp_path, mnist_like):
    images, labels = mnist_like
    good_x = write_idx(tmp_path / "x-idx3-ubyte", images, 0x803)
    good_y = write_idx(tmp_path / "y-idx1-ubyte", labels, 0x801)
    with raises("magic 0x00000803.*starts with 0x00000801", good_y):
        load_idx(good_y)  # a labels file given as images
    with raises("magic 0x00000801.*starts with 0x00000803", good_x, good_y):
        load_idx(good_x, good_x)
    truncated = tmp_path / "truncated-idx3-ubyte"
    truncated.write_bytes(idx_bytes(images, 0x803)[:-7])
    with raises("truncated", truncated):
        load_idx(truncated)
    short_header = tmp_path / "short-idx3-ubyte"
    short_header.write_bytes(idx_bytes(images, 0x803)[:9])
    with raises("truncated inside its IDX header", short_header):
        load_idx(short_header)
    extra = tmp_path / "extra-idx3-ubyte"
    extra.write_bytes(idx_bytes(images, 0x803) + b"\0\0")
    with raises("extra bytes", extra):
        load_idx(extra)
    zipped_truncated = tmp_path / "cut-idx3-ubyte.gz"
    zipped_truncated.write_bytes(gzip.compress(idx_bytes(images, 0x803))[:-20])
    with raises("gzip data is damaged or truncated", zipped_truncated):
        load_idx(zipped_truncated)
    few_labels = write_idx(tmp_path / "few-idx1-ubyte", labels[:20], 0x801)
    with raises("20 labels but .* 30 images", good_x, few_labels):
        load_idx(good_x, few_labels)
    tiny = tmp_path / "tiny-idx3-ubyte"
    tiny.write_bytes(b"\0\0")
    with raises("too short", tiny):
        load_idx(tiny)
    empty = write_idx(tmp_path / "empty-idx3-ubyte", np.zeros((0, 4, 4), np.uint8), 0x803)
    with raises("no data", empty):
        load_idx(empty)
    with raises("not a file"):
        load_idx(tmp_path)
    with raises("does not exist"):
        load_idx(tmp_path / "missing-idx3-ubyte")


# ---- NPZ -----------------------------------------------------------------------------


def test_npz_images_in_every_layout(tmp_path):
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, size=(12, 7, 7), dtype=np.uint8)
    np.savez(tmp_path / "gray.npz", x=gray, y=np.arange(12) % 3)
    with untouched(tmp_path / "gray.npz"):
        data = load_npz(tmp_path / "gray.npz")
    assert data.x.shape == (12, 1, 7, 7) and data.value_range == (0.0, 1.0)
    assert torch.allclose(data.x[:, 0] * 255, torch.from_numpy(gray).float())
    assert data.labels["label"].categories == ["0", "1", "2"]

    nchw = rng.random((5, 3, 4, 6), dtype=np.float32)
    np.savez(tmp_path / "nchw.npz", x=nchw, y=np.array(list("abcab")))
    data = load_npz(tmp_path / "nchw.npz")
    assert torch.equal(data.x, torch.from_numpy(nchw))
    assert data.labels["label"].categories == ["a", "b", "c"]
    assert data.labels["label"].values.tolist() == [0, 1, 2, 0, 1]

    np.savez(tmp_path / "nhwc.npz", x=np.transpose(nchw, (0, 2, 3, 1)))
    assert torch.equal(load_npz(tmp_path / "nhwc.npz").x, torch.from_numpy(nchw))

    signed = (nchw * 2 - 1).astype(np.float32)  # images in [-1, 1] keep their values
    np.savez(tmp_path / "signed.npz", x=signed)
    data = load_npz(tmp_path / "signed.npz")
    assert data.value_range == (float(signed.min()), float(signed.max()))

    np.savez(tmp_path / "regression.npz", x=gray, y=np.linspace(0, 1, 12))
    label = load_npz(tmp_path / "regression.npz").labels["label"]
    assert not label.is_categorical and label.values.dtype == torch.float32


def test_npz_table_with_missing_values(tmp_path):
    x = np.array(
        [[0, 1.5, 2, -1], [1, np.nan, 3, 2.5], [1, 2.5, 2, 0.5], [0, 0.5, 5, -3], [0, 1.0, 5, 4.0], [1, 3.5, 3, 1.0]]
    )
    path = tmp_path / "table.npz"
    np.savez(path, x=x)
    with untouched(path):
        data = load_dataset("npz", path=str(path), split="all")
    assert data.kind == "tabular" and data.x.shape == (6, 4)
    assert [s.kind for s in data.schema] == ["binary", "positive", "categorical", "real"]
    assert data.schema[2].categories == ["2", "3", "5"]
    assert data.x[:, 2].tolist() == [0, 1, 0, 2, 2, 1]
    mask = data.meta["missing_mask"]
    assert mask.tolist()[1] == [False, True, False, False] and int(mask.sum()) == 1
    assert float(data.x[1, 1]) == 0.0


def test_npz_broken_files_are_explained(tmp_path):
    images = np.zeros((4, 5, 5), np.float32)
    np.savez(tmp_path / "no_x.npz", images=images)
    with raises("no array named 'x'.*'images'", tmp_path / "no_x.npz"):
        load_npz(tmp_path / "no_x.npz")
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}, None], dtype=object))
    with raises("pickled", tmp_path / "objects.npz"):
        load_npz(tmp_path / "objects.npz")
    nan = images.copy()
    nan[2, 1, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=nan)
    with raises("NaN or infinite", tmp_path / "nan.npz"):
        load_npz(tmp_path / "nan.npz")
    inf_table = np.ones((3, 2))
    inf_table[0, 0] = np.inf
    np.savez(tmp_path / "inf.npz", x=inf_table)
    with raises("infinite", tmp_path / "inf.npz"):
        load_npz(tmp_path / "inf.npz")
    np.savez(tmp_path / "bad_y.npz", x=images, y=np.arange(3))
    with raises("y has shape \\(3,\\); expected \\(4,\\)", tmp_path / "bad_y.npz"):
        load_npz(tmp_path / "bad_y.npz")
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 5, 5)))
    with raises("holds no values", tmp_path / "empty.npz"):
        load_npz(tmp_path / "empty.npz")
    np.savez(tmp_path / "flat.npz", x=np.arange(5.0))
    with raises("expected \\(N, D\\)", tmp_path / "flat.npz"):
        load_npz(tmp_path / "flat.npz")
    np.savez(tmp_path / "four.npz", x=np.zeros((2, 4, 5, 5)))
    with raises("1 or 3 channels", tmp_path / "four.npz"):
        load_npz(tmp_path / "four.npz")
    np.savez(tmp_path / "big_ints.npz", x=np.full((2, 3, 3), 300, np.int32))
    with raises("0..255", tmp_path / "big_ints.npz"):
        load_npz(tmp_path / "big_ints.npz")
    np.savez(tmp_path / "text.npz", x=np.array([["a", "b"]]))
    with raises("expected numbers", tmp_path / "text.npz"):
        load_npz(tmp_path / "text.npz")
    (tmp_path / "fake.npz").write_text("x,y\n1,2\n")
    with raises("not an NPZ archive", tmp_path / "fake.npz"):
        load_npz(tmp_path / "fake.npz")
    np.save(tmp_path / "single.npy", images)
    (tmp_path / "single.npz").write_bytes((tmp_path / "single.npy").read_bytes())
    with raises("not an NPZ archive", tmp_path / "single.npz"):
        load_npz(tmp_path / "single.npz")
    np.savez(tmp_path / "good.npz", x=images)
    cut = tmp_path / "cut.npz"
    cut.write_bytes((tmp_path / "good.npz").read_bytes()[:60])
    with raises("damaged or truncated", cut):
        load_npz(cut)


# ---- CSV -----------------------------------------------------------------------------

CSV = """height,smoker,colour,rating,income,score,species
1.72,0,red,3,52000,-0.5,a
1.65,1,blue,1,,1.25,b
1.80,1,red,2,61000,0.0,a
,0,green,3,48000,2.0,c
1.70,0,,1,55000,-1.0,b
1.62,1,red,2,47000,0.5,a
"""


def test_csv_infers_kinds_and_missing_values(tmp_path):
    path = tmp_path / "people.csv"
    path.write_text(CSV)
    with untouched(path):
        data = load_csv(path, label_column="species")
    assert data.kind == "tabular" and data.x.shape == (6, 6) and data.shape == (6,)
    kinds = {s.name: s.kind for s in data.schema}
    assert kinds == {
        "height": "positive",
        "smoker": "binary",
        "colour": "categorical",
        "rating": "categorical",
        "income": "positive",
        "score": "real",
    }
    colour = data.schema[2]
    assert colour.categories == ["blue", "green", "red"]
    assert data.x[:, 2].tolist() == [2, 0, 2, 1, 0, 2]  # the missing cell is 0 and masked
    assert data.schema[3].categories == ["1", "2", "3"]
    mask = data.meta["missing_mask"]
    assert mask.nonzero().tolist() == [[1, 4], [3, 0], [4, 2]]
    assert data.labels["species"].categories == ["a", "b", "c"]
    assert data.labels["species"].values.tolist() == [0, 1, 0, 2, 1, 0]
    low, high = data.value_range
    assert (low, high) == (-1.0, 61000.0)
    with untouched(path):
        train = load_dataset(f"file:{path}", label_column="species", seed=2)
        test = load_dataset("csv", path=str(path), label_column="species", split="test", seed=2)
    assert len(train) + len(test) == 6


def test_csv_broken_files_are_explained(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with raises("empty", empty):
        load_csv(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("a,b,c\n")
    with raises("no rows", header_only):
        load_csv(header_only)
    good = tmp_path / "good.csv"
    good.write_text(CSV)
    with raises("no column named 'kind'.*'species'", good):
        load_csv(good, label_column="kind")
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("a,b\n1,2\n3,?\n4,5\n")
    with raises("column 'b' mixes numbers with text such as '\\?'", mixed):
        load_csv(mixed)
    ids = tmp_path / "ids.csv"
    ids.write_text("name,v\n" + "".join(f"person{i},{i}\n" for i in range(80)))
    with raises("80 different texts", ids):
        load_csv(ids)
    unlabelled = tmp_path / "unlabelled.csv"
    unlabelled.write_text("a,y\n1,0\n2,\n3,1\n")
    with raises("label column 'y' has empty cells", unlabelled):
        load_csv(unlabelled, label_column="y")
    only_label = tmp_path / "only_label.csv"
    only_label.write_text("y\n1\n0\n")
    with raises("no columns are left", only_label):
        load_csv(only_label, label_column="y")
    blank = tmp_path / "blank.csv"
    blank.write_text("a,b\n1,\n2,\n")
    with raises("column 'b' has no values", blank):
        load_csv(blank)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n3,4,5,6\n")
    with raises("could not be read as CSV", ragged):
        load_csv(ragged)


# ---- image folders ---------------------------------------------------------------------


def save_image(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def test_image_folder_with_class_subfolders(tmp_path):
    rng = np.random.default_rng(2)
    for i in range(3):
        save_image(tmp_path / "cats" / f"{i}.png", rng.integers(0, 256, (8, 10, 3), dtype=np.uint8))
        save_image(tmp_path / "dogs" / f"{i}.png", rng.integers(0, 256, (8, 10), dtype=np.uint8))
    pixels = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
    save_image(tmp_path / "dogs" / "z.png", pixels)
    with untouched(tmp_path):
        data = load_image_folder(tmp_path)
    assert data.x.shape == (7, 3, 8, 10) and data.x.dtype == torch.float32  # gray -> RGB
    assert data.labels["label"].categories == ["cats", "dogs"]
    assert data.labels["label"].values.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert torch.allclose(data.x[6].permute(1, 2, 0) * 255, torch.from_numpy(pixels).float(), atol=1e-3)
    gray = data.x[3]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert data.meta["files"][0] == str(Path("cats") / "0.png")
    with untouched(tmp_path):
        train = load_dataset(f"file:{tmp_path}", split="train")
        test = load_dataset("image-folder", path=str(tmp_path), split="test")
    assert len(train) + len(test) == 7 and len(train.meta["files"]) == len(train)


def test_image_folder_gray_jpeg_and_resizing(tmp_path):
    rng = np.random.default_rng(3)
    save_image(tmp_path / "a.jpg", rng.integers(0, 256, (12, 12), dtype=np.uint8))
    save_image(tmp_path / "b.JPEG", rng.integers(0, 256, (20, 16), dtype=np.uint8))
    save_image(tmp_path / "c.png", rng.integers(0, 256, (12, 12), dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("not an image, ignored")
    with raises("different sizes \\(12x12: 2 .*20x16: 1", tmp_path):
        load_image_folder(tmp_path)
    with untouched(tmp_path):
        data = load_image_folder(tmp_path, size=8)
    assert data.x.shape == (3, 1, 8, 8) and data.labels == {}
    assert 0.0 <= float(data.x.min()) and float(data.x.max()) <= 1.0
    assert load_image_folder(tmp_path, size=(6, 9)).x.shape == (3, 1, 6, 9)
    with raises("option size"):
        load_image_folder(tmp_path, size=0)


def test_image_folder_broken_inputs_are_explained(tmp_path):
    good = np.zeros((5, 5), np.uint8)
    folder = tmp_path / "fake"
    save_image(folder / "ok.png", good)
    (folder / "text.png").write_text("this is not a picture")
    with raises("text.png: not a readable PNG or JPEG", folder):
        load_image_folder(folder)

    folder = tmp_path / "cut"
    png = save_image(folder / "whole.png", np.full((32, 32, 3), 7, np.uint8))
    (folder / "cut.png").write_bytes(png.read_bytes()[:60])
    with raises("cut.png: not a readable", folder):
        load_image_folder(folder)

    folder = tmp_path / "both"
    save_image(folder / "loose.png", good)
    save_image(folder / "class" / "inside.png", good)
    with raises("both in the folder and in subfolders", folder):
        load_image_folder(folder)

    (tmp_path / "empty").mkdir()
    with raises("no .png, .jpg or .jpeg files"):
        load_image_folder(tmp_path / "empty")
    with raises("not a folder"):
        load_image_folder(png)


# ---- the registry with files -----------------------------------------------------------


def test_registry_file_errors(tmp_path):
    with raises("does not exist"):
        load_dataset(f"file:{tmp_path / 'nothing.bin'}")
    (tmp_path / "data.bin").write_bytes(b"\0" * 10)
    with raises("cannot tell the format of 'data.bin'"):
        load_dataset(f"file:{tmp_path / 'data.bin'}")
    with raises("needs path"):
        load_dataset("csv")
    with raises("no option 'size'"):
        load_dataset("npz", path=str(tmp_path / "x.npz"), size=3)
    with raises("give the path once"):
        load_dataset(f"file:{tmp_path}", path=str(tmp_path))
