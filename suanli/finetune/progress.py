"""A run's progress from LLaMA-Factory's trainer_log.jsonl: one JSON object a logging step
(current_steps, total_steps, loss, eval_loss, lr, epoch, percentage, elapsed_time,
remaining_time, throughput, total_tokens). The file is written by the user's workload, so
it is read as untrusted text: a line that is not an object of numbers is skipped, never
raised on, and a chart gets at most MAX_POINTS points.
"""

import json
import math
import re
from dataclasses import dataclass
from typing import Any

MAX_POINTS = 2000
_CLOCK = re.compile(r"^(?:(\d+) days?, )?(\d+):(\d{1,2}):(\d{1,2})$")


@dataclass(frozen=True)
class Point:
    step: int
    epoch: float | None = None
    loss: float | None = None
    eval_loss: float | None = None
    lr: float | None = None
    throughput: float | None = None  # tokens per second
    tokens: int | None = None


@dataclass(frozen=True)
class Progress:
    points: list[Point]
    current_steps: int = 0
    total_steps: int = 0
    percentage: float = 0.0
    elapsed_seconds: int | None = None
    remaining_seconds: int | None = None
    diverged: bool = False  # a loss that is not a number (NaN or infinite)

    @property
    def loss(self) -> float | None:
        """The newest finite training loss."""
        return next(
            (p.loss for p in reversed(self.points) if p.loss is not None and math.isfinite(p.loss)),
            None,
        )

    def summary(self) -> dict[str, Any]:
        """What a run's row keeps (the list and the run's page show it without the file)."""
        return {
            "current_steps": self.current_steps,
            "total_steps": self.total_steps,
            "percentage": self.percentage,
            "loss": self.loss,
            "elapsed_seconds": self.elapsed_seconds,
            "remaining_seconds": self.remaining_seconds,
        }


def read(data: bytes, *, after: int = 0) -> Progress:
    """The points of the log's lines (those after step `after`), and where the run stands."""
    points: list[Point] = []
    last: dict[str, Any] = {}
    diverged = False
    for line in data.decode("utf-8", "replace").splitlines():
        record = _record(line)
        if record is None:
            continue
        last = record
        loss = _number(record.get("loss"))
        diverged = diverged or (loss is not None and not math.isfinite(loss))
        step = _whole(record.get("current_steps"))
        if step is None or step <= after or not {"loss", "eval_loss"} & record.keys():
            continue  # LLaMA-Factory's closing summary repeats the last step without a loss
        points.append(
            Point(
                step=step,
                epoch=_number(record.get("epoch")),
                loss=loss,
                eval_loss=_number(record.get("eval_loss")),
                lr=_number(record.get("lr")),
                throughput=_number(record.get("throughput")),
                tokens=_whole(record.get("total_tokens")),
            )
        )
    return Progress(
        points=thin(points),
        current_steps=_whole(last.get("current_steps")) or 0,
        total_steps=_whole(last.get("total_steps")) or 0,
        percentage=_number(last.get("percentage")) or 0.0,
        elapsed_seconds=seconds(last.get("elapsed_time")),
        remaining_seconds=seconds(last.get("remaining_time")),
        diverged=diverged,
    )


def thin(points: list[Point], limit: int = MAX_POINTS) -> list[Point]:
    """At most `limit` points, evenly spread, the last one kept (where the run is now);
    evaluation points are kept: there are few of them and each matters."""
    if len(points) <= limit:
        return points
    every = math.ceil(len(points) / limit)
    return [
        point
        for index, point in enumerate(points)
        if index % every == 0 or point.eval_loss is not None or index == len(points) - 1
    ]


def seconds(clock: Any) -> int | None:
    """LLaMA-Factory's "1 day, 2:03:04" or "0:00:03" as seconds."""
    if not isinstance(clock, str):
        return None
    match = _CLOCK.match(clock.strip())
    if match is None:
        return None
    days, hours, minutes, secs = (int(part or 0) for part in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + secs


def _record(line: str) -> dict[str, Any] | None:
    if not line.startswith("{") or len(line) > 10_000:
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _whole(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        return None
    return value
