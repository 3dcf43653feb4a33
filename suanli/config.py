"""Server settings: defaults, then an optional TOML file, then `SUANLI_*` variables, then flags.

The embedded default needs no settings at all: state lives in SQLite under the data directory.
"""

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_PORT = 8686


def default_data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "suanli"


class SimulatedGpus(BaseModel):
    """Devices declared for a machine without a GPU driver (demos, tests). They go through
    the same code paths as real GPUs and are shown as simulated everywhere."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1, le=64)
    model: str = "Simulated GPU"
    memory_bytes: int = Field(80 * 2**30, ge=2**30)


class Engine(BaseModel):
    """An engine a model service runs (vLLM, SGLang, llama.cpp's server, a team's own app),
    registered by an administrator. `command` is the argument vector of one replica, with
    placeholders filled at launch: {python} (the prefix's interpreter), {model} (the model
    version's folder), {name} (the name the gateway routes by), {host}, {port}. Its
    environment (`env`) may use the same and {token}: the secret only the gateway sends, so
    that other accounts on a node cannot call the engine directly (vLLM: VLLM_API_KEY)."""

    model_config = ConfigDict(extra="forbid")

    command: list[str] = Field(min_length=1)
    prefix: Path | None = None  # a virtual or conda environment the engine is installed in
    version: str = ""
    # openai: the gateway at /v1 routes to it by model name; http: the proxy by service name;
    # grpc, tcp: reached through a forwarded port.
    protocol: Literal["openai", "http", "grpc", "tcp"] = "openai"
    health: str = "/health"  # an HTTP path answering 200 once ready (http and openai)
    env: dict[str, str] = Field(default_factory=dict)
    # Arguments that make the engine listen on a Unix socket ({socket}) instead of a port,
    # added where the replica runs on this host (the local backend): the socket is in the
    # replica's own folder (mode 700), so only its account and the server reach it — not the
    # other accounts on the host, as they would a port on loopback. vLLM: ["--uds", "{socket}"].
    socket_args: list[str] = Field(default_factory=list)


class Trainer(BaseModel):
    """A fine-tuning stack registered by an administrator: LLaMA-Factory installed in a
    virtual environment (`scripts/engine-llamafactory`), whose `llamafactory-cli` a run
    starts. `env` is added to every run's environment (an offline hub, a cache folder)."""

    model_config = ConfigDict(extra="forbid")

    prefix: Path
    version: str = ""
    env: dict[str, str] = Field(default_factory=dict)


class SlurmSettings(BaseModel):
    """How to reach a Slurm cluster (backend = "slurm"). See docs/admin-guide.md, "Slurm:
    more than one server"."""

    model_config = ConfigDict(extra="forbid")

    # slurmrestd: http(s)://host:port or unix:/path/to/socket (with JWT authentication).
    # Empty: Slurm's command-line tools (sbatch, squeue, sinfo, scancel) on this host.
    rest_url: str = Field("", pattern=r"^(|https?://\S+|unix:/\S+)$")
    rest_api: str = Field("v0.0.38", pattern=r"^v\d+\.\d+\.\d+$")
    # slurm.conf for the tools (scontrol token, sbatch, ...) and for the jobs' srun; empty:
    # Slurm's default (/etc/slurm/slurm.conf or configless).
    conf: str = ""
    # Reads, signals and cancels go as this user (it must see every job): SlurmUser or root.
    # Submissions go as the job's own Unix user (see Settings.unix_users), never as root.
    service_user: str = Field("root", pattern=r"^[a-z_][a-z0-9_.-]{0,31}$")
    token_lifespan_seconds: int = Field(3600, ge=60, le=86400)
    # The partition of jobs that name no pool; empty: Slurm's default partition.
    partition: str = ""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SUANLI_", extra="forbid", env_nested_delimiter="__"
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    # Empty means SQLite at <data_dir>/suanli.db; PostgreSQL as postgresql+psycopg://...
    database_url: str = ""
    host: str = "127.0.0.1"
    # 0 asks the system for a free port; the URL printed at start names the one chosen.
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    # Public URL printed at start and used in links; derived from host and port when empty.
    public_url: str = ""

    # Addresses of reverse proxies whose X-Forwarded-For/-Proto headers are believed
    # (comma-separated, "*" for any). Empty: the peer's own address is recorded and throttled,
    # and nobody can claim another address by sending the header.
    forwarded_allow_ips: str = ""

    # The largest request body (JSON, forms) read from a client; larger is refused with 413
    # before it is read. The dev environments' proxy (/x/) streams bodies through unlimited.
    max_request_body_bytes: int = Field(2**20, ge=1024, le=2**30)

    admin_username: str = "admin"
    # When empty on first start, a password is generated and printed once.
    admin_password: SecretStr = SecretStr("")

    # Anyone may create projects, or only administrators.
    users_can_create_projects: bool = False

    # A token from `suanli login` lives this long; API tokens choose their own expiry.
    session_token_days: int = Field(30, ge=1, le=3650)

    # Login throttling: this many failures inside the window lock the name or address.
    login_max_failures_per_user: int = Field(5, ge=1)
    login_max_failures_per_address: int = Field(20, ge=1)
    login_failure_window_seconds: int = Field(900, ge=1)
    login_lockout_seconds: int = Field(900, ge=1)

    # e.g. SUANLI_SIMULATED_GPUS='[{"count": 4, "model": "A100", "memory_bytes": 85899345920}]'
    # Used only where NVML finds no GPU.
    simulated_gpus: list[SimulatedGpus] = Field(default_factory=list)

    # Whose Unix identity workloads run under (docs/admin-guide.md, "Security model"). "own":
    # when the server runs as root, each user's workloads run as that user's own Unix account —
    # unix_users[U] where mapped, else an account the server creates itself (sl-<user>, home
    # under unix_home_root) — never as root and never as the server's user. A server that is
    # not root cannot switch users: its workloads run as its own user and nothing isolates
    # them from the platform (a workstation; the console says so to administrators).
    # "server": every workload runs as the server's user, also as root — only for a machine
    # that one trusted person uses (the test suite does, to write into its own folders).
    workload_identity: Literal["own", "server"] = "own"
    # Jobs of Suanli user U run as Unix user unix_users[U] (e.g. accounts from the
    # organisation's LDAP, required on Slurm, whose nodes know only the cluster's accounts).
    # When this map is set, a user without an entry cannot submit.
    unix_users: dict[str, str] = Field(default_factory=dict)
    # Where the accounts the server creates get their home directories.
    unix_home_root: Path = Path("/home")
    # The workloads' own folders (one per workload, owned by its Unix account: its script,
    # its log, its dev environment's endpoints) and the MPS pipes. Never inside data_dir,
    # which no workload may reach. Empty: /var/lib/suanli/work when workloads run as other
    # accounts than the server's, else <data_dir>/work. On Slurm: on a filesystem that every
    # node mounts at the same path.
    work_dir: Path | None = None
    # Removed: fractional jobs run as their own users now (see suanli/backends/local/mps.py).
    mps_user: str = ""

    # Where workloads run: "local" (processes on this host) or "slurm" (a Slurm cluster that
    # places them; see `slurm`). With Slurm, the data directory must be on a filesystem
    # that every node mounts at the same path: jobs' scripts and logs live there.
    backend: Literal["local", "slurm"] = "local"
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)

    # How often the backend's nodes and GPUs are read again (seconds).
    inventory_interval_seconds: float = Field(60.0, ge=1, le=3600)

    # Node and GPU telemetry: how often to collect (seconds). Time series are kept raw for a
    # day, as one-minute means for 30 days and hourly means for a year.
    metrics_interval_seconds: float = Field(10.0, ge=1, le=3600)

    # Dev environments. The SSH gateway listens on ssh_port (0: a free port, printed at
    # start); ssh_host is the name users' SSH clients use for this server (empty: the host
    # of public_url).
    ssh_enabled: bool = True
    ssh_port: int = Field(2222, ge=0, le=65535)
    ssh_host: str = ""
    # An environment without kernel, terminal or SSH activity this long is stopped (0: never).
    devenv_idle_timeout_seconds: int = Field(3600, ge=0, le=366 * 86400)
    # How often dev environments are checked for activity (seconds).
    devenv_check_interval_seconds: float = Field(30.0, ge=0.2, le=3600)
    # Environments users may choose besides the server's own Python: name → prefix of a
    # virtual or conda environment prepared by the administrator (with jupyterlab in it).
    devenv_environments: dict[str, Path] = Field(default_factory=dict)
    # code-server for VS Code in the browser; empty: found on PATH, else not offered.
    code_server: str = ""

    # Model services. Engines by name (see Engine); the gateway refuses request bodies
    # larger than gateway_max_body_bytes; a request to a service scaled to zero waits this
    # long for a replica to answer before it gets 503.
    engines: dict[str, Engine] = Field(default_factory=dict)
    gateway_max_body_bytes: int = Field(4 * 2**20, ge=2**10, le=2**30)
    gateway_cold_start_seconds: float = Field(300.0, ge=1, le=3600)
    # The engine whose Python runs load sweeps of services (vLLM's serving benchmark):
    # a registered engine with vLLM installed in its prefix.
    benchmark_engine: str = "vllm"
    # How often replicas not yet ready are asked whether they are (seconds).
    service_probe_interval_seconds: float = Field(1.0, ge=0.1, le=60)

    # Fine-tuning. Trainers by name (see Trainer): runs name one, `llamafactory` by default.
    # Running runs' progress is read, and a diverging run stopped, this often (seconds).
    trainers: dict[str, Trainer] = Field(default_factory=dict)
    finetune_watch_interval_seconds: float = Field(2.0, ge=0.2, le=60)

    # Datasets and models. Imports may fetch from loopback and private addresses (a NAS on
    # the organisation's network) only when this is on: otherwise a user could make the
    # server fetch from its own services (server-side request forgery).
    imports_allow_private: bool = False
    # Imports running at once (each in a thread of the server).
    imports_at_once: int = Field(2, ge=1, le=16)
    # The scrub reads every stored file again, a slice per round: this many bytes every
    # interval (1 GiB an hour goes round 8 TiB in a year). Uploads left unfinished expire.
    scrub_interval_seconds: float = Field(3600.0, ge=1, le=7 * 86400)
    scrub_bytes_per_round: int = Field(2**30, ge=2**20)
    # The Python that runs environments' agents (and JupyterLab, unless an environment names
    # its own): it must import suanli and be executable by the environments' Unix users on
    # every node. Empty: the server's own interpreter.
    devenv_agent_python: str = ""

    log_level: str = "info"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = os.environ.get("SUANLI_CONFIG")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @field_validator("admin_password")
    @classmethod
    def _strong_enough(cls, value: SecretStr) -> SecretStr:
        if 0 < len(value.get_secret_value()) < 8:
            raise ValueError("must have at least 8 characters (or be empty to generate one)")
        return value

    @field_validator("mps_user")
    @classmethod
    def _no_shared_mps_user(cls, value: str) -> str:
        if value:
            raise ValueError(
                "is no longer supported: fractional GPU jobs run as their own users' "
                "accounts, and a GPU's fractions serve one user at a time; remove the setting"
            )
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        value = value.lower()
        if value not in {"critical", "error", "warning", "info", "debug"}:
            raise ValueError("must be one of critical, error, warning, info, debug")
        return value

    @property
    def isolated(self) -> bool:
        """Workloads run as their users' own accounts (the server is root and asked to)."""
        return self.workload_identity == "own" and os.geteuid() == 0

    @property
    def effective_work_dir(self) -> Path:
        if self.work_dir is not None:
            return self.work_dir
        switches = self.isolated or (bool(self.unix_users) and os.geteuid() == 0)
        return Path("/var/lib/suanli/work") if switches else self.data_dir / "work"

    @property
    def effective_ssh_host(self) -> str:
        return self.ssh_host or (urlsplit(self.effective_public_url).hostname or "127.0.0.1")

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'suanli.db'}"

    @property
    def effective_public_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in {"0.0.0.0", "::", ""} else self.host  # noqa: S104
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"
