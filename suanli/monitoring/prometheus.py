"""`/metrics` in the Prometheus text exposition format (version 0.0.4).

GPU metrics that dcgm-exporter also exports go out under its names and labels (`gpu`, `UUID`,
`modelName`, `Hostname`; framebuffer memory in MiB, as it does), so dashboards made for it
work unchanged; everything else is `suanli_<name>`. The platform's own figures (jobs by state,
queue length per project, scheduler cycle time, API latency) come from `PlatformMetrics`.
"""

import bisect
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from suanli.monitoring.model import METRICS, Sample

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_DCGM_LABELS = {"gpu": "gpu", "uuid": "UUID", "model": "modelName", "node": "Hostname"}
_MIB_METRICS = {"DCGM_FI_DEV_FB_USED"}
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Cumulative buckets, sum and count per label set; safe to observe from any thread."""

    def __init__(self, name: str, help: str, buckets: Sequence[float] = LATENCY_BUCKETS):
        self.name, self.help, self.buckets = name, help, tuple(buckets)
        self._series: dict[tuple[tuple[str, str], ...], list[float]] = {}
        self._lock = threading.Lock()

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            counts = self._series.setdefault(key, [0.0] * (len(self.buckets) + 3))
            index = bisect.bisect_left(self.buckets, value)
            for i in range(index, len(self.buckets)):
                counts[i] += 1
            counts[-3] += 1  # +Inf
            counts[-2] += value
            counts[-1] += 1

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            series = {key: list(counts) for key, counts in self._series.items()}
        for key, counts in sorted(series.items()):
            for bound, count in zip((*self.buckets, math.inf), counts, strict=False):
                le = "+Inf" if bound == math.inf else repr(bound)
                out.append(_line(f"{self.name}_bucket", (*key, ("le", le)), count))
            out.append(_line(f"{self.name}_sum", key, counts[-2]))
            out.append(_line(f"{self.name}_count", key, counts[-1]))
        return out


class Counter:
    """A total per label set; safe to add to from any thread."""

    def __init__(self, name: str, help: str):
        self.name, self.help = name, help
        self._series: dict[tuple[tuple[str, str], ...], float] = {}
        self._lock = threading.Lock()

    def add(self, value: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._series[key] = self._series.get(key, 0.0) + value

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        with self._lock:
            series = dict(self._series)
        out += [_line(self.name, key, value) for key, value in sorted(series.items())]
        return out


TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class GatewayMetrics:
    """The model gateway's figures, per model (project/service)."""

    requests: Counter = field(
        default_factory=lambda: Counter(
            "suanli_gateway_requests_total", "Requests through the gateway, by model and status"
        )
    )
    errors: Counter = field(
        default_factory=lambda: Counter(
            "suanli_gateway_errors_total", "Requests answered with an error, by model and code"
        )
    )
    tokens: Counter = field(
        default_factory=lambda: Counter(
            "suanli_gateway_tokens_total", "Tokens metered, by model and type (prompt, completion)"
        )
    )
    ttft: Histogram = field(
        default_factory=lambda: Histogram(
            "suanli_gateway_time_to_first_token_seconds",
            "Time from a request to its first token",
            TOKEN_BUCKETS,
        )
    )
    tpot: Histogram = field(
        default_factory=lambda: Histogram(
            "suanli_gateway_time_per_output_token_seconds",
            "Time per output token after the first",
            (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        )
    )
    duration: Histogram = field(
        default_factory=lambda: Histogram(
            "suanli_gateway_request_duration_seconds", "Whole request time", TOKEN_BUCKETS
        )
    )

    def all(self) -> list["Histogram | Counter"]:
        return [self.requests, self.errors, self.tokens, self.ttft, self.tpot, self.duration]


@dataclass
class PlatformMetrics:
    """What the server measures about itself, kept in memory by the serving process."""

    api_latency: Histogram = field(
        default_factory=lambda: Histogram(
            "suanli_api_request_duration_seconds", "API and console request time"
        )
    )
    scheduler_cycle: Histogram = field(
        default_factory=lambda: Histogram(
            "suanli_scheduler_cycle_seconds",
            "Time of one scheduling cycle",
            (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
        )
    )
    gateway: GatewayMetrics = field(default_factory=GatewayMetrics)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if value != int(value) else str(int(value))


def _line(name: str, labels: Iterable[tuple[str, str]], value: float) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return f"{name}{{{inner}}} {_number(value)}" if inner else f"{name} {_number(value)}"


def exposition(
    samples: Sequence[Sample],
    gauges: Mapping[str, tuple[str, Sequence[tuple[dict[str, str], float]]]],
    histograms: Sequence["Histogram | Counter"],
) -> str:
    """The whole page: the latest samples, platform gauges (name → help, [(labels, value)])
    and histograms."""
    grouped: dict[str, list[str]] = {}
    helps: dict[str, tuple[str, str]] = {}
    for sample in samples:
        metric = METRICS.get(sample.name)
        if metric is None:
            continue
        if metric.dcgm:
            name = metric.dcgm
            labels = [(_DCGM_LABELS.get(k, k), v) for k, v in sample.labels]
            value = sample.value / 2**20 if name in _MIB_METRICS else sample.value
        else:
            name, labels, value = f"suanli_{sample.name}", list(sample.labels), sample.value
        helps.setdefault(name, (metric.help, metric.kind))
        grouped.setdefault(name, []).append(_line(name, sorted(labels), value))
    out: list[str] = []
    for name in sorted(grouped):
        help_, kind = helps[name]
        out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", *grouped[name]]
    for name, (help_, rows) in sorted(gauges.items()):
        out += [f"# HELP {name} {help_}", f"# TYPE {name} gauge"]
        out += [_line(name, sorted(labels.items()), value) for labels, value in rows]
    for histogram in histograms:
        out += histogram.lines()
    return "\n".join(out) + "\n"


class RequestTiming:
    """ASGI middleware: the time of every HTTP request, by method, route template and status
    class, into the platform's latency histogram (streams of server-sent events left out: they
    last as long as someone watches)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500, "stream": False}

        async def timed_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = dict(message.get("headers") or [])
                status["stream"] = headers.get(b"content-type", b"").startswith(
                    b"text/event-stream"
                )
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "") or "unmatched"
            if not status["stream"]:
                platform: PlatformMetrics = scope["app"].state.platform
                platform.api_latency.observe(
                    time.perf_counter() - started,
                    method=scope["method"],
                    route=path,
                    status=f"{int(status['code']) // 100}xx",
                )
