"""Monitoring in the console: the charts' data, a node's and a GPU's page with their charts,
and the alerts page (what fires now, the history, silences; administrators edit rules and
notification channels).

What names a tenant (a GPU's users, an alert on a job, a silence or rule naming a project)
shows only to those who may see it, as in the API (services.monitoring.Sight).

Charts are drawn in the browser (static/console/charts.js, with the vendored uPlot) from
`GET /charts/query`, which takes the API's `MetricQuery` and applies the same access rules
(services.monitoring). It answers JSON, errors too, so that a chart can say why it is empty.
"""

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from suanli.api.deps import SessionDep
from suanli.core.durations import format_duration, parse_duration
from suanli.core.errors import InvalidInput, NotFound, SuanliError
from suanli.db.models import AlertChannel, AlertEvent, AlertRule, AlertSilence, GpuDevice, Node
from suanli.i18n import translate
from suanli.monitoring import alerts
from suanli.monitoring.model import METRICS, labels_of
from suanli.schemas.jobs import DURATION_PATTERN
from suanli.schemas.metrics import ChannelIn, MetricQuery, RuleIn, SilenceIn
from suanli.schemas.nodes import GPU_UUID_PATTERN
from suanli.schemas.types import MAX_INT32
from suanli.services import alerting, cluster, monitoring, nodes
from suanli.services.common import require_admin
from suanli.web import forms, render, session
from suanli.web.session import Viewer

router = APIRouter(include_in_schema=False, dependencies=[Depends(session.check_csrf)])
ViewerDep = Annotated[Viewer, Depends(session.require_viewer)]
NodeName = Annotated[str, Path(max_length=255, pattern=r"^[^\x00/]+$")]
GpuUuid = Annotated[str, Path(max_length=96, pattern=GPU_UUID_PATTERN)]
Id = Annotated[int, Path(ge=1, le=MAX_INT32)]
HISTORY_PAGE = 50
CHANNEL_KINDS = ("webhook", "wecom", "dingtalk", "feishu", "email")
OPS = tuple(alerts.OPS)
UNIT_SUFFIXES = {
    "percent": "%",
    "celsius": "°C",
    "watts": "W",
    "mhz": "MHz",
    "bytes": "B",
    "bytes_per_second": "B/s",
    "watt_hours": "Wh",
}
# Labels that say nothing about where an alert is (every GPU of a model shares them).
QUIET_LABELS = ("model", "simulated")


# -- the charts' data --------------------------------------------------------------------------


@router.get("/charts/query")
def chart_query(request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    """A metric's series for a chart, as `GET /api/v1/metrics/query` answers them, with the
    session's cookie. Errors are JSON as well ({status, detail, errors}), never a page."""
    params = request.query_params
    raw: dict[str, Any] = {
        key: params[key] for key in ("metric", "range", "end", "step") if params.get(key)
    }
    raw["label"] = params.getlist("label")
    language = request.state.language
    try:
        answer = monitoring.query(db, viewer.actor, MetricQuery.model_validate(raw))
    except ValidationError as error:
        found = forms.errors_of(error, language)
        return _problem(422, " ".join(f"{k}: {v}" for k, v in found.items()), found)
    except SuanliError as error:
        return _problem(error.status, translate(error.key, language, **error.params), {})
    response = JSONResponse(answer.model_dump(mode="json"))
    response.headers["Cache-Control"] = "no-store"
    return response


def _problem(status: int, detail: str, errors: Mapping[str, str]) -> JSONResponse:
    return JSONResponse(
        {"status": status, "detail": detail, "errors": dict(errors)},
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


# -- chart specifications (what charts.js draws) ------------------------------------------------


def _q(metric: str, labels: Mapping[str, str], name: str = "", **extra: Any) -> dict[str, Any]:
    """One query of a chart: a metric, its label matchers, how its lines are named.
    `require`/`exclude`: keep only series with / without that label; `dash`: a limit line;
    `names`: label values as shown."""
    if metric not in METRICS:
        raise ValueError(f"no metric {metric!r}")
    return {"metric": metric, "labels": dict(labels), "name": name, **extra}


def _chart(
    title: str, unit: str, *queries: dict[str, Any], optional: bool = False, test: str = ""
) -> dict[str, Any]:
    return {
        "title": title,
        "unit": unit,
        "queries": list(queries),
        "optional": optional,
        "test": test,
    }


def node_charts(name: str, language: str) -> list[dict[str, Any]]:
    def t(key: str) -> str:
        return translate(key, language)

    on = {"node": name}
    mounts = {"data": t("web.monitoring.data_dir")}
    protocols = {"tcp": "TCP", "udp": "UDP"}
    return [
        _chart(
            t("web.monitoring.cpu_total"),
            "percent",
            _q("node_cpu_percent", on, t("web.monitoring.cpu_busy"), exclude="cpu"),
            test="cpu",
        ),
        _chart(
            t("web.monitoring.cpu_cores"),
            "percent",
            _q("node_cpu_percent", on, require="cpu"),
            test="cpu-cores",
        ),
        _chart(
            t("web.monitoring.load"),
            "count",
            _q("node_load1", on, t("web.monitoring.load_one")),
            _q("node_load5", on, t("web.monitoring.load_five")),
            _q("node_load15", on, t("web.monitoring.load_fifteen")),
            test="load",
        ),
        _chart(
            t("web.monitoring.memory_swap"),
            "bytes",
            _q("node_memory_used_bytes", on, t("web.monitoring.memory_used")),
            _q("node_memory_total_bytes", on, t("web.monitoring.memory_total"), dash=True),
            _q("node_swap_used_bytes", on, t("web.monitoring.swap_used")),
            test="memory",
        ),
        _chart(
            t("web.monitoring.disk_used"),
            "percent",
            _q("node_disk_percent", on, names=mounts),
            test="disk",
        ),
        _chart(
            t("web.monitoring.disk_io"),
            "bytes_per_second",
            _q("node_disk_read_bytes_per_second", on, t("web.monitoring.read"), names=mounts),
            _q("node_disk_write_bytes_per_second", on, t("web.monitoring.write"), names=mounts),
            test="disk-io",
        ),
        _chart(
            t("web.monitoring.network"),
            "bytes_per_second",
            _q("node_network_receive_bytes_per_second", on, t("web.monitoring.received")),
            _q("node_network_transmit_bytes_per_second", on, t("web.monitoring.sent")),
            test="network",
        ),
        _chart(
            t("web.monitoring.connections"),
            "count",
            _q("node_connections", on, names=protocols),
            test="connections",
        ),
        _chart(
            t("web.monitoring.cpu_temperature"),
            "celsius",
            _q("node_cpu_temperature_celsius", on),
            optional=True,
            test="cpu-temperature",
        ),
    ]


def gpu_charts(gpu: GpuDevice, language: str) -> list[dict[str, Any]]:
    def t(key: str) -> str:
        return translate(key, language)

    # A MIG instance's telemetry is its parent GPU's; its own is the memory it uses.
    on = {"uuid": gpu.parent_uuid or gpu.uuid}
    charts = [
        _chart(
            t("web.monitoring.utilization"),
            "percent",
            _q("gpu_utilization_percent", on, t("web.monitoring.sm")),
            _q("gpu_memory_utilization_percent", on, t("web.monitoring.memory_controller")),
            test="utilization",
        ),
        _chart(
            t("web.monitoring.gpu_memory"),
            "bytes",
            _q("gpu_memory_used_bytes", on, t("web.monitoring.memory_used")),
            _q("gpu_memory_total_bytes", on, t("web.monitoring.memory_total"), dash=True),
            test="gpu-memory",
        ),
        _chart(
            t("web.monitoring.temperature"),
            "celsius",
            _q("gpu_temperature_celsius", on, t("web.monitoring.temperature")),
            test="temperature",
        ),
        _chart(
            t("web.monitoring.power"),
            "watts",
            _q("gpu_power_watts", on, t("web.monitoring.power_draw")),
            _q("gpu_power_limit_watts", on, t("web.monitoring.power_limit"), dash=True),
            test="power",
        ),
        _chart(
            t("web.monitoring.clocks"),
            "mhz",
            _q("gpu_sm_clock_mhz", on, t("web.monitoring.sm")),
            _q("gpu_memory_clock_mhz", on, t("web.monitoring.memory_clock")),
            test="clocks",
        ),
        _chart(
            t("web.monitoring.ecc"),
            "count",
            _q("gpu_ecc_corrected_volatile", on, t("web.monitoring.ecc_corrected")),
            _q("gpu_ecc_uncorrected_volatile", on, t("web.monitoring.ecc_uncorrected")),
            _q("gpu_ecc_corrected_aggregate", on, t("web.monitoring.ecc_corrected_life")),
            _q("gpu_ecc_uncorrected_aggregate", on, t("web.monitoring.ecc_uncorrected_life")),
            test="ecc",
        ),
        _chart(
            t("web.monitoring.pcie"),
            "bytes_per_second",
            _q("gpu_pcie_tx_bytes_per_second", on, t("web.monitoring.sent")),
            _q("gpu_pcie_rx_bytes_per_second", on, t("web.monitoring.received")),
            optional=True,
            test="pcie",
        ),
        _chart(
            t("web.monitoring.process_memory"),
            "bytes",
            _q("gpu_process_memory_bytes", on, legend="job"),
            optional=True,
            test="processes",
        ),
    ]
    if gpu.parent_uuid:
        charts.insert(
            2,
            _chart(
                t("web.monitoring.mig_memory"),
                "bytes",
                _q("gpu_mig_memory_used_bytes", {"mig_uuid": gpu.uuid}, gpu.mig_profile or ""),
                test="mig-memory",
            ),
        )
    return charts


# -- a node, a GPU -----------------------------------------------------------------------------


def _find_node(db: Session, name: str) -> Node:
    for node in nodes.list_nodes(db):
        if node.name == name:
            return node
    raise NotFound("error.node_not_found", name=name)


@router.get("/nodes/{name}")
def show_node(name: NodeName, request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    node = _find_node(db, name)
    holders = cluster.gpu_holders(db, viewer.actor)
    return render.page(
        request,
        "node.html",
        nav="nodes",
        node=node,
        holders=holders,
        states={gpu.uuid: cluster.state_of(gpu, holders) for gpu in node.gpus},
        charts=node_charts(node.name, request.state.language),
    )


@router.get("/gpus/{uuid}")
def show_gpu(uuid: GpuUuid, request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    found = [g for n in nodes.list_nodes(db) for g in n.gpus if g.uuid == uuid]
    if not found:
        raise NotFound("error.gpu_not_found", uuid=uuid)
    gpu = found[0]
    holders = cluster.gpu_holders(db, viewer.actor)
    return render.page(
        request,
        "gpu.html",
        nav="nodes",
        gpu=gpu,
        node=gpu.node,
        state=cluster.state_of(gpu, holders),
        held=holders.get(gpu.uuid, []),
        charts=gpu_charts(gpu, request.state.language),
    )


# -- alerts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventView:
    id: int
    rule: str
    severity: str
    state: str
    where: str
    link: str
    value: str
    fired_at: datetime
    resolved_at: datetime | None
    silenced: bool  # muted when it fired
    muted_until: datetime | None  # a silence mutes it now
    silence_match: str  # what "silence this" would match, as key=value lines


@dataclass(frozen=True)
class RuleView:
    row: AlertRule
    name: str
    unit: str
    condition: str
    match: str
    waits: str
    is_event: bool
    suffix: str  # the threshold's unit, beside its input


@dataclass(frozen=True)
class SilenceView:
    row: AlertSilence
    match: str
    active: bool


@dataclass(frozen=True)
class ChannelView:
    row: AlertChannel
    shown_url: str


def _unit(rule: AlertRule) -> str:
    return METRICS[rule.metric].unit if rule.metric in METRICS else ""


def _value(rule: AlertRule, value: float, language: str) -> str:
    return "" if rule.kind == "event" else alerts.format_value(value, _unit(rule), language)


def _link(labels: Mapping[str, str]) -> str:
    """The console page that best shows where an alert is."""
    if labels.get("job", "").isdigit():
        return f"/jobs/{labels['job']}"
    if re.match(GPU_UUID_PATTERN, labels.get("uuid", "")):
        return f"/gpus/{labels['uuid']}"
    if labels.get("node") and "/" not in labels["node"]:
        return f"/nodes/{labels['node']}"
    return ""


def _lines(match: Mapping[str, str]) -> str:
    return "\n".join(f"{key}={value}" for key, value in match.items())


def _event_view(
    event: AlertEvent, silences: Sequence[alerts.Silence], now: float, language: str
) -> EventView:
    rule = event.rule
    state = "resolved" if event.resolved_at else "firing"
    if rule.kind == "event":
        state = "event"
    labels = dict(event.labels or {})
    muted_until = None
    if state == "firing":
        alert = alerts.Alert(rule.id, labels_of(labels), "firing", since=now, value=event.value)
        checked = alerting.rule_of(rule)
        for silence in silences:
            if alerts.silenced(alert, checked, [silence], now):
                until = alerting.utc(silence.ends_at)
                muted_until = max(muted_until, until) if muted_until else until
    # A GPU's UUID says which GPU on which node by itself.
    redundant = (*QUIET_LABELS, "gpu", "node") if labels.get("uuid") else QUIET_LABELS
    quiet = {k: v for k, v in labels.items() if k not in redundant}
    return EventView(
        id=event.id,
        rule=alerts.rule_name(alerting.rule_of(rule), language),
        severity=event.severity,
        state=state,
        where=alerts.where(labels, language),
        link=_link(labels),
        value=""
        if rule.kind == "event"
        else alerts.format_value(event.value, _unit(rule), language),
        fired_at=event.fired_at,
        resolved_at=event.resolved_at,
        silenced=event.silenced,
        muted_until=muted_until,
        silence_match=_lines({alerts.ALERTNAME: rule.name, **quiet}),
    )


def _rule_view(rule: AlertRule, language: str) -> RuleView:
    unit = _unit(rule)
    is_event = rule.kind == "event"
    sign = {">=": "≥", "<=": "≤", "==": "=", "!=": "≠"}.get(rule.op, rule.op)
    return RuleView(
        row=rule,
        name=alerts.rule_name(alerting.rule_of(rule), language),
        unit=unit,
        condition=""
        if is_event
        else f"{sign} {alerts.format_value(rule.threshold, unit, language)}",
        match=", ".join(f"{k}={v}" for k, v in (rule.match or {}).items()),
        waits="" if is_event else format_duration(rule.for_seconds),
        is_event=is_event,
        suffix=UNIT_SUFFIXES.get(unit, ""),
    )


def shown_url(url: str) -> str:
    """A channel's URL without what grants access: robot URLs carry their token in the query
    (`?key=`, `?access_token=`), some webhooks a user and password."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "…"
    query = urlencode([(key, "…") for key, _ in parse_qsl(parts.query, keep_blank_values=True)])
    path = parts.path
    if parts.scheme in ("http", "https") and len(path) > 24:
        path = path[:12] + "…"  # hook paths (Feishu, Slack-style) are the secret themselves
    return urlunsplit((parts.scheme, host, path, query.replace("%E2%80%A6", "…"), ""))


def _alerts_page(
    request: Request,
    db: Session,
    viewer: Viewer,
    errors: forms.Errors | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
    before_id: int | None = None,
) -> Response:
    language = request.state.language
    now = time.time()
    reader = viewer.actor
    # Whether an alert is muted now depends on every silence; only the visible ones are listed.
    silences = alerting.all_silences(db)
    silence_rows = alerting.list_silences(db, reader)
    firing = alerting.list_events(db, reader, firing_only=True, limit=200)
    history = alerting.list_events(db, reader, limit=HISTORY_PAGE, before_id=before_id)
    is_admin = reader.is_admin
    return render.page(
        request,
        "alerts.html",
        status=status,
        nav="alerts",
        firing=[_event_view(e, silences, now, language) for e in firing],
        history=[_event_view(e, silences, now, language) for e in history],
        older=history[-1].id if len(history) == HISTORY_PAGE else None,
        before_id=before_id,
        silences=[
            SilenceView(row, _lines(row.match or {}), row.ends_at.timestamp() > now)
            for row in silence_rows
        ],
        rules=[_rule_view(rule, language) for rule in alerting.list_rules(db, reader)],
        channels=[ChannelView(c, shown_url(c.url)) for c in alerting.list_channels(db)]
        if is_admin
        else [],
        is_admin=is_admin,
        metrics=list(METRICS),
        events=list(alerts.EVENTS),
        ops=OPS,
        severities=alerts.SEVERITIES,
        kinds=CHANNEL_KINDS,
        errors=errors or {},
        values=values or {},
    )


@router.get("/alerts")
def show_alerts(
    request: Request,
    db: SessionDep,
    viewer: ViewerDep,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_INT32)] = None,
) -> Response:
    return _alerts_page(request, db, viewer, before_id=before_id)


def _matchers(text: str) -> dict[str, str]:
    """Label matchers, one `key=value` a line."""
    pairs = forms.key_values(text, "match", "web.alerts.matcher_line")
    return {key: value.strip() for key, value in pairs.items()}


def _seconds(text: str) -> float | int | str:
    """A wait as typed: seconds (90, 2.5) or a duration (5m, 1h30m)."""
    text = text.strip()
    if re.fullmatch(DURATION_PATTERN, text) and not text.isdigit():
        return parse_duration(text)
    return forms.number(text)


# Service checks that name a field say why in English; the console says it in the reader's
# language where it knows the field.
_FIELD_HINTS = {
    "url": "web.alerts.bad_url",
    "email_from": "web.alerts.bad_email",
    "email_to": "web.alerts.bad_email",
    "metric": "web.alerts.bad_metric",
}


def _refused(request: Request, error: ValidationError | SuanliError, prefix: str):
    found, status = forms.refused(request, error, prefix)
    language = request.state.language
    if (
        isinstance(error, SuanliError)
        and error.key == "error.alert_field"
        and language != "en"
        and error.field in _FIELD_HINTS
    ):
        found = {f"{prefix}.{error.field}": translate(_FIELD_HINTS[error.field], language)}
    return found, status


@router.post("/alerts/rules")
async def create_rule(request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    require_admin(viewer.actor)
    values = forms.fields(await request.form())
    prefix = "new_rule"
    try:
        metric = values.get("metric", "")
        document: dict[str, Any] = {
            "name": values.get("name", "").strip(),
            "kind": "event" if metric in alerts.EVENTS else "metric",
            "metric": metric,
            "match": _matchers(values.get("match", "")),
            "op": values.get("op", ">"),
            "severity": values.get("severity", "warning"),
        }
        for field, read in (("threshold", forms.number), ("for_seconds", _seconds)):
            text = values.get(field, "").strip()
            if text or document["kind"] == "metric":
                document[field] = read(text)
        body = RuleIn.model_validate(document)
        alerting.save_rule(db, viewer.actor, body.model_dump(exclude_none=True))
    except forms.FormError as error:
        message = translate(error.key, request.state.language, **error.params)
        return _alerts_page(request, db, viewer, {f"{prefix}.match": message}, values, 422)
    except (ValidationError, SuanliError) as error:
        db.rollback()
        errors, status = _refused(request, error, prefix)
        return _alerts_page(request, db, viewer, errors, values, status)
    return render.redirect("/alerts#rules", flash="web.alerts.flash_rule_created")


@router.post("/alerts/rules/{rule_id}")
async def change_rule(rule_id: Id, request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    """`action`: save (threshold, for_seconds, severity), enable, disable or delete."""
    require_admin(viewer.actor)
    values = forms.fields(await request.form())
    action = values.get("action", "save")
    prefix = f"rule.{rule_id}"
    try:
        if action == "delete":
            alerting.delete_rule(db, viewer.actor, rule_id)
            return render.redirect("/alerts#rules", flash="web.alerts.flash_rule_deleted")
        if action in ("enable", "disable"):
            document: dict[str, Any] = {"enabled": action == "enable"}
        else:
            document = {"severity": values.get("severity")}
            for field, read in (("threshold", forms.number), ("for_seconds", _seconds)):
                if field in values:
                    document[field] = read(values[field])
        body = RuleIn.model_validate(document)
        alerting.save_rule(db, viewer.actor, body.model_dump(exclude_none=True), rule_id)
    except (ValidationError, SuanliError) as error:
        db.rollback()
        errors, status = _refused(request, error, prefix)
        shown = {f"{prefix}.{key}": value for key, value in values.items()}
        return _alerts_page(request, db, viewer, errors, shown, status)
    return render.redirect(f"/alerts#rule-{rule_id}", flash="web.alerts.flash_rule_saved")


@router.post("/alerts/silences")
async def create_silence(request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    require_admin(viewer.actor)
    values = forms.fields(await request.form())
    prefix = "silence"
    try:
        body = SilenceIn.model_validate(
            {
                "match": _matchers(values.get("match", "")),
                "hours": forms.number(values.get("hours", "2")),
                "reason": values.get("reason", "").strip(),
            }
        )
        alerting.create_silence(db, viewer.actor, body.match, body.hours, body.reason)
    except forms.FormError as error:
        message = translate(error.key, request.state.language, **error.params)
        return _alerts_page(request, db, viewer, {f"{prefix}.match": message}, values, 422)
    except (ValidationError, SuanliError) as error:
        db.rollback()
        errors, status = _refused(request, error, prefix)
        return _alerts_page(request, db, viewer, errors, values, status)
    return render.redirect("/alerts#silences", flash="web.alerts.flash_silence_created")


@router.post("/alerts/silences/{silence_id}/end")
def end_silence(silence_id: Id, db: SessionDep, viewer: ViewerDep) -> Response:
    require_admin(viewer.actor)
    alerting.end_silence(db, viewer.actor, silence_id)
    return render.redirect("/alerts#silences", flash="web.alerts.flash_silence_ended")


_CHANNEL_TEXT = ("secret", "email_from", "username", "password")


@router.post("/alerts/channels")
async def create_channel(request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    require_admin(viewer.actor)
    values = forms.fields(await request.form())
    prefix = "channel"
    document: dict[str, Any] = {
        "name": values.get("name", "").strip(),
        "kind": values.get("kind", ""),
        "url": values.get("url", "").strip(),
        "language": values.get("language") or request.state.language,
    }
    for field in _CHANNEL_TEXT:
        if value := values.get(field, "").strip():
            document[field] = value
    if document["kind"] == "email":
        document["email_to"] = [
            address.strip()
            for address in re.split(r"[,;\n]", values.get("email_to", ""))
            if address.strip()
        ]
    try:
        body = ChannelIn.model_validate(document)
        alerting.save_channel(db, viewer.actor, body.model_dump(exclude_none=True))
    except (ValidationError, SuanliError) as error:
        db.rollback()
        errors, status = _refused(request, error, prefix)
        shown = {k: v for k, v in values.items() if k not in ("secret", "password")}
        return _alerts_page(request, db, viewer, errors, shown, status)
    return render.redirect("/alerts#channels", flash="web.alerts.flash_channel_created")


@router.post("/alerts/channels/{channel_id}")
async def change_channel(
    channel_id: Id, request: Request, db: SessionDep, viewer: ViewerDep
) -> Response:
    """`action`: enable, disable or delete."""
    require_admin(viewer.actor)
    action = forms.fields(await request.form()).get("action", "")
    if action == "delete":
        alerting.delete_channel(db, viewer.actor, channel_id)
        return render.redirect("/alerts#channels", flash="web.alerts.flash_channel_deleted")
    if action not in ("enable", "disable"):
        raise InvalidInput("error.invalid")
    alerting.save_channel(db, viewer.actor, {"enabled": action == "enable"}, channel_id)
    return render.redirect("/alerts#channels", flash="web.alerts.flash_channel_saved")
