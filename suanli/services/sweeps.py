"""Load sweeps of model services, for capacity planning.

A sweep is a job in the service's project that runs vLLM's serving benchmark against the
service through the gateway (as its callers reach it), at concurrency 1, 2, 4, … up to the
maximum asked, with a key made for it alone (this model, two hours). When the job has ended
its results are read from the job's folder into curves (suanli.serving.sizing.Point), and
the key is revoked. Sizing answers "how many replicas for R requests/s at a TTFT p95 of T"
from those curves.
"""

import json
import shlex
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from suanli.config import Settings
from suanli.core.errors import InvalidInput, NotFound
from suanli.core.roles import ProjectRole
from suanli.core.states import TERMINAL, State
from suanli.db.models import Job, ServiceKey, ServiceSweep
from suanli.kinds import job as job_kind
from suanli.kinds import service as service_kind
from suanli.scheduler import model as sched
from suanli.schemas.jobs import JobSpec, Resources
from suanli.schemas.services import ServiceKeySpec, SizingQuery, SweepSpec
from suanli.services import jobs, service_keys, serving, workfolders
from suanli.services.actor import Actor
from suanli.services.common import commit
from suanli.services.jobs import work_folder
from suanli.services.projects import access
from suanli.serving import sizing

RESULTS = "sweep"
MAX_RESULT_BYTES = 4 * 2**20
KEY_SECONDS = 2 * 3600


def levels(maximum: int) -> list[int]:
    """1, 2, 4, … and the maximum itself."""
    found, level = [], 1
    while level < maximum:
        found.append(level)
        level *= 2
    return [*found, maximum]


def start(
    session: Session,
    actor: Actor,
    service_id: int,
    spec: SweepSpec,
    settings: Settings,
    nodes: Sequence[sched.Node],
) -> ServiceSweep:
    deployment = serving.get(session, actor, service_id)
    project = deployment.project
    access(session, actor, project.name, ProjectRole.member)
    engine = settings.engines.get(settings.benchmark_engine)
    if engine is None or engine.prefix is None:
        raise InvalidInput(
            "error.sweep_no_engine", field="service", engine=settings.benchmark_engine
        )
    if service_kind.protocol_of(settings, deployment.template) != "openai":
        raise InvalidInput("error.sweep_not_openai", field="service", name=deployment.name)
    model = next((i for i in deployment.inputs or [] if i.get("kind") == "model"), None)
    if model is None:
        raise InvalidInput("error.sweep_no_model", field="service", name=deployment.name)
    key, secret = service_keys.add(
        session,
        actor,
        ServiceKeySpec(
            project=project.name,
            name=f"sweep-{deployment.name}"[:32],
            models=[deployment.name],
            expires_in=KEY_SECONDS,
        ),
    )
    python = str(engine.prefix / "bin" / "python")
    commands = [
        sizing.bench_command(
            python=python,
            base_url=f"{settings.effective_public_url}/v1",
            model=deployment.name,
            tokenizer=f"models/{model['name']}",
            concurrency=level,
            prompts=max(spec.prompts, level),
            input_len=spec.input_len,
            output_len=spec.output_len,
            result_file=f"{RESULTS}/c{level}.json",
        )
        for level in levels(spec.max_concurrency)
    ]
    script = "\n".join(["set -e", f"mkdir -p {RESULTS}", *map(shlex.join, commands)]) + "\n"
    job = jobs.submit(
        session,
        actor,
        JobSpec(
            project=project.name,
            name=f"sweep-{deployment.name}"[:64],
            script=script,
            env=sizing.bench_env(secret),
            models=[str(model["ref"])],
            resources=Resources(cpus=1.0),
        ),
        nodes,
        settings.unix_users,
        kind=job_kind.KIND,
    )
    sweep = ServiceSweep(
        deployment_id=deployment.id,
        job_id=job.id,
        key_id=key.id,
        user_name=actor.name,
        params=spec.model_dump(),
    )
    session.add(sweep)
    commit(session, "error.conflict")
    return sweep


def list_sweeps(session: Session, actor: Actor, service_id: int) -> Sequence[ServiceSweep]:
    deployment = serving.get(session, actor, service_id)
    return session.scalars(
        select(ServiceSweep)
        .where(ServiceSweep.deployment_id == deployment.id)
        .order_by(ServiceSweep.id.desc())
    ).all()


def settle(session: Session, settings: Settings, service_id: int) -> None:
    """Read the results of the service's sweeps whose jobs have ended, and revoke their
    keys. Idempotent: a settled sweep is left as it is."""
    running = session.scalars(
        select(ServiceSweep).where(
            ServiceSweep.deployment_id == service_id, ServiceSweep.state == "running"
        )
    ).all()
    changed = False
    for sweep in running:
        job = session.get(Job, sweep.job_id) if sweep.job_id else None
        if job is not None and job.state not in TERMINAL:
            continue
        points, error = _results(settings, sweep, job)
        sweep.points = [asdict(p) for p in points]
        sweep.state = "succeeded" if points and job and job.state == State.succeeded else "failed"
        sweep.error = error[:2000]
        sweep.finished_at = datetime.now(UTC)
        key = session.get(ServiceKey, sweep.key_id) if sweep.key_id else None
        if key is not None and key.revoked_at is None:
            key.revoked_at = datetime.now(UTC)
        changed = True
    if changed:
        commit(session, "error.conflict")


def size(
    session: Session, actor: Actor, service_id: int, query: SizingQuery
) -> tuple[ServiceSweep, sizing.Sizing]:
    """From the sweep asked for, or the service's newest that succeeded."""
    deployment = serving.get(session, actor, service_id)
    statement = select(ServiceSweep).where(
        ServiceSweep.deployment_id == deployment.id, ServiceSweep.state == "succeeded"
    )
    if query.sweep is not None:
        statement = statement.where(ServiceSweep.id == query.sweep)
    sweep = session.scalar(statement.order_by(ServiceSweep.id.desc()).limit(1))
    if sweep is None:
        raise NotFound("error.sweep_none", field="sweep", name=deployment.name)
    points = [sizing.Point(**p) for p in sweep.points]
    try:
        return sweep, sizing.replicas_for(points, query.rps, query.ttft_p95_ms)
    except ValueError:  # every point of it had failed requests
        raise InvalidInput("error.sweep_unusable", field="sweep", id=sweep.id) from None


def _results(
    settings: Settings, sweep: ServiceSweep, job: Job | None
) -> tuple[list[sizing.Point], str]:
    if job is None:
        return [], "the sweep's job is gone"
    folder = work_folder(settings, job.id)
    points: list[sizing.Point] = []
    for level in levels(int(sweep.params.get("max_concurrency", 1))):
        data = workfolders.read(folder, f"{RESULTS}/c{level}.json", MAX_RESULT_BYTES)
        if data is None:
            continue
        try:
            points.append(sizing.point_from_result(json.loads(data)))
        except (ValueError, TypeError) as error:
            return points, f"c{level}.json: {error}"
    if job.state != State.succeeded:
        return points, job.exit_detail or job.exit_reason or job.state
    return points, ""
