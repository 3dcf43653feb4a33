"""Fair share between projects: dominant-resource share now plus decayed past usage, and the
queue that hands out pending workloads in that order.

Past usage is kept as an exponentially weighted average of a project's dominant share (a
number between 0 and 1, "how much of the cluster it has been using lately"), so it can be
added to the current share without knowing the half-life inside the scheduler. The caller
(controller or trace replay) ages it between cycles with `decayed_usage`.
"""

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from suanli.scheduler.devices import gpu_charge
from suanli.scheduler.model import Node, Workload


@dataclass(frozen=True)
class Capacity:
    """What the cluster can hand out: schedulable GPUs (a MIG instance or a shared GPU counts
    as one), CPUs and memory of schedulable nodes."""

    gpus: float
    cpus: float
    memory_bytes: int

    @classmethod
    def of(cls, nodes: Sequence[Node]) -> "Capacity":
        gpus = cpus = 0.0
        memory = 0
        for node in nodes:
            if not node.schedulable:
                continue
            cpus += node.cpus
            memory += node.memory_bytes
            gpus += sum(1 for device in node.devices if device.schedulable)
        return cls(gpus, cpus, memory)


def dominant_share(gpus: float, cpus: float, memory: float, capacity: Capacity) -> float:
    """The largest of a project's shares of the cluster's GPUs, CPUs and memory (DRF): a
    project that holds half the GPUs is "half the cluster" even if it uses no CPU."""
    share = 0.0
    if capacity.gpus > 0:
        share = gpus / capacity.gpus
    if capacity.cpus > 0:
        share = max(share, cpus / capacity.cpus)
    if capacity.memory_bytes > 0:
        share = max(share, memory / capacity.memory_bytes)
    return share


def decayed_usage(
    previous: Mapping[str, float],
    running: Sequence[Workload],
    *,
    elapsed: float,
    half_life: float,
    nodes: Sequence[Node],
) -> dict[str, float]:
    """Age and accumulate per-project usage over `elapsed` seconds during which `running`
    ran: usage' = usage · d + share · (1 − d), d = 2^(−elapsed / half_life).

    The result is what `Snapshot.usage` expects. A project that used a quarter of the
    cluster for a long time converges to 0.25; one that stopped decays by half every
    half-life. Entries below 1e-6 are dropped so idle projects leave the map.
    """
    capacity = Capacity.of(nodes)
    memory_of = {device.id: device.memory_bytes for node in nodes for device in node.devices}
    smallest = min((d.memory_bytes for n in nodes for d in n.devices if d.shared), default=None)
    totals: dict[str, list[float]] = {}
    for workload in running:
        request = workload.request
        device_memory = smallest
        if request.is_fraction and workload.placement and workload.placement.devices:
            device_memory = memory_of.get(workload.placement.devices[0].device, smallest)
        nodes_count = max(request.nodes, 1)
        total = totals.setdefault(workload.project, [0.0, 0.0, 0.0])
        total[0] += gpu_charge(request, device_memory)
        total[1] += request.cpus * nodes_count
        total[2] += request.memory_bytes * nodes_count
    decay = 0.5 ** (elapsed / half_life) if half_life > 0 else 0.0
    result: dict[str, float] = {}
    for project in sorted(set(previous) | set(totals)):
        share = dominant_share(*totals.get(project, (0.0, 0.0, 0.0)), capacity)
        value = previous.get(project, 0.0) * decay + share * (1.0 - decay)
        if value >= 1e-6 and math.isfinite(value):
            result[project] = value
    return result


class FairQueue:
    """Pending workloads in scheduling order: priority first, then the project with the
    smallest fair-share key, then submission time, then id.

    Each project keeps its own queue; a heap holds one entry per project (its head). After a
    workload is handled, `next` puts its project back with its share recomputed, so a
    project that just got GPUs falls behind the others within the same cycle.
    """

    def __init__(self, pending: Sequence[Workload], share: Callable[[str], float]) -> None:
        queues: dict[str, list[tuple[int, float, int, int, Workload]]] = {}
        for index, workload in enumerate(pending):
            entry = (-workload.priority, workload.submitted_at, workload.id, index, workload)
            queue = queues.get(workload.project)
            if queue is None:
                queues[workload.project] = [entry]
            else:
                queue.append(entry)
        self._share = share
        self._queues: dict[str, list[tuple[int, float, int, int, Workload]]] = {}
        self._next: dict[str, int] = {}
        self._heap: list[tuple[int, float, float, int, str]] = []
        for project in sorted(queues):
            queue = queues[project]
            queue.sort()  # the input index breaks ties: two workloads are never compared
            self._queues[project] = queue
            self._next[project] = 0
            head = queue[0]
            heapq.heappush(self._heap, (head[0], share(project), head[1], head[2], project))

    def pop(self) -> Workload | None:
        """The first workload."""
        if not self._heap:
            return None
        return self._take(heapq.heappop(self._heap)[4])

    def next(self, project: str) -> Workload | None:
        """The next workload, once one of `project` has been handled (its project's share may
        have changed, so it goes back into the heap with the new share)."""
        index = self._next[project]
        queue = self._queues[project]
        heap = self._heap
        if index < len(queue):
            head = queue[index]
            entry = (head[0], self._share(project), head[1], head[2], project)
            if not heap or entry < heap[0]:
                self._next[project] = index + 1  # still first: skip the heap
                return head[4]
            project = heapq.heappushpop(heap, entry)[4]
        elif heap:
            project = heapq.heappop(heap)[4]
        else:
            return None
        return self._take(project)

    def _take(self, project: str) -> Workload:
        index = self._next[project]
        self._next[project] = index + 1
        return self._queues[project][index][4]
