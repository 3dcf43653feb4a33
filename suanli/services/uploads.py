"""Resumable uploads (the tus protocol's state): one file into a project, until it is a blob.

An upload is created with its length, which is checked against the project's storage
before a byte is accepted, and reserved (all of it) until it ends. Its bytes go to a file in
the store's incoming/ folder; the file's size on disk is the truth about how much arrived (a
request cut off halfway keeps what it wrote, and the client resumes from there). When the
last byte is in,
the file is hashed (as it streamed in, where the server saw it all), moved into the store
and held by the project; the client then names it by sha256 in a version's manifest.

Only its creator sees an upload: any other caller gets 404. Unfinished uploads expire.
"""

import contextlib
import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from suanli.core.errors import Conflict, InvalidInput, NotFound
from suanli.core.roles import ProjectRole
from suanli.data.store import BlobStore
from suanli.db.models import Upload, utcnow
from suanli.services import data
from suanli.services.actor import Actor
from suanli.services.projects import access, writable

LIFETIME = timedelta(hours=24)
MAX_LENGTH = 2**53 - 1
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def create(
    session: Session,
    actor: Actor,
    store: BlobStore,
    project_name: str,
    length: int,
    filename: str,
) -> Upload:
    """A new upload; an empty file is complete at once (tus clients send no PATCH for it)."""
    project, _ = access(session, actor, project_name, ProjectRole.member)
    writable(project)
    if not 0 <= length <= MAX_LENGTH:
        raise InvalidInput("error.upload_length", field="Upload-Length")
    data.check_room(session, project, length, "Upload-Length")
    upload = Upload(
        id=secrets.token_hex(16),
        project_id=project.id,
        user_id=actor.account.id,
        length=length,
        filename=filename[:1024],
        expires_at=utcnow() + LIFETIME,
    )
    session.add(upload)
    session.commit()
    if length == 0:
        file_of(store, upload).touch()
        return finish(session, store, upload, EMPTY_SHA256)
    return upload


def get(session: Session, actor: Actor, upload_id: str) -> Upload:
    upload = session.get(Upload, upload_id) if len(upload_id) == 32 else None
    if upload is None or upload.user_id != actor.account.id or upload.expires_at < utcnow():
        raise NotFound("error.upload_not_found")
    return upload


def file_of(store: BlobStore, upload: Upload) -> Path:
    return store.incoming / f"upload-{upload.id}"


def arrived(store: BlobStore, upload: Upload) -> int:
    """Bytes on disk: what a resumed upload continues from."""
    try:
        return min(file_of(store, upload).stat().st_size, upload.length)
    except FileNotFoundError:
        return 0


def check_offset(store: BlobStore, upload: Upload, offset: int) -> int:
    """A PATCH must continue exactly where the bytes end (409 otherwise, as tus says)."""
    if upload.sha256 is not None:
        raise Conflict("error.upload_complete")
    now = arrived(store, upload)
    if offset != now:
        raise Conflict("error.upload_offset", offset=offset, expected=now)
    return now


@dataclass
class Writer:
    """Appends one PATCH's bytes; hashes them too when it saw every byte from the start."""

    path: Path
    offset: int
    length: int
    hasher: Any = None
    stream: Any = field(default=None, repr=False)

    def open(self, hashers: dict[str, Any], upload_id: str) -> None:
        self.stream = self.path.open("ab")
        self.stream.truncate(self.offset)  # bytes beyond what was acknowledged are dropped
        kept = hashers.pop(upload_id, None)
        if self.offset == 0:
            self.hasher = hashlib.sha256()
        elif kept is not None and kept[0] == self.offset:
            self.hasher = kept[1]

    def write(self, chunk: bytes | bytearray) -> None:
        if self.offset + len(chunk) > self.length:
            raise InvalidInput("error.upload_overflow", field="body", length=self.length)
        self.stream.write(chunk)
        if self.hasher is not None:
            self.hasher.update(chunk)
        self.offset += len(chunk)

    def close(self, hashers: dict[str, Any], upload_id: str) -> str | None:
        """The sha256 when this was the last byte and every byte was hashed here."""
        with contextlib.suppress(Exception):
            self.stream.close()
        if self.hasher is None:
            return None
        if self.offset < self.length:
            hashers[upload_id] = (self.offset, self.hasher)
            return None
        return self.hasher.hexdigest()


def finish(session: Session, store: BlobStore, upload: Upload, sha256: str | None) -> Upload:
    """The complete file into the store, held by the project (hashed here if it was not
    while it streamed in)."""
    sha256, size = store.add(file_of(store, upload), sha256)
    data.hold(session, upload.project_id, sha256, size)
    upload.offset = size
    upload.sha256 = sha256
    session.commit()
    return upload


def remove(session: Session, store: BlobStore, upload: Upload) -> None:
    with contextlib.suppress(FileNotFoundError):
        file_of(store, upload).unlink()
    session.delete(upload)
    session.commit()


def expire(session: Session, store: BlobStore) -> int:
    """Drop uploads past their lifetime (and their bytes); returns how many."""
    old = session.scalars(select(Upload).where(Upload.expires_at < utcnow())).all()
    for upload in old:
        with contextlib.suppress(FileNotFoundError):
            file_of(store, upload).unlink()
        session.delete(upload)
    session.commit()
    return len(old)
