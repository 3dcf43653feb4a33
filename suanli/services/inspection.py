"""What is in a version: a file's preview, a model's layout, a dataset's format report.

The readers (suanli.data.preview, layout, formats) are pure and never raise on a bad file;
here they get the blobs of a version's files. Reading may take seconds on large files: the
routes that call this run in worker threads, never on the event loop.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from suanli.data import formats, layout, preview
from suanli.data.store import BlobStore
from suanli.db.models import DataFile, DataVersion
from suanli.services import data

DATASET_INFO = "dataset_info.json"
RECORD_FILES = (".json", ".jsonl")
MAX_JSON_BYTES = 64 << 20  # a .json array is read whole; larger ones are not checked
MAX_CHECKED_FILES = 20


@dataclass(frozen=True)
class DatasetCheck:
    path: str
    entry: str | None  # the dataset_info.json entry that names the file
    report: formats.FormatReport | None
    problem: preview.Problem | None = None


def preview_file(store: BlobStore, file: DataFile, rows: int) -> preview.Preview:
    return preview.preview(store.path_of(file.sha256), file.path, rows=rows)


def model_layout(session: Session, store: BlobStore, version: DataVersion) -> layout.ModelLayout:
    files = data.files_of(session, version.id)
    return layout.inspect_model({f.path: store.path_of(f.sha256) for f in files})


def dataset_checks(session: Session, store: BlobStore, version: DataVersion) -> list[DatasetCheck]:
    """With a dataset_info.json: each entry's file, read as the entry says; without: every
    .json/.jsonl file (the first 20), its format recognised from its first record."""
    files = {f.path: f for f in data.files_of(session, version.id)}
    checks: list[DatasetCheck] = []
    info_file = files.get(DATASET_INFO)
    if info_file is not None:
        info = formats.read_dataset_info(store.path_of(info_file.sha256).read_text("utf-8"))
        checks += [DatasetCheck(DATASET_INFO, None, None, p) for p in info.problems]
        for name, entry in list(info.entries.items())[:MAX_CHECKED_FILES]:
            found = files.get(entry.file_name or "")
            if found is None:
                missing = preview.Problem("web.data.format.file_missing", {"name": entry.file_name})
                checks.append(DatasetCheck(entry.file_name or "", name, None, missing))
                continue
            checks.append(
                _check(
                    store, found, name, entry.formatting, entry.columns, entry.tags, entry.ranking
                )
            )
        return checks
    for path in sorted(files):
        if path.endswith(RECORD_FILES) and len(checks) < MAX_CHECKED_FILES:
            checks.append(_check(store, files[path], None, None, None, None, False))
    return checks


def _check(
    store: BlobStore,
    file: DataFile,
    entry: str | None,
    formatting: str | None,
    columns: dict[str, str] | None,
    tags: dict[str, str] | None,
    ranking: bool,
) -> DatasetCheck:
    try:
        records = _records(store.path_of(file.sha256), file.path, file.size)
        report = formats.check_dataset(
            records, formatting=formatting, columns=columns, tags=tags, ranking=ranking
        )
    except (ValueError, UnicodeDecodeError):
        bad = preview.Problem("web.data.preview.malformed", {"name": file.path})
        return DatasetCheck(file.path, entry, None, bad)
    return DatasetCheck(file.path, entry, report)


def _records(path: Path, name: str, size: int) -> Iterator[Any]:
    if name.endswith(".jsonl"):
        return _lines(path)
    if size > MAX_JSON_BYTES:
        raise ValueError("too large to check")
    loaded = json.loads(path.read_text("utf-8"))
    return iter(loaded if isinstance(loaded, list) else [loaded])


def _lines(path: Path) -> Iterator[Any]:
    with path.open("rb") as stream:
        for line in stream:
            if line.strip():
                yield json.loads(line)
