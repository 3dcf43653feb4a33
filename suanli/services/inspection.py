"""What is in a version: a file's preview, a model's layout, a dataset's format report.

The readers (suanli.data.preview, layout, formats) are pure and never raise on a bad file;
here they get the blobs of a version's files, and a dataset's records are read within the
bounds the preview keeps (a .json document up to its size limit, .jsonl line by line).
Reading may take seconds on large files: the routes that call this run in worker threads,
never on the event loop. The API and the console both show versions through this module.
"""

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from suanli.data import formats, layout, preview
from suanli.data.store import BlobStore
from suanli.db.models import DataFile, DataVersion
from suanli.services import data

# A dataset's check reads the first CHECK_RECORDS records of at most CHECK_FILES files.
CHECK_FILES = 5
CHECK_RECORDS = 10_000
MAX_INFO = 16 << 20  # bytes of a dataset_info.json read
CHECKED_SUFFIXES = (".json", ".jsonl")


def preview_file(store: BlobStore, file: DataFile, rows: int) -> preview.Preview:
    return preview.preview(store.path_of(file.sha256), file.path, rows=rows)


def blobs_of(session: Session, store: BlobStore, version: DataVersion) -> dict[str, Path]:
    """Every file of the version: its path there → its blob on disk."""
    return {f.path: store.path_of(f.sha256) for f in data.files_of(session, version.id)}


def model_layout(session: Session, store: BlobStore, version: DataVersion) -> layout.ModelLayout:
    return layout.inspect_model(blobs_of(session, store, version))


@dataclass(frozen=True)
class FileCheck:
    """LLaMA-Factory's word on one file: its report, or why it could not be read."""

    path: str
    entry: str | None  # its dataset_info.json entry, if one names it
    report: formats.FormatReport | None = None
    problem: preview.Problem | None = None


@dataclass(frozen=True)
class DatasetCheck:
    info: formats.DatasetInfo | None  # None: the version has no dataset_info.json
    files: list[FileCheck] = field(default_factory=list)
    more: int = 0  # files that would be checked but were left out (CHECK_FILES)


class _Unreadable(Exception):
    def __init__(self, key: str, **params: Any) -> None:
        super().__init__(key)
        self.problem = preview.Problem(key, params)


def _records(path: Path, name: str) -> Iterator[Any]:
    """The records of a .json (an array) or .jsonl file, read lazily and within the bounds
    the preview keeps."""
    if name.endswith(".json"):
        if path.stat().st_size > preview.MAX_JSON:
            raise _Unreadable("web.data.preview.too_large", limit_mib=preview.MAX_JSON >> 20)
        try:
            document = json.loads(path.read_bytes().decode("utf-8-sig"))
        except json.JSONDecodeError as error:
            raise _Unreadable(
                "web.data.preview.bad_json", line=error.lineno, column=error.colno
            ) from None
        yield from document if isinstance(document, list) else [document]
        return
    with path.open("rb") as file:
        number = 0
        while line := file.readline(preview.MAX_LINE + 1):
            number += 1
            if len(line) > preview.MAX_LINE:
                raise _Unreadable(
                    "web.data.preview.line_too_long", line=number, limit_mib=preview.MAX_LINE >> 20
                )
            text = line.decode("utf-8-sig" if number == 1 else "utf-8").strip()
            if not text:
                continue
            try:
                yield json.loads(text)
            except json.JSONDecodeError as error:
                raise _Unreadable(
                    "web.data.preview.bad_json", line=number, column=error.colno
                ) from None


def first_record(blob: Path, path: str) -> dict[str, Any]:
    """The first record of a .json or .jsonl file ({} where there is none to read): what
    names a file's columns when no dataset_info.json does."""
    try:
        record = next(_records(blob, path), None)
    except (_Unreadable, UnicodeDecodeError, OSError, RecursionError):
        return {}
    return record if isinstance(record, dict) else {}


def _check_file(path: str, blob: Path, entry: formats.DatasetEntry | None = None) -> FileCheck:
    options: dict[str, Any] = {"limit": CHECK_RECORDS}
    if entry is not None:
        options.update(
            formatting=entry.formatting,
            columns=entry.columns,
            tags=entry.tags,
            ranking=entry.ranking,
        )
    name = entry.name if entry else None
    try:
        return FileCheck(path, name, report=formats.check_dataset(_records(blob, path), **options))
    except _Unreadable as error:
        problem = preview.Problem(error.problem.key, {"name": path, **error.problem.params})
    except UnicodeDecodeError:
        problem = preview.Problem("web.data.preview.bad_encoding", {"name": path})
    except (OSError, RecursionError):
        problem = preview.Problem("web.data.preview.unreadable", {"name": path})
    return FileCheck(path, name, problem=problem)


def check_dataset(files: Mapping[str, Path]) -> DatasetCheck:
    """The files its dataset_info.json names (or, without one, its JSON files) as
    LLaMA-Factory would read them: the first CHECK_RECORDS records of CHECK_FILES files."""
    info = None
    wanted: list[tuple[str, formats.DatasetEntry | None]] = []
    absent: list[FileCheck] = []  # named by dataset_info.json, not in the version
    if "dataset_info.json" in files:
        info = _read_info(files["dataset_info.json"])
        for entry in info.entries.values():
            name = entry.file_name or ""
            if name and name not in files:
                problem = preview.Problem("web.data.format.file_missing", {"name": name})
                absent.append(FileCheck(name, entry.name, problem=problem))
            elif name.endswith(CHECKED_SUFFIXES):
                wanted.append((name, entry))
    else:
        wanted = [(path, None) for path in sorted(files) if path.endswith(CHECKED_SUFFIXES)]
    checked = [_check_file(path, files[path], entry) for path, entry in wanted[:CHECK_FILES]]
    return DatasetCheck(info, absent + checked, max(0, len(wanted) - CHECK_FILES))


def _read_info(path: Path) -> formats.DatasetInfo:
    try:
        with path.open("rb") as file:
            text = file.read(MAX_INFO + 1)
    except OSError:
        problem = preview.Problem("web.data.preview.unreadable", {"name": "dataset_info.json"})
        return formats.DatasetInfo({}, [problem])
    if len(text) > MAX_INFO:
        problem = preview.Problem(
            "web.data.preview.too_large", {"name": "dataset_info.json", "limit_mib": MAX_INFO >> 20}
        )
        return formats.DatasetInfo({}, [problem])
    try:
        return formats.read_dataset_info(text.decode("utf-8-sig"))
    except UnicodeDecodeError:
        problem = preview.Problem("web.data.preview.bad_encoding", {"name": "dataset_info.json"})
        return formats.DatasetInfo({}, [problem])
