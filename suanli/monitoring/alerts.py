"""Alert rules and their evaluation, in the manner of Prometheus; silences; one-line summaries.

Pure: no database, no clock, no global state. The caller passes the rules, the latest samples,
the alerts it holds (pending and firing) and the time; `evaluate` returns the new alerts and the
transitions to notify. That is what makes every rule testable without a server.

Metric rules (`kind="metric"`) watch one metric of the catalogue (`model.METRICS`): every series
of that metric whose labels equal the rule's `match` is compared with the threshold on its own,
so eight GPUs give eight independent alerts, keyed by `(rule.id, labels)`:

- the condition turns true: a *pending* alert, `since` = now (or at once *firing* when
  `for_seconds` is 0);
- it stays true for `for_seconds`: *firing*, `fired_at` = now, reported in `changes`;
- it turns false, or the series is absent from the samples, or the rule is disabled or gone:
  a firing alert is *resolved* (`resolved_at` = now, reported in `changes`, dropped from the
  map); a pending one is dropped silently. A sample whose value is NaN counts as false.

Event rules (`kind="event"`) watch an event of `EVENTS` (e.g. "job.failed") instead of a metric:
`event_alerts`/`event_alert` make one firing alert per event and it never resolves; such
alerts are history, not state, and never go into the map that `evaluate` takes.

Silences mute notifications, never state: a silenced alert still pends, fires and resolves
(the history stays true); the caller asks `silenced` before it notifies.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from suanli.i18n import translate
from suanli.monitoring.model import METRICS, Labels, Sample, labels_of

Op = Literal[">", ">=", "<", "<=", "==", "!="]
Severity = Literal["info", "warning", "critical"]
RuleKind = Literal["metric", "event"]
State = Literal["pending", "firing", "resolved"]
AlertKey = tuple[int, Labels]

OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
RULE_KINDS: tuple[str, ...] = ("metric", "event")
MAX_NAME_LENGTH = 128  # as alert_rules.name

# Silence matchers with these keys look at the rule, not at the series' labels.
ALERTNAME = "alertname"  # the rule's name (as in Alertmanager)
SEVERITY = "severity"  # the rule's severity


@dataclass(frozen=True)
class Event:
    help: str
    labels: tuple[str, ...]  # the labels the emitter attaches (what rules may match on)


EVENTS: dict[str, Event] = {
    "job.failed": Event(
        "A job ended in the failed state", ("job", "job_name", "project", "user", "node")
    ),
    "data.corrupt": Event(
        "A stored file of a dataset or model no longer matches its checksum, or is gone",
        ("sha256", "state", "project", "repository", "version", "path"),
    ),
}


class FieldError(ValueError):
    """Invalid input, naming the field: `str()` reads "field: reason"."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Rule:
    id: int
    name: str
    metric: str  # a METRICS name, or an EVENTS name for event rules
    match: Mapping[str, str]  # label equality filters; empty: every series of the metric
    op: Op  # ignored by event rules
    threshold: float  # ignored by event rules
    for_seconds: float  # ignored by event rules
    severity: Severity
    enabled: bool = True
    kind: RuleKind = "metric"


@dataclass
class Alert:
    rule_id: int
    labels: Labels  # the series' labels (event rules: the event's)
    state: State
    since: float  # when the condition became true
    fired_at: float | None = None
    resolved_at: float | None = None
    value: float | None = None  # the latest value (event rules: None unless given)

    @property
    def key(self) -> AlertKey:
        return (self.rule_id, self.labels)


@dataclass(frozen=True)
class Evaluation:
    alerts: dict[AlertKey, Alert]  # the pending and firing alerts after this evaluation
    changes: list[Alert] = field(default_factory=list)  # to notify: newly firing, resolved


@dataclass(frozen=True)
class Silence:
    """Mutes notifications of the alerts it matches while `starts_at <= now < ends_at`.

    `match` holds label equality matchers, all of which must hold. Two keys look at the rule
    rather than the series: `alertname` (the rule's name) and `severity` (the rule's
    severity). So {"node": "gpu-01"} mutes everything on one node during maintenance, and
    {"alertname": "GPU temperature high", "gpu": "3"} one rule on one GPU.
    """

    id: int
    match: Mapping[str, str]
    starts_at: float
    ends_at: float
    reason: str = ""
    created_by: str = ""


# ---------------------------------------------------------------------------------------------
# Validation


def _check_match(name: str, match: object) -> dict[str, str]:
    if not isinstance(match, Mapping):
        raise FieldError(name, "must be a map of label names to values")
    checked = {}
    for key, value in match.items():
        if not isinstance(key, str) or not key.strip():
            raise FieldError(name, "label names must be non-empty text")
        if not isinstance(value, str):
            raise FieldError(name, f"the value of label {key!r} must be text")
        checked[key] = value
    return checked


def _check_number(name: str, value: object, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(name, "must be a number")
    if not math.isfinite(value):
        raise FieldError(name, "must be a finite number")
    if minimum is not None and value < minimum:
        raise FieldError(name, f"must be at least {minimum:g}")
    return float(value)


def validate_rule(rule: Rule) -> Rule:
    """The rule, checked and normalised (numbers as floats, match as a dict).

    Raises FieldError (a ValueError) naming the first bad field: `name`, `kind`, `metric`,
    `match`, `op`, `threshold`, `for_seconds`, `severity` or `enabled`.
    """
    if not isinstance(rule.name, str) or not rule.name.strip():
        raise FieldError("name", "must not be empty")
    if len(rule.name) > MAX_NAME_LENGTH:
        raise FieldError("name", f"must be at most {MAX_NAME_LENGTH} characters")
    if rule.kind not in RULE_KINDS:
        raise FieldError("kind", f"must be one of {', '.join(RULE_KINDS)}")
    if rule.kind == "metric" and rule.metric not in METRICS:
        raise FieldError("metric", f"unknown metric {rule.metric!r}")
    if rule.kind == "event" and rule.metric not in EVENTS:
        raise FieldError(
            "metric", f"unknown event {rule.metric!r}; known: {', '.join(sorted(EVENTS))}"
        )
    match = _check_match("match", rule.match)
    if rule.op not in OPS:
        raise FieldError("op", f"must be one of {' '.join(OPS)}")
    threshold = _check_number("threshold", rule.threshold)
    for_seconds = _check_number("for_seconds", rule.for_seconds, minimum=0)
    if rule.severity not in SEVERITIES:
        raise FieldError("severity", f"must be one of {', '.join(SEVERITIES)}")
    if not isinstance(rule.enabled, bool):
        raise FieldError("enabled", "must be true or false")
    return replace(rule, match=match, threshold=threshold, for_seconds=for_seconds)


def validate_silence(silence: Silence) -> Silence:
    """The silence, checked: at least one matcher (no silence mutes everything by accident),
    and an end after its start. Raises FieldError naming `match`, `starts_at` or `ends_at`."""
    match = _check_match("match", silence.match)
    if not match:
        raise FieldError("match", "needs at least one label matcher")
    starts_at = _check_number("starts_at", silence.starts_at)
    ends_at = _check_number("ends_at", silence.ends_at)
    if ends_at <= starts_at:
        raise FieldError("ends_at", "must be after starts_at")
    return replace(silence, match=match, starts_at=starts_at, ends_at=ends_at)


# ---------------------------------------------------------------------------------------------
# Evaluation


def matches(match: Mapping[str, str], labels: Labels | Mapping[str, str]) -> bool:
    """Whether every matcher equals the label of that name (a missing label never equals)."""
    values = dict(labels) if not isinstance(labels, Mapping) else labels
    return all(key in values and values[key] == str(value) for key, value in match.items())


def _condition(rule: Rule, value: float) -> bool:
    return not math.isnan(value) and OPS[rule.op](value, rule.threshold)


def evaluate(
    rules: Iterable[Rule],
    samples: Iterable[Sample],
    alerts: Mapping[AlertKey, Alert],
    now: float,
) -> Evaluation:
    """Evaluate the metric rules against the latest samples (see the module's docstring).

    `samples` must hold the latest value of every series (of every node) at once: a series
    missing from it counts as gone and resolves its alert. `alerts` is the previous
    `Evaluation.alerts` (or the pending and firing alerts loaded from the database); it is not
    modified. Event rules, and any alerts of theirs passed in, are ignored. Rule ids must be
    unique (ValueError otherwise: DEFAULT_RULES carry id 0 until they are stored).
    """
    rules = list(rules)
    metric_rules: dict[int, Rule] = {}
    for rule in rules:
        if rule.kind == "metric":
            if rule.id in metric_rules:
                raise ValueError(f"duplicate rule id {rule.id}: rules must be stored before use")
            metric_rules[rule.id] = rule
    event_rule_ids = {rule.id for rule in rules if rule.kind == "event"}
    watched = {rule.metric for rule in metric_rules.values() if rule.enabled}
    latest: dict[str, dict[Labels, float]] = {}
    for sample in samples:
        if sample.name in watched:
            latest.setdefault(sample.name, {})[sample.labels] = float(sample.value)

    new: dict[AlertKey, Alert] = {}
    changes: list[Alert] = []
    for rule in metric_rules.values():
        if not rule.enabled:
            continue
        for labels, value in latest.get(rule.metric, {}).items():
            if not matches(rule.match, labels) or not _condition(rule, value):
                continue
            key = (rule.id, labels)
            previous = alerts.get(key)
            if previous is not None and previous.state in ("pending", "firing"):
                alert = replace(previous, value=value)
            else:
                alert = Alert(rule.id, labels, "pending", since=now, value=value)
            if alert.state == "pending" and now - alert.since >= rule.for_seconds:
                alert = replace(alert, state="firing", fired_at=now)
                changes.append(alert)
            new[key] = alert

    for key, previous in alerts.items():
        if key in new or previous.state != "firing":
            continue  # still active, or pending and cleared: dropped silently
        if previous.rule_id in event_rule_ids:
            continue  # an event alert has no business here
        changes.append(replace(previous, state="resolved", resolved_at=now))
    return Evaluation(new, changes)


def event_alert(
    rule: Rule, labels: Labels | Mapping[str, object], now: float, value: float | None = None
) -> Alert:
    """The alert of one event under an event rule: firing at once; it never resolves."""
    if rule.kind != "event":
        raise ValueError(f"rule {rule.name!r} is not an event rule")
    key = labels if isinstance(labels, tuple) else labels_of(labels)
    return Alert(rule.id, key, "firing", since=now, fired_at=now, value=value)


def event_alerts(
    rules: Iterable[Rule],
    event: str,
    labels: Mapping[str, object],
    now: float,
    value: float | None = None,
) -> list[Alert]:
    """One alert per enabled event rule watching `event` whose match the labels satisfy."""
    key = labels_of(labels)
    return [
        event_alert(rule, key, now, value)
        for rule in rules
        if rule.kind == "event" and rule.enabled and rule.metric == event
        if matches(rule.match, key)
    ]


def silenced(alert: Alert, rule: Rule, silences: Iterable[Silence], now: float) -> bool:
    """Whether a silence active at `now` matches the alert (see Silence for the keys)."""
    labels = dict(alert.labels)
    labels[ALERTNAME] = rule.name
    labels[SEVERITY] = rule.severity
    return any(
        silence.match  # an empty silence mutes nothing (validate_silence refuses it)
        and silence.starts_at <= now < silence.ends_at
        and matches(silence.match, labels)
        for silence in silences
    )


# ---------------------------------------------------------------------------------------------
# Defaults


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(0, "GPU temperature high", "gpu_temperature_celsius", {}, ">", 85, 300, "critical"),
    Rule(
        0,
        "GPU uncorrectable ECC error",
        "gpu_ecc_uncorrected_volatile",
        {},
        ">",
        0,
        0,
        "critical",
    ),
    Rule(0, "Data disk filling up", "node_disk_percent", {"mount": "data"}, ">", 80, 60, "warning"),
    Rule(
        0, "Data disk nearly full", "node_disk_percent", {"mount": "data"}, ">", 90, 60, "critical"
    ),
    Rule(0, "GPU lost", "gpu_present", {}, "==", 0, 0, "critical"),
    Rule(0, "Job failed", "job.failed", {}, ">", 0, 0, "warning", kind="event"),
)


# ---------------------------------------------------------------------------------------------
# Summaries


def _text(key: str, language: str, **params: object) -> str:
    """A piece of an alert's wording, from the catalogues (`alert.text.*`)."""
    return translate(f"alert.text.{key}", language, **params)


_OP_SIGNS = {">": ">", ">=": "≥", "<": "<", "<=": "≤", "==": "=", "!=": "≠"}
_UNIT_SUFFIXES = {
    "percent": "%",
    "celsius": " °C",
    "watts": " W",
    "mhz": " MHz",
    "watt_hours": " Wh",
    "count": "",
}


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def format_value(value: float | None, unit: str, language: str = "en") -> str:
    """A value with its unit for people: "91 °C", "87.5%", "1.5 GiB", "12 MiB/s", "3"."""
    if value is None or math.isnan(value):
        return _text("no_value", language)
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if unit in ("bytes", "bytes_per_second"):
        suffix = "/s" if unit == "bytes_per_second" else ""
        size, prefixes = float(value), ["", "Ki", "Mi", "Gi", "Ti", "Pi"]
        while abs(size) >= 1024 and len(prefixes) > 1:
            size /= 1024
            prefixes.pop(0)
        return f"{_number(round(size, 2))} {prefixes[0]}B{suffix}"
    if unit in _UNIT_SUFFIXES:
        return f"{_number(value)}{_UNIT_SUFFIXES[unit]}"
    return f"{_number(value)} {unit}"


def rule_name(rule: Rule, language: str) -> str:
    """The rule's name; a default rule's untouched English name reads in `language`."""
    key = "alert.rule_name." + re.sub(r"[^a-z0-9]+", "_", rule.name.lower()).strip("_")
    translated = translate(key, language)
    return rule.name if translated == key else translated


def where(labels: Labels | Mapping[str, str], language: str) -> str:
    """Where an alert is, from its labels: "node vm, GPU 0 (GPU-1a2b…), simulated"."""
    values = dict(labels)
    parts: list[str] = []

    def said(key: str, value: str) -> str:
        return _text(key, language, value=value)

    def add(key: str) -> None:
        if values.get(key):
            parts.append(said(key, values[key]))

    add("node")
    if values.get("gpu"):
        gpu = said("gpu", values["gpu"])
        parts.append(gpu + (said("uuid", values["uuid"]) if values.get("uuid") else ""))
    elif values.get("uuid"):
        parts.append(said("gpu", values["uuid"]))
    if values.get("mig_profile") or values.get("mig_uuid"):
        mig = said("mig", values.get("mig_profile") or values["mig_uuid"])
        if values.get("mig_profile") and values.get("mig_uuid"):
            mig += said("uuid", values["mig_uuid"])
        parts.append(mig)
    for key in ("mount", "interface", "cpu", "sensor", "proto", "pid"):
        add(key)
    if values.get("job"):
        job = said("job", values["job"])
        if values.get("job_name"):
            job += said("job_name", values["job_name"])
        parts.append(job)
    add("project")
    add("user")
    if values.get("simulated") == "1":
        parts.append(_text("simulated", language))
    return _text("separator", language).join(parts)


def summary(rule: Rule, alert: Alert, language: str) -> str:
    """One line: state, severity, what, where, the value with its unit and the threshold.

    en:    FIRING critical: GPU temperature high — node vm, GPU 0 (GPU-1a2b): 91 °C
           (threshold > 85 °C)
    zh-CN: 【告警中·严重】GPU 温度过高 — 节点 vm，GPU 0（GPU-1a2b）：91 °C（阈值 > 85 °C）
    """
    place = where(alert.labels, language)
    params = {
        "state": _text(alert.state, language),
        "severity": _text(rule.severity, language),
        "name": rule_name(rule, language),
        "where": place,
    }
    if rule.kind == "event":
        template = "event" if place else "event_nowhere"
    else:
        unit = METRICS[rule.metric].unit if rule.metric in METRICS else ""
        params["value"] = format_value(alert.value, unit, language)
        params["op"] = _OP_SIGNS.get(rule.op, rule.op)
        params["threshold"] = format_value(rule.threshold, unit, language)
        template = "metric" if place else "metric_nowhere"
    return _text(template, language, **params)


def subject(rule: Rule, alert: Alert, language: str) -> str:
    """A short title (e-mail subject, robot title): "[FIRING critical] GPU lost — node vm"."""
    place = where(alert.labels, language)
    return _text(
        "subject_where" if place else "subject",
        language,
        state=_text(alert.state, language),
        severity=_text(rule.severity, language),
        name=rule_name(rule, language),
        where=place,
    )
