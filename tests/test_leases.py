"""Loop leases: one server process at a time runs each controller loop.

Unit tests of `Leases` on a real database (SQLite, or PostgreSQL with
SUANLI_TEST_POSTGRES_URL), and two real servers on one PostgreSQL database and one data
directory, which must run each submitted job exactly once and hand the loops over when the
server that runs them hangs (one that died on the same machine is seen dead at once).
"""

import logging
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from waiting import wait_for

from suanli.client import Client
from suanli.controllers.lease import Action, Current, Leases, decide, gone, this_machine
from suanli.controllers.loop import MIN_LEASE_SECONDS, Loop
from suanli.db.engine import Database
from suanli.db.models import Lease

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def test_decide_takes_what_is_missing_lapsed_or_left_by_the_dead() -> None:
    assert decide(None, "me", NOW, 30, gone=False) is Action.TAKE
    assert decide(Current("other", at(-1)), "me", NOW, 30, gone=False) is Action.TAKE
    assert decide(Current("other", at(29)), "me", NOW, 30, gone=True) is Action.TAKE
    assert decide(Current("other", at(1)), "me", NOW, 30, gone=False) is Action.WAIT


def test_decide_renews_its_own_only_once_less_than_half_is_left() -> None:
    assert decide(Current("me", at(20)), "me", NOW, 30, gone=False) is Action.KEEP
    assert decide(Current("me", at(14)), "me", NOW, 30, gone=False) is Action.TAKE
    assert decide(Current("me", at(-5)), "me", NOW, 30, gone=False) is Action.TAKE  # lapsed


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_only_a_holder_of_this_machine_whose_pid_ended_is_gone() -> None:
    here = this_machine()
    assert gone(f"{here}:{dead_pid()}:ab12", here)
    assert not gone(f"{here}:{os.getpid()}:ab12", here)  # runs: left to lapse
    assert not gone(f"elsewhere/1:{dead_pid()}:ab12", here)  # another host's or container's
    assert not gone(f"host/?:{dead_pid()}:ab12", "host/?")  # no namespace known: no judging
    assert not gone("first", here)


@pytest.fixture
def databases(database_url: str, migrated_database: Database) -> Iterator[Callable[[], Database]]:
    """More connections to the test's database, one engine each, as other processes have."""
    opened: list[Database] = []

    def open_one() -> Database:
        opened.append(Database(database_url))
        return opened[-1]

    yield open_one
    for database in opened:
        database.dispose()


def expiry(database: Database, name: str) -> datetime:
    with database.reading() as session:
        return session.scalars(select(Lease.expires_at).where(Lease.name == name)).one()


def test_only_one_holder_until_the_lease_expires(migrated_database: Database) -> None:
    first, second = Leases(migrated_database, "first"), Leases(migrated_database, "second")
    assert first.hold("workloads", ttl=0.5)
    assert not second.hold("workloads", ttl=0.5)
    assert first.hold("workloads", ttl=0.5)  # still ours
    time.sleep(0.6)  # the first stopped renewing (it died)
    assert second.hold("workloads", ttl=0.5)
    assert not first.hold("workloads", ttl=0.5)


def test_renewal_writes_only_once_half_the_ttl_is_spent(migrated_database: Database) -> None:
    leases = Leases(migrated_database, "me")
    assert leases.hold("metrics", ttl=1.0)
    taken = expiry(migrated_database, "metrics")
    assert leases.hold("metrics", ttl=1.0)
    assert expiry(migrated_database, "metrics") == taken
    time.sleep(0.6)
    assert leases.hold("metrics", ttl=1.0)
    assert expiry(migrated_database, "metrics") > taken


def test_release_hands_the_lease_over_at_once(migrated_database: Database) -> None:
    first, second = Leases(migrated_database, "first"), Leases(migrated_database, "second")
    assert first.hold("notifier", ttl=60)
    second.release("notifier")  # not the holder: changes nothing
    assert not second.hold("notifier", ttl=60)
    first.release("notifier")
    assert second.hold("notifier", ttl=60)
    assert not first.hold("notifier", ttl=60)


def test_a_lease_whose_holder_died_here_is_taken_at_once(migrated_database: Database) -> None:
    """A server restarted after a crash does not wait out its predecessor's leases."""
    dead = f"{this_machine()}:{dead_pid()}:ab12"
    alive = f"{this_machine()}:{os.getppid()}:cd34"
    far = datetime.now(UTC) + timedelta(hours=1)
    with migrated_database.writing() as session:
        session.add(Lease(name="a", holder=dead, expires_at=far))
        session.add(Lease(name="b", holder=alive, expires_at=far))
        session.commit()
    leases = Leases(migrated_database)
    assert leases.hold("a", ttl=30)
    assert not leases.hold("b", ttl=30)


def race(databases: Callable[[], Database], name: str, contenders: int = 6) -> list[str]:
    """Contenders, each on its own engine, try to hold `name` at the same moment: the
    holders that won."""
    leases = [Leases(databases(), f"contender-{i}") for i in range(contenders)]
    start = threading.Barrier(contenders)
    winners: list[str] = []

    def contend(lease: Leases) -> None:
        start.wait()
        if lease.hold(name, ttl=60):
            winners.append(lease.holder)

    threads = [threading.Thread(target=contend, args=(lease,)) for lease in leases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return winners


def test_concurrent_attempts_on_a_missing_lease_have_one_winner(databases) -> None:
    for round_ in range(5):
        assert len(race(databases, f"missing-{round_}")) == 1


def test_concurrent_attempts_on_an_expired_lease_have_one_winner(
    databases, migrated_database: Database
) -> None:
    for round_ in range(5):
        name = f"expired-{round_}"
        with migrated_database.writing() as session:
            session.add(Lease(name=name, holder="dead", expires_at=datetime.now(UTC)))
            session.commit()
        winners = race(databases, name)
        assert len(winners) == 1
        with migrated_database.reading() as session:
            assert session.get(Lease, name).holder == winners[0]


class Counting:
    """A controller that counts its ticks."""

    name = "counting"
    interval = 0.05

    def __init__(self) -> None:
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1


def test_a_loop_ticks_only_while_it_holds_its_lease_and_releases_it_on_stop(
    migrated_database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "suanli.controllers")
    other = Leases(migrated_database, "another server")
    assert other.hold(Counting.name, ttl=60)
    controller = Counting()
    loop = Loop(controller, Leases(migrated_database))
    loop.start()
    try:
        time.sleep(0.5)  # ten intervals
        assert controller.ticks == 0
        other.release(Counting.name)
        wait_for(lambda: controller.ticks > 2, 5, "ticks once the lease is free")
    finally:
        loop.stop()
    assert other.hold(Counting.name, ttl=60)  # released on stop: free at once
    said = [r.getMessage() for r in caplog.records if r.name == "suanli.controllers"]
    assert said == [
        "counting: another server holds the loop's lease; this one stands by",
        "counting: this server now holds the loop's lease and runs it",
    ]


# Two real servers on one database: PostgreSQL, as where several servers share one; the
# SQLite pass skips this.

POSTGRES_URL = os.environ.get("SUANLI_TEST_POSTGRES_URL", "")  # as tests/conftest.py reads it


def lease_holders(database_url: str) -> dict[str, str]:
    database = Database(database_url)
    try:
        with database.reading() as session:
            return {lease.name: lease.holder for lease in session.scalars(select(Lease))}
    finally:
        database.dispose()


def pid_of(holder: str) -> int:
    return int(holder.split(":")[-2])


def attempts(client: Client, job_id: int) -> int:
    history = client.jobs.get(job_id).history
    return sum(event.detail.startswith("Starting attempt") for event in history)


@pytest.mark.skipif(not POSTGRES_URL, reason="several servers share a PostgreSQL database only")
def test_two_servers_on_one_database_run_each_job_once_and_take_over(
    server_factory, tmp_path: Path
) -> None:
    first = server_factory()
    second = server_factory()  # the same database and data directory
    clients = [first.login(), second.login()]
    clients[0].projects.create("shared")
    ran = tmp_path / "ran.txt"
    ran.touch()

    def submit(client: Client) -> int:
        script = f'echo "$SUANLI_JOB_ID" >> {ran}'
        spec = {"project": "shared", "script": script, "resources": {"cpus": 0.1}}
        return client.jobs.submit(spec).id

    def done(client: Client, job_id: int) -> bool:
        return client.jobs.get(job_id).state == "succeeded"

    ids = [submit(clients[i % 2]) for i in range(10)]
    for job_id in ids:
        wait_for(lambda job_id=job_id: done(clients[1], job_id), 60, f"job {job_id}")
    assert Counter(int(line) for line in ran.read_text().split()) == dict.fromkeys(ids, 1)
    assert all(attempts(clients[0], job_id) == 1 for job_id in ids)
    holders = lease_holders(first.database_url)
    assert {"inventory", "workloads", "metrics", "notifier"} <= set(holders)  # and the others
    # The first server took every lease before the second started; the second stands by.
    assert {pid_of(holder) for holder in holders.values()} == {first.process.pid}

    # The first hangs holding its leases (alive, so not seen dead): they must lapse.
    first.process.send_signal(signal.SIGSTOP)
    try:
        wait_for(
            lambda: pid_of(lease_holders(first.database_url)["workloads"]) == second.process.pid,
            MIN_LEASE_SECONDS + 5,  # the ttl, and a tick of the survivor's
            "the second server to take the workloads lease",
        )
        after = submit(clients[1])
        wait_for(lambda: done(clients[1], after), 30, "a job after the takeover")
    finally:
        first.stop(signal.SIGKILL)
    assert Counter(int(line) for line in ran.read_text().split())[after] == 1
    assert attempts(clients[1], after) == 1
