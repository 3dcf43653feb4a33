"""ORM models. Transport schemas for the API live apart, in `suanli.schemas`."""

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    display_name: Mapped[str] = mapped_column(String(128), default="")
    email: Mapped[str] = mapped_column(String(254), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    language: Mapped[str | None] = mapped_column(String(16), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    tokens: Mapped[list["ApiToken"]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )
    memberships: Mapped[list["Membership"]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )


class SshKey(Base):
    """An SSH public key a user uploaded: the SSH gateway lets its holder into the user's dev
    environments. Fingerprints are unique: one key belongs to one user."""

    __tablename__ = "ssh_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    algorithm: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[str] = mapped_column(String(8192))  # the OpenSSH line, without comment
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)  # SHA256:...
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class ApiToken(Base):
    """A bearer token. Only its SHA-256 is stored; the token itself is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    # "session" tokens come from logging in; "api" tokens are made by the user for scripts.
    kind: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    user: Mapped[User] = relationship(back_populates="tokens")


class Project(Base):
    """A tenant: its members share its quota, and nobody else sees its resources."""

    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    display_name: Mapped[str] = mapped_column(String(128), default="")
    description: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # Whether the project's owners may open (web and SSH) their members' dev environments.
    owners_open_devenvs: Mapped[bool] = mapped_column(Boolean, default=False)

    memberships: Mapped[list["Membership"]] = relationship(
        back_populates="project", cascade="all, delete-orphan", passive_deletes=True
    )
    quota: Mapped["ProjectQuota"] = relationship(
        back_populates="project", cascade="all, delete-orphan", passive_deletes=True
    )


class ProjectQuota(Base):
    """What a project may use. None means no limit beyond the cluster's capacity."""

    __tablename__ = "project_quotas"

    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    guaranteed_gpus: Mapped[int] = mapped_column(Integer, default=0)
    max_gpus: Mapped[int | None] = mapped_column(Integer, default=None)
    max_gpus_per_user: Mapped[int | None] = mapped_column(Integer, default=None)
    cpus: Mapped[float | None] = mapped_column(Float, default=None)
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    storage_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # How long a dev environment may run before it is stopped (seconds).
    devenv_max_lifetime_seconds: Mapped[int | None] = mapped_column(Integer, default=None)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    project: Mapped[Project] = relationship(back_populates="quota")


class Membership(Base):
    __tablename__ = "memberships"

    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    project: Mapped[Project] = relationship(back_populates="memberships")
    user: Mapped[User] = relationship(back_populates="memberships")


class AuditEvent(Base):
    """Who did what, when, from where, and how it ended. Names are copied, not referenced,
    so the trail outlives deleted users and projects."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_at", "at"),
        Index("ix_audit_events_actor", "actor"),
        Index("ix_audit_events_action", "action"),
        Index("ix_audit_events_project", "project"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Failed logins record the name that was tried, which may be any login-sized string.
    actor: Mapped[str] = mapped_column(String(128), default="")
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32), default="")
    target: Mapped[str] = mapped_column(String(128), default="")
    project: Mapped[str] = mapped_column(String(32), default="")
    # The id as well as the name at the time: a project's history survives its renames.
    project_id: Mapped[int | None] = mapped_column(Integer, default=None, index=True)
    result: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class LoginThrottle(Base):
    """Recent login failures for one user name or one address, and any lock they caused."""

    __tablename__ = "login_throttles"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class Node(Base):
    """A host that runs workloads, as its backend last reported it, plus the administrators'
    choices about it."""

    __tablename__ = "nodes"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    backend: Mapped[str] = mapped_column(String(32))
    cpus: Mapped[int] = mapped_column(Integer)
    memory_bytes: Mapped[int] = mapped_column(BigInteger)
    disk_total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    disk_free_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    driver: Mapped[str] = mapped_column(String(64), default="")
    schedulable: Mapped[bool] = mapped_column(Boolean, default=True)
    drain_reason: Mapped[str] = mapped_column(String(500), default="")
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A cluster engine's own word on the node (see suanli.gpu.model.Host); empty locally.
    engine_state: Mapped[str] = mapped_column(String(128), default="")
    engine_reason: Mapped[str] = mapped_column(String(500), default="")
    available: Mapped[bool] = mapped_column(Boolean, default=True)
    pools: Mapped[list[str]] = mapped_column(JSON, default=list)

    gpus: Mapped[list["GpuDevice"]] = relationship(
        back_populates="node", cascade="all, delete-orphan", order_by="GpuDevice.index"
    )


class GpuDevice(Base):
    """A GPU or a MIG instance of one: each is a schedulable device."""

    __tablename__ = "gpus"

    uuid: Mapped[str] = mapped_column(String(96), primary_key=True)
    node_name: Mapped[str] = mapped_column(ForeignKey("nodes.name", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(128))
    memory_bytes: Mapped[int] = mapped_column(BigInteger)
    pci_bus_id: Mapped[str] = mapped_column(String(32), default="")
    numa_node: Mapped[int] = mapped_column(Integer, default=0)
    topology_group: Mapped[str] = mapped_column(String(64), default="")
    mig_profile: Mapped[str | None] = mapped_column(String(32), default=None)
    parent_uuid: Mapped[str | None] = mapped_column(String(96), default=None)
    simulated: Mapped[bool] = mapped_column(Boolean, default=False)
    # Administrators' choices: drained devices take no new work; shared ones take fractions.
    schedulable: Mapped[bool] = mapped_column(Boolean, default=True)
    drain_reason: Mapped[str] = mapped_column(String(500), default="")
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    # False when the last inventory no longer found it (a GPU lost from NVML).
    present: Mapped[bool] = mapped_column(Boolean, default=True)

    node: Mapped[Node] = relationship(back_populates="gpus")


class Deployment(Base):
    """Desired state: `replicas` workloads of kind `kind` made from `template`, kept running
    by the deployment controller (suanli.controllers.deployments). Its workloads (jobs rows
    with `deployment_id`) are its replicas; model services are built on it."""

    __tablename__ = "deployments"
    __table_args__ = (Index("ix_deployments_project_name", "project_id", "name", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # the kind of its replicas
    name: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    user_name: Mapped[str] = mapped_column(String(32))
    # A replica's spec, as its kind stores it (version `spec_version`).
    template: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec_version: Mapped[int] = mapped_column(Integer, default=1)
    # What a replica asks of the scheduler, derived once when the template was accepted.
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    replicas: Mapped[int] = mapped_column(Integer, default=1)
    # A model service's autoscaling (suanli.serving.autoscale.Scaling as a dict): replicas
    # min..max on a metric; None: `replicas` is fixed, set by hand.
    scaling: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), default=None)
    # What its replicas read, resolved when the template was accepted (as a job's `inputs`).
    inputs: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # active: kept at `replicas`; stopped: no replicas wanted (they are being stopped).
    state: Mapped[str] = mapped_column(String(16), default="active")
    # Replicas that ended by themselves in a row; the next is started after a backoff.
    failures: Mapped[int] = mapped_column(Integer, default=0)
    next_start_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    project: Mapped[Project] = relationship()
    workloads: Mapped[list["Job"]] = relationship(
        back_populates="deployment", passive_deletes=True, order_by="Job.id"
    )


class Lease(Base):
    """Which server process runs a controller loop, until when. With several processes on one
    database each loop runs in the one holding its lease (see suanli.controllers.lease)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Job(Base):
    """A workload of any kind (suanli.kinds: a job runs to completion, a dev environment runs
    until stopped and restarts in place, a replica belongs to a deployment)."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_state", "state"),
        Index("ix_jobs_project_state", "project_id", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="job")
    name: Mapped[str] = mapped_column(String(128), default="")
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    user_name: Mapped[str] = mapped_column(String(32))
    # The spec as its kind stores it (suanli.kinds), in the kind's version `spec_version`.
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec_version: Mapped[int] = mapped_column(Integer, default=1)
    # What the scheduler needs (suanli.kinds.demand), derived once at submit: the scheduler
    # never parses a spec. None on rows from before it was kept: derived on first read.
    request: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    deployment_id: Mapped[int | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), default=None, index=True
    )
    state: Mapped[str] = mapped_column(String(16), default="pending")
    priority: Mapped[str] = mapped_column(String(8), default="normal")
    # GPUs counted against quotas: whole GPUs, or the share of one for a fraction.
    gpus: Mapped[float] = mapped_column(Float, default=0.0)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    pending_code: Mapped[str] = mapped_column(String(64), default="")
    pending_params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    pending_position: Mapped[int] = mapped_column(Integer, default=0)
    placement: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    handle: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # Set when someone asked it to stop: cancelled | preempted; the controller acts on it.
    stop_reason: Mapped[str] = mapped_column(String(16), default="")
    stop_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    exit_reason: Mapped[str] = mapped_column(String(16), default="")
    exit_code: Mapped[int | None] = mapped_column(Integer, default=None)
    exit_signal: Mapped[int | None] = mapped_column(Integer, default=None)
    exit_detail: Mapped[str] = mapped_column(String(2000), default="")
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    usage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Energy of the job's GPUs (power integrated over its life; a fraction: its share).
    energy_wh: Mapped[float] = mapped_column(Float, default=0.0)
    # A token for the workload's own endpoints (a dev environment's tools), new at every
    # start; only the server sends it, and no API or page ever shows it.
    token: Mapped[str] = mapped_column(String(64), default="")
    # The datasets and models it reads, resolved at submit to fixed versions (suanli.services.
    # data.resolve): [{"kind", "ref", "name", "version_id"}]. Set by the server only, never
    # from a spec, so a workload mounts exactly what its owner could read when it was sent.
    inputs: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # A service replica's port on its node, chosen at launch (by the server, never read back
    # from anything the workload wrote), and when it first answered its health check.
    port: Mapped[int | None] = mapped_column(Integer, default=None)
    # Or the Unix socket it listens on (an engine with socket_args on the local backend).
    socket: Mapped[str] = mapped_column(String(4096), default="")
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    project: Mapped[Project] = relationship()
    deployment: Mapped[Deployment | None] = relationship(back_populates="workloads")
    events: Mapped[list["JobEvent"]] = relationship(
        back_populates="job",
        cascade="all, delete-orphan",
        order_by="JobEvent.id",
        passive_deletes=True,
    )


class JobEvent(Base):
    """The state history of a job, with timestamps: what the job page shows as its timeline."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    state: Mapped[str] = mapped_column(String(16))
    # A catalogue key (`event.*`) and its parameters: shown in the reader's language.
    detail: Mapped[str] = mapped_column(String(2000), default="")
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    job: Mapped[Job] = relationship(back_populates="events")


class MetricSeries(Base):
    """One time series: a metric name and its labels (`key` is the canonical text of both)."""

    __tablename__ = "metric_series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    key: Mapped[str] = mapped_column(String(1024), unique=True)


class MetricPoint(Base):
    """A value of a series. Tier 0 holds raw samples, tier 1 one-minute means, tier 2 hourly
    means; `at` is epoch seconds (the bucket's start for tiers 1 and 2)."""

    __tablename__ = "metric_points"
    __table_args__: ClassVar[dict[str, Any]] = {"sqlite_with_rowid": False}

    series_id: Mapped[int] = mapped_column(
        ForeignKey("metric_series.id", ondelete="CASCADE"), primary_key=True
    )
    tier: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    value: Mapped[float] = mapped_column(Float)


class AlertRule(Base):
    __tablename__ = "alert_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="metric")  # metric | event
    metric: Mapped[str] = mapped_column(String(64))
    match: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    op: Mapped[str] = mapped_column(String(2))
    threshold: Mapped[float] = mapped_column(Float, default=0.0)
    for_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    severity: Mapped[str] = mapped_column(String(16))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class AlertChannel(Base):
    """Where notifications go. The secret and password are never shown back."""

    __tablename__ = "alert_channels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(String(2048))
    secret: Mapped[str] = mapped_column(String(512), default="")
    email_from: Mapped[str] = mapped_column(String(254), default="")
    email_to: Mapped[list[str]] = mapped_column(JSON, default=list)
    username: Mapped[str] = mapped_column(String(254), default="")
    password: Mapped[str] = mapped_column(String(512), default="")
    language: Mapped[str] = mapped_column(String(16), default="en")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AlertEvent(Base):
    """An alert's history: when it fired and when it resolved (event alerts never resolve)."""

    __tablename__ = "alert_events"
    __table_args__ = (Index("ix_alert_events_open", "rule_id", "resolved_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("alert_rules.id", ondelete="CASCADE"))
    labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    severity: Mapped[str] = mapped_column(String(16))
    value: Mapped[float] = mapped_column(Float, default=0.0)
    summary: Mapped[str] = mapped_column(String(2000), default="")
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    silenced: Mapped[bool] = mapped_column(Boolean, default=False)

    rule: Mapped[AlertRule] = relationship()


class AlertSilence(Base):
    __tablename__ = "alert_silences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    match: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(String(500), default="")
    created_by: Mapped[str] = mapped_column(String(32), default="")


class Notification(Base):
    """One alert change to deliver to one channel, retried with backoff until it is sent or
    given up; the notifier works through these apart from collection."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_due", "status", "next_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("alert_events.id", ondelete="CASCADE"))
    channel_id: Mapped[int] = mapped_column(ForeignKey("alert_channels.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16))  # firing | resolved
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|sent|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str] = mapped_column(String(500), default="")
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class Repository(Base):
    """A dataset or a model: a named series of immutable versions in a project."""

    __tablename__ = "repositories"
    __table_args__ = (
        Index("ix_repositories_project_kind_name", "project_id", "kind", "name", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # dataset | model
    name: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    description: Mapped[str] = mapped_column(String(2000), default="")
    # project: its members only; public: every user may read and use it.
    visibility: Mapped[str] = mapped_column(String(16), default="project")
    # Curated by administrators into the platform's catalogue (public as well).
    catalogue: Mapped[bool] = mapped_column(Boolean, default=False)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    user_name: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    project: Mapped[Project] = relationship()
    # Deleted with it, by the database (ON DELETE CASCADE), loaded or not.
    versions: Mapped[list["DataVersion"]] = relationship(
        back_populates="repository",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="DataVersion.number",
    )
    tags: Mapped[list["DataTag"]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="DataTag.name"
    )


class DataVersion(Base):
    """An immutable set of files with a message, who made it, when and from what."""

    __tablename__ = "data_versions"
    __table_args__ = (
        Index("ix_data_versions_repository_number", "repository_id", "number", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(String(2000), default="")
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    user_name: Mapped[str] = mapped_column(String(32))
    # upload | import | job | sftp
    source: Mapped[str] = mapped_column(String(16), default="upload")
    # Lineage: the workload whose output it is, and that workload's inputs (copied: the
    # workload's row may be gone).
    job_id: Mapped[int | None] = mapped_column(Integer, default=None)
    lineage: Mapped[list[str]] = mapped_column(JSON, default=list)
    file_count: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    repository: Mapped[Repository] = relationship(back_populates="versions")


class DataFile(Base):
    """One file of a version: the manifest's line. The bytes are the blob `sha256`."""

    __tablename__ = "data_files"

    version_id: Mapped[int] = mapped_column(
        ForeignKey("data_versions.id", ondelete="CASCADE"), primary_key=True
    )
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)


class DataTag(Base):
    """A movable name for a version (`latest` is kept by the server; others by users)."""

    __tablename__ = "data_tags"

    repository_id: Mapped[int] = mapped_column(
        ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("data_versions.id", ondelete="CASCADE"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Blob(Base):
    """Stored content, once however many versions and projects hold it."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # ok | corrupt (its bytes no longer hash to its name) | missing
    state: Mapped[str] = mapped_column(String(16), default="ok")


class ProjectBlob(Base):
    """A project holds this content: it sent the bytes itself (or they are in a version it
    can read). Only then may its versions name the blob — knowing a hash is not enough — and
    the project's storage counts each of its blobs once."""

    __tablename__ = "project_blobs"

    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    sha256: Mapped[str] = mapped_column(
        ForeignKey("blobs.sha256", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Upload(Base):
    """A resumable upload (tus) of one file into a project, until it becomes a blob."""

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    length: Mapped[int] = mapped_column(BigInteger)
    # The length once complete; while it runs, how far it got is the size of its file.
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    filename: Mapped[str] = mapped_column(String(1024), default="")
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)  # once complete
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DataImport(Base):
    """Fetching a remote source into a new version, in the background."""

    __tablename__ = "data_imports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(
        ForeignKey("repositories.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    user_name: Mapped[str] = mapped_column(String(32))
    # The source without its secrets (shown), and the secrets sealed (suanli.security.sealed).
    source: Mapped[dict[str, Any]] = mapped_column(JSON)
    sealed: Mapped[str] = mapped_column(String(4000), default="")
    message: Mapped[str] = mapped_column(String(2000), default="")
    # queued | running | succeeded | failed | cancelled
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    done_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    total_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    error_key: Mapped[str] = mapped_column(String(128), default="")
    error_params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    version_id: Mapped[int | None] = mapped_column(
        ForeignKey("data_versions.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    repository: Mapped[Repository] = relationship()


class ServiceKey(Base):
    """An API key for a project's model services. Only its SHA-256 is stored; the key itself
    is shown once. `models`: the services it may call (None: all of the project's)."""

    __tablename__ = "service_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    user_name: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(64))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(24))
    models: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, default=None)
    tokens_per_minute: Mapped[int | None] = mapped_column(Integer, default=None)
    token_budget: Mapped[int | None] = mapped_column(BigInteger, default=None)
    budget_period: Mapped[str] = mapped_column(String(8), default="month")  # day | month
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    project: Mapped[Project] = relationship()


class ServiceUsage(Base):
    """One request through the gateway: who, which service, the tokens, how it went."""

    __tablename__ = "service_usage"
    __table_args__ = (
        Index("ix_service_usage_project_at", "project_id", "at"),
        Index("ix_service_usage_key_at", "key_id", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    deployment_id: Mapped[int | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="SET NULL"), index=True
    )
    model: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    user_name: Mapped[str] = mapped_column(String(32), default="")
    key_id: Mapped[int | None] = mapped_column(ForeignKey("service_keys.id", ondelete="SET NULL"))
    endpoint: Mapped[str] = mapped_column(String(32))  # chat/completions, embeddings, ...
    status: Mapped[int] = mapped_column(Integer)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    # Counted with the model's tokenizer: the engine sent no usage.
    counted: Mapped[bool] = mapped_column(Boolean, default=False)
    ttft_ms: Mapped[float | None] = mapped_column(Float, default=None)
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)


class PromptTemplate(Base):
    """A project's prompt, kept in versions: a system prompt and a message with {variables}."""

    __tablename__ = "prompt_templates"
    __table_args__ = (
        Index("ix_prompt_templates_name_version", "project_id", "name", "version", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    system: Mapped[str] = mapped_column(String(20000), default="")
    template: Mapped[str] = mapped_column(String(20000))
    variables: Mapped[list[str]] = mapped_column(JSON, default=list)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    user_name: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    project: Mapped[Project] = relationship()


class ServiceSweep(Base):
    """A load sweep of a service (capacity planning): a job runs vLLM's serving benchmark
    through the gateway at rising concurrency; its curves (suanli.serving.sizing.Point) are
    read from the job's folder when it ends."""

    __tablename__ = "service_sweeps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    key_id: Mapped[int | None] = mapped_column(ForeignKey("service_keys.id", ondelete="SET NULL"))
    user_name: Mapped[str] = mapped_column(String(32))
    # running | succeeded | failed
    state: Mapped[str] = mapped_column(String(16), default="running")
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    points: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    error: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class Finetune(Base):
    """What a fine-tuning run (a workload of kind `finetune`) has beyond its job row: its
    progress as last read from LLaMA-Factory's trainer_log.jsonl, the memory estimate it was
    accepted with, its final metrics, the model version its result was registered as, and
    its newest comparison of the base and the tuned model (a job of its own)."""

    __tablename__ = "finetunes"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    estimate: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    final_metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    output_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("data_versions.id", ondelete="SET NULL"), default=None
    )
    # none | registered | skipped (the run did not succeed) | failed (why: register_problem,
    # a catalogue key and its parameters)
    registration: Mapped[str] = mapped_column(String(16), default="none")
    register_problem: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    compare_job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), default=None
    )
    # none | running | succeeded | failed
    compare_state: Mapped[str] = mapped_column(String(16), default="none")
    compare_prompts: Mapped[list[str]] = mapped_column(JSON, default=list)
    compare_answers: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
