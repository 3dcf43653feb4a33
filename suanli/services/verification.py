"""Checksums checked again: a version on demand (`verify`), and every blob in the
background (the scrub, as ZFS scrubs its pools).

A blob whose bytes no longer hash to its name is marked `corrupt` (`missing` when its file is
gone); the `data.corrupt` alert event names it with a version and file that hold it.
"""

from sqlalchemy import select
from sqlalchemy.orm import Session

from suanli.data.store import BlobStore
from suanli.db.models import Blob, DataFile, utcnow
from suanli.schemas.data import VerifyOut


def verify_version(session: Session, store: BlobStore, version_id: int) -> VerifyOut:
    """Hash each distinct content of the version once; record what was found."""
    files = session.scalars(select(DataFile).where(DataFile.version_id == version_id)).all()
    found: dict[str, str] = {}
    checked = size = 0
    for entry in files:
        if entry.sha256 not in found:
            found[entry.sha256] = check_blob(session, store, entry.sha256)
            size += entry.size
        checked += 1
    session.commit()
    corrupt = [f.path for f in files if found[f.sha256] == "corrupt"]
    gone = [f.path for f in files if found[f.sha256] == "missing"]
    return VerifyOut(
        checked=checked, bytes=size, ok=not corrupt and not gone, corrupt=corrupt, missing=gone
    )


def check_blob(session: Session, store: BlobStore, sha256: str) -> str:
    """Hash one blob again and record its state and when; returns the state."""
    state = store.verify(sha256)
    blob = session.get(Blob, sha256)
    if blob is not None:
        blob.state = state
        blob.verified_at = utcnow()
    return state


def scrub(session: Session, store: BlobStore, budget_bytes: int) -> int:
    """Verify the blobs checked longest ago (never first), up to `budget_bytes` per call, so
    a scrub goes round the whole store in small steps. Returns the bytes read."""
    read = 0
    oldest = session.scalars(
        select(Blob).order_by(Blob.verified_at.is_not(None), Blob.verified_at).limit(1000)
    ).all()
    for blob in oldest:
        if read and read + blob.size > budget_bytes:
            break
        check_blob(session, store, blob.sha256)
        session.commit()
        read += blob.size
    return read
