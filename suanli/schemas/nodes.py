"""Nodes and GPUs as the API shows them."""

from datetime import datetime

from pydantic import Field

from suanli.schemas.types import Flag, RequestModel, ResponseModel, text

# NVML's GPU-… and MIG-… UUIDs, and the names an engine's GPUs get (slurm-<node>-gpu<i>).
GPU_UUID_PATTERN = r"^[A-Za-z0-9._-]{1,96}$"


class GpuOut(ResponseModel):
    uuid: str
    index: int
    model: str
    memory_bytes: int
    pci_bus_id: str
    numa_node: int
    topology_group: str
    mig_profile: str | None
    simulated: bool
    schedulable: bool
    drain_reason: str
    shared: bool
    present: bool
    used_by: list[str] = Field(default_factory=list)


class NodeOut(ResponseModel):
    name: str
    backend: str
    cpus: int
    memory_bytes: int
    disk_total_bytes: int
    disk_free_bytes: int
    driver: str
    schedulable: bool
    drain_reason: str
    seen_at: datetime
    # A cluster engine's own state and reason (Slurm: "mixed+drain", "Not responding"), and
    # whether it takes new work; empty state for the local host.
    engine_state: str
    engine_reason: str
    available: bool
    pools: list[str]
    gpus: list[GpuOut]


class NodeUpdate(RequestModel):
    schedulable: Flag
    reason: text(max_length=500) = ""


class GpuUpdate(RequestModel):
    schedulable: Flag | None = None
    shared: Flag | None = None
    reason: text(max_length=500) = ""
