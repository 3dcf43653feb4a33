"""Fine-tuning runs: create (and estimate first), list, show, metrics for live charts, the
log, stop, resume from the last checkpoint, and comparisons of the base and the tuned model;
the built-in datasets and the options a form offers."""

from typing import Annotated, get_args

from fastapi import APIRouter, Path, Query, Request
from sqlalchemy.orm import Session

from suanli.api.deps import Caller, CallerDep, SessionDep, SettingsDep, StoreDep, WorkloadsDep
from suanli.api.finetune_outputs import (
    builtin_out,
    compare_out,
    estimate_out,
    finetune_detail_out,
    finetune_out,
    metrics_out,
)
from suanli.api.problems import language_of
from suanli.config import Settings
from suanli.schemas.finetune import (
    TEMPLATES,
    BuiltinDatasetOut,
    CompareOut,
    ComparePrompts,
    EstimateOut,
    FinetuneDetailOut,
    FinetuneOut,
    FinetuneSpec,
    MetricsOut,
    MetricsQuery,
    OptionsOut,
    Scheduler,
)
from suanli.schemas.jobs import JobListQuery, LogQuery
from suanli.schemas.system import LogChunkOut
from suanli.schemas.types import MAX_INT32
from suanli.services import finetuning

router = APIRouter(tags=["finetunes"])
RunId = Annotated[int, Path(ge=1, le=MAX_INT32)]


def _detail(
    request: Request, session: Session, settings: Settings, run_id: int, caller: Caller
) -> FinetuneDetailOut:
    job, row = finetuning.get(session, caller.actor, run_id)
    return finetune_detail_out(session, settings, job, row, language_of(request))


@router.post("/finetunes", response_model=FinetuneDetailOut, status_code=201)
def create(
    spec: FinetuneSpec,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    workloads: WorkloadsDep,
) -> FinetuneDetailOut:
    """A fine-tuning run of a base model version on datasets. Refused (422, naming the field)
    when a dataset's records do not match their format, the method needs hardware the run did
    not ask for, or the memory estimate exceeds what one device has (with a suggestion)."""
    job = workloads.create_finetune(session, caller.actor, spec, store)
    return _detail(request, session, settings, job.id, caller)


@router.post("/finetune-estimates", response_model=EstimateOut)
def estimate(
    spec: FinetuneSpec,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    store: StoreDep,
    workloads: WorkloadsDep,
) -> EstimateOut:
    """Memory per device the run would take (weights, gradients, optimiser states,
    activations, overhead), whether it fits one device asked for, and what would."""
    found = finetuning.estimate(session, caller.actor, spec, store, workloads.inventory())
    shown = estimate_out(found.as_json(), language_of(request))
    assert shown is not None  # noqa: S101 - an estimate made now is never empty
    return shown


@router.get("/finetunes", response_model=list[FinetuneOut])
def list_runs(
    query: Annotated[JobListQuery, Query()],
    request: Request,
    caller: CallerDep,
    session: SessionDep,
) -> list[FinetuneOut]:
    """Newest first, from the projects you belong to, with where each run stands."""
    language = language_of(request)
    found = finetuning.list_runs(session, caller.actor, query)
    return [finetune_out(session, job, row, language) for job, row in found]


@router.get("/finetunes/options", response_model=OptionsOut)
def options(settings: SettingsDep, caller: CallerDep) -> OptionsOut:
    """What a form offers: chat templates, stages, methods, schedulers, precisions, trainers."""
    return OptionsOut(
        templates=list(TEMPLATES),
        stages=["sft", "dpo", "pt"],
        methods=["lora", "freeze", "full"],
        schedulers=list(get_args(Scheduler)),
        compute_types=["bf16", "fp16", "fp32"],
        trainers=sorted(settings.trainers),
    )


@router.get("/finetunes/datasets", response_model=list[BuiltinDatasetOut])
def datasets(request: Request, caller: CallerDep) -> list[BuiltinDatasetOut]:
    """The datasets Suanli ships (their licence lets them be shipped): one per format."""
    return builtin_out(language_of(request))


@router.get("/finetunes/{run_id}", response_model=FinetuneDetailOut)
def show(
    run_id: RunId, request: Request, caller: CallerDep, session: SessionDep, settings: SettingsDep
) -> FinetuneDetailOut:
    return _detail(request, session, settings, run_id, caller)


@router.get("/finetunes/{run_id}/metrics", response_model=MetricsOut)
def metrics(
    run_id: RunId,
    query: Annotated[MetricsQuery, Query()],
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
) -> MetricsOut:
    """Loss, evaluation loss, learning rate and tokens/s per logged step (after `after`),
    and where the run stands: a live chart asks for what is new."""
    job, _ = finetuning.get(session, caller.actor, run_id)
    return metrics_out(finetuning.read_progress(settings, job, after=query.after))


@router.get("/finetunes/{run_id}/log", response_model=LogChunkOut)
def log(
    run_id: RunId,
    query: Annotated[LogQuery, Query()],
    caller: CallerDep,
    session: SessionDep,
    workloads: WorkloadsDep,
) -> LogChunkOut:
    chunk = workloads.read_log(
        session,
        caller.actor,
        run_id,
        kind=finetuning.KIND,
        offset=query.offset,
        limit=query.limit,
        tail=query.tail,
    )
    return LogChunkOut(text=chunk.text, next_offset=chunk.next_offset, finished=chunk.finished)


@router.post("/finetunes/{run_id}/stop", response_model=FinetuneDetailOut)
def stop(
    run_id: RunId,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    workloads: WorkloadsDep,
) -> FinetuneDetailOut:
    """Stop the run; its checkpoints stay, and `resume` continues from the last one."""
    workloads.stop_finetune(session, caller.actor, run_id)
    return _detail(request, session, settings, run_id, caller)


@router.post("/finetunes/{run_id}/resume", response_model=FinetuneDetailOut)
def resume(
    run_id: RunId,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    workloads: WorkloadsDep,
) -> FinetuneDetailOut:
    """A stopped or failed run queued again; it continues from its last checkpoint."""
    workloads.resume_finetune(session, caller.actor, run_id)
    return _detail(request, session, settings, run_id, caller)


@router.post("/finetunes/{run_id}/compare", response_model=CompareOut, status_code=201)
def compare(
    run_id: RunId,
    body: ComparePrompts,
    caller: CallerDep,
    session: SessionDep,
    workloads: WorkloadsDep,
) -> CompareOut:
    """The same prompts answered by the base and the tuned model (a job in the project)."""
    return compare_out(workloads.compare_finetune(session, caller.actor, run_id, body.prompts))


@router.get("/finetunes/{run_id}/compare", response_model=CompareOut)
def comparison(run_id: RunId, caller: CallerDep, session: SessionDep) -> CompareOut:
    _, row = finetuning.get(session, caller.actor, run_id)
    return compare_out(row)
