"""Datasets and models: repositories, immutable versions, tags, storage and use.

Who may do what: a project's members (and owners) make repositories and versions in it, and
move tags; its owners (and administrators) delete; every member reads. A repository made
public, or put in the catalogue by an administrator, is read (and used by workloads) by every
user. A version names content by sha256, and only content the project holds (it sent the
bytes, or they are in a version it can read): knowing another tenant's hash gives nothing.

Storage counted against a project's `storage_bytes` is each blob it holds once, however
many versions name it, plus what its unfinished uploads and imports have reserved.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from suanli.core.errors import Conflict, Forbidden, InvalidInput, NotFound, TooLarge
from suanli.core.roles import ProjectRole
from suanli.core.states import ACTIVE, State
from suanli.data import paths
from suanli.data.store import BlobStore
from suanli.db.models import (
    Blob,
    DataFile,
    DataImport,
    DataTag,
    DataVersion,
    Deployment,
    Job,
    Membership,
    Project,
    ProjectBlob,
    Repository,
    Upload,
    utcnow,
)
from suanli.schemas.data import (
    RepositoryCreate,
    RepositoryListQuery,
    RepositoryUpdate,
    TagSet,
    VersionCreate,
)
from suanli.services import audit
from suanli.services.actor import Actor
from suanli.services.common import commit, require_admin
from suanli.services.projects import access, writable

LATEST = "latest"
LIVE = (State.pending, *ACTIVE)


# --- repositories -------------------------------------------------------------------------


def create_repository(
    session: Session, actor: Actor, kind: str, spec: RepositoryCreate
) -> Repository:
    project, _ = access(session, actor, spec.project, ProjectRole.member)
    writable(project)
    conflict = {"field": "name", "name": spec.name, "project": project.name}
    if _find(session, kind, project.id, spec.name) is not None:
        raise Conflict(f"error.{kind}_exists", **conflict)
    repository = Repository(
        kind=kind,
        name=spec.name,
        project=project,
        description=spec.description,
        visibility=spec.visibility,
        user_id=actor.account.id,
        user_name=actor.name,
    )
    session.add(repository)
    session.flush()
    _audit(session, actor, f"{kind}.create", repository, visibility=spec.visibility)
    commit(session, f"error.{kind}_exists", **conflict)
    return repository


def list_repositories(
    session: Session, actor: Actor, kind: str, query: RepositoryListQuery
) -> Sequence[Repository]:
    """The actor's projects' repositories, and every public one; newest first."""
    statement = (
        select(Repository)
        .where(Repository.kind == kind)
        .options(selectinload(Repository.project))
        .order_by(Repository.id.desc())
        .limit(query.limit)
    )
    if not actor.is_admin:
        mine = select(Membership.project_id).where(Membership.user_id == actor.account.id)
        statement = statement.where(
            Repository.project_id.in_(mine)
            | (Repository.visibility == "public")
            | Repository.catalogue
        )
    if query.project:
        statement = statement.join(Project).where(Project.name == query.project)
    if query.catalogue:
        statement = statement.where(Repository.catalogue)
    return session.scalars(statement).all()


def get_repository(
    session: Session,
    actor: Actor,
    kind: str,
    project_name: str,
    name: str,
    need: ProjectRole = ProjectRole.viewer,
) -> Repository:
    """The repository if the actor may act on it with `need`; a repository the actor may not
    even read is not found, as if it did not exist."""
    missing = NotFound(f"error.{kind}_not_found", project=project_name, name=name)
    project = session.scalar(select(Project).where(Project.name == project_name))
    repository = _find(session, kind, project.id, name) if project else None
    if repository is None:
        raise missing
    readable_by_all = repository.visibility == "public" or repository.catalogue
    try:
        access(session, actor, project_name, need)
    except NotFound:
        if need == ProjectRole.viewer and readable_by_all:
            return repository
        raise missing from None
    except Forbidden:
        if need == ProjectRole.viewer and readable_by_all:
            return repository
        raise
    return repository


def update_repository(
    session: Session, actor: Actor, repository: Repository, changes: RepositoryUpdate
) -> Repository:
    if changes.catalogue is not None:
        require_admin(actor)
        repository.catalogue = changes.catalogue
    if changes.description is not None:
        repository.description = changes.description
    if changes.visibility is not None:
        repository.visibility = changes.visibility
    _audit(
        session,
        actor,
        f"{repository.kind}.update",
        repository,
        **changes.model_dump(exclude_none=True),
    )
    session.commit()
    return repository


def delete_repository(
    session: Session, actor: Actor, store: BlobStore, repository: Repository, force: bool
) -> None:
    """Owners only. Refused (409, naming them) while live workloads read one of its versions,
    unless forced; their mounts stay until they end (a bind mount holds the files)."""
    versions = [v.id for v in repository.versions]
    if not force:
        _refuse_in_use(session, versions)
    _audit(session, actor, f"{repository.kind}.delete", repository)
    session.delete(repository)
    session.commit()
    for version_id in versions:
        store.remove_tree(version_id)


# --- versions -----------------------------------------------------------------------------


def create_version(
    session: Session,
    actor: Actor,
    store: BlobStore,
    repository: Repository,
    body: VersionCreate,
    *,
    source: str = "upload",
    job_id: int | None = None,
    lineage: Sequence[str] = (),
) -> DataVersion:
    """A new version: the base's files, less `remove`, with `files` added or replacing. Each
    file's content must be held by the project; its tree is built before the version is
    visible (no half version is ever seen)."""
    writable(repository.project)
    manifest: dict[str, tuple[str, int]] = {}
    if body.base is not None:
        base = version_of(session, repository, str(body.base), field="base")
        manifest = {f.path: (f.sha256, f.size) for f in files_of(session, base.id)}
    for index, path in enumerate(body.remove):
        if manifest.pop(path, None) is None:
            raise InvalidInput("error.data_path_absent", field=f"remove.{index}", path=path)
    seen: set[str] = set()
    for index, entry in enumerate(body.files):
        if entry.path in seen:
            raise InvalidInput(
                "error.data_path_twice", field=f"files.{index}.path", path=entry.path
            )
        seen.add(entry.path)
        manifest[entry.path] = (entry.sha256, entry.size)
    _check_held(session, repository.project_id, body.files)
    clash = paths.conflicts(list(manifest))
    if clash is not None:
        raise InvalidInput("error.data_path_clash", field="files", path=clash)
    number = (
        session.scalar(
            select(func.max(DataVersion.number)).where(DataVersion.repository_id == repository.id)
        )
        or 0
    ) + 1
    version = DataVersion(
        repository_id=repository.id,
        number=number,
        message=body.message,
        user_id=actor.account.id,
        user_name=actor.name,
        source=source,
        job_id=job_id,
        lineage=list(lineage),
        file_count=len(manifest),
        size_bytes=sum(size for _, size in manifest.values()),
    )
    try:
        session.add(version)
        session.flush()  # another version with this number: the unique index says so here
        session.add_all(
            DataFile(version_id=version.id, path=path, sha256=sha, size=size)
            for path, (sha, size) in manifest.items()
        )
        for tag in (LATEST, *body.tags):
            _point(session, repository.id, tag, version.id)
        _audit(session, actor, f"{repository.kind}.version", repository, version=number)
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict("error.version_raced", name=repository.name) from None
    store.build_tree(version.id, ((path, sha) for path, (sha, _) in manifest.items()))
    try:
        commit(session, "error.version_raced", name=repository.name)
    except Conflict:
        store.remove_tree(version.id)
        raise
    return version


def version_of(
    session: Session, repository: Repository, ref: str, *, field: str = "version"
) -> DataVersion:
    """A version by number or by tag."""
    if ref.isdigit():
        found = session.scalar(
            select(DataVersion).where(
                DataVersion.repository_id == repository.id, DataVersion.number == int(ref)
            )
        )
    else:
        found = session.scalar(
            select(DataVersion)
            .join(DataTag, DataTag.version_id == DataVersion.id)
            .where(DataTag.repository_id == repository.id, DataTag.name == ref)
        )
    if found is None:
        raise NotFound("error.version_not_found", field=field, name=repository.name, version=ref)
    return found


def files_of(
    session: Session,
    version_id: int,
    *,
    limit: int | None = None,
    prefix: str = "",
    after: str = "",
) -> Sequence[DataFile]:
    """In path order (the database's collation, which `after` compares with too, so pages
    follow each other on every database)."""
    statement = select(DataFile).where(DataFile.version_id == version_id).order_by(DataFile.path)
    if prefix:
        statement = statement.where(DataFile.path.startswith(prefix, autoescape=True))
    if after:
        statement = statement.where(DataFile.path > after)
    if limit is not None:
        statement = statement.limit(limit)
    return session.scalars(statement).all()


def file_of(session: Session, version: DataVersion, path: str) -> DataFile:
    found = session.get(DataFile, (version.id, path))
    if found is None:
        raise NotFound("error.data_file_not_found", path=path)
    return found


def tags_by_version(session: Session, repository_id: int) -> dict[int, list[str]]:
    result: dict[int, list[str]] = {}
    for tag in session.scalars(select(DataTag).where(DataTag.repository_id == repository_id)):
        result.setdefault(tag.version_id, []).append(tag.name)
    return result


def delete_version(
    session: Session, actor: Actor, store: BlobStore, repository: Repository, ref: str, force: bool
) -> None:
    """Owners only; refused while live workloads read it unless forced. `latest` moves to the
    newest version left; other tags on it go with it."""
    version = version_of(session, repository, ref)
    if not force:
        _refuse_in_use(session, [version.id])
    number = version.number
    session.delete(version)
    session.flush()
    newest = session.scalar(
        select(DataVersion.id)
        .where(DataVersion.repository_id == repository.id)
        .order_by(DataVersion.number.desc())
        .limit(1)
    )
    if newest is not None:
        _point(session, repository.id, LATEST, newest)
    _audit(session, actor, f"{repository.kind}.version_delete", repository, version=number)
    session.commit()
    store.remove_tree(version.id)


def set_tag(
    session: Session, actor: Actor, repository: Repository, tag: str, body: TagSet
) -> DataTag:
    """Move a tag; with `expected`, only from that version (compare-and-set in one UPDATE, so
    two concurrent moves cannot both win)."""
    target = version_of(session, repository, str(body.version))
    current = session.get(DataTag, (repository.id, tag))
    if body.expected is not None:
        expected = version_of(session, repository, str(body.expected), field="expected")
        moved = session.execute(
            update(DataTag)
            .where(
                DataTag.repository_id == repository.id,
                DataTag.name == tag,
                DataTag.version_id == expected.id,
            )
            .values(version_id=target.id, updated_at=utcnow())
        )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            session.rollback()
            raise Conflict("error.tag_moved", field="expected", tag=tag)
    elif current is None:
        session.add(DataTag(repository_id=repository.id, name=tag, version_id=target.id))
    else:
        current.version_id = target.id
    _audit(session, actor, f"{repository.kind}.tag", repository, tag=tag, version=target.number)
    commit(session, "error.tag_moved", field="expected", tag=tag)
    return session.scalars(
        select(DataTag).where(DataTag.repository_id == repository.id, DataTag.name == tag)
    ).one()


def delete_tag(session: Session, actor: Actor, repository: Repository, tag: str) -> None:
    if tag == LATEST:
        raise InvalidInput("error.tag_latest", field="tag")
    removed = session.execute(
        delete(DataTag).where(DataTag.repository_id == repository.id, DataTag.name == tag)
    )
    if removed.rowcount != 1:  # type: ignore[attr-defined]
        raise NotFound("error.tag_not_found", tag=tag)
    _audit(session, actor, f"{repository.kind}.untag", repository, tag=tag)
    session.commit()


# --- storage ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Storage:
    used: int  # each blob the project holds, once
    reserved: int  # what its unfinished uploads declared, and what running imports fetched
    limit: int | None


def storage(session: Session, project: Project) -> Storage:
    used = session.scalar(
        select(func.coalesce(func.sum(Blob.size), 0))
        .join(ProjectBlob, ProjectBlob.sha256 == Blob.sha256)
        .where(ProjectBlob.project_id == project.id)
    )
    uploads = session.scalar(
        select(func.coalesce(func.sum(Upload.length), 0)).where(
            Upload.project_id == project.id, Upload.sha256.is_(None)
        )
    )
    imports = session.scalar(
        select(func.coalesce(func.sum(DataImport.done_bytes), 0))
        .join(Repository)
        .where(Repository.project_id == project.id, DataImport.state == "running")
    )
    limit = project.quota.storage_bytes if project.quota else None
    return Storage(int(used or 0), int(uploads or 0) + int(imports or 0), limit)


def room_left(session: Session, project: Project) -> int | None:
    """Bytes the project may still write (None: no limit)."""
    now = storage(session, project)
    return None if now.limit is None else max(0, now.limit - now.used - now.reserved)


def check_room(session: Session, project: Project, wanted: int, field: str) -> None:
    """Refuse, before a byte is written, what would take the project over its storage."""
    left = room_left(session, project)
    if left is not None and wanted > left:
        raise TooLarge("error.storage_quota", field=field, wanted=wanted, left=left)


def missing(session: Session, project: Project, hashes: Iterable[str]) -> list[str]:
    """Which contents the project does not hold: a client sends only those."""
    wanted = list(dict.fromkeys(hashes))
    held = set(
        session.scalars(
            select(ProjectBlob.sha256).where(
                ProjectBlob.project_id == project.id, ProjectBlob.sha256.in_(wanted)
            )
        )
    )
    return [sha for sha in wanted if sha not in held]


def hold(session: Session, project_id: int, sha256: str, size: int) -> None:
    """The project now holds this content (its bytes are in the store)."""
    if session.get(Blob, sha256) is None:
        session.add(Blob(sha256=sha256, size=size))
        session.flush()
    if session.get(ProjectBlob, (project_id, sha256)) is None:
        session.add(ProjectBlob(project_id=project_id, sha256=sha256))
        session.flush()


def _check_held(session: Session, project_id: int, files: Sequence) -> None:
    hashes = list({entry.sha256 for entry in files})
    held = {
        blob.sha256: blob.size
        for blob in session.scalars(
            select(Blob)
            .join(ProjectBlob, ProjectBlob.sha256 == Blob.sha256)
            .where(ProjectBlob.project_id == project_id, Blob.sha256.in_(hashes))
        )
    }
    for index, entry in enumerate(files):
        size = held.get(entry.sha256)
        if size is None:
            raise InvalidInput(
                "error.data_blob_unknown", field=f"files.{index}.sha256", path=entry.path
            )
        if size != entry.size:
            raise InvalidInput(
                "error.data_size_mismatch", field=f"files.{index}.size", path=entry.path, size=size
            )


def collect_garbage(session: Session, store: BlobStore, older_than: datetime) -> int:
    """Forget content nobody uses: a project's hold on a blob none of its versions names
    (an upload never committed, a deleted version), once older than `older_than`; then the
    blobs no project holds and no version names, bytes and all. Returns blobs removed."""
    named = (
        select(DataFile.sha256)
        .join(DataVersion, DataVersion.id == DataFile.version_id)
        .join(Repository, Repository.id == DataVersion.repository_id)
        .where(Repository.project_id == ProjectBlob.project_id)
    )
    session.execute(
        delete(ProjectBlob)
        .where(ProjectBlob.created_at < older_than, ProjectBlob.sha256.not_in(named))
        .execution_options(synchronize_session=False)
    )
    held = select(ProjectBlob.sha256).where(ProjectBlob.sha256 == Blob.sha256).exists()
    used = select(DataFile.sha256).where(DataFile.sha256 == Blob.sha256).exists()
    orphans = list(session.scalars(select(Blob.sha256).where(~held, ~used)))
    if orphans:
        session.execute(delete(Blob).where(Blob.sha256.in_(orphans)))
    session.commit()
    for sha256 in orphans:
        store.remove(sha256)
    return len(orphans)


# --- use by workloads ---------------------------------------------------------------------


def users_of(session: Session, version_ids: Sequence[int]) -> list[Job]:
    """Live workloads that read one of these versions."""
    if not version_ids:
        return []
    wanted = set(version_ids)
    live = session.scalars(select(Job).where(Job.state.in_(LIVE)).order_by(Job.id)).all()
    return [
        job for job in live if any(item.get("version_id") in wanted for item in job.inputs or [])
    ]


def services_of(session: Session, version_ids: Sequence[int]) -> list[Deployment]:
    """Deployments (model services) whose replicas serve one of these versions, also while
    they are scaled to zero: the next request would start a replica that reads it."""
    wanted = set(version_ids)
    found = session.scalars(
        select(Deployment).where(Deployment.state == "active").order_by(Deployment.id)
    ).all()
    return [d for d in found if any(i.get("version_id") in wanted for i in d.inputs or [])]


def _refuse_in_use(session: Session, version_ids: Sequence[int]) -> None:
    if users := users_of(session, version_ids):
        raise Conflict("error.data_in_use", count=len(users), jobs=_job_list(users))
    if served := services_of(session, version_ids):
        names = ", ".join(f"{d.project.name}/{d.name}" for d in served[:10])
        raise Conflict("error.data_served", count=len(served), services=names)


def resolve(
    session: Session, actor: Actor, project: Project, kind: str, refs: Sequence[str], field: str
) -> list[dict[str, object]]:
    """A workload's `datasets` or `models` as fixed versions, read with the submitter's
    rights now: a tag is followed once, so every attempt mounts the same bytes."""
    resolved: list[dict[str, object]] = []
    names: set[str] = set()
    for index, ref in enumerate(refs):
        where = f"{field}.{index}"
        owner, _, rest = ref.rpartition("/")
        name, _, wanted = rest.partition("@")
        try:
            repository = get_repository(session, actor, kind, owner or project.name, name)
            version = version_of(session, repository, wanted or LATEST, field=where)
        except (NotFound, Forbidden) as error:
            error.field = where
            raise
        if name in names:
            raise InvalidInput("error.data_name_twice", field=where, name=name)
        names.add(name)
        resolved.append(
            {
                "kind": kind,
                "name": name,
                "ref": f"{repository.project.name}/{name}@{version.number}",
                "version_id": version.id,
            }
        )
    return resolved


def _job_list(jobs: Sequence[Job]) -> str:
    return ", ".join(f"#{job.id}" for job in jobs[:10])


# --- helpers ------------------------------------------------------------------------------


def _find(session: Session, kind: str, project_id: int, name: str) -> Repository | None:
    return session.scalar(
        select(Repository)
        .where(
            Repository.kind == kind, Repository.project_id == project_id, Repository.name == name
        )
        .options(selectinload(Repository.project).selectinload(Project.quota))
    )


def _point(session: Session, repository_id: int, tag: str, version_id: int) -> None:
    current = session.get(DataTag, (repository_id, tag))
    if current is None:
        session.add(DataTag(repository_id=repository_id, name=tag, version_id=version_id))
    else:
        current.version_id = version_id


def _audit(
    session: Session, actor: Actor, action: str, repository: Repository, **detail: object
) -> None:
    audit.record(
        session,
        actor,
        action,
        target_type=repository.kind,
        target=f"{repository.project.name}/{repository.name}",
        project=repository.project,
        detail=dict(detail),
    )
