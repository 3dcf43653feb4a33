"""Project quotas: what each project uses, and whether one more workload stays within its
limits.

The rules (Kueue- and OpenPAI-style guaranteed quota with borrowing):
- a project's guaranteed GPUs are its own; beyond them it may borrow idle GPUs up to
  `max_gpus` (None: up to the cluster), and what it borrows can be reclaimed by preemption;
- `max_gpus_per_user` caps one user's GPUs inside a project, `cpus` and `memory_bytes` cap
  the project's CPUs and memory;
- a workload that may not be preempted cannot be reclaimed, so beyond its project's
  guarantee it may only use GPUs that no project is guaranteed (the cluster's GPUs minus
  the sum of all guarantees). Without that rule a non-preemptible borrower could sit on
  another project's guarantee for ever.

Usage is counted in GPUs (a fraction as its share, see devices.gpu_charge), CPUs and bytes.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from suanli.scheduler.devices import EPSILON, gib, number
from suanli.scheduler.model import Quota, Workload
from suanli.scheduler.reasons import (
    QUOTA_CPUS,
    QUOTA_MAX_GPUS,
    QUOTA_MEMORY,
    QUOTA_NONPREEMPTIBLE,
    QUOTA_USER_GPUS,
)

# A reason a workload cannot be admitted: (code, params) for PendingReason / reason.<code>.
Block = tuple[str, dict[str, Any]]


@dataclass(slots=True)
class Tally:
    """What one project uses (or, in a preemption plan, what it would give back)."""

    gpus: float = 0.0
    cpus: float = 0.0
    memory: int = 0
    nonpreemptible_gpus: float = 0.0
    users: dict[str, float] = field(default_factory=dict)

    def add(self, workload: Workload, gpus: float, sign: int = 1) -> None:
        request = workload.request
        nodes = max(request.nodes, 1)
        self.gpus += sign * gpus
        self.cpus += sign * request.cpus * nodes
        self.memory += sign * request.memory_bytes * nodes
        if not workload.preemptible:
            self.nonpreemptible_gpus += sign * gpus
        self.users[workload.user] = self.users.get(workload.user, 0.0) + sign * gpus


_NOTHING = Tally()


class Ledger:
    """Per-project usage against quotas, updated as the cycle admits and preempts."""

    def __init__(self, quotas: Mapping[str, Quota], total_gpus: float) -> None:
        self._quotas = quotas
        self._defaults: dict[str, Quota] = {}
        self.tallies: dict[str, Tally] = {}
        guaranteed = sum(max(q.guaranteed_gpus, 0) for q in quotas.values())
        # GPUs nobody is guaranteed: the most that non-preemptible borrowing may hold.
        self.unguaranteed = max(0.0, total_gpus - guaranteed)
        self.nonpreemptible_borrowed = 0.0
        self.changes = 0  # counts add(): lets callers cache what depends on the tallies

    def quota(self, project: str) -> Quota:
        quota = self._quotas.get(project)
        if quota is None:
            quota = self._defaults.get(project)
            if quota is None:
                quota = self._defaults[project] = Quota(project)
        return quota

    def add(self, workload: Workload, gpus: float, sign: int = 1) -> None:
        """Count a workload in (sign 1) or out (sign -1, a preemption victim)."""
        self.changes += 1
        tally = self.tallies.get(workload.project)
        if tally is None:
            tally = self.tallies[workload.project] = Tally()
        if workload.preemptible:
            tally.add(workload, gpus, sign)
            return
        guaranteed = self.quota(workload.project).guaranteed_gpus
        before = max(0.0, tally.nonpreemptible_gpus - guaranteed)
        tally.add(workload, gpus, sign)
        after = max(0.0, tally.nonpreemptible_gpus - guaranteed)
        self.nonpreemptible_borrowed += after - before

    def borrowing(self, project: str, returned: float = 0.0) -> bool:
        """Does the project use more GPUs than it is guaranteed (after giving back
        `returned`)? Its workloads then hold borrowed GPUs that may be reclaimed."""
        tally = self.tallies.get(project)
        used = (tally.gpus if tally else 0.0) - returned
        return used > self.quota(project).guaranteed_gpus + EPSILON

    def within_guarantee(self, project: str, gpus: float) -> bool:
        tally = self.tallies.get(project)
        used = tally.gpus if tally else 0.0
        return gpus > 0 and used + gpus <= self.quota(project).guaranteed_gpus + EPSILON

    def check(self, workload: Workload, gpus: float, returned: Tally | None = None) -> Block | None:
        """None when the workload fits its project's quota, else the first limit it breaks.

        `returned` is what the project would give back (own workloads a preemption plan
        would stop)."""
        quota = self.quota(workload.project)
        if (
            workload.preemptible
            and quota.max_gpus is None
            and quota.max_gpus_per_user is None
            and quota.cpus is None
            and quota.memory_bytes is None
        ):
            return None  # no limit but the cluster's
        tally = self.tallies.get(workload.project) or _NOTHING
        back = returned or _NOTHING
        request = workload.request
        nodes = max(request.nodes, 1)
        if quota.max_gpus is not None and gpus > 0:
            limit = max(quota.max_gpus, quota.guaranteed_gpus)
            used = tally.gpus - back.gpus
            if used + gpus > limit + EPSILON:
                params = {"used": number(used), "limit": limit, "requested": number(gpus)}
                return QUOTA_MAX_GPUS, params
        if quota.max_gpus_per_user is not None and gpus > 0:
            used = tally.users.get(workload.user, 0.0) - back.users.get(workload.user, 0.0)
            if used + gpus > quota.max_gpus_per_user + EPSILON:
                params = {
                    "user": workload.user,
                    "used": number(used),
                    "limit": quota.max_gpus_per_user,
                    "requested": number(gpus),
                }
                return QUOTA_USER_GPUS, params
        cpus = request.cpus * nodes
        if quota.cpus is not None and cpus > 0:
            used = tally.cpus - back.cpus
            if used + cpus > quota.cpus + EPSILON:
                params = {
                    "used": number(used),
                    "limit": number(quota.cpus),
                    "requested": number(cpus),
                }
                return QUOTA_CPUS, params
        memory = request.memory_bytes * nodes
        if quota.memory_bytes is not None and memory > 0:
            used = tally.memory - back.memory
            if used + memory > quota.memory_bytes:
                params = {
                    "used_gib": gib(used),
                    "limit_gib": gib(quota.memory_bytes),
                    "requested_gib": gib(memory),
                }
                return QUOTA_MEMORY, params
        if not workload.preemptible and gpus > 0:
            guaranteed = quota.guaranteed_gpus
            own = tally.nonpreemptible_gpus - back.nonpreemptible_gpus
            others = self.nonpreemptible_borrowed - max(0.0, tally.nonpreemptible_gpus - guaranteed)
            now = others + max(0.0, own - guaranteed)
            after = others + max(0.0, own + gpus - guaranteed)
            if after > self.unguaranteed + EPSILON:
                params = {
                    "used": number(now),
                    "limit": number(self.unguaranteed),
                    "requested": number(gpus),
                    "guaranteed": guaranteed,
                }
                return QUOTA_NONPREEMPTIBLE, params
        return None
