"""What discovery reports about a host. The controller stores it and joins the administrators'
choices (drained, shared) to build the scheduler's Nodes."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MigInstance:
    uuid: str  # MIG-...
    profile: str  # e.g. "1g.10gb"
    memory_bytes: int


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str  # GPU-...
    model: str
    memory_bytes: int
    pci_bus_id: str = ""
    numa_node: int = 0
    mig_enabled: bool = False
    mig_instances: tuple[MigInstance, ...] = ()
    # Topology group: GPUs sharing it are close (one NVLink domain or PCIe switch).
    group: str = ""
    simulated: bool = False


@dataclass(frozen=True)
class Host:
    name: str
    cpus: int
    memory_bytes: int
    disk_total_bytes: int  # of the data directory's filesystem
    disk_free_bytes: int
    gpus: tuple[Gpu, ...] = ()
    driver: str = ""  # NVML driver version; "" without a driver
    # (index_a, index_b) -> "nvlink" | "pcie-switch" | "same-socket" | "cross-socket"
    links: dict[tuple[int, int], str] = field(default_factory=dict)
    # What a cluster engine says of the node (Slurm: "idle", "mixed+drain", ...) and why;
    # empty for this host itself. `available`: the engine gives it new work.
    state: str = ""
    reason: str = ""
    available: bool = True
    pools: tuple[str, ...] = ()  # the engine's partitions it belongs to
