"""Readiness of service replicas: a replica serves (the gateway routes to it, a rolling
update counts it) once its health check answers: an HTTP 200 on the engine's health path
(openai and http services), a TCP connection (grpc and tcp). One that stops answering three
times in a row is taken out of the gateway until it answers again.
"""

import logging
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select

from suanli.config import Settings
from suanli.core.states import State
from suanli.db.engine import Database
from suanli.db.models import Deployment, Job
from suanli.kinds import service as service_kind
from suanli.services.jobs import note
from suanli.serving import sockets

log = logging.getLogger("suanli.serving.probe")
FAILURES_TO_UNREADY = 3
READY_RECHECK_SECONDS = 5.0
TIMEOUT = 2.0


class Prober:
    name = "service-probe"

    def __init__(
        self,
        settings: Settings,
        database: Database,
        address: Callable[[str], str],
    ):
        self.settings = settings
        self.database = database
        self.address = address
        self.interval = settings.service_probe_interval_seconds
        self.client = httpx.Client(timeout=TIMEOUT)
        self.failures: dict[int, int] = {}
        self.checked: dict[int, float] = {}

    def tick(self) -> None:
        now = time.monotonic()
        with self.database.reading() as session:
            rows = session.execute(
                select(
                    Job.id, Job.port, Job.socket, Job.placement, Job.ready_at, Deployment.template
                )
                .join(Deployment, Job.deployment_id == Deployment.id)
                .where(
                    Job.kind == service_kind.KIND.name,
                    Job.state == State.running,
                    Job.stop_reason == "",
                    Job.port.is_not(None),
                )
            ).all()
        ready, unready = [], []
        for row in rows:
            if row.ready_at is not None and now - self.checked.get(row.id, 0.0) < (
                READY_RECHECK_SECONDS
            ):
                continue
            self.checked[row.id] = now
            answers = self._answers(row)
            if answers:
                self.failures.pop(row.id, None)
                if row.ready_at is None:
                    ready.append(row.id)
            elif row.ready_at is not None:
                self.failures[row.id] = self.failures.get(row.id, 0) + 1
                if self.failures[row.id] >= FAILURES_TO_UNREADY:
                    unready.append(row.id)
        live = {row.id for row in rows}
        for gone in set(self.checked) - live:
            self.checked.pop(gone, None)
            self.failures.pop(gone, None)
        if ready or unready:
            self._write(ready, unready)

    def _answers(self, row: Any) -> bool:
        if row.socket:
            return self._answers_on_socket(row)
        host = self.address(str((row.placement or {}).get("node", "")))
        protocol = service_kind.protocol_of(self.settings, row.template)
        if protocol in ("grpc", "tcp"):
            try:
                with socket.create_connection((host, row.port), timeout=TIMEOUT):
                    return True
            except OSError:
                return False
        path = service_kind.health_of(self.settings, row.template)
        bracketed = f"[{host}]" if ":" in host else host
        try:
            response = self.client.get(f"http://{bracketed}:{row.port}{path}")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def _answers_on_socket(self, row: Any) -> bool:
        """Only a socket (not a link its owner put in its place) is asked."""
        if not sockets.is_socket(row.socket):
            return False
        path = service_kind.health_of(self.settings, row.template)
        try:
            with httpx.Client(
                transport=httpx.HTTPTransport(uds=row.socket), timeout=TIMEOUT
            ) as client:
                return client.get(f"http://localhost{path}").status_code == 200
        except httpx.HTTPError:
            return False

    def _write(self, ready: list[int], unready: list[int]) -> None:
        moment = datetime.now(UTC)
        with self.database.writing() as session:
            for job_id in ready:
                job = session.get(Job, job_id)
                if job is not None and job.state == State.running and job.ready_at is None:
                    job.ready_at = moment
                    note(job, "event.service_ready")
            for job_id in unready:
                job = session.get(Job, job_id)
                if job is not None and job.ready_at is not None:
                    job.ready_at = None
                    self.failures.pop(job_id, None)
                    note(job, "event.service_unready", failures=FAILURES_TO_UNREADY)
            session.commit()
