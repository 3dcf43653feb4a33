"""`suanli alerts` and `suanli metrics`: what fires, and how numbers moved, in the terminal."""

from typing import Annotated

import typer
from rich.text import Text

from suanli.cli.output import JsonOption, print_json, t, table
from suanli.cli.session import connect
from suanli.monitoring.alerts import format_value

_BLOCKS = "▁▂▃▄▅▆▇█"
_STATE_STYLES = {"firing": "bold red", "resolved": "green", "event": "magenta"}
_SEVERITY_STYLES = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def sparkline(values: list[float], width: int = 40) -> str:
    """The values as a row of block characters, the last `width` buckets of them."""
    if not values:
        return ""
    step = max(1, len(values) // width)
    buckets = [
        sum(values[i : i + step]) / len(values[i : i + step]) for i in range(0, len(values), step)
    ][-width:]
    low, high = min(buckets), max(buckets)
    span = (high - low) or 1.0
    return "".join(_BLOCKS[min(7, int((v - low) / span * 7.999))] for v in buckets)


def alerts(
    firing: Annotated[bool, typer.Option("--firing", help="Only what fires now.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    json: JsonOption = False,
) -> None:
    """The alert history, newest first (what fired, where, when it resolved)."""
    with connect() as client:
        events = client.alerts.list(firing=firing, limit=limit)
    if json:
        print_json(events)
        return
    table(
        ["state", "severity", "rule", "where", "value", "fired", "resolved"],
        [
            (
                Text(t(f"label.alert.{e.state}"), style=_STATE_STYLES.get(e.state, "")),
                Text(t(f"label.severity.{e.severity}"), style=_SEVERITY_STYLES.get(e.severity, "")),
                e.rule,
                ", ".join(f"{k}={v}" for k, v in e.labels.items()),
                f"{e.value:g}",
                e.fired_at,
                e.resolved_at,
            )
            for e in events
        ],
    )


def metrics(
    metric: Annotated[str, typer.Argument(help="e.g. gpu_temperature_celsius, node_cpu_percent")],
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", help="Only series with this label=value.")
    ] = None,
    span: Annotated[str, typer.Option("--range", help="How far back: 15m, 1h, 24h, 7d.")] = "1h",
    json: JsonOption = False,
) -> None:
    """A metric's series over a time range: latest, lowest, highest, and a sparkline."""
    labels = dict(item.split("=", 1) for item in (label or []) if "=" in item)
    with connect() as client:
        answer = client.metrics.query(metric, labels=labels, range=span)
    if json:
        print_json(answer)
        return
    unit = answer.unit
    rows = []
    for series in answer.series:
        values = [value for _, value in series.points]
        if not values:
            continue
        rows.append(
            (
                ", ".join(f"{k}={v}" for k, v in sorted(series.labels.items())),
                format_value(values[-1], unit),
                format_value(min(values), unit),
                format_value(max(values), unit),
                Text(sparkline(values), style="cyan"),
            )
        )
    table(["series", "latest", "minimum", "maximum", "trend"], rows)
