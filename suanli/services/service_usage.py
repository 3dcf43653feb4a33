"""What model services were used for: requests and tokens per hour or day, per model, user
and key, read from the gateway's records (suanli.serving.meter). Members see their
project's usage."""

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from suanli.core.errors import InvalidInput
from suanli.db.models import ServiceKey, ServiceUsage
from suanli.schemas.services import UsageQuery
from suanli.services.actor import Actor
from suanli.services.projects import access

# How far back a query reaches by default, and at most.
DEFAULT_SPAN = {"hour": timedelta(days=1), "day": timedelta(days=31)}
MAX_SPAN = timedelta(days=366)
MAX_ROWS = 2_000_000


@dataclass
class Usage:
    period: datetime
    model: str
    user: str
    key: str
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    counted: int = 0
    ttft_total_ms: float = 0.0
    ttft_count: int = 0

    @property
    def ttft_ms_avg(self) -> float | None:
        return self.ttft_total_ms / self.ttft_count if self.ttft_count else None


def usage(session: Session, actor: Actor, query: UsageQuery) -> list[Usage]:
    project, _ = access(session, actor, query.project)
    until = query.until or datetime.now(UTC)
    since = query.since or until - DEFAULT_SPAN[query.group]
    if since >= until:
        raise InvalidInput("error.usage_range", field="since")
    if until - since > MAX_SPAN:
        raise InvalidInput("error.usage_span", field="since", days=MAX_SPAN.days)
    statement = (
        select(
            ServiceUsage.at,
            ServiceUsage.model,
            ServiceUsage.user_name,
            ServiceUsage.key_id,
            ServiceUsage.status,
            ServiceUsage.prompt_tokens,
            ServiceUsage.completion_tokens,
            ServiceUsage.counted,
            ServiceUsage.ttft_ms,
        )
        .where(
            ServiceUsage.project_id == project.id,
            ServiceUsage.at >= since,
            ServiceUsage.at < until,
        )
        .limit(MAX_ROWS)
    )
    if query.service:
        statement = statement.where(ServiceUsage.model == f"{project.name}/{query.service}")
    names = dict(
        session.execute(
            select(ServiceKey.id, ServiceKey.name).where(ServiceKey.project_id == project.id)
        ).all()
    )
    groups: dict[tuple[datetime, str, str, str], Usage] = {}
    for row in session.execute(statement):
        period = bucket(row.at, query.group)
        key = names.get(row.key_id, "") if row.key_id is not None else ""
        found = groups.get((period, row.model, row.user_name, key))
        if found is None:
            found = groups[(period, row.model, row.user_name, key)] = Usage(
                period, row.model, row.user_name, key
            )
        found.requests += 1
        found.errors += row.status >= 400
        found.prompt_tokens += row.prompt_tokens
        found.completion_tokens += row.completion_tokens
        found.counted += bool(row.counted)
        if row.ttft_ms is not None:
            found.ttft_total_ms += row.ttft_ms
            found.ttft_count += 1
    return sorted(groups.values(), key=lambda u: (u.period, u.model, u.user, u.key))


def bucket(moment: datetime, group: str) -> datetime:
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    hour = moment.replace(minute=0, second=0, microsecond=0)
    return hour if group == "hour" else hour.replace(hour=0)


COLUMNS = (
    "period",
    "model",
    "user",
    "key",
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "counted",
    "ttft_ms_avg",
)


def as_csv(rows: Sequence[Usage]) -> Iterator[str]:
    """The rows as CSV, a line at a time."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    yield _taken(out)
    for row in rows:
        ttft = row.ttft_ms_avg
        writer.writerow(
            [
                row.period.isoformat(),
                row.model,
                row.user,
                row.key,
                row.requests,
                row.errors,
                row.prompt_tokens,
                row.completion_tokens,
                row.counted,
                f"{ttft:.1f}" if ttft is not None else "",
            ]
        )
        yield _taken(out)


def _taken(out: io.StringIO) -> str:
    """What was written since the last time, the buffer emptied."""
    text = out.getvalue()
    out.seek(0)
    out.truncate()
    return text
