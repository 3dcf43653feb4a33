"""Scheduler cycle time on synthetic clusters (issue 3, benchmark 1).

Builds a cluster of N nodes × 8 GPUs (two NVLink groups of four per node, two sockets; one
node in twenty has shared GPUs for fractions; a quarter of the nodes hold another GPU
model), R running jobs already placed on it and P pending jobs, then times one full
`schedule()` call (placement on, the default) several times and prints the median. The
snapshot is built outside the timing: that is the controller's work, not the scheduler's.

    python bench/scheduler_cycle.py                      # the curve (nodes × pending)
    python bench/scheduler_cycle.py --nodes 1000 --pending 10000 --running 5000 --runs 9

Jobs: 1/2/4/8 GPUs (50/20/15/10 %) and 5 % GPU fractions; 10 % name a GPU model; priorities
high/normal/low 15/70/15 %; two thirds have a maximum duration. 20 projects with guaranteed
GPUs (together 80 % of the cluster), half of them capped at twice their guarantee; 5 users
each, some with a per-user cap.
"""

import argparse
import gc
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from suanli.scheduler import schedule
from suanli.scheduler.model import (
    Device,
    DeviceShare,
    Node,
    Placement,
    Priority,
    Quota,
    Request,
    Snapshot,
    Workload,
)

GIB = 2**30
MODELS = ("NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3")
PROJECTS = 20


def make_nodes(count: int, rng: random.Random) -> tuple[Node, ...]:
    nodes = []
    for n in range(count):
        name = f"node-{n:04d}"
        model = MODELS[1] if n % 4 == 3 else MODELS[0]
        shared = n % 20 == 19
        devices = tuple(
            Device(
                id=f"{name}-gpu{i}",
                node=name,
                model=model,
                memory_bytes=80 * GIB,
                group=f"nvl{i // 4}",
                socket=i // 4,
                shared=shared,
                schedulable=not (n % 97 == 96 and i == 0),  # a few drained GPUs
            )
            for i in range(8)
        )
        nodes.append(Node(name, cpus=128, memory_bytes=1024 * GIB, devices=devices))
    return tuple(nodes)


def make_quotas(total_gpus: int) -> dict[str, Quota]:
    guaranteed = max(1, int(total_gpus * 0.8 / PROJECTS))
    return {
        f"proj-{p:02d}": Quota(
            f"proj-{p:02d}",
            guaranteed_gpus=guaranteed,
            max_gpus=2 * guaranteed if p % 2 else None,
            max_gpus_per_user=guaranteed if p % 5 == 0 else None,
        )
        for p in range(PROJECTS)
    }


def random_request(rng: random.Random) -> Request:
    draw = rng.random()
    cpus_per_gpu, memory_per_gpu = 8, 64 * GIB
    if draw < 0.05:
        return Request(
            gpu_memory_bytes=rng.choice((10, 20, 40)) * GIB,
            gpu_compute_percent=rng.choice((0, 25, 50)),
            cpus=4,
            memory_bytes=32 * GIB,
        )
    gpus = 1 if draw < 0.55 else 2 if draw < 0.75 else 4 if draw < 0.90 else 8
    model = None
    if rng.random() < 0.10:
        model = rng.choice(("A100", "H100"))
    return Request(
        gpus=gpus, gpu_model=model, cpus=gpus * cpus_per_gpu, memory_bytes=gpus * memory_per_gpu
    )


def random_priority(rng: random.Random) -> Priority:
    draw = rng.random()
    return Priority.high if draw < 0.15 else Priority.low if draw < 0.30 else Priority.normal


def make_running(nodes: tuple[Node, ...], count: int, rng: random.Random) -> list[Workload]:
    """Place `count` jobs on random nodes with room (simple first fit inside the node)."""
    free = {n.name: [d for d in n.devices if d.schedulable and not d.shared] for n in nodes}
    shared = {n.name: [d for d in n.devices if d.shared] for n in nodes}
    fraction_use: dict[str, int] = {}
    cpus = {n.name: n.cpus for n in nodes}
    running: list[Workload] = []
    tries = 0
    while len(running) < count and tries < count * 20:
        tries += 1
        request = random_request(rng)
        request = Request(
            gpus=request.gpus,
            gpu_memory_bytes=request.gpu_memory_bytes,
            gpu_compute_percent=request.gpu_compute_percent,
            cpus=request.cpus,
            memory_bytes=request.memory_bytes,
        )
        node = rng.choice(nodes)
        if cpus[node.name] < request.cpus:
            continue
        if request.is_fraction:
            options = [
                d
                for d in shared[node.name]
                if fraction_use.get(d.id, 0) + request.gpu_memory_bytes <= d.memory_bytes
            ]
            if not options:
                continue
            device = options[0]
            fraction_use[device.id] = fraction_use.get(device.id, 0) + request.gpu_memory_bytes
            shares = (DeviceShare(device.id, request.gpu_memory_bytes, 0),)
            request = Request(
                gpu_memory_bytes=request.gpu_memory_bytes,
                cpus=request.cpus,
                memory_bytes=request.memory_bytes,
            )
        else:
            if len(free[node.name]) < request.gpus:
                continue
            taken, free[node.name] = (
                free[node.name][: request.gpus],
                free[node.name][request.gpus :],
            )
            shares = tuple(DeviceShare(d.id) for d in taken)
        cpus[node.name] -= request.cpus
        number = len(running) + 1
        project = rng.randrange(PROJECTS)
        running.append(
            Workload(
                id=number,
                project=f"proj-{project:02d}",
                user=f"user-{project:02d}-{rng.randrange(5)}",
                request=request,
                priority=random_priority(rng),
                submitted_at=-rng.uniform(3600, 7200),
                preemptible=rng.random() < 0.9,
                max_duration=rng.choice((None, 3600.0, 4 * 3600.0)),
                started_at=-rng.uniform(0, 3600),
                placement=Placement(node.name, shares),
            )
        )
    return running


def make_snapshot(nodes_count: int, pending_count: int, running_count: int, seed: int) -> Snapshot:
    rng = random.Random(seed)
    nodes = make_nodes(nodes_count, rng)
    running = make_running(nodes, running_count, rng)
    pending = []
    for i in range(pending_count):
        project = rng.randrange(PROJECTS)
        pending.append(
            Workload(
                id=1_000_000 + i,
                project=f"proj-{project:02d}",
                user=f"user-{project:02d}-{rng.randrange(5)}",
                request=random_request(rng),
                priority=random_priority(rng),
                submitted_at=-rng.uniform(0, 3600),
                preemptible=rng.random() < 0.9,
                max_duration=rng.choice((None, 1800.0, 3600.0, 4 * 3600.0)),
            )
        )
    usage = {f"proj-{p:02d}": rng.uniform(0, 0.1) for p in range(PROJECTS)}
    quotas = make_quotas(nodes_count * 8)
    return Snapshot(0.0, nodes, quotas, tuple(pending), tuple(running), usage)


def time_cycle(snapshot: Snapshot, runs: int, place: bool) -> tuple[float, list[float], object]:
    times = []
    decisions = None
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        decisions = schedule(snapshot, places_work=not place)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), times, decisions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, nargs="*", default=[10, 100, 1000])
    parser.add_argument("--pending", type=int, nargs="*", default=[100, 1000, 10000])
    parser.add_argument("--running", type=int, default=None, help="default: 5 per node, ≤ 5000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--no-place", action="store_true", help="also time admission only (places_work=True)"
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    print(f"python {sys.version.split()[0]}, {args.runs} runs per row, median (min–max) ms")
    print(
        "| nodes | GPUs | running | pending | mode | admitted | preempted "
        "| median ms | min–max ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    modes = [True, False] if args.no_place else [True]
    for nodes in args.nodes:
        running = args.running if args.running is not None else min(5 * nodes, 5000)
        for pending in args.pending:
            snapshot = make_snapshot(nodes, pending, running, args.seed)
            for place in modes:
                median, times, decisions = time_cycle(snapshot, args.runs, place)
                mode = "place" if place else "admit only"
                print(
                    f"| {nodes} | {nodes * 8} | {len(snapshot.running)} | {pending} | {mode} "
                    f"| {len(decisions.admit)} | {len(decisions.preempt)} "
                    f"| {median:.1f} | {min(times):.1f}–{max(times):.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
