"""What this host offers: CPUs, memory, the data directory's disk, and its GPUs.

GPUs come from NVML (see `suanli.gpu.nvml`). Without a driver, or where NVML finds no GPU, the
host has no GPUs unless the settings declare simulated ones; real and simulated GPUs never
mix (real ones found: the declared ones are ignored, with a warning in the log).

Topology: for every pair of GPUs, `Host.links` says how close they are, from closest to
farthest: "nvlink", "pcie-switch" (one PCIe switch or board), "same-socket" (one host bridge
or NUMA node), "cross-socket". GPUs joined by NVLink or by a PCIe switch, directly or through
each other, share a `Gpu.group`: "nvlink-<n>" where NVLink joins them, else "pcie-<n>"; a GPU
close to no other has a group of its own, "gpu-<index>". Groups are numbered by their lowest
GPU index, so the same machine always gets the same names.
"""

import functools
import logging
import os
import shutil
import socket
from dataclasses import replace
from pathlib import Path

from suanli.config import Settings
from suanli.gpu.model import Gpu, Host, MigInstance
from suanli.gpu.nvml import (
    TOPOLOGY_HOSTBRIDGE,
    TOPOLOGY_SYSTEM,
    Nvml,
    NvmlError,
    load_nvml,
    normalise_bus_id,
)

log = logging.getLogger(__name__)

SIMULATED_GROUP_SIZE = 4  # simulated GPUs sit behind PCIe switches of four, like a PCIe server

Link = str  # "nvlink" | "pcie-switch" | "same-socket" | "cross-socket"


def discover(
    settings: Settings,
    *,
    nvml: Nvml | None = None,
    sysfs: Path = Path("/sys"),
    proc: Path = Path("/proc"),
    hostname: str | None = None,
) -> Host:
    """This host as the scheduler should see it. `nvml` defaults to the real NVML (loaded and
    shut down here); a caller passing its own keeps it open."""
    name = hostname or socket.gethostname()
    data_dir = Path(settings.data_dir)
    disk = shutil.disk_usage(_existing_parent(data_dir))

    gpus: tuple[Gpu, ...] = ()
    links: dict[tuple[int, int], Link] = {}
    driver = ""
    own = nvml is None
    if own:
        nvml = load_nvml()
    if nvml is not None:
        try:
            gpus, links, driver = _nvml_gpus(nvml, sysfs)
        finally:
            if own:
                nvml.shutdown()
    declared = _declared(settings)
    if gpus and declared:
        _ignoring_simulated(declared, len(gpus))
    elif declared:
        gpus, links = simulated_gpus(settings, name)
        _simulated_declared(declared)
    return Host(
        name=name,
        cpus=_cpus(),
        memory_bytes=_memory_bytes(proc),
        disk_total_bytes=disk.total,
        disk_free_bytes=disk.free,
        gpus=gpus,
        driver=driver,
        links=links,
    )


def _declared(settings: Settings) -> tuple[tuple[int, str], ...]:
    """The simulated GPUs declared in the settings, as (count, model) pairs."""
    return tuple((declared.count, declared.model) for declared in settings.simulated_gpus)


def _describe(declared: tuple[tuple[int, str], ...]) -> str:
    """For people: "4 simulated GPUs (A100-SXM4-80GB)", "6 simulated GPUs (4 × A100, 2 × L40S)"."""
    total = sum(count for count, _ in declared)
    if len({model for _, model in declared}) == 1:
        models = declared[0][1]
    else:
        models = ", ".join(f"{count} × {model}" for count, model in declared)
    return f"{total} simulated GPU{'' if total == 1 else 's'} ({models})"


# Discovery runs at every inventory (a minute by default): what it has to say about the
# declaration is said once per process (and declaration), not at every run.
@functools.cache
def _simulated_declared(declared: tuple[tuple[int, str], ...]) -> None:
    log.info("%s declared; nothing runs on real GPUs", _describe(declared))


@functools.cache
def _ignoring_simulated(declared: tuple[tuple[int, str], ...], real: int) -> None:
    log.warning(
        "%s declared but ignored: this host has %d real GPU(s)",
        _describe(declared),
        real,
    )


def _existing_parent(path: Path) -> Path:
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _memory_bytes(proc: Path) -> int:
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _sysfs_numa_node(sysfs: Path, bus_id: str) -> int:
    try:
        node = int((sysfs / "bus" / "pci" / "devices" / bus_id / "numa_node").read_text())
    except (OSError, ValueError):
        return 0
    return max(node, 0)  # -1: the platform does not say (single socket)


def _nvml_gpus(nvml: Nvml, sysfs: Path) -> tuple[tuple[Gpu, ...], dict[tuple[int, int], Link], str]:
    try:
        driver = nvml.driver_version()
        count = nvml.device_count()
    except NvmlError as error:
        log.warning("NVML answers no GPU count (%s): no GPUs", error)
        return (), {}, ""

    found: list[tuple[Gpu, object]] = []  # with the NVML handle, for the topology
    for index in range(count):
        try:
            handle = nvml.device_handle(index)
            gpu = _nvml_gpu(nvml, handle, index, sysfs)
        except NvmlError as error:  # e.g. a GPU fallen off the bus: leave it out, say so
            log.warning("GPU %d is left out of the inventory: %s", index, error)
            continue
        found.append((gpu, handle))

    links: dict[tuple[int, int], Link] = {}
    for i, (gpu_a, handle_a) in enumerate(found):
        for gpu_b, handle_b in found[i + 1 :]:
            links[(gpu_a.index, gpu_b.index)] = _link(nvml, handle_a, handle_b, gpu_a, gpu_b)
    groups = topology_groups([gpu.index for gpu, _ in found], links)
    gpus = tuple(replace(gpu, group=groups[gpu.index]) for gpu, _ in found)
    return gpus, links, driver


def _nvml_gpu(nvml: Nvml, handle: object, index: int, sysfs: Path) -> Gpu:
    bus_id = normalise_bus_id(nvml.pci_bus_id(handle))
    numa = nvml.numa_node(handle)
    if numa is None:
        numa = _sysfs_numa_node(sysfs, bus_id)
    mig_enabled = nvml.mig_enabled(handle)
    instances: list[MigInstance] = []
    if mig_enabled:
        for mig in nvml.mig_handles(handle):
            try:
                instances.append(
                    MigInstance(
                        uuid=nvml.uuid(mig),
                        profile=nvml.mig_profile(mig),
                        memory_bytes=nvml.memory_total(mig),
                    )
                )
            except NvmlError as error:
                log.warning("a MIG device of GPU %d is left out: %s", index, error)
    return Gpu(
        index=index,
        uuid=nvml.uuid(handle),
        model=nvml.name(handle),
        memory_bytes=nvml.memory_total(handle),
        pci_bus_id=bus_id,
        numa_node=numa,
        mig_enabled=mig_enabled,
        mig_instances=tuple(sorted(instances, key=lambda m: m.uuid)),
    )


def _link(nvml: Nvml, a: object, b: object, gpu_a: Gpu, gpu_b: Gpu) -> Link:
    try:
        if nvml.nvlink_connected(a, b):
            return "nvlink"
    except NvmlError:
        pass
    try:
        level = nvml.common_ancestor(a, b)
    except NvmlError:
        return "same-socket" if gpu_a.numa_node == gpu_b.numa_node else "cross-socket"
    if level < TOPOLOGY_HOSTBRIDGE:  # the same board, or under PCIe switches only
        return "pcie-switch"
    if level < TOPOLOGY_SYSTEM:  # one host bridge, or one NUMA node
        return "same-socket"
    return "cross-socket"


def topology_groups(indexes: list[int], links: dict[tuple[int, int], Link]) -> dict[int, str]:
    """GPU index -> group name: GPUs joined by NVLink or a PCIe switch, transitively."""
    parent = {index: index for index in indexes}

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    nvlinked: set[int] = set()
    for (a, b), link in links.items():
        if link in ("nvlink", "pcie-switch") and a in parent and b in parent:
            parent[max(root(a), root(b))] = min(root(a), root(b))
            if link == "nvlink":
                nvlinked.update((a, b))
    members: dict[int, list[int]] = {}
    for index in sorted(indexes):
        members.setdefault(root(index), []).append(index)
    names: dict[int, str] = {}
    counters = {"nvlink": 0, "pcie": 0}
    for first in sorted(members):
        group = members[first]
        if len(group) == 1:
            name = f"gpu-{first}"
        else:
            kind = "nvlink" if any(index in nvlinked for index in group) else "pcie"
            name = f"{kind}-{counters[kind]}"
            counters[kind] += 1
        for index in group:
            names[index] = name
    return names


SIMULATED_UUID_PREFIX = "GPU-sim-"


def is_simulated_uuid(uuid: str) -> bool:
    return uuid.startswith(SIMULATED_UUID_PREFIX)


def simulated_gpus(
    settings: Settings, hostname: str
) -> tuple[tuple[Gpu, ...], dict[tuple[int, int], Link]]:
    """The GPUs declared in the settings, as a PCIe server would have them: groups of four
    behind one switch ("sim-<n>"), the first half of the groups on socket 0, the rest on
    socket 1. UUIDs are `GPU-sim-<hostname>-<index>`, stable across restarts."""
    declared: list[tuple[int, str, int]] = []  # (declaration, model, memory)
    for number, declaration in enumerate(settings.simulated_gpus):
        declared += [(number, declaration.model, declaration.memory_bytes)] * declaration.count
    # Groups never mix two declarations (two models are two kinds of card).
    group_of: list[int] = []
    group, previous, in_group = -1, None, 0
    for number, _, _ in declared:
        if number != previous or in_group == SIMULATED_GROUP_SIZE:
            group, previous, in_group = group + 1, number, 0
        group_of.append(group)
        in_group += 1
    groups = group + 1
    gpus = tuple(
        Gpu(
            index=index,
            uuid=f"{SIMULATED_UUID_PREFIX}{hostname}-{index}",
            model=model,
            memory_bytes=memory,
            numa_node=group_of[index] * 2 // groups if groups > 1 else 0,
            group=f"sim-{group_of[index]}",
            simulated=True,
        )
        for index, (_, model, memory) in enumerate(declared)
    )
    links: dict[tuple[int, int], Link] = {}
    for a in gpus:
        for b in gpus[a.index + 1 :]:
            if a.group == b.group:
                links[(a.index, b.index)] = "pcie-switch"
            elif a.numa_node == b.numa_node:
                links[(a.index, b.index)] = "same-socket"
            else:
                links[(a.index, b.index)] = "cross-socket"
    return gpus, links
