"""What the scheduler needs of a workload, derived once from its spec when it is accepted
and kept as plain JSON (`Job.request`): the scheduler and the controller never parse a
spec, so a spec that no longer validates cannot stall a cycle."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from suanli.kinds.base import Unreadable
from suanli.scheduler import model as sched

_FIELDS = {
    "gpus": int,
    "gpu_model": (str, type(None)),
    "gpu_memory_bytes": int,
    "gpu_compute_percent": int,
    "cpus": (int, float),
    "memory_bytes": int,
    "nodes": int,
    "preemptible": bool,
    "max_duration": (int, float, type(None)),
    "retries": int,
}


@dataclass(frozen=True)
class Demand:
    request: sched.Request
    preemptible: bool
    max_duration: float | None
    retries: int


def request_of(spec: Any) -> sched.Request:
    """A spec's resources as the scheduler reads them (every kind's spec has `resources`)."""
    resources = spec.resources
    return sched.Request(
        gpus=resources.gpus,
        gpu_model=resources.gpu_model,
        gpu_memory_bytes=resources.gpu_memory or 0,
        gpu_compute_percent=resources.gpu_compute_percent or 0,
        cpus=resources.cpus,
        memory_bytes=resources.memory,
        nodes=resources.nodes,
    )


def of(spec: Any) -> dict[str, Any]:
    """The demand of a spec, as it is kept."""
    request = request_of(spec)
    return {
        "gpus": request.gpus,
        "gpu_model": request.gpu_model,
        "gpu_memory_bytes": request.gpu_memory_bytes,
        "gpu_compute_percent": request.gpu_compute_percent,
        "cpus": request.cpus,
        "memory_bytes": request.memory_bytes,
        "nodes": request.nodes,
        "preemptible": bool(spec.preemptible),
        "max_duration": spec.max_duration,
        "retries": int(getattr(spec, "retries", 0)),
    }


def waiting_gpus(kept: Mapping[str, Any]) -> float:
    """The GPUs a workload shows before it is admitted: whole GPUs times nodes (a fraction
    shows none); at admission the scheduler's charge replaces it (`Admission.charge`)."""
    gpus, nodes = kept.get("gpus", 0), kept.get("nodes", 1)
    numbers = isinstance(gpus, int) and isinstance(nodes, int)
    return float(gpus * nodes) if numbers else 0.0


def read(data: Mapping[str, Any] | None) -> Demand:
    """A kept demand; Unreadable, naming the field, when it is missing or malformed."""
    if not isinstance(data, Mapping):
        raise Unreadable("no scheduler request is kept")
    for name, types in _FIELDS.items():
        value = data.get(name)
        if not isinstance(value, types) or (isinstance(value, bool) and types is int):
            raise Unreadable(f"request.{name}: missing or malformed")
    numbers = ("gpus", "gpu_memory_bytes", "gpu_compute_percent", "cpus", "memory_bytes")
    if data["nodes"] < 1 or any(data[name] < 0 for name in numbers):
        raise Unreadable("request: negative amounts")
    return Demand(
        request=sched.Request(
            gpus=data["gpus"],
            gpu_model=data["gpu_model"],
            gpu_memory_bytes=data["gpu_memory_bytes"],
            gpu_compute_percent=data["gpu_compute_percent"],
            cpus=float(data["cpus"]),
            memory_bytes=data["memory_bytes"],
            nodes=data["nodes"],
        ),
        preemptible=data["preemptible"],
        max_duration=float(data["max_duration"]) if data["max_duration"] else None,
        retries=data["retries"],
    )
