"""Refuse at submit what can never run, so it does not pend for ever.

`check_feasible`: the inventory, drained nodes and devices included (a drain is temporary:
such work pends with `node_drained`). `check_quota_ceiling`: the project's quota, as a
ceiling only: a request above what the project may ever hold is refused, one that fits once
other work has ended is accepted and pends with the quota's reason.

Error codes and their params (the caller turns them into messages; numbers as people write
them: 7, 0.5):
- invalid_value: field, value (a negative number, or nodes < 1)
- compute_percent_range: value (GPU compute share above 100 %)
- mixed_gpu_request: gpus (whole GPUs and a GPU fraction in one request)
- no_gpus: (GPUs or a fraction asked for, and no node has any GPU)
- no_whole_gpus: available (whole GPUs asked for, and there are only MIG instances)
- unknown_gpu_model: model, available (comma-separated models and MIG profiles)
- too_many_gpus: requested, largest (more than the largest node has)
- too_many_model_gpus: requested, largest, model (likewise, of the model asked for)
- no_shared_gpus: (a fraction, but no GPU is shared)
- no_shared_model_gpus: model (a fraction of that model, but no such GPU is shared)
- fraction_memory_too_large: requested_gib, largest_gib (more than any shared GPU has)
- too_many_cpus: requested, largest (more than any node that has the GPUs)
- too_much_memory: requested_gib, largest_gib (likewise)
- too_many_nodes: requested, available (multi-node: fewer nodes can hold one part)
- quota_max_gpus: requested, limit (GPUs, counted as the quota counts them)
- quota_user_gpus: requested, limit (likewise, one user's GPUs in the project)
- quota_cpus: requested, limit
- quota_memory: requested_gib, limit_gib
"""

from collections.abc import Sequence
from typing import Any

from suanli.scheduler.devices import EPSILON, gib, gpu_charge, model_matches, number
from suanli.scheduler.model import Node, Quota, Request

Problem = tuple[str, dict[str, Any]]


def check_feasible(request: Request, nodes: Sequence[Node]) -> Problem | None:
    """None when some node of the inventory could hold the request, else (code, params)."""
    for name in ("gpus", "gpu_memory_bytes", "gpu_compute_percent", "cpus", "memory_bytes"):
        value = getattr(request, name)
        if value < 0:
            return "invalid_value", {"field": name, "value": value}
    if request.nodes < 1:
        return "invalid_value", {"field": "nodes", "value": request.nodes}
    if request.gpu_compute_percent > 100:
        return "compute_percent_range", {"value": request.gpu_compute_percent}
    if request.gpus > 0 and (request.gpu_memory_bytes > 0 or request.gpu_compute_percent > 0):
        return "mixed_gpu_request", {"gpus": request.gpus}

    model = request.gpu_model
    if request.gpus > 0 or request.is_fraction:
        devices = [d for n in nodes for d in n.devices]
        if not devices:
            return "no_gpus", {}
        if not any(model_matches(model, d.model, d.mig_profile) for d in devices):
            names = ", ".join(sorted({d.mig_profile or d.model for d in devices}))
            if model is None:
                return "no_whole_gpus", {"available": names}
            return "unknown_gpu_model", {"model": model, "available": names}

    candidates = list(nodes)
    if request.gpus > 0:
        counts = [
            sum(
                1
                for d in n.devices
                if not d.shared and model_matches(model, d.model, d.mig_profile)
            )
            for n in candidates
        ]
        largest = max(counts, default=0)
        if largest < request.gpus:
            if model is None:
                return "too_many_gpus", {"requested": request.gpus, "largest": largest}
            return "too_many_model_gpus", {
                "requested": request.gpus,
                "largest": largest,
                "model": model,
            }
        candidates = [n for n, c in zip(candidates, counts, strict=True) if c >= request.gpus]
    elif request.is_fraction:
        shared = [
            [d for d in n.devices if d.shared and model_matches(model, d.model, d.mig_profile)]
            for n in candidates
        ]
        if not any(shared):
            return ("no_shared_model_gpus", {"model": model}) if model else ("no_shared_gpus", {})
        largest = max(d.memory_bytes for devices in shared for d in devices)
        if request.gpu_memory_bytes > largest:
            return "fraction_memory_too_large", {
                "requested_gib": gib(request.gpu_memory_bytes),
                "largest_gib": gib(largest),
            }
        candidates = [
            n
            for n, devices in zip(candidates, shared, strict=True)
            if any(d.memory_bytes >= request.gpu_memory_bytes for d in devices)
        ]

    most_cpus = max((n.cpus for n in candidates), default=0.0)
    if request.cpus > most_cpus + EPSILON:
        return "too_many_cpus", {"requested": number(request.cpus), "largest": number(most_cpus)}
    candidates = [n for n in candidates if n.cpus + EPSILON >= request.cpus]
    most_memory = max((n.memory_bytes for n in candidates), default=0)
    if request.memory_bytes > most_memory:
        return "too_much_memory", {
            "requested_gib": gib(request.memory_bytes),
            "largest_gib": gib(most_memory),
        }
    candidates = [n for n in candidates if n.memory_bytes >= request.memory_bytes]
    if request.nodes > len(candidates):
        return "too_many_nodes", {"requested": request.nodes, "available": len(candidates)}
    return None


def check_quota_ceiling(request: Request, quota: Quota, nodes: Sequence[Node]) -> Problem | None:
    """None unless the request exceeds what its project may ever hold at once, whatever else
    ends (quota.Ledger.check with nothing else running), else (code, params).

    GPUs count as the quota counts them (devices.gpu_charge): whole GPUs times nodes, a
    fraction as its share of the largest shared GPU it may land on (the least it can count).
    Call it after `check_feasible`, which refuses a fraction that no shared GPU could hold."""
    gpus = least_gpu_charge(request, nodes)
    if quota.max_gpus is not None and gpus > 0:
        limit = max(quota.max_gpus, quota.guaranteed_gpus)
        if gpus > limit + EPSILON:
            return "quota_max_gpus", {"requested": number(gpus), "limit": limit}
    if quota.max_gpus_per_user is not None and gpus > quota.max_gpus_per_user + EPSILON:
        return "quota_user_gpus", {"requested": number(gpus), "limit": quota.max_gpus_per_user}
    nodes_asked = max(request.nodes, 1)
    cpus = request.cpus * nodes_asked
    if quota.cpus is not None and cpus > quota.cpus + EPSILON:
        return "quota_cpus", {"requested": number(cpus), "limit": number(quota.cpus)}
    memory = request.memory_bytes * nodes_asked
    if quota.memory_bytes is not None and memory > quota.memory_bytes:
        return "quota_memory", {"requested_gib": gib(memory), "limit_gib": gib(quota.memory_bytes)}
    return None


def least_gpu_charge(request: Request, nodes: Sequence[Node]) -> float:
    """The fewest GPUs the request can count against quotas: a fraction is charged its share
    of the GPU it lands on, so on the largest shared GPU of its model it counts least."""
    largest = None
    if request.is_fraction:
        largest = max(
            (
                d.memory_bytes
                for n in nodes
                for d in n.devices
                if d.shared and model_matches(request.gpu_model, d.model, d.mig_profile)
            ),
            default=None,
        )
    return gpu_charge(request, largest)
