"""Run store: atomic writes, safetensors checkpoints, run ids, listing, metrics, logger."""

from __future__ import annotations

import errno
import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save as save_safetensors

from engine.errors import AtlasError
from engine.store import (
    MetricsDB,
    Run,
    RunLogger,
    RunStore,
    atomic,
    atomic_write_bytes,
    atomic_write_json,
)
from engine.store.checkpoints import read_checkpoint_meta

CONFIG = {"model": {"name": "vae", "latent_dim": 8}, "dataset": "digits", "lr": 1e-3}


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs")


@pytest.fixture
def run(store: RunStore) -> Run:
    return store.create_run(CONFIG, name_hint="test")


def failing_write(fd: int, data: memoryview) -> None:
    """Writes half the bytes, then fails as a full disk would."""
    os.write(fd, data[: len(data) // 2])
    raise OSError(errno.ENOSPC, "No space left on device")


def temp_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


# -- atomic writes ---------------------------------------------------------------


def test_atomic_write_replaces_and_failure_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "status.json"
    atomic_write_json(path, {"state": "created"})
    atomic_write_json(path, {"state": "running"})
    assert json.loads(path.read_text()) == {"state": "running"}

    monkeypatch.setattr(atomic, "_write_all", failing_write)
    with pytest.raises(OSError) as caught:
        atomic_write_bytes(path, b"x" * 10_000)
    assert caught.value.errno == errno.ENOSPC
    assert json.loads(path.read_text()) == {"state": "running"}
    assert temp_files(tmp_path) == []


def test_atomic_write_json_rejects_unserialisable(tmp_path):
    with pytest.raises(AtlasError, match="x.json"):
        atomic_write_json(tmp_path / "x.json", {"path": Path("/")})
    assert list(tmp_path.iterdir()) == []


# -- checkpoints -------------------------------------------------------------------


def sample_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=g)
    base[0, :3] = torch.tensor([float("inf"), -float("inf"), -0.0])
    return {
        "w32": base,
        "w16": base.half(),
        "wbf16": base.bfloat16(),
        "i64": torch.randint(-(2**62), 2**62, (7,), generator=g, dtype=torch.int64),
        "u8": torch.randint(0, 256, (3, 4, 2), generator=g, dtype=torch.uint8),
        "scalar": torch.tensor(3.5),
        "empty": torch.empty(0, 3),
        "transposed": base.t(),  # not contiguous, shares memory with w32
        "view": base[2],  # shares memory with w32
    }


def assert_bit_exact(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a, b)
    assert torch.equal(a.contiguous().flatten().view(torch.uint8), b.flatten().view(torch.uint8))


def test_checkpoint_round_trip_is_bit_exact(run):
    tensors = sample_tensors()
    meta = {"epoch": 3, "optimizer": {"name": "adam", "lr": 1e-3, "betas": [0.9, 0.999]}}
    info = run.save_checkpoint(100, tensors, meta)
    assert info.path == run.dir / "checkpoints" / "ckpt-00000100.safetensors"

    loaded, loaded_meta = run.load_checkpoint(100, device="cpu")
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert_bit_exact(tensor, loaded[name])
    assert loaded_meta["epoch"] == 3 and loaded_meta["optimizer"] == meta["optimizer"]
    assert loaded_meta["step"] == 100 and len(loaded_meta["config_hash"]) == 16
    assert read_checkpoint_meta(info.path) == loaded_meta


def test_checkpoints_sorted_latest_and_keep_last(run):
    for step in (30, 5, 1000, 200):
        run.save_checkpoint(step, {"x": torch.full((2,), float(step))}, {})
    assert [c.step for c in run.checkpoints()] == [5, 30, 200, 1000]
    assert run.latest_checkpoint().step == 1000
    tensors, meta = run.load_checkpoint("latest")
    assert meta["step"] == 1000 and tensors["x"][0] == 1000
    assert run.load_checkpoint("ckpt-00000030.safetensors")[1]["step"] == 30

    run.save_checkpoint(2000, {"x": torch.zeros(2)}, {}, keep_last=2)
    assert [c.step for c in run.checkpoints()] == [1000, 2000]
    with pytest.raises(AtlasError, match="available steps"):
        run.load_checkpoint(5)


def test_failed_checkpoint_write_keeps_previous(run, monkeypatch):
    run.save_checkpoint(1, {"x": torch.ones(1000)}, {"note": "good"})
    monkeypatch.setattr(atomic, "_write_all", failing_write)
    for step in (1, 2):  # overwrite the same file, or write a new one
        with pytest.raises(OSError):
            run.save_checkpoint(step, {"x": torch.zeros(1000)}, {}, keep_last=1)
    assert [c.step for c in run.checkpoints()] == [1]
    tensors, meta = run.load_checkpoint("latest")
    assert meta["note"] == "good" and torch.equal(tensors["x"], torch.ones(1000))
    assert temp_files(run.checkpoints_dir) == []


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) - 10],  # truncated tensor bytes
        lambda data: data[:20],  # truncated header
        lambda data: b"",
        lambda data: os.urandom(len(data)),
        lambda data: b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......" + data[24:],
    ],
    ids=["truncated", "truncated-header", "empty", "garbage", "bad-header-json"],
)
def test_corrupt_checkpoint_names_file_and_suggests_previous(run, damage):
    run.save_checkpoint(1, {"x": torch.ones(100)}, {})
    path = run.save_checkpoint(2, {"x": torch.ones(100)}, {}).path
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(AtlasError, match="ckpt-00000002") as caught:
        run.load_checkpoint("latest")
    assert "corrupt" in str(caught.value) and "ckpt-00000001" in str(caught.value)


def test_corrupt_meta_json_is_reported(run):
    path = run.checkpoints_dir / "ckpt-00000007.safetensors"
    run.checkpoints_dir.mkdir()
    path.write_bytes(save_safetensors({"x": torch.ones(2)}, metadata={"atlas_meta": "{oops"}))
    with pytest.raises(AtlasError, match="ckpt-00000007.*meta"):
        run.load_checkpoint(7)


class Payload:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickle_disguised_as_checkpoint_never_runs(run, tmp_path, writer):
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Payload(probe)))
    assert probe.exists(), "the payload must be live for this test to mean anything"

    marker = tmp_path / "pwned"
    path = run.checkpoints_dir / "ckpt-00000001.safetensors"
    run.checkpoints_dir.mkdir()
    if writer == "pickle":
        path.write_bytes(pickle.dumps({"x": Payload(marker)}))
    else:
        torch.save({"x": Payload(marker)}, path)
    with pytest.raises(AtlasError, match="ckpt-00000001"):
        run.load_checkpoint("latest")
    with pytest.raises(AtlasError):
        read_checkpoint_meta(path)
    assert not marker.exists()


def test_checkpoint_inputs_are_checked(run):
    with pytest.raises(AtlasError, match="step"):
        run.save_checkpoint(-1, {"x": torch.ones(1)}, {})
    with pytest.raises(AtlasError, match="torch.Tensor"):
        run.save_checkpoint(1, {"x": [1, 2]}, {})
    with pytest.raises(AtlasError, match="JSON"):
        run.save_checkpoint(1, {"x": torch.ones(1)}, {"bad": object()})
    with pytest.raises(AtlasError):
        run.load_checkpoint("../config.json")
    assert run.checkpoints() == []


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA device, and torch sees none: the suite's one skip, for machines without a GPU",
)
def test_checkpoint_from_and_to_cuda(run):
    x = torch.randn(10, device="cuda")
    run.save_checkpoint(1, {"x": x}, {})
    tensors, _ = run.load_checkpoint(1, device="cuda")
    assert tensors["x"].is_cuda and torch.equal(tensors["x"], x)


# -- run ids and directories ---------------------------------------------------------


BAD_IDS = [
    "..",
    "../x",
    "a/../b",
    "/etc/passwd",
    "a/b",
    "a\\b",
    "",
    ".",
    ".hidden",
    "-x",
    "a..b",
    " run",
    "run ",
    "run\n",
    "a\x00b",
    "café",
    "ｒｕｎ",
    "run\u202e",
    "run\u200b",
    "x" * 201,
    None,
    5,
]


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_bad_run_ids_are_rejected(store, run, bad):
    with pytest.raises(AtlasError):
        store.open_run(bad)


def test_symlink_out_of_root_is_rejected(store, run, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    (store.root / "escape").symlink_to(outside)
    with pytest.raises(AtlasError, match="outside"):
        store.open_run("escape")


def test_create_and_open_run(store):
    run = store.create_run(CONFIG, name_hint="My VAE!")
    assert run.id.endswith(tuple("0123456789abcdef")) and "-my-vae-" in run.id
    opened = store.open_run(run.id)
    assert opened.config == CONFIG and opened.status.state == "created"
    assert "-vae-digits-" in store.create_run(CONFIG).id
    with pytest.raises(AtlasError, match="No run"):
        store.open_run("20200101-000000-none-0000")
    with pytest.raises(AtlasError, match="JSON"):
        store.create_run({"x": object()})


def test_run_ids_are_collision_safe(store, monkeypatch):
    monkeypatch.setattr("engine.store.runs.time.strftime", lambda fmt: "20261121-101500")
    hexes = iter(["3fa2", "3fa2", "3fa2", "77b1"])
    monkeypatch.setattr("engine.store.runs.secrets.token_hex", lambda n: next(hexes))
    first = store.create_run(CONFIG, name_hint="vae-digits")
    second = store.create_run(CONFIG, name_hint="vae-digits")
    assert first.id == "20261121-101500-vae-digits-3fa2"
    assert second.id == "20261121-101500-vae-digits-77b1"


def test_run_from_dir_outside_root(tmp_path, run):
    demo = tmp_path / "assets" / "runs" / "demo-vae"
    demo.mkdir(parents=True)
    (demo / "config.json").write_text(json.dumps(CONFIG))
    opened = Run.from_dir(demo, readonly=True)
    assert opened.id == "demo-vae" and opened.config == CONFIG
    assert opened.metrics.scalars() == {} and not (demo / "metrics.sqlite").exists()
    with pytest.raises(AtlasError, match="read-only"):
        opened.set_status("running")
    with pytest.raises(AtlasError, match="No run directory"):
        Run.from_dir(tmp_path / "missing")


def test_status_and_dead_pid_is_interrupted(store, run):
    run.set_status("running")
    [info] = store.list_runs()
    assert info.status == "running"  # this very process is alive

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    status = json.loads((run.dir / "status.json").read_text())
    status["pid"] = dead.pid
    atomic_write_json(run.dir / "status.json", status)
    assert run.status.state == "running"
    [info] = store.list_runs()
    assert info.status == "interrupted" and str(dead.pid) in info.reason

    status["host"] = "some-other-host-" + socket.gethostname()
    atomic_write_json(run.dir / "status.json", status)
    assert store.list_runs()[0].status == "running"  # cannot check another host

    with pytest.raises(AtlasError, match="state"):
        run.set_status("exploded")


def test_list_runs_survives_broken_runs(store):
    good = [store.create_run({**CONFIG, "i": i}) for i in range(3)]
    good[1].save_checkpoint(50, {"x": torch.ones(1)}, {})
    good[1].metrics.log_scalars(70, {"loss": 0.25, "kl": 1.5})
    bad_json = store.create_run(CONFIG, name_hint="bad")
    (bad_json.dir / "config.json").write_text("{not json")
    (store.root / "no-config").mkdir()
    (store.root / "stray-file.txt").write_text("ignored")
    (store.root / ".hidden").mkdir()

    infos = store.list_runs()
    by_id = {i.id: i for i in infos}
    assert set(by_id) == {r.id for r in good} | {bad_json.id, "no-config"}
    assert by_id[bad_json.id].status == "broken" and "config.json" in by_id[bad_json.id].reason
    assert by_id["no-config"].status == "broken"
    info = by_id[good[1].id]
    assert (info.model, info.dataset, info.status) == ("vae", "digits", "created")
    assert info.latest_step == 70 and info.n_checkpoints == 1
    assert info.metrics == {"kl": 1.5, "loss": 0.25}
    created = [i.created for i in infos if i.status != "broken"]
    assert created == sorted(created, reverse=True)
    assert RunStore(store.root / "missing").list_runs() == []


def test_model_and_dataset_names_from_config_layouts(store):
    spec_like = {"family": "hvae", "model": {"blocks": "8x2"}, "data": {"name": "shapes"}}
    run = store.create_run(spec_like)
    assert "-hvae-shapes-" in run.id
    [info] = store.list_runs()
    assert (info.model, info.dataset) == ("hvae", "shapes")


# -- metrics ---------------------------------------------------------------------------


def test_metrics_round_trip_replace_and_nan(tmp_path):
    db = MetricsDB(tmp_path / "m.sqlite")
    assert db.scalars() == {} and db.latest("loss") is None and db.max_step() is None
    for step in range(10):
        db.log_scalars(step, {"loss": 1.0 / (step + 1), "kl": float(step)})
    db.log_scalars(3, {"loss": 42.0, "nan": float("nan")})

    assert db.scalar_names() == ["kl", "loss", "nan"]
    series = db.scalars()
    steps, values = series["loss"]
    assert steps.tolist() == list(range(10)) and values[3] == 42.0 and steps.dtype == np.int64
    assert np.isnan(series["nan"][1][0])
    assert list(db.scalars(["kl"], since_step=7)) == ["kl"]
    assert db.scalars(["kl"], since_step=7)["kl"][0].tolist() == [8, 9]
    assert db.latest("loss") == (9, 0.1) and db.max_step() == 9
    journal = db._read("PRAGMA journal_mode")[0][0]
    assert journal == "wal"


def test_metrics_logged_between_wall_times(tmp_path):
    db = MetricsDB(tmp_path / "m.sqlite")
    db.log_scalars(1, {"speed": 10.0}, wall=100.0)
    db.log_scalars(2, {"speed": 20.0, "loss": 1.0}, wall=200.0)
    db.log_scalars(3, {"speed": 30.0}, wall=300.0)
    assert db.logged_between("speed", 150.0, 300.0) == [(2, 20.0)]  # start included, end excluded
    assert db.logged_between("speed", 0.0, 1e9) == [(1, 10.0), (2, 20.0), (3, 30.0)]
    assert db.logged_between("loss", 250.0, 400.0) == []


def test_metrics_truncate_after_for_resume(tmp_path):
    db = MetricsDB(tmp_path / "m.sqlite")
    for step in range(0, 200, 10):
        db.log_scalars(step, {"loss": float(step)})
    db.log_image(150, "samples", np.zeros((2, 2), np.uint8))
    db.truncate_after(100)
    assert db.scalars()["loss"][0].max() == 100 and db.images("samples") == []
    db.log_scalars(110, {"loss": -1.0})
    assert db.scalars()["loss"][1][-1] == -1.0


def test_metrics_images(tmp_path):
    db = MetricsDB(tmp_path / "m.sqlite")
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    db.log_image(1, "samples", rgb)
    db.log_image(2, "samples", np.zeros((4, 4, 1), np.uint8))
    import io

    from PIL import Image

    [(step, png), _] = db.images("samples")
    assert step == 1 and np.array_equal(np.asarray(Image.open(io.BytesIO(png))), rgb)
    db.log_image(3, "raw", png)
    assert db.images("raw") == [(3, png)] and db.image_names() == ["raw", "samples"]
    assert [step for step, _ in db.images("samples", since_step=1)] == [2]
    with pytest.raises(AtlasError, match="uint8"):
        db.log_image(4, "bad", np.zeros((4, 4), np.float32))
    with pytest.raises(AtlasError, match="PNG"):
        db.log_image(4, "bad", b"GIF89a")


def test_metrics_readonly(tmp_path):
    path = tmp_path / "m.sqlite"
    reader = MetricsDB(path, readonly=True)
    assert reader.scalars() == {} and not path.exists()
    with pytest.raises(AtlasError, match="read-only"):
        reader.log_scalars(1, {"x": 1.0})
    MetricsDB(path).log_scalars(1, {"x": 1.0})
    assert reader.latest("x") == (1, 1.0)
    with pytest.raises(AtlasError, match="number"):
        MetricsDB(path).log_scalars(1, {"x": "high"})


def test_metrics_readable_in_readonly_directory(tmp_path):
    """A shipped run in a directory nobody may write to (trivially passes as root)."""
    shipped = tmp_path / "shipped"
    MetricsDB(shipped / "m.sqlite").log_scalars(1, {"x": 1.0})
    shipped.chmod(0o555)
    try:
        assert MetricsDB(shipped / "m.sqlite", readonly=True).latest("x") == (1, 1.0)
    finally:
        shipped.chmod(0o755)


def test_garbage_metrics_file_is_reported(tmp_path, store, run):
    (run.dir / "metrics.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(AtlasError, match="metrics.sqlite"):
        run.metrics.scalars()
    with pytest.raises(AtlasError, match="metrics.sqlite"):
        run.metrics.log_scalars(1, {"x": 1.0})
    [info] = store.list_runs()
    assert info.status == "broken" and "metrics.sqlite" in info.reason


def test_metrics_seal_for_shipping(tmp_path):
    db = MetricsDB(tmp_path / "m.sqlite")
    db.log_scalars(1, {"x": 1.0})
    db.seal()
    assert db._read("PRAGMA journal_mode")[0][0] == "delete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.sqlite"]
    db.log_scalars(2, {"x": 2.0})
    assert db._read("PRAGMA journal_mode")[0][0] == "wal" and db.latest("x") == (2, 2.0)


# -- logger -------------------------------------------------------------------------------


def test_logger_context_buffers_and_finishes(tmp_path):
    root = tmp_path / "runs"
    with RunLogger.create(root, config=CONFIG, name="myrun", flush_every_s=1e9, flush_rows=10) as log:
        assert log.run.status.state == "running"
        for step in range(5):
            log.scalar(step, "loss", torch.tensor(float(step)))
        assert log.run.metrics.scalars() == {}  # still buffered
        log.scalars(5, {"loss": 5.0, "acc": np.float32(0.5)})
        log.scalars(6, {"loss": 6.0, "acc": 0.6, "lr": 0.1, "x": 1, "y": 2})
        assert len(log.run.metrics.scalars()["loss"][0]) >= 6  # flushed at 10 rows
        log.scalar(7, "loss", 7.0)
        log.image(7, "samples", np.zeros((3, 3, 3), np.uint8))
        log.checkpoint(7, {"w": torch.ones(3)}, {"epoch": 1}, keep_last=2)
        assert log.run.metrics.latest("loss") == (7, 7.0)  # checkpoint flushed first
    [info] = RunStore(root).list_runs()
    assert info.status == "finished" and info.n_checkpoints == 1 and "myrun" in info.id
    with pytest.raises(AtlasError, match="single number"):
        log.scalar(8, "loss", torch.ones(2))


def test_logger_marks_failure_and_resumes(tmp_path):
    log = RunLogger.create(tmp_path, config=CONFIG, flush_every_s=1e9)
    with pytest.raises(ValueError), log:
        log.scalar(1, "loss", 1.0)
        raise ValueError("loss is NaN")
    status = log.run.status
    assert status.state == "failed" and status.reason == "ValueError: loss is NaN"
    assert log.run.metrics.latest("loss") == (1, 1.0)  # flushed on the way out

    for step in range(2, 10):
        log.run.metrics.log_scalars(step, {"loss": float(step)})
    resumed = RunLogger.attach(log.dir, resume_from_step=5)
    with resumed:
        resumed.scalar(5, "loss", -5.0)
        resumed.scalar(6, "loss", -6.0)
    steps, values = resumed.run.metrics.scalars()["loss"]
    assert steps.tolist() == [1, 2, 3, 4, 5, 6] and values[-2:].tolist() == [-5.0, -6.0]
    assert resumed.run.status.state == "finished"
