"""Who holds which GPU, and what each project uses now: what the console's overview, the nodes
pages and the quota bars show, and the API's `used_by`.

Capacity is no secret (every signed-in user sees the nodes); what a project uses is shown to
its members and to administrators only. So is who holds a GPU: anyone else sees that it is in
use (and, shared, how much of it), not by which job, user or project.
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from suanli.core.states import ACTIVE, State, gpu_state
from suanli.db.models import GpuDevice, Job, Node
from suanli.services import monitoring
from suanli.services.actor import Actor

# What a GPU's user is called for a reader who may not see the job (the API's `used_by`).
OTHER_PROJECT = "another-project"


@dataclass(frozen=True)
class Holder:
    """A job on a GPU: the whole device, or a fraction (memory and/or compute). `job_id` is
    None (and `user` empty) for a reader who may not see the job."""

    job_id: int | None
    user: str
    memory_bytes: int = 0
    compute_percent: int = 0

    @property
    def label(self) -> str:
        """`user#id`, or OTHER_PROJECT for a job the reader may not see."""
        return f"{self.user}#{self.job_id}" if self.job_id else OTHER_PROJECT


@dataclass
class Usage:
    """A project's running work against its quota, and its queue."""

    gpus: float = 0.0
    cpus: float = 0.0
    memory_bytes: int = 0
    running: int = 0
    pending: int = 0


@dataclass
class Tally:
    """Whole devices by state; a shared device with any fraction taken counts as in use."""

    total: int = 0
    in_use: int = 0
    free: int = 0
    drained: int = 0
    shared: int = 0

    def add(self, state: str) -> None:
        self.total += 1
        if state in ("in_use", "shared_in_use"):
            self.in_use += 1
        elif state in ("free", "shared_free"):
            self.free += 1
        else:
            self.drained += 1
        if state.startswith("shared"):
            self.shared += 1


@dataclass
class Capacity:
    """The cluster at a glance: all GPUs, per node and per GPU model."""

    gpus: Tally = field(default_factory=Tally)
    by_node: dict[str, Tally] = field(default_factory=dict)
    by_model: dict[str, Tally] = field(default_factory=dict)


def gpu_holders(session: Session, reader: Actor) -> dict[str, list[Holder]]:
    """The jobs holding each GPU now, by GPU UUID, as the reader may see them: the jobs of
    projects the reader does not belong to keep their share of the GPU but not their id and
    user."""
    sight = monitoring.sight(session, reader)
    holders: dict[str, list[Holder]] = defaultdict(list)
    for job in session.scalars(select(Job).where(Job.state.in_(ACTIVE)).order_by(Job.id)):
        shown = sight.sees_project(job.project_id)
        for gpu in (job.placement or {}).get("gpus", []):
            holders[gpu["uuid"]].append(
                Holder(
                    job_id=job.id if shown else None,
                    user=job.user_name if shown else "",
                    memory_bytes=int(gpu.get("memory_bytes") or 0),
                    compute_percent=int(gpu.get("compute_percent") or 0),
                )
            )
    return dict(holders)


def state_of(gpu: GpuDevice, holders: dict[str, list[Holder]]) -> str:
    return gpu_state(
        present=gpu.present,
        # A node its engine lost or drained runs nothing new, whatever our own flag says.
        schedulable=gpu.schedulable and gpu.node.schedulable and gpu.node.available,
        shared=gpu.shared,
        in_use=bool(holders.get(gpu.uuid)),
    )


def capacity(nodes: Sequence[Node], holders: dict[str, list[Holder]]) -> Capacity:
    """Count every GPU once, in the cluster, its node and its model. A GPU of a drained node
    counts as drained: nothing new starts on it."""
    result = Capacity()
    for node in nodes:
        per_node = result.by_node.setdefault(node.name, Tally())
        for gpu in node.gpus:
            state = state_of(gpu, holders)
            for tally in (result.gpus, per_node, result.by_model.setdefault(gpu.model, Tally())):
                tally.add(state)
    return result


def project_usage(session: Session, project_ids: Iterable[int]) -> dict[int, Usage]:
    """What the projects' running work takes (GPUs as charged against quota, CPUs and memory
    as requested) and how many of their jobs wait. Waiting jobs are only counted, in SQL:
    there may be thousands; running ones are bounded by the cluster's size."""
    ids = list(project_ids)
    usage = {project_id: Usage() for project_id in ids}
    if not ids:
        return usage
    waiting = session.execute(
        select(Job.project_id, func.count())
        .where(Job.project_id.in_(ids), Job.state == State.pending)
        .group_by(Job.project_id)
    )
    for project_id, count in waiting:
        usage[project_id].pending = count
    running = session.execute(
        select(Job.project_id, Job.gpus, Job.spec).where(
            Job.project_id.in_(ids), Job.state.in_(ACTIVE)
        )
    )
    for project_id, gpus, spec in running:
        entry = usage[project_id]
        resources = (spec or {}).get("resources", {})
        entry.running += 1
        entry.gpus += gpus
        entry.cpus += float(resources.get("cpus") or 0)
        entry.memory_bytes += int(resources.get("memory") or 0)
    return usage


def energy_by_user(session: Session, project_id: int) -> dict[str, float]:
    """The GPU energy (Wh) of a project's jobs, per user who ran them, largest first."""
    rows = session.execute(
        select(Job.user_name, func.sum(Job.energy_wh))
        .where(Job.project_id == project_id)
        .group_by(Job.user_name)
    )
    totals = {user: float(total or 0.0) for user, total in rows}
    return dict(sorted(totals.items(), key=lambda item: -item[1]))
