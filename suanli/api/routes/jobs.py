"""Jobs: submit, list, show, cancel, resubmit, logs."""

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from suanli.api.deps import CallerDep, SessionDep, WorkloadsDep
from suanli.api.outputs import detail_out, job_out
from suanli.api.problems import language_of
from suanli.schemas.jobs import (
    JobDetailOut,
    JobListQuery,
    JobOut,
    JobSpec,
    LogQuery,
)
from suanli.schemas.system import LogChunkOut
from suanli.schemas.types import MAX_INT32
from suanli.services import jobs

router = APIRouter(prefix="/jobs", tags=["jobs"])
JobId = Annotated[int, Path(ge=1, le=MAX_INT32)]


@router.post("", response_model=JobDetailOut, status_code=201)
def submit(
    spec: JobSpec,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    workloads: WorkloadsDep,
) -> JobDetailOut:
    """Submit a job. One that no node could ever run is refused (422, naming the resource);
    one above the project's quota is accepted and waits, saying why."""
    job = workloads.submit(session, caller.actor, spec)
    return detail_out(job, language_of(request))


@router.get("", response_model=list[JobOut])
def list_jobs(
    query: Annotated[JobListQuery, Query()],
    request: Request,
    caller: CallerDep,
    session: SessionDep,
) -> list[JobOut]:
    """Newest first, from the projects you belong to; `state` also takes `active` and
    `finished`."""
    language = language_of(request)
    return [job_out(job, language) for job in jobs.list_jobs(session, caller.actor, query)]


@router.get("/{job_id}", response_model=JobDetailOut)
def show(job_id: JobId, request: Request, caller: CallerDep, session: SessionDep) -> JobDetailOut:
    return detail_out(jobs.get_job(session, caller.actor, job_id), language_of(request))


@router.post("/{job_id}/cancel", response_model=JobDetailOut)
def cancel(
    job_id: JobId, request: Request, caller: CallerDep, session: SessionDep, workloads: WorkloadsDep
) -> JobDetailOut:
    """Cancel: a pending job ends at once, a running one gets SIGTERM, a grace period, then
    SIGKILL."""
    job = workloads.cancel(session, caller.actor, job_id)
    return detail_out(job, language_of(request))


@router.post("/{job_id}/resubmit", response_model=JobDetailOut, status_code=201)
def resubmit(
    job_id: JobId, request: Request, caller: CallerDep, session: SessionDep, workloads: WorkloadsDep
) -> JobDetailOut:
    """Submit the same spec again, as you."""
    job = workloads.resubmit(session, caller.actor, job_id)
    return detail_out(job, language_of(request))


@router.get("/{job_id}/logs", response_model=LogChunkOut)
def logs(
    job_id: JobId,
    query: Annotated[LogQuery, Query()],
    caller: CallerDep,
    session: SessionDep,
    workloads: WorkloadsDep,
) -> LogChunkOut:
    """Output from `offset` (or the last `tail` lines). Follow a job by asking again from
    `next_offset` until `finished` is true; logs stay after the job ends."""
    chunk = workloads.read_log(
        session,
        caller.actor,
        job_id,
        kind="job",
        offset=query.offset,
        limit=query.limit,
        tail=query.tail,
    )
    return LogChunkOut(text=chunk.text, next_offset=chunk.next_offset, finished=chunk.finished)
