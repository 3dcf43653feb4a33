"""One scheduling cycle: from a Snapshot to Decisions.

The pending workloads are taken in fair-share order (fairshare.FairQueue). For each:
1. quota (quota.Ledger): the first limit it would break, if any;
2. placement (placement.Cluster): best fit on one node, or on the whole cluster as one
   virtual node when `places_work=True`; backfill reservations made earlier in the cycle are
   respected (backfill.py); a fraction only on a shared GPU that no other Unix identity
   holds (one MPS user per GPU, see placement.py);
3. if it is blocked and entitled, a preemption plan (preemption.py);
4. otherwise a PendingReason, and for the first blocked gangs a backfill reservation.

Speed: capacity only shrinks during a cycle, so a request shape that found no room cannot
find it later in the same cycle. Failed shapes are remembered (per GPU model and kind of
request) and a request at least as large as one of them is answered from cached facts
without searching again (for a fraction, of the same Unix identity: a shared GPU another
identity holds may serve this one); once the cluster is full, the remaining queue costs a
quota check and a lookup each.
"""

import gc
from typing import Any

from suanli.scheduler.backfill import RESERVATION_DEPTH, reserve
from suanli.scheduler.devices import Kind, fraction_share, gib, gpu_charge, number
from suanli.scheduler.devices import matching_kinds as _matching
from suanli.scheduler.fairshare import FairQueue, dominant_share
from suanli.scheduler.model import (
    Admission,
    Decisions,
    DeviceShare,
    PendingReason,
    Placement,
    Preemption,
    Snapshot,
    Workload,
)
from suanli.scheduler.placement import INF, Cluster, Fit, Miss, Need
from suanli.scheduler.preemption import Preemptor
from suanli.scheduler.quota import Ledger
from suanli.scheduler.reasons import (
    BACKFILL_RESERVED,
    CAPACITY_CPUS_MEMORY,
    CAPACITY_FRACTION,
    CAPACITY_GPU_MODEL,
    CAPACITY_GPUS,
    CAPACITY_NO_GPUS,
    GPU_SHARED_OTHER_USER,
    MULTI_NODE,
    NODE_DRAINED,
    PREEMPTING,
    WAITING_FOR_HIGHER_PRIORITY,
)

# Failed request shapes remembered per key; beyond that, new failures are searched anew.
_MEMO_SIZE = 32


def schedule(snapshot: Snapshot, *, places_work: bool = False) -> Decisions:
    """One full scheduling cycle. Pure and deterministic: the same snapshot gives the same
    decisions (no clock, no I/O, no randomness; ties are broken by ids and names).

    With `places_work=True` (an engine such as Slurm places the work) workloads are admitted on
    quotas and the cluster's total capacity only, and admissions carry no placement.

    The garbage collector is paused during the cycle (and restored as it was): a cycle
    allocates tens of thousands of small objects and no reference cycles, and a full
    collection triggered in its middle would cost ≈ 5 ms of a 100 ms cycle over a large
    snapshot, for nothing to collect. The decisions do not depend on it."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _Cycle(snapshot, places_work).run()
    finally:
        if collecting:
            gc.enable()


class _Cycle:
    """The state of one cycle: free capacity, quota usage, what was decided so far."""

    def __init__(self, snapshot: Snapshot, places_work: bool) -> None:
        self.snapshot = snapshot
        self.place = not places_work  # we choose nodes and devices
        self.now = snapshot.now
        self.cluster = cluster = Cluster(
            snapshot.nodes, snapshot.running, now=snapshot.now, places_work=places_work
        )
        self.capacity = cluster.capacity
        self.smallest_shared = min(cluster.shared_memory.values(), default=None)
        self.ledger = Ledger(snapshot.quotas, self.capacity.gpus)
        charges: dict[int, float] = {}
        memory_of = cluster.memory_of
        add = self.ledger.add
        for workload in snapshot.running:
            request = workload.request
            if request.gpus:
                charge = float(request.gpus * max(request.nodes, 1))
            elif not request.is_fraction:
                charge = 0.0
            else:
                device_memory = self.smallest_shared
                if workload.placement and workload.placement.devices:
                    device = workload.placement.devices[0].device
                    device_memory = memory_of.get(device, device_memory)
                charge = gpu_charge(request, device_memory)
            charges[workload.id] = charge
            add(workload, charge)
        self.preemptor = Preemptor(cluster, self.ledger, snapshot.running, charges)
        self.usage = snapshot.usage
        self.admit: list[Admission] = []
        self.preempt: list[Preemption] = []
        self.pending: dict[int, PendingReason] = {}
        self.positions: dict[str, int] = {}
        self.failed: dict[tuple, list[tuple[int, float, int, int, int]]] = {}
        self.reservations_left = RESERVATION_DEPTH
        self._kinds: dict[tuple[str | None, bool], tuple[Kind, ...]] = {}
        self._shares: dict[str | None, float] = {}
        self._reasons: dict[tuple, tuple[int, str, dict[str, Any]]] = {}

    def kinds(self, model: str | None, shared: bool) -> tuple[Kind, ...]:
        """The kinds of device (drained ones too) that a request for `model` may use."""
        key = (model, shared)
        kinds = self._kinds.get(key)
        if kinds is None:
            cluster = self.cluster
            universe = cluster.shared_memory if shared else cluster.exclusive
            kinds = tuple(sorted(_matching(model, universe), key=lambda k: (k[0], k[1] or "")))
            self._kinds[key] = kinds
        return kinds

    def share(self, project: str) -> float:
        """Fair-share key of a project: its dominant share now plus its past usage (cached
        until the ledger changes)."""
        shares = self._shares
        if shares.get(None) != self.ledger.changes:
            shares.clear()
            shares[None] = self.ledger.changes
        value = shares.get(project)
        if value is None:
            tally = self.ledger.tallies.get(project)
            value = self.usage.get(project, 0.0)
            if tally is not None:
                value += dominant_share(tally.gpus, tally.cpus, tally.memory, self.capacity)
            shares[project] = value
        return value

    # -- the cycle -----------------------------------------------------------------------

    def run(self) -> Decisions:
        queue = FairQueue(self.snapshot.pending, self.share)
        workload = queue.pop()
        while workload is not None:
            self.process(workload)
            workload = queue.next(workload.project)
        return Decisions(tuple(self.admit), tuple(self.preempt), self.pending)

    def process(self, workload: Workload) -> None:
        request = workload.request
        nodes = request.nodes
        if nodes > 1 and self.place:
            self.wait(workload, MULTI_NODE, {"nodes": nodes})
            return
        if nodes < 1 or self.place:
            nodes = 1
        end = INF if workload.max_duration is None else self.now + workload.max_duration
        found: Fit | Miss | None = None
        if request.gpus == 0 and (request.gpu_memory_bytes > 0 or request.gpu_compute_percent > 0):
            kinds = self.kinds(request.gpu_model, True)
            need = Need(
                kinds,
                0,
                request.cpus * nodes,
                request.memory_bytes * nodes,
                end,
                True,
                request.gpu_memory_bytes,
                request.gpu_compute_percent,
                workload.identity,
            )
            # Placed here: its share of the device it lands on. Left to an engine
            # (`places_work`), the device found on the virtual node binds nobody: the engine
            # may put it on any shared device of these kinds, so it counts as its share of
            # the smallest (the estimate errs on the high side, see devices.gpu_charge).
            if self.place:
                found = self.find(need)
            if isinstance(found, Fit) and found.slot is not None:
                charge = fraction_share(
                    request.gpu_memory_bytes, request.gpu_compute_percent, found.slot.memory
                )
            else:
                shared = self.cluster.shared_memory
                smallest = min((shared[k] for k in kinds), default=None)
                charge = gpu_charge(request, smallest)
        else:
            kinds = self.kinds(request.gpu_model, False) if request.gpus else ()
            gpus = request.gpus * nodes
            need = Need(kinds, gpus, request.cpus * nodes, request.memory_bytes * nodes, end)
            charge = float(request.gpus * max(request.nodes, 1))

        block = self.ledger.check(workload, charge)
        if block is None:
            if found is None:
                found = self.find(need)
            if found.__class__ is Fit:
                self.take(workload, need, found, charge)
                return
        preemptor = self.preemptor
        if preemptor.possible(workload, charge):
            plan = preemptor.plan(workload, need, charge, block)
            if plan is not None:
                preemptor.commit(plan, workload, need, charge)
                for victim in plan.victims:
                    self.preempt.append(Preemption(victim.workload.id, workload.id))
                self.wait(workload, PREEMPTING, {"victims": len(plan.victims)})
                return
        if block is not None:
            self.wait(workload, *block)
            return
        if found is _REMEMBERED:
            code, params = self.remembered_reason(workload, need)
        else:
            code, params = self.capacity_reason(workload, need, found)
        if self.reservations_left > 0 and need.gpus > 0 and code in _RESERVING:
            self.reservations_left -= 1
            reservation = reserve(self.cluster, workload, need)
            if reservation is not None and reservation.start < INF:
                params = {**params, "expected_start": reservation.start}
        self.wait(workload, code, params)

    def find(self, need: Need) -> Fit | Miss:
        """Search for room, unless a request at most as large already failed this cycle."""
        # kinds tuples are cached; identity is "" but for fractions
        key = (id(need.kinds), need.fraction, need.gpus > 0, need.identity)
        failed = self.failed.get(key)
        if failed:
            gpus, cpus, memory = need.gpus, need.cpus, need.memory
            gpu_memory, compute = need.gpu_memory, need.compute
            for other in failed:
                if (
                    other[0] <= gpus
                    and other[1] <= cpus
                    and other[2] <= memory
                    and other[3] <= gpu_memory
                    and other[4] <= compute
                ):
                    return _REMEMBERED
        found = self.cluster.find(need)
        if isinstance(found, Miss) and found.reserved_for is None:
            if failed is None:
                failed = self.failed[key] = []
            if len(failed) < _MEMO_SIZE:
                failed.append((need.gpus, need.cpus, need.memory, need.gpu_memory, need.compute))
        return found

    def take(self, workload: Workload, need: Need, fit: Fit, charge: float) -> None:
        cluster = self.cluster
        devices: tuple[DeviceShare, ...] = ()
        if fit.slot is not None:
            cluster.take_fraction(
                fit.node,
                fit.slot,
                need.gpu_memory,
                need.compute,
                need.cpus,
                need.memory,
                need.end,
                need.identity,
            )
            devices = (DeviceShare(fit.slot.id, need.gpu_memory, need.compute),)
        elif fit.kind is not None:
            taken = cluster.take_whole(
                fit.node, fit.kind, need.gpus, need.cpus, need.memory, need.end
            )
            devices = tuple(DeviceShare(device) for device in taken)
        else:
            cluster.take_cpus(fit.node, need.cpus, need.memory, need.end)
        placement = Placement(fit.node.name, devices) if self.place else None
        self.admit.append(Admission(workload.id, placement, charge))
        self.ledger.add(workload, charge)

    def wait(self, workload: Workload, code: str, params: dict[str, Any]) -> None:
        position = self.positions.get(workload.project, 0) + 1
        self.positions[workload.project] = position
        self.pending[workload.id] = PendingReason(code, params, position)

    def remembered_reason(self, workload: Workload, need: Need) -> tuple[str, dict[str, Any]]:
        """capacity_reason for a shape that already failed: the same answer while the
        cluster has not changed."""
        key = (
            workload.request.gpu_model,
            need.gpus,
            need.cpus,
            need.memory,
            need.gpu_memory,
            need.compute,
            need.identity,
        )
        hit = self._reasons.get(key)
        if hit is not None and hit[0] == self.cluster.version:
            return hit[1], hit[2]
        code, params = self.capacity_reason(workload, need, _REMEMBERED)
        self._reasons[key] = (self.cluster.version, code, params)
        return code, params

    def capacity_reason(
        self, workload: Workload, need: Need, found: Fit | Miss | None
    ) -> tuple[str, dict[str, Any]]:
        """Which capacity blocks the workload, with the figures a person needs."""
        cluster = self.cluster
        model = workload.request.gpu_model or ""
        if isinstance(found, Miss) and found.reserved_for is not None:
            holder = found.reserved_for
            params: dict[str, Any] = {"job": holder.workload}
            if holder.start < INF:
                params["expected_start"] = holder.start
            if holder.priority > workload.priority:
                return WAITING_FOR_HIGHER_PRIORITY, params
            return BACKFILL_RESERVED, params
        if need.fraction:
            if not need.kinds:
                return (CAPACITY_GPU_MODEL, {"model": model}) if model else (CAPACITY_NO_GPUS, {})
            if not cluster.has_shared(need.kinds):
                return NODE_DRAINED, {"model": model, "requested": 0}
            free_memory, free_compute = cluster.max_fraction_room(need.kinds)
            if free_memory < need.gpu_memory or free_compute < need.compute:
                return CAPACITY_FRACTION, {
                    "memory_gib": gib(need.gpu_memory),
                    "compute": need.compute,
                    "free_memory_gib": gib(free_memory),
                    "free_compute": free_compute,
                }
            if self.held_by_other_user(need):
                return GPU_SHARED_OTHER_USER, {
                    "memory_gib": gib(need.gpu_memory),
                    "compute": need.compute,
                }
        elif need.gpus:
            if not need.kinds:
                return (CAPACITY_GPU_MODEL, {"model": model}) if model else (CAPACITY_NO_GPUS, {})
            largest = cluster.max_total_gpus(need.kinds)
            if largest < need.gpus:
                most = cluster.exclusive if self.place else cluster.exclusive_total
                anywhere = max(most[k] for k in need.kinds)
                if anywhere >= need.gpus or largest == 0:
                    return NODE_DRAINED, {"model": model, "requested": need.gpus}
            free = cluster.max_free_gpus(need.kinds)
            if free < need.gpus:
                return CAPACITY_GPUS, {
                    "requested": need.gpus,
                    "free": free,
                    "largest": largest,
                    "model": model,
                }
        free_cpus, free_memory = cluster.max_free_node()
        return CAPACITY_CPUS_MEMORY, {
            "cpus": number(need.cpus),
            "memory_gib": gib(need.memory),
            "free_cpus": number(max(0.0, round(free_cpus, 2))),
            "free_memory_gib": gib(max(0, free_memory)),
        }

    def held_by_other_user(self, need: Need) -> bool:
        """Would the fraction fit now if other Unix identities did not hold the shared GPUs
        with room (MPS serves one user per GPU)?"""
        cluster = self.cluster
        if not cluster.held_by_others(need.identity):
            return False
        anyone = cluster.find_fraction(
            need.kinds, need.gpu_memory, need.compute, need.cpus, need.memory, need.end, None
        )
        return isinstance(anyone, Fit)


_REMEMBERED = Miss()
_RESERVING = (CAPACITY_GPUS, CAPACITY_CPUS_MEMORY, BACKFILL_RESERVED)
