"""Alerts in the database: rules, channels, silences, the history of alerts and the queue of
notifications. The rules' logic is pure (suanli.monitoring.alerts); this module loads and
stores what it needs and decides who is told.

Administrators manage rules, channels and silences. Everyone signed in reads the alerts,
silences and rules whose labels name no tenant (what is wrong with the hardware is no
secret); those that name a job, a project or a user only those who may see them
(services.monitoring.Sight): a failed job's alert names the job, its project and its user.
"""

import logging
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from suanli.config import Settings
from suanli.core.errors import Conflict, InvalidInput, NotFound
from suanli.core.states import State
from suanli.db.engine import Database
from suanli.db.models import (
    AlertChannel,
    AlertEvent,
    AlertRule,
    AlertSilence,
    Blob,
    DataFile,
    DataVersion,
    Job,
    JobEvent,
    Notification,
    Repository,
    utcnow,
)
from suanli.monitoring import alerts, channels
from suanli.monitoring.model import Labels, Sample, labels_of
from suanli.services import audit, monitoring
from suanli.services.actor import Actor
from suanli.services.common import commit, require_admin

log = logging.getLogger("suanli.alerts")
# Events read at a time when a page of them is filtered for a reader.
EVENT_BATCH = 200


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def rule_of(row: AlertRule) -> alerts.Rule:
    return alerts.Rule(
        id=row.id,
        name=row.name,
        metric=row.metric,
        match=dict(row.match or {}),
        op=row.op,  # type: ignore[arg-type]
        threshold=row.threshold,
        for_seconds=row.for_seconds,
        severity=row.severity,  # type: ignore[arg-type]
        enabled=row.enabled,
        kind=row.kind,  # type: ignore[arg-type]
    )


def silence_of(row: AlertSilence) -> alerts.Silence:
    return alerts.Silence(
        id=row.id,
        match=dict(row.match or {}),
        starts_at=row.starts_at.timestamp(),
        ends_at=row.ends_at.timestamp(),
        reason=row.reason,
        created_by=row.created_by,
    )


def all_silences(session: Session) -> list[alerts.Silence]:
    """Every silence, ended ones too, as the rules' logic reads them: what mutes an alert.
    Not for showing (list_silences is)."""
    return [silence_of(row) for row in session.scalars(select(AlertSilence))]


def failed_since(session: Session, since: float) -> list[dict[str, object]]:
    """The labels of the jobs whose failure was recorded since `since` (epoch seconds): the
    `job.failed` events the alert rules may watch. Recorded, not ended: a job's end time is
    when its process ended, which the server may learn some polls later."""
    recorded = select(JobEvent.job_id).where(
        JobEvent.state == State.failed, JobEvent.at >= utc(since)
    )
    rows = session.scalars(
        select(Job)
        .options(selectinload(Job.project))
        .where(Job.state == State.failed, Job.id.in_(recorded))
    )
    return [
        {
            "job": job.id,
            "job_name": job.name,
            "project": job.project.name,
            "user": job.user_name,
            "node": (job.placement or {}).get("node", ""),
        }
        for job in rows
    ]


def corrupt_since(session: Session, since: float) -> list[dict[str, object]]:
    """The labels of the blobs found corrupt or missing since `since` (epoch seconds), each
    with one version and file that hold it: the `data.corrupt` events."""
    found = session.execute(
        select(Blob.sha256, Blob.state, DataFile.path, DataVersion.number, Repository)
        .join(DataFile, DataFile.sha256 == Blob.sha256)
        .join(DataVersion, DataVersion.id == DataFile.version_id)
        .join(Repository, Repository.id == DataVersion.repository_id)
        .options(selectinload(Repository.project))
        .where(Blob.state != "ok", Blob.verified_at >= utc(since))
    ).all()
    labels: dict[str, dict[str, object]] = {}
    for sha256, state, path, number, repository in found:
        labels.setdefault(
            sha256,
            {
                "sha256": sha256,
                "state": state,
                "project": repository.project.name,
                "repository": f"{repository.kind}:{repository.name}",
                "version": number,
                "path": path,
            },
        )
    return list(labels.values())


class AlertBook:
    """The pending and firing alerts of this process, rebuilt from the open events of the
    database after a restart (so a firing alert is not announced twice)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.alerts: dict[alerts.AlertKey, alerts.Alert] | None = None

    def evaluate(
        self,
        database: Database,
        samples: Sequence[Sample],
        events: Sequence[tuple[str, dict[str, object]]],
        now: float,
    ) -> None:
        """`events`: (event name, labels) of what happened since the last evaluation."""
        with database.reading() as session:
            rules = [rule_of(r) for r in session.scalars(select(AlertRule))]
            silences = all_silences(session)
            if self.alerts is None:
                self.alerts = _open_alerts(session)
        evaluation = alerts.evaluate(rules, samples, self.alerts, now)
        changes = list(evaluation.changes)
        for event, labels in events:
            changes += alerts.event_alerts(rules, event, labels, now)
        if changes:
            by_id = {rule.id: rule for rule in rules}
            with database.writing() as session:
                channels = list(
                    session.scalars(select(AlertChannel).where(AlertChannel.enabled.is_(True)))
                )
                for alert in changes:
                    rule = by_id.get(alert.rule_id)
                    if rule is None:  # the rule was deleted: its events went with it
                        continue
                    _record(session, rule, alert, silences, channels, now)
                session.commit()
        self.alerts = evaluation.alerts


def _open_alerts(session: Session) -> dict[alerts.AlertKey, alerts.Alert]:
    rows = session.scalars(
        select(AlertEvent)
        .join(AlertRule)
        .where(AlertEvent.resolved_at.is_(None), AlertRule.kind == "metric")
    )
    result = {}
    for row in rows:
        labels = labels_of(row.labels)
        fired = row.fired_at.timestamp()
        result[(row.rule_id, labels)] = alerts.Alert(
            row.rule_id, labels, "firing", since=fired, fired_at=fired, value=row.value
        )
    return result


def _record(
    session: Session,
    rule: alerts.Rule,
    alert: alerts.Alert,
    silences: Sequence[alerts.Silence],
    channels: Sequence[AlertChannel],
    now: float,
) -> None:
    muted = alerts.silenced(alert, rule, silences, now)
    if alert.state == "firing":
        event = AlertEvent(
            rule_id=rule.id,
            labels=dict(alert.labels),
            severity=rule.severity,
            value=alert.value or 0.0,
            summary=alerts.summary(rule, alert, "en")[:2000],
            fired_at=utc(alert.fired_at or now),
            silenced=muted,
        )
        session.add(event)
        session.flush()
    else:
        event = _open_event(session, rule.id, alert.labels)
        if event is None:
            return
        event.resolved_at = utc(alert.resolved_at or now)
        muted = muted or event.silenced
    log.warning("alert %s: %s", alert.state, alerts.summary(rule, alert, "en"))
    if muted:
        return
    for channel in channels:
        session.add(Notification(event_id=event.id, channel_id=channel.id, state=alert.state))


def _open_event(session: Session, rule_id: int, labels: Labels) -> AlertEvent | None:
    wanted = dict(labels)
    for event in session.scalars(
        select(AlertEvent).where(AlertEvent.rule_id == rule_id, AlertEvent.resolved_at.is_(None))
    ):
        if event.labels == wanted:
            return event
    return None


# -- administration ----------------------------------------------------------------------------


def _invalid(error: alerts.FieldError) -> InvalidInput:
    return InvalidInput("error.alert_field", field=error.field, reason=error.reason)


def list_rules(session: Session, actor: Actor) -> list[AlertRule]:
    """The rules, but those whose matchers name a tenant the actor may not see."""
    rows = session.scalars(select(AlertRule).order_by(AlertRule.id)).all()
    reader = monitoring.sight(session, actor, (row.match or {} for row in rows))
    return [row for row in rows if reader.sees(row.match or {})]


def save_rule(
    session: Session, actor: Actor, values: dict[str, Any], rule_id: int | None = None
) -> AlertRule:
    """Create a rule, or change one (fields left out stay). Validated by the rules' own
    checks, which name the field."""
    require_admin(actor)
    if rule_id is None:
        _require(values, ("name", "metric"))
    row = AlertRule() if rule_id is None else _get(session, AlertRule, rule_id)
    merged = {
        "name": row.name,
        "kind": row.kind or "metric",
        "metric": row.metric,
        "match": dict(row.match or {}),
        "op": row.op or ">",
        "threshold": row.threshold if row.threshold is not None else 0.0,
        "for_seconds": row.for_seconds if row.for_seconds is not None else 0.0,
        "severity": row.severity or "warning",
        "enabled": True if row.enabled is None else row.enabled,
        **values,
    }
    try:
        checked = alerts.validate_rule(alerts.Rule(id=rule_id or 0, **merged))
    except alerts.FieldError as error:
        raise _invalid(error) from None
    _unique(session, AlertRule, checked.name, rule_id, "error.alert_rule_exists")
    for key, value in asdict(checked).items():
        if key != "id":
            setattr(row, key, dict(value) if key == "match" else value)
    if rule_id is None:
        session.add(row)
    audit.record(
        session,
        actor,
        "alert.rule_create" if rule_id is None else "alert.rule_update",
        target_type="alert_rule",
        target=row.name,
        detail={k: v for k, v in values.items()},
    )
    commit(session, "error.alert_rule_exists", name=row.name)
    return row


def delete_rule(session: Session, actor: Actor, rule_id: int) -> None:
    require_admin(actor)
    row = _get(session, AlertRule, rule_id)
    session.delete(row)
    audit.record(session, actor, "alert.rule_delete", target_type="alert_rule", target=row.name)
    commit(session, "error.conflict")


def list_channels(session: Session) -> Sequence[AlertChannel]:
    return session.scalars(select(AlertChannel).order_by(AlertChannel.id)).all()


def save_channel(
    session: Session, actor: Actor, values: dict[str, Any], channel_id: int | None = None
) -> AlertChannel:
    require_admin(actor)
    if channel_id is None:
        _require(values, ("name", "kind", "url"))
    row = AlertChannel() if channel_id is None else _get(session, AlertChannel, channel_id)
    fields = ("name", "kind", "url", "secret", "email_from", "email_to", "username", "password")
    merged = {f: getattr(row, f) for f in fields} | {"language": row.language or "en"}
    merged = {k: v for k, v in merged.items() if v is not None} | values
    merged.pop("enabled", None)
    merged["email_to"] = tuple(merged.get("email_to") or ())
    try:
        alerts_channel = channel_of_values(channel_id or 0, merged)
    except alerts.FieldError as error:
        raise _invalid(error) from None
    except ValueError as error:
        raise InvalidInput("error.alert_field", field="channel", reason=str(error)) from None
    for key in (*fields, "language"):
        value = getattr(alerts_channel, key)
        setattr(row, key, list(value) if key == "email_to" else value)
    _unique(session, AlertChannel, alerts_channel.name, channel_id, "error.alert_channel_exists")
    if "enabled" in values:
        row.enabled = bool(values["enabled"])
    if channel_id is None:
        session.add(row)
    shown = {k: v for k, v in values.items() if k not in ("secret", "password")}
    audit.record(
        session,
        actor,
        "alert.channel_create" if channel_id is None else "alert.channel_update",
        target_type="alert_channel",
        target=row.name,
        detail=shown,
    )
    commit(session, "error.alert_channel_exists", name=row.name)
    return row


def channel_of_values(channel_id: int, values: dict[str, Any]) -> channels.Channel:
    channel = channels.Channel(id=channel_id, **values)
    channels.validate_channel(channel)
    return channel


def delete_channel(session: Session, actor: Actor, channel_id: int) -> None:
    require_admin(actor)
    row = _get(session, AlertChannel, channel_id)
    session.delete(row)
    audit.record(
        session, actor, "alert.channel_delete", target_type="alert_channel", target=row.name
    )
    commit(session, "error.conflict")


def list_silences(session: Session, actor: Actor) -> list[AlertSilence]:
    """Newest first, but those whose matchers name a tenant the actor may not see (a silence
    made from a failed job's alert names the job, its project and its user)."""
    rows = session.scalars(select(AlertSilence).order_by(AlertSilence.id.desc())).all()
    reader = monitoring.sight(session, actor, (row.match or {} for row in rows))
    return [row for row in rows if reader.sees(row.match or {})]


def create_silence(
    session: Session, actor: Actor, match: dict[str, str], hours: float, reason: str
) -> AlertSilence:
    require_admin(actor)
    now = utcnow()
    ends = now + timedelta(hours=hours)
    try:
        alerts.validate_silence(
            alerts.Silence(0, match, now.timestamp(), ends.timestamp(), reason, actor.name)
        )
    except alerts.FieldError as error:
        raise _invalid(error) from None
    row = AlertSilence(
        match=dict(match), starts_at=now, ends_at=ends, reason=reason, created_by=actor.name
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor,
        "alert.silence",
        target_type="alert_silence",
        target=str(row.id),
        detail={"match": match, "hours": hours, "reason": reason},
    )
    commit(session, "error.conflict")
    return row


def end_silence(session: Session, actor: Actor, silence_id: int) -> AlertSilence:
    require_admin(actor)
    row = _get(session, AlertSilence, silence_id)
    row.ends_at = min(row.ends_at, utcnow())
    audit.record(
        session, actor, "alert.silence_end", target_type="alert_silence", target=str(row.id)
    )
    commit(session, "error.conflict")
    return row


def list_events(
    session: Session,
    actor: Actor,
    *,
    firing_only: bool = False,
    limit: int = 100,
    before_id: int | None = None,
) -> list[AlertEvent]:
    """Newest first, up to `limit` of those the actor may see. Labels are JSON, which the two
    databases filter differently, so the events are read in batches and filtered here until
    the page is full."""
    batch_size = max(limit, EVENT_BATCH)
    shown: list[AlertEvent] = []
    while len(shown) < limit:
        statement = (
            select(AlertEvent)
            .options(selectinload(AlertEvent.rule))
            .order_by(AlertEvent.id.desc())
            .limit(batch_size)
        )
        if firing_only:
            statement = statement.join(AlertRule).where(
                AlertEvent.resolved_at.is_(None), AlertRule.kind == "metric"
            )
        if before_id:
            statement = statement.where(AlertEvent.id < before_id)
        batch = session.scalars(statement).all()
        reader = monitoring.sight(session, actor, (event.labels for event in batch))
        shown += [event for event in batch if reader.sees(event.labels)]
        if len(batch) < batch_size:
            break
        before_id = batch[-1].id
    return shown[:limit]


def _require(values: dict[str, Any], names: Sequence[str]) -> None:
    for name in names:
        if values.get(name) in (None, ""):
            raise InvalidInput("validation.missing", field=name)


def _unique(session: Session, model: Any, name: str, row_id: int | None, key: str) -> None:
    """Names are unique: say so as a 409 before the database has to."""
    clash = session.scalar(select(model.id).where(model.name == name, model.id != (row_id or 0)))
    if clash is not None:
        raise Conflict(key, name=name)


def _get(session: Session, model: Any, row_id: int) -> Any:
    row = session.get(model, row_id)
    if row is None:
        raise NotFound("error.alert_not_found", id=row_id)
    return row
