"""Imports in the background: fetch a source, store what came, make the version.

Each queued import runs in a worker thread of its own (at most `imports_at_once`): the
source is fetched into a staging folder in the store's incoming/ (kept across retries, so an
http download resumes where it stopped), every file is hashed into the store and held by the
project, and the version is made from them — all or nothing: a failed or cancelled import
leaves no version. Progress and a cancel request go through the import's row, read at most
once a second. A server that stops mid-import leaves it `running`: the next holder of this
loop's lease queues it again, and it resumes.
"""

import logging
import os
import shutil
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from suanli.config import Settings
from suanli.core.errors import SuanliError
from suanli.data import paths
from suanli.data.archives import PARTIAL_DIR
from suanli.data.sources import Cancelled, ImportFailed, fetch
from suanli.data.store import BlobStore
from suanli.db.engine import Database
from suanli.db.models import DataImport, Repository, User, utcnow
from suanli.schemas.data import ManifestEntry, VersionCreate
from suanli.schemas.imports import ImportSource
from suanli.security import sealed
from suanli.services import data
from suanli.services import imports as service
from suanli.services.actor import Actor

log = logging.getLogger("suanli.imports")
REPORT_EVERY = 1.0  # seconds between two writes of progress (and reads of a cancel)


class ImportController:
    name = "imports"

    def __init__(self, settings: Settings, database: Database, store: BlobStore) -> None:
        self.settings = settings
        self.database = database
        self.store = store
        self.interval = 5.0
        self.pool = ThreadPoolExecutor(settings.imports_at_once, thread_name_prefix="import")
        self.active: set[int] = set()
        self.lock = threading.Lock()

    def tick(self) -> None:
        with self.database.writing() as session:
            with self.lock:
                mine = set(self.active)
            # Running here before a restart, or in a server that is gone: again.
            for row in session.scalars(
                select(DataImport).where(DataImport.state == service.RUNNING)
            ):
                if row.id not in mine:
                    row.state = service.QUEUED
            free = self.settings.imports_at_once - len(mine)
            queued = session.scalars(
                select(DataImport)
                .where(DataImport.state == service.QUEUED)
                .order_by(DataImport.id)
                .limit(max(free, 0))
            ).all()
            for row in queued:
                row.state, row.started_at = service.RUNNING, utcnow()
                row.attempts += 1
            session.commit()
            started = [row.id for row in queued]
        for import_id in started:
            with self.lock:
                self.active.add(import_id)
            self.pool.submit(self._run, import_id)

    def staging(self, import_id: int) -> Path:
        return self.store.incoming / f"import-{import_id}"

    def _run(self, import_id: int) -> None:
        try:
            self._import(import_id)
        except Exception:
            log.exception("import %s failed", import_id)
            self._end(import_id, service.FAILED, "error.import.internal", {})
        finally:
            with self.lock:
                self.active.discard(import_id)

    def _import(self, import_id: int) -> None:
        with self.database.reading() as session:
            row = session.get(
                DataImport,
                import_id,
                options=[selectinload(DataImport.repository).selectinload(Repository.project)],
            )
            if row is None:  # its repository was deleted meanwhile
                return
            secrets = sealed.unseal(self.settings.data_dir, row.sealed)
            source = ImportSource.model_validate({**row.source, **secrets})
            room = data.room_left(session, row.repository.project)
        into = self.staging(import_id)
        report = _Reporter(self.database, import_id)
        try:
            fetch(
                source,
                into,
                progress=report.progress,
                cancelled=report.cancelled,
                limit_bytes=room,
                allow_private=self.settings.imports_allow_private,
            )
            version = self._commit(import_id, into, report)
        except Cancelled:
            shutil.rmtree(into, ignore_errors=True)
            self._end(import_id, service.CANCELLED, "", {})
            return
        except ImportFailed as error:
            self._end(import_id, service.FAILED, error.key, error.params)
            return
        except SuanliError as error:  # the version refused (quota, a name that cannot be)
            self._end(import_id, service.FAILED, error.key, error.params)
            return
        shutil.rmtree(into, ignore_errors=True)
        self._end(import_id, service.SUCCEEDED, "", {}, version)

    def _commit(self, import_id: int, into: Path, report: "_Reporter") -> int:
        """Every fetched file into the store, then the version from them."""
        found = sorted(_files(into))
        with self.database.writing() as session:
            row = session.get(
                DataImport,
                import_id,
                options=[selectinload(DataImport.repository).selectinload(Repository.project)],
            )
            if row is None:  # its repository was deleted meanwhile
                raise Cancelled()
            user = session.get(User, row.user_id) if row.user_id else None
            if user is None or user.is_disabled:
                raise ImportFailed("error.import.user_gone")
            repository = row.repository
            data.check_room(session, repository.project, sum(s for _, s in found), "source")
            entries = []
            for path, _ in found:
                if report.cancelled():
                    raise Cancelled()
                sha256, size = self.store.add(into / path)
                data.hold(session, repository.project_id, sha256, size)
                entries.append(ManifestEntry(path=path, sha256=sha256, size=size))
            version = data.create_version(
                session,
                Actor(user),
                self.store,
                repository,
                VersionCreate(message=row.message or _message(row.source), files=entries),
                source="import",
            )
            return version.id

    def _end(
        self,
        import_id: int,
        state: str,
        key: str,
        params: dict[str, object],
        version_id: int | None = None,
    ) -> None:
        with self.database.writing() as session:
            row = session.get(DataImport, import_id)
            if row is None:
                return
            row.state, row.ended_at = state, utcnow()
            row.error_key, row.error_params = key, {k: str(v) for k, v in params.items()}
            row.version_id = version_id
            session.commit()


class _Reporter:
    """Progress into the row and cancel requests out of it, at most once a second each."""

    def __init__(self, database: Database, import_id: int) -> None:
        self.database = database
        self.import_id = import_id
        self.last_write = self.last_read = 0.0
        self.asked = False

    def progress(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self.last_write < REPORT_EVERY and done != total:
            return
        self.last_write = now
        with self.database.writing() as session:
            row = session.get(DataImport, self.import_id)
            if row is not None:
                row.done_bytes, row.total_bytes = done, total
                session.commit()

    def cancelled(self) -> bool:
        now = time.monotonic()
        if not self.asked and now - self.last_read >= REPORT_EVERY:
            self.last_read = now
            with self.database.reading() as session:
                row = session.get(DataImport, self.import_id)
                self.asked = row is None or row.cancel_requested
        return self.asked


def _files(into: Path) -> list[tuple[str, int]]:
    """The fetched files (relative path, size), never following a link."""
    found = []
    for folder, folders, names in os.walk(into):
        folders[:] = [name for name in folders if name != PARTIAL_DIR]
        for name in names:
            full = Path(folder) / name
            info = full.lstat()
            if not stat.S_ISREG(info.st_mode):
                continue
            relative = full.relative_to(into).as_posix()
            try:
                found.append((paths.check(relative), info.st_size))
            except paths.BadPath:
                raise ImportFailed("error.import.bad_name", path=relative) from None
    return found


def _message(source: dict[str, object]) -> str:
    return f"import from {source.get('url', '')}"
