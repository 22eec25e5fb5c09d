"""Fashion-MNIST: fetching from a local server (checksums, corrupted and missing files), the
IDX checks on hostile files, where the files are looked for, and the real dataset as Debian's
package dataset-fashion-mnist installs it (`./dev test` installs it; without it these fail)."""

import gzip
import hashlib
import http.server
import os
import struct
import threading
import time
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from engine.cli import main
from engine.data import dataset_info, fashion_mnist, list_datasets, load_dataset
from engine.data.fashion_mnist import ENV_VAR, FILES, MD5, fetch, read_split
from engine.data.idx import IMAGES_MAGIC, LABELS_MAGIC, MAX_VALUES, read_idx
from engine.errors import AtlasError

SMALL = {"train": 12, "test": 5}  # images per split in the files made here
# the dataset's README, "Labels": label 0 to 9
PUBLISHED_CLASSES = "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot".split(",")


def idx_bytes(array: np.ndarray, magic: int, dims: tuple[int, ...] | None = None) -> bytes:
    """An IDX file: magic, sizes (those of `array` unless `dims` says otherwise), values."""
    dims = array.shape if dims is None else dims
    return struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + array.tobytes()


def file_name(split: str, kind: str) -> str:
    return f"{fashion_mnist.PREFIX[split]}-{kind}-ubyte.gz"


@pytest.fixture
def small():
    """12 train and 5 test images with labels, and their gzipped IDX files by name."""
    rng = np.random.default_rng(0)
    arrays = {
        split: (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8))
        for split, n in SMALL.items()
    }
    files = {}
    for split, (images, labels) in arrays.items():
        files[file_name(split, "images-idx3")] = gzip.compress(idx_bytes(images, IMAGES_MAGIC))
        files[file_name(split, "labels-idx1")] = gzip.compress(idx_bytes(labels, LABELS_MAGIC))
    md5 = {name: hashlib.md5(body).hexdigest() for name, body in files.items()}
    return SimpleNamespace(arrays=arrays, files=files, md5=md5)


@pytest.fixture
def server(monkeypatch):
    """An HTTP server on 127.0.0.1 serving `files` (name -> bytes); anything else is a 404."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    files: dict[str, bytes] = {}
    requested: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            name = self.path.lstrip("/")
            requested.append(name)
            if name not in files:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(files[name])))
            self.end_headers()
            self.wfile.write(files[name])

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_port}/", files=files, requested=requested)
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def leftovers(folder) -> list[str]:
    """Temporary download files left in the folder."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".part"))


# ---- fetching ------------------------------------------------------------------------


def test_fetch_checks_each_file_then_the_loader_reads_what_was_served(tmp_path, server, small):
    server.files.update(small.files)
    said = []
    folder = fetch(tmp_path / "data", base_url=server.url, checksums=small.md5, say=said.append)
    assert folder == tmp_path / "data"
    assert sorted(p.name for p in folder.iterdir()) == sorted(small.files)
    for name, body in small.files.items():
        assert (folder / name).read_bytes() == body
    for split, (images, labels) in small.arrays.items():
        x, y = read_split(folder, split, SMALL[split])
        assert x.shape == (SMALL[split], 1, 28, 28) and x.dtype == torch.float32
        assert torch.equal(torch.round(x[:, 0] * 255).to(torch.uint8), torch.from_numpy(images))
        assert torch.equal(y, torch.from_numpy(labels).long())
    # files already there with the right checksum are not downloaded again; a damaged one is
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"damaged")
    server.requested.clear()
    fetch(folder, base_url=server.url, checksums=small.md5, say=said.append)
    assert server.requested == ["t10k-labels-idx1-ubyte.gz"]
    assert (folder / "t10k-labels-idx1-ubyte.gz").read_bytes() == small.files["t10k-labels-idx1-ubyte.gz"]
    assert sum("already there" in line for line in said) == 3


def test_a_corrupted_download_is_refused_and_deleted(tmp_path, server, small):
    server.files.update(small.files)
    bad = "t10k-images-idx3-ubyte.gz"
    body = bytearray(small.files[bad])
    body[40] ^= 0xFF  # one wrong byte
    server.files[bad] = bytes(body)
    found = hashlib.md5(body).hexdigest()
    with pytest.raises(AtlasError, match=f"{bad}.*MD5 {found}.*published checksum is {small.md5[bad]}"):
        fetch(tmp_path, base_url=server.url, checksums=small.md5)
    assert not (tmp_path / bad).exists() and leftovers(tmp_path) == []
    assert (tmp_path / "train-images-idx3-ubyte.gz").read_bytes() == small.files["train-images-idx3-ubyte.gz"]


def test_a_server_error_or_a_bad_address_is_explained(tmp_path, server, small):
    server.files.update(small.files)
    with pytest.raises(AtlasError, match="missing.gz failed: the server answered HTTP 404"):
        fetch(tmp_path, base_url=server.url, checksums={"missing.gz": "0" * 32})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(AtlasError, match="not an http:// or https:// address"):
        fetch(tmp_path, base_url="file:///etc/", checksums=small.md5)
    assert list(tmp_path.iterdir()) == []


def test_a_response_far_larger_than_the_file_is_cut_off(tmp_path, server, small, monkeypatch):
    server.files.update(small.files)
    monkeypatch.setattr(fashion_mnist, "MAX_DOWNLOAD_BYTES", 100)
    with pytest.raises(AtlasError, match="sends more than 100 bytes"):
        fetch(tmp_path, base_url=server.url, checksums=small.md5)
    assert list(tmp_path.iterdir()) == []


def test_the_command_checks_against_the_published_checksums(tmp_path, server, small, capsys):
    server.files.update(small.files)  # the right names, other contents: the published sums refuse them
    assert main(["data", "fetch", "fashion-mnist", "--to", str(tmp_path), "--url", server.url]) == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte.gz" in err and MD5["train-images-idx3-ubyte.gz"] in err
    assert list(tmp_path.iterdir()) == []
    assert server.requested == ["train-images-idx3-ubyte.gz"]


def test_nothing_downloads_when_listing_describing_or_loading(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    assert "fashion-mnist" in list_datasets()
    assert "path" in dataset_info("fashion-mnist").options
    assert len(real("test")) == 10_000


# ---- the checks on what is read ------------------------------------------------------


def write_split(folder, split, images_bytes: bytes, labels_bytes: bytes, zipped=True):
    folder.mkdir(exist_ok=True)
    for kind, body in (("images-idx3", images_bytes), ("labels-idx1", labels_bytes)):
        name = file_name(split, kind)
        if zipped:
            (folder / name).write_bytes(gzip.compress(body))
        else:
            (folder / name.removesuffix(".gz")).write_bytes(body)


def test_uncompressed_files_are_read_too(tmp_path, small):
    images, labels = small.arrays["train"]
    write_split(tmp_path, "train", idx_bytes(images, IMAGES_MAGIC), idx_bytes(labels, LABELS_MAGIC), zipped=False)
    x, y = read_split(tmp_path, "train", 12)
    assert torch.equal(torch.round(x[:, 0] * 255).to(torch.uint8), torch.from_numpy(images))
    assert torch.equal(y, torch.from_numpy(labels).long())


@pytest.mark.parametrize(
    "damage, message",
    [
        ("labels magic", "images-idx3-ubyte.gz: expected an IDX images file \\(magic 0x00000803\\).*0x00000801"),
        ("images magic", "labels-idx1-ubyte.gz: expected an IDX labels file \\(magic 0x00000801\\).*0x00000803"),
        ("truncated images", "images-idx3-ubyte.gz: the file is truncated.*9,408 values but it holds 9,398 bytes"),
        ("extra bytes", "images-idx3-ubyte.gz: the file has extra bytes at the end"),
        ("broken gzip", "images-idx3-ubyte.gz: the gzip data is damaged or truncated"),
        ("fewer labels", "labels-idx1-ubyte.gz: its header says 11 labels but 12 were expected"),
        ("wrong count", "images-idx3-ubyte.gz: its header says 13 x 28 x 28 images but 12 x 28 x 28"),
        ("wrong side", "images-idx3-ubyte.gz: its header says 12 x 27 x 28 images but 12 x 28 x 28"),
        ("label 10", "labels-idx1-ubyte.gz: holds the label 10, but Fashion-MNIST's labels are 0..9"),
    ],
)
def test_damaged_files_are_refused_naming_the_file_and_the_fault(tmp_path, small, damage, message):
    images, labels = small.arrays["train"]
    x, y = idx_bytes(images, IMAGES_MAGIC), idx_bytes(labels, LABELS_MAGIC)
    damaged = {
        "labels magic": (struct.pack(">I", LABELS_MAGIC) + x[4:], y),
        "images magic": (x, struct.pack(">I", IMAGES_MAGIC) + y[4:]),
        "truncated images": (x[:-10], y),
        "extra bytes": (x + b"\0", y),
        "fewer labels": (x, idx_bytes(labels[:11], LABELS_MAGIC)),
        "wrong count": (idx_bytes(np.concatenate([images, images[:1]]), IMAGES_MAGIC), y),
        "wrong side": (idx_bytes(images[:, :27], IMAGES_MAGIC), y),
        "label 10": (x, idx_bytes(np.where(np.arange(12) == 3, 10, labels).astype(np.uint8), LABELS_MAGIC)),
        "broken gzip": (x, y),
    }[damage]
    write_split(tmp_path, "train", *damaged)
    if damage == "broken gzip":
        path = tmp_path / file_name("train", "images-idx3")
        path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(AtlasError, match=message):
        read_split(tmp_path, "train", 12)


def test_a_header_claiming_a_billion_images_is_refused_before_anything_is_allocated(tmp_path):
    """The sizes are checked against what is expected (Fashion-MNIST) or a ceiling (any IDX
    file) before the values are read, and the values are read only as far as they go."""
    few = np.zeros((2, 28, 28), np.uint8)
    huge = idx_bytes(few, IMAGES_MAGIC, (10**9, 28, 28))
    write_split(tmp_path, "train", huge, idx_bytes(np.zeros(2, np.uint8), LABELS_MAGIC))
    plain = tmp_path / "huge-idx3-ubyte"
    plain.write_bytes(huge)
    claims_within_ceiling = tmp_path / "big-idx3-ubyte"
    claims_within_ceiling.write_bytes(idx_bytes(few, IMAGES_MAGIC, (1000, 1000, 1000)))
    assert 1000**3 <= MAX_VALUES < 10**9 * 28 * 28

    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(AtlasError, match="its header says 1,000,000,000 x 28 x 28 images but 60,000 x 28 x 28"):
        read_split(tmp_path, "train", 60_000)
    with pytest.raises(AtlasError, match="claims 1,000,000,000 x 28 x 28 = 784,000,000,000 values, more than"):
        read_idx(plain, IMAGES_MAGIC, "images")
    with pytest.raises(AtlasError, match="truncated: its header promises 1,000 x 1,000 x 1,000"):
        read_idx(claims_within_ceiling, IMAGES_MAGIC, "images")
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 5 * 2**20  # bytes: nothing near the claimed sizes


# ---- where the files are looked for ---------------------------------------------------


def real(split: str, **options):
    """A split of the real dataset (not the test images shipped in assets/); its absence fails with what to install."""
    try:
        data = load_dataset("fashion-mnist", split=split, **options)
        problem = data.meta["about"] if "shipped_subset" in data.meta else None
    except AtlasError as err:
        problem = str(err)
    if problem is not None:
        pytest.fail(
            "Fashion-MNIST is not installed: run `apt-get install dataset-fashion-mnist` "
            f"(./dev test does so as root) or `latent-atlas data fetch fashion-mnist`. The loader said: {problem}"
        )
    return data


@pytest.fixture
def installed(monkeypatch):
    """The folder the real files were found in, with the environment variable unset."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    return real("test").meta["path"]


def linked_copy(source, folder):
    """`folder` holding links to the four files in `source`."""
    folder.mkdir(parents=True)
    for name in FILES:
        (folder / name).symlink_to(os.path.join(source, name))
    return folder


def test_a_named_folder_comes_first_and_must_hold_the_files(tmp_path, monkeypatch, installed):
    by_env = linked_copy(installed, tmp_path / "env")
    by_path = linked_copy(installed, tmp_path / "path")
    monkeypatch.setenv(ENV_VAR, str(by_env))
    assert real("test").meta["path"] == str(by_env)
    assert real("test", path=str(by_path)).meta["path"] == str(by_path)
    (by_env / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(AtlasError, match=f"named by \\${ENV_VAR}\\) lacks t10k-labels-idx1-ubyte.gz.*--to {by_env}"):
        load_dataset("fashion-mnist", split="test")
    with pytest.raises(AtlasError, match="named by path=...\\) lacks train-images-idx3-ubyte.gz, train-labels"):
        load_dataset("fashion-mnist", path=str(tmp_path))


def test_then_debian_then_the_user_cache_then_a_message_saying_how_to_get_them(tmp_path, monkeypatch, installed):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FOLDER", tmp_path / "debian")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cache = tmp_path / "cache" / "latent-atlas" / "fashion-mnist"
    assert fashion_mnist.cache_folder() == cache
    with pytest.raises(AtlasError) as err:  # the test split falls back to shipped images (test_fashion_mnist_demo.py)
        load_dataset("fashion-mnist", split="train")
    for how in ("apt-get install dataset-fashion-mnist", "latent-atlas data fetch fashion-mnist", ENV_VAR, str(cache)):
        assert how in str(err.value)
    linked_copy(installed, cache)
    assert real("test").meta["path"] == str(cache)
    linked_copy(installed, tmp_path / "debian")
    assert real("test").meta["path"] == str(tmp_path / "debian")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # not absolute: ignored, as the XDG spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert fashion_mnist.cache_folder() == tmp_path / "home" / ".cache" / "latent-atlas" / "fashion-mnist"


# ---- the real dataset ----------------------------------------------------------------


def test_the_real_dataset_has_the_official_split_and_classes(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    fashion_mnist._decoded.cache_clear()
    start = time.perf_counter()
    train, test = real("train"), real("test")
    first_load_s = time.perf_counter() - start
    assert (len(train), len(test)) == (60_000, 10_000)
    for data in (train, test):
        assert data.name == "fashion-mnist" and data.kind == "image"
        assert data.shape == (1, 28, 28) and tuple(data.x.shape[1:]) == (1, 28, 28)
        assert data.x.dtype == torch.float32 and data.value_range == (0.0, 1.0)
        assert float(data.x.min()) == 0.0 and float(data.x.max()) == 1.0
        assert data.labels["class"].categories == PUBLISHED_CLASSES
    assert int(test.labels["class"].values[0]) == 9  # the first t10k label: an ankle boot
    # balanced: 6,000 train and 1,000 test images per class (Xiao et al. 2017)
    assert torch.equal(torch.bincount(train.labels["class"].values), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(test.labels["class"].values), torch.full((10,), 1000))
    # the training pixels' mean and standard deviation, the normalisation constants in common use
    assert abs(float(train.x.mean()) - 0.2860) < 5e-4 and abs(float(train.x.std()) - 0.3530) < 5e-4
    assert first_load_s < 10.0

    start = time.perf_counter()
    again, every = real("train", seed=7), real("all")
    assert time.perf_counter() - start < 2.0  # decoded once per process
    assert again.x is train.x  # the seed changes nothing: the split is the published one
    assert len(every) == 70_000 and torch.equal(every.x[60_000:], test.x)
    assert torch.equal(every.labels["class"].values[:60_000], train.labels["class"].values)
    with pytest.raises(AtlasError, match="has no option 'test_fraction'"):
        load_dataset("fashion-mnist", test_fraction=0.5)
