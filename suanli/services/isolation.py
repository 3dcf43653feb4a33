"""What isolates workloads from the platform on this server, checked at start.

`secure` makes the platform's own files private (docs/admin-guide.md, "Security model"): the data
directory 0700, the database, its journals, the SSH keys and the configuration file 0600;
what was more open is tightened and logged. `assess` says what does not hold here, for the log
and for the banner that administrators see on every console page.
"""

import logging
import os
import pwd
import sys
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from suanli.config import Settings
from suanli.services.unixaccounts import reachable_by_others

log = logging.getLogger(__name__)

_DATABASE_FILES = ("suanli.db", "suanli.db-wal", "suanli.db-shm", "suanli.db-journal")


@dataclass(frozen=True)
class Finding:
    key: str  # a catalogue key (web.isolation.*)
    params: dict[str, str]


def secure(settings: Settings) -> list[Path]:
    """Tighten what is too open; returns what was changed."""
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    wanted: list[tuple[Path, int]] = [(data_dir, 0o700), (data_dir / "ssh", 0o700)]
    wanted += [(data_dir / name, 0o600) for name in _DATABASE_FILES]
    ssh = data_dir / "ssh"
    if ssh.is_dir():
        wanted += [(key, 0o600) for key in sorted(ssh.iterdir()) if key.is_file()]
    config_file = os.environ.get("SUANLI_CONFIG")
    if config_file:
        wanted.append((Path(config_file), 0o600))
    changed = []
    for path, mode in wanted:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if info.st_uid == os.geteuid() and info.st_mode & 0o777 & ~mode:
            os.chmod(path, mode)
            changed.append(path)
            log.warning("%s was mode %o: now %o (only the server may read it)", path,
                        info.st_mode & 0o777, mode)  # fmt: skip
    return changed


def assess(settings: Settings) -> list[Finding]:
    """What does not hold here, in the words administrators read."""
    found = []
    user = pwd.getpwuid(os.geteuid()).pw_name
    if settings.workload_identity == "server":
        found.append(Finding("web.isolation.server_identity", {"user": user}))
    elif not settings.isolated:
        found.append(Finding("web.isolation.workstation", {"user": user}))
    if settings.isolated or settings.unix_users:
        agent = settings.devenv_agent_python or sys.executable
        if not reachable_by_others(Path(agent)):
            found.append(Finding("web.isolation.agent_unreachable", {"path": agent}))
    if _password_on_command_line(settings):
        found.append(Finding("web.isolation.password_on_command_line", {}))
    return found


def _password_on_command_line(settings: Settings) -> bool:
    """`--database-url postgresql://user:secret@…` can be read by every local user (and every
    workload) in the process list."""
    if not settings.database_url:
        return False
    password = make_url(settings.database_url).password
    return bool(password) and any(str(password) in arg for arg in sys.argv)
