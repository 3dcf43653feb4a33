"""A server killed with SIGKILL restarts on the same data with nothing lost."""

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from suanli.client import Client


def test_sigkill_loses_nothing_that_was_answered(server_factory) -> None:
    first = server_factory()
    admin = first.login()
    token = admin.tokens.create("survivor").token
    admin.users.create("hana", "hana-password")

    # Kill the server while four clients are writing; every write that was answered must
    # survive, and none may be half-written (a project without its quota or owner).
    answered: list[str] = []

    def write_until_killed(worker: int) -> None:
        with Client(first.url, token) as client:
            for i in range(10_000):
                try:
                    answered.append(client.projects.create(f"kept-{worker}-{i}").name)
                except httpx.HTTPError:
                    return

    with ThreadPoolExecutor(max_workers=4) as pool:
        for worker in range(4):
            pool.submit(write_until_killed, worker)
        time.sleep(1.5)
        first.stop(signal.SIGKILL)
    assert len(answered) > 10

    second = server_factory(port=0)
    with Client(second.url, token) as client:
        projects = client.projects.list()
        names = {p.name for p in projects}
        assert set(answered) <= names
        assert all(p.member_count == 1 and p.quota is not None for p in projects)
        assert "hana" in {u.name for u in client.users.list()}
        assert len(client.audit.list(action="project.create", limit=1000)) == len(names)
    assert httpx.get(f"{second.url}/readyz").status_code == 200
    # The first administrator is not created twice, and no new password is printed.
    assert "password:" not in "".join(second.output)
