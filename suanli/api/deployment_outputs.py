"""Deployments as their readers see them: ORM rows with their live replicas counted, to the
transport schemas. The API's routes and the console's pages both show deployments through
these, as they show jobs through `suanli.api.outputs`."""

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from suanli.api.outputs import job_out
from suanli.db.models import Deployment
from suanli.schemas.deployments import DeploymentDetailOut, DeploymentOut, Health
from suanli.services import deployments


def deployment_out(deployment: Deployment, counted: dict[str, int]) -> DeploymentOut:
    """`counted`: its live replicas, as `services.deployments.counts` gives them."""
    running, starting = counted.get("running", 0), counted.get("starting", 0)
    return DeploymentOut(
        id=deployment.id,
        name=deployment.name,
        project=deployment.project.name,
        user=deployment.user_name,
        state=deployment.state,
        replicas=deployment.replicas,
        running=running,
        starting=starting,
        failures=deployment.failures,
        next_start_at=deployment.next_start_at,
        created_at=deployment.created_at,
        health=health(deployment, running, starting),
    )


def deployments_out(session: Session, found: Sequence[Deployment]) -> list[DeploymentOut]:
    """A list, its replicas counted in one query for all."""
    counted = deployments.counts(session, [d.id for d in found])
    return [deployment_out(d, counted[d.id]) for d in found]


def deployment_detail_out(
    session: Session, deployment: Deployment, language: str
) -> DeploymentDetailOut:
    """One deployment with its template and its replicas, newest first."""
    counted = deployments.counts(session, [deployment.id])[deployment.id]
    replicas = deployments.replicas_of(session, deployment)
    return DeploymentDetailOut(
        **deployment_out(deployment, counted).model_dump(),
        template=dict(deployment.template),
        workloads=[job_out(job, language) for job in replicas],
    )


def health(deployment: Deployment, running: int, starting: int) -> Health:
    """One word for how it is doing, as the lists show and colour it: `ready` (all wanted
    replicas run), `starting` (some are on their way), `failing` (fewer run than wanted, and
    replicas keep ending by themselves), `stopping` and `stopped`. The words are catalogue
    keys under `label.deployment.`."""
    if deployment.state == deployments.STOPPED:
        return "stopping" if running + starting else "stopped"
    if running >= deployment.replicas:
        return "ready"
    return "failing" if deployment.failures else "starting"


def seconds_until(moment: datetime | None) -> float | None:
    """How long until the next replacement may start (None: nothing waits)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())
