"""Jobs in the console: the list, the submit form (with checks as you type), a job's page with
its live log, cancel and resubmit."""

import asyncio
import json
import pathlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, NamedTuple, get_args

from anyio import to_thread
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from suanli.api.deps import SessionDep, get_database
from suanli.api.outputs import event_text, job_out
from suanli.core.errors import InvalidInput, SuanliError
from suanli.core.roles import ProjectRole
from suanli.core.states import State
from suanli.db.models import Job
from suanli.i18n import translate
from suanli.schemas.jobs import JobListQuery, JobSpec, Launcher
from suanli.schemas.types import MAX_INT32
from suanli.services import jobs, nodes, projects
from suanli.web import forms, render, session
from suanli.web.session import Viewer

router = APIRouter(include_in_schema=False, dependencies=[Depends(session.check_csrf)])
ViewerDep = Annotated[Viewer, Depends(session.require_viewer)]
JobId = Annotated[int, Path(ge=1, le=MAX_INT32)]
LAUNCHERS = get_args(Launcher)
STATES = ("active", "pending", "running", "succeeded", "failed", "cancelled", "finished")
LOG_POLL_SECONDS = 0.5
LOG_CHUNK = 256 * 1024
STREAM_SECONDS = 60.0


@router.get("/jobs")
def list_jobs(request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    filters = {
        key: request.query_params[key]
        for key in ("project", "state", "user", "before_id")
        if request.query_params.get(key)
    }
    errors: forms.Errors = {}
    try:
        found = jobs.list_jobs(db, viewer.actor, JobListQuery.model_validate(filters))
    except ValidationError as error:
        errors, found = forms.errors_of(error, request.state.language), []
    language = request.state.language
    return render.page(
        request,
        "jobs.html",
        status=422 if errors else 200,
        nav="jobs",
        jobs=[job_out(job, language) for job in found],
        older=found[-1].id if len(found) == JobListQuery().limit else None,
        filters=filters,
        errors=errors,
        states=STATES,
        projects=projects.list_projects(db, viewer.actor),
    )


def _submit_page(
    request: Request,
    db: Session,
    viewer: Viewer,
    values: dict[str, str],
    errors: forms.Errors,
    status: int = 200,
    preview: str | None = None,
) -> Response:
    """The form; `preview` is its YAML where the caller has read the form already."""
    known = nodes.list_nodes(db)
    gpu_models = sorted({gpu.model for node in known for gpu in node.gpus})
    return render.page(
        request,
        "job_new.html",
        status=status,
        nav="jobs",
        values=values,
        errors=errors,
        preview=_preview(values) if preview is None else preview,
        gpu_models=gpu_models,
        pools=sorted({pool for node in known for pool in node.pools}),
        launchers=LAUNCHERS,
        projects=[
            v
            for v in projects.list_projects(db, viewer.actor)
            if v.my_role is not None and v.my_role.at_least(ProjectRole.member)
        ],
    )


def _preview(values: dict[str, str]) -> str:
    try:
        return forms.spec_yaml(forms.job_spec(values))
    except forms.FormError:
        return ""


@router.get("/jobs/new")
def new_job(
    request: Request, db: SessionDep, viewer: ViewerDep, project: str = "", like: int = 0
) -> Response:
    """The submit form; `like` starts from an earlier job's spec (edit and submit again)."""
    values = {
        "project": project,
        "mode": "command",
        "gpu_kind": "whole",
        "priority": "normal",
        "preemptible": "on",
        "launcher": "none",
        "resources.nodes": "1",
        "resources.gpus": "1",
        "resources.cpus": "1",
        "resources.memory": "4Gi",
    }
    if like:
        values = forms.form_of_spec(jobs.get_job(db, viewer.actor, like).spec)
    return _submit_page(request, db, viewer, values, {})


class _Checked(NamedTuple):
    spec: JobSpec | None
    errors: forms.Errors
    preview: str  # the form as YAML ("" where it could not be read)


def _check(request: Request, viewer: Viewer, values: dict[str, str]) -> _Checked:
    """The form as a spec, or what is wrong with it: the schema's rules, then whether any node
    (of the pool asked for) could ever run it and whether the project's quota could ever hold
    it, as the submit itself checks. The form (its YAML above all) is read once, here, in the
    caller's worker thread."""
    language = request.state.language
    try:
        document = forms.job_spec(values)
    except forms.FormError as error:
        return _Checked(None, {error.field: translate(error.key, language, **error.params)}, "")
    preview = forms.spec_yaml(document)
    try:
        spec = JobSpec.model_validate(document)
    except ValidationError as error:
        return _Checked(None, forms.errors_of(error, language), preview)
    database = get_database(request)
    inventory = request.app.state.workloads.inventory()
    try:
        jobs.check_runnable(spec, inventory)
        with database.reading() as db:
            project, _ = projects.access(db, viewer.actor, spec.project)
            jobs.check_quota(spec, project, inventory)
    except InvalidInput as error:
        field = error.field or "resources"
        return _Checked(spec, {field: translate(error.key, language, **error.params)}, preview)
    except SuanliError as error:  # a project the viewer may not submit to
        return _Checked(spec, {"project": translate(error.key, language, **error.params)}, preview)
    return _Checked(spec, {}, preview)


@router.post("/jobs/check")
async def check_job(request: Request, viewer: ViewerDep) -> Response:
    """As you type: the form's errors and its YAML, swapped into the page by htmx (422 with
    the errors, as a submit would answer)."""
    values = forms.fields(await request.form())
    return await to_thread.run_sync(_check_page, request, viewer, values)


def _check_page(request: Request, viewer: Viewer, values: dict[str, str]) -> Response:
    _, errors, preview = _check(request, viewer, values)
    status = 422 if errors else 200
    return render.page(
        request, "job_check.html", status=status, errors=errors, preview=preview, checked=True
    )


@router.post("/jobs/new")
async def submit_job(request: Request, viewer: ViewerDep) -> Response:
    values = forms.fields(await request.form())
    return await to_thread.run_sync(_submit, request, viewer, values)


def _submit(request: Request, viewer: Viewer, values: dict[str, str]) -> Response:
    database = get_database(request)
    spec, errors, preview = _check(request, viewer, values)
    if spec is not None and not errors:
        try:
            with database.writing() as db:
                job_id = request.app.state.workloads.submit(db, viewer.actor, spec).id
        except SuanliError as error:
            errors = forms.errors_of(error, request.state.language)
        else:
            return render.redirect(f"/jobs/{job_id}", flash="web.flash.submitted")
    with database.reading() as db:
        return _submit_page(request, db, viewer, values, errors, status=422, preview=preview)


@router.get("/jobs/{job_id}")
def show_job(job_id: JobId, request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    job = jobs.get_job(db, viewer.actor, job_id)
    language = request.state.language
    return render.page(
        request,
        "job.html",
        nav="jobs",
        job=job_out(job, language),
        nodes_count=(job.spec.get("resources") or {}).get("nodes", 1),
        launcher=job.spec.get("launcher") or "none",
        pool=job.spec.get("pool") or "",
        spec_yaml=forms.spec_yaml(job.spec),
        history=[(event, event_text(event, language)) for event in job.events],
        active=not State(job.state).terminal,
        can_cancel=_can_cancel(db, viewer, job),
    )


def _can_cancel(db: Session, viewer: Viewer, job: Job) -> bool:
    if State(job.state).terminal:
        return False
    if viewer.actor.is_admin or job.user_id == viewer.user.id:
        return True
    _, role = projects.access(db, viewer.actor, job.project.name)
    return role is not None and role.at_least(ProjectRole.owner)


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: JobId, request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    request.app.state.workloads.cancel(db, viewer.actor, job_id)
    return render.redirect(f"/jobs/{job_id}", flash="web.flash.cancel_requested")


@router.post("/jobs/{job_id}/resubmit")
def resubmit_job(job_id: JobId, request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    job = request.app.state.workloads.resubmit(db, viewer.actor, job_id)
    return render.redirect(f"/jobs/{job.id}", flash="web.flash.resubmitted")


@router.get("/jobs/{job_id}/log.txt")
def download_log(job_id: JobId, request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    """The whole log as a file, for what is too long to read in the page."""
    jobs.get_job(db, viewer.actor, job_id)
    path = request.app.state.workloads.log_path(job_id)
    return log_download(path, f"job-{job_id}.log")


def log_download(path: pathlib.Path, name: str) -> Response:
    """A log as a file, opened as `jobs.open_log` does: never through a link the workload's
    user may have put in its place."""
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    handle = jobs.open_log(path)
    if handle is None:
        return PlainTextResponse("", headers=headers)

    def chunks() -> Iterator[bytes]:
        with handle:
            while data := handle.read(LOG_CHUNK):
                yield data

    return StreamingResponse(chunks(), media_type="text/plain; charset=utf-8", headers=headers)


@router.get("/jobs/{job_id}/log")
async def follow_log(job_id: JobId, request: Request, viewer: ViewerDep) -> Response:
    """Server-sent events: `log` with new output as it is written, `end` when the job has
    ended and everything was sent. Access is checked at every read: a session that ends or
    loses the project stops the stream. A stream lasts a minute at most; the browser then
    reconnects and goes on from the last event's id (the log offset), losing nothing."""
    database, workloads = get_database(request), request.app.state.workloads

    def read(offset: int | None) -> jobs.LogChunk:
        with database.reading() as db:
            return workloads.read_log(
                db, viewer.actor, job_id, kind="job", offset=offset or 0, limit=LOG_CHUNK, tail=None
            )

    first = await to_thread.run_sync(read, resume_offset(request))  # 404 here, not mid-stream
    return log_stream(request, first, read)


def resume_offset(request: Request) -> int | None:
    """Where a reconnecting browser left off (the last event's id), or None the first time.
    The id is ours, a log offset (ASCII digits, at most 16: bytes up to 2**53), but the
    header is the client's: anything else is ignored and the log followed from its start,
    as on a first visit."""
    resume = request.headers.get("last-event-id", "")
    if resume.isascii() and resume.isdigit() and len(resume) <= 16:
        return int(resume)
    return None


def log_stream(
    request: Request, first: jobs.LogChunk, read: Callable[[int], jobs.LogChunk]
) -> StreamingResponse:
    """Server-sent events from `first` on: `log` with new output (the event's id is the
    offset after it), `end` once the workload has ended and all was sent. `read` checks
    access again at every call; the stream lasts STREAM_SECONDS at most, then the browser
    reconnects with the last id. Dev environments' logs are followed the same way."""
    deadline = asyncio.get_running_loop().time() + STREAM_SECONDS

    async def events() -> AsyncIterator[str]:
        chunk = first
        while asyncio.get_running_loop().time() < deadline:
            if chunk.text:
                data = json.dumps({"text": chunk.text})
                yield f"id: {chunk.next_offset}\nevent: log\ndata: {data}\n\n"
            elif chunk.finished:
                yield "event: end\ndata: {}\n\n"
                return
            else:
                yield ": waiting\n\n"
                await asyncio.sleep(LOG_POLL_SECONDS)
            if await request.is_disconnected():
                return
            try:
                chunk = await to_thread.run_sync(read, chunk.next_offset)
            except SuanliError:
                yield "event: end\ndata: {}\n\n"
                return

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
