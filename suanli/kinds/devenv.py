"""A dev environment: the agent (suanli.devenvs.agent) as its command, starting the tools
asked for; it runs until stopped, restarts in place, and is stopped when nobody uses it.

The idle culler lives here too: every `devenv_check_interval_seconds` it asks each running
environment's agent when it was last used (a kernel, a terminal, an SSH session; an open
session or a busy kernel counts as now). One idle for its `idle_timeout` gets the stop
reason `idle`, said in its history. The project's maximum lifetime needs nothing here: it is
the environment's `max_duration`, which the backends enforce as for any workload.
"""

import logging
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import ClassVar

import httpx
from sqlalchemy import select

from suanli.config import Settings
from suanli.controllers.loop import Ticking
from suanli.core.states import State
from suanli.db.engine import Database
from suanli.db.models import Job
from suanli.devenvs import endpoints, keys
from suanli.devenvs.endpoints import AgentConfig
from suanli.kinds.base import Kind, Launch, Start, data_inputs
from suanli.schemas.devenvs import DevEnvSpec
from suanli.services import workfolders
from suanli.services.jobs import note, work_folder

log = logging.getLogger("suanli.kinds.devenv")


class DevEnvKind(Kind):
    name = "devenv"
    spec_model = DevEnvSpec
    stops: ClassVar[Mapping[str, str]] = {"idle": "event.stopped_idle"}

    def launch(self, start: Start) -> Launch:
        """The agent, told by one variable what to start. Its token is new at every start;
        it reports to its own folder."""
        spec, job, settings = start.spec, start.job, start.settings
        if start.fresh or not job.token:
            job.token = secrets.token_urlsafe(32)
            workfolders.remove(start.folder, endpoints.ENDPOINTS_FILE)
        workdir = Path(spec.workdir) if spec.workdir else start.home
        prefix = settings.devenv_environments.get(spec.environment or "")
        agent_python = settings.devenv_agent_python or sys.executable
        config = AgentConfig(
            env_id=job.id,
            folder=str(start.folder),
            tools=tuple(spec.tools),
            token=job.token,
            gateway_key=keys.public_line(keys.client_key(settings.data_dir)),
            # Reached over the network on an engine's node (the tools ask for the token;
            # code-server is not offered there); here, on loopback only.
            bind="0.0.0.0" if start.capabilities.remote else "127.0.0.1",  # noqa: S104
            workdir=str(workdir),
            python=str(prefix / "bin" / "python") if prefix else agent_python,
            prefix=str(prefix or ""),
            code_server=code_server(settings),
        )
        env = {
            **start.env,
            endpoints.CONFIG_VARIABLE: config.dumps(),
            "PYTHONPATH": endpoints.with_source(start.env.get("PYTHONPATH", "")),
        }
        argv = (agent_python, "-m", "suanli.devenvs.agent")
        mounts, inputs = data_inputs(start)
        return Launch(
            argv=argv,
            workdir=workdir,
            env={**env, **inputs},
            ports=("agent", *spec.tools),
            mounts=mounts,
        )

    def controllers(
        self, settings: Settings, database: Database, wake: Callable[[], None]
    ) -> list[Ticking]:
        return [IdleCuller(settings, database, wake)]


KIND = DevEnvKind()


def code_server(settings: Settings) -> str:
    """The code-server that serves VS Code in a browser; empty where there is none."""
    return settings.code_server or shutil.which("code-server") or ""


class IdleCuller:
    """Stops dev environments nobody uses (see the module's docstring)."""

    name = "devenv-idle"

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
                    Job.kind == KIND.name, Job.state == State.running, Job.stop_reason == ""
                )
            ).all()
        now = time.time()
        idle = [
            (row.id, timeout)
            for row in rows
            if isinstance(timeout := row.spec.get("idle_timeout"), int | float)
            and timeout > 0
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
        where = endpoints.read(work_folder(self.settings, env_id))
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
