"""Preemption: the cheapest set of running workloads to stop so that an entitled pending
workload fits.

Who may preempt whom:
- never a workload that is not preemptible, never one of higher priority;
- inside its own project, a workload preempts only lower priority;
- another project's workload only while that project borrows (uses more GPUs than it is
  guaranteed), and then if the preemptor has higher priority or stays within its own
  guarantee (reclaim). A project's guaranteed GPUs are thus never taken by another
  project, whatever its priority.

Victims are tried cheapest first: borrowed first, then lowest priority, then most recently
started (least work lost). A plan stops victims on one node only (the node the preemptor
will get), is minimised (victims it turns out not to need are dropped), and is accepted only
if the preemptor then fits its quota and the node, without delaying a reservation there.
The preemptor stays pending until the victims are gone; what it needs on the node beyond
what the victims give back is held for it meanwhile.

A fraction may take a shared GPU that another Unix identity holds only if every fraction of
that identity there is among the victims (MPS serves one user per GPU): the simulation
counts the fractions given back per identity, so the rule is applied exactly. Until the
victims are gone the GPU serves nobody new in the cycle (it holds both identities).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from suanli.scheduler.devices import EPSILON, Kind
from suanli.scheduler.model import Priority, Workload
from suanli.scheduler.placement import (
    INF,
    Cluster,
    Fit,
    Footprint,
    Need,
    NodeState,
    Reservation,
    SharedSlot,
)
from suanli.scheduler.quota import Block, Ledger, Tally
from suanli.scheduler.reasons import QUOTA_USER_GPUS

# Work a cycle may spend on preemption: victims and nodes looked at, all plans together. A
# preemptor not served in this cycle is served in the next one.
BUDGET = 10_000
# Feasible nodes compared per plan (nodes are visited cheapest victims first).
OPTIONS = 2


# A running workload seen as a possible victim.
Victim = Footprint


def victim_cost(victim: Victim) -> tuple[int, int, float, int]:
    """Cheapest first: borrowed, lowest priority, most recently started (least work lost)."""
    workload = victim.workload
    started = workload.started_at or 0.0
    return (0 if victim.borrowed else 1, workload.priority, -started, -workload.id)


@dataclass(slots=True)
class Plan:
    """Victims to stop so that the preemptor fits on `node` (on device kind `kind`, or on
    the shared device `slot` for a fraction); `cost` ranks plans, smaller is cheaper."""

    victims: list[Victim]
    node: NodeState
    kind: Kind | None
    slot: SharedSlot | None = None
    cost: tuple = field(default_factory=tuple)


class SlotBack:
    """What victims give back on one shared device: memory, compute, and their fractions
    per Unix identity."""

    __slots__ = ("compute", "holders", "memory")

    def __init__(self) -> None:
        self.memory = 0
        self.compute = 0
        self.holders: dict[str, int] = {}


NOTHING_BACK = SlotBack()


def serves_after(slot: SharedSlot, identity: str, back: SlotBack) -> bool:
    """Would `slot` serve `identity` once the victims are gone: are all fractions of every
    other identity on it given back?"""
    given = back.holders
    return all(
        holder == identity or given.get(holder, 0) >= count
        for holder, count in slot.holders.items()
    )


class Freed:
    """What a set of victims on one node would give back; for each reservation on the node
    also what it gives back that the reservation did not count on (victims that would
    have run past its start)."""

    __slots__ = ("cpus", "fractions", "gpus", "later", "memory", "reservations", "victims")

    def __init__(self, reservations: list[Reservation]) -> None:
        self.cpus = 0.0
        self.memory = 0
        self.gpus: dict[Kind, int] = {}
        self.fractions: dict[int, SlotBack] = {}  # by id(slot)
        self.victims: list[Victim] = []
        self.reservations = reservations
        self.later = [[0, 0.0, 0] for _ in reservations]  # gpus of its kind, cpus, memory

    def add(self, victim: Victim, sign: int = 1) -> None:
        self.cpus += sign * victim.cpus
        self.memory += sign * victim.memory
        for kind, count in victim.gpus.items():
            self.gpus[kind] = self.gpus.get(kind, 0) + sign * count
        identity = victim.workload.identity
        for slot, memory, compute in victim.fractions:
            back = self.fractions.get(id(slot))
            if back is None:
                back = self.fractions[id(slot)] = SlotBack()
            back.memory += sign * memory
            back.compute += sign * compute
            back.holders[identity] = back.holders.get(identity, 0) + sign
        for reservation, later in zip(self.reservations, self.later, strict=True):
            if victim.end > reservation.start:
                if reservation.kind is not None:
                    later[0] += sign * victim.gpus.get(reservation.kind, 0)
                later[1] += sign * victim.cpus
                later[2] += sign * victim.memory
        if sign > 0:
            self.victims.append(victim)
        else:
            self.victims.remove(victim)


class Preemptor:
    """Plans and commits preemptions for one cycle. Running workloads become victims lazily
    (only a cycle that tries to preempt pays for sorting them); `claimed` are those already
    chosen this cycle, never chosen twice."""

    def __init__(
        self,
        cluster: Cluster,
        ledger: Ledger,
        running: Sequence[Workload],
        charges: Mapping[int, float],
    ) -> None:
        self._cluster = cluster
        self._ledger = ledger
        self._charges = charges
        self._built = False
        self._by_node: dict[NodeState, list[Victim]] = {}
        self._by_project: dict[str, list[Victim]] = {}
        self._node_order: list[NodeState] = []
        self.claimed: set[int] = set()
        self._by_priority = [0] * (max(Priority) + 1)
        for workload in running:
            if workload.preemptible:
                self._by_priority[workload.priority] += 1
        self._budget = BUDGET
        self._failed: dict[tuple, list[tuple[int, float, int, int, int]]] = {}

    def possible(self, workload: Workload, charge: float) -> bool:
        """Cheap test before planning: is there any running workload this one might
        preempt, and budget left this cycle?"""
        if self._budget <= 0:
            return False
        counts = self._by_priority
        priority = workload.priority
        for lower in range(priority):
            if counts[lower]:
                return True
        return bool(counts[priority]) and self._ledger.within_guarantee(workload.project, charge)

    # -- building the victims lazily (only cycles that try to preempt pay for it) --------

    def _build(self) -> None:
        self._built = True
        borrowing = self._ledger.borrowing
        charges = self._charges
        victims = []
        projects: dict[str, bool] = {}
        for footprint in self._cluster.footprints:
            workload = footprint.workload
            if not workload.preemptible:
                continue
            footprint.charge = charges.get(workload.id, 0.0)
            borrowed = projects.get(workload.project)
            if borrowed is None:
                borrowed = projects[workload.project] = borrowing(workload.project)
            footprint.borrowed = borrowed
            victims.append(footprint)
        victims.sort(key=victim_cost)
        for victim in victims:
            if victim.node is not None:
                if victim.node not in self._by_node:
                    self._node_order.append(victim.node)  # cheapest victim first
                self._by_node.setdefault(victim.node, []).append(victim)
            self._by_project.setdefault(victim.workload.project, []).append(victim)

    # -- planning ------------------------------------------------------------------------

    def plan(
        self, workload: Workload, need: Need, charge: float, block: Block | None
    ) -> Plan | None:
        """The cheapest plan that makes `workload` fit, or None. `block` is the quota limit
        it breaks now, if any (then only its own project's workloads can help)."""
        user = workload.user if block is not None and block[0] == QUOTA_USER_GPUS else None
        memo_key = (
            workload.project,
            user,
            workload.priority,
            need.kinds,
            block is None,
            need.identity,
        )
        shape = (need.gpus, need.cpus, need.memory, need.gpu_memory, need.compute)
        for failed in self._failed.get(memo_key, ()):
            if (
                failed[0] <= shape[0]
                and failed[1] <= shape[1]
                and failed[2] <= shape[2]
                and failed[3] <= shape[3]
                and failed[4] <= shape[4]
            ):
                return None
        if not self._built:
            self._build()
        plan = self._plan(workload, need, charge, block)
        if plan is None:
            self._failed.setdefault(memo_key, []).append(shape)
        return plan

    def _eligible(self, victim: Victim, workload: Workload, within: bool) -> bool:
        other = victim.workload
        if other.id in self.claimed or other.priority > workload.priority:
            return False
        if other.project == workload.project:
            return other.priority < workload.priority
        return other.priority < workload.priority or within

    def _plan(
        self, workload: Workload, need: Need, charge: float, block: Block | None
    ) -> Plan | None:
        ledger = self._ledger
        within = ledger.within_guarantee(workload.project, charge)
        quota_victims: list[Victim] = []
        if block is not None:
            returned = Tally()
            for victim in self._by_project.get(workload.project, ()):
                self._budget -= 1
                if not self._eligible(victim, workload, within):
                    continue
                quota_victims.append(victim)
                returned.add(victim.workload, victim.charge)
                if ledger.check(workload, charge, returned) is None:
                    break
            else:
                return None
            for victim in reversed(list(quota_victims)):
                returned.add(victim.workload, victim.charge, -1)
                if ledger.check(workload, charge, returned) is None:
                    quota_victims.remove(victim)
                else:
                    returned.add(victim.workload, victim.charge)
            # Room somewhere already, once its own quota has room?
            found = self._cluster.find(need)
            if isinstance(found, Fit):
                return Plan(quota_victims, found.node, found.kind, found.slot, (0,))

        best: Plan | None = None
        options = 0
        quota_ids = {id(v) for v in quota_victims}
        given: dict[str, float] = {}
        for victim in quota_victims:
            project = victim.workload.project
            given[project] = given.get(project, 0.0) + victim.charge
        first = [v.node for v in quota_victims if v.node is not None]
        seen: set[int] = set()
        for node in first + self._node_order:
            if id(node) in seen:
                continue
            seen.add(id(node))
            self._budget -= 1
            if self._budget <= 0:
                break
            if not self._could_fit(node, need):
                continue
            freed = Freed(node.reservations)
            for victim in quota_victims:
                if victim.node is node:
                    freed.add(victim)
            taken = dict(given)
            added: list[Victim] = []
            result = self._fits(node, need, freed)
            if result is None:
                for victim in self._by_node.get(node, ()):
                    self._budget -= 1
                    if id(victim) in quota_ids or not self._eligible(victim, workload, within):
                        continue
                    project = victim.workload.project
                    if project != workload.project and not ledger.borrowing(
                        project, taken.get(project, 0.0)
                    ):
                        continue
                    added.append(victim)
                    freed.add(victim)
                    taken[project] = taken.get(project, 0.0) + victim.charge
                    result = self._fits(node, need, freed)
                    if result is not None:
                        break
                if result is None:
                    continue
                for victim in reversed(added[:-1]):
                    freed.add(victim, -1)
                    again = self._fits(node, need, freed)
                    if again is None:
                        freed.add(victim)
                    else:
                        added.remove(victim)
                        result = again
            victims = quota_victims + added
            if not victims:
                continue  # fits without preempting: not a plan (find already said no)
            cost = (
                sum(1 for v in victims if not v.borrowed),
                max((v.workload.priority for v in victims), default=-1),
                len(victims),
                node.index,
            )
            if best is None or cost < best.cost:
                best = Plan(victims, node, result[0], result[1], cost)
            options += 1
            if options >= OPTIONS:
                break
        return best

    @staticmethod
    def _could_fit(node: NodeState, need: Need) -> bool:
        if node.cpus + EPSILON < need.cpus or node.memory < need.memory:
            return False
        if need.fraction:
            return any(slot.kind in need.kinds for slot in node.shared)
        if need.gpus:
            pools = node.pools
            for kind in need.kinds:
                pool = pools.get(kind)
                if pool is not None and pool.total >= need.gpus:
                    return True
            return False
        return True

    @staticmethod
    def _fits(
        node: NodeState, need: Need, freed: Freed
    ) -> tuple[Kind | None, SharedSlot | None] | None:
        """(kind, slot) that would take the workload on `node` once the `freed` victims
        are gone, or None. Checks CPUs, memory, devices and the node's reservations."""
        if node.free_cpus + freed.cpus + EPSILON < need.cpus:
            return None
        if node.free_memory + freed.memory < need.memory:
            return None
        kind: Kind | None = None
        slot: SharedSlot | None = None
        if need.fraction:
            best = None
            for candidate in node.shared:
                if candidate.kind not in need.kinds:
                    continue
                back = freed.fractions.get(id(candidate), NOTHING_BACK)
                used_memory = candidate.memory_used - back.memory
                used_compute = candidate.compute_used - back.compute
                if used_memory + need.gpu_memory > candidate.memory:
                    continue
                if used_compute + need.compute > 100:
                    continue
                if not serves_after(candidate, need.identity, back):
                    continue
                key = (-max(used_memory / candidate.memory, used_compute / 100), candidate.index)
                if best is None or key < best[0]:
                    best = (key, candidate)
            if best is None:
                return None
            slot = best[1]
            kind = slot.kind
        elif need.gpus:
            for candidate in need.kinds:
                pool = node.pools.get(candidate)
                if pool is not None and pool.free + freed.gpus.get(candidate, 0) >= need.gpus:
                    kind = candidate
                    break
            else:
                return None
        for reservation, later in zip(freed.reservations, freed.later, strict=True):
            if need.end <= reservation.start < INF:
                continue
            if (
                need.gpus
                and not need.fraction
                and kind == reservation.kind
                and need.gpus > reservation.spare_gpus + later[0]
            ):
                return None
            if need.cpus > reservation.spare_cpus + later[1] + EPSILON:
                return None
            if need.memory > reservation.spare_memory + later[2]:
                return None
        return kind, slot

    # -- committing ----------------------------------------------------------------------

    def commit(self, plan: Plan, workload: Workload, need: Need, charge: float) -> None:
        """Count the victims out and the preemptor in, and hold on the node what the
        preemptor needs beyond what its victims give back, so that nothing started later
        in this cycle takes it."""
        ledger = self._ledger
        for victim in plan.victims:
            self.claimed.add(victim.workload.id)
            self._by_priority[victim.workload.priority] -= 1
            ledger.add(victim.workload, victim.charge, -1)
        ledger.add(workload, charge)
        node = plan.node
        freed = Freed(node.reservations)
        for victim in plan.victims:
            if victim.node is node:
                freed.add(victim)
        # The preemptor runs past every reservation's start: it uses their spare, less what
        # the victims give back that the reservation did not count on.
        kind = plan.kind if need.gpus and not need.fraction else None
        for reservation, later in zip(freed.reservations, freed.later, strict=True):
            if need.end <= reservation.start < INF:
                continue
            if kind is not None and reservation.kind == kind:
                reservation.spare_gpus += later[0] - need.gpus
            reservation.spare_cpus += later[1] - need.cpus
            reservation.spare_memory += later[2] - need.memory
        cluster = self._cluster
        if kind is not None:
            extra = need.gpus - freed.gpus.get(kind, 0)
            if extra > 0:
                cluster.take_devices(node, kind, extra)
        elif need.fraction and plan.slot is not None:
            back = freed.fractions.get(id(plan.slot), NOTHING_BACK)
            cluster.use_slot(
                plan.slot,
                max(0, need.gpu_memory - back.memory),
                max(0, need.compute - back.compute),
                need.identity,
            )
        node.free_cpus -= max(0.0, need.cpus - freed.cpus)
        node.free_memory -= max(0, need.memory - freed.memory)
        cluster.version += 1
