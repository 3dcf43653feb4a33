"""GPUs of this host: discovery through NVML, MIG instances, topology, and simulated devices
declared in the settings for machines without a driver (always labelled as simulated).

`from suanli.gpu import discover` works; the import is lazy so that importing the data model
(`suanli.gpu.model`) stays cheap.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "discover":
        from suanli.gpu.discovery import discover

        return discover
    raise AttributeError(name)
