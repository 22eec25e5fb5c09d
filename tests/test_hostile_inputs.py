"""Hostile and broken input: a corpus of files built here, each refused with a message that
names what was wrong, within a watchdog's bounds on time and memory, and none with a side
effect (the runs root and a sentinel folder beside it are byte-for-byte unchanged, a pickle
payload's file never appears). Then the same through the Import page, which shows an error
and keeps serving. tests/test_upload_limits.py holds the larger files whose size is the
attack (tens of MB, 150,000 zip members) and the same limits for files loaded by path.

Cases counted elsewhere (README, Reliability): tests/test_store.py (pickles and corrupt
checkpoints, 22 bad run ids, a symlink out of the root), tests/test_training.py (damaged or
mismatched checkpoints in a run, bad configs), tests/test_data_files.py (broken NPZ, CSV,
IDX files and image folders), tests/test_pages.py (a broken run shows an error).
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import struct
import time
import tracemalloc
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save as save_safetensors
from streamlit.testing.v1 import AppTest

from app.runs import available_runs
from app.state import RUN_KEY
from engine.adapters import adapt
from engine.data import load_dataset
from engine.errors import AtlasError
from engine.importing import import_run
from engine.loading import load_run_model
from engine.models import build_model
from engine.store import Run, uploads
from engine.store.uploads import save_dataset
from engine.training import RunSpec

ROOT = Path(__file__).resolve().parent.parent
MAX_GROWTH = 100 * 2**20  # bytes: what refusing a hostile file may allocate at its peak
MAX_SECONDS = 5.0  # generous: the refusals take milliseconds to tenths of a second


def refused_within_bounds(attempt, message: str, max_bytes: int = MAX_GROWTH) -> None:
    """The watchdog: `attempt()` raises AtlasError matching the regex `message`, in under
    MAX_SECONDS (timed alone) and with a peak memory growth under `max_bytes` (run again under
    tracemalloc, which sees Python's and numpy's allocations, not torch's, and slows loops
    that allocate many times over)."""
    start = time.perf_counter()
    with pytest.raises(AtlasError, match=message):
        attempt()
    elapsed = time.perf_counter() - start
    tracemalloc.start()
    try:
        with pytest.raises(AtlasError, match=message):
            attempt()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < MAX_SECONDS, f"refused after {elapsed:.1f} s"
    assert peak < max_bytes, f"refusing it took {peak / 2**20:.0f} MB"


class Payload:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def good() -> dict:
    """A valid digits-VAE config.json and checkpoint (untrained weights: the checks do not care)."""
    spec = RunSpec.from_preset("digits-vae")
    spec.model = spec.model_config(spec.load_data("train"))
    torch.manual_seed(0)
    tensors = {f"model.{k}": v for k, v in build_model("vae", spec.model).state_dict().items()}
    return {"config": spec.to_dict(), "tensors": tensors}


@dataclass
class Place:
    """A runs root with a run and a dataset in it, a sentinel folder beside it, and where a
    pickle payload would leave its mark."""

    root: Path
    sentinel: Path
    marker: Path
    monkeypatch: pytest.MonkeyPatch
    config: dict
    tensors: dict


@pytest.fixture
def place(tmp_path, monkeypatch, good) -> Place:
    root, sentinel = tmp_path / "runs", tmp_path / "sentinel"
    sentinel.mkdir()
    np.savez(sentinel / "data.npz", x=np.zeros((4, 3)))
    (sentinel / "passwd").write_text("root:x:0:0\n")
    import_run(root, config_bytes(good["config"]), ckpt_bytes(good["tensors"]), "existing")
    save_dataset(root, "existing", npz_bytes(x=np.random.default_rng(0).random((20, 8, 8))), "d.npz")
    return Place(root, sentinel, tmp_path / "pwned", monkeypatch, good["config"], dict(good["tensors"]))


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under `folder` (hidden ones too) with a hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


# -- building hostile files ---------------------------------------------------------------------------


def config_bytes(config: dict) -> bytes:
    return json.dumps(config).encode()


def ckpt_bytes(tensors: dict) -> bytes:
    return save_safetensors(tensors, metadata={"atlas_meta": json.dumps({"step": 7})})


def npz_bytes(compressed: bool = False, **arrays) -> bytes:
    out = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(out, **arrays)
    return out.getvalue()


def torch_save_bytes(obj) -> bytes:
    out = io.BytesIO()
    torch.save(obj, out)
    return out.getvalue()


def png_bytes(height: int, width: int, colour: bool = False) -> bytes:
    rng = np.random.default_rng(height * 1000 + width)
    pixels = rng.integers(0, 256, (height, width, 3) if colour else (height, width), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


def wide_csv(columns: int) -> bytes:
    """A header and two rows of `columns` columns: 11.9 MB for 10^6."""
    row = b",".join([b"1"] * columns) + b"\n"
    return b",".join(f"c{i}".encode() for i in range(columns)) + b"\n" + row + row


def npy_claiming(shape: tuple[int, ...], descr: str = "<f8", data: bytes = bytes(64)) -> bytes:
    """An .npy stream whose header declares `shape` of `descr` but which holds only `data`."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": False, "shape": shape})
    return out.getvalue() + data


def with_declared_size(archive: bytes, size: int) -> bytes:
    """The zip with its last member's uncompressed size in the central directory set to
    `size`: a directory that lies."""
    at = archive.rindex(b"PK\x01\x02")
    return archive[: at + 24] + struct.pack("<I", size) + archive[at + 28 :]


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header (signature, IHDR, a small IDAT, IEND) for an 8-bit gray image of
    width x height pixels: a few hundred bytes that claim any size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">2I5B", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(1000))) + chunk(b"IEND", b"")
    )


def changed_model(p: Place, **model) -> bytes:
    return config_bytes({**p.config, "model": {**p.config["model"], **model}})


def changed_tensor(p: Place, name: str, value) -> bytes:
    return ckpt_bytes({**p.tensors, name: value})


W = "model.decoder.0.0.weight"  # a weight of the digits VAE


def import_with(config=None, ckpt=None, name=""):
    """An attempt to import, with the good config or checkpoint where None is given."""
    return lambda p: import_run(
        p.root, config(p) if config else config_bytes(p.config), ckpt(p) if ckpt else ckpt_bytes(p.tensors), name
    )


def upload(data, file_name: str, name: str = "upload", **options):
    return lambda p: save_dataset(p.root, name, data(p) if callable(data) else data, file_name, **options)


def adapted(kind: str, files: dict, **options):
    """An attempt that writes `files` ({name: bytes, or a function of the place}) into a folder beside
    the runs root and converts it with engine.adapters."""

    def attempt(p: Place):
        folder = p.root.parent / f"theirs-{kind}"
        folder.mkdir(exist_ok=True)
        for name, content in files.items():
            (folder / name).write_bytes(content(p) if callable(content) else content)
        return adapt(kind, folder, p.root, {"name": "digits", "options": {}}, **options)

    return attempt


PYTHAE_CONFIG = json.dumps(
    {
        "name": "VAEConfig",
        "input_dim": [1, 8, 8],
        "latent_dim": 2,
        "uses_default_encoder": True,
        "uses_default_decoder": True,
        "reconstruction_loss": "bce",
    }
).encode()


def nan_images() -> np.ndarray:
    x = np.random.default_rng(0).random((10, 8, 8)).astype(np.float32)
    x[3, 2, 2] = np.nan
    return x


def with_limit(attribute: str, value: int, attempt):
    def run(p: Place):
        p.monkeypatch.setattr(uploads, attribute, value)
        return attempt(p)

    return run


def reading_outside(p: Place) -> bytes:
    return config_bytes({**p.config, "data": {"name": f"file:{p.sentinel / 'data.npz'}", "options": {}}})


def placed_config(config: dict):
    """A config.json dropped straight into the runs root (not imported), then loaded."""

    def run(p: Place):
        run_dir = p.root / "20260101-000000-dropped-0000"
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config))
        (run_dir / "checkpoints" / "ckpt-00000001.safetensors").write_bytes(ckpt_bytes(p.tensors))
        return load_run_model(Run.from_dir(run_dir, readonly=True))

    return run


BIG_MLP = {"hidden": [8192] * 3}  # each width allowed, 270 million parameters in all

# id -> (attempt, what the message must say)
CASES = {
    # checkpoints
    "ckpt-pickle-payload": (import_with(ckpt=lambda p: pickle.dumps({W: Payload(p.marker)})), "can run code"),
    "ckpt-torch-save-payload": (import_with(ckpt=lambda p: torch_save_bytes({W: Payload(p.marker)})), "can run code"),
    "ckpt-old-pickle-protocol": (
        import_with(ckpt=lambda p: pickle.dumps({W: Payload(p.marker)}, protocol=0)),
        "not a safetensors",
    ),
    "ckpt-empty": (import_with(ckpt=lambda p: b""), "empty"),
    "ckpt-truncated": (import_with(ckpt=lambda p: ckpt_bytes(p.tensors)[:-100]), "corrupt"),
    "ckpt-truncated-header": (import_with(ckpt=lambda p: ckpt_bytes(p.tensors)[:30]), "corrupt"),
    "ckpt-oversized": (
        lambda p: import_run(p.root, config_bytes(p.config), ckpt_bytes(p.tensors), max_bytes=10_000),
        "limit of 10,000 bytes",
    ),
    "ckpt-random-bytes": (import_with(ckpt=lambda p: np.random.default_rng(1).bytes(5000)), "corrupt"),
    "ckpt-wrong-dtype": (import_with(ckpt=lambda p: changed_tensor(p, W, p.tensors[W].double())), "dtype"),
    "ckpt-wrong-shape": (import_with(ckpt=lambda p: changed_tensor(p, W, torch.zeros(3, 3))), "shape"),
    "ckpt-missing-tensor": (
        import_with(ckpt=lambda p: ckpt_bytes({k: v for k, v in p.tensors.items() if k != W})),
        "missing",
    ),
    "ckpt-stranger-tensor": (import_with(ckpt=lambda p: changed_tensor(p, "evil.x", torch.ones(2))), "evil.x"),
    "ckpt-nan-weight": (import_with(ckpt=lambda p: changed_tensor(p, W, p.tensors[W] * float("nan"))), "NaN"),
    "ckpt-inf-weight": (import_with(ckpt=lambda p: changed_tensor(p, W, p.tensors[W] + float("inf"))), "infinite"),
    "ckpt-nan-ema": (
        import_with(
            ckpt=lambda p: ckpt_bytes({**p.tensors, **{"ema." + k[6:]: v * float("nan") for k, v in p.tensors.items()}})
        ),
        "NaN",
    ),
    # config.json
    "config-invalid-json": (import_with(config=lambda p: b'{"family": "vae",'), "not valid JSON"),
    "config-not-utf8": (import_with(config=lambda p: b"\xff\xfe\x00{"), "UTF-8"),
    "config-not-an-object": (import_with(config=lambda p: b"[1, 2]"), "JSON object"),
    "config-deep-nesting": (import_with(config=lambda p: b"[" * 100_000 + b"]" * 100_000), "JSON"),
    "config-oversized": (
        import_with(config=lambda p: config_bytes({**p.config, "preset": "x" * 2_000_000})),
        "limit of 1.0 MB",
    ),
    "config-unknown-family": (
        import_with(config=lambda p: config_bytes({**p.config, "family": "nonsense"})),
        "unknown model family",
    ),
    "config-latent-1e9": (import_with(config=lambda p: changed_model(p, latent_dim=10**9)), "latent_dim"),
    "config-hidden-1e8": (import_with(config=lambda p: changed_model(p, hidden=[10**8])), "between 1 and 8192"),
    "config-270M-parameters": (import_with(config=lambda p: changed_model(p, **BIG_MLP)), "parameters"),
    "config-image-1e6-px": (import_with(config=lambda p: changed_model(p, input_shape=[1, 10**6, 10**6])), "8192"),
    "config-input-12M-values": (
        import_with(config=lambda p: changed_model(p, arch="conv", input_shape=[3, 2048, 2048])),
        "values per example",
    ),
    "config-infinite-size": (
        import_with(config=lambda p: changed_model(p, input_shape=[1, float("inf"), 8])),
        "invalid vae config",
    ),
    "config-unknown-key": (import_with(config=lambda p: changed_model(p, colour=3)), "unknown vae config key"),
    "config-section-wrong-type": (import_with(config=lambda p: config_bytes({**p.config, "model": 5})), "wrong type"),
    "config-bad-train": (import_with(config=lambda p: config_bytes({**p.config, "train": {"lr": -1}})), "train.lr"),
    "config-reads-outside-root": (import_with(config=reading_outside), "outside"),
    "config-reads-via-dotdot": (
        import_with(
            config=lambda p: config_bytes(
                {
                    **p.config,
                    "data": {
                        "name": "npz",
                        "options": {"path": str(p.root / ".data" / ".." / ".." / "sentinel" / "data.npz")},
                    },
                }
            )
        ),
        "outside",
    ),
    "config-unknown-dataset": (
        import_with(config=lambda p: config_bytes({**p.config, "data": {"name": "/etc/passwd"}})),
        "neither",
    ),
    "runs-root-config-270M-parameters": (
        placed_config({"family": "vae", "model": BIG_MLP, "data": {"name": "digits"}}),
        "parameters",
    ),
    "runs-root-config-wrong-type": (
        placed_config({"family": "vae", "model": 5, "data": {"name": "digits"}}),
        "wrong type",
    ),
    # run names
    "run-name-dotdot": (import_with(name="../escape"), "Invalid run name"),
    "run-name-absolute": (import_with(name="/tmp/escape"), "Invalid run name"),
    "run-name-newline": (import_with(name="run\nname"), "Invalid run name"),
    "run-name-fullwidth": (import_with(name="ｒｕｎ"), "Invalid run name"),
    # dataset uploads
    "upload-too-large": (upload(npz_bytes(x=np.zeros((100, 8, 8))), "d.npz", max_bytes=1000), "limit of 1,000 bytes"),
    "upload-empty": (upload(b"", "d.csv"), "empty"),
    "upload-wrong-format": (upload(b"MZ\x90\x00", "tool.exe"), "not a format"),
    "upload-png-named-csv": (upload(png_bytes(8, 8), "table.csv"), "binary"),
    "upload-csv-named-npz": (upload(b"a,b\n1,2\n", "arrays.npz"), "not an NPZ"),
    "upload-npz-pickled-objects": (
        upload(lambda p: npz_bytes(x=np.array([Payload(p.marker)], dtype=object)), "d.npz"),
        "Python objects",
    ),
    "upload-npz-no-x": (upload(npz_bytes(images=np.zeros((3, 8, 8))), "d.npz"), "no array named 'x'"),
    "upload-npz-zero-rows": (upload(npz_bytes(x=np.zeros((0, 8, 8))), "d.npz"), "no values"),
    "upload-npz-nan-images": (upload(npz_bytes(x=nan_images()), "d.npz"), "NaN"),
    "upload-npz-nan-table": (upload(npz_bytes(x=nan_images()[:, 2]), "d.npz"), "missing or NaN"),
    "upload-npz-images-out-of-range": (
        upload(npz_bytes(x=np.linspace(-1, 5, 640).reshape(10, 8, 8)), "d.npz"),
        "from -1 to 5",
    ),
    "upload-npz-huge-values": (
        upload(npz_bytes(x=np.random.default_rng(0).random((10, 3)) * [1, 1, 1e30]), "d.npz"),
        "magnitude",
    ),
    "upload-npz-huge-images": (upload(npz_bytes(x=np.zeros((2, 4, 2000), np.uint8)), "d.npz"), "at most 1024"),
    "upload-csv-header-only": (upload(b"a,b,c\n", "d.csv"), "no rows"),
    "upload-csv-empty-cells": (upload(b"a,b\n1,2\n3,\n5,6\n", "d.csv"), "missing or NaN"),
    "upload-csv-infinite": (upload(b"a,b\n1,2\n3,inf\n5,6\n", "d.csv"), "infinite"),
    "upload-csv-1e6-columns": (upload(wide_csv(10**6), "d.csv"), "the CSV has 1,000,000 columns"),
    "upload-csv-20000-columns": (
        upload(wide_csv(20_000), "d.csv"),
        "the CSV has 20,000 columns; at most 10,000 are supported",
    ),
    "upload-npz-header-1e12-values": (
        upload(zip_bytes({"x.npy": npy_claiming((10**6, 10**6))}), "d.npz"),
        "x has shape (1000000, 1000000) of float64, 1,000,000,000,000 values",
    ),
    "upload-npz-pickled-labels": (
        upload(
            zip_bytes({"x.npy": npy_claiming((4, 3), "<f8", bytes(96)), "y.npy": npy_claiming((4,), "|O")}), "d.npz"
        ),
        "Python objects",
    ),
    "upload-zip-mismatched-sizes": (
        upload(zip_bytes({"a/1.png": png_bytes(8, 8), "b/2.png": png_bytes(9, 9)}), "d.zip"),
        "different sizes",
    ),
    "upload-zip-slip": (upload(zip_bytes({"../../sentinel/evil.png": png_bytes(8, 8)}), "d.zip"), "outside"),
    "upload-zip-absolute-member": (upload(zip_bytes({"/etc/evil.png": png_bytes(8, 8)}), "d.zip"), "outside"),
    "upload-zip-not-an-image": (
        upload(zip_bytes({"a/1.png": b"<html>not a picture</html>"}), "d.zip"),
        "not a readable PNG",
    ),
    "upload-zip-other-files": (
        upload(zip_bytes({"a/1.png": png_bytes(8, 8), "a/run.sh": b"rm -rf /"}), "d.zip"),
        "not a .png",
    ),
    "upload-zip-huge-image": (upload(zip_bytes({"a/1.png": png_bytes(8, 3000)}), "d.zip"), "at most 1024"),
    "upload-zip-png-50000x50000": (
        upload(zip_bytes({"a/1.png": png_bytes(8, 8), "a/2.png": png_claiming(50_000, 50_000)}), "d.zip"),
        "a/2.png: the image is too large",
    ),
    "upload-zip-member-declares-100MB": (
        upload(with_declared_size(zip_bytes({"a/1.png": png_bytes(8, 8)}), 100 * 2**20), "d.zip"),
        "'a/1.png' unpacks to 100.0 MB; an image file may be at most 32.0 MB",
    ),
    "upload-zip-bomb": (
        with_limit("MAX_UNPACKED_BYTES", 1 << 20, upload(zip_bytes({"a/1.png": bytes(2 << 20)}), "d.zip")),
        "unpacks to",
    ),
    "upload-npz-bomb": (
        with_limit("MAX_UNPACKED_BYTES", 1 << 20, upload(npz_bytes(True, x=np.zeros((300, 1000))), "d.npz")),
        "unpacks to",
    ),
    "upload-zip-no-images": (upload(zip_bytes({"__MACOSX/._x": b"", "a/.DS_Store": b""}), "d.zip"), "no images"),
    "upload-zip-mixed-depths": (
        upload(zip_bytes({"1.png": png_bytes(8, 8), "a/2.png": png_bytes(8, 8)}), "d.zip"),
        "several depths",
    ),
    "upload-name-dotdot": (
        upload(npz_bytes(x=np.zeros((4, 8, 8))), "d.npz", name="../../sentinel/x"),
        "Invalid dataset name",
    ),
    "upload-name-absolute": (upload(npz_bytes(x=np.zeros((4, 8, 8))), "d.npz", name="/tmp/x"), "Invalid dataset name"),
    "upload-name-odd-characters": (
        upload(npz_bytes(x=np.zeros((4, 8, 8))), "d.npz", name="a b\x00"),
        "Invalid dataset name",
    ),
    "upload-name-taken": (upload(npz_bytes(x=np.zeros((4, 8, 8))), "d.npz", name="existing"), "exists already"),
    # models saved by other projects (engine/adapters; each adapter's own test file has more)
    "adapter-pythae-pickle-payload": (
        adapted("pythae", {"model_config.json": PYTHAE_CONFIG, "model.pt": lambda p: pickle.dumps(Payload(p.marker))}),
        "weights_only=True",
    ),
    "adapter-pythae-config-is-a-list": (adapted("pythae", {"model_config.json": b"[1, 2]"}), "must hold a JSON object"),
    "adapter-diffusers-another-class": (
        adapted("diffusers", {"config.json": b'{"_class_name": "UNet2DModel"}'}),
        "UNet2DModel",
    ),
    "adapter-vdvae-unknown-hps": (adapted("vdvae", {"model-ema.th": b"PK\x03\x04"}, hps="cifar11"), "cifar11"),
}


def test_the_pickle_payload_is_live(tmp_path):
    """Without this, a payload that never ran would prove nothing."""
    pickle.loads(pickle.dumps(Payload(tmp_path / "probe")))
    assert (tmp_path / "probe").exists()


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_input_is_refused_with_a_message_and_no_side_effect(place, case):
    attempt, message = CASES[case]
    before = snapshot(place.root), snapshot(place.sentinel)
    refused_within_bounds(lambda: attempt(place), re.escape(message))
    if not case.startswith("runs-root-"):  # those put their file in the root themselves, before loading it
        assert snapshot(place.root) == before[0], "the runs root changed"
    assert snapshot(place.sentinel) == before[1], "a file outside the runs root changed"
    assert not place.marker.exists(), "a pickle payload ran"


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 25


def test_good_inputs_are_accepted_and_usable(place):
    """The same checks let good files through, or the refusals above would mean nothing."""
    run = import_run(place.root, config_bytes(place.config), ckpt_bytes(place.tensors), "friends-vae")
    loaded = load_run_model(run)
    assert loaded.step == 7 and run.status.state == "finished"
    assert torch.equal(loaded.model.state_dict()["decoder.0.0.weight"], place.tensors[W])

    saved = save_dataset(place.root, "tab", b"a,b,kind\n1,2,x\n3,,y\n5,6,x\n", "t.csv", allow_missing=True)
    assert (saved.kind, saved.n, saved.missing) == ("tabular", 3, 1)
    pictures = {f"pics/{c}/{i}.png": png_bytes(8, 6, colour=c == "cat") for c in ("cat", "dog") for i in range(5)}
    saved = save_dataset(place.root, "pics", zip_bytes(pictures), "pics.zip")
    assert (saved.kind, saved.shape, saved.classes) == ("image", (3, 8, 6), ["cat", "dog"])
    data = load_dataset(saved.dataset, split="all")  # what `latent-atlas train --dataset ...` reads
    assert data.x.shape == (10, 3, 8, 6) and data.labels["label"].categories == ["cat", "dog"]
    expected = np.asarray(Image.open(io.BytesIO(pictures["pics/dog/3.png"])), dtype=np.float32) / 255
    for channel in range(3):  # dogs come after the cats, and their gray became RGB
        np.testing.assert_array_equal(data.x[8, channel].numpy(), expected)
    assert saved.dataset in saved.train_command(place.root)

    replacement = npz_bytes(x=np.ones((5, 8, 8)))
    saved = save_dataset(place.root, "existing", replacement, "d.npz", overwrite=True)
    assert saved.path.read_bytes() == replacement


def test_a_run_training_on_an_upload_starts(place):
    """The dataset name the Import page hands to start_training trains a model."""
    from engine.training import train

    saved = save_dataset(place.root, "small", npz_bytes(x=np.random.default_rng(0).random((80, 8, 8))), "s.npz")
    spec = RunSpec.from_preset(
        "digits-vae", {"train": {"steps": 3, "batch_size": 16, "eval_every": 3, "eval_examples": 16, "progress": False}}
    )
    spec.data = {"name": saved.dataset, "options": {}}
    run = train(spec, place.root)
    assert run.status.state == "finished" and run.metrics.max_step() == 3


def test_no_page_renders_html():
    """User-provided strings are shown as text: nothing in the app turns a string into HTML."""
    sources = [*ROOT.glob("pages/*.py"), *ROOT.glob("app/*.py")]
    for path in sources:
        text = path.read_text()
        for needle in ("unsafe_allow_html=True", "st.html(", "components.html(", "components.v1"):
            assert needle not in text, f"{path.name} uses {needle}"


# -- the Import page ----------------------------------------------------------------------------------


def import_page(root: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("LATENT_ATLAS_RUNS_DIR", str(root))
    return AppTest.from_file(str(ROOT / "pages" / "import_data.py"), default_timeout=60).run()


def test_the_import_page_refuses_hostile_files_and_keeps_serving(place, monkeypatch):
    before = snapshot(place.root)
    at = import_page(place.root, monkeypatch)
    huge = changed_model(place, **BIG_MLP)
    at.file_uploader(key="import-config").set_value(("config.json", huge, "application/json"))
    payload = pickle.dumps({W: Payload(place.marker)})
    at.file_uploader(key="import-checkpoint").set_value(("model.safetensors", payload, "application/octet-stream"))
    at.run()
    at.button(key="import-run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Not imported" in e.value and "parameters" in e.value for e in at.error), [e.value for e in at.error]

    at.file_uploader(key="import-data").set_value(("scan.npz", npz_bytes(x=nan_images()), "application/zip"))
    at.run()
    at.button(key="import-save").click().run()
    assert not at.exception and any("Not saved" in e.value and "NaN" in e.value for e in at.error)
    assert snapshot(place.root) == before and not place.marker.exists()

    # the same session saves a good file and is offered the command to train on it
    scans = npz_bytes(x=np.random.default_rng(0).random((10, 8, 8)))
    at.file_uploader(key="import-data").set_value(("My Scans.npz", scans, "application/zip"))
    at.run()
    assert at.text_input[0].value == "My-Scans"
    at.button(key="import-save").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Saved" in s.value for s in at.success), [e.value for e in at.error]
    assert "--dataset file:" in at.code[0].value and (place.root / ".data" / "My-Scans.npz").is_file()
    started = []
    monkeypatch.setattr("app.training_jobs.start_training", lambda *a, **k: started.append((a, k)) or "job")
    at.button(key="import-train").click().run()
    assert not at.exception and started == [
        (("digits-vae", {"train.steps": 2000}), {"dataset": f"file:{place.root / '.data' / 'My-Scans.npz'}"})
    ]

    # and every other page and model still serves (the models are cached per process, not per page)
    demo = next(c.key for c in available_runs() if c.key.startswith("demo/"))
    home = AppTest.from_file(str(ROOT / "pages" / "home.py"), default_timeout=180)
    home.session_state[RUN_KEY] = demo
    home.run()
    assert not home.exception and not home.error and home.title[0].value


def test_an_imported_run_cannot_name_the_folder_of_an_embedded_dataset(tmp_path):
    """fashion-mnist takes a folder (path=) for a local user; in an imported run's config.json it
    would point the dashboard at any folder, so the import refuses it and writes nothing."""
    from engine.importing import check_dataset

    check_dataset({"name": "fashion-mnist", "options": {}}, tmp_path)  # found where this machine keeps it
    with pytest.raises(AtlasError, match=r"dataset 'fashion-mnist' are \(path\); an imported run may not point"):
        check_dataset({"name": "fashion-mnist", "options": {"path": "/etc"}}, tmp_path)
    assert not any(tmp_path.iterdir())
