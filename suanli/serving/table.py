"""The gateway's routing table: every model service and its ready replicas, held in memory
and read again from the database a few times a second (in a thread, off the event loop), so
that a request costs no query. Replicas are chosen by least outstanding requests.
"""

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from suanli.config import Settings
from suanli.core.states import State
from suanli.data.store import BlobStore
from suanli.db.engine import Database
from suanli.db.models import Deployment, Job
from suanli.kinds import service as service_kind

log = logging.getLogger("suanli.serving")
REFRESH_SECONDS = 0.5


@dataclass
class Upstream:
    job_id: int
    url: str  # http://host:port (http://localhost over a socket)
    token: str
    socket: str = ""  # a Unix socket in the replica's folder, where it listens on one


@dataclass
class Route:
    deployment_id: int
    project_id: int
    project: str
    name: str
    protocol: str
    state: str  # active | stopped
    replicas: int  # wanted now
    min_replicas: int
    tokenizer: Path | None  # the model version's tokenizer.json, where it has one
    upstreams: list[Upstream] = field(default_factory=list)

    @property
    def model(self) -> str:
        return f"{self.project}/{self.name}"


class Table:
    def __init__(self, settings: Settings, database: Database, address: Callable[[str], str]):
        self.settings = settings
        self.database = database
        self.address = address
        self.store = BlobStore(settings.data_dir / "data")
        self.routes: dict[tuple[str, str], Route] = {}
        self._outstanding: dict[int, int] = {}
        self._ready = asyncio.Event()
        self._turn = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), REFRESH_SECONDS)
            self._changed.clear()
            try:
                await self.refresh()
            except Exception:  # a database hiccup: the table stays as it was
                log.exception("the routing table could not be read")

    def changed(self) -> None:
        """Read again now (a service was deployed, scaled or woken)."""
        self._changed.set()

    async def refresh(self) -> None:
        routes = await asyncio.to_thread(self._read)
        self.routes = routes
        ready, self._ready = self._ready, asyncio.Event()
        ready.set()  # wake those waiting for a replica: they look again

    async def wait_change(self, timeout: float) -> None:
        """Until the next refresh (or the timeout)."""
        event = self._ready
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    def _read(self) -> dict[tuple[str, str], Route]:
        with self.database.reading() as session:
            deployments = session.scalars(
                select(Deployment)
                .where(Deployment.kind == service_kind.KIND.name)
                .options(selectinload(Deployment.project))
            ).all()
            replicas = session.execute(
                select(
                    Job.id, Job.deployment_id, Job.port, Job.socket, Job.token, Job.placement
                ).where(
                    Job.kind == service_kind.KIND.name,
                    Job.state == State.running,
                    Job.stop_reason == "",
                    Job.ready_at.is_not(None),
                    Job.port.is_not(None),
                )
            ).all()
        routes: dict[tuple[str, str], Route] = {}
        by_id: dict[int, Route] = {}
        for deployment in deployments:
            scaling = deployment.scaling or {}
            route = Route(
                deployment_id=deployment.id,
                project_id=deployment.project_id,
                project=deployment.project.name,
                name=deployment.name,
                protocol=service_kind.protocol_of(self.settings, deployment.template),
                state=deployment.state,
                replicas=deployment.replicas,
                min_replicas=int(scaling.get("min", deployment.replicas)),
                tokenizer=self._tokenizer(deployment.inputs),
            )
            routes[(route.project, route.name)] = route
            by_id[deployment.id] = route
        for row in replicas:
            route = by_id.get(row.deployment_id)
            if route is None:
                continue
            if row.socket:
                upstream = Upstream(row.id, "http://localhost", row.token, row.socket)
            else:
                host = self.address(_node(row.placement))
                host = f"[{host}]" if ":" in host else host
                upstream = Upstream(row.id, f"http://{host}:{row.port}", row.token)
            route.upstreams.append(upstream)
        return routes

    def _tokenizer(self, inputs: list[dict[str, Any]]) -> Path | None:
        for item in inputs or []:
            if item.get("kind") == "model":
                return self.store.tree_of(int(item["version_id"])) / "tokenizer.json"
        return None

    def pick(self, route: Route, exclude: frozenset[int] = frozenset()) -> Upstream | None:
        """The ready replica with the fewest requests outstanding (ties in turn)."""
        choices = [u for u in route.upstreams if u.job_id not in exclude]
        if not choices:
            return None
        turn = next(self._turn)
        best = min(
            range(len(choices)),
            key=lambda i: (self._outstanding.get(choices[i].job_id, 0), (i - turn) % len(choices)),
        )
        return choices[best]

    def begin(self, upstream: Upstream) -> None:
        self._outstanding[upstream.job_id] = self._outstanding.get(upstream.job_id, 0) + 1

    def end(self, upstream: Upstream) -> None:
        left = self._outstanding.get(upstream.job_id, 1) - 1
        if left:
            self._outstanding[upstream.job_id] = left
        else:
            self._outstanding.pop(upstream.job_id, None)


def _node(placement: dict[str, Any] | None) -> str:
    return str((placement or {}).get("node", ""))
