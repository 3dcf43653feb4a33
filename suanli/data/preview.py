"""A first look at one stored file: the first rows of a table, the first lines of a text.

A version's file is stored under its sha256, so the format comes from the name it has in the
version. Files can be many gigabytes and come from anyone, so every reader here takes only
what a preview shows (the first rows, a metadata footer, a header) and a file that does not
parse gives a `Problem` (a message key and its parameters) instead of an exception.
"""

import codecs
import csv
import datetime
import decimal
import json
import math
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

MAX_ROWS = 1000  # rows a caller may ask for
MAX_CELL = 500  # characters of one value shown; the rest is cut
MAX_COLUMNS = 200  # columns read from a wide table
MAX_JSON = 64 << 20  # a .json document is parsed whole, so only up to this size
MAX_LINE = 16 << 20  # one JSON Lines / CSV line
COUNT_BUDGET = 256 << 20  # bytes read to count rows; past it the count is "at least"
TEXT_BYTES = 64 << 10
TEXT_LINES = 200
IMAGE_HEADER = 1 << 20  # bytes searched for a JPEG's size
CHUNK = 1 << 20
_SPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace

TABLE_FORMATS = {
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".arrow": "arrow",
    ".feather": "arrow",
}
TEXT_FORMATS = {".txt": "text", ".md": "markdown"}
IMAGE_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".gif": "gif", ".webp": "webp"}


@dataclass(frozen=True)
class Problem:
    """Why something could not be read: a catalogue key (`web.data.…`) and its parameters."""

    key: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Preview:
    """What the console and the API show of one file.

    `row_count` is exact when `row_count_exact`; otherwise it is the rows counted before the
    byte budget ran out ("at least"), or None where counting was not tried.
    """

    kind: str  # "table" | "text" | "image" | "unsupported"
    format: str | None = None  # json, jsonl, csv, tsv, parquet, arrow, text, markdown, png, …
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    row_count: int | None = None
    row_count_exact: bool = False
    text: str | None = None
    width: int | None = None
    height: int | None = None
    problem: Problem | None = None


class _Unreadable(Exception):
    """Raised inside the readers and turned into `Preview.problem` by `preview`."""

    def __init__(self, key: str, **params: Any) -> None:
        super().__init__(key)
        self.problem = Problem(key, params)


def preview(path: Path, name: str, *, rows: int = 20) -> Preview:
    """The preview of the file stored at `path` whose name in its version is `name`."""
    suffix = PurePosixPath(name).suffix.lower()
    rows = min(max(0, rows), MAX_ROWS)
    if suffix in TABLE_FORMATS:
        kind, fmt = "table", TABLE_FORMATS[suffix]
    elif suffix in TEXT_FORMATS:
        kind, fmt = "text", TEXT_FORMATS[suffix]
    elif suffix in IMAGE_FORMATS:
        kind, fmt = "image", IMAGE_FORMATS[suffix]
    else:
        problem = Problem("web.data.preview.unsupported", {"name": name, "extension": suffix})
        return Preview(kind="unsupported", problem=problem)
    try:
        path.stat()
    except OSError:
        return Preview(kind, fmt, problem=Problem("web.data.preview.unreadable", {"name": name}))
    try:
        return _READERS[fmt](path, rows)
    except _Unreadable as error:
        problem = Problem(error.problem.key, {"name": name, **error.problem.params})
    except UnicodeDecodeError:
        problem = Problem("web.data.preview.bad_encoding", {"name": name})
    except (pa.ArrowException, OSError, csv.Error, ValueError, OverflowError, RecursionError):
        # How pyarrow and the csv module say "not this format" (pyarrow: a plain OSError for a
        # corrupt page); their English text is of no use to the reader, the format name is.
        problem = Problem("web.data.preview.malformed", {"name": name, "format": fmt})
    return Preview(kind, fmt, problem=problem)


# Values ---------------------------------------------------------------------------------------


def json_safe(value: Any) -> Any:
    """A value any JSON encoder takes, short enough for a table cell.

    Nested lists and objects become their compact JSON text so that a cell stays one cut
    string; NaN and infinities (which strict JSON refuses) become their names.
    """
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value[: MAX_CELL // 2])
        try:
            return _cut(data.decode("utf-8"))
        except UnicodeDecodeError:
            return "0x" + data.hex()
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta | decimal.Decimal):
        return str(value)
    if isinstance(value, dict | list | tuple):
        return _cut(json.dumps(value, ensure_ascii=False, default=str, allow_nan=True))
    return _cut(str(value))


def _cut(text: str) -> str:
    return text if len(text) <= MAX_CELL else text[:MAX_CELL] + "…"


def _table(records: Iterable[Any]) -> tuple[list[str], list[list[Any]]]:
    """Columns in order of first appearance, and each record as a row under them.

    A record that is not an object (a JSON Lines line holding a number) shows in a `value`
    column, so one odd line does not hide the rest.
    """
    columns: dict[str, None] = {}
    objects = [record if isinstance(record, dict) else {"value": record} for record in records]
    for record in objects:
        for key in record:
            if len(columns) < MAX_COLUMNS:
                columns.setdefault(str(key), None)
    names = list(columns)
    rows = [[json_safe(record.get(name)) for name in names] for record in objects]
    return names, rows


# JSON and JSON Lines ---------------------------------------------------------------------------


def _read_json(path: Path, rows: int) -> Preview:
    """A .json document: an array of records, or one object shown as key/value rows."""
    if path.stat().st_size > MAX_JSON:
        raise _Unreadable("web.data.preview.too_large", limit_mib=MAX_JSON >> 20)
    text = path.read_bytes().decode("utf-8-sig")
    start = _SPACE.match(text).end()
    try:
        if not text.startswith(("[", "{"), start):
            value = json.loads(text)
            return Preview("table", "json", ["value"], [[json_safe(value)]], 1, True)
        members, count = _json_members(text, start, rows)
    except json.JSONDecodeError as error:
        raise _bad_json(text, error.pos) from None
    if text[start] == "[":
        columns, table = _table(members)
    else:
        columns = ["key", "value"]
        table = [[_cut(key), json_safe(value)] for key, value in members]
    return Preview("table", "json", columns, table, count, row_count_exact=True)


def _json_members(text: str, start: int, rows: int) -> tuple[list[Any], int]:
    """The first `rows` members of the array or object at `start`, and how many it has.

    Each member is decoded and dropped: as Python objects a JSON document can take twenty
    times its size (`[{},{},…]`), so only the text and the members shown are held.
    """
    decoder = json.JSONDecoder()
    is_object, closer = text[start] == "{", "}" if text[start] == "{" else "]"
    members: list[Any] = []
    count, index = 0, _SPACE.match(text, start + 1).end()
    while not (count == 0 and text.startswith(closer, index)):
        if is_object:
            key, index = decoder.raw_decode(text, index)
            index = _SPACE.match(text, index).end()
            if not isinstance(key, str) or not text.startswith(":", index):
                raise _bad_json(text, index)
            index = _SPACE.match(text, index + 1).end()
        value, index = decoder.raw_decode(text, index)
        count += 1
        if len(members) < rows:
            members.append((key, value) if is_object else value)
        index = _SPACE.match(text, index).end()
        if text.startswith(closer, index):
            break
        if not text.startswith(",", index):
            raise _bad_json(text, index)
        index = _SPACE.match(text, index + 1).end()
    index = _SPACE.match(text, index + 1).end()
    if index != len(text):
        raise _bad_json(text, index)
    return members, count


def _bad_json(text: str, index: int) -> _Unreadable:
    line = text.count("\n", 0, index) + 1
    column = index - text.rfind("\n", 0, index)
    return _Unreadable("web.data.preview.bad_json", line=line, column=column)


def _read_jsonl(path: Path, rows: int) -> Preview:
    """The first `rows` lines parsed; the lines counted (not parsed) up to the byte budget."""
    records: list[Any] = []
    with path.open("rb") as file:
        for number, line in enumerate(_lines(file), start=1):
            if len(records) >= rows:
                break
            text = line.decode("utf-8-sig" if number == 1 else "utf-8").strip()
            if not text:
                continue
            try:
                records.append(json.loads(text))
            except json.JSONDecodeError as error:
                raise _Unreadable(
                    "web.data.preview.bad_json", line=number, column=error.colno
                ) from None
    count, exact = _count_lines(path)
    columns, table = _table(records)
    return Preview("table", "jsonl", columns, table, count, row_count_exact=exact)


def _lines(file: BinaryIO) -> Iterator[bytes]:
    """The file's lines, refusing one longer than MAX_LINE rather than holding it whole."""
    number = 0
    while True:
        line = file.readline(MAX_LINE + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE:
            raise _Unreadable(
                "web.data.preview.line_too_long", line=number, limit_mib=MAX_LINE >> 20
            )
        yield line


def _count_lines(path: Path) -> tuple[int, bool]:
    """Non-blank lines, read in chunks so that no line (however long) is held whole."""
    count, budget, pending = 0, COUNT_BUDGET, False
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            pieces = chunk.split(b"\n")
            pending = pending or bool(pieces[0].strip())
            if len(pieces) > 1:
                count += pending + sum(1 for piece in pieces[1:-1] if piece.strip())
                pending = bool(pieces[-1].strip())
            budget -= len(chunk)
            if budget <= 0 and file.read(1):
                return count, False
    return count + pending, True


# CSV and TSV -----------------------------------------------------------------------------------


def _read_csv(path: Path, rows: int, delimiter: str = ",") -> Preview:
    """Header and first rows, then the records counted by the same parser up to the budget.

    Counted by the parser rather than by newlines, since a quoted value may hold newlines.
    """
    fmt = "csv" if delimiter == "," else "tsv"
    # The module's default (128 KiB a field) would call a table of long documents malformed;
    # MAX_LINE already bounds what one record can hold. Only ever raised, never lowered.
    csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE))
    with path.open("rb") as file:
        lines = _DecodedLines(file)
        reader = csv.reader(lines, delimiter=delimiter)
        header = next(reader, None)
        table: list[list[Any]] = []
        count, exact = 0, True
        for record in reader:
            if not record:
                continue
            count += 1
            if len(table) < rows:
                table.append(record)
            if lines.consumed > COUNT_BUDGET:
                exact = next(reader, None) is None
                break
    columns = [_cut(name) for name in (header or [])[:MAX_COLUMNS]]
    width = len(columns)
    cells = [[json_safe(value) for value in (record + [None] * width)[:width]] for record in table]
    return Preview("table", fmt, columns, cells, count, row_count_exact=exact)


def _read_tsv(path: Path, rows: int) -> Preview:
    return _read_csv(path, rows, delimiter="\t")


class _DecodedLines:
    """UTF-8 lines for the csv module, each under MAX_LINE, with no NUL, counting bytes read.

    A NUL means a binary file under a text name; the csv module would take it as data.
    """

    def __init__(self, file: BinaryIO) -> None:
        self._lines = _lines(file)
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.consumed = 0
        self.number = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.number += 1
        self.consumed += len(line)
        if b"\x00" in line:
            raise _Unreadable("web.data.preview.nul_byte", line=self.number)
        return self._decoder.decode(line)


# Parquet and Arrow -----------------------------------------------------------------------------


def _read_parquet(path: Path, rows: int) -> Preview:
    """The row count from the footer; the rows read batch by batch until there are enough."""
    parquet = pq.ParquetFile(path)
    names = _unique(parquet.schema_arrow.names)[:MAX_COLUMNS]
    table: list[list[Any]] = []
    if rows and parquet.metadata.num_rows:
        for batch in parquet.iter_batches(batch_size=rows, columns=names):
            table += _batch_rows(batch, rows - len(table))
            if len(table) >= rows:
                break
    count = parquet.metadata.num_rows
    return Preview("table", "parquet", _columns(names), table, count, row_count_exact=True)


def _read_arrow(path: Path, rows: int) -> Preview:
    """An Arrow IPC file (rows counted from its footer) or stream (counted up to the budget).

    Memory-mapped, so reading a batch touches only its pages.
    """
    with pa.memory_map(str(path)) as source:
        if source.read(6) == b"ARROW1":
            reader = ipc.open_file(source)
            table: list[list[Any]] = []
            for index in range(reader.num_record_batches):
                if len(table) >= rows:
                    break
                table += _batch_rows(reader.get_batch(index), rows - len(table))
            columns, count = _columns(reader.schema.names), reader.count_rows()
            return Preview("table", "arrow", columns, table, count, row_count_exact=True)
        source.seek(0)
        stream = ipc.open_stream(source)
        table = []
        count, exact = 0, True
        for batch in stream:
            if len(table) < rows:
                table += _batch_rows(batch, rows - len(table))
            count += batch.num_rows
            if source.tell() > COUNT_BUDGET:
                exact = source.tell() >= source.size()
                break
        return Preview("table", "arrow", _columns(stream.schema.names), table, count, exact)


def _batch_rows(batch: pa.RecordBatch | None, rows: int) -> list[list[Any]]:
    if batch is None or rows <= 0:
        return []
    batch = batch.slice(0, rows)
    # An IPC file is read without checks: offsets pointing outside its buffers would be
    # followed (past the end of the mapping, a crash). The rows shown are checked first.
    batch.validate(full=True)
    width = min(batch.num_columns, MAX_COLUMNS)
    columns = [batch.column(index).to_pylist() for index in range(width)]
    return [[json_safe(column[row]) for column in columns] for row in range(batch.num_rows)]


def _columns(names: list[str]) -> list[str]:
    return [_cut(name) for name in names[:MAX_COLUMNS]]


def _unique(names: list[str]) -> list[str]:
    """Column names pyarrow can select by (a duplicated name cannot be)."""
    return [name for name in names if names.count(name) == 1]


# Text and images -------------------------------------------------------------------------------


def _read_text(path: Path, rows: int, fmt: str = "text") -> Preview:
    """The first TEXT_LINES lines within TEXT_BYTES; a character cut at the end is dropped."""
    with path.open("rb") as file:
        head = file.read(TEXT_BYTES)
        more = bool(file.read(1))
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    text = decoder.decode(head, final=not more)
    lines = text.splitlines(keepends=True)
    return Preview("text", fmt, text="".join(lines[:TEXT_LINES]))


def _read_markdown(path: Path, rows: int) -> Preview:
    return _read_text(path, rows, fmt="markdown")


def _image_reader(fmt: str, measure: Any) -> Any:
    def read(path: Path, rows: int) -> Preview:
        with path.open("rb") as file:
            head = file.read(IMAGE_HEADER)
        size = measure(head)
        if size is None:
            raise _Unreadable("web.data.preview.malformed", format=fmt)
        return Preview("image", fmt, width=size[0], height=size[1])

    return read


def _png_size(head: bytes) -> tuple[int, int] | None:
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR" or len(head) < 24:
        return None
    return struct.unpack(">II", head[16:24])


def _gif_size(head: bytes) -> tuple[int, int] | None:
    if head[:6] not in (b"GIF87a", b"GIF89a") or len(head) < 10:
        return None
    return struct.unpack("<HH", head[6:10])


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    """Walk the markers to the first start-of-frame (SOF0-SOF15 but DHT, JPG and DAC)."""
    if head[:2] != b"\xff\xd8":
        return None
    position = 2
    while position + 9 <= len(head):
        if head[position] != 0xFF:
            return None
        marker = head[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", head[position + 5 : position + 9])
            return width, height
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            position += 2
            continue
        (length,) = struct.unpack(">H", head[position + 2 : position + 4])
        position += 2 + length
    return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP" or len(head) < 30:
        return None
    chunk = head[12:16]
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return width, height
    return None


_READERS = {
    "json": _read_json,
    "jsonl": _read_jsonl,
    "csv": _read_csv,
    "tsv": _read_tsv,
    "parquet": _read_parquet,
    "arrow": _read_arrow,
    "text": _read_text,
    "markdown": _read_markdown,
    "png": _image_reader("png", _png_size),
    "jpeg": _image_reader("jpeg", _jpeg_size),
    "gif": _image_reader("gif", _gif_size),
    "webp": _image_reader("webp", _webp_size),
}
