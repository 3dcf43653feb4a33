"""Engine and sessions for SQLite (embedded default) and PostgreSQL.

SQLite in WAL mode survives a SIGKILL with every committed transaction intact. Its writers
must take the write lock when their transaction begins (BEGIN IMMEDIATE): a transaction that
reads first and upgrades to a write later fails at once with "database is locked" when another
writer committed in between, and the busy timeout cannot save it. Sessions opened for writing
therefore ask for it; read-only sessions keep SQLite's concurrent readers.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

WRITE_OPTION = "suanli_write"


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # Enough connections for every worker thread (AnyIO's pool has 40) and the loop.
        return create_engine(url, pool_pre_ping=True, pool_size=20, max_overflow=30)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"timeout": 30, "check_same_thread": False},
        pool_size=20,
        max_overflow=40,
    )
    writer = WriterQueue()

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see module doc).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if not connection.get_execution_options().get(WRITE_OPTION, False):
            connection.exec_driver_sql("BEGIN")
            return
        writer.enter(connection)
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            writer.leave(connection)
            raise

    @event.listens_for(engine, "commit")
    def _on_commit(connection: Connection) -> None:
        writer.leave(connection)

    @event.listens_for(engine, "rollback")
    def _on_rollback(connection: Connection) -> None:
        writer.leave(connection)

    return engine


class WriterQueue:
    """Writers of this process wait for SQLite's write lock here, woken the moment it is free,
    rather than in SQLite's busy handler, which polls with sleeps of up to 100 ms and turns a
    queue of writers into a lottery with second-long tails. Other processes (tools, tests)
    still meet the busy timeout.
    """

    WAIT_SECONDS = 30

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holder: Connection | None = None

    def enter(self, connection: Connection) -> None:
        if not self._lock.acquire(timeout=self.WAIT_SECONDS):
            raise OperationalError("BEGIN IMMEDIATE", None, TimeoutError("database is busy"))
        self._holder = connection

    def leave(self, connection: Connection) -> None:
        if self._holder is connection:
            self._holder = None
            self._lock.release()


class Database:
    """The engine plus sessions that read or write (see the module doc for why both)."""

    def __init__(self, url: str):
        self.engine = make_engine(url)
        self._reads = sessionmaker(self.engine, expire_on_commit=False)
        self._writes = sessionmaker(
            self.engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self, *, write: bool) -> Session:
        return (self._writes if write else self._reads)()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with self.session(write=False) as session:
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        with self.session(write=True) as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
