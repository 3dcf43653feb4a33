"""Fixtures for the local backend's tests: a backend over a temporary data directory with
cgroups under a parent of its own (removed afterwards), and a Unix user made for the run."""

import contextlib
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from localjobs import Jobs, make_backend

from suanli.backends.local import cgroups


@pytest.fixture
def cgroup_parent() -> Iterator[str]:
    name = f"suanli-test-{secrets.token_hex(4)}"
    yield name
    # Wrappers write the status first and remove their job's cgroup right after: wait a bit.
    deadline = time.monotonic() + 3
    for _, mount in cgroups.detect().where.values():
        parent = Path(mount) / name
        while parent.exists():
            try:
                parent.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)


@pytest.fixture
def jobs(tmp_path: Path, cgroup_parent: str) -> Iterator[Jobs]:
    found = Jobs(tmp_path, make_backend(tmp_path, cgroup_parent))
    yield found
    for handle in found.handles:  # nothing a test started outlives it
        with contextlib.suppress(Exception):
            found.backend.stop(handle, reason="cancelled", grace_seconds=0)
    for handle in found.handles:
        with contextlib.suppress(Exception):
            found.wait(handle, timeout=5)


@pytest.fixture(scope="session")
def unix_user() -> Iterator[str]:
    """A Unix user made for the test run (removed at the end); only as root."""
    if os.geteuid() != 0:
        pytest.skip("creating a Unix user and switching to it needs root")
    name = f"suanli-t{secrets.token_hex(3)}"
    subprocess.run(
        ["useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/sh", name],
        check=True,
    )
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=False)
