"""Previews of stored files: real files of each format, and broken or hostile ones."""

import json
import random
import struct
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from suanli.data import preview as module
from suanli.data.preview import Preview, preview


def write(tmp_path: Path, data: bytes | str) -> Path:
    """A file named like a blob, so that only the version's name can give the format."""
    path = tmp_path / "3f2a9c"
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def problem_key(result: Preview) -> str | None:
    return result.problem.key if result.problem else None


def test_json_array_of_objects(tmp_path: Path) -> None:
    records = [{"instruction": f"q{i}", "output": "a" * 2000, "n": i} for i in range(30)]
    result = preview(write(tmp_path, json.dumps(records)), "data/train.json", rows=5)
    assert (result.kind, result.format, result.problem) == ("table", "json", None)
    assert result.columns == ["instruction", "output", "n"]
    assert len(result.rows) == 5
    assert result.rows[2][0] == "q2" and result.rows[2][2] == 2
    assert len(result.rows[0][1]) <= module.MAX_CELL + 1  # long strings are cut
    assert (result.row_count, result.row_count_exact) == (30, True)
    json.dumps(result.rows, allow_nan=False)


def test_json_object_shows_key_value_rows(tmp_path: Path) -> None:
    document = {"alpaca": {"file_name": "a.json"}, "n": float("nan")}
    result = preview(write(tmp_path, json.dumps(document)), "dataset_info.json")
    assert result.columns == ["key", "value"]
    assert result.rows == [["alpaca", '{"file_name": "a.json"}'], ["n", "nan"]]
    json.dumps(result.rows, allow_nan=False)


def test_jsonl_rows_and_count(tmp_path: Path) -> None:
    lines = [json.dumps({"text": f"line {i}", "k": [1, 2]}) for i in range(50)]
    data = "\ufeff" + "\n".join(lines[:10]) + "\n\n" + "\n".join(lines[10:])  # BOM, a blank line
    result = preview(write(tmp_path, data), "train.JSONL", rows=3)
    assert result.problem is None
    assert result.columns == ["text", "k"]
    assert result.rows == [["line 0", "[1, 2]"], ["line 1", "[1, 2]"], ["line 2", "[1, 2]"]]
    assert (result.row_count, result.row_count_exact) == (50, True)


def test_jsonl_count_stops_at_the_budget(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(module, "COUNT_BUDGET", 1000)
    monkeypatch.setattr(module, "CHUNK", 100)
    data = "".join(json.dumps({"i": i}) + "\n" for i in range(1000))  # ~10 KB
    result = preview(write(tmp_path, data), "x.ndjson")
    assert result.row_count_exact is False
    assert 50 < result.row_count < 1000


def test_jsonl_a_huge_line_is_refused_not_read_whole(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(module, "MAX_LINE", 1024)
    result = preview(write(tmp_path, '{"a": "' + "x" * 5000 + '"}\n'), "x.jsonl")
    assert problem_key(result) == "web.data.preview.line_too_long"
    assert result.problem.params == {"name": "x.jsonl", "line": 1, "limit_mib": 0}


@pytest.mark.parametrize(
    ("data", "name", "key"),
    [
        (b'{"a": 1}\n{"a": \n', "x.jsonl", "web.data.preview.bad_json"),
        (b'[{"a": 1},', "x.json", "web.data.preview.bad_json"),
        (b'{"a": "\xff\xfe"}\n', "x.jsonl", "web.data.preview.bad_encoding"),
        (b'[{"a": "\xc3\x28"}]', "x.json", "web.data.preview.bad_encoding"),
        (b"[" * 100_000 + b"]" * 100_000, "deep.json", "web.data.preview.malformed"),
        (b"a,b\n1,\x002\n", "x.csv", "web.data.preview.nul_byte"),
        (b"a\tb\n\xff\t1\n", "x.tsv", "web.data.preview.bad_encoding"),
        (b"PAR1 not really parquet PAR1", "x.parquet", "web.data.preview.malformed"),
        (b"ARROW1\x00\x00garbage", "x.arrow", "web.data.preview.malformed"),
        (b"\xff\xff\xff\xff\x10\x00\x00\x00garbage", "x.feather", "web.data.preview.malformed"),
        (b"", "x.arrow", "web.data.preview.malformed"),
        (b"\x89PNG\r\n", "x.png", "web.data.preview.malformed"),
        (b"not a jpeg", "x.jpg", "web.data.preview.malformed"),
        (b"caf\xe9", "README.md", "web.data.preview.bad_encoding"),
    ],
)
def test_malformed_files_give_a_problem(tmp_path: Path, data: bytes, name: str, key: str) -> None:
    result = preview(write(tmp_path, data), name)
    assert problem_key(result) == key, result
    assert result.problem.params["name"] == name
    assert result.rows == []


def test_json_too_large_is_refused_before_reading(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(module, "MAX_JSON", 100)
    result = preview(write(tmp_path, json.dumps([{"a": "b" * 200}])), "big.json")
    assert problem_key(result) == "web.data.preview.too_large"


def test_csv_with_quoted_newlines_counts_records(tmp_path: Path) -> None:
    data = 'prompt,answer\n"two\nlines",1\nplain,2\n\nshort\n'
    result = preview(write(tmp_path, data), "eval.csv")
    assert result.problem is None
    assert result.columns == ["prompt", "answer"]
    assert result.rows == [["two\nlines", "1"], ["plain", "2"], ["short", None]]
    assert (result.row_count, result.row_count_exact) == (3, True)


def test_csv_long_field_is_not_malformed(tmp_path: Path) -> None:
    data = "text\n" + "w" * 300_000 + "\n"
    result = preview(write(tmp_path, data), "docs.csv")
    assert result.problem is None and result.row_count == 1


def test_tsv_and_budget(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(module, "COUNT_BUDGET", 200)
    data = "a\tb\n" + "".join(f"{i}\tx\n" for i in range(500))
    result = preview(write(tmp_path, data), "t.tsv", rows=2)
    assert result.rows == [["0", "x"], ["1", "x"]]
    assert result.row_count_exact is False and result.row_count < 500


def parquet_file(tmp_path: Path, **options) -> Path:
    table = pa.table(
        {
            "id": pa.array(range(1000), pa.int64()),
            "text": [f"row {i}" for i in range(1000)],
            "score": [0.5] * 999 + [float("inf")],
            "blob": [b"\x00\xff"] * 1000,
            "tags": [["a", "b"]] * 1000,
            "when": pa.array([0] * 1000, pa.timestamp("s")),
        }
    )
    path = tmp_path / "blob-parquet"
    pq.write_table(table, path, row_group_size=100, **options)
    return path


def test_parquet(tmp_path: Path) -> None:
    result = preview(parquet_file(tmp_path), "train-00000-of-00001.parquet", rows=4)
    assert result.problem is None
    assert result.columns == ["id", "text", "score", "blob", "tags", "when"]
    assert result.rows[3] == [3, "row 3", 0.5, "0x00ff", '["a", "b"]', "1970-01-01T00:00:00"]
    assert (result.row_count, result.row_count_exact) == (1000, True)
    json.dumps(result.rows, allow_nan=False)
    across_row_groups = preview(parquet_file(tmp_path), "x.parquet", rows=150).rows
    assert [row[0] for row in across_row_groups] == list(range(150))


def test_truncated_parquet(tmp_path: Path) -> None:
    path = parquet_file(tmp_path)
    data = path.read_bytes()
    assert problem_key(preview(write(tmp_path, data[: len(data) // 2]), "x.parquet")) == (
        "web.data.preview.malformed"
    )
    # The footer intact, the pages overwritten: the metadata reads, the rows do not.
    footer = pq.ParquetFile(path).metadata.serialized_size + 8
    hollow = data[:4] + b"\x07" * (len(data) - 4 - footer) + data[-footer:]
    result = preview(write(tmp_path, hollow), "x.parquet")
    assert problem_key(result) == "web.data.preview.malformed"
    assert result.problem.params == {"name": "x.parquet", "format": "parquet"}


def test_arrow_file_and_stream(tmp_path: Path) -> None:
    batch = pa.record_batch({"x": list(range(10)), "y": [str(i) for i in range(10)]})
    file_path, stream_path = tmp_path / "f", tmp_path / "s"
    with ipc.new_file(file_path, batch.schema) as writer:
        writer.write_batch(batch)
        writer.write_batch(batch)
    with ipc.new_stream(stream_path, batch.schema) as writer:
        for _ in range(3):
            writer.write_batch(batch)
    result = preview(file_path, "data.arrow", rows=12)
    assert (result.columns, len(result.rows), result.row_count) == (["x", "y"], 12, 20)
    assert result.rows[11] == [1, "1"]
    result = preview(stream_path, "data-00000-of-00001.arrow", rows=3)
    assert result.problem is None and result.row_count_exact
    assert (result.rows, result.row_count) == ([[0, "0"], [1, "1"], [2, "2"]], 30)


def test_text_keeps_the_first_lines(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(module, "TEXT_BYTES", 20)
    result = preview(write(tmp_path, "# 标题\nline two\nline three\n"), "README.md")
    assert result.kind == "text" and result.format == "markdown"
    assert result.text.startswith("# 标题\nline two")
    assert len(result.text.encode()) <= 20


def png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


@pytest.mark.parametrize(
    ("data", "name", "size"),
    [
        (png(640, 480), "cat.PNG", (640, 480)),
        (b"GIF89a" + struct.pack("<HH", 32, 16) + b"\x00" * 10, "a.gif", (32, 16)),
        (jpeg(1024, 768), "photo.jpeg", (1024, 768)),
        (
            b"RIFF\x00\x00\x00\x00WEBPVP8X" + b"\x0a\x00\x00\x00" + b"\x00" * 4
            + (99).to_bytes(3, "little") + (49).to_bytes(3, "little"),
            "x.webp",
            (100, 50),
        ),
    ],
)  # fmt: skip
def test_image_sizes(tmp_path: Path, data: bytes, name: str, size: tuple[int, int]) -> None:
    result = preview(write(tmp_path, data), name)
    assert (result.kind, result.problem, (result.width, result.height)) == ("image", None, size)


def test_unsupported_and_missing(tmp_path: Path) -> None:
    result = preview(write(tmp_path, b"\x00"), "weights.bin")
    assert result.kind == "unsupported"
    assert result.problem.params == {"name": "weights.bin", "extension": ".bin"}
    assert problem_key(preview(tmp_path / "gone", "gone.csv")) == "web.data.preview.unreadable"


@pytest.mark.parametrize("writer", [ipc.new_file, ipc.new_stream])
def test_arrow_offsets_pointing_outside_the_file_are_caught(tmp_path: Path, writer) -> None:
    """IPC data is not checked when read: a forged string offset would be followed."""
    batch = pa.record_batch({"text": [f"r{i}" for i in range(10)]})
    path = tmp_path / "ipc"
    with writer(path, batch.schema) as out:
        out.write_batch(batch)
    offsets = struct.pack("<11i", *range(0, 21, 2))
    data = path.read_bytes()
    assert data.count(offsets) == 1
    forged = data.replace(offsets, offsets[:-4] + struct.pack("<i", 1 << 30))
    result = preview(write(tmp_path, forged), "x.arrow")
    assert problem_key(result) == "web.data.preview.malformed"


def mutations(seed: bytes, count: int, rng: random.Random) -> list[bytes]:
    """Flipped bytes, cuts, insertions and huge lengths: what a hostile upload looks like."""
    variants = []
    for _ in range(count):
        data = bytearray(seed)
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(len(data) + 1)
            choice = rng.random()
            if choice < 0.5 and at < len(data):
                data[at] = rng.randrange(256)
            elif choice < 0.7:
                del data[at:]
            else:
                data[at:at] = struct.pack("<Q", rng.choice([2**60, 2**64 - 1, 1 << 31]))
        variants.append(bytes(data))
    return variants


def test_mutated_files_never_raise(tmp_path: Path) -> None:
    table = pa.table({"a": list(range(40)), "b": [f"s{i}" for i in range(40)], "c": [[1.5]] * 40})
    pq.write_table(table, tmp_path / "p", row_group_size=10)
    with ipc.new_file(tmp_path / "f", table.schema) as out:
        out.write_table(table)
    with ipc.new_stream(tmp_path / "s", table.schema) as out:
        out.write_table(table)
    seeds = {
        "x.parquet": (tmp_path / "p").read_bytes(),
        "x.arrow": (tmp_path / "f").read_bytes(),
        "y.arrow": (tmp_path / "s").read_bytes(),
        "x.json": json.dumps([{"a": 1, "b": [1, {"c": None}]}] * 3).encode(),
        "x.jsonl": b'{"a": 1}\n{"b": "x"}\n',
        "x.csv": b'a,b\n1,"2\n3"\n',
        "x.png": png(3, 2),
        "x.jpg": jpeg(3, 2),
    }
    rng = random.Random(7)
    for name, seed in seeds.items():
        for data in mutations(seed, 60, rng):
            result = preview(write(tmp_path, data), name, rows=rng.randint(0, 30))
            json.dumps(result.rows, allow_nan=False)
