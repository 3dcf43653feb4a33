"""The cluster's free capacity during one cycle, indexed for best-fit placement.

Built once per cycle from the snapshot (nodes minus what running workloads hold) and updated
as workloads are admitted; capacity only shrinks within a cycle, which is what lets the
cycle remember failed request shapes (see cycle.py).

Placement rules, and why:
- Whole GPUs only on exclusive devices (`shared=False`), fractions only on shared ones.
- A gang of k GPUs goes to the node with the fewest free matching GPUs that still has k
  (best fit), inside the node to the topology group with the fewest free devices that still
  holds k, else within one socket, else across sockets. Small jobs thus fill nodes and
  groups that are already broken, and whole nodes and whole NVLink/PCIe groups stay free for
  the large jobs that need them. Among nodes, keeping a gang inside one group wins over a
  tighter count; a bounded number of candidate nodes is compared, so a placement costs
  O(log nodes) rather than a scan of the cluster.
- Fractions go to the most-used shared device that still fits (memory and compute sums at
  most the device's memory and 100 %): packing leaves other shared devices empty.
- A shared device takes fractions of one Unix identity at a time (`Workload.identity`): its
  MPS daemon serves one user, and a client of another blocks until every client of the
  current one has ended. A device holding fractions of A is offered to B only once none of
  A's are left (in a cycle, only preemption frees them, see preemption.py).
- CPU-only work prefers nodes without free GPUs, then the one with the fewest free CPUs.
- Drained (unschedulable) nodes and devices take nothing new.

With `places_work=True` (an engine such as Slurm places the work) the whole cluster is one
virtual node: admission then checks total capacity only.
"""

import math
from bisect import bisect_left, insort
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from suanli.scheduler.devices import EPSILON, Kind, model_matches
from suanli.scheduler.fairshare import Capacity
from suanli.scheduler.model import Device, Node, Workload

INF = math.inf
# How many feasible nodes a whole-GPU placement compares before taking the best of them.
CANDIDATES = 8
GroupKey = tuple[int, str]  # (socket, topology group)


class Pool:
    """The free exclusive devices of one kind on one node, by topology group."""

    __slots__ = ("free", "groups", "total")

    def __init__(self) -> None:
        self.total = 0
        self.free = 0
        self.groups: dict[GroupKey, list[str]] = {}

    def score(self, k: int) -> tuple[int, int]:
        """(tier, leftover) of the best choice of k devices here: tier 0 inside one group,
        1 inside one socket, 2 across sockets; leftover is what stays free in the group or
        socket used (smaller is a tighter fit)."""
        best = -1
        for ids in self.groups.values():
            n = len(ids)
            if n >= k and (best < 0 or n < best):
                best = n
        if best >= 0:
            return 0, best - k
        sockets: dict[int, int] = {}
        for (socket, _), ids in self.groups.items():
            sockets[socket] = sockets.get(socket, 0) + len(ids)
        best = min((n for n in sockets.values() if n >= k), default=-1)
        if best >= 0:
            return 1, best - k
        return 2, self.free - k

    def take(self, k: int) -> list[str]:
        """Take k devices as `score` describes; the caller has checked free >= k."""
        groups = self.groups
        chosen: list[tuple[GroupKey, int]] = []
        best_key, best_n = None, -1
        for key, ids in groups.items():
            n = len(ids)
            if n >= k and (best_n < 0 or n < best_n):
                best_key, best_n = key, n
        if best_key is not None:
            chosen.append((best_key, k))
        else:
            sockets: dict[int, int] = {}
            for (socket, _), ids in groups.items():
                sockets[socket] = sockets.get(socket, 0) + len(ids)
            fitting = [s for s, n in sockets.items() if n >= k]
            socket = min(fitting, key=lambda s: (sockets[s], s)) if fitting else None
            keys = [key for key in groups if socket is None or key[0] == socket]
            keys.sort(key=lambda key: -len(groups[key]))  # fewest groups; stable
            need = k
            for key in keys:
                n = min(need, len(groups[key]))
                chosen.append((key, n))
                need -= n
                if need == 0:
                    break
        taken: list[str] = []
        for key, n in chosen:
            ids = groups[key]
            taken.extend(ids[:n])
            del ids[:n]
            if not ids:
                del groups[key]
        self.free -= k
        return taken


class SharedSlot:
    """A shared device and the fractions granted on it, counted per Unix identity
    (`holders`): it serves the one identity that holds it, or anyone once nobody does."""

    __slots__ = (
        "compute_used",
        "holders",
        "id",
        "index",
        "kind",
        "memory",
        "memory_used",
        "node",
    )

    def __init__(self, device_id: str, node: "NodeState", kind: Kind, memory: int, index: int):
        self.id = device_id
        self.node = node
        self.kind = kind
        self.memory = memory
        self.index = index
        self.memory_used = 0
        self.compute_used = 0
        self.holders: dict[str, int] = {}

    def serves(self, identity: str) -> bool:
        """May a fraction of `identity` go here? Not while another identity holds one. A
        running snapshot may show two identities at once (work started before identities
        were set): such a device serves nobody new until all but one have ended."""
        holders = self.holders
        return not holders or (len(holders) == 1 and identity in holders)

    def hold(self, identity: str) -> None:
        self.holders[identity] = self.holders.get(identity, 0) + 1

    def fits(self, memory: int, compute: int) -> bool:
        return self.memory_used + memory <= self.memory and self.compute_used + compute <= 100

    def used(self) -> float:
        return max(self.memory_used / self.memory if self.memory else 1.0, self.compute_used / 100)


@dataclass(slots=True)
class Reservation:
    """Capacity on a node kept for a blocked workload (backfill.py).

    Work that ends by `start` may use anything; longer work (or work without a maximum
    duration, or any work when `start` is unknown) may use only the spare: what will be
    free at `start` beyond what the reserved workload needs."""

    workload: int
    priority: int
    start: float
    kind: Kind | None
    gpus: int
    cpus: float
    memory: int
    spare_gpus: int
    spare_cpus: float
    spare_memory: int

    def delayed_by(
        self, end: float, kind: Kind | None, gpus: int, cpus: float, memory: int
    ) -> bool:
        if end <= self.start < INF:
            return False
        if gpus and kind == self.kind and gpus > self.spare_gpus:
            return True
        return cpus > self.spare_cpus + EPSILON or memory > self.spare_memory

    def consume(self, end: float, kind: Kind | None, gpus: int, cpus: float, memory: int) -> None:
        if end <= self.start < INF:
            return
        if kind == self.kind:
            self.spare_gpus -= gpus
        self.spare_cpus -= cpus
        self.spare_memory -= memory


def blocking(
    reservations: list[Reservation],
    end: float,
    kind: Kind | None,
    gpus: int,
    cpus: float,
    memory: int,
) -> Reservation | None:
    for reservation in reservations:
        if reservation.delayed_by(end, kind, gpus, cpus, memory):
            return reservation
    return None


# A workload's hold on one node, for reservations: (end, sequence, cpus, memory, GPUs by kind).
Job = tuple[float, int, float, int, dict[Kind, int]]


class NodeState:
    __slots__ = (
        "cpus",
        "free_cpus",
        "free_gpus",
        "free_memory",
        "index",
        "jobs",
        "memory",
        "name",
        "pools",
        "reservations",
        "shared",
    )

    def __init__(self, name: str, index: int, cpus: float, memory: int) -> None:
        self.name = name
        self.index = index
        self.cpus = cpus
        self.memory = memory
        self.free_cpus = cpus
        self.free_memory = memory
        self.free_gpus = 0
        self.pools: dict[Kind, Pool] = {}
        self.shared: list[SharedSlot] = []
        self.reservations: list[Reservation] = []
        self.jobs: list[Job] = []


@dataclass(slots=True)
class Need:
    """What a pending workload needs on one node (already multiplied by nodes when the
    whole cluster is one virtual node)."""

    kinds: Sequence[Kind]
    gpus: int
    cpus: float
    memory: int
    end: float
    fraction: bool = False
    gpu_memory: int = 0
    compute: int = 0
    identity: str = ""  # a fraction's Unix identity (see SharedSlot)


@dataclass(slots=True)
class Fit:
    node: NodeState
    kind: Kind | None = None
    slot: SharedSlot | None = None


@dataclass(slots=True)
class Miss:
    """Nothing fits; `reserved_for` names the reservation that stopped it, if one did (the
    reason is otherwise worked out from the cluster's state, see cycle.capacity_reason)."""

    reserved_for: Reservation | None = None


def workload_end(workload: Workload, now: float) -> float:
    """When a workload will have ended at the latest: never without a maximum duration."""
    if workload.max_duration is None:
        return INF
    started = workload.started_at if workload.started_at is not None else now
    return started + workload.max_duration


class Footprint:
    """What one running workload holds on the indexed capacity, and until when. Preemption
    adds what it counts against its project's quota (`charge`) and whether that project
    borrows."""

    __slots__ = (
        "borrowed",
        "charge",
        "cpus",
        "end",
        "fractions",
        "gpus",
        "memory",
        "node",
        "workload",
    )

    def __init__(
        self,
        workload: Workload,
        node: NodeState | None,
        gpus: dict[Kind, int],
        fractions: list[tuple[SharedSlot, int, int]],
        cpus: float,
        memory: int,
        end: float,
    ) -> None:
        self.workload = workload
        self.node = node
        self.gpus = gpus
        self.fractions = fractions
        self.cpus = cpus
        self.memory = memory
        self.end = end
        self.charge = 0.0
        self.borrowed = False


class Cluster:
    """Free capacity of the schedulable nodes, with best-fit indexes.

    `buckets[kind][n]` holds the nodes with exactly n free devices of that kind and
    `counts[kind]` the sorted n that are present, so the best-fit node for k GPUs is found by
    bisection instead of a scan of the nodes. Shared devices are kept apart as partly used
    (searched for the most used that fits) and empty (taken in order): packing keeps the
    first set small."""

    def __init__(
        self, nodes: Sequence[Node], running: Sequence[Workload], *, now: float, places_work: bool
    ) -> None:
        self.now = now
        self.places_work = places_work
        self.version = 0
        self._sequence = 0
        self.states: list[NodeState] = []
        self.by_name: dict[str, NodeState] = {}
        self.memory_of: dict[str, int] = {}  # shared devices, drained too: fractions' shares
        self.usable: dict[str, Kind] = {}  # schedulable exclusive devices of schedulable nodes
        self.slot_of: dict[str, SharedSlot] = {}
        self.partial: dict[Kind, dict[SharedSlot, None]] = {}
        self.empty: dict[Kind, dict[SharedSlot, None]] = {}
        self.buckets: dict[Kind, dict[int, dict[NodeState, None]]] = {}
        self.counts: dict[Kind, list[int]] = {}
        self.max_total: dict[Kind, int] = {}  # schedulable, per node
        self.exclusive: dict[Kind, int] = {}  # exclusive devices per node at most, drained too
        self.exclusive_total: dict[Kind, int] = {}  # exclusive devices in all, drained too
        self.shared_memory: dict[Kind, int] = {}  # the smallest shared device, drained too
        self.identities: set[str] = set()  # identities holding fractions (only grows in a cycle)
        self.footprints: list[Footprint] = []
        self._jobs_built = False
        self._cache: dict[object, tuple[int, Any]] = {}
        self._build(nodes, running)

    # -- building ------------------------------------------------------------------------

    def _build(self, nodes: Sequence[Node], running: Sequence[Workload]) -> None:
        memory_of, usable, slot_of = self.memory_of, self.usable, self.slot_of
        exclusive, total, shared_memory = self.exclusive, self.exclusive_total, self.shared_memory
        virtual = None
        if self.places_work:
            virtual = NodeState("", 0, 0.0, 0)
            self.states.append(virtual)
        devices: list[tuple[NodeState, Device, Kind]] = []  # schedulable exclusive devices
        shared_index = 0
        gpus = cpus = 0.0
        memory = 0
        for node in nodes:
            state = None
            if node.schedulable:
                # What can be handed out: nodes (or the one virtual node) and their devices.
                cpus += node.cpus
                memory += node.memory_bytes
                if virtual is not None:
                    state = virtual
                    state.cpus += node.cpus
                    state.memory += node.memory_bytes
                    state.free_cpus += node.cpus
                    state.free_memory += node.memory_bytes
                else:
                    state = NodeState(node.name, len(self.states), node.cpus, node.memory_bytes)
                    self.states.append(state)
                self.by_name[node.name] = state
            # The inventory, drained parts included: what could ever be there.
            per_node: dict[Kind, int] = {}
            for device in node.devices:
                kind = (device.model, device.mig_profile)
                usable_now = state is not None and device.schedulable
                if device.shared:
                    memory_of[device.id] = device.memory_bytes
                    smallest = shared_memory.get(kind)
                    if smallest is None or device.memory_bytes < smallest:
                        shared_memory[kind] = device.memory_bytes
                    if usable_now:
                        gpus += 1
                        slot = SharedSlot(device.id, state, kind, device.memory_bytes, shared_index)
                        shared_index += 1
                        slot_of[device.id] = slot
                        state.shared.append(slot)
                else:
                    per_node[kind] = per_node.get(kind, 0) + 1
                    if usable_now:
                        gpus += 1
                        usable[device.id] = kind
                        devices.append((state, device, kind))
            for kind, count in per_node.items():
                if count > exclusive.get(kind, 0):
                    exclusive[kind] = count
                total[kind] = total.get(kind, 0) + count
        self.capacity = Capacity(gpus, cpus, memory)

        # What running work holds.
        busy: set[str] = set()
        unplaced: list[Workload] = []
        now = self.now
        for workload in running:
            placement = workload.placement
            request = workload.request
            end = INF
            if workload.max_duration is not None:
                started = workload.started_at if workload.started_at is not None else now
                end = started + workload.max_duration
            if placement is None:
                if virtual is not None:
                    unplaced.append(workload)
                else:
                    self.footprints.append(
                        Footprint(workload, None, {}, [], request.cpus, request.memory_bytes, end)
                    )
                continue
            state = self.by_name.get(placement.node)
            held: dict[Kind, int] = {}
            fractions: list[tuple[SharedSlot, int, int]] = []
            for share in placement.devices:
                if share.memory_bytes == 0 and share.compute_percent == 0:
                    kind = usable.get(share.device)
                    if kind is not None:
                        busy.add(share.device)
                        held[kind] = held.get(kind, 0) + 1
                else:
                    slot = slot_of.get(share.device)
                    if slot is not None:
                        slot.memory_used += share.memory_bytes
                        slot.compute_used += share.compute_percent
                        slot.hold(workload.identity)
                        self.identities.add(workload.identity)
                        fractions.append((slot, share.memory_bytes, share.compute_percent))
            if state is not None:
                state.free_cpus -= request.cpus
                state.free_memory -= request.memory_bytes
            footprint = Footprint(
                workload, state, held, fractions, request.cpus, request.memory_bytes, end
            )
            self.footprints.append(footprint)

        for state, device, kind in devices:
            pool = state.pools.get(kind)
            if pool is None:
                pool = state.pools[kind] = Pool()
            pool.total += 1
            if device.id in busy:
                continue
            pool.free += 1
            state.free_gpus += 1
            key = (0, "") if virtual is not None else (device.socket, device.group)
            groups = pool.groups.get(key)
            if groups is None:
                pool.groups[key] = [device.id]
            else:
                groups.append(device.id)
        for slot in slot_of.values():
            target = self.partial if slot.memory_used or slot.compute_used else self.empty
            target.setdefault(slot.kind, {})[slot] = None
        if virtual is not None:
            # Running work the engine placed without telling us where: take what it holds.
            for workload in unplaced:
                self.footprints.append(self._take_unplaced(virtual, workload))
        for state in self.states:
            for kind, pool in state.pools.items():
                self._move(kind, state, 0, pool.free)
                if pool.total > self.max_total.get(kind, 0):
                    self.max_total[kind] = pool.total

    def _take_unplaced(self, state: NodeState, workload: Workload) -> Footprint:
        request = workload.request
        nodes = max(request.nodes, 1)
        cpus, memory = request.cpus * nodes, request.memory_bytes * nodes
        state.free_cpus -= cpus
        state.free_memory -= memory
        gpus: dict[Kind, int] = {}
        fractions: list[tuple[SharedSlot, int, int]] = []
        if request.is_fraction:
            gpu_memory, compute = request.gpu_memory_bytes, request.gpu_compute_percent
            slot = self._unplaced_slot(request.gpu_model, gpu_memory, compute, workload.identity)
            if slot is not None:
                self.use_slot(slot, gpu_memory, compute, workload.identity)
                fractions.append((slot, gpu_memory, compute))
        else:
            need = request.gpus * nodes
            for kind, pool in state.pools.items():
                if need <= 0:
                    break
                if not self.matches(request.gpu_model, kind):
                    continue
                n = min(need, pool.free)
                if n:
                    pool.take(n)
                    state.free_gpus -= n
                    gpus[kind] = n
                    need -= n
        return Footprint(
            workload, state, gpus, fractions, cpus, memory, workload_end(workload, self.now)
        )

    def _unplaced_slot(
        self, model: str | None, gpu_memory: int, compute: int, identity: str
    ) -> SharedSlot | None:
        """Where to count a fraction the engine placed without saying where: the first device
        with room that serves its identity, else the first with room (it runs somewhere, and
        what it holds must count; that device then serves nobody new this cycle)."""

        def with_room() -> Iterator[SharedSlot]:
            for kind, slots in (*self.partial.items(), *self.empty.items()):
                if self.matches(model, kind):
                    yield from (s for s in slots if s.fits(gpu_memory, compute))

        slot = next((s for s in with_room() if s.serves(identity)), None)
        return slot if slot is not None else next(with_room(), None)

    @staticmethod
    def matches(model: str | None, kind: Kind) -> bool:
        return model_matches(model, kind[0], kind[1])

    def _move(self, kind: Kind, node: NodeState, old: int, new: int) -> None:
        buckets = self.buckets.setdefault(kind, {})
        counts = self.counts.setdefault(kind, [])
        if old > 0:
            bucket = buckets[old]
            del bucket[node]
            if not bucket:
                del buckets[old]
                counts.remove(old)
        if new > 0:
            bucket = buckets.get(new)
            if bucket is None:
                bucket = buckets[new] = {}
                insort(counts, new)
            bucket[node] = None

    def use_slot(self, slot: SharedSlot, memory: int, compute: int, identity: str) -> None:
        """Count one more fraction of `identity` on `slot` (memory and compute may be 0 when
        a preemptor reuses exactly what its victims there give back)."""
        if not (slot.memory_used or slot.compute_used):
            self.empty[slot.kind].pop(slot, None)
            self.partial.setdefault(slot.kind, {})[slot] = None
        slot.memory_used += memory
        slot.compute_used += compute
        slot.hold(identity)
        self.identities.add(identity)

    def jobs(self) -> None:
        """Fill each node's job list (running work and its end) the first time a
        reservation needs it; admissions keep it up to date afterwards."""
        if self._jobs_built:
            return
        self._jobs_built = True
        for footprint in self.footprints:
            if footprint.node is not None:
                self._sequence += 1
                footprint.node.jobs.append(
                    (
                        footprint.end,
                        self._sequence,
                        footprint.cpus,
                        footprint.memory,
                        footprint.gpus,
                    )
                )
        for state in self.states:
            state.jobs.sort()  # by end, then sequence (unique: the GPU dicts never compare)

    def _record(self, node: NodeState, end: float, cpus: float, memory: int, gpus: dict) -> None:
        if self._jobs_built:
            self._sequence += 1
            insort(node.jobs, (end, self._sequence, cpus, memory, gpus), key=lambda j: j[:2])

    # -- finding -------------------------------------------------------------------------

    def find_whole(
        self, kinds: Sequence[Kind], k: int, cpus: float, memory: int, end: float
    ) -> Fit | Miss:
        """The best node for a gang of k GPUs of one of `kinds` (see the module's rules)."""
        best: tuple[tuple[int, int, int, int], NodeState, Kind] | None = None
        examined = 0
        reserved_for = None
        for kind in kinds:
            counts = self.counts.get(kind)
            if not counts:
                continue
            first = bisect_left(counts, k)
            if first == len(counts):
                continue
            buckets = self.buckets[kind]
            for count in counts[first:]:
                for node in buckets[count]:
                    if node.free_cpus + EPSILON < cpus or node.free_memory < memory:
                        continue
                    if node.reservations:
                        holder = blocking(node.reservations, end, kind, k, cpus, memory)
                        if holder is not None:
                            reserved_for = reserved_for or holder
                            continue
                    tier, leftover = node.pools[kind].score(k)
                    key = (tier, count, leftover, node.index)
                    if best is None or key < best[0]:
                        best = (key, node, kind)
                    examined += 1
                    if examined >= CANDIDATES or (tier == 0 and leftover == 0):
                        break
                if best is not None and (best[0][0] == 0 or examined >= CANDIDATES):
                    break
        if best is not None:
            return Fit(best[1], best[2])
        return Miss(reserved_for)

    def find_fraction(
        self,
        kinds: Sequence[Kind],
        gpu_memory: int,
        compute: int,
        cpus: float,
        memory: int,
        end: float,
        identity: str | None,
    ) -> Fit | Miss:
        """The most-used shared device of one of `kinds` with room for the fraction, among
        those that serve `identity` (None: whoever holds them, to explain a wait)."""
        best: tuple[tuple[float, int], SharedSlot] | None = None
        reserved_for = None
        for pass_ in (self.partial, self.empty):
            for kind in kinds:
                for slot in pass_.get(kind, ()):
                    if slot.memory_used + gpu_memory > slot.memory:
                        continue
                    if slot.compute_used + compute > 100:
                        continue
                    if identity is not None and not slot.serves(identity):
                        continue
                    node = slot.node
                    if node.free_cpus + EPSILON < cpus or node.free_memory < memory:
                        continue
                    if node.reservations:
                        holder = blocking(node.reservations, end, None, 0, cpus, memory)
                        if holder is not None:
                            reserved_for = reserved_for or holder
                            continue
                    key = (-slot.used(), slot.index)
                    if best is None or key < best[0]:
                        best = (key, slot)
                    if pass_ is self.empty:
                        break  # empty devices are in order: the first that fits is the one
            if best is not None:
                slot = best[1]
                return Fit(slot.node, slot.kind, slot)
        return Miss(reserved_for)

    def find(self, need: Need) -> Fit | Miss:
        """Room for `need`: a shared device for a fraction, whole devices, or CPUs only."""
        if need.fraction:
            return self.find_fraction(
                need.kinds, need.gpu_memory, need.compute, need.cpus, need.memory, need.end,
                need.identity,
            )  # fmt: skip
        if need.gpus:
            return self.find_whole(need.kinds, need.gpus, need.cpus, need.memory, need.end)
        return self.find_cpus(need.cpus, need.memory, need.end)

    def find_cpus(self, cpus: float, memory: int, end: float) -> Fit | Miss:
        best: tuple[tuple[bool, float, int], NodeState] | None = None
        reserved_for = None
        for node in self.states:
            if node.free_cpus + EPSILON < cpus or node.free_memory < memory:
                continue
            if node.reservations:
                holder = blocking(node.reservations, end, None, 0, cpus, memory)
                if holder is not None:
                    reserved_for = reserved_for or holder
                    continue
            key = (node.free_gpus > 0, node.free_cpus, node.index)
            if best is None or key < best[0]:
                best = (key, node)
        if best is not None:
            return Fit(best[1])
        return Miss(reserved_for)

    # -- committing ----------------------------------------------------------------------

    def take_whole(
        self, node: NodeState, kind: Kind, k: int, cpus: float, memory: int, end: float
    ) -> list[str]:
        taken = self.take_devices(node, kind, k)
        self._take_node(node, end, kind, k, cpus, memory)
        return taken

    def take_devices(self, node: NodeState, kind: Kind, k: int) -> list[str]:
        pool = node.pools[kind]
        old = pool.free
        taken = pool.take(k)
        self._move(kind, node, old, pool.free)
        node.free_gpus -= k
        self.version += 1
        return taken

    def take_fraction(
        self,
        node: NodeState,
        slot: SharedSlot,
        gpu_memory: int,
        compute: int,
        cpus: float,
        memory: int,
        end: float,
        identity: str,
    ) -> None:
        self.use_slot(slot, gpu_memory, compute, identity)
        self._take_node(node, end, None, 0, cpus, memory)

    def take_cpus(self, node: NodeState, cpus: float, memory: int, end: float) -> None:
        self._take_node(node, end, None, 0, cpus, memory)

    def _take_node(
        self, node: NodeState, end: float, kind: Kind | None, k: int, cpus: float, memory: int
    ) -> None:
        node.free_cpus -= cpus
        node.free_memory -= memory
        for reservation in node.reservations:
            reservation.consume(end, kind, k, cpus, memory)
        self._record(node, end, cpus, memory, {kind: k} if kind is not None and k else {})
        self.version += 1

    # -- facts for pending reasons (cached until the next admission) ---------------------

    def _cached(self, key: object, compute: Callable[[], Any]) -> Any:
        hit = self._cache.get(key)
        if hit is not None and hit[0] == self.version:
            return hit[1]
        value = compute()
        self._cache[key] = (self.version, value)
        return value

    def max_free_gpus(self, kinds: Sequence[Kind]) -> int:
        return max((self.counts[k][-1] for k in kinds if self.counts.get(k)), default=0)

    def max_total_gpus(self, kinds: Sequence[Kind]) -> int:
        """The most schedulable devices of `kinds` on one node (busy or not)."""
        return max((self.max_total.get(k, 0) for k in kinds), default=0)

    def has_shared(self, kinds: Sequence[Kind]) -> bool:
        return any(self.partial.get(k) or self.empty.get(k) for k in kinds)

    def max_free_node(self) -> tuple[float, int]:
        """The most free CPUs and the most free memory on any one node (maybe two nodes)."""
        return self._cached(
            "node",
            lambda: (
                max((s.free_cpus for s in self.states), default=0.0),
                max((s.free_memory for s in self.states), default=0),
            ),
        )

    def held_by_others(self, identity: str) -> bool:
        """Does any identity other than `identity` hold a fraction somewhere?"""
        identities = self.identities
        return len(identities) > 1 or (bool(identities) and identity not in identities)

    def max_fraction_room(self, kinds: Sequence[Kind]) -> tuple[int, int]:
        """The most free memory and the most free compute on a shared device of `kinds`,
        whoever holds it (the identity rule is explained apart, see cycle.capacity_reason)."""

        def compute() -> tuple[int, int]:
            slots = [s for k in kinds for s in (*self.partial.get(k, ()), *self.empty.get(k, ()))]
            return (
                max((s.memory - s.memory_used for s in slots), default=0),
                max((100 - s.compute_used for s in slots), default=0),
            )

        return self._cached(("fraction", tuple(kinds)), compute)
