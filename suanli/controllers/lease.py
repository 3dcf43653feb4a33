"""Leases: which server process runs each controller loop.

Several `suanli server` processes may share one database. Each controller loop must run in
one of them at a time: two workload controllers would both launch what the scheduler
admitted, and both adopt a job the other left `starting` for a moment. A lease is a row
(name, holder, expiry) in `leases`: its holder renews it before its ticks, and another
process takes it over once it expired (its holder died or hangs) or was released. A holder
that died on this machine is seen dead at once: a server restarted after a crash does not
wait out its predecessor's leases.

Race-free without locks of our own: each change is one conditional statement whose row count
says who won. A missing row is inserted with ON CONFLICT DO NOTHING (of two inserts, the second
finds the first's row and changes nothing); an existing one is taken with UPDATE ... WHERE
name = ? AND (holder = me OR expires_at < now [OR holder = the dead one]). On PostgreSQL
(read committed) a second UPDATE of the row waits for the first to commit and checks its WHERE
again against the row as committed, which now names the winner and a future expiry; on SQLite
writers are serialised by BEGIN IMMEDIATE (suanli.db.engine).

Time is the database's (PostgreSQL's now()), so that servers on different hosts whose clocks
disagree still agree on when a lease expired; SQLite's processes share one host and its clock.
"""

import enum
import os
import re
import secrets
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import psutil
from sqlalchemy import ColumnElement, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from suanli.db.engine import Database
from suanli.db.models import Lease


class Current(NamedTuple):
    """A lease as stored: who holds it, until when."""

    holder: str
    expires_at: datetime


class Action(enum.Enum):
    KEEP = "keep"  # ours, with more than half its time left: nothing to write
    TAKE = "take"  # missing, lapsed, or ours to renew: try the conditional write
    WAIT = "wait"  # another live holder's


def decide(current: Current | None, me: str, now: datetime, ttl: float, *, gone: bool) -> Action:
    """What to do about a lease as read (`gone`: its holder is known dead). Renewing only
    once less than half the ttl is left spares a loop that ticks every half second a write
    transaction per tick, and still leaves each tick at least half the ttl before anyone else
    may take over."""
    if current is None:
        return Action.TAKE
    if current.holder == me:
        left = current.expires_at - now
        return Action.KEEP if left > timedelta(seconds=ttl / 2) else Action.TAKE
    return Action.TAKE if gone or current.expires_at < now else Action.WAIT


def this_machine() -> str:
    """Where a holder's pid means something: the host name and the pid namespace (two
    containers may share a host name, each with pids of its own); "?" for the namespace
    where /proc cannot say, and then no pid is judged."""
    try:
        namespace = re.sub(r"\D", "", os.readlink("/proc/self/ns/pid")) or "?"
    except OSError:
        namespace = "?"
    return f"{socket.gethostname()[:64]}/{namespace}"


def new_holder() -> str:
    """This process, recognisable to an administrator (host and pid), and unique even when
    the pid comes back after a restart."""
    return f"{this_machine()}:{os.getpid()}:{secrets.token_hex(4)}"


def gone(holder: str, machine: str) -> bool:
    """Whether `holder` is a process of this machine that no longer runs. A pid that runs is
    not proof of life (it may be reused), so such a lease is left to lapse."""
    where, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if where != machine or machine.endswith("/?") or not pid.isdigit():
        return False
    return not psutil.pid_exists(int(pid))


class Leases:
    """The leases of one server process (one holder id for all its loops)."""

    def __init__(self, database: Database, holder: str | None = None):
        self.database = database
        self.holder = holder or new_holder()
        self.machine = this_machine()
        # When each lease we took is sure to last until (this process's monotonic clock): it
        # was written as the database's now + ttl, and that now came after this moment.
        self._sure_until: dict[str, float] = {}

    def hold(self, name: str, ttl: float) -> bool:
        """Whether this process holds `name` for at least half of `ttl` from now: acquired if
        free, lapsed or its holder died here, renewed if ours and due. A read decides; only a
        take writes, so a process that stands by costs one primary-key read per attempt, and
        the holder none while more than half its lease is surely left (a woken loop starts
        its tick without a round trip)."""
        if time.monotonic() < self._sure_until.get(name, 0.0) - ttl / 2:
            return True
        with self.database.reading() as session:
            now = self._now(session)
            current = _current(session, name)
        dead = current.holder if current and gone(current.holder, self.machine) else None
        action = decide(current, self.holder, now, ttl, gone=dead is not None)
        if action is not Action.TAKE:
            return action is Action.KEEP
        started = time.monotonic()
        with self.database.writing() as session:
            won = self._take(session, name, ttl, dead)
            session.commit()
        if won:
            self._sure_until[name] = started + ttl
        else:
            self._sure_until.pop(name, None)
        return won

    def release(self, name: str) -> None:
        """Let another process take `name` at once, rather than after its expiry (a clean
        stop). Only our own lease is removed: one that lapsed and was taken stays its new
        holder's."""
        self._sure_until.pop(name, None)
        with self.database.writing() as session:
            session.execute(delete(Lease).where(Lease.name == name, Lease.holder == self.holder))
            session.commit()

    def _take(self, session: Session, name: str, ttl: float, dead: str | None) -> bool:
        now = self._now(session)
        expires_at = now + timedelta(seconds=ttl)
        inserted = session.execute(
            _insert(self.database.dialect)
            .values(name=name, holder=self.holder, expires_at=expires_at)
            .on_conflict_do_nothing(index_elements=[Lease.name])
        )
        if inserted.rowcount == 1:  # type: ignore[attr-defined]
            return True
        takeable: list[ColumnElement[bool]] = [Lease.holder == self.holder, Lease.expires_at < now]
        if dead is not None:
            takeable.append(Lease.holder == dead)
        taken = session.execute(
            update(Lease)
            .where(Lease.name == name, or_(*takeable))
            .values(holder=self.holder, expires_at=expires_at)
            .execution_options(synchronize_session=False)
        )
        return taken.rowcount == 1  # type: ignore[attr-defined]

    def _now(self, session: Session) -> datetime:
        """The database's clock where it has one of its own (see the module doc)."""
        if self.database.dialect == "postgresql":
            return session.scalars(select(func.now())).one()
        return datetime.now(UTC)


def _current(session: Session, name: str) -> Current | None:
    row = session.execute(
        select(Lease.holder, Lease.expires_at).where(Lease.name == name)
    ).one_or_none()
    return Current(row.holder, row.expires_at) if row is not None else None


def _insert(dialect: str) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can yield to a concurrent one (ON CONFLICT DO NOTHING), which both
    databases have but SQLAlchemy's generic insert does not."""
    return postgresql.insert(Lease) if dialect == "postgresql" else sqlite.insert(Lease)
