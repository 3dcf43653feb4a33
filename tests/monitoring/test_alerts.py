"""Alert rules: pending → firing → resolved per series, event rules, silences, summaries."""

import math
from dataclasses import replace

import pytest

from suanli.monitoring.alerts import (
    DEFAULT_RULES,
    EVENTS,
    Alert,
    FieldError,
    Rule,
    Silence,
    evaluate,
    event_alert,
    event_alerts,
    format_value,
    silenced,
    subject,
    summary,
    validate_rule,
    validate_silence,
)
from suanli.monitoring.model import METRICS, Sample, labels_of

HOT = Rule(1, "GPU temperature high", "gpu_temperature_celsius", {}, ">", 85, 300, "critical")
LOST = Rule(2, "GPU lost", "gpu_present", {}, "==", 0, 0, "critical")
FAILED = Rule(3, "Job failed", "job.failed", {}, ">", 0, 0, "warning", kind="event")


def gpu(index: int, node: str = "vm") -> tuple[tuple[str, str], ...]:
    return labels_of(
        {"node": node, "gpu": index, "uuid": f"GPU-{index:04d}", "model": "L40S", "simulated": 0}
    )


def temperature(index: int, value: float, node: str = "vm") -> Sample:
    return Sample("gpu_temperature_celsius", gpu(index, node), value)


def test_pending_then_firing_after_for_seconds_then_resolved() -> None:
    first = evaluate([HOT], [temperature(0, 90)], {}, now=1000)
    (alert,) = first.alerts.values()
    assert (alert.state, alert.since, alert.fired_at, alert.value) == ("pending", 1000, None, 90)
    assert first.changes == []

    almost = evaluate([HOT], [temperature(0, 91)], first.alerts, now=1299)
    assert [a.state for a in almost.alerts.values()] == ["pending"]
    assert almost.changes == []

    fired = evaluate([HOT], [temperature(0, 92)], almost.alerts, now=1300)
    (alert,) = fired.alerts.values()
    assert (alert.state, alert.since, alert.fired_at, alert.value) == ("firing", 1000, 1300, 92)
    assert fired.changes == [alert]

    still = evaluate([HOT], [temperature(0, 93)], fired.alerts, now=1360)
    assert still.changes == []  # firing is notified once
    assert next(iter(still.alerts.values())).value == 93

    cooled = evaluate([HOT], [temperature(0, 70)], still.alerts, now=1400)
    assert cooled.alerts == {}
    (resolved,) = cooled.changes
    assert (resolved.state, resolved.since, resolved.fired_at, resolved.resolved_at) == (
        "resolved",
        1000,
        1300,
        1400,
    )
    assert resolved.value == 93  # the last value seen while it held
    # The caller's map is not modified.
    assert next(iter(still.alerts.values())).state == "firing"


def test_threshold_is_strict_for_greater_than() -> None:
    assert evaluate([HOT], [temperature(0, 85)], {}, now=0).alerts == {}
    at_least = replace(HOT, op=">=")
    assert len(evaluate([at_least], [temperature(0, 85)], {}, now=0).alerts) == 1


def test_pending_alert_that_clears_is_dropped_silently() -> None:
    first = evaluate([HOT], [temperature(0, 90)], {}, now=0)
    cleared = evaluate([HOT], [temperature(0, 80)], first.alerts, now=100)
    assert cleared.alerts == {} and cleared.changes == []
    # And a new excursion starts the clock again.
    again = evaluate([HOT], [temperature(0, 90)], cleared.alerts, now=200)
    again = evaluate([HOT], [temperature(0, 90)], again.alerts, now=400)
    assert [a.state for a in again.alerts.values()] == ["pending"]


def test_zero_for_seconds_fires_at_once() -> None:
    lost = Sample("gpu_present", gpu(3), 0)
    result = evaluate([LOST], [lost, Sample("gpu_present", gpu(2), 1)], {}, now=50)
    (alert,) = result.changes
    assert alert.state == "firing" and alert.fired_at == 50 and alert.labels == gpu(3)
    assert list(result.alerts) == [(2, gpu(3))]


def test_absent_series_resolves_a_firing_alert() -> None:
    fired = evaluate([LOST], [Sample("gpu_present", gpu(3), 0)], {}, now=0)
    gone = evaluate([LOST], [Sample("gpu_present", gpu(2), 1)], fired.alerts, now=10)
    assert gone.alerts == {}
    assert [(a.state, a.resolved_at) for a in gone.changes] == [("resolved", 10)]


def test_nan_counts_as_false() -> None:
    fired = evaluate([HOT], [temperature(0, 99)], {}, now=0)
    fired = evaluate([HOT], [temperature(0, 99)], fired.alerts, now=300)
    assert [a.state for a in fired.changes] == ["firing"]
    blind = evaluate([replace(HOT, op="!=")], [temperature(0, math.nan)], fired.alerts, now=310)
    assert [a.state for a in blind.changes] == ["resolved"]


def test_series_alert_independently() -> None:
    samples = [temperature(0, 90), temperature(1, 60), temperature(0, 95, node="other")]
    first = evaluate([HOT], samples, {}, now=0)
    assert set(first.alerts) == {(1, gpu(0)), (1, gpu(0, "other"))}
    # GPU 1 heats up later: its clock starts later.
    samples = [temperature(0, 90), temperature(1, 90), temperature(0, 95, node="other")]
    second = evaluate([HOT], samples, first.alerts, now=200)
    assert second.alerts[(1, gpu(1))].since == 200
    third = evaluate([HOT], samples, second.alerts, now=300)
    assert {a.labels for a in third.changes} == {gpu(0), gpu(0, "other")}
    assert third.alerts[(1, gpu(1))].state == "pending"
    # One cools down: only it resolves.
    samples = [temperature(0, 90), temperature(1, 90), temperature(0, 50, node="other")]
    fourth = evaluate([HOT], samples, third.alerts, now=400)
    assert [(a.labels, a.state) for a in fourth.changes] == [(gpu(0, "other"), "resolved")]
    assert fourth.alerts[(1, gpu(0))].state == "firing"


def test_match_filters_series() -> None:
    disk = Rule(7, "Data disk", "node_disk_percent", {"mount": "data"}, ">", 80, 0, "warning")
    samples = [
        Sample("node_disk_percent", labels_of({"node": "vm", "mount": "data"}), 85),
        Sample("node_disk_percent", labels_of({"node": "vm", "mount": "/"}), 99),
        Sample("node_memory_percent", labels_of({"node": "vm", "mount": "data"}), 99),
    ]
    result = evaluate([disk], samples, {}, now=0)
    assert [dict(a.labels)["mount"] for a in result.changes] == ["data"]


def test_disabled_or_deleted_rule_resolves_its_firing_alerts() -> None:
    samples = [temperature(0, 99), temperature(1, 99)]
    first = evaluate([HOT], samples, {}, now=0)
    fired = evaluate([HOT], [temperature(0, 99)], first.alerts, now=300)
    fired = evaluate([HOT], samples, fired.alerts, now=301)  # GPU 1 pending since 301
    assert sorted(a.state for a in fired.alerts.values()) == ["firing", "pending"]

    disabled = evaluate([replace(HOT, enabled=False)], samples, fired.alerts, now=400)
    assert disabled.alerts == {}
    assert [(a.labels, a.state) for a in disabled.changes] == [(gpu(0), "resolved")]

    deleted = evaluate([], samples, fired.alerts, now=400)
    assert [(a.labels, a.state) for a in deleted.changes] == [(gpu(0), "resolved")]


def test_duplicate_rule_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate rule id 1"):
        evaluate([HOT, replace(HOT, name="again")], [], {}, now=0)


def test_edited_threshold_applies_to_running_alerts() -> None:
    fired = evaluate([HOT], [temperature(0, 90)], {}, now=0)
    fired = evaluate([HOT], [temperature(0, 90)], fired.alerts, now=300)
    raised = evaluate([replace(HOT, threshold=95)], [temperature(0, 90)], fired.alerts, now=310)
    assert [a.state for a in raised.changes] == ["resolved"]


def test_event_rules() -> None:
    labels = {"job": 42, "job_name": "train-llama", "project": "vision", "node": "vm"}
    (alert,) = event_alerts([HOT, FAILED, replace(FAILED, id=4, enabled=False)], "job.failed",
                            labels, now=77)  # fmt: skip
    assert (alert.rule_id, alert.state, alert.since, alert.fired_at) == (3, "firing", 77, 77)
    assert alert.resolved_at is None and dict(alert.labels)["job"] == "42"
    assert event_alert(FAILED, labels, now=77) == alert

    only_vision = replace(FAILED, match={"project": "vision"})
    assert event_alerts([only_vision], "job.failed", {**labels, "project": "nlp"}, 1) == []
    assert event_alerts([FAILED], "job.succeeded", labels, 1) == []
    with pytest.raises(ValueError, match="not an event rule"):
        event_alert(HOT, labels, now=1)
    # Event alerts never resolve: evaluate leaves them alone.
    result = evaluate([FAILED], [], {alert.key: alert}, now=1000)
    assert result.changes == [] and result.alerts == {}


def test_silences_by_label_rule_and_time_window() -> None:
    alert = Alert(1, gpu(0), "firing", since=0, fired_at=0, value=90)
    maintenance = Silence(1, {"node": "vm"}, starts_at=100, ends_at=200, reason="x", created_by="a")
    assert not silenced(alert, HOT, [maintenance], now=99)
    assert silenced(alert, HOT, [maintenance], now=100)
    assert silenced(alert, HOT, [maintenance], now=199.9)
    assert not silenced(alert, HOT, [maintenance], now=200)

    other_node = replace(maintenance, match={"node": "gpu-02"})
    assert not silenced(alert, HOT, [other_node], now=150)
    assert silenced(alert, HOT, [other_node, maintenance], now=150)

    one_rule = Silence(2, {"alertname": "GPU temperature high", "gpu": "0"}, 0, 1e12)
    assert silenced(alert, HOT, [one_rule], now=150)
    assert not silenced(alert, LOST, [one_rule], now=150)
    assert not silenced(replace(alert, labels=gpu(1)), HOT, [one_rule], now=150)

    by_severity = Silence(3, {"severity": "warning"}, 0, 1e12)
    assert not silenced(alert, HOT, [by_severity], now=1)
    assert silenced(alert, replace(HOT, severity="warning"), [by_severity], now=1)

    assert not silenced(alert, HOT, [Silence(4, {}, 0, 1e12)], now=1)  # empty mutes nothing


def test_silence_validation() -> None:
    assert validate_silence(Silence(1, {"node": "vm"}, 0, 10)).ends_at == 10.0
    with pytest.raises(FieldError, match=r"^match: "):
        validate_silence(Silence(1, {}, 0, 10))
    with pytest.raises(FieldError, match=r"^ends_at: ") as error:
        validate_silence(Silence(1, {"node": "vm"}, 10, 10))
    assert error.value.field == "ends_at"


def test_default_rules_are_valid_and_cover_the_brief() -> None:
    assert all(rule.id == 0 and rule.enabled for rule in DEFAULT_RULES)
    # Stored, they get ids.
    rules = [replace(validate_rule(rule), id=i) for i, rule in enumerate(DEFAULT_RULES, 1)]
    assert len({rule.name for rule in rules}) == len(rules)
    by_metric = {}
    for rule in rules:
        by_metric.setdefault(rule.metric, []).append(rule)
    (hot,) = by_metric["gpu_temperature_celsius"]
    assert (hot.op, hot.threshold, hot.for_seconds, hot.severity) == (">", 85, 300, "critical")
    (ecc,) = by_metric["gpu_ecc_uncorrected_volatile"]
    assert (ecc.op, ecc.threshold, ecc.for_seconds, ecc.severity) == (">", 0, 0, "critical")
    disks = sorted(by_metric["node_disk_percent"], key=lambda r: r.threshold)
    assert [(r.threshold, r.severity, dict(r.match)) for r in disks] == [
        (80, "warning", {"mount": "data"}),
        (90, "critical", {"mount": "data"}),
    ]
    (lost,) = by_metric["gpu_present"]
    assert (lost.op, lost.threshold, lost.for_seconds) == ("==", 0, 0)
    (failed,) = by_metric["job.failed"]
    assert failed.kind == "event" and failed.severity == "warning"
    assert set(EVENTS) >= {"job.failed"}

    # And they do what they say: one uncorrectable ECC error fires at once.
    ecc_sample = Sample("gpu_ecc_uncorrected_volatile", gpu(5), 1)
    assert [a.state for a in evaluate(rules, [ecc_sample], {}, now=0).changes] == ["firing"]
    full = Sample("node_disk_percent", labels_of({"node": "vm", "mount": "data"}), 95)
    first = evaluate(rules, [full], {}, now=0)
    assert first.changes == [] and len(first.alerts) == 2
    assert len(evaluate(rules, [full], first.alerts, now=60).changes) == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": " "}, "name"),
        ({"name": "x" * 129}, "name"),
        ({"kind": "log"}, "kind"),
        ({"metric": "gpu_temperature"}, "metric"),
        ({"metric": "job.failed"}, "metric"),  # an event is no metric
        ({"match": {"gpu": 0}}, "match"),
        ({"match": {"": "x"}}, "match"),
        ({"match": ["gpu"]}, "match"),
        ({"op": "=>"}, "op"),
        ({"threshold": "85"}, "threshold"),
        ({"threshold": math.inf}, "threshold"),
        ({"threshold": True}, "threshold"),
        ({"for_seconds": -1}, "for_seconds"),
        ({"for_seconds": math.nan}, "for_seconds"),
        ({"severity": "fatal"}, "severity"),
        ({"enabled": "yes"}, "enabled"),
    ],
)
def test_invalid_rules_name_the_field(change: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}: ") as error:
        validate_rule(replace(HOT, **change))
    assert isinstance(error.value, FieldError) and error.value.field == field


def test_event_rules_need_a_known_event() -> None:
    assert validate_rule(FAILED).kind == "event"
    with pytest.raises(FieldError, match=r"unknown event 'job\.exploded'"):
        validate_rule(replace(FAILED, metric="job.exploded"))
    with pytest.raises(FieldError, match=r"^metric: "):
        validate_rule(replace(FAILED, metric="gpu_temperature_celsius"))


def test_validate_rule_normalises() -> None:
    match = {"mount": "data"}
    rule = validate_rule(replace(HOT, threshold=85, for_seconds=300, match=match))
    assert type(rule.threshold) is float and type(rule.for_seconds) is float
    match["mount"] = "changed"
    assert rule.match == {"mount": "data"}


def test_summary_in_both_languages() -> None:
    labels = labels_of({"node": "vm", "gpu": 0, "uuid": "GPU-1a2b", "simulated": 1})
    alert = Alert(1, labels, "firing", since=0, fired_at=300, value=91.25)
    english = summary(HOT, alert, "en")
    assert english == (
        "FIRING critical: GPU temperature high — node vm, GPU 0 (GPU-1a2b), simulated: "
        "91.25 °C (threshold > 85 °C)"
    )
    chinese = summary(HOT, alert, "zh-CN")
    assert chinese == (
        "【告警中·严重】GPU 温度过高 — 节点 vm，GPU 0（GPU-1a2b），模拟设备："
        "91.25 °C（阈值 > 85 °C）"
    )
    assert summary(HOT, alert, "zh") == chinese  # any Chinese tag
    assert "\n" not in english and "\n" not in chinese

    resolved = summary(HOT, replace(alert, state="resolved", value=70), "en")
    assert resolved.startswith("RESOLVED critical: ") and "70 °C" in resolved
    assert summary(HOT, replace(alert, state="pending"), "zh-CN").startswith("【待触发·严重】")

    renamed = replace(HOT, name="炉子")
    assert "炉子" in summary(renamed, alert, "en")  # a user's name is kept as it is


def test_summary_units_and_places() -> None:
    disk = Rule(7, "Data disk nearly full", "node_disk_percent", {}, ">", 90, 60, "critical")
    alert = Alert(7, labels_of({"node": "n1", "mount": "data"}), "firing", 0, value=93.456)
    assert summary(disk, alert, "en") == (
        "FIRING critical: Data disk nearly full — node n1, mount data: 93.46% (threshold > 90%)"
    )
    assert "挂载点 data" in summary(disk, alert, "zh-CN")

    memory = Rule(8, "Framebuffer", "gpu_memory_used_bytes", {}, ">=", 40 * 2**30, 0, "info")
    alert = Alert(8, gpu(2), "pending", 0, value=45.5 * 2**30)
    text = summary(memory, alert, "en")
    assert "45.5 GiB (threshold ≥ 40 GiB)" in text and "GPU 2 (GPU-0002)" in text
    assert "simulated" not in text

    failed = Alert(3, labels_of({"job": 42, "job_name": "train", "project": "vision"}), "firing", 0)
    assert summary(FAILED, failed, "en") == (
        "FIRING warning: Job failed — job 42 (train), project vision"
    )
    assert (
        summary(FAILED, failed, "zh-CN")
        == "【告警中·警告】作业失败 — 作业 42（train），项目 vision"
    )

    no_labels = Alert(8, (), "firing", 0, value=None)
    assert summary(memory, no_labels, "en") == (
        "FIRING info: Framebuffer: no value (threshold ≥ 40 GiB)"
    )


def test_subject() -> None:
    alert = Alert(2, gpu(0), "firing", 0, value=0)
    assert subject(LOST, alert, "en") == "[FIRING critical] GPU lost — node vm, GPU 0 (GPU-0000)"
    assert subject(LOST, alert, "zh-CN") == "【告警中·严重】GPU 掉卡 — 节点 vm，GPU 0（GPU-0000）"


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (91, "celsius", "91 °C"),
        (87.5, "percent", "87.5%"),
        (250.123, "watts", "250.12 W"),
        (1410, "mhz", "1410 MHz"),
        (512, "bytes", "512 B"),
        (3 * 2**20, "bytes_per_second", "3 MiB/s"),
        (2**60, "bytes", "1024 PiB"),
        (12.25, "watt_hours", "12.25 Wh"),
        (3, "count", "3"),
        (1.5, "furlongs", "1.5 furlongs"),
    ],
)
def test_format_value(value: float, unit: str, text: str) -> None:
    assert format_value(value, unit) == text


def test_every_metric_unit_is_formatted_with_a_unit_or_as_a_count() -> None:
    for metric in METRICS.values():
        text = format_value(1, metric.unit)
        assert text == "1" if metric.unit == "count" else text != "1", metric.unit
