"""Resumable uploads over the tus protocol (1.0.0, with its creation and termination
extensions), the way `tus-js-client` and `tuspy` speak it; and which contents a project
lacks, so that a client sends only those.

POST /uploads with `Upload-Length` and `Upload-Metadata` (`project`, `filename`) makes an
upload (refused before a byte is sent when the project's storage has no room); PATCH sends
bytes from `Upload-Offset`; HEAD says how far it got (resume from there); DELETE discards it.
When the last byte is in, the answer carries `Upload-Sha256`: a version's manifest names the
file by it. The body streams to disk in large writes made in a worker thread: memory stays
flat and the event loop is never blocked, whatever the size.
"""

import asyncio
import base64
import binascii
import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from suanli.api.deps import CallerDep, SessionDep, StoreDep
from suanli.api.routes.projects import ProjectName
from suanli.core.errors import InvalidInput
from suanli.data.store import BlobStore
from suanli.db.engine import Database
from suanli.db.models import Upload
from suanli.schemas.data import MissingQuery
from suanli.services import data, uploads
from suanli.services.actor import Actor
from suanli.services.projects import access

router = APIRouter(prefix="/uploads", tags=["uploads"])
# A project's contents, asked before an upload (under /projects: no upload id to clash with).
held = APIRouter(prefix="/projects", tags=["uploads"])
TUS_VERSION = "1.0.0"
TUS = {"Tus-Resumable": TUS_VERSION}
UploadId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
# Writes of this size reach the disk from a worker thread.
BUFFER = 4 << 20
# Hashes of uploads whose PATCHes arrive in order, kept between requests of one upload.
_hashers: dict[str, Any] = {}


def metadata(header: str) -> dict[str, str]:
    """`Upload-Metadata`: comma-separated `key base64(value)` pairs."""
    result = {}
    for pair in filter(None, (part.strip() for part in header.split(","))):
        key, _, value = pair.partition(" ")
        try:
            result[key] = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidInput("error.upload_metadata", field="Upload-Metadata", key=key) from None
    return result


def headers_of(upload: Upload, offset: int) -> dict[str, str]:
    headers = {
        **TUS,
        "Upload-Offset": str(offset),
        "Upload-Length": str(upload.length),
        "Cache-Control": "no-store",
    }
    if upload.sha256:
        headers["Upload-Sha256"] = upload.sha256
    return headers


@router.options("", include_in_schema=False)
@router.options("/{upload_id}", include_in_schema=False)
def capabilities() -> Response:
    return Response(
        status_code=204,
        headers={
            **TUS,
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": "creation,termination",
            "Tus-Max-Size": str(uploads.MAX_LENGTH),
        },
    )


@router.post("", status_code=201)
def create(
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    store: StoreDep,
    upload_length: Annotated[int, Header(ge=0, le=uploads.MAX_LENGTH)],
    upload_metadata: Annotated[str, Header(max_length=8192)] = "",
) -> Response:
    """Start an upload of `Upload-Length` bytes into the project the metadata names."""
    upload = start(session, store, caller.actor, upload_length, upload_metadata)
    location = str(request.url_for("upload_offset", upload_id=upload.id))
    return created(upload, location)


def start(session: Session, store: BlobStore, actor: Actor, length: int, header: str) -> Upload:
    """A POST's upload from its headers: the API's route and the console's both call this."""
    given = metadata(header)
    project = given.get("project", "")
    if not project:
        raise InvalidInput("error.upload_project", field="Upload-Metadata")
    return uploads.create(session, actor, store, project, length, given.get("filename", ""))


def created(upload: Upload, location: str) -> Response:
    """201 with where to send the bytes (and the sha256 of an empty file, complete at once)."""
    headers = {**TUS, "Location": location, "Upload-Offset": str(upload.offset)}
    if upload.sha256:
        headers["Upload-Sha256"] = upload.sha256
    return Response(status_code=201, headers=headers)


@router.head("/{upload_id}", name="upload_offset")
def offset(
    upload_id: UploadId, caller: CallerDep, session: SessionDep, store: StoreDep
) -> Response:
    """How many bytes arrived: a client resumes from there."""
    upload = uploads.get(session, caller.actor, upload_id)
    done = upload.length if upload.sha256 else uploads.arrived(store, upload)
    return Response(status_code=200, headers=headers_of(upload, done))


@router.patch("/{upload_id}", status_code=204)
async def append(
    upload_id: UploadId,
    request: Request,
    caller: CallerDep,
    store: StoreDep,
    upload_offset: Annotated[int, Header(ge=0, le=uploads.MAX_LENGTH)],
    content_type: Annotated[str, Header()] = "",
) -> Response:
    """Bytes from `Upload-Offset` (which must be where they end now: 409 otherwise)."""
    return await receive(request, store, caller.actor, upload_id, upload_offset, content_type)


async def receive(
    request: Request,
    store: BlobStore,
    actor: Actor,
    upload_id: str,
    offset: int,
    content_type: str,
) -> Response:
    """A PATCH's body onto the upload: the API's route and the console's (which checks its
    own caller first) both call this."""
    if content_type != "application/offset+octet-stream":
        raise InvalidInput("error.upload_content_type", field="Content-Type")
    database: Database = request.app.state.database
    upload, writer = await run_in_threadpool(_open, database, store, actor, upload_id, offset)
    complete = None
    # One buffer is written (and hashed) in a worker thread while the next one arrives.
    writing: asyncio.Future[None] | None = None
    try:
        buffer = bytearray()
        try:
            async for chunk in request.stream():
                buffer += chunk
                if len(buffer) >= BUFFER:
                    if writing is not None:
                        await writing
                    full, buffer = buffer, bytearray()
                    writing = asyncio.ensure_future(run_in_threadpool(writer.write, full))
        except ClientDisconnect:
            pass  # what arrived is kept: the client resumes from it
        if writing is not None:
            await writing
        if buffer:
            await run_in_threadpool(writer.write, buffer)
    finally:
        if writing is not None and not writing.done():
            with contextlib.suppress(Exception):
                await writing
        complete = await run_in_threadpool(writer.close, _hashers, upload_id)
    if writer.offset == upload.length:
        upload = await run_in_threadpool(_finish, database, store, upload, complete)
    return Response(status_code=204, headers=headers_of(upload, writer.offset))


def _open(
    database: Database, store: BlobStore, actor: Actor, upload_id: str, offset: int
) -> tuple[Upload, uploads.Writer]:
    with database.reading() as session:
        upload = uploads.get(session, actor, upload_id)
        uploads.check_offset(store, upload, offset)
        session.expunge(upload)
    writer = uploads.Writer(uploads.file_of(store, upload), offset, upload.length)
    writer.open(_hashers, upload_id)
    return upload, writer


def _finish(database: Database, store: BlobStore, upload: Upload, sha256: str | None) -> Upload:
    """The last byte is in. Only then is the row written: how far an upload got is the size
    of its file (a PATCH costs no database write, and a cut one leaves nothing to mend)."""
    with database.writing() as session:
        return uploads.finish(session, store, session.merge(upload), sha256)


@router.delete("/{upload_id}", status_code=204)
def discard(
    upload_id: UploadId, caller: CallerDep, session: SessionDep, store: StoreDep
) -> Response:
    """Discard an upload and what arrived of it."""
    uploads.remove(session, store, uploads.get(session, caller.actor, upload_id))
    return Response(status_code=204, headers=TUS)


@held.post("/{name}/contents/missing", response_model=list[str])
def missing(
    name: ProjectName, query: MissingQuery, caller: CallerDep, session: SessionDep
) -> list[str]:
    """Which of these sha256 the project does not hold: upload only those, then name them
    all in the version."""
    project, _ = access(session, caller.actor, name)
    return data.missing(session, project, query.sha256)
