"""What a request asks of a device: model matching, device kinds, and how a GPU fraction
counts against GPU quotas.

Kept apart from placement because admission (quotas) needs the same rules when an engine
such as Slurm places the work.
"""

import re
from collections.abc import Iterable
from functools import lru_cache

from suanli.scheduler.model import Device, Request

# Devices of one kind are interchangeable for a request: same model, same MIG profile.
Kind = tuple[str, str | None]

EPSILON = 1e-9
GIB = 2**30

_TOKEN = re.compile(r"[a-z0-9]+")


def kind_of(device: Device) -> Kind:
    return (device.model, device.mig_profile)


@lru_cache(maxsize=4096)
def model_matches(requested: str | None, model: str, mig_profile: str | None) -> bool:
    """Does a device of `model` (a MIG instance when `mig_profile` is set) satisfy a request
    for `requested`?

    - No model requested: any full GPU, never a MIG instance. A one-GPU job that lands on a
      `1g.10gb` slice would get a seventh of what its owner expects; MIG instances are given
      only to requests that name their profile.
    - A MIG instance matches its profile only (case-insensitive, e.g. "1g.10gb").
    - A full GPU matches its model name exactly or by whole words: "A100" and "a100-sxm4"
      match "NVIDIA A100-SXM4-80GB", while "A10" does not.
    """
    if requested is None:
        return mig_profile is None
    wanted = requested.strip().casefold()
    if mig_profile is not None:
        return wanted == mig_profile.casefold()
    if wanted == model.casefold():
        return True
    want, have = _TOKEN.findall(wanted), _TOKEN.findall(model.casefold())
    if not want:
        return False
    return any(have[i : i + len(want)] == want for i in range(len(have) - len(want) + 1))


def matching_kinds(requested: str | None, kinds: Iterable[Kind]) -> list[Kind]:
    return [kind for kind in kinds if model_matches(requested, kind[0], kind[1])]


def fraction_share(memory_bytes: int, compute_percent: int, device_memory: int) -> float:
    """How much of one GPU a fraction takes: the larger of its memory share and its compute
    share, at most one GPU.

    Why the larger: a job holding 40 of a card's 80 GB leaves room for only one more such job
    whatever its compute limit, and one holding 50 % of the compute halves what the others
    get whatever its memory; either way it denies that part of the GPU to everyone else.
    """
    memory = memory_bytes / device_memory if device_memory > 0 else (1.0 if memory_bytes else 0)
    return min(1.0, max(memory, compute_percent / 100))


def gpu_charge(request: Request, device_memory: int | None) -> float:
    """GPUs a request counts against GPU quotas: whole GPUs (times nodes), or for a fraction
    its share of the device it lands on (`device_memory`; the caller passes the smallest
    shared device when the fraction is not placed, so the estimate errs on the high side).
    Without any shared device a fraction counts as one GPU."""
    if request.is_fraction:
        if device_memory is None:
            return 1.0
        return fraction_share(request.gpu_memory_bytes, request.gpu_compute_percent, device_memory)
    return float(request.gpus * max(request.nodes, 1))


def gib(value: float) -> float:
    """Bytes as GiB, rounded for people (the reasons' parameters)."""
    return number(value / GIB)


def number(value: float) -> float:
    """A number as a person reads it: an int when whole, else two decimals."""
    rounded = round(value, 2)
    return int(rounded) if rounded == int(rounded) else rounded
