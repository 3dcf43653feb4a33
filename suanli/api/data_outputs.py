"""Datasets and models as their readers see them: ORM rows to the transport schemas, for the
API's routes and the console's pages alike."""

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from suanli.data.layout import ModelLayout
from suanli.data.preview import Preview, Problem
from suanli.db.models import DataImport, DataTag, DataVersion, Job, Repository
from suanli.i18n import translate
from suanli.schemas.data import (
    DatasetCheckOut,
    FileOut,
    FindingOut,
    ImportOut,
    InspectOut,
    ModelLayoutOut,
    PreviewOut,
    RepositoryOut,
    UserOfOut,
    VersionDetailOut,
    VersionOut,
)
from suanli.services import data
from suanli.services.inspection import DatasetCheck, FileCheck

FILES_SHOWN = 1000


def repositories_out(session: Session, found: Sequence[Repository]) -> list[RepositoryOut]:
    """A list, its versions counted and its tags read in one query each for all."""
    ids = [r.id for r in found]
    counted = {
        repository_id: (count, size)
        for repository_id, count, size in session.execute(
            select(
                DataVersion.repository_id,
                func.count(),
                func.coalesce(func.max(DataVersion.size_bytes), 0),
            )
            .where(DataVersion.repository_id.in_(ids))
            .group_by(DataVersion.repository_id)
        )
    }
    tags: dict[int, dict[str, int]] = {i: {} for i in ids}
    for repository_id, name, number in session.execute(
        select(DataTag.repository_id, DataTag.name, DataVersion.number)
        .join(DataVersion, DataVersion.id == DataTag.version_id)
        .where(DataTag.repository_id.in_(ids))
    ):
        tags[repository_id][name] = number
    result = []
    for repository in found:
        count, _ = counted.get(repository.id, (0, 0))
        latest = tags[repository.id].get(data.LATEST)
        result.append(
            RepositoryOut(
                id=repository.id,
                kind=repository.kind,
                project=repository.project.name,
                name=repository.name,
                description=repository.description,
                visibility=repository.visibility,
                catalogue=repository.catalogue,
                user=repository.user_name,
                created_at=repository.created_at,
                versions=count,
                latest=latest,
                size_bytes=_latest_size(session, repository.id, latest),
                tags=tags[repository.id],
            )
        )
    return result


def _latest_size(session: Session, repository_id: int, latest: int | None) -> int:
    if latest is None:
        return 0
    size = session.scalar(
        select(DataVersion.size_bytes).where(
            DataVersion.repository_id == repository_id, DataVersion.number == latest
        )
    )
    return int(size or 0)


def version_out(version: DataVersion, tags: list[str]) -> VersionOut:
    return VersionOut(
        number=version.number,
        message=version.message,
        user=version.user_name,
        source=version.source,
        job_id=version.job_id,
        lineage=list(version.lineage or []),
        file_count=version.file_count,
        size_bytes=version.size_bytes,
        created_at=version.created_at,
        tags=sorted(tags),
    )


def versions_out(session: Session, repository: Repository) -> list[VersionOut]:
    """Newest first, each with the tags on it."""
    tags = data.tags_by_version(session, repository.id)
    return [version_out(v, tags.get(v.id, [])) for v in reversed(repository.versions)]


def version_detail_out(
    session: Session,
    repository: Repository,
    version: DataVersion,
    prefix: str = "",
    after: str = "",
) -> VersionDetailOut:
    """With its manifest: FILES_SHOWN files under `prefix`, from the one `after` that path."""
    tags = data.tags_by_version(session, repository.id).get(version.id, [])
    files = data.files_of(session, version.id, limit=FILES_SHOWN, prefix=prefix, after=after)
    return VersionDetailOut(
        **version_out(version, tags).model_dump(),
        repository=f"{repository.project.name}/{repository.name}",
        files=[FileOut(path=f.path, size=f.size, sha256=f.sha256) for f in files],
        files_total=version.file_count,
    )


def users_out(session: Session, repository: Repository, jobs: Sequence[Job]) -> list[UserOfOut]:
    numbers = {v.id: v.number for v in repository.versions}
    result = []
    for job in jobs:
        for item in job.inputs or []:
            if item.get("version_id") in numbers:
                result.append(
                    UserOfOut(
                        job_id=job.id,
                        kind=job.kind,
                        name=job.name,
                        state=job.state,
                        user=job.user_name,
                        version=numbers[item["version_id"]],
                    )
                )
    return result


def import_out(row: DataImport, language: str) -> ImportOut:
    """An import with its error in the reader's language, and the version it made."""
    repository = row.repository
    version = next((v.number for v in repository.versions if v.id == row.version_id), None)
    error = translate(row.error_key, language, **row.error_params) if row.error_key else ""
    return ImportOut(
        id=row.id,
        repository=f"{repository.project.name}/{repository.name}",
        source=dict(row.source),
        message=row.message,
        state=row.state,
        done_bytes=row.done_bytes,
        total_bytes=row.total_bytes,
        error=error,
        attempts=row.attempts,
        version=version,
        user=row.user_name,
        created_at=row.created_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
    )


def _said(problem: Problem | None, language: str) -> str | None:
    return translate(problem.key, language, **problem.params) if problem else None


def preview_out(path: str, found: Preview, language: str) -> PreviewOut:
    return PreviewOut(
        path=path,
        kind=found.kind,
        format=found.format,
        columns=found.columns,
        rows=found.rows,
        row_count=found.row_count,
        row_count_exact=found.row_count_exact,
        text=found.text,
        width=found.width,
        height=found.height,
        problem=_said(found.problem, language),
    )


def model_out(found: ModelLayout, language: str) -> ModelLayoutOut:
    return ModelLayoutOut(
        format=found.format,
        architecture=found.architecture,
        parameters=found.parameters,
        dtype=found.dtype,
        size_bytes=found.size_bytes,
        has_tokenizer=found.has_tokenizer,
        context_length=found.context_length,
        metadata=found.metadata,
        problems=[translate(p.key, language, **p.params) for p in found.problems],
    )


def inspect_out(checked: DatasetCheck, language: str) -> InspectOut:
    """A dataset's check: each file's report, and what its dataset_info.json got wrong."""
    info = checked.info.problems if checked.info else []
    return InspectOut(
        datasets=[check_out(found, language) for found in checked.files],
        info_problems=[translate(p.key, language, **p.params) for p in info],
        more_files=checked.more,
    )


def check_out(found: FileCheck, language: str) -> DatasetCheckOut:
    report = found.report
    findings = report.findings if report else []
    return DatasetCheckOut(
        path=found.path,
        entry=found.entry,
        formatting=report.formatting if report else None,
        checked=report.checked if report else 0,
        ok=bool(report and report.ok and not found.problem),
        findings=[
            FindingOut(
                record=f.index + 1, problem=translate(f.problem.key, language, **f.problem.params)
            )
            for f in findings
        ],
        counts=dict(report.counts) if report else {},
        truncated=report.truncated if report else False,
        problem=_said(found.problem, language),
    )
