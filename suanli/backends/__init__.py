"""Backends run workloads: `local` on this host, `slurm` on a Slurm cluster. Nothing outside a
backend's package knows which one runs; everything goes through the protocol in `base`.

Imports are lazy: the local backend's per-job wrapper (`python -m
suanli.backends.local.wrapper`) must start without loading the server's modules."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from suanli.backends.base import Backend
    from suanli.config import Settings


def create(settings: "Settings") -> "Backend":
    """The backend the settings choose."""
    if settings.backend == "slurm":
        from suanli.backends.slurm.backend import SlurmBackend

        return SlurmBackend(settings)
    from suanli.backends.local.backend import LocalBackend

    return LocalBackend(settings)
