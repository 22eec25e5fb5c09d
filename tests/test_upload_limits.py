"""Files whose size is the attack (columns, rows, line length, array headers, zip members
and their sizes, pixels), too large to build for every case of tests/test_hostile_inputs.py,
and the same limits for files loaded by path. Each is refused from a bounded read of its
headers, before anything in proportion to what it claims is allocated: under that file's
watchdog (time, and peak memory growth under tracemalloc), naming what was wrong, with the
runs root unchanged. Before these checks the 11.9 MB CSV of 10^6 columns took 160 s and
2.9 GB to be refused."""

from __future__ import annotations

import hashlib
import io
import re
import struct
import zipfile
from pathlib import Path

import pandas  # noqa: F401  (imported here so that importing it is not counted in a case's memory)
from test_hostile_inputs import (
    npy_claiming,
    png_bytes,
    png_claiming,
    refused_within_bounds,
    wide_csv,
    with_declared_size,
    zip_bytes,
)

from engine.data import files, limits
from engine.data.files import load_csv, load_image_folder, load_npz
from engine.data.idx import MAX_VALUES
from engine.data.limits import MAX_COLUMNS, MAX_CSV_CELLS, MAX_IMAGE_PIXELS, MAX_ZIP_MEMBERS
from engine.store.uploads import save_dataset


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


def refused(attempt, message: str, place: Path, **bounds) -> None:
    """refused_within_bounds, and nothing under `place` changes."""
    place.mkdir(exist_ok=True)
    before = snapshot(place)
    refused_within_bounds(attempt, message, **bounds)
    assert snapshot(place) == before


def upload(tmp_path: Path, data: bytes, name: str):
    return lambda: save_dataset(tmp_path / "runs", "upload", data, name)


def stored_zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


# ---- CSV ---------------------------------------------------------------------------------


def test_a_csv_of_a_million_columns_is_refused_at_once(tmp_path):
    """The issue's case, 11.9 MB of 10^6 columns, refused from its header: never parsed."""
    data = wide_csv(10**6)
    assert 11 * 10**6 < len(data) < 12 * 10**6
    (tmp_path / "wide.csv").write_bytes(data)
    message = f"wide.csv: the CSV has 1,000,000 columns .*at most {MAX_COLUMNS:,} are supported"
    refused(lambda: load_csv(tmp_path / "wide.csv"), message, tmp_path / "runs")
    refused(upload(tmp_path, data, "wide.csv"), message, tmp_path / "runs")


def test_a_csv_header_within_the_line_limit_is_counted_exactly(tmp_path):
    """A quoted comma is not a separator."""
    path = tmp_path / "t.csv"
    path.write_bytes(b'"a,b",' + wide_csv(MAX_COLUMNS))
    refused(lambda: load_csv(path), "the CSV has 10,001 columns; at most 10,000", tmp_path / "runs")
    path.write_bytes(b'"x,y",z\n1,2\n3,4\n')
    assert [s.name for s in load_csv(path).schema] == ["x,y", "z"]


def test_a_csv_line_without_end_is_refused(tmp_path):
    """One 50 MB line after the header (pandas would tokenize all of it)."""
    data = b"a,b\n1,2\n" + b"7" * (50 * 2**20)
    refused(upload(tmp_path, data, "long.csv"), "row 2 is longer than 1.0 MB", tmp_path / "runs")


def test_a_csv_with_too_many_values_is_refused_before_pandas_reads_it(tmp_path):
    rows = MAX_CSV_CELLS // 2 + 1
    data = b"a,b\n" + b"1,2\n" * rows  # 80 MB
    message = f"the CSV has {rows:,} rows of 2 columns, {2 * rows:,} values; at most {MAX_CSV_CELLS:,} values"
    refused(upload(tmp_path, data, "tall.csv"), message, tmp_path / "runs")


def test_rows_longer_than_the_header_count_by_their_fields(tmp_path, monkeypatch):
    """pandas tokenizes every field before it finds the rows ragged: they count."""
    monkeypatch.setattr(limits, "MAX_CSV_CELLS", 5_000)
    path = tmp_path / "ragged.csv"
    path.write_bytes(b"a\n" + (b",".join([b"1"] * 1_000) + b"\n") * 10)
    refused(lambda: load_csv(path), "the CSV has 10 rows of 1 columns, 10,000 values; at most 5,000", tmp_path / "runs")


def test_line_ends_are_read_as_pandas_reads_them(tmp_path, monkeypatch):
    """ "\\r" alone (old Macs) and "\\r\\n" end a line as "\\n" does, for the limits as for
    pandas; blank lines before the header are skipped."""
    monkeypatch.setattr(limits, "MAX_CSV_CELLS", 2 * 100_000)
    for end in (b"\n", b"\r\n", b"\r"):
        path = tmp_path / "rows.csv"
        path.write_bytes(end * 3 + end.join([b"a,b", *[b"%d,%d" % (i, i % 2) for i in range(100_000)]]) + end)
        data = load_csv(path)
        assert data.x.shape == (100_000, 2) and [s.kind for s in data.schema] == ["real", "binary"]
        path.write_bytes(path.read_bytes() + b"1,2" + end)
        refused(lambda path=path: load_csv(path), "100,001 rows of 2 columns", tmp_path / "runs")


# ---- NPZ ---------------------------------------------------------------------------------


def test_npz_arrays_are_checked_from_their_headers(tmp_path):
    """Loaded by path: each refused before np.load sets memory aside for it."""
    x = npy_claiming((4, 8, 8), "|u1", bytes(256))
    cases = {
        "x claims 10^12 values": (
            {"x.npy": npy_claiming((10**6, 10**6))},
            re.escape("x has shape (1000000, 1000000) of float64, 1,000,000,000,000 values")
            + f".*at most {MAX_VALUES:,} values",
        ),
        "y claims 10^12 labels": ({"x.npy": x, "y.npy": npy_claiming((10**12,))}, "y has shape"),
        "y of pickled objects": ({"x.npy": x, "y.npy": npy_claiming((4,), "|O")}, "Python objects"),
        "y of the wrong length": ({"x.npy": x, "y.npy": npy_claiming((5,), "<i8", bytes(40))}, "expected \\(4,\\)"),
        "a table too wide": ({"x.npy": npy_claiming((2, 20_000), "|u1", bytes(40_000))}, "20,000 columns"),
        "x is not an array": ({"x.npy": b"PK not an npy file"}, "the array x in the archive is damaged"),
    }
    for case, (members, message) in cases.items():
        path = tmp_path / f"{case}.npz"
        path.write_bytes(zip_bytes(members))
        try:
            refused(lambda path=path: load_npz(path), message, tmp_path / "runs")
        except AssertionError as err:
            raise AssertionError(f"{case}: {err}") from err


# ---- zips ----------------------------------------------------------------------------------


def test_a_zip_of_150_000_tiny_members_is_refused_before_they_are_listed(tmp_path):
    """Its directory (zip64, 8 MB) is walked without making an object per member (zipfile
    takes ~500 bytes a member to list them: 75 MB), so end records that lie about the count
    change nothing. NPZ uploads are checked the same way."""
    members = 150_000
    data = stored_zip({f"a/{i}.png": b"" for i in range(members)})
    message = f"holds {members:,} files; at most {MAX_ZIP_MEMBERS:,} are allowed"
    directory = len(data) - data.index(b"PK\x01\x02")
    assert directory < 10 * 2**20
    refused(upload(tmp_path, data, "many.zip"), message, tmp_path / "runs", max_bytes=directory + 4 * 2**20)
    end = data.rindex(b"PK\x05\x06")
    lying = bytearray(data)
    lying[end + 8 : end + 12] = struct.pack("<2H", 1, 1)  # the end record says one member
    assert data[end - 76 : end - 72] == b"PK\x06\x06"  # and so does the zip64 one
    lying[end - 76 + 24 : end - 76 + 40] = struct.pack("<2Q", 1, 1)
    refused(upload(tmp_path, bytes(lying), "lying.npz"), message, tmp_path / "runs", max_bytes=directory + 4 * 2**20)


def test_a_zip_whose_end_record_claims_a_huge_directory_is_refused_before_reading_it(tmp_path):
    data = stored_zip({"a/1.png": png_bytes(8, 8)})
    end = data.rindex(b"PK\x05\x06")
    lying = data[: end + 12] + struct.pack("<I", 3 * 2**30) + data[end + 16 :]
    message = "the archive's list of files alone is 3,072.0 MB, more than the limit of 32.0 MB"
    refused(upload(tmp_path, lying, "d.zip"), message, tmp_path / "runs")


def test_a_zip_member_holding_more_than_its_directory_entry_says(tmp_path):
    """100 MB of zeros (100 KB deflated) declared as 1,000 bytes: zipfile stops inflating at
    the declared size and the CRC fails, so the lie costs what it declared. Declared larger
    than the limits, it is refused from the directory."""
    bomb = zip_bytes({"a/1.png": bytes(100 * 2**20)})
    assert len(bomb) < 2**20
    runs = tmp_path / "runs"
    refused(upload(tmp_path, with_declared_size(bomb, 1000), "small.zip"), "'a/1.png' cannot be unpacked", runs)
    huge = with_declared_size(zip_bytes({"a/1.png": png_bytes(8, 8)}), 3 * 2**30)
    refused(upload(tmp_path, huge, "huge.zip"), "unpacks to 3,072.0 MB, more than the limit", runs)


# ---- folders of images -------------------------------------------------------------------


def test_a_png_claiming_too_many_pixels_in_a_folder_is_refused_from_its_header(tmp_path):
    """50,000 x 50,000 (10 GB as float32) in a 100-byte file meets PIL's own ceiling;
    8,000 x 8,000 passes PIL's and meets ours."""
    bomb = png_claiming(50_000, 50_000)
    assert len(bomb) < 200
    folder = tmp_path / "pictures"
    folder.mkdir()
    (folder / "1.png").write_bytes(png_bytes(8, 8))
    (folder / "2.png").write_bytes(bomb)
    refused(lambda: load_image_folder(folder), "2.png: the image is too large", tmp_path / "runs")
    (folder / "2.png").write_bytes(png_claiming(8_000, 8_000))
    message = f"2.png: the image is 8,000x8,000 pixels; an image may have at most {MAX_IMAGE_PIXELS:,} pixels"
    refused(lambda: load_image_folder(folder, size=8), message, tmp_path / "runs")


def test_a_folder_is_bounded_in_values_before_decoding(tmp_path):
    """22 headers of 7,000 x 7,000 (each allowed) would decode to 4.3 GB of float32."""
    folder = tmp_path / "large"
    folder.mkdir()
    for i in range(22):
        (folder / f"{i:02d}.png").write_bytes(png_claiming(7_000, 7_000))
    values = 22 * 7_000 * 7_000
    assert values > MAX_VALUES
    message = f"22 images of 1 x 7000 x 7000 are {values:,} values; at most {MAX_VALUES:,}"
    refused(lambda: load_image_folder(folder), message, tmp_path / "runs")


def test_a_folder_with_more_images_than_allowed_is_refused_while_listing(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "MAX_IMAGE_FILES", 5)
    for i in range(6):
        folder = tmp_path / "pets" / ("cats" if i < 3 else "dogs")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.png").write_bytes(png_bytes(4, 4))
    refused(lambda: load_image_folder(tmp_path / "pets"), "dogs: more than 5 images", tmp_path / "runs")
    monkeypatch.setattr(files, "MAX_IMAGE_FILES", 6)
    assert load_image_folder(tmp_path / "pets").x.shape == (6, 1, 4, 4)
