"""Backfill: keep capacity for a blocked gang so that smaller work started after it cannot
delay it (EASY backfill).

For the first blocked whole-GPU workload of a cycle (in scheduling order) we compute when and
where it could start at the earliest: on each node, running work is assumed to end at
`started_at + max_duration` (never, without a maximum duration). The node where it could
start first gets a Reservation (see placement.py): work that ends by then may still use its
capacity, longer work only what is spare at that time. When no start can be computed (work
without a maximum duration is in the way), the node closest to fitting is reserved with an
unknown start, so nothing long may take what the blocked workload needs there.

RESERVATION_DEPTH allows more reservations per cycle (each later one assumes the earlier
ones hold their capacity from now on), but on the trace replay (bench/README.md) every
extra reservation made waits longer for everyone, large jobs included: one, as in EASY.

Fractions and CPU-only work get no reservation: they are small, and fill in as soon as
anything frees up.
"""

from suanli.scheduler.devices import EPSILON
from suanli.scheduler.model import Workload
from suanli.scheduler.placement import INF, Cluster, Need, Reservation

RESERVATION_DEPTH = 1


def reserve(cluster: Cluster, workload: Workload, need: Need) -> Reservation | None:
    """Reserve capacity for `workload` on the node where it could start first; None when
    no node can ever hold it."""
    cluster.jobs()
    now = cluster.now
    best = None
    for node in cluster.states:
        if node.cpus + EPSILON < need.cpus or node.memory < need.memory:
            continue
        for kind in need.kinds:
            pool = node.pools.get(kind)
            if pool is None or pool.total < need.gpus:
                continue
            free = pool.free
            cpus = node.free_cpus
            memory = node.free_memory
            for held in node.reservations:
                if held.kind == kind:
                    free -= held.gpus
                cpus -= held.cpus
                memory -= held.memory
            start = INF
            if free >= need.gpus and cpus + EPSILON >= need.cpus and memory >= need.memory:
                start = now
            else:
                for end, _, job_cpus, job_memory, job_gpus in node.jobs:
                    if end == INF:
                        break
                    free += job_gpus.get(kind, 0)
                    cpus += job_cpus
                    memory += job_memory
                    if free >= need.gpus and cpus + EPSILON >= need.cpus and memory >= need.memory:
                        start = max(end, now)
                        break
            key = (start, -free, node.index)
            if best is None or key < best[0]:
                best = (key, node, kind, free, cpus, memory)
    if best is None:
        return None
    (start, _, _), node, kind, free, cpus, memory = best
    reservation = Reservation(
        workload=workload.id,
        priority=workload.priority,
        start=start,
        kind=kind,
        gpus=need.gpus,
        cpus=need.cpus,
        memory=need.memory,
        spare_gpus=max(0, free - need.gpus),
        spare_cpus=max(0.0, cpus - need.cpus),
        spare_memory=max(0, memory - need.memory),
    )
    node.reservations.append(reservation)
    cluster.version += 1
    return reservation
