"""SSH public keys of users: what the SSH gateway recognises them by.

A key is stored as its OpenSSH line (type and base64, no comment) with its SHA-256
fingerprint; a fingerprint belongs to one user, so a key says who is connecting.
"""

from collections.abc import Sequence

import asyncssh
from sqlalchemy import select
from sqlalchemy.orm import Session

from suanli.core.errors import Conflict, InvalidInput, NotFound
from suanli.db.models import SshKey, User, utcnow
from suanli.services import audit
from suanli.services.actor import Actor
from suanli.services.common import commit
from suanli.services.tokens import LAST_USED_PRECISION

MIN_RSA_BITS = 2048
MAX_KEYS_PER_USER = 50


def parse(line: str) -> asyncssh.SSHKey:
    """One public key line; private keys, certificates and weak RSA keys are refused."""
    line = line.strip()
    if "PRIVATE KEY" in line:
        raise InvalidInput("error.ssh_key_private", field="public_key")
    try:
        key = asyncssh.import_public_key(line)
    except (asyncssh.KeyImportError, ValueError, TypeError):
        raise InvalidInput("error.ssh_key_invalid", field="public_key") from None
    algorithm = key.get_algorithm()
    bits = getattr(getattr(key, "pyca_key", None), "key_size", 0)
    if algorithm == "ssh-rsa" and bits < MIN_RSA_BITS:
        raise InvalidInput("error.ssh_key_weak", field="public_key", bits=bits, min=MIN_RSA_BITS)
    return key


def add(session: Session, actor: Actor, line: str, name: str) -> SshKey:
    key = parse(line)
    fingerprint = key.get_fingerprint("sha256")
    if session.scalar(select(SshKey.id).where(SshKey.fingerprint == fingerprint)) is not None:
        raise Conflict("error.ssh_key_exists", field="public_key", fingerprint=fingerprint)
    if len(list_mine(session, actor)) >= MAX_KEYS_PER_USER:
        raise InvalidInput("error.ssh_key_too_many", field="public_key", max=MAX_KEYS_PER_USER)
    comment = key.get_comment() or ""
    row = SshKey(
        user_id=actor.account.id,
        name=name or comment[:128] or key.get_algorithm(),
        algorithm=key.get_algorithm(),
        public_key=" ".join(key.export_public_key().decode().split()[:2]),
        fingerprint=fingerprint,
    )
    session.add(row)
    audit.record(
        session,
        actor,
        "ssh_key.add",
        target_type="ssh_key",
        target=fingerprint,
        detail={"name": row.name},
    )
    commit(session, "error.ssh_key_exists", fingerprint=fingerprint)
    return row


def list_mine(session: Session, actor: Actor) -> Sequence[SshKey]:
    return session.scalars(
        select(SshKey).where(SshKey.user_id == actor.account.id).order_by(SshKey.id)
    ).all()


def remove(session: Session, actor: Actor, key_id: int) -> None:
    row = session.get(SshKey, key_id)
    if row is None or row.user_id != actor.account.id:
        raise NotFound("error.ssh_key_not_found", id=key_id)
    session.delete(row)
    audit.record(session, actor, "ssh_key.remove", target_type="ssh_key", target=row.fingerprint)
    commit(session, "error.conflict")


def owner_of(session: Session, key: asyncssh.SSHKey) -> User | None:
    """The enabled user a key belongs to (its last use noted, to the precision tokens have)."""
    row = session.scalar(select(SshKey).where(SshKey.fingerprint == key.get_fingerprint("sha256")))
    if row is None:
        return None
    user = session.get(User, row.user_id)
    if user is None or user.is_disabled:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_PRECISION:
        row.last_used_at = now
        session.commit()
    return user
