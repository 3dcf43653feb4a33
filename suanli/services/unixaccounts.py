"""Whose Unix account a workload runs under, and the accounts the server makes itself.

Workloads run code nobody reviewed. What keeps it away from the platform's state (the data
directory, 0700, and the database and keys in it, 0600) and from other users' workloads is the
kernel's own rule: a process of one Unix user can read neither the files nor the processes
(`/proc/<pid>/environ`, signals, ptrace) of another. So, when the server runs as root, every
Suanli user's workloads run as that user's own Unix account (docs/admin-guide.md, "Security model"):

- the account `unix_users[user]` where the administrator mapped one (an existing account,
  e.g. from LDAP; on Slurm the cluster's accounts);
- else an account the server creates the first time the user's work starts, as JupyterHub's
  `LocalAuthenticator(create_system_users=True)` does: `sl-<user>` with a home of its own under
  `unix_home_root` (mode 0700) and a group of its own.

Never root, never the server's own user. A server that is not root cannot switch users, and
a server told `workload_identity = "server"` does not: their workloads run as the server's own
user (`None` here), which the console's banner tells administrators.
"""

import hashlib
import logging
import os
import pwd
import subprocess
import threading
from pathlib import Path

from suanli.config import Settings

log = logging.getLogger(__name__)

PREFIX = "sl-"
MAX_NAME = 32  # useradd's limit
_creating = threading.Lock()


class AccountError(Exception):
    """The workload cannot run as the account it must run as; the text says why."""


def managed_name(user: str) -> str:
    """The account the server makes for `user`: `sl-<user>`, shortened with a hash where the
    Suanli name (up to 32 characters) would pass useradd's 32."""
    name = PREFIX + user
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(user.encode()).hexdigest()[:8]
    return f"{PREFIX}{user[: MAX_NAME - len(PREFIX) - 9].rstrip('-')}-{digest}"


def account_of(settings: Settings, user: str) -> str | None:
    """The Unix account `user`'s workloads run as; None: the server's own user."""
    if user in settings.unix_users:
        return settings.unix_users[user]
    if settings.isolated:
        return managed_name(user)
    return None


def ensure(settings: Settings, account: str, user: str) -> pwd.struct_passwd | None:
    """The account's entry, made first where it is one of ours and missing; None for a mapped
    account this host does not know (a cluster's nodes may: their engine decides, and the
    local backend refuses). Refuses root and the server's own user whatever the mapping says."""
    try:
        entry = pwd.getpwnam(account)
    except KeyError:
        if account != managed_name(user) or not settings.isolated:
            return None
        entry = _create(settings, account, user)
    if entry.pw_uid == 0:
        raise AccountError(f"refusing to run as {account!r}: workloads never run as root")
    if entry.pw_uid == os.geteuid():
        raise AccountError(f"refusing to run as {account!r}, the server's own user")
    return entry


def _create(settings: Settings, account: str, user: str) -> pwd.struct_passwd:
    with _creating:
        try:
            return pwd.getpwnam(account)
        except KeyError:
            pass
        home = Path(settings.unix_home_root) / account
        home.parent.mkdir(parents=True, exist_ok=True)
        command = [
            "useradd",
            "--create-home",
            "--home-dir",
            str(home),
            "--shell",
            "/bin/bash",
            "--user-group",
            "--comment",
            f"Suanli user {user}",
            account,
        ]
        result = subprocess.run(  # noqa: S603 - an argument vector of our own
            command, capture_output=True, text=True, timeout=60, check=False
        )
        if result.returncode != 0:
            why = (result.stderr or result.stdout).strip() or f"exit code {result.returncode}"
            raise AccountError(f"could not create the Unix user {account!r}: {why}")
        home.chmod(0o700)
        log.info("created the Unix account %s for user %s (home %s)", account, user, home)
        return pwd.getpwnam(account)


def reachable_by_others(path: Path) -> bool:
    """Can another user's process reach `path` (every folder above it searchable by others)?
    For the interpreter and the code that workloads of other accounts must run."""
    path = Path(path).resolve()
    for folder in [*reversed(path.parents), path]:
        try:
            mode = folder.stat().st_mode
        except OSError:
            return False
        if folder != path and not mode & 0o001:
            return False
    return bool(path.stat().st_mode & 0o005)
