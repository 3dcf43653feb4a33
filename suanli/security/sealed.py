"""Secrets the server must keep to use later (an import's S3 keys or password), sealed.

They are encrypted (Fernet: AES-128-CBC with an HMAC) with a key that lives in the data
directory (`keys/sealing.key`, 0600), never in the database: a copy of the database alone —
a backup, a replica, a dump handed to support — reveals none of them.
"""

import contextlib
import json
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


class Unsealable(Exception):
    """Sealed with another key (a database restored without its data directory's keys)."""


def key_path(data_dir: Path) -> Path:
    return data_dir / "keys" / "sealing.key"


def _key(data_dir: Path) -> bytes:
    path = key_path(data_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(Fernet.generate_key())
        with contextlib.suppress(FileExistsError):  # two at once: the first key stays
            os.link(temporary, path)
        temporary.unlink()
    return path.read_bytes().strip()


def seal(data_dir: Path, values: dict[str, str]) -> str:
    if not values:
        return ""
    return Fernet(_key(data_dir)).encrypt(json.dumps(values).encode()).decode()


def unseal(data_dir: Path, sealed: str) -> dict[str, str]:
    if not sealed:
        return {}
    try:
        return json.loads(Fernet(_key(data_dir)).decrypt(sealed.encode()))
    except InvalidToken:
        raise Unsealable("sealed with another key") from None
