"""Jobs as their readers see them: ORM rows to the transport schemas, messages in the reader's
language. The API's routes and the console's pages both show jobs through these."""

from suanli.db.models import Job, JobEvent
from suanli.i18n import translate
from suanli.schemas.jobs import (
    EventOut,
    ExitOut,
    GpuShareOut,
    JobDetailOut,
    JobOut,
    PendingOut,
    PlacementOut,
)


def job_out(job: Job, language: str) -> JobOut:
    pending = None
    if job.state in ("pending", "starting") and job.pending_code:
        message = translate(
            f"reason.{job.pending_code}",
            language,
            position=job.pending_position,
            **job.pending_params,
        )
        pending = PendingOut(code=job.pending_code, message=message, position=job.pending_position)
    exit_ = None
    if job.exit_reason:
        exit_ = ExitOut(
            reason=job.exit_reason,
            exit_code=job.exit_code,
            signal=job.exit_signal,
            detail=job.exit_detail,
            message=translate(
                f"exit.{job.exit_reason}",
                language,
                code=job.exit_code,
                signal=job.exit_signal,
                detail=job.exit_detail,
            ),
        )
    placement = None
    if job.placement:
        placement = PlacementOut(
            node=job.placement["node"],
            gpus=[GpuShareOut(**gpu) for gpu in job.placement.get("gpus", [])],
        )
    return JobOut(
        id=job.id,
        name=job.name,
        project=job.project.name,
        user=job.user_name,
        state=job.state,
        priority=job.priority,
        gpus=job.gpus,
        submitted_at=job.submitted_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        attempts=job.attempts,
        pending=pending,
        exit=exit_,
        placement=placement,
        warnings=list(job.warnings or []),
        usage=dict(job.usage or {}),
        energy_wh=round(job.energy_wh or 0.0, 4),
    )


def event_text(event: JobEvent, language: str) -> str:
    """A history entry in the reader's language; an ending also says how, as `exit.*` does."""
    params = dict(event.params or {})
    if params.get("exit_reason"):
        params["how"] = translate(
            f"exit.{params['exit_reason']}",
            language,
            code=params.get("exit_code"),
            signal=params.get("exit_signal"),
            detail=params.get("exit_detail", ""),
        )
    if "reason" in params:
        params["reason"] = translate(
            f"exit.{params['reason']}",
            language,
            code="",
            signal="",
            detail=params.get("detail", ""),
        )
    return translate(event.detail, language, **params)


def detail_out(job: Job, language: str) -> JobDetailOut:
    return JobDetailOut(
        **job_out(job, language).model_dump(),
        spec=job.spec,
        history=[
            EventOut(at=e.at, state=e.state, detail=event_text(e, language)) for e in job.events
        ],
    )
