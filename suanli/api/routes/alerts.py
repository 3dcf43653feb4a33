"""Alerts: rules, notification channels, silences (administrators) and the alert history.

Readers see the alerts, silences and rules of the hardware and of their own projects' jobs;
administrators see all (services.monitoring.Sight)."""

from typing import Annotated

from fastapi import APIRouter, Path, Query

from suanli.api.deps import CallerDep, SessionDep
from suanli.db.models import AlertChannel, AlertEvent
from suanli.schemas.metrics import (
    AlertEventOut,
    AlertEventQuery,
    ChannelIn,
    ChannelOut,
    RuleIn,
    RuleOut,
    SilenceIn,
    SilenceOut,
)
from suanli.schemas.types import MAX_INT32
from suanli.services import alerting
from suanli.services.common import require_admin

router = APIRouter(prefix="/alerts", tags=["alerts"])
Id = Annotated[int, Path(ge=1, le=MAX_INT32)]


def channel_out(row: AlertChannel) -> ChannelOut:
    """A channel as shown: its secret and password only as "set" or not."""
    return ChannelOut(
        id=row.id,
        name=row.name,
        kind=row.kind,
        url=row.url,
        email_from=row.email_from,
        email_to=list(row.email_to or []),
        username=row.username,
        language=row.language,
        enabled=row.enabled,
        has_secret=bool(row.secret),
        has_password=bool(row.password),
    )


def event_out(event: AlertEvent) -> AlertEventOut:
    state = "resolved" if event.resolved_at else "firing"
    if event.rule.kind == "event":
        state = "event"  # happened once; never resolves
    return AlertEventOut(
        id=event.id,
        rule=event.rule.name,
        severity=event.severity,
        labels=dict(event.labels),
        value=event.value,
        summary=event.summary,
        fired_at=event.fired_at,
        resolved_at=event.resolved_at,
        silenced=event.silenced,
        state=state,
    )


@router.get("", response_model=list[AlertEventOut])
def list_alerts(
    query: Annotated[AlertEventQuery, Query()], caller: CallerDep, session: SessionDep
) -> list[AlertEventOut]:
    """The alert history, newest first; `firing=true` for what is firing now. Alerts that
    name a job, project or user show only to those who may see them."""
    events = alerting.list_events(
        session,
        caller.actor,
        firing_only=query.firing,
        limit=query.limit,
        before_id=query.before_id,
    )
    return [event_out(e) for e in events]


@router.get("/rules", response_model=list[RuleOut])
def list_rules(caller: CallerDep, session: SessionDep) -> list[RuleOut]:
    return [RuleOut.model_validate(r) for r in alerting.list_rules(session, caller.actor)]


@router.post("/rules", response_model=RuleOut, status_code=201)
def create_rule(body: RuleIn, caller: CallerDep, session: SessionDep) -> RuleOut:
    """A rule on a metric (`metric`, `match`, `op`, `threshold`, `for_seconds`) or on an event
    (`kind: event`, `metric: job.failed`)."""
    values = body.model_dump(exclude_none=True)
    return RuleOut.model_validate(alerting.save_rule(session, caller.actor, values))


@router.patch("/rules/{rule_id}", response_model=RuleOut)
def update_rule(rule_id: Id, body: RuleIn, caller: CallerDep, session: SessionDep) -> RuleOut:
    values = body.model_dump(exclude_none=True)
    return RuleOut.model_validate(alerting.save_rule(session, caller.actor, values, rule_id))


@router.delete("/rules/{rule_id}", status_code=204)
def delete_rule(rule_id: Id, caller: CallerDep, session: SessionDep) -> None:
    alerting.delete_rule(session, caller.actor, rule_id)


@router.get("/channels", response_model=list[ChannelOut])
def list_channels(caller: CallerDep, session: SessionDep) -> list[ChannelOut]:
    """Administrators only: robot URLs carry their own credentials."""
    require_admin(caller.actor)
    return [channel_out(c) for c in alerting.list_channels(session)]


@router.post("/channels", response_model=ChannelOut, status_code=201)
def create_channel(body: ChannelIn, caller: CallerDep, session: SessionDep) -> ChannelOut:
    """A generic JSON webhook, a WeCom / DingTalk / Feishu robot, or e-mail over SMTP."""
    values = body.model_dump(exclude_none=True)
    return channel_out(alerting.save_channel(session, caller.actor, values))


@router.patch("/channels/{channel_id}", response_model=ChannelOut)
def update_channel(
    channel_id: Id, body: ChannelIn, caller: CallerDep, session: SessionDep
) -> ChannelOut:
    values = body.model_dump(exclude_none=True)
    return channel_out(alerting.save_channel(session, caller.actor, values, channel_id))


@router.delete("/channels/{channel_id}", status_code=204)
def delete_channel(channel_id: Id, caller: CallerDep, session: SessionDep) -> None:
    alerting.delete_channel(session, caller.actor, channel_id)


@router.get("/silences", response_model=list[SilenceOut])
def list_silences(caller: CallerDep, session: SessionDep) -> list[SilenceOut]:
    rows = alerting.list_silences(session, caller.actor)
    return [SilenceOut.model_validate(s) for s in rows]


@router.post("/silences", response_model=SilenceOut, status_code=201)
def create_silence(body: SilenceIn, caller: CallerDep, session: SessionDep) -> SilenceOut:
    """Mute notifications of matching alerts for `hours` (they are still recorded). Match
    labels (`node`, `gpu`, ...) or `alertname` (a rule's name) and `severity`."""
    row = alerting.create_silence(session, caller.actor, body.match, body.hours, body.reason)
    return SilenceOut.model_validate(row)


@router.post("/silences/{silence_id}/end", response_model=SilenceOut)
def end_silence(silence_id: Id, caller: CallerDep, session: SessionDep) -> SilenceOut:
    return SilenceOut.model_validate(alerting.end_silence(session, caller.actor, silence_id))
