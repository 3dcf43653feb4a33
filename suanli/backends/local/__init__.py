"""The local backend: workloads as processes on this host (see `backend`).

`from suanli.backends.local import LocalBackend`. The import is lazy so that the per-job
wrapper (`python -m suanli.backends.local.wrapper`) starts without loading the server's
modules.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "LocalBackend":
        from suanli.backends.local.backend import LocalBackend

        return LocalBackend
    raise AttributeError(name)
