"""Datasets and models: repositories, versions, their files and tags, as the API reads and
answers them."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from suanli.data import paths
from suanli.schemas.imports import ImportSource
from suanli.schemas.types import (
    MAX_BYTES,
    MAX_INT32,
    Flag,
    Name,
    RequestModel,
    ResponseModel,
    count,
    text,
)

RepoKind = Literal["dataset", "model"]
Visibility = Literal["project", "public"]
# Like the names of models on the hubs: "qwen2.5-0.5b-instruct", "alpaca_zh".
REPO_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
RepoName = text(max_length=64, pattern=REPO_NAME_PATTERN)
TAG_PATTERN = r"^[A-Za-z][A-Za-z0-9._-]{0,63}$"
TagName = text(max_length=64, pattern=TAG_PATTERN)
SHA256_PATTERN = r"^[0-9a-f]{64}$"
Sha256 = text(max_length=64, pattern=SHA256_PATTERN)
# A dataset or model as a workload names it: [project/]name[@version or tag]; without a
# version, `latest`. The project defaults to the workload's own.
DATA_REF_PATTERN = (
    r"^([a-z]([a-z0-9-]{0,30}[a-z0-9])?/)?[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
    r"(@([1-9][0-9]{0,8}|[A-Za-z][A-Za-z0-9._-]{0,63}))?$"
)
DataRef = text(max_length=200, pattern=DATA_REF_PATTERN)
DataRefs = Annotated[list[DataRef], Field(max_length=16)]
Message = text(max_length=2000)
Bytes = count(maximum=MAX_BYTES)
Number = count(minimum=1, maximum=MAX_INT32)


def _path(value: str) -> str:
    try:
        return paths.check(value)
    except paths.BadPath as error:
        kind = error.key.removeprefix("validation.")
        raise PydanticCustomError(kind, "not a safe relative path") from None


FilePath = Annotated[
    text(min_length=1, max_length=paths.MAX_PATH, pattern=paths.PATTERN), AfterValidator(_path)
]


class RepositoryCreate(RequestModel):
    project: Name
    name: RepoName
    description: text(max_length=2000) = ""
    visibility: Visibility = "project"


class RepositoryUpdate(RequestModel):
    description: text(max_length=2000) | None = None
    visibility: Visibility | None = None
    # Administrators only: in the platform's catalogue (and so public).
    catalogue: Flag | None = None


class RepositoryListQuery(RequestModel):
    project: Name | None = None
    # Only what the administrators curated.
    catalogue: bool = False
    limit: Annotated[int, Field(ge=1, le=1000)] = 200


class ManifestEntry(RequestModel):
    """One file of a new version: its path, and the content the project already holds
    (uploaded, or in a version it can read)."""

    path: FilePath
    sha256: Sha256
    size: Bytes


class VersionCreate(RequestModel):
    """A new version: `files` on top of version `base` (none: start empty), less `remove`."""

    message: Message = ""
    files: Annotated[list[ManifestEntry], Field(max_length=100_000)] = Field(default_factory=list)
    base: Number | None = None
    remove: Annotated[list[FilePath], Field(max_length=100_000)] = Field(default_factory=list)
    tags: Annotated[list[TagName], Field(max_length=8)] = Field(default_factory=list)


class TagSet(RequestModel):
    """Point the tag at `version`. With `expected`, only if it points at that version now
    (another change in between is a 409, not a silent overwrite)."""

    version: Number
    expected: Number | None = None


class MissingQuery(RequestModel):
    """Which of these contents the project does not hold yet (a client uploads only those)."""

    sha256: Annotated[list[Sha256], Field(max_length=100_000)]


class CommitOutput(RequestModel):
    """A workload's output folder (relative to its own folder) as a new version."""

    job: Number
    path: FilePath
    message: Message = ""


class ImportCreate(RequestModel):
    """Fetch `source` into a new version (it becomes `latest`)."""

    source: ImportSource
    message: Message = ""


class RepositoryOut(ResponseModel):
    id: int
    kind: str
    project: str
    name: str
    description: str
    visibility: str
    catalogue: bool
    user: str
    created_at: datetime
    versions: int
    latest: int | None
    size_bytes: int
    tags: dict[str, int]


class VersionOut(ResponseModel):
    number: int
    message: str
    user: str
    source: str
    job_id: int | None
    lineage: list[str]
    file_count: int
    size_bytes: int
    created_at: datetime
    tags: list[str]


class FileOut(ResponseModel):
    path: str
    size: int
    sha256: str


class VersionDetailOut(VersionOut):
    repository: str  # project/name
    files: list[FileOut]
    files_total: int


class UserOfOut(ResponseModel):
    """A workload that reads a version: deleting the version would pull it from under it."""

    job_id: int
    kind: str
    name: str
    state: str
    user: str
    version: int


class VerifyOut(ResponseModel):
    checked: int
    bytes: int
    ok: bool
    corrupt: list[str]
    missing: list[str]


class StorageOut(ResponseModel):
    project: str
    used_bytes: int
    reserved_bytes: int
    limit_bytes: int | None


class ImportOut(ResponseModel):
    id: int
    repository: str
    source: dict[str, Any]
    message: str
    state: str
    done_bytes: int
    total_bytes: int | None
    error: str
    attempts: int
    version: int | None
    user: str
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None


class PreviewOut(ResponseModel):
    """The first rows of a table (json, jsonl, csv, tsv, parquet, arrow), the first lines of
    a text, or an image's size. `row_count` is exact when `row_count_exact`, else a lower
    bound; `problem` says why a file could not be read."""

    path: str
    kind: str
    format: str | None
    columns: list[str]
    rows: list[list[Any]]
    row_count: int | None
    row_count_exact: bool
    text: str | None
    width: int | None
    height: int | None
    problem: str | None


class FindingOut(ResponseModel):
    record: int  # counting from 1
    problem: str


class DatasetCheckOut(ResponseModel):
    """A data file checked as LLaMA-Factory reads it (alpaca, sharegpt, openai)."""

    path: str
    entry: str | None
    formatting: str | None
    checked: int
    ok: bool
    findings: list[FindingOut]
    counts: dict[str, int]
    truncated: bool
    problem: str | None


class ModelLayoutOut(ResponseModel):
    format: str
    architecture: str | None
    parameters: int | None
    dtype: str | None
    size_bytes: int
    has_tokenizer: bool
    context_length: int | None
    metadata: dict[str, Any]
    problems: list[str]


class InspectOut(ResponseModel):
    """A model's layout; or a dataset's format report per data file (those its
    dataset_info.json names, else its .json and .jsonl files: the first 5, 10,000 records
    each), what is wrong with its dataset_info.json, and how many files were not checked."""

    model: ModelLayoutOut | None = None
    datasets: list[DatasetCheckOut] = Field(default_factory=list)
    info_problems: list[str] = Field(default_factory=list)
    more_files: int = 0
