"""The application layer: what the API and the console do with workloads, in one place.

Both shells used to repeat the same glue around the services: read the node inventory for
the checks at submit, wake the loops after a change, work out where a workload's log is.
Here that glue is written once; the shells parse input, call one method and render.
Services stay free of it (they only write rows); the loops learn of a change through
`wake`, a no-op where nothing runs work (API-only tests).
"""

from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session

from suanli.backends.base import Capabilities
from suanli.config import Settings
from suanli.data.store import BlobStore
from suanli.db.engine import Database
from suanli.db.models import Deployment, Finetune, Job, ServiceSweep
from suanli.kinds import job as job_kind
from suanli.scheduler import model as sched
from suanli.schemas.deployments import DeploymentSpec
from suanli.schemas.devenvs import DevEnvSpec
from suanli.schemas.finetune import FinetuneSpec
from suanli.schemas.jobs import JobSpec
from suanli.schemas.services import ServiceSpec, ServiceUpdate, SweepSpec
from suanli.services import deployments, devenvs, finetuning, jobs, nodes, serving, sweeps
from suanli.services.actor import Actor

Wake = Callable[[str], None]
WORKLOADS, DEPLOYMENTS = "workloads", "deployments"


class Workloads:
    def __init__(
        self, settings: Settings, database: Database, capabilities: Capabilities, wake: Wake
    ):
        self.settings = settings
        self.database = database
        self.capabilities = capabilities
        self.wake = wake

    def inventory(self) -> tuple[sched.Node, ...]:
        """The nodes, read in a short transaction of its own before the caller's write."""
        return nodes.inventory(self.database)

    def log_path(self, workload_id: int) -> Path:
        return jobs.log_path(self.settings, workload_id)

    def read_log(
        self,
        session: Session,
        actor: Actor,
        workload_id: int,
        *,
        kind: str,
        offset: int,
        limit: int,
        tail: int | None,
    ) -> jobs.LogChunk:
        path = self.log_path(workload_id)
        return jobs.read_log(
            session, actor, workload_id, path, offset=offset, limit=limit, tail=tail, kind=kind
        )

    # Jobs
    def submit(self, session: Session, actor: Actor, spec: JobSpec) -> Job:
        unix_users = self.settings.unix_users
        job = jobs.submit(session, actor, spec, self.inventory(), unix_users, kind=job_kind.KIND)
        self.wake(WORKLOADS)
        return job

    def resubmit(self, session: Session, actor: Actor, job_id: int) -> Job:
        unix_users = self.settings.unix_users
        job = jobs.resubmit(
            session, actor, job_id, self.inventory(), unix_users, kind=job_kind.KIND
        )
        self.wake(WORKLOADS)
        return job

    def cancel(self, session: Session, actor: Actor, job_id: int) -> Job:
        job = jobs.cancel(session, actor, job_id)
        self.wake(WORKLOADS)
        return job

    # Dev environments
    def create_env(self, session: Session, actor: Actor, spec: DevEnvSpec) -> Job:
        inventory = self.inventory()
        remote = self.capabilities.remote
        job = devenvs.create(session, actor, spec, inventory, self.settings, remote=remote)
        self.wake(WORKLOADS)
        return job

    def stop_env(self, session: Session, actor: Actor, env_id: int) -> Job:
        job = devenvs.stop(session, actor, env_id)
        self.wake(WORKLOADS)
        return job

    def restart_env(self, session: Session, actor: Actor, env_id: int) -> Job:
        job = devenvs.restart(session, actor, env_id)
        self.wake(WORKLOADS)
        return job

    def vscode_offered(self) -> bool:
        """code-server must be on the server's host, and environments must run there too."""
        return not self.capabilities.remote and bool(devenvs.code_server(self.settings))

    # Deployments
    def create_deployment(self, session: Session, actor: Actor, spec: DeploymentSpec) -> Deployment:
        unix_users = self.settings.unix_users
        deployment = deployments.create(session, actor, spec, self.inventory(), unix_users)
        self.wake(DEPLOYMENTS)
        return deployment

    def scale_deployment(
        self, session: Session, actor: Actor, deployment_id: int, replicas: int
    ) -> Deployment:
        deployment = deployments.scale(session, actor, deployment_id, replicas)
        self.wake(DEPLOYMENTS)
        return deployment

    def stop_deployment(
        self, session: Session, actor: Actor, deployment_id: int, kind: str = deployments.REPLICA
    ) -> Deployment:
        deployment = deployments.stop(session, actor, deployment_id, kind)
        self.wake(DEPLOYMENTS)
        return deployment

    def start_deployment(
        self, session: Session, actor: Actor, deployment_id: int, kind: str = deployments.REPLICA
    ) -> Deployment:
        deployment = deployments.start(session, actor, deployment_id, kind)
        self.wake(DEPLOYMENTS)
        return deployment

    # Fine-tuning
    def create_finetune(
        self, session: Session, actor: Actor, spec: FinetuneSpec, store: BlobStore
    ) -> Job:
        inventory = self.inventory()
        job = finetuning.create(session, actor, spec, store, self.settings, inventory)
        self.wake(WORKLOADS)
        return job

    def stop_finetune(self, session: Session, actor: Actor, run_id: int) -> Job:
        job = finetuning.stop(session, actor, run_id)
        self.wake(WORKLOADS)
        return job

    def resume_finetune(self, session: Session, actor: Actor, run_id: int) -> Job:
        job = finetuning.resume(session, actor, run_id)
        self.wake(WORKLOADS)
        return job

    def compare_finetune(
        self, session: Session, actor: Actor, run_id: int, prompts: list[str]
    ) -> Finetune:
        inventory = self.inventory()
        row = finetuning.compare(session, actor, run_id, prompts, self.settings, inventory)
        self.wake(WORKLOADS)
        return row

    # Model services
    def deploy_service(self, session: Session, actor: Actor, spec: ServiceSpec) -> Deployment:
        deployment = serving.deploy(session, actor, spec, self.inventory(), self.settings)
        self.wake(DEPLOYMENTS)
        return deployment

    def update_service(
        self, session: Session, actor: Actor, service_id: int, change: ServiceUpdate
    ) -> Deployment:
        inventory = self.inventory()
        deployment = serving.update(session, actor, service_id, change, inventory, self.settings)
        self.wake(DEPLOYMENTS)
        return deployment

    def start_sweep(
        self, session: Session, actor: Actor, service_id: int, spec: SweepSpec
    ) -> ServiceSweep:
        sweep = sweeps.start(session, actor, service_id, spec, self.settings, self.inventory())
        self.wake(WORKLOADS)
        return sweep
