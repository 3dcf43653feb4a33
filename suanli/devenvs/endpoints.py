"""What the server tells the agent (its configuration) and what the agent tells the server
(where its tools listen). Plain JSON on both sides: the agent imports no more than it must.
"""

import hashlib
import json
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# The agent reads its configuration from this variable and removes it from its environment
# before it starts anything, so the users' shells never see the tools' token.
CONFIG_VARIABLE = "SUANLI_DEVENV_CONFIG"
ENDPOINTS_FILE = "endpoints.json"
MAX_ENDPOINTS_BYTES = 64 * 1024


def source_root() -> str:
    """Where this `suanli` is imported from: the agent must import the server's own code,
    also when the server runs from a source tree."""
    return str(Path(__file__).resolve().parent.parent.parent)


def with_source(pythonpath: str) -> str:
    paths = [p for p in pythonpath.split(os.pathsep) if p and p != source_root()]
    return os.pathsep.join([source_root(), *paths])


def without_source(pythonpath: str) -> str:
    return os.pathsep.join(p for p in pythonpath.split(os.pathsep) if p and p != source_root())


# code-server's own session cookie: with `--auth password` and HASHED_PASSWORD set, it lets
# in a request whose cookie holds exactly that value. The agent sets it from the token and the
# proxy sends it: other accounts on the host, who can reach code-server's port on loopback,
# know neither.
CODE_SERVER_COOKIE = "code-server-session"


def code_server_secret(token: str) -> str:
    return hashlib.sha256(f"code-server:{token}".encode()).hexdigest()


def gateway_login(env_id: int) -> str:
    """The login the gateway uses on an environment's agent, and the only one it takes."""
    return f"env-{env_id}"


@dataclass(frozen=True)
class AgentConfig:
    env_id: int
    folder: str  # the environment's directory: the agent writes endpoints.json here
    tools: tuple[str, ...]
    token: str  # every tool's HTTP side asks for it; only the server's proxy sends it
    gateway_key: str  # the SSH gateway's public key: the only key the agent's sshd accepts
    bind: str  # 127.0.0.1 when the server runs on the same host; 0.0.0.0 on a cluster node
    workdir: str
    python: str  # the interpreter of the environment (JupyterLab and its kernels)
    prefix: str = ""  # a virtual or conda environment's prefix, put first on PATH
    code_server: str = ""  # the code-server executable, when the host has one

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, text: str) -> "AgentConfig":
        data = json.loads(text)
        data["tools"] = tuple(data["tools"])
        return cls(**data)


@dataclass(frozen=True)
class Endpoints:
    host: str  # where the server reaches the tools
    ports: dict[str, int] = field(default_factory=dict)  # tool → port
    ssh_host_key: str = ""  # the agent's sshd host key (OpenSSH public key line)

    def url(self, tool: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.ports[tool]}"


def write(folder: Path, endpoints: Endpoints) -> None:
    """Atomically: a reader sees the whole file or none."""
    temporary = folder / f".{ENDPOINTS_FILE}.{os.getpid()}"
    temporary.write_text(json.dumps(asdict(endpoints)), encoding="utf-8")
    temporary.replace(folder / ENDPOINTS_FILE)


def read(folder: Path) -> Endpoints | None:
    """What the agent wrote. The folder is its user's: the file may be a link to the
    platform's secrets, a pipe or a giant; none of these is followed, waited on or read."""
    try:
        fd = os.open(folder / ENDPOINTS_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            text = handle.read(MAX_ENDPOINTS_BYTES + 1)
        if len(text) > MAX_ENDPOINTS_BYTES:
            return None
        data: dict[str, Any] = json.loads(text)
        return Endpoints(
            host=str(data["host"]),
            ports={str(k): int(v) for k, v in data.get("ports", {}).items()},
            ssh_host_key=str(data.get("ssh_host_key", "")),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None
