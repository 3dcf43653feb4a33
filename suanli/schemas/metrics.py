"""Time-series queries and alerting: what the API takes and gives."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, WithJsonSchema

from suanli.monitoring.model import METRICS
from suanli.schemas.jobs import Duration
from suanli.schemas.types import MAX_INT32, Flag, RequestModel, ResponseModel, UtcDatetime, text

Matcher = text(max_length=200, pattern=r"^[a-z_]{1,32}=[^\x00,]{0,160}$")
MetricName = Literal[tuple(METRICS)]  # type: ignore[valid-type]
LABEL_NAME = r"^[a-z_]{1,32}$"
LabelName = Annotated[str, Field(pattern=LABEL_NAME)]
LabelValue = text(max_length=160)


def label_map(min_items: int = 0) -> Any:
    """Label equality matchers {name: value}. The JSON Schema says what pydantic checks:
    names by pattern (propertyNames), values as short strings."""
    return Annotated[
        dict[LabelName, LabelValue],
        Field(min_length=min_items, max_length=10),
        WithJsonSchema(
            {
                "type": "object",
                "propertyNames": {"pattern": LABEL_NAME},
                "additionalProperties": {
                    "type": "string",
                    "maxLength": 160,
                    "pattern": "^[^\\x00]*$",
                },
                "minProperties": min_items,
                "maxProperties": 10,
            }
        ),
    ]


class MetricQuery(RequestModel):
    """A range query: every series of `metric` whose labels match all `label` matchers
    (`gpu=0`, `node=gpu-01`), averaged per `step`, over `range` up to `end` (default now)."""

    metric: MetricName
    label: list[Matcher] = Field(default_factory=list, max_length=10)
    range: Duration = 3600
    end: UtcDatetime | None = None
    step: Annotated[int, Field(ge=1, le=86_400)] | None = Field(
        None, description="seconds per point; default: range / 240"
    )

    def match(self) -> dict[str, str]:
        return dict(matcher.split("=", 1) for matcher in self.label)


class SeriesOut(ResponseModel):
    metric: str
    labels: dict[str, str]
    # [epoch seconds, value] pairs, oldest first.
    points: list[tuple[int, float]]


class QueryOut(ResponseModel):
    start: datetime
    end: datetime
    step: int
    unit: str
    series: list[SeriesOut]


class MetricOut(ResponseModel):
    name: str
    help: str
    unit: str
    kind: str
    dcgm: str


class RuleIn(RequestModel):
    """A rule; on update, fields left out stay as they are."""

    name: text(min_length=1, max_length=128) | None = None
    kind: Literal["metric", "event"] | None = None
    metric: text(min_length=1, max_length=64) | None = None
    match: label_map() | None = None
    op: Literal[">", ">=", "<", "<=", "==", "!="] | None = None
    threshold: Annotated[float, Field(allow_inf_nan=False, ge=-1e15, le=1e15)] | None = None
    for_seconds: Annotated[float, Field(ge=0, le=7 * 86_400, allow_inf_nan=False)] | None = None
    severity: Literal["info", "warning", "critical"] | None = None
    enabled: Flag | None = None


class RuleOut(ResponseModel):
    id: int
    name: str
    kind: str
    metric: str
    match: dict[str, str]
    op: str
    threshold: float
    for_seconds: float
    severity: str
    enabled: bool


class ChannelIn(RequestModel):
    """A notification channel. `secret` and `password` are write-only."""

    name: text(min_length=1, max_length=128) | None = None
    kind: Literal["webhook", "wecom", "dingtalk", "feishu", "email"] | None = None
    url: text(min_length=1, max_length=2048) | None = None
    secret: text(max_length=512) | None = None
    email_from: text(max_length=254) | None = None
    email_to: Annotated[list[text(min_length=3, max_length=254)], Field(max_length=50)] | None = (
        None
    )
    username: text(max_length=254) | None = None
    password: text(max_length=512) | None = None
    language: Literal["en", "zh-CN"] | None = None
    enabled: Flag | None = None


class ChannelOut(ResponseModel):
    id: int
    name: str
    kind: str
    url: str
    email_from: str
    email_to: list[str]
    username: str
    language: str
    enabled: bool
    has_secret: bool
    has_password: bool


class SilenceIn(RequestModel):
    match: label_map(min_items=1)
    hours: Annotated[float, Field(ge=0.01, le=24 * 90, allow_inf_nan=False)] = 2.0
    reason: text(max_length=500) = ""


class SilenceOut(ResponseModel):
    id: int
    match: dict[str, str]
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str


class AlertEventOut(ResponseModel):
    id: int
    rule: str
    severity: str
    labels: dict[str, str]
    value: float
    summary: str
    fired_at: datetime
    resolved_at: datetime | None
    silenced: bool
    state: Literal["firing", "resolved", "event"]


class AlertEventQuery(RequestModel):
    firing: bool = False
    before_id: Annotated[int, Field(ge=1, le=MAX_INT32)] | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100
