"""The SSH gateway's keys, kept in the data directory so that they survive restarts: its host
key (users' clients remember it) and its client key (the one key every agent's sshd accepts).
"""

import os
from pathlib import Path

import asyncssh


def _load_or_make(path: Path) -> asyncssh.SSHKey:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = asyncssh.generate_private_key("ssh-ed25519")
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(key.export_private_key())
        temporary.replace(path)  # two processes starting at once: the last one's key wins
    return asyncssh.read_private_key(path)


def host_key(data_dir: Path) -> asyncssh.SSHKey:
    return _load_or_make(data_dir / "ssh" / "host_ed25519_key")


def client_key(data_dir: Path) -> asyncssh.SSHKey:
    return _load_or_make(data_dir / "ssh" / "gateway_ed25519_key")


def public_line(key: asyncssh.SSHKey) -> str:
    return key.export_public_key().decode().strip()
