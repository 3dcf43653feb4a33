"""A workload's output as a new version of a dataset or model, with its lineage."""

from sqlalchemy.orm import Session

from suanli.config import Settings
from suanli.core.errors import InvalidInput
from suanli.data import harvest
from suanli.data.store import BlobStore
from suanli.db.models import DataVersion, Job, Repository
from suanli.schemas.data import CommitOutput, ManifestEntry, VersionCreate
from suanli.services import data, jobs
from suanli.services.actor import Actor
from suanli.services.projects import writable

KINDS = ("job", "devenv")


def commit_output(
    session: Session,
    actor: Actor,
    store: BlobStore,
    settings: Settings,
    repository: Repository,
    body: CommitOutput,
) -> DataVersion:
    """A workload's output folder (`body.path` inside its own folder) as a new version, with
    its lineage: the workload, and the versions it read. The actor must be able to manage
    the workload (its author, the project's owners) and write to the repository."""
    found_job = session.get(Job, body.job)
    kind = found_job.kind if found_job is not None and found_job.kind in KINDS else "job"
    job = jobs.get_job(session, actor, body.job, kind=kind, history=False)
    jobs.may_manage(session, actor, job)
    writable(repository.project)
    folder = jobs.work_folder(settings, job.id)

    def held(sha256: str, size: int) -> None:
        data.hold(session, repository.project_id, sha256, size)

    try:
        found = harvest.collect(
            folder, body.path, store, data.room_left(session, repository.project), held
        )
    except harvest.HarvestError as error:
        session.rollback()
        raise InvalidInput(error.key, field="path", **error.params) from None
    except FileNotFoundError:
        session.rollback()
        raise InvalidInput("error.output_not_folder", field="path", path=body.path) from None
    session.flush()
    files = [ManifestEntry(path=f.path, sha256=f.sha256, size=f.size) for f in found]
    return data.create_version(
        session,
        actor,
        store,
        repository,
        VersionCreate(message=body.message, files=files),
        source="job",
        job_id=job.id,
        lineage=[str(item["ref"]) for item in job.inputs or []],
    )
