"""Datasets and models: repositories, versions, files, tags and what uses them.

Both kinds have the same routes, under /datasets and /models; `repository_router` makes
the one set for each. A repository is addressed as `{project}/{name}`, a version by number or
tag (`latest`, `prod`).
"""

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from suanli.api.data_outputs import (
    import_out,
    inspect_out,
    model_out,
    preview_out,
    repositories_out,
    users_out,
    version_detail_out,
    versions_out,
)
from suanli.api.deps import CallerDep, SessionDep, SettingsDep, StoreDep, WorkloadsDep
from suanli.api.problems import language_of
from suanli.controllers.imports import ImportController
from suanli.core.roles import ProjectRole
from suanli.db.models import Repository
from suanli.schemas.data import (
    CommitOutput,
    ImportCreate,
    ImportOut,
    InspectOut,
    PreviewOut,
    RepoName,
    RepositoryCreate,
    RepositoryListQuery,
    RepositoryOut,
    RepositoryUpdate,
    TagName,
    TagSet,
    UserOfOut,
    VerifyOut,
    VersionCreate,
    VersionDetailOut,
    VersionOut,
)
from suanli.schemas.types import Name, text
from suanli.services import data, imports, inspection, outputs, verification
from suanli.services.actor import Actor

ProjectName = Annotated[Name, Path()]
Repo = Annotated[RepoName, Path()]
VersionRef = Annotated[text(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"), Path()]
Tag = Annotated[TagName, Path()]
Force = Annotated[bool, Query()]
Prefix = Annotated[text(max_length=1024), Query()]
IMPORTS = ImportController.name


def repository_router(kind: str, plural: str) -> APIRouter:
    """The routes of one kind (`dataset` under /datasets, `model` under /models)."""
    router = APIRouter(prefix=f"/{plural}", tags=[plural])

    def find(
        session: Session,
        actor: Actor,
        project: str,
        name: str,
        need: ProjectRole = ProjectRole.viewer,
    ) -> Repository:
        return data.get_repository(session, actor, kind, project, name, need)

    def one(session: Session, repository: Repository) -> RepositoryOut:
        return repositories_out(session, [repository])[0]

    @router.post("", response_model=RepositoryOut, status_code=201)
    def create(spec: RepositoryCreate, caller: CallerDep, session: SessionDep) -> RepositoryOut:
        """Make an empty repository in a project (members and owners)."""
        repository = data.create_repository(session, caller.actor, kind, spec)
        return one(session, repository)

    @router.get("", response_model=list[RepositoryOut])
    def list_all(
        query: Annotated[RepositoryListQuery, Query()], caller: CallerDep, session: SessionDep
    ) -> list[RepositoryOut]:
        """Newest first: your projects' and every public one (`catalogue=true`: only the
        administrators' catalogue)."""
        return repositories_out(session, data.list_repositories(session, caller.actor, kind, query))

    @router.get("/{project}/{name}", response_model=RepositoryOut)
    def show(
        project: ProjectName, name: Repo, caller: CallerDep, session: SessionDep
    ) -> RepositoryOut:
        return one(session, find(session, caller.actor, project, name))

    @router.patch("/{project}/{name}", response_model=RepositoryOut)
    def change(
        project: ProjectName,
        name: Repo,
        changes: RepositoryUpdate,
        caller: CallerDep,
        session: SessionDep,
    ) -> RepositoryOut:
        """Description and visibility (members); `catalogue` (administrators)."""
        repository = find(session, caller.actor, project, name, ProjectRole.member)
        return one(session, data.update_repository(session, caller.actor, repository, changes))

    @router.delete("/{project}/{name}", status_code=204)
    def remove(
        project: ProjectName,
        name: Repo,
        caller: CallerDep,
        session: SessionDep,
        store: StoreDep,
        force: Force = False,
    ) -> None:
        """Delete it with every version (owners). Refused (409, naming them) while live
        workloads read it, unless `force`."""
        repository = find(session, caller.actor, project, name, ProjectRole.owner)
        data.delete_repository(session, caller.actor, store, repository, force)

    @router.get("/{project}/{name}/versions", response_model=list[VersionOut])
    def versions(
        project: ProjectName, name: Repo, caller: CallerDep, session: SessionDep
    ) -> list[VersionOut]:
        """Newest first, with their tags."""
        return versions_out(session, find(session, caller.actor, project, name))

    @router.post("/{project}/{name}/versions", response_model=VersionDetailOut, status_code=201)
    def commit(
        project: ProjectName,
        name: Repo,
        body: VersionCreate,
        caller: CallerDep,
        session: SessionDep,
        store: StoreDep,
    ) -> VersionDetailOut:
        """A new version from content the project holds (see /uploads), on top of `base`.
        It becomes `latest`."""
        repository = find(session, caller.actor, project, name, ProjectRole.member)
        version = data.create_version(session, caller.actor, store, repository, body)
        return version_detail_out(session, repository, version)

    @router.get("/{project}/{name}/versions/{version}", response_model=VersionDetailOut)
    def version(
        project: ProjectName,
        name: Repo,
        version: VersionRef,
        caller: CallerDep,
        session: SessionDep,
        prefix: Prefix = "",
        after: Prefix = "",
    ) -> VersionDetailOut:
        """With its manifest: path, size and sha256 of each file, in path order, 1000 at a
        time (under `prefix`; the next ones: `after` the last path received)."""
        repository = find(session, caller.actor, project, name)
        found = data.version_of(session, repository, version)
        return version_detail_out(session, repository, found, prefix, after)

    @router.delete("/{project}/{name}/versions/{version}", status_code=204)
    def remove_version(
        project: ProjectName,
        name: Repo,
        version: VersionRef,
        caller: CallerDep,
        session: SessionDep,
        store: StoreDep,
        force: Force = False,
    ) -> None:
        """Delete one version (owners); refused while live workloads read it, unless `force`."""
        repository = find(session, caller.actor, project, name, ProjectRole.owner)
        data.delete_version(session, caller.actor, store, repository, version, force)

    @router.get("/{project}/{name}/versions/{version}/users", response_model=list[UserOfOut])
    def users(
        project: ProjectName,
        name: Repo,
        version: VersionRef,
        caller: CallerDep,
        session: SessionDep,
    ) -> list[UserOfOut]:
        """The live workloads that read this version (what a deletion would affect)."""
        repository = find(session, caller.actor, project, name)
        found = data.version_of(session, repository, version)
        return users_out(session, repository, data.users_of(session, [found.id]))

    @router.get("/{project}/{name}/versions/{version}/files/{path:path}")
    def download(
        project: ProjectName,
        name: Repo,
        version: VersionRef,
        path: str,
        caller: CallerDep,
        session: SessionDep,
        store: StoreDep,
    ) -> FileResponse:
        """One file's bytes (Range requests resume a download)."""
        repository = find(session, caller.actor, project, name)
        found = data.file_of(session, data.version_of(session, repository, version), path)
        return FileResponse(
            store.path_of(found.sha256),
            media_type="application/octet-stream",  # never rendered: a user's html is bytes
            filename=path.rsplit("/", 1)[-1],
            headers={
                "ETag": f'"{found.sha256}"',
                "X-Content-Sha256": found.sha256,
                "X-Content-Type-Options": "nosniff",
            },
        )

    @router.get(
        "/{project}/{name}/versions/{version}/preview/{path:path}", response_model=PreviewOut
    )
    def preview(
        project: ProjectName,
        name: Repo,
        version: VersionRef,
        path: str,
        request: Request,
        caller: CallerDep,
        session: SessionDep,
        store: StoreDep,
        rows: Annotated[int, Query(ge=1, le=1000)] = 20,
    ) -> PreviewOut:
        """The first rows and the columns of a table (json, jsonl, csv, tsv, parquet, arrow),
        the first lines of a text, an image's size; a malformed file says so."""
        repository = find(session, caller.actor, project, name)
        found = data.file_of(session, data.version_of(session, repository, version), path)
        shown = inspection.preview_file(store, found, rows)
        return preview_out(path, shown, language_of(request))

    @router.get("/{project}/{name}/versions/{version}/inspect", response_model=InspectOut)
    def inspect(
        project: ProjectName,
        name: Repo,
        version: VersionRef,
        request: Request,
        caller: CallerDep,
        session: SessionDep,
        store: StoreDep,
    ) -> InspectOut:
        """A model: its layout (format, architecture, parameters, dtype, size, tokenizer).
        A dataset: each data file checked as LLaMA-Factory reads it (with its
        dataset_info.json where there is one)."""
        repository = find(session, caller.actor, project, name)
        found = data.version_of(session, repository, version)
        language = language_of(request)
        if kind == "model":
            return InspectOut(
                model=model_out(inspection.model_layout(session, store, found), language)
            )
        checked = inspection.check_dataset(inspection.blobs_of(session, store, found))
        return inspect_out(checked, language)

    @router.post("/{project}/{name}/versions/{version}/verify", response_model=VerifyOut)
    def verify(
        project: ProjectName,
        name: Repo,
        version: VersionRef,
        caller: CallerDep,
        session: SessionDep,
        store: StoreDep,
    ) -> VerifyOut:
        """Hash every file again and compare with the manifest."""
        repository = find(session, caller.actor, project, name)
        found = data.version_of(session, repository, version)
        return verification.verify_version(session, store, found.id)

    @router.post("/{project}/{name}/commit", response_model=VersionDetailOut, status_code=201)
    def commit_output(
        project: ProjectName,
        name: Repo,
        body: CommitOutput,
        caller: CallerDep,
        session: SessionDep,
        store: StoreDep,
        settings: SettingsDep,
    ) -> VersionDetailOut:
        """A workload's output folder (a path inside its own folder) as a new version, with
        its lineage: the workload and the versions it read. Links, pipes and devices in the
        folder are refused, naming the path."""
        repository = find(session, caller.actor, project, name, ProjectRole.member)
        version = outputs.commit_output(session, caller.actor, store, settings, repository, body)
        return version_detail_out(session, repository, version)

    @router.post("/{project}/{name}/imports", response_model=ImportOut, status_code=202)
    def start_import(
        project: ProjectName,
        name: Repo,
        body: ImportCreate,
        request: Request,
        caller: CallerDep,
        session: SessionDep,
        settings: SettingsDep,
        workloads: WorkloadsDep,
    ) -> ImportOut:
        """Fetch a source (http(s) with resume, ftp, sftp, git, S3) into a new version, in the
        background: follow it at /imports/{id}. Passwords and keys are kept sealed and never
        shown. Loopback and private addresses are refused unless the administrator allows
        them."""
        repository = find(session, caller.actor, project, name, ProjectRole.member)
        row = imports.start(session, caller.actor, settings, repository, body)
        workloads.wake(IMPORTS)
        return import_out(row, language_of(request))

    @router.get("/{project}/{name}/imports", response_model=list[ImportOut])
    def list_imports(
        project: ProjectName, name: Repo, request: Request, caller: CallerDep, session: SessionDep
    ) -> list[ImportOut]:
        """Newest first (the last 100)."""
        repository = find(session, caller.actor, project, name)
        language = language_of(request)
        return [import_out(row, language) for row in imports.list_imports(session, repository)]

    @router.put("/{project}/{name}/tags/{tag}", response_model=RepositoryOut)
    def tag(
        project: ProjectName,
        name: Repo,
        tag: Tag,
        body: TagSet,
        caller: CallerDep,
        session: SessionDep,
    ) -> RepositoryOut:
        """Point a tag at a version; with `expected`, only if it still points there (409 if
        someone moved it meanwhile)."""
        repository = find(session, caller.actor, project, name, ProjectRole.member)
        data.set_tag(session, caller.actor, repository, tag, body)
        return one(session, repository)

    @router.delete("/{project}/{name}/tags/{tag}", status_code=204)
    def untag(
        project: ProjectName, name: Repo, tag: Tag, caller: CallerDep, session: SessionDep
    ) -> None:
        repository = find(session, caller.actor, project, name, ProjectRole.member)
        data.delete_tag(session, caller.actor, repository, tag)

    return router


datasets = repository_router("dataset", "datasets")
models = repository_router("model", "models")
