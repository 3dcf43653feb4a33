"""Imports: fetching a remote source into a new version, in the background.

Services only write the import's row (queued, cancel asked, retried); the import controller
(suanli.controllers.imports) fetches and makes the version. The source's secrets (a
password, S3 keys) are sealed apart from it (suanli.security.sealed) and never shown.
Whoever may write to the repository starts imports; whoever may read it sees them.
"""

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from suanli.config import Settings
from suanli.core.errors import Conflict, NotFound
from suanli.core.roles import ProjectRole
from suanli.db.models import DataImport, Repository, utcnow
from suanli.schemas.data import ImportCreate
from suanli.security import sealed
from suanli.services import audit, data
from suanli.services.actor import Actor
from suanli.services.projects import writable

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)
ENDED = (SUCCEEDED, FAILED, CANCELLED)


def start(
    session: Session, actor: Actor, settings: Settings, repository: Repository, body: ImportCreate
) -> DataImport:
    writable(repository.project)
    row = DataImport(
        repository_id=repository.id,
        user_id=actor.account.id,
        user_name=actor.name,
        source=body.source.public(),
        sealed=sealed.seal(settings.data_dir, body.source.secrets()),
        message=body.message,
        state=QUEUED,
    )
    session.add(row)
    session.flush()
    _audit(session, actor, "import", repository, row)
    session.commit()
    session.refresh(row, ["repository"])
    return row


def list_imports(session: Session, repository: Repository) -> Sequence[DataImport]:
    return session.scalars(
        select(DataImport)
        .where(DataImport.repository_id == repository.id)
        .options(selectinload(DataImport.repository).selectinload(Repository.project))
        .order_by(DataImport.id.desc())
        .limit(100)
    ).all()


def get(
    session: Session, actor: Actor, import_id: int, need: ProjectRole = ProjectRole.viewer
) -> DataImport:
    row = session.get(
        DataImport,
        import_id,
        options=[selectinload(DataImport.repository).selectinload(Repository.project)],
    )
    missing = NotFound("error.import_not_found", id=import_id)
    if row is None:
        raise missing
    repository = row.repository
    try:
        data.get_repository(
            session, actor, repository.kind, repository.project.name, repository.name, need
        )
    except NotFound:
        raise missing from None
    return row


def cancel(session: Session, actor: Actor, import_id: int) -> DataImport:
    """A queued import ends at once; a running one stops at its next chunk."""
    row = get(session, actor, import_id, ProjectRole.member)
    if row.state in ENDED:
        raise Conflict("error.import_ended", id=import_id)
    if row.state == QUEUED:
        row.state, row.ended_at = CANCELLED, utcnow()
    else:
        row.cancel_requested = True
    _audit(session, actor, "import.cancel", row.repository, row)
    session.commit()
    return row


def retry(session: Session, actor: Actor, import_id: int) -> DataImport:
    """A failed or cancelled import again: what it fetched before is kept and resumed."""
    row = get(session, actor, import_id, ProjectRole.member)
    if row.state not in (FAILED, CANCELLED):
        raise Conflict("error.import_not_ended", id=import_id)
    row.state, row.cancel_requested = QUEUED, False
    row.error_key, row.error_params, row.ended_at = "", {}, None
    _audit(session, actor, "import.retry", row.repository, row)
    session.commit()
    return row


def _audit(
    session: Session, actor: Actor, action: str, repository: Repository, row: DataImport
) -> None:
    audit.record(
        session,
        actor,
        f"{repository.kind}.{action}",
        target_type=repository.kind,
        target=f"{repository.project.name}/{repository.name}",
        project=repository.project,
        detail={"import": row.id, "kind": row.source.get("kind"), "url": row.source.get("url")},
    )
