"""Fine-tuning runs as their readers see them, for the API's routes and the console's pages."""

import math

from sqlalchemy.orm import Session

from suanli.api.outputs import event_text, job_out
from suanli.config import Settings
from suanli.db.models import DataVersion, Deployment, Finetune, Job
from suanli.finetune import builtin, progress
from suanli.i18n import translate
from suanli.schemas.finetune import (
    BuiltinDatasetOut,
    CompareOut,
    EstimateOut,
    FinetuneDetailOut,
    FinetuneOut,
    MetricPoint,
    MetricsOut,
    OutputOut,
    ProgressOut,
)
from suanli.schemas.jobs import EventOut
from suanli.services import finetuning


def finetune_out(session: Session, job: Job, row: Finetune | None, language: str) -> FinetuneOut:
    shown = job_out(job, language).model_dump(
        include={
            "id", "name", "project", "user", "state", "submitted_at", "started_at",
            "finished_at", "attempts", "pending", "exit", "usage",
        }
    )  # fmt: skip
    spec = job.spec or {}
    resources = spec.get("resources") or {}
    now = (row.progress if row else None) or {}
    return FinetuneOut(
        **shown,
        stage=str(spec.get("stage", "")),
        method=str(spec.get("method", "")),
        model=_input(job, "model"),
        datasets=[str(i["ref"]) for i in job.inputs or [] if i.get("kind") == "dataset"]
        + [f"builtin:{name}" for name in spec.get("builtin_datasets") or []],
        gpus=int(resources.get("gpus", 0)),
        nodes=int(resources.get("nodes", 1)),
        progress=ProgressOut(
            current_steps=int(now.get("current_steps") or 0),
            total_steps=int(now.get("total_steps") or 0),
            percentage=float(now.get("percentage") or 0.0),
            loss=now.get("loss"),
            remaining_seconds=now.get("remaining_seconds"),
        )
        if now
        else None,
        output=output_out(session, row),
    )


def _input(job: Job, kind: str) -> str:
    return next((str(i["ref"]) for i in job.inputs or [] if i.get("kind") == kind), "")


def output_out(session: Session, row: Finetune | None) -> OutputOut | None:
    if row is None or row.output_version_id is None:
        return None
    version = session.get(DataVersion, row.output_version_id)
    if version is None:
        return None
    repository = version.repository
    return OutputOut(
        repository=repository.name,
        version=version.number,
        ref=f"{repository.project.name}/{repository.name}@{version.number}",
    )


def estimate_out(estimate: dict, language: str) -> EstimateOut | None:
    """An estimate kept on the run (or made now), with its warning in the reader's words."""
    if not estimate:
        return None
    needed, available = estimate["per_device_bytes"], estimate.get("available_bytes")
    fits = estimate.get("fits")
    warning = suggestion = ""
    if fits is False:
        warning = translate(
            "web.finetune.estimate.too_big",
            language,
            needed=f"{needed / 2**30:.1f}",
            available=f"{(available or 0) / 2**30:.1f}",
        )
        suggested = estimate.get("suggested")
        suggestion = (
            translate(
                "web.finetune.estimate.suggestion",
                language,
                changes=", ".join(f"{key} = {value}" for key, value in suggested.items()),
            )
            if suggested
            else translate("web.finetune.estimate.no_suggestion", language)
        )
    return EstimateOut(
        per_device_bytes=needed,
        available_bytes=available,
        fits=fits,
        parameters=estimate["parameters"],
        trainable_parameters=estimate["trainable_parameters"],
        parts=estimate["parts"],
        warning=warning,
        suggestion=suggestion,
        suggested=estimate.get("suggested"),
    )


def finetune_detail_out(
    session: Session, settings: Settings, job: Job, row: Finetune, language: str
) -> FinetuneDetailOut:
    services = []
    if row.output_version_id is not None:
        services = [
            d.name
            for d in session.query(Deployment).filter(Deployment.kind == "service")
            if any(i.get("version_id") == row.output_version_id for i in d.inputs or [])
        ]
    return FinetuneDetailOut(
        **finetune_out(session, job, row, language).model_dump(),
        spec={key: value for key, value in (job.spec or {}).items() if key != "entries"},
        history=[
            EventOut(at=e.at, state=e.state, detail=event_text(e, language)) for e in job.events
        ],
        estimate=estimate_out(row.estimate, language),
        final_metrics=dict(row.final_metrics or {}),
        yaml=finetuning.training_yaml(settings, job),
        services=services,
        registration=row.registration,
        registration_error=translate(problem["key"], language, **problem.get("params", {}))
        if (problem := row.register_problem or {}).get("key")
        else "",
    )


def metrics_out(found: progress.Progress) -> MetricsOut:
    """Points for a chart; a loss that is not a number (the run diverged) is shown as none."""

    def finite(value: float | None) -> float | None:
        return value if value is not None and math.isfinite(value) else None

    return MetricsOut(
        points=[
            MetricPoint(
                step=p.step,
                epoch=finite(p.epoch),
                loss=finite(p.loss),
                eval_loss=finite(p.eval_loss),
                lr=finite(p.lr),
                throughput=finite(p.throughput),
                tokens=p.tokens,
            )
            for p in found.points
        ],
        current_steps=found.current_steps,
        total_steps=found.total_steps,
        percentage=found.percentage if math.isfinite(found.percentage) else 0.0,
        elapsed_seconds=found.elapsed_seconds,
        remaining_seconds=found.remaining_seconds,
    )


def builtin_out(language: str) -> list[BuiltinDatasetOut]:
    return [
        BuiltinDatasetOut(
            name=d.name,
            formatting=d.formatting,
            stage=d.stage,
            rows=d.rows,
            licence=d.licence,
            description=translate(d.description, language),
        )
        for d in builtin.DATASETS
    ]


def compare_out(row: Finetune) -> CompareOut:
    return CompareOut(
        state=row.compare_state,
        job=row.compare_job_id,
        prompts=list(row.compare_prompts or []),
        answers=list(row.compare_answers or []),
    )
