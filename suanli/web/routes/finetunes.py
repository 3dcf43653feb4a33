"""Fine-tuning in the console: the list of runs, the form (fields or YAML, with the YAML kept
beside the fields and a memory estimate on demand), a run's page (progress, live charts of
loss, learning rate and throughput, the log, stop and resume, the registered model with a way
to deploy it, the YAML Suanli wrote, final metrics, base and tuned answers side by side).

Everything goes through the same application layer and services as the API
(suanli.application.Workloads, suanli.services.finetuning) and the API's outputs
(suanli.api.finetune_outputs), so the console refuses what the API refuses, with the same
reasons in the reader's language. A stranger to the run's project gets the same 404 as for a
run that does not exist. The browser has a session, not a bearer token: the charts read the
API's metrics (the same MetricsOut) through /finetunes/{id}/metrics here.
"""

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, get_args

from anyio import to_thread
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from suanli.api.deps import SessionDep, get_database
from suanli.api.finetune_outputs import (
    compare_out,
    estimate_out,
    finetune_detail_out,
    finetune_out,
    metrics_out,
)
from suanli.config import Settings
from suanli.core.errors import Forbidden, SuanliError
from suanli.core.states import State
from suanli.data.store import BlobStore
from suanli.db.models import Job
from suanli.finetune import builtin
from suanli.i18n import translate
from suanli.schemas.data import RepositoryListQuery
from suanli.schemas.finetune import (
    TEMPLATES,
    ComparePrompts,
    ComputeType,
    FinetuneSpec,
    Method,
    Scheduler,
    Stage,
)
from suanli.schemas.jobs import JobListQuery
from suanli.schemas.types import MAX_INT32
from suanli.services import data, finetuning, jobs, projects
from suanli.services.actor import Actor
from suanli.web import forms, render, session
from suanli.web.routes.jobs import LOG_CHUNK, log_download, log_stream, resume_offset
from suanli.web.routes.services import member_projects
from suanli.web.session import Viewer

router = APIRouter(include_in_schema=False, dependencies=[Depends(session.check_csrf)])
ViewerDep = Annotated[Viewer, Depends(session.require_viewer)]
RunId = Annotated[int, Path(ge=1, le=MAX_INT32)]
STATES = ("active", "pending", "running", "succeeded", "failed", "cancelled", "finished")
STAGES, METHODS = get_args(Stage), get_args(Method)
SCHEDULERS, COMPUTE_TYPES = get_args(Scheduler), get_args(ComputeType)
# Versions of each repository the pickers offer, newest first.
VERSIONS_SHOWN = 5
# The form's top-level fields; errors under other names show above the form.
FORM_FIELDS = (
    "project", "name", "model", "datasets", "builtin_datasets", "identity", "stage", "method",
    "template", "training", "lora", "freeze", "deepspeed", "resources", "output", "merge",
    "keep_checkpoints", "pool", "priority", "preemptible", "max_duration", "retries", "trainer",
)  # fmt: skip
# The spec's own rules (FinetuneSpec._consistent) about its datasets.
DATASET_RULES = {"no_dataset", "too_many_datasets"}
# Hyper-parameters as the form names them (the schema's dotted paths), by group, and how the
# typed text becomes a value: a number, a word, a list of module names.
NUMBER, WORD, MODULES = "number", "word", "modules"
GROUPS: dict[str, tuple[tuple[str, str], ...]] = {
    "training": (
        ("learning_rate", NUMBER), ("epochs", NUMBER), ("batch_size", NUMBER),
        ("gradient_accumulation", NUMBER), ("cutoff_len", NUMBER), ("lr_scheduler", WORD),
        ("warmup_ratio", NUMBER), ("val_size", NUMBER), ("logging_steps", NUMBER),
        ("save_steps", NUMBER), ("compute_type", WORD), ("max_samples", NUMBER),
        ("seed", NUMBER), ("pref_beta", NUMBER),
    ),
    "lora": (
        ("rank", NUMBER), ("alpha", NUMBER), ("dropout", NUMBER), ("target", MODULES),
        ("quantization_bit", NUMBER),
    ),
    "freeze": (("trainable_layers", NUMBER), ("trainable_modules", MODULES)),
    "deepspeed": (("stage", NUMBER),),
}  # fmt: skip


@dataclass(frozen=True)
class Choice:
    """A data version a picker offers: its reference, what it is called, its project."""

    ref: str
    text: str
    project: str


@dataclass(frozen=True)
class Picked:
    """The form's fields with several values (checkboxes), which forms.fields keeps one of."""

    datasets: list[str] = field(default_factory=list)
    builtin_datasets: list[str] = field(default_factory=list)


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _store(request: Request) -> BlobStore:
    return request.app.state.store


# -- the list ---------------------------------------------------------------------------------


@router.get("/finetunes")
def list_runs(request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    filters = {
        key: request.query_params[key]
        for key in ("project", "state")
        if request.query_params.get(key, "").strip()
    }
    language = request.state.language
    errors: forms.Errors = {}
    try:
        # jobs.list_jobs reads a JobListQuery (user, before_id too), whose filters these are.
        found = finetuning.list_runs(db, viewer.actor, JobListQuery.model_validate(filters))
    except ValidationError as error:
        errors, found = forms.errors_of(error, language), []
    return render.page(
        request,
        "finetunes.html",
        status=422 if errors else 200,
        nav="finetunes",
        runs=[finetune_out(db, job, row, language) for job, row in found],
        filters=filters,
        errors=errors,
        states=STATES,
        projects=projects.list_projects(db, viewer.actor),
    )


# -- the form ---------------------------------------------------------------------------------


def finetune_spec(values: Mapping[str, str], picked: Picked) -> dict[str, Any]:
    """The form (or its YAML text) as a FinetuneSpec document. Numbers stay as typed where they
    are not numbers, for the schema to refuse with its reasons; the groups of another method
    (LoRA's for a freeze run) are left out, as the YAML beside the form shows."""
    if values.get("mode") == "yaml":
        return forms.yaml_spec(values.get("yaml", ""))
    spec: dict[str, Any] = {
        "project": values.get("project", ""),
        "name": values.get("name", "").strip(),
        "model": values.get("model", "").strip(),
        "datasets": list(picked.datasets),
        "builtin_datasets": list(picked.builtin_datasets),
    }
    if "identity" in picked.builtin_datasets:
        spec["identity"] = {
            key: values.get(f"identity.{key}", "").strip() for key in ("name", "author")
        }
    for name in ("stage", "method", "template"):
        spec[name] = values.get(name, "")
    method = spec["method"]
    for group, names in GROUPS.items():
        if group in ("lora", "freeze") and group != method:
            continue
        found = _group(values, group, names)
        if group == "training" and spec["stage"] != "dpo":
            found.pop("pref_beta", None)
        if group == "deepspeed" and values.get("deepspeed.offload") == "on":
            found["offload"] = True
        if found and (group != "deepspeed" or found != {"stage": 0}):
            spec[group] = found
    resources: dict[str, Any] = {}
    if nodes := forms.optional(values, "resources.nodes"):
        resources["nodes"] = forms.number(nodes)
    resources.update(forms.resources_of(values))
    if resources:
        spec["resources"] = resources
    for name in ("output", "pool", "priority", "max_duration"):
        if value := forms.optional(values, name):
            spec[name] = value
    if retries := forms.optional(values, "retries"):
        spec["retries"] = forms.number(retries)
    for name in ("merge", "keep_checkpoints", "preemptible"):
        spec[name] = values.get(name) == "on"
    if method != "lora":
        spec.pop("merge")
    return spec


def _group(values: Mapping[str, str], group: str, names: Sequence[tuple[str, str]]) -> dict:
    found: dict[str, Any] = {}
    for name, kind in names:
        value = forms.optional(values, f"{group}.{name}")
        if value is None:
            continue
        if kind == NUMBER:
            found[name] = forms.number(value)
        elif kind == MODULES:
            found[name] = [part for part in re.split(r"[,\s]+", value) if part]
        else:
            found[name] = value
    return found


@dataclass(frozen=True)
class _Checked:
    spec: FinetuneSpec | None
    errors: forms.Errors
    preview: str  # the form as YAML ("" where it could not be read)


def _check(request: Request, values: Mapping[str, str], picked: Picked) -> _Checked:
    """The schema's rules, then those across fields (a trainer registered, GPU-only options
    on GPUs, built-in datasets of the stage); the rest (versions, memory, quota) on create."""
    language = request.state.language
    try:
        document = finetune_spec(values, picked)
    except forms.FormError as error:
        return _Checked(None, {error.field: translate(error.key, language, **error.params)}, "")
    preview = forms.spec_yaml(document)
    try:
        spec = FinetuneSpec.model_validate(document)
        finetuning.check_spec(spec, _settings(request))
    except (ValidationError, SuanliError) as error:
        return _Checked(None, _at_fields(error, forms.errors_of(error, language)), preview)
    return _Checked(spec, {}, preview)


def _at_fields(error: ValidationError | SuanliError, errors: forms.Errors) -> forms.Errors:
    """The spec's rules across fields name no field ("body"); those about datasets are shown
    at the datasets."""
    if isinstance(error, ValidationError) and "body" in errors:
        kinds = {found["type"] for found in error.errors() if not found["loc"]}
        if kinds & DATASET_RULES:
            errors = {**errors, "datasets": errors["body"]}
            errors.pop("body")
    return errors


def _choices(db: Session, actor: Actor, kind: str, first: str) -> list[Choice]:
    """Versions the viewer may read (their projects', public and catalogue ones), those of
    the form's project first, each repository's newest first."""
    found = data.list_repositories(db, actor, kind, RepositoryListQuery())
    ordered = sorted(found, key=lambda r: (r.project.name != first, r.project.name, r.name))
    choices = []
    for repository in ordered:
        owner = repository.project.name
        for version in list(reversed(repository.versions))[:VERSIONS_SHOWN]:
            ref = f"{owner}/{repository.name}@{version.number}"
            text = ref.removeprefix(f"{first}/") if owner == first else ref
            if version.message:
                text = f"{text} · {version.message[:60]}"
            choices.append(Choice(ref, text, owner))
    return choices


def _form_page(
    request: Request,
    db: Session,
    viewer: Viewer,
    values: Mapping[str, str],
    picked: Picked,
    checked: _Checked,
    status: int = 200,
) -> Response:
    language = request.state.language
    project = values.get("project", "")
    models = _choices(db, viewer.actor, "model", project)
    if values.get("model") and values["model"] not in {c.ref for c in models}:
        models.insert(0, Choice(values["model"], values["model"], project))
    return render.page(
        request,
        "finetune_new.html",
        status=status,
        nav="finetunes",
        values=values,
        picked=picked,
        errors=checked.errors,
        preview=checked.preview,
        projects=member_projects(db, viewer.actor),
        models=models,
        datasets=_choices(db, viewer.actor, "dataset", project),
        builtins=[(d, translate(d.description, language)) for d in builtin.DATASETS],
        templates=TEMPLATES,
        stages=STAGES,
        methods=METHODS,
        schedulers=SCHEDULERS,
        compute_types=COMPUTE_TYPES,
        trainers=sorted(_settings(request).trainers),
        form_fields=FORM_FIELDS,
    )


def default_values(project: str, model: str, trainers: Sequence[str]) -> dict[str, str]:
    """A new form: the schema's defaults, so that what is shown is what a run gets."""
    training = FinetuneSpec.model_fields["training"].default
    lora = FinetuneSpec.model_fields["lora"].default
    freeze = FinetuneSpec.model_fields["freeze"].default
    values = {
        "mode": "form",
        "project": project,
        "model": model,
        "stage": "sft",
        "method": "lora",
        "template": "default",
        "merge": "on",
        "preemptible": "on",
        "priority": "normal",
        "retries": "2",
        "trainer": trainers[0] if trainers else "llamafactory",
        "deepspeed.stage": "0",
        "resources.nodes": "1",
        "resources.gpus": "0",
        "resources.cpus": "4",
        "resources.memory": "32Gi",
    }
    for name, _ in GROUPS["training"]:
        values[f"training.{name}"] = _typed(getattr(training, name))
    values.update(
        {
            "lora.rank": str(lora.rank),
            "lora.dropout": _typed(lora.dropout),
            "lora.target": ", ".join(lora.target),
            "freeze.trainable_layers": str(freeze.trainable_layers),
            "freeze.trainable_modules": ", ".join(freeze.trainable_modules),
        }
    )
    return values


def _typed(value: Any) -> str:
    """A default as a person types it: 0.0001 as 1e-04, 3.0 as 3, none as nothing."""
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


@router.get("/finetunes/new")
def new_run(
    request: Request, db: SessionDep, viewer: ViewerDep, project: str = "", model: str = ""
) -> Response:
    mine = member_projects(db, viewer.actor)
    chosen = project if project in mine else (mine[0] if mine else "")
    values = default_values(chosen, model.strip(), sorted(_settings(request).trainers))
    checked = _check(request, values, Picked())
    return _form_page(request, db, viewer, values, Picked(), _Checked(None, {}, checked.preview))


async def _read_form(request: Request) -> tuple[dict[str, str], Picked]:
    form = await request.form()
    picked = Picked(
        datasets=[v for v in form.getlist("datasets") if isinstance(v, str) and v],
        builtin_datasets=[v for v in form.getlist("builtin_datasets") if isinstance(v, str) and v],
    )
    return forms.fields(form), picked


@router.post("/finetunes/check")
async def check_run(request: Request, viewer: ViewerDep) -> Response:
    """As you type: the form as YAML and what is wrong with it, swapped in by htmx."""
    values, picked = await _read_form(request)
    checked = await to_thread.run_sync(_check, request, values, picked)
    return render.page(
        request,
        "finetune_macros.html",
        status=422 if checked.errors else 200,
        partial="check",
        errors=checked.errors,
        preview=checked.preview,
        checked=True,
    )


@router.post("/finetunes/estimate")
async def estimate_run(request: Request, viewer: ViewerDep) -> Response:
    """The memory a run of the form would take per device, its parts, whether it fits one
    device it asks for, and what would fit: no run is created."""
    values, picked = await _read_form(request)
    return await to_thread.run_sync(_estimate, request, viewer, values, picked)


def _estimate(request: Request, viewer: Viewer, values: dict[str, str], picked: Picked) -> Response:
    checked = _check(request, values, picked)
    shown, errors = None, dict(checked.errors)
    if checked.spec is not None:
        workloads = request.app.state.workloads
        try:
            with get_database(request).reading() as db:
                found = finetuning.estimate(
                    db, viewer.actor, checked.spec, _store(request), workloads.inventory()
                )
        except SuanliError as error:
            errors, _ = forms.refused(request, error)
        else:
            shown = estimate_out(found.as_json(), request.state.language)
    return render.page(
        request,
        "finetune_macros.html",
        status=422 if errors else 200,
        partial="estimate",
        estimate=shown,
        errors=errors,
    )


@router.post("/finetunes/new")
async def create_run(request: Request, viewer: ViewerDep) -> Response:
    values, picked = await _read_form(request)
    return await to_thread.run_sync(_create, request, viewer, values, picked)


def _create(request: Request, viewer: Viewer, values: dict[str, str], picked: Picked) -> Response:
    """The schema and the rules across fields first, then the service's own checks (the
    versions, the datasets' records, the memory estimate, the quota) in one transaction."""
    database = get_database(request)
    checked = _check(request, values, picked)
    status = 422
    if checked.spec is not None:
        workloads = request.app.state.workloads
        try:
            with database.writing() as db:
                run = workloads.create_finetune(db, viewer.actor, checked.spec, _store(request))
                run_id = run.id
        except SuanliError as error:
            errors, status = forms.refused(request, error)
            checked = _Checked(checked.spec, errors, checked.preview)
        else:
            return render.redirect(f"/finetunes/{run_id}", flash="web.finetune.flash.created")
    with database.reading() as db:
        return _form_page(request, db, viewer, values, picked, checked, status=status)


# -- a run ------------------------------------------------------------------------------------


def _may_manage(db: Session, actor: Actor, job: Job) -> bool:
    """As stopping decides: the run's author, the project's owners and administrators."""
    try:
        jobs.may_manage(db, actor, job)
    except Forbidden:
        return False
    return True


@router.get("/finetunes/{run_id}")
def show_run(run_id: RunId, request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    return _run_page(request, db, viewer, run_id, {}, {})


def _run_page(
    request: Request,
    db: Session,
    viewer: Viewer,
    run_id: int,
    values: Mapping[str, str],
    errors: forms.Errors,
    status: int = 200,
) -> Response:
    job, row = finetuning.get(db, viewer.actor, run_id)
    detail = finetune_detail_out(db, _settings(request), job, row, request.state.language)
    active = not State(job.state).terminal
    registering = job.state == State.succeeded and detail.registration == "none"
    return render.page(
        request,
        "finetune.html",
        status=status,
        nav="finetunes",
        run=detail,
        active=active,
        live=active or registering,
        manage=_may_manage(db, viewer.actor, job),
        resumable=job.state in finetuning.STOPPABLE_AGAIN,
        comparison=compare_out(row),
        spec_yaml=forms.spec_yaml(detail.spec),
        values={"prompts": "\n".join(row.compare_prompts or []), **values},
        errors=errors,
    )


@router.get("/finetunes/{run_id}/metrics")
def run_metrics(
    run_id: RunId,
    request: Request,
    db: SessionDep,
    viewer: ViewerDep,
    after: Annotated[int, Query(ge=0, le=MAX_INT32)] = 0,
) -> Response:
    """The API's MetricsOut for the page's charts: the points after step `after`."""
    job, _ = finetuning.get(db, viewer.actor, run_id)
    found = metrics_out(finetuning.read_progress(_settings(request), job, after=after))
    return JSONResponse(found.model_dump(mode="json"), headers={"Cache-Control": "no-store"})


def _act(
    request: Request, viewer: Viewer, run_id: int, action: Callable[..., object], flash: str
) -> Response:
    with get_database(request).writing() as db:
        action(db, viewer.actor, run_id)
    return render.redirect(f"/finetunes/{run_id}", flash=flash)


@router.post("/finetunes/{run_id}/stop")
def stop_run(run_id: RunId, request: Request, viewer: ViewerDep) -> Response:
    action = request.app.state.workloads.stop_finetune
    return _act(request, viewer, run_id, action, "web.finetune.flash.stopping")


@router.post("/finetunes/{run_id}/resume")
def resume_run(run_id: RunId, request: Request, viewer: ViewerDep) -> Response:
    action = request.app.state.workloads.resume_finetune
    return _act(request, viewer, run_id, action, "web.finetune.flash.resumed")


@router.post("/finetunes/{run_id}/compare")
async def compare_run(run_id: RunId, request: Request, viewer: ViewerDep) -> Response:
    """Prompts, one a line, answered by the base and the tuned model in a job."""
    values = forms.fields(await request.form())
    return await to_thread.run_sync(_compare, request, viewer, run_id, values)


def _compare(request: Request, viewer: Viewer, run_id: int, values: dict[str, str]) -> Response:
    database = get_database(request)
    lines = [line.strip() for line in values.get("prompts", "").splitlines()]
    try:
        prompts = ComparePrompts.model_validate({"prompts": [line for line in lines if line]})
        with database.writing() as db:
            request.app.state.workloads.compare_finetune(db, viewer.actor, run_id, prompts.prompts)
    except (ValidationError, SuanliError) as error:
        if isinstance(error, SuanliError) and error.status == 404:
            raise
        errors, status = forms.refused(request, error)
        errors = {"prompts": " ".join(errors.values())}
        with database.reading() as db:
            return _run_page(request, db, viewer, run_id, values, errors, status)
    return render.redirect(f"/finetunes/{run_id}#compare", flash="web.finetune.flash.comparing")


# -- the log ----------------------------------------------------------------------------------


@router.get("/finetunes/{run_id}/log.txt")
def download_log(run_id: RunId, request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    finetuning.get(db, viewer.actor, run_id)
    path = request.app.state.workloads.log_path(run_id)
    return log_download(path, f"finetune-{run_id}.log")


@router.get("/finetunes/{run_id}/log")
async def follow_log(run_id: RunId, request: Request, viewer: ViewerDep) -> Response:
    """The trainer's output as server-sent events; access is checked at every read."""
    database, workloads = get_database(request), request.app.state.workloads

    def read(offset: int | None) -> Any:
        with database.reading() as db:
            return workloads.read_log(
                db,
                viewer.actor,
                run_id,
                kind=finetuning.KIND,
                offset=offset or 0,
                limit=LOG_CHUNK,
                tail=None,
            )

    first = await to_thread.run_sync(read, resume_offset(request))
    return log_stream(request, first, read)
