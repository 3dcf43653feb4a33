"""Datasets and models in the console: the lists (and the administrators' catalogue, the
"model plaza"), the create form, a repository's page (its versions, tags, settings, storage,
and an upload area that sends files or a whole folder over tus, then commits them as a
version), a version's page (its manifest, downloads, verification, a preview of one file,
LLaMA-Factory's word on a dataset and the layout of a model) and the file bytes themselves.

Access is the services' word, exactly as the API asks it: a private repository of a project
the viewer is a stranger to is the same 404 as one that does not exist. Roles are asked
again here only to choose which forms to show.

Uploads go to a tus endpoint of the console's own (/data/uploads), which runs the API's
handling after checking its caller the console's way: a session and the CSRF token in a
header, both before a byte of the body is read (a form token cannot be used: reading the
form would read the body).
"""

import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Header, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from suanli.api.data_outputs import (
    import_out,
    repositories_out,
    users_out,
    version_detail_out,
    versions_out,
)
from suanli.api.deps import SessionDep, SettingsDep, StoreDep, WorkloadsDep
from suanli.api.routes.data import ProjectName, Repo, Tag, VersionRef
from suanli.api.routes.imports import ImportId
from suanli.api.routes.uploads import TUS, UploadId, created, headers_of, receive, start
from suanli.controllers.imports import ImportController
from suanli.core.errors import Forbidden, NotFound, SuanliError
from suanli.core.roles import ProjectRole
from suanli.data import layout, preview
from suanli.data.store import BlobStore
from suanli.db.models import DataImport, DataVersion, Project, Repository
from suanli.i18n import translate
from suanli.schemas.data import (
    ImportCreate,
    ImportOut,
    RepositoryCreate,
    RepositoryListQuery,
    RepositoryOut,
    RepositoryUpdate,
    TagName,
    TagSet,
    VerifyOut,
    VersionCreate,
)
from suanli.schemas.imports import SCHEMES
from suanli.services import data, imports, inspection, projects, uploads, verification
from suanli.web import forms, render, session
from suanli.web.session import Viewer

router = APIRouter(include_in_schema=False)
# Pages and forms: the console's CSRF check (a form field or a header).
_pages = APIRouter(dependencies=[Depends(session.check_csrf)])
# The tus endpoint: its caller is checked by `upload_viewer` instead (a header only).
UPLOADS = "/data/uploads"
_tus = APIRouter(prefix=UPLOADS)
ViewerDep = Annotated[Viewer, Depends(session.require_viewer)]
Text = Annotated[str, Form()]
PREVIEW_ROWS = 20
# The LLaMA-Factory check on a version's page: this many files, this many records each.
# Shown inline (as a thumbnail); every other file is sent as an attachment.
IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}
# A tag as the API's path reads it: a bad one is refused on the form's field.
TAG_NAME: TypeAdapter[str] = TypeAdapter(TagName)
# A repository's page lists its latest imports, and follows them while one is under way.
SHOWN_IMPORTS = 20
LIVE_IMPORTS = (imports.QUEUED, imports.RUNNING)


class ImportForm(BaseModel):
    """The import form as typed: every field text, for `ImportSource` to read and refuse."""

    kind: str = "http"
    url: str = ""
    ref: str = ""
    username: str = ""
    password: str = ""
    bucket: str = ""
    prefix: str = ""
    access_key: str = ""
    secret_key: str = ""
    region: str = ""
    unpack: str = ""
    lfs: str = ""
    message: str = ""

    def shown(self) -> dict[str, str]:
        """What a refused form shows again: everything but the password and the keys, which
        are never sent back to a page."""
        kept = self.model_dump(exclude={"password", "access_key", "secret_key"})
        return {f"import.{key}": value for key, value in kept.items()}

    def body(self) -> dict[str, Any]:
        """An `ImportCreate` document: an empty optional field is left out (its default)."""
        source: dict[str, Any] = {
            "kind": self.kind,
            "url": self.url.strip(),
            "unpack": self.unpack == "on",
            "lfs": self.lfs == "on",
        }
        for name in ("ref", "username", "bucket", "prefix", "region"):
            if value := getattr(self, name).strip():
                source[name] = value
        for name in ("password", "access_key", "secret_key"):
            if value := getattr(self, name):
                source[name] = value
        return {"source": source, "message": self.message.replace("\r\n", "\n")}


@dataclass(frozen=True)
class Kind:
    """Datasets or models: the same pages under /datasets and /models."""

    name: str  # "dataset" | "model"
    plural: str  # "datasets" | "models"


DATASET = Kind("dataset", "datasets")
MODEL = Kind("model", "models")


@dataclass(frozen=True)
class Powers:
    """What the viewer may do with a repository, as the services will decide (only to choose
    which forms to show)."""

    reader: bool = False  # of its project: sees the project's storage
    member: bool = False  # uploads, commits, moves tags, edits its settings
    owner: bool = False  # deletes versions and the repository
    admin: bool = False  # puts it in the catalogue


def _powers(db: Session, viewer: Viewer, project: Project) -> Powers:
    try:
        _, role = projects.access(db, viewer.actor, project.name)
    except (NotFound, Forbidden):
        role = None
    admin = viewer.actor.is_admin
    open_project = project.archived_at is None

    def at_least(need: ProjectRole) -> bool:
        return admin or (role is not None and role.at_least(need))

    return Powers(
        reader=at_least(ProjectRole.viewer),
        member=at_least(ProjectRole.member) and open_project,
        owner=at_least(ProjectRole.owner),
        admin=admin,
    )


# --- the tus endpoint -----------------------------------------------------------------------


async def upload_viewer(request: Request) -> Viewer:
    """For a request that changes something, the CSRF token in its header (refused first,
    as every console form is); then the signed-in user. Both before the body is read."""
    await run_in_threadpool(session.find_viewer, request)  # the session, off the event loop
    if request.method != "HEAD":
        if session.CSRF_HEADER not in request.headers:
            raise Forbidden("error.csrf")
        await session.check_csrf(request)  # with the header there, it reads no form
    return session.require_viewer(request)


UploadViewer = Annotated[Viewer, Depends(upload_viewer)]
Length = Annotated[int, Header(ge=0, le=uploads.MAX_LENGTH)]


@_tus.post("", status_code=201)
def create_upload(
    viewer: UploadViewer,
    db: SessionDep,
    store: StoreDep,
    upload_length: Length,
    upload_metadata: Annotated[str, Header(max_length=8192)] = "",
) -> Response:
    """Start an upload into the project the metadata names, as the API's POST /uploads."""
    upload = start(db, store, viewer.actor, upload_length, upload_metadata)
    return created(upload, f"{UPLOADS}/{upload.id}")


@_tus.head("/{upload_id}")
def upload_offset(
    upload_id: UploadId, viewer: UploadViewer, db: SessionDep, store: StoreDep
) -> Response:
    """How far it got (a resumed upload continues there), and its sha256 once complete."""
    upload = uploads.get(db, viewer.actor, upload_id)
    done = upload.length if upload.sha256 else uploads.arrived(store, upload)
    return Response(status_code=200, headers=headers_of(upload, done))


@_tus.patch("/{upload_id}", status_code=204)
async def append_upload(
    upload_id: UploadId,
    request: Request,
    viewer: UploadViewer,
    store: StoreDep,
    upload_offset: Length,
    content_type: Annotated[str, Header()] = "",
) -> Response:
    """Bytes from `Upload-Offset`, streamed to disk by the API's own handling."""
    return await receive(request, store, viewer.actor, upload_id, upload_offset, content_type)


@_tus.delete("/{upload_id}", status_code=204)
def discard_upload(
    upload_id: UploadId, viewer: UploadViewer, db: SessionDep, store: StoreDep
) -> Response:
    uploads.remove(db, store, uploads.get(db, viewer.actor, upload_id))
    return Response(status_code=204, headers=TUS)


# --- what a version holds -------------------------------------------------------------------


def problem_text(problem: preview.Problem | None, language: str) -> str:
    return translate(problem.key, language, **problem.params) if problem else ""


# --- pages ----------------------------------------------------------------------------------


def _repository_page(
    request: Request,
    db: Session,
    viewer: Viewer,
    kind: Kind,
    repository: Repository,
    errors: forms.Errors | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    powers = _powers(db, viewer, repository.project)
    versions = versions_out(db, repository)
    users = []
    if powers.owner:
        users = users_out(db, repository, data.users_of(db, [v.id for v in repository.versions]))
    language = request.state.language
    shown: list[ImportOut] = [
        import_out(row, language) for row in imports.list_imports(db, repository)[:SHOWN_IMPORTS]
    ]
    return render.page(
        request,
        "data_repository.html",
        status=status,
        nav=kind.plural,
        kind=kind,
        repo=repositories_out(db, [repository])[0],
        versions=versions,
        powers=powers,
        users=users,
        storage=data.storage(db, repository.project) if powers.reader else None,
        uploads_url=UPLOADS,
        imports=shown,
        imports_live=any(item.state in LIVE_IMPORTS for item in shown),
        import_kinds=list(SCHEMES),
        errors=errors or {},
        values=values or {},
    )


def _version_page(
    request: Request,
    db: Session,
    store: BlobStore,
    viewer: Viewer,
    kind: Kind,
    repository: Repository,
    version: DataVersion,
    verified: VerifyOut | None = None,
    errors: forms.Errors | None = None,
    status: int = 200,
) -> Response:
    prefix = request.query_params.get("prefix", "")[:1024]
    detail = version_detail_out(db, repository, version, prefix)
    powers = _powers(db, viewer, repository.project)
    shown = None
    wanted = request.query_params.get("preview", "")
    if wanted:
        found = data.file_of(db, version, wanted)
        shown = preview.preview(store.path_of(found.sha256), found.path, rows=PREVIEW_ROWS)
    blobs = inspection.blobs_of(db, store, version)
    base = f"/{kind.plural}/{repository.project.name}/{repository.name}"
    return render.page(
        request,
        "data_version.html",
        status=status,
        nav=kind.plural,
        kind=kind,
        repo=repositories_out(db, [repository])[0],
        detail=detail,
        base=base,
        version_url=f"{base}/versions/{version.number}",
        prefix=prefix,
        powers=powers,
        users=users_out(db, repository, data.users_of(db, [version.id])) if powers.owner else [],
        preview_path=wanted,
        shown=shown,
        image_types=IMAGE_TYPES,
        checked=inspection.check_dataset(blobs) if kind is DATASET else None,
        model=layout.inspect_model(blobs) if kind is MODEL else None,
        verified=verified,
        problem_text=lambda problem: problem_text(problem, request.state.language),
        errors=errors or {},
    )


def _list_page(request: Request, db: Session, viewer: Viewer, kind: Kind) -> Response:
    project = request.query_params.get("project", "")
    catalogue = request.query_params.get("tab") == "catalogue"
    errors: forms.Errors = {}
    items: list[RepositoryOut] = []
    try:
        query = RepositoryListQuery.model_validate(
            {"project": project or None, "catalogue": catalogue}
        )
        items = repositories_out(db, data.list_repositories(db, viewer.actor, kind.name, query))
    except ValidationError as error:
        errors = forms.errors_of(error, request.state.language)
    return render.page(
        request,
        "data_repositories.html",
        status=422 if errors else 200,
        nav=kind.plural,
        kind=kind,
        items=items,
        project=project,
        catalogue=catalogue,
        errors=errors,
        projects=projects.list_projects(db, viewer.actor),
    )


def _new_page(
    request: Request,
    db: Session,
    viewer: Viewer,
    kind: Kind,
    values: dict[str, str],
    errors: forms.Errors,
    status: int = 200,
) -> Response:
    member = [
        v
        for v in projects.list_projects(db, viewer.actor)
        if viewer.actor.is_admin
        or (v.my_role is not None and v.my_role.at_least(ProjectRole.member))
    ]
    return render.page(
        request,
        "data_repository_new.html",
        status=status,
        nav=kind.plural,
        kind=kind,
        values=values,
        errors=errors,
        projects=member,
    )


def _manifest(text: str) -> list[Any]:
    """The upload area's list of what it sent: [{path, sha256, size}, …] as JSON."""
    try:
        files = json.loads(text or "[]")
    except (json.JSONDecodeError, RecursionError):
        raise forms.FormError("commit.files", "web.data.commit.bad_manifest") from None
    if not isinstance(files, list):
        raise forms.FormError("commit.files", "web.data.commit.bad_manifest")
    return files


def _latest(db: Session, repository: Repository) -> int | None:
    try:
        return data.version_of(db, repository, data.LATEST).number
    except NotFound:
        return None


def add_pages(kind: Kind) -> None:
    """The pages of one kind, under /datasets or /models."""
    plural = kind.plural

    def find(
        db: Session,
        viewer: Viewer,
        project: str,
        name: str,
        need: ProjectRole = ProjectRole.viewer,
    ) -> Repository:
        return data.get_repository(db, viewer.actor, kind.name, project, name, need)

    def home(repository: Repository) -> str:
        return f"/{plural}/{repository.project.name}/{repository.name}"

    def refused(
        request: Request,
        db: Session,
        viewer: Viewer,
        project: str,
        name: str,
        error: ValidationError | SuanliError,
        form: str,
        values: dict[str, Any] | None,
    ) -> Response:
        """A repository page's form refused: the page again, its errors on their fields."""
        db.rollback()
        errors, status = forms.refused(request, error, form)
        repository = find(db, viewer, project, name)
        return _repository_page(request, db, viewer, kind, repository, errors, values, status)

    def import_of(
        db: Session, viewer: Viewer, project: str, name: str, import_id: int
    ) -> tuple[Repository, DataImport]:
        """An import of this repository, for its members: one of another repository is the
        same 404 as one that does not exist."""
        repository = find(db, viewer, project, name, ProjectRole.member)
        row = imports.get(db, viewer.actor, import_id, ProjectRole.member)
        if row.repository_id != repository.id:
            raise NotFound("error.import_not_found", id=import_id)
        return repository, row

    @_pages.get(f"/{plural}", name=f"{plural}_list")
    def list_repositories(request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
        return _list_page(request, db, viewer, kind)

    @_pages.get(f"/{plural}/new", name=f"{plural}_new")
    def new_repository(
        request: Request, db: SessionDep, viewer: ViewerDep, project: str = ""
    ) -> Response:
        return _new_page(
            request, db, viewer, kind, {"project": project, "visibility": "project"}, {}
        )

    @_pages.post(f"/{plural}/new", name=f"{plural}_create")
    def create_repository(
        request: Request,
        db: SessionDep,
        viewer: ViewerDep,
        project: Text = "",
        name: Text = "",
        description: Text = "",
        visibility: Text = "project",
    ) -> Response:
        values = {
            "project": project,
            "name": name.strip(),
            "description": description.replace("\r\n", "\n"),
            "visibility": visibility,
        }
        try:
            spec = RepositoryCreate.model_validate(values)
            created = data.create_repository(db, viewer.actor, kind.name, spec)
        except (ValidationError, SuanliError) as error:
            db.rollback()
            errors, status = forms.refused(request, error)
            return _new_page(request, db, viewer, kind, values, errors, status)
        return render.redirect(home(created), flash="web.data.flash.created")

    @_pages.get(f"/{plural}/{{project}}/{{name}}", name=f"{plural}_show")
    def show_repository(
        project: ProjectName, name: Repo, request: Request, db: SessionDep, viewer: ViewerDep
    ) -> Response:
        return _repository_page(request, db, viewer, kind, find(db, viewer, project, name))

    @_pages.post(f"/{plural}/{{project}}/{{name}}/versions", name=f"{plural}_commit")
    def commit_version(
        project: ProjectName,
        name: Repo,
        request: Request,
        db: SessionDep,
        store: StoreDep,
        viewer: ViewerDep,
        message: Text = "",
        manifest: Text = "",
        replace: Text = "",
    ) -> Response:
        """The uploaded files as a new version: on top of the latest one (they are added or
        replace theirs), or alone ("replace all files")."""
        repository = find(db, viewer, project, name, ProjectRole.member)
        values = {"message": message, "replace": replace}
        try:
            body = VersionCreate.model_validate(
                {
                    "message": message.replace("\r\n", "\n"),
                    "files": _manifest(manifest),
                    "base": None if replace else _latest(db, repository),
                }
            )
            version = data.create_version(db, viewer.actor, store, repository, body)
        except forms.FormError as error:
            errors = {error.field: translate(error.key, request.state.language)}
            return _repository_page(request, db, viewer, kind, repository, errors, values, 422)
        except (ValidationError, SuanliError) as error:
            return refused(request, db, viewer, project, name, error, "commit", values)
        url = f"{home(repository)}/versions/{version.number}"
        return render.redirect(url, flash="web.data.flash.committed")

    @_pages.post(f"/{plural}/{{project}}/{{name}}/settings", name=f"{plural}_settings")
    def change_settings(
        project: ProjectName,
        name: Repo,
        request: Request,
        db: SessionDep,
        viewer: ViewerDep,
        description: Text = "",
        visibility: Text = "",
    ) -> Response:
        repository = find(db, viewer, project, name, ProjectRole.member)
        values = {"description": description.replace("\r\n", "\n"), "visibility": visibility}
        try:
            changes = RepositoryUpdate.model_validate(values)
            data.update_repository(db, viewer.actor, repository, changes)
        except (ValidationError, SuanliError) as error:
            return refused(request, db, viewer, project, name, error, "settings", values)
        return render.redirect(home(repository), flash="web.data.flash.saved")

    @_pages.post(f"/{plural}/{{project}}/{{name}}/imports", name=f"{plural}_import")
    def start_import(
        project: ProjectName,
        name: Repo,
        request: Request,
        db: SessionDep,
        settings: SettingsDep,
        workloads: WorkloadsDep,
        viewer: ViewerDep,
        form: Annotated[ImportForm, Form()],
    ) -> Response:
        """Fetch a remote source into a new version, in the background: the page follows it."""
        repository = find(db, viewer, project, name, ProjectRole.member)
        try:
            body = ImportCreate.model_validate(form.body())
            imports.start(db, viewer.actor, settings, repository, body)
        except (ValidationError, SuanliError) as error:
            return refused(request, db, viewer, project, name, error, "import", form.shown())
        workloads.wake(ImportController.name)
        return render.redirect(f"{home(repository)}#imports", flash="web.data.flash.imported")

    @_pages.post(
        f"/{plural}/{{project}}/{{name}}/imports/{{import_id}}/cancel",
        name=f"{plural}_import_cancel",
    )
    def cancel_import(
        project: ProjectName,
        name: Repo,
        import_id: ImportId,
        request: Request,
        db: SessionDep,
        viewer: ViewerDep,
    ) -> Response:
        repository, row = import_of(db, viewer, project, name, import_id)
        try:
            imports.cancel(db, viewer.actor, row.id)
        except SuanliError as error:
            return refused(request, db, viewer, project, name, error, "imports", None)
        return render.redirect(
            f"{home(repository)}#imports", flash="web.data.flash.import_cancelled"
        )

    @_pages.post(
        f"/{plural}/{{project}}/{{name}}/imports/{{import_id}}/retry",
        name=f"{plural}_import_retry",
    )
    def retry_import(
        project: ProjectName,
        name: Repo,
        import_id: ImportId,
        request: Request,
        db: SessionDep,
        workloads: WorkloadsDep,
        viewer: ViewerDep,
    ) -> Response:
        repository, row = import_of(db, viewer, project, name, import_id)
        try:
            imports.retry(db, viewer.actor, row.id)
        except SuanliError as error:
            return refused(request, db, viewer, project, name, error, "imports", None)
        workloads.wake(ImportController.name)
        return render.redirect(f"{home(repository)}#imports", flash="web.data.flash.import_retried")

    @_pages.post(f"/{plural}/{{project}}/{{name}}/catalogue", name=f"{plural}_catalogue")
    def set_catalogue(
        project: ProjectName,
        name: Repo,
        db: SessionDep,
        viewer: ViewerDep,
        catalogue: Text = "",
    ) -> Response:
        """In or out of the platform's catalogue (administrators: the service says so)."""
        repository = find(db, viewer, project, name, ProjectRole.member)
        changes = RepositoryUpdate(catalogue=catalogue == "on")
        data.update_repository(db, viewer.actor, repository, changes)
        flash = "web.data.flash.catalogued" if catalogue == "on" else "web.data.flash.uncatalogued"
        return render.redirect(home(repository), flash=flash)

    @_pages.post(f"/{plural}/{{project}}/{{name}}/tags", name=f"{plural}_tag")
    def set_tag(
        project: ProjectName,
        name: Repo,
        request: Request,
        db: SessionDep,
        viewer: ViewerDep,
        tag: Text = "",
        version: Text = "",
        expected: Text = "",
    ) -> Response:
        """Point a tag at a version; moving one shown on the page, only if nobody moved it
        since (the page sends where it pointed: compare-and-set)."""
        repository = find(db, viewer, project, name, ProjectRole.member)
        values = {"tag": tag.strip(), "version": version}
        try:
            body = TagSet.model_validate(
                {"version": forms.number(version), "expected": forms.number(expected) or None}
            )
            wanted = TAG_NAME.validate_python(tag.strip())
            data.set_tag(db, viewer.actor, repository, wanted, body)
        except (ValidationError, SuanliError) as error:
            return refused(request, db, viewer, project, name, error, "tag", values)
        return render.redirect(home(repository), flash="web.data.flash.tagged")

    @_pages.post(f"/{plural}/{{project}}/{{name}}/tags/{{tag}}/remove", name=f"{plural}_untag")
    def remove_tag(
        project: ProjectName,
        name: Repo,
        tag: Tag,
        request: Request,
        db: SessionDep,
        viewer: ViewerDep,
    ) -> Response:
        repository = find(db, viewer, project, name, ProjectRole.member)
        try:
            data.delete_tag(db, viewer.actor, repository, tag)
        except SuanliError as error:
            return refused(request, db, viewer, project, name, error, "tag", None)
        return render.redirect(home(repository), flash="web.data.flash.untagged")

    @_pages.post(f"/{plural}/{{project}}/{{name}}/remove", name=f"{plural}_remove")
    def remove_repository(
        project: ProjectName,
        name: Repo,
        request: Request,
        db: SessionDep,
        store: StoreDep,
        viewer: ViewerDep,
        force: Text = "",
    ) -> Response:
        """Owners; refused while live workloads read it, unless forced (the page lists them
        and asks first)."""
        repository = find(db, viewer, project, name, ProjectRole.owner)
        try:
            data.delete_repository(db, viewer.actor, store, repository, force == "on")
        except SuanliError as error:
            return refused(request, db, viewer, project, name, error, "remove", None)
        return render.redirect(f"/{plural}", flash="web.data.flash.removed")

    @_pages.get(f"/{plural}/{{project}}/{{name}}/versions/{{version}}", name=f"{plural}_version")
    def show_version(
        project: ProjectName,
        name: Repo,
        version: VersionRef,
        request: Request,
        db: SessionDep,
        store: StoreDep,
        viewer: ViewerDep,
    ) -> Response:
        repository = find(db, viewer, project, name)
        found = data.version_of(db, repository, version)
        return _version_page(request, db, store, viewer, kind, repository, found)

    @_pages.post(
        f"/{plural}/{{project}}/{{name}}/versions/{{version}}/verify", name=f"{plural}_verify"
    )
    def verify_version(
        project: ProjectName,
        name: Repo,
        version: VersionRef,
        request: Request,
        db: SessionDep,
        store: StoreDep,
        viewer: ViewerDep,
    ) -> Response:
        """Hash every file again; the page shows what was found."""
        repository = find(db, viewer, project, name)
        found = data.version_of(db, repository, version)
        verified = verification.verify_version(db, store, found.id)
        return _version_page(request, db, store, viewer, kind, repository, found, verified)

    @_pages.post(
        f"/{plural}/{{project}}/{{name}}/versions/{{version}}/remove",
        name=f"{plural}_remove_version",
    )
    def remove_version(
        project: ProjectName,
        name: Repo,
        version: VersionRef,
        request: Request,
        db: SessionDep,
        store: StoreDep,
        viewer: ViewerDep,
        force: Text = "",
    ) -> Response:
        repository = find(db, viewer, project, name, ProjectRole.owner)
        try:
            data.delete_version(db, viewer.actor, store, repository, version, force == "on")
        except SuanliError as error:
            db.rollback()
            errors, status = forms.refused(request, error, "remove")
            repository = find(db, viewer, project, name)
            found = data.version_of(db, repository, version)
            return _version_page(
                request, db, store, viewer, kind, repository, found, errors=errors, status=status
            )
        return render.redirect(home(repository), flash="web.data.flash.version_removed")

    @_pages.get(
        f"/{plural}/{{project}}/{{name}}/versions/{{version}}/files/{{path:path}}",
        name=f"{plural}_file",
    )
    def download(
        project: ProjectName,
        name: Repo,
        version: VersionRef,
        path: str,
        db: SessionDep,
        store: StoreDep,
        viewer: ViewerDep,
    ) -> Response:
        """One file's bytes (Range requests resume a download). Only images are shown
        inline (the preview's thumbnails); anything else is an attachment, never a page of
        this site."""
        repository = find(db, viewer, project, name)
        found = data.file_of(db, data.version_of(db, repository, version), path)
        filename = PurePosixPath(path).name
        image = IMAGE_TYPES.get(PurePosixPath(path).suffix.lower())
        return FileResponse(
            store.path_of(found.sha256),
            media_type=image or "application/octet-stream",
            filename=filename,
            content_disposition_type="inline" if image else "attachment",
            headers={
                "ETag": f'"{found.sha256}"',
                "X-Content-Sha256": found.sha256,
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "sandbox; default-src 'none'",
                "Cache-Control": "private, no-cache",
            },
        )


add_pages(DATASET)
add_pages(MODEL)
router.include_router(_pages)
router.include_router(_tus)
