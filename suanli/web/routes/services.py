"""Model services in the console: the list, the deploy form (fields or YAML, with the YAML
kept beside the fields), a service's page (health, how to call it, replicas and their logs,
usage of the last day, rolling update, stop, start, remove), API keys, and the playground
(chat with a service through the gateway, prompt templates of the project).

Everything goes through the same services as the API (suanli.services.serving,
service_keys, service_usage, prompts), so the console refuses what the API refuses, with the
same reasons in the reader's language. A stranger to the project gets the same 404 as for a
service that does not exist. The playground's browser calls the gateway itself (/v1, with
the session cookie and the page's CSRF token); only prompt templates come through here.
"""

import functools
import json
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from suanli.api.deps import SessionDep, get_database
from suanli.api.outputs import event_text, job_out
from suanli.api.service_outputs import key_out, service_detail_out, services_out, sweep_out
from suanli.config import Settings
from suanli.core import documents
from suanli.core.errors import Forbidden, SuanliError
from suanli.core.roles import ProjectRole
from suanli.core.states import State
from suanli.db.models import PromptTemplate, ServiceKey
from suanli.i18n import translate
from suanli.kinds import service as service_kind
from suanli.schemas.services import (
    PromptSpec,
    ServiceKeySpec,
    ServiceOut,
    ServiceSpec,
    ServiceUpdate,
    SizingQuery,
    SweepSpec,
    UsageQuery,
)
from suanli.schemas.types import MAX_INT32, Name, RequestModel
from suanli.services import deployments, projects, prompts, service_keys, service_usage, serving
from suanli.services import sweeps as sweeps_service
from suanli.services.actor import Actor
from suanli.web import forms, render, session
from suanli.web.routes.deployments import HEALTH_TONES
from suanli.web.routes.jobs import LOG_CHUNK, log_download, log_stream, resume_offset
from suanli.web.session import Viewer

router = APIRouter(include_in_schema=False, dependencies=[Depends(session.check_csrf)])
ViewerDep = Annotated[Viewer, Depends(session.require_viewer)]
ServiceId = Annotated[int, Path(ge=1, le=MAX_INT32)]
ReplicaId = Annotated[int, Path(ge=1, le=MAX_INT32)]
KeyId = Annotated[int, Path(ge=1, le=MAX_INT32)]
# A replica's page opens on the end of a long log, as a deployment replica's does.
LOG_TAIL_LINES = 200
USAGE_HOURS = 24
# The form's fields, in the order the schema's errors are shown beside them.
FORM_FIELDS = ("project", "name", "engine", "model", "args", "env", "replicas", "resources")
SCALING_FIELDS = ("metric", "target", "up_delay", "down_delay", "idle_after")


@dataclass(frozen=True)
class ServiceView:
    """A service as a page shows it: its health word and colour, and whether the viewer
    may change it (the list asks no one: it shows no buttons)."""

    service: ServiceOut
    manage: bool = False

    @property
    def health(self) -> str:
        return self.service.health

    @property
    def tone(self) -> str:
        return HEALTH_TONES[self.health]

    @property
    def model_name(self) -> str:
        return f"{self.service.project}/{self.service.name}"


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def member_projects(db: Session, actor: Actor) -> list[str]:
    """The projects the viewer may deploy to, make keys of and call services of."""
    return [
        view.project.name
        for view in projects.list_projects(db, actor)
        if actor.is_admin
        or (view.my_role is not None and view.my_role.at_least(ProjectRole.member))
    ]


def _may_manage(db: Session, actor: Actor, service_id: int) -> bool:
    """As the service decides: its author, the project's owners and administrators."""
    try:
        deployments.managed(db, actor, service_id, serving.SERVICE)
    except Forbidden:
        return False
    return True


# -- the list ---------------------------------------------------------------------------------


@router.get("/services")
def list_services(request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    project = request.query_params.get("project", "").strip()
    found = serving.list_services(db, viewer.actor, project or None)
    return render.page(
        request,
        "services.html",
        nav="services",
        items=[
            ServiceView(out)
            for out in services_out(db, _settings(request), found, request.state.language)
        ],
        project=project,
        projects=projects.list_projects(db, viewer.actor),
    )


# -- deploy -----------------------------------------------------------------------------------


def service_spec(values: Mapping[str, str]) -> dict[str, Any]:
    """The form (or its YAML text) as a ServiceSpec document; numbers and durations stay as
    typed for the schema to read and to refuse with its reasons."""
    if values.get("mode") == "yaml":
        return _yaml_document(values.get("yaml", ""))
    spec: dict[str, Any] = {
        "project": values.get("project", ""),
        "name": values.get("name", "").strip(),
        "engine": values.get("engine", ""),
        "replicas": values.get("replicas", "").strip(),
    }
    if model := forms.optional(values, "model"):
        spec["model"] = model
    try:
        args = shlex.split(values.get("args", ""))
    except ValueError:
        raise forms.FormError("args", "web.error.unclosed_quote") from None
    if args:
        spec["args"] = args
    if env := forms.key_values(values.get("env", ""), "env", "web.error.env_line"):
        spec["env"] = env
    if resources := forms.resources_of(values):
        spec["resources"] = resources
    if ".." in spec["replicas"]:
        scaling = {
            name: forms.number(value) if name != "idle_after" and name != "metric" else value
            for name in SCALING_FIELDS
            if (value := forms.optional(values, f"scaling.{name}"))
        }
        if scaling:
            spec["scaling"] = scaling
    return spec


def _yaml_document(text: str) -> dict[str, Any]:
    """The YAML field read within bounds (no aliases, size and nesting capped)."""
    try:
        document = documents.load_yaml(text)
    except documents.DocumentError as error:
        raise forms.FormError("yaml", error.key, **error.params) from None
    if not isinstance(document, dict):
        raise forms.FormError("yaml", "web.error.yaml_mapping")
    return document


@dataclass(frozen=True)
class _Checked:
    spec: ServiceSpec | None
    errors: forms.Errors
    preview: str  # the form as YAML ("" where it could not be read)


def _check(request: Request, values: Mapping[str, str]) -> _Checked:
    """The schema's rules, then the engine's (registered; given a model where it serves
    one), as deploying checks them; the rest (the model version, room, quota) on deploy."""
    language = request.state.language
    try:
        document = service_spec(values)
    except forms.FormError as error:
        return _Checked(None, {error.field: translate(error.key, language, **error.params)}, "")
    preview = forms.spec_yaml(document)
    try:
        spec = ServiceSpec.model_validate(document)
        serving.check_engine(_settings(request), spec.template())
    except (ValidationError, SuanliError) as error:
        return _Checked(None, forms.errors_of(error, language), preview)
    return _Checked(spec, {}, preview)


def _form_page(
    request: Request,
    db: Session,
    viewer: Viewer,
    values: Mapping[str, str],
    checked: _Checked,
    status: int = 200,
) -> Response:
    return render.page(
        request,
        "service_new.html",
        status=status,
        nav="services",
        values=values,
        errors=checked.errors,
        preview=checked.preview,
        engines=sorted(_settings(request).engines.items()),
        projects=member_projects(db, viewer.actor),
        form_fields=FORM_FIELDS,
    )


@router.get("/services/new")
def new_service(
    request: Request, db: SessionDep, viewer: ViewerDep, project: str = "", model: str = ""
) -> Response:
    """The form, blank or with a project and a model version filled in (a fine-tuning run's
    "deploy as a service" button)."""
    engines = sorted(_settings(request).engines)
    values = {
        "mode": "form",
        "project": project,
        "model": model.strip()[:200],
        "engine": engines[0] if engines else "",
        "replicas": "1",
        "gpu_kind": "whole",
        "resources.gpus": "1",
        "resources.cpus": "1",
        "resources.memory": "4Gi",
        "scaling.metric": "inflight",
    }
    return _form_page(request, db, viewer, values, _Checked(None, {}, ""))


@router.post("/services/check")
async def check_service(request: Request, viewer: ViewerDep) -> Response:
    """As you type: the form as YAML and what is wrong with it, swapped in by htmx."""
    values = forms.fields(await request.form())
    checked = await to_thread.run_sync(_check, request, values)
    return render.page(
        request,
        "service_check.html",
        status=422 if checked.errors else 200,
        errors=checked.errors,
        preview=checked.preview,
        checked=True,
    )


@router.post("/services/new")
async def deploy_service(request: Request, viewer: ViewerDep) -> Response:
    values = forms.fields(await request.form())
    return await to_thread.run_sync(_deploy, request, viewer, values)


def _deploy(request: Request, viewer: Viewer, values: dict[str, str]) -> Response:
    """The schema and the engine first, then serving.deploy's own checks (the model
    version, a name already taken, room on some node, the quota) in one transaction."""
    database = get_database(request)
    checked = _check(request, values)
    status = 422
    if checked.spec is not None:
        try:
            with database.writing() as db:
                created = request.app.state.workloads.deploy_service(db, viewer.actor, checked.spec)
                service_id = created.id
        except SuanliError as error:
            errors, status = forms.refused(request, error)
            checked = _Checked(checked.spec, errors, checked.preview)
        else:
            return render.redirect(f"/services/{service_id}", flash="web.services.flash.deployed")
    with database.reading() as db:
        return _form_page(request, db, viewer, values, checked, status=status)


# -- a service --------------------------------------------------------------------------------


@router.get("/services/{service_id}")
def show_service(
    service_id: ServiceId, request: Request, db: SessionDep, viewer: ViewerDep
) -> Response:
    with get_database(request).writing() as writer:  # load sweeps whose job ended: read
        serving.get(writer, viewer.actor, service_id)
        sweeps_service.settle(writer, _settings(request), service_id)
    return _service_page(request, db, viewer, service_id, {}, {})


def _service_page(
    request: Request,
    db: Session,
    viewer: Viewer,
    service_id: int,
    values: Mapping[str, str],
    errors: forms.Errors,
    status: int = 200,
) -> Response:
    settings = _settings(request)
    deployment = serving.get(db, viewer.actor, service_id)
    ssh_port = request.app.state.ssh_port
    detail = service_detail_out(db, settings, deployment, request.state.language, ssh_port)
    item = ServiceView(detail, _may_manage(db, viewer.actor, service_id))
    base = settings.effective_public_url.rstrip("/")
    replicas = f"{detail.min_replicas}..{detail.max_replicas}"
    if detail.min_replicas == detail.max_replicas:
        replicas = str(detail.replicas)
    sweeps = [
        sweep_out(found, detail.name)
        for found in sweeps_service.list_sweeps(db, viewer.actor, service_id)[:5]
    ]
    sizing = _sizing(request, db, viewer, service_id) if sweeps else None
    return render.page(
        request,
        "service.html",
        status=status,
        nav="services",
        item=item,
        sweeps=sweeps,
        sizing=sizing,
        service=detail,
        base_url=f"{base}/v1",
        proxy_url=f"{base}/s/{detail.project}/{detail.name}/",
        snippets=snippets(base, item.model_name),
        usage=hourly_usage(db, viewer.actor, detail.project, detail.name),
        template_yaml=forms.spec_yaml(detail.template),
        values={"update.model": detail.model, "update.replicas": replicas, **values},
        errors=errors,
    )


def snippets(base: str, model: str) -> dict[str, str]:
    """How to call a service: curl, and the openai package, with a key in the environment."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello"}]})
    curl = (
        f"curl {base}/v1/chat/completions \\\n"
        '  -H "Authorization: Bearer $SUANLI_API_KEY" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        f"  -d '{body}'"
    )
    python = (
        "import os\n"
        "from openai import OpenAI\n\n"
        f'client = OpenAI(base_url="{base}/v1", api_key=os.environ["SUANLI_API_KEY"])\n'
        "reply = client.chat.completions.create(\n"
        f'    model="{model}",\n'
        '    messages=[{"role": "user", "content": "Hello"}],\n'
        ")\n"
        "print(reply.choices[0].message.content)"
    )
    return {"curl": curl, "python": python}


def hourly_usage(db: Session, actor: Actor, project: str, service: str) -> dict[str, Any]:
    """Requests and tokens per hour of the last day, every hour present (0 where none),
    for the chart; and the day's totals."""
    now = datetime.now(UTC)
    first = service_usage.bucket(now - timedelta(hours=USAGE_HOURS - 1), "hour")
    query = UsageQuery(project=project, service=service, group="hour", since=first, until=now)
    hours = [first + timedelta(hours=i) for i in range(USAGE_HOURS)]
    requests = dict.fromkeys(hours, 0)
    tokens = dict.fromkeys(hours, 0)
    errors = 0
    for row in service_usage.usage(db, actor, query):
        if row.period in requests:
            requests[row.period] += row.requests
            tokens[row.period] += row.prompt_tokens + row.completion_tokens
        errors += row.errors
    return {
        "t": [int(hour.timestamp()) for hour in hours],
        "requests": list(requests.values()),
        "tokens": list(tokens.values()),
        "total_requests": sum(requests.values()),
        "total_tokens": sum(tokens.values()),
        "errors": errors,
    }


@router.get("/services/{service_id}/usage.csv")
def usage_csv(
    service_id: ServiceId, db: SessionDep, viewer: ViewerDep, group: str = "day"
) -> Response:
    """The service's usage of the last month by day (or of the last day by hour), as CSV:
    the browser's download of what `suanli services usage --csv` writes."""
    service = serving.get(db, viewer.actor, service_id)
    by = "hour" if group == "hour" else "day"
    query = UsageQuery(project=service.project.name, service=service.name, group=by)
    rows = service_usage.usage(db, viewer.actor, query)
    name = f"usage-{service.project.name}-{service.name}-{by}.csv"
    return StreamingResponse(
        service_usage.as_csv(rows),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


def _sizing(
    request: Request, db: Session, viewer: Viewer, service_id: int
) -> dict[str, Any] | None:
    """The answer to the sizing form (`rps`, `ttft`), when it was asked: the replicas, or
    why the question cannot be answered, in the reader's language."""
    query = request.query_params
    if "rps" not in query:
        return None
    asked = {"rps": query.get("rps", ""), "ttft_p95_ms": query.get("ttft", "")}
    try:
        sweep, answer = sweeps_service.size(db, viewer.actor, service_id, SizingQuery(**asked))
    except (ValidationError, SuanliError) as error:
        if isinstance(error, SuanliError) and error.status == 404 and error.field != "sweep":
            raise
        found = forms.errors_of(error, request.state.language)
        return {"asked": asked, "error": "; ".join(found.values())}
    return {"asked": asked, "sweep": sweep.id, "answer": answer}


@router.post("/services/{service_id}/sweeps")
async def start_sweep(service_id: ServiceId, request: Request, viewer: ViewerDep) -> Response:
    """A load sweep from the service's page; its curves appear there when its job ends."""
    values = forms.fields(await request.form())
    return await to_thread.run_sync(_start_sweep, request, viewer, service_id, values)


def _start_sweep(
    request: Request, viewer: Viewer, service_id: int, values: dict[str, str]
) -> Response:
    database = get_database(request)
    given = {
        name: forms.number(value)
        for name in ("max_concurrency", "prompts", "input_len", "output_len")
        if (value := forms.optional(values, f"sweep.{name}"))
    }
    try:
        spec = SweepSpec.model_validate(given)
        with database.writing() as db:
            request.app.state.workloads.start_sweep(db, viewer.actor, service_id, spec)
    except (ValidationError, SuanliError) as error:
        if isinstance(error, SuanliError) and error.status == 404:
            raise
        errors, status = forms.refused(request, error, prefix="sweep")
        with database.reading() as db:
            return _service_page(request, db, viewer, service_id, values, errors, status)
    return render.redirect(f"/services/{service_id}", flash="web.services.flash.sweep_started")


@router.post("/services/{service_id}/update")
async def update_service(service_id: ServiceId, request: Request, viewer: ViewerDep) -> Response:
    """A new model version (rolled out one replica at a time) and/or replicas (at once);
    refused with the schema's or the service's reason on the service's page."""
    values = forms.fields(await request.form())
    return await to_thread.run_sync(_update, request, viewer, service_id, values)


def _update(request: Request, viewer: Viewer, service_id: int, values: dict[str, str]) -> Response:
    database = get_database(request)
    change: dict[str, Any] = {}
    for name in ("model", "replicas"):
        if value := forms.optional(values, f"update.{name}"):
            change[name] = value
    try:
        with database.reading() as db:
            current = serving.get(db, viewer.actor, service_id)
            served = serving.summary(_settings(request), current)["model"]
        if change.get("model") == served:
            change.pop("model")
        update = ServiceUpdate.model_validate(change)
        with database.writing() as db:
            request.app.state.workloads.update_service(db, viewer.actor, service_id, update)
    except (ValidationError, SuanliError) as error:
        if isinstance(error, SuanliError) and error.status == 404:
            raise
        errors, status = forms.refused(request, error, prefix="update")
        with database.reading() as db:
            return _service_page(request, db, viewer, service_id, values, errors, status)
    return render.redirect(f"/services/{service_id}", flash="web.services.flash.updated")


def _act(
    request: Request,
    viewer: Viewer,
    service_id: int,
    action: Callable[[Session, Actor, int], object],
    flash: str,
    to: str = "",
) -> Response:
    with get_database(request).writing() as db:
        action(db, viewer.actor, service_id)
    return render.redirect(to or f"/services/{service_id}", flash=flash)


@router.post("/services/{service_id}/stop")
def stop_service(service_id: ServiceId, request: Request, viewer: ViewerDep) -> Response:
    action = functools.partial(request.app.state.workloads.stop_deployment, kind=serving.SERVICE)
    return _act(request, viewer, service_id, action, "web.services.flash.stopping")


@router.post("/services/{service_id}/start")
def start_service(service_id: ServiceId, request: Request, viewer: ViewerDep) -> Response:
    action = functools.partial(request.app.state.workloads.start_deployment, kind=serving.SERVICE)
    return _act(request, viewer, service_id, action, "web.services.flash.started")


@router.post("/services/{service_id}/remove")
def remove_service(service_id: ServiceId, request: Request, viewer: ViewerDep) -> Response:
    settings = _settings(request)

    def remove(db: Session, actor: Actor, item_id: int) -> None:
        deployments.remove(db, actor, item_id, settings, serving.SERVICE)

    return _act(request, viewer, service_id, remove, "web.services.flash.removed", "/services")


# -- a replica and its log --------------------------------------------------------------------


def _replica(db: Session, actor: Actor, service_id: int, replica_id: int) -> Any:
    serving.get(db, actor, service_id)
    return deployments.find_replica(db, actor, service_id, replica_id, kind=service_kind.KIND.name)


@router.get("/services/{service_id}/replicas/{replica_id}")
def show_replica(
    service_id: ServiceId,
    replica_id: ReplicaId,
    request: Request,
    db: SessionDep,
    viewer: ViewerDep,
) -> Response:
    """A replica: how it runs or ended, its history, its live log (the engine's output)."""
    found = _replica(db, viewer.actor, service_id, replica_id)
    language = request.state.language
    return render.page(
        request,
        "deployment_replica.html",
        nav="services",
        owner=f"/services/{service_id}",  # the replica's deployment or service
        replica=job_out(found, language),
        history=[(event, event_text(event, language)) for event in found.events],
        active=not State(found.state).terminal,
    )


@router.get("/services/{service_id}/replicas/{replica_id}/log.txt")
def download_log(
    service_id: ServiceId,
    replica_id: ReplicaId,
    request: Request,
    db: SessionDep,
    viewer: ViewerDep,
) -> Response:
    _replica(db, viewer.actor, service_id, replica_id)
    path = request.app.state.workloads.log_path(replica_id)
    return log_download(path, f"replica-{replica_id}.log")


@router.get("/services/{service_id}/replicas/{replica_id}/log")
async def follow_log(
    service_id: ServiceId, replica_id: ReplicaId, request: Request, viewer: ViewerDep
) -> Response:
    """The replica's log as server-sent events; access is checked at every read."""
    database, workloads = get_database(request), request.app.state.workloads

    def read(offset: int | None) -> Any:
        with database.reading() as db:
            _replica(db, viewer.actor, service_id, replica_id)
            return workloads.read_log(
                db,
                viewer.actor,
                replica_id,
                kind=service_kind.KIND.name,
                offset=offset or 0,
                limit=LOG_CHUNK,
                tail=LOG_TAIL_LINES if offset is None else None,
            )

    first = await to_thread.run_sync(read, resume_offset(request))
    return log_stream(request, first, read)


# -- API keys ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyView:
    """A key as the list shows it: its state word and colour, its period's use."""

    key: Any  # ServiceKeyOut
    state: str

    @property
    def tone(self) -> str:
        return {"active": "run", "revoked": "off", "expired": "wait"}[self.state]


def _key_views(db: Session, found: Sequence[ServiceKey]) -> list[KeyView]:
    now = datetime.now(UTC)
    views = []
    for key in found:
        used = 0
        if key.revoked_at is None:
            since = service_keys.period_start(key.budget_period, now)
            used = service_keys.used(db, key.id, since)
        out = key_out(key, used)
        state = "active"
        if out.revoked_at is not None:
            state = "revoked"
        elif out.expires_at is not None and out.expires_at <= now:
            state = "expired"
        views.append(KeyView(out, state))
    return views


def _keys_page(
    request: Request,
    db: Session,
    viewer: Viewer,
    project: str,
    values: Mapping[str, Any],
    errors: forms.Errors,
    created: Any = None,
    status: int = 200,
) -> Response:
    mine = member_projects(db, viewer.actor)
    project = project or (mine[0] if mine else "")
    keys: list[KeyView] = []
    services: list[str] = []
    if project:
        keys = _key_views(db, service_keys.list_keys(db, viewer.actor, project))
        services = [s.name for s in serving.list_services(db, viewer.actor, project)]
    return render.page(
        request,
        "keys.html",
        status=status,
        nav="keys",
        project=project,
        projects=mine,
        keys=keys,
        services=services,
        values=values,
        errors=errors,
        created=created,
    )


@router.get("/keys")
def list_keys(request: Request, db: SessionDep, viewer: ViewerDep, project: str = "") -> Response:
    values = {"budget_period": "month", "models": []}
    return _keys_page(request, db, viewer, project.strip(), values, {})


def key_spec(values: Mapping[str, str], models: list[str]) -> dict[str, Any]:
    """The key form as a ServiceKeySpec document: no model ticked is every service."""
    spec: dict[str, Any] = {
        "project": values.get("project", ""),
        "name": values.get("name", "").strip(),
        "budget_period": values.get("budget_period", "month"),
    }
    if models:
        spec["models"] = models
    if expires := forms.optional(values, "expires_in"):
        spec["expires_in"] = expires
    for name in ("requests_per_minute", "tokens_per_minute", "token_budget"):
        if value := forms.optional(values, name):
            spec[name] = forms.number(value)
    return spec


@router.post("/keys")
async def create_key(request: Request, viewer: ViewerDep) -> Response:
    """The key is in this answer only (the page is not kept: no-store)."""
    form = await request.form()
    values = forms.fields(form)
    models = [m for m in form.getlist("models") if isinstance(m, str)]
    return await to_thread.run_sync(_create_key, request, viewer, values, models)


def _create_key(
    request: Request, viewer: Viewer, values: dict[str, str], models: list[str]
) -> Response:
    database = get_database(request)
    project = values.get("project", "")
    try:
        spec = ServiceKeySpec.model_validate(key_spec(values, models))
        with database.writing() as db:
            key, secret = service_keys.create(db, viewer.actor, spec)
            created = (key.name, secret)
    except (ValidationError, SuanliError) as error:
        errors, status = forms.refused(request, error)
        with database.reading() as db:
            shown = {**values, "models": models}
            return _keys_page(request, db, viewer, project, shown, errors, status=status)
    with database.reading() as db:
        values = {"budget_period": "month", "models": []}
        return _keys_page(request, db, viewer, project, values, {}, created=created)


@router.post("/keys/{key_id}/revoke")
def revoke_key(key_id: KeyId, request: Request, viewer: ViewerDep) -> Response:
    with get_database(request).writing() as db:
        key = service_keys.revoke(db, viewer.actor, key_id)
        project, key_hash, number = key.project.name, key.key_hash, key.id
    gateway = request.app.state.gateway  # refused at once, not after its short cache
    gateway.identities.forget(key_hash)
    gateway.meter.forget(number)
    return render.redirect(f"/keys?project={project}", flash="web.keys.flash.revoked")


# -- the playground ---------------------------------------------------------------------------


@router.get("/playground")
def playground(request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    """The services the viewer may call (members and owners of their projects)."""
    callable_projects = set(member_projects(db, viewer.actor))
    found = [
        s
        for s in serving.list_services(db, viewer.actor, None)
        if s.project.name in callable_projects
    ]
    items = [
        ServiceView(out)
        for out in services_out(db, _settings(request), found, request.state.language)
    ]
    chosen = request.query_params.get("model", "")
    return render.page(
        request,
        "playground.html",
        nav="playground",
        items=[i for i in items if i.service.protocol == "openai"],
        chosen=chosen,
    )


class _ProjectAt(RequestModel):
    project: Name


class _PromptAt(_ProjectAt):
    name: Name


def _problem(request: Request, error: ValidationError | SuanliError) -> JSONResponse:
    errors, status = forms.refused(request, error)
    detail = " ".join(errors.values())
    return JSONResponse({"status": status, "detail": detail, "errors": errors}, status_code=status)


def prompt_json(prompt: PromptTemplate) -> dict[str, Any]:
    return {
        "name": prompt.name,
        "version": prompt.version,
        "system": prompt.system,
        "template": prompt.template,
        "variables": list(prompt.variables),
        "parameters": dict(prompt.parameters),
        "user": prompt.user_name,
    }


@router.get("/playground/prompts")
def list_prompts(request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    """The project's templates, each at its newest version (JSON for the page's script)."""
    try:
        at = _ProjectAt.model_validate({"project": request.query_params.get("project", "")})
        found = prompts.list_latest(db, viewer.actor, at.project)
    except (ValidationError, SuanliError) as error:
        return _problem(request, error)
    return JSONResponse([prompt_json(p) for p in found], headers={"Cache-Control": "no-store"})


@router.post("/playground/prompts")
async def save_prompt(request: Request, viewer: ViewerDep) -> Response:
    """The current prompt as a new version of a template (JSON in, JSON out)."""
    try:
        body = await request.json()
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    return await to_thread.run_sync(_save_prompt, request, viewer, body)


def _save_prompt(request: Request, viewer: Viewer, body: dict[str, Any]) -> Response:
    try:
        at = _PromptAt.model_validate({"project": body.get("project"), "name": body.get("name")})
        spec = PromptSpec.model_validate(
            {key: body[key] for key in ("system", "template", "parameters") if key in body}
        )
        with get_database(request).writing() as db:
            saved = prompts.save(db, viewer.actor, at.project, at.name, spec)
            answer = prompt_json(saved)
    except (ValidationError, SuanliError) as error:
        return _problem(request, error)
    return JSONResponse(answer, status_code=201)
