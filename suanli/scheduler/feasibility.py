"""Refuse at submit what can never run, so it does not pend for ever.

Only the inventory counts here, drained nodes and devices included (a drain is temporary:
such work pends with `node_drained`), and never quotas: a request above its project's quota
is accepted and pends with the quota's reason.

Error codes and their params (the caller turns them into messages):
- invalid_value: field, value (a negative number, or nodes < 1)
- compute_percent_range: value (GPU compute share above 100 %)
- mixed_gpu_request: gpus (whole GPUs and a GPU fraction in one request)
- unknown_gpu_model: model, available (comma-separated models and MIG profiles)
- too_many_gpus: requested, largest, model (more than the largest node has of that model)
- no_shared_gpus: model (a fraction, but no GPU is shared)
- fraction_memory_too_large: requested_gib, largest_gib (more than any shared GPU has)
- too_many_cpus: requested, largest (more than any node that has the GPUs)
- too_much_memory: requested_gib, largest_gib (likewise)
- too_many_nodes: requested, available (multi-node: fewer nodes can hold one part)
"""

from collections.abc import Sequence
from typing import Any

from suanli.scheduler.devices import EPSILON, gib, model_matches
from suanli.scheduler.model import Node, Request


def check_feasible(request: Request, nodes: Sequence[Node]) -> tuple[str, dict[str, Any]] | None:
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
        if not any(model_matches(model, d.model, d.mig_profile) for d in devices):
            names = sorted({d.mig_profile or d.model for d in devices})
            return "unknown_gpu_model", {"model": model or "", "available": ", ".join(names)}

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
            return "too_many_gpus", {
                "requested": request.gpus,
                "largest": largest,
                "model": model or "",
            }
        candidates = [n for n, c in zip(candidates, counts, strict=True) if c >= request.gpus]
    elif request.is_fraction:
        shared = [
            [d for d in n.devices if d.shared and model_matches(model, d.model, d.mig_profile)]
            for n in candidates
        ]
        if not any(shared):
            return "no_shared_gpus", {"model": model or ""}
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
        return "too_many_cpus", {"requested": request.cpus, "largest": most_cpus}
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
