"""The dev environment controller: stops environments nobody uses.

Every `devenv_check_interval_seconds` it asks each running environment's agent when it was
last used (a kernel, a terminal, an SSH session; an open session or a busy kernel counts as
now). One idle for its `idle_timeout` is stopped with the reason `idle`, said in its
history. The project's maximum lifetime needs nothing here: it is the environment's
`max_duration`, which the backends enforce as for any job.
"""

import logging
import time
from collections.abc import Callable
from datetime import datetime

import httpx
from sqlalchemy import select

from suanli.config import Settings
from suanli.core.states import State
from suanli.db.engine import Database
from suanli.db.models import Job
from suanli.devenvs import endpoints
from suanli.services import devenvs
from suanli.services.jobs import note

log = logging.getLogger("suanli.controllers.devenvs")


class DevEnvController:
    name = "devenvs"

    def __init__(self, settings: Settings, database: Database, wake: Callable[[], None]):
        self.settings = settings
        self.database = database
        self.wake = wake
        self.interval = settings.devenv_check_interval_seconds
        self.client = httpx.Client(timeout=3.0)

    def tick(self) -> None:
        with self.database.reading() as session:
            rows = session.execute(
                select(Job.id, Job.spec, Job.token, Job.started_at).where(
                    Job.kind == devenvs.KIND, Job.state == State.running, Job.stop_reason == ""
                )
            ).all()
        now = time.time()
        idle = [
            (row.id, timeout)
            for row in rows
            if (timeout := row.spec.get("idle_timeout"))
            and now - self._last_use(row.id, row.token, _timestamp(row.started_at, now)) >= timeout
        ]
        if not idle:
            return
        with self.database.writing() as session:
            for env_id, timeout in idle:
                job = session.get(Job, env_id)
                if job is None or job.state != State.running or job.stop_reason:
                    continue
                job.stop_reason = "idle"
                note(job, "event.idle", minutes=max(1, round(timeout / 60)))
            session.commit()
        self.wake()

    def _last_use(self, env_id: int, token: str, started: float) -> float:
        """When it was last used; its start where the agent does not answer (yet)."""
        where = endpoints.read(devenvs.folder(self.settings, env_id))
        if where is None or "agent" not in where.ports:
            return time.time()  # still starting: not idle
        try:
            response = self.client.get(
                f"{where.url('agent')}/activity", headers={"Authorization": f"token {token}"}
            )
            response.raise_for_status()
            return max(started, float(response.json()["last_activity"]))
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
            log.warning("dev environment %s: no activity from its agent (%s)", env_id, error)
            return time.time()  # unknown is not idle: never stop work on a failed probe


def _timestamp(moment: datetime | None, default: float) -> float:
    return moment.timestamp() if moment else default
