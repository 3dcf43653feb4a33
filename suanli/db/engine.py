"""Engine and sessions for SQLite (embedded default) and PostgreSQL.

SQLite in WAL mode survives a SIGKILL with every committed transaction intact. Its writers
must take the write lock when their transaction begins (BEGIN IMMEDIATE): a transaction that
reads first and upgrades to a write later fails at once with "database is locked" when another
writer committed in between, and the busy timeout cannot save it. Sessions opened for writing
therefore ask for it; read-only sessions keep SQLite's concurrent readers.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

WRITE_OPTION = "suanli_write"


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

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
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


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
