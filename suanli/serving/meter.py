"""Metering and limits of the gateway: every request's tokens, written to the database in
batches (never on the event loop), and the checks a key's limits ask for before a request
goes upstream: requests and tokens per minute, and its token budget per day or month.

Limits are counted in the memory of the serving process (with several processes, each
counts its own share of a minute); budgets are the database's sums plus what this process
has not written yet.
"""

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

from suanli.db.engine import Database
from suanli.db.models import ServiceUsage
from suanli.monitoring.prometheus import GatewayMetrics
from suanli.services import service_keys
from suanli.services.service_keys import KeyGrant

log = logging.getLogger("suanli.serving.meter")
FLUSH_SECONDS = 1.0
MINUTE = 60.0


@dataclass(frozen=True)
class Refusal:
    """A 429: which limit, when to try again (seconds), its parameters for the message."""

    code: str
    retry_after: int
    params: dict[str, object]


@dataclass
class Record:
    project_id: int
    deployment_id: int | None
    model: str
    user_id: int | None
    user_name: str
    key_id: int | None
    endpoint: str
    status: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    counted: bool = False
    ttft_ms: float | None = None
    duration_ms: float = 0.0
    at: datetime | None = None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Budget:
    since: datetime  # the period the base was summed for
    base: int  # tokens written to the database in the period
    unwritten: int = 0  # tokens of this process not written yet


class Meter:
    def __init__(self, database: Database, metrics: GatewayMetrics):
        self.database = database
        self.metrics = metrics
        self.queue: list[Record] = []
        self.requests: dict[int, deque[float]] = {}
        self.tokens: dict[int, deque[tuple[float, int]]] = {}
        self.budgets: dict[int, Budget] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush()
            except Exception:  # the rows stay queued for the next round
                log.exception("usage could not be written")

    async def admit(self, grant: KeyGrant) -> Refusal | None:
        """Whether the key may send one more request now; counts it if so."""
        now = time.monotonic()
        if grant.token_budget is not None:
            budget = await self._budget(grant)
            if budget.base + budget.unwritten >= grant.token_budget:
                reset = service_keys.period_end(grant.budget_period, datetime.now(UTC))
                wait = max(1, math.ceil((reset - datetime.now(UTC)).total_seconds()))
                return Refusal(
                    "budget_exceeded",
                    wait,
                    {"budget": grant.token_budget, "resets": reset.isoformat(timespec="seconds")},
                )
        window = self.requests.setdefault(grant.id, deque())
        _trim(window, now)
        if grant.requests_per_minute is not None and len(window) >= grant.requests_per_minute:
            wait = max(1, math.ceil(window[0] + MINUTE - now))
            return Refusal("rate_limit_requests", wait, {"limit": grant.requests_per_minute})
        spent = self.tokens.setdefault(grant.id, deque())
        _trim(spent, now)
        if grant.tokens_per_minute is not None and sum(t for _, t in spent) >= (
            grant.tokens_per_minute
        ):
            wait = max(1, math.ceil(spent[0][0] + MINUTE - now))
            return Refusal("rate_limit_tokens", wait, {"limit": grant.tokens_per_minute})
        window.append(now)
        return None

    def record(self, record: Record) -> None:
        record.at = record.at or datetime.now(UTC)
        self.queue.append(record)
        labels = {"model": record.model}
        self.metrics.requests.add(1, status=str(record.status), **labels)
        if record.prompt_tokens:
            self.metrics.tokens.add(record.prompt_tokens, type="prompt", **labels)
        if record.completion_tokens:
            self.metrics.tokens.add(record.completion_tokens, type="completion", **labels)
        if record.key_id is not None and record.tokens:
            self.tokens.setdefault(record.key_id, deque()).append((time.monotonic(), record.tokens))
            budget = self.budgets.get(record.key_id)
            if budget is not None:
                budget.unwritten += record.tokens

    async def flush(self) -> None:
        batch, self.queue = self.queue, []
        keys = list(self.budgets)
        bases = await asyncio.to_thread(self._write, batch, keys)
        written: dict[int, int] = {}
        for record in batch:
            if record.key_id is not None:
                written[record.key_id] = written.get(record.key_id, 0) + record.tokens
        for key_id, (since, base) in bases.items():
            budget = self.budgets.get(key_id)
            if budget is None:
                continue
            budget.unwritten = max(0, budget.unwritten - written.get(key_id, 0))
            budget.since, budget.base = since, base

    def forget(self, key_id: int) -> None:
        self.budgets.pop(key_id, None)

    def _write(self, batch: list[Record], keys: list[int]) -> dict[int, tuple[datetime, int]]:
        """Insert the batch; then each budgeted key's spending in its current period."""
        datetime.now(UTC)
        with self.database.writing() as session:
            session.add_all(
                ServiceUsage(
                    at=r.at,
                    project_id=r.project_id,
                    deployment_id=r.deployment_id,
                    model=r.model[:64],
                    user_id=r.user_id,
                    user_name=r.user_name,
                    key_id=r.key_id,
                    endpoint=r.endpoint,
                    status=r.status,
                    prompt_tokens=r.prompt_tokens,
                    completion_tokens=r.completion_tokens,
                    counted=r.counted,
                    ttft_ms=r.ttft_ms,
                    duration_ms=r.duration_ms,
                )
                for r in batch
            )
            session.commit()
        bases: dict[int, tuple[datetime, int]] = {}
        if not keys:
            return bases
        with self.database.reading() as session:
            for key_id in keys:
                budget = self.budgets.get(key_id)
                if budget is None:
                    continue
                since = budget.since
                bases[key_id] = (since, service_keys.used(session, key_id, since))
        return bases

    async def _budget(self, grant: KeyGrant) -> Budget:
        """The key's spending in its period, read once and then kept up to date; read again
        when a new period began."""
        since = service_keys.period_start(grant.budget_period, datetime.now(UTC))
        budget = self.budgets.get(grant.id)
        if budget is None or budget.since != since:
            base = await asyncio.to_thread(self._read_used, grant.id, since)
            unwritten = sum(
                r.tokens for r in self.queue if r.key_id == grant.id and r.at and r.at >= since
            )
            budget = Budget(since=since, base=base, unwritten=unwritten)
            self.budgets[grant.id] = budget
        return budget

    def _read_used(self, key_id: int, since: datetime) -> int:
        with self.database.reading() as session:
            return service_keys.used(session, key_id, since)


def _trim(window: deque, now: float) -> None:  # type: ignore[type-arg]
    while window and (window[0] if isinstance(window[0], float) else window[0][0]) < now - MINUTE:
        window.popleft()
