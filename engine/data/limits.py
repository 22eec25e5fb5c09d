"""What a file may make Latent Atlas allocate, checked from its header before its contents are read.

A file's size-derived costs (a CSV's columns, rows and line length, an NPZ array's shape and
dtype, a zip's number of members, an image's pixels) are read from a bounded part of it and
compared with the limits below, so that a hostile or mistaken file is refused at once, in a
bounded amount of memory, instead of after pandas, numpy, zipfile or PIL has set aside memory
in proportion to what the file claims. The loaders in files.py and the uploads
(engine/store/uploads.py) call these checks; they then read the file as before.
"""

from __future__ import annotations

import csv
import math
import re
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from engine.data.idx import MAX_VALUES
from engine.errors import AtlasError

MAX_COLUMNS = 10_000  # of a table (CSV or NPZ): each column is inferred and coded on its own
MAX_CSV_LINE_BYTES = 1 << 20  # 1 MB: 10,000 columns of up to 100 characters
MAX_CSV_CELLS = 40_000_000  # rows x columns; pandas and the column coding take ~50 bytes a cell, 2 GB
MAX_ARRAY_BYTES = 1 << 32  # 4 GB: an NPZ array as stored (its values are also at most MAX_VALUES)
MAX_ZIP_MEMBERS = 100_000
MAX_ZIP_DIRECTORY_BYTES = 32 << 20  # a zip's list of members, read whole by zipfile: 330 bytes a member
MAX_IMAGE_PIXELS = 50_000_000  # one image (a 50-megapixel photo), decoded as float32 RGB: 600 MB
MAX_IMAGE_FILES = 1_000_000  # images in a folder
CHUNK = 1 << 20  # bytes read at a time


def megabytes(n: int) -> str:
    return f"{n / 2**20:,.1f} MB"


# ---- CSV -----------------------------------------------------------------------------


def check_csv_shape(path: Path) -> None:
    """Refuse a CSV with more than MAX_COLUMNS columns, a line longer than MAX_CSV_LINE_BYTES
    or more than MAX_CSV_CELLS values. The header is read at most MAX_CSV_LINE_BYTES at a time
    and the rest is scanned for line ends and commas in chunks: time in proportion to the file,
    memory bounded by the chunk, and nothing handed to pandas yet. Lines end with "\n", "\r\n"
    or "\r", as pandas reads them. The values are counted as rows x columns, or as the fields
    the separators make where rows hold more than the header names; a quoted line break or
    comma makes the count an upper bound."""
    try:
        with path.open("rb") as f:
            _skip_blank_lines(f)  # as pandas does before the header
            columns = _header_columns(f, path.name)
            if columns > MAX_COLUMNS:
                raise AtlasError(
                    f"{path.name}: the CSV has {columns:,} columns; at most {MAX_COLUMNS:,} are supported. "
                    "Keep the columns you need."
                )
            rows, fields = _scan_rows(f, path.name)
    except OSError as err:
        raise AtlasError(f"{path.name}: cannot be read ({err.strerror}); check the file and its permissions.") from err
    values = max(rows * columns, fields)
    if values > MAX_CSV_CELLS:
        raise AtlasError(
            f"{path.name}: the CSV has {rows:,} rows of {columns:,} columns, {values:,} values; at most "
            f"{MAX_CSV_CELLS:,} values (rows x columns) are supported. Use a sample of the rows or fewer columns."
        )


def _skip_blank_lines(f: BinaryIO) -> None:
    while chunk := f.read(CHUNK):
        rest = chunk.lstrip(b"\r\n")
        if rest:
            f.seek(-len(rest), 1)
            return


def _header_columns(f: BinaryIO, name: str) -> int:
    """The number of names in the header line, read to at most MAX_CSV_LINE_BYTES (the file
    is left after its line end); a longer header is refused, its names counted by their
    commas as it streams past."""
    start = f.tell()
    head = f.read(MAX_CSV_LINE_BYTES + 1)
    end = _LINE_END.search(head)
    if end is None and len(head) > MAX_CSV_LINE_BYTES:
        commas, quoted = head.count(b","), b'"' in head
        while chunk := f.read(CHUNK):
            end = _LINE_END.search(chunk)
            part = chunk if end is None else chunk[: end.start()]
            commas, quoted = commas + part.count(b","), quoted or b'"' in part
            if end is not None:
                break
        raise AtlasError(
            f"{name}: the CSV has {'about ' if quoted else ''}{commas + 1:,} columns (its header line is longer "
            f"than {megabytes(MAX_CSV_LINE_BYTES)}); at most {MAX_COLUMNS:,} are supported. Keep the columns "
            "you need."
        )
    header = head if end is None else head[: end.start()]
    f.seek(start + (len(head) if end is None else end.end()))
    text = header.decode("utf-8", errors="replace").removeprefix("\ufeff")
    try:
        return len(next(csv.reader([text]), []))
    except csv.Error:  # an unclosed quote: pandas will say what is wrong
        return header.count(b",") + 1


_LINE_END = re.compile(rb"\r\n|\r|\n")


def _scan_rows(f: BinaryIO, name: str) -> tuple[int, int]:
    """(rows, fields) after the header: the lines, each at most MAX_CSV_LINE_BYTES (else
    refused at once), and their commas plus one a line."""
    rows, commas, open_line = 0, 0, 0  # open_line: bytes of the line not yet ended
    while chunk := f.read(CHUNK):
        codes = np.frombuffer(chunk, np.uint8)
        newline = codes == ord("\n")
        ends = codes == ord("\r")
        ends[:-1] &= ~newline[1:]  # "\r\n" ends one line, at its "\n"
        ends = np.flatnonzero(ends | newline)
        commas += chunk.count(b",")
        if len(ends):
            lengths = np.diff(ends, prepend=-1) - 1  # of the lines ended in this chunk, without their end
            lengths[0] += open_line
            longest = int(lengths.argmax())
            if lengths[longest] > MAX_CSV_LINE_BYTES:
                _long_line(name, rows + longest + 1)
            open_line = len(chunk) - int(ends[-1]) - 1
        else:
            open_line += len(chunk)
        rows += len(ends)
        if open_line > MAX_CSV_LINE_BYTES:
            _long_line(name, rows + 1)
    rows += open_line > 0  # a last line without its line end
    return rows, commas + rows


def _long_line(name: str, row: int) -> None:
    raise AtlasError(
        f"{name}: row {row:,} is longer than {megabytes(MAX_CSV_LINE_BYTES)}; a CSV line may be at most "
        f"{megabytes(MAX_CSV_LINE_BYTES)} (and {MAX_COLUMNS:,} columns). Check that every row ends with a line break."
    )


# ---- NPZ -----------------------------------------------------------------------------


def npy_header(fp: BinaryIO, key: str, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype an .npy stream (an NPZ member) declares, read from its header alone;
    an array larger than MAX_VALUES values or MAX_ARRAY_BYTES is refused, as are Python
    objects (pickles, which can run code)."""
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
    except ValueError as err:
        raise AtlasError(
            f"{name}: the array {key} in the archive is damaged ({err}); write it again with numpy.savez."
        ) from err
    if dtype.hasobject:
        raise AtlasError(
            f"{name}: the archive holds Python objects (pickled data), which Latent Atlas never loads "
            "because they can run code. Save plain numeric arrays instead."
        )
    values = math.prod(shape)
    if values > MAX_VALUES or values * dtype.itemsize > MAX_ARRAY_BYTES:
        raise AtlasError(
            f"{name}: {key} has shape {shape} of {dtype}, {values:,} values ({megabytes(values * dtype.itemsize)}); "
            f"an array may hold at most {MAX_VALUES:,} values and {megabytes(MAX_ARRAY_BYTES)}. Use fewer or "
            "smaller examples."
        )
    return shape, dtype


# ---- zip archives ----------------------------------------------------------------------

_END = struct.Struct("<4s4H2LH")  # end of central directory record
_END64 = struct.Struct("<4sQ2H2L4Q")  # zip64 end of central directory record
_END64_LOCATOR = 20  # bytes: the zip64 locator, just before the end record


def check_zip_directory(f: BinaryIO, name: str) -> None:
    """Refuse a zip whose list of members (its central directory) is larger than
    MAX_ZIP_DIRECTORY_BYTES or holds more than MAX_ZIP_MEMBERS entries, before zipfile reads
    it and makes an object of each. The entries are counted by walking the directory, not
    taken from the count the end record states, which could lie. A file that is not a zip
    is left for zipfile to explain."""
    size = f.seek(0, 2)
    tail_start = max(0, size - _END.size - 0xFFFF)  # the end record, then a comment of at most 64 KB
    f.seek(tail_start)
    tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _END.size:
        return
    *_, directory_bytes, _, _ = _END.unpack_from(tail, at)
    directory_end = tail_start + at  # zipfile reads the directory just before the end record(s)
    if at >= _END64_LOCATOR and tail[at - _END64_LOCATOR : at - _END64_LOCATOR + 4] == b"PK\x06\x07":
        directory_end -= _END64_LOCATOR + _END64.size
        f.seek(max(directory_end, 0))
        record = f.read(_END64.size)
        if len(record) == _END64.size and record[:4] == b"PK\x06\x06":
            directory_bytes = _END64.unpack(record)[8]
    if directory_bytes > MAX_ZIP_DIRECTORY_BYTES:
        raise AtlasError(
            f"{name}: the archive's list of files alone is {megabytes(directory_bytes)}, more than the limit of "
            f"{megabytes(MAX_ZIP_DIRECTORY_BYTES)}; zip fewer files (at most {MAX_ZIP_MEMBERS:,})."
        )
    f.seek(max(directory_end - directory_bytes, 0))
    directory = f.read(directory_bytes)
    members, at = 0, 0
    while directory.startswith(b"PK\x01\x02", at) and at + 46 <= len(directory):
        name_length, extra_length, comment_length = struct.unpack_from("<3H", directory, at + 28)
        at += 46 + name_length + extra_length + comment_length
        members += 1
    if members > MAX_ZIP_MEMBERS:
        raise AtlasError(f"{name}: the archive holds {members:,} files; at most {MAX_ZIP_MEMBERS:,} are allowed.")
