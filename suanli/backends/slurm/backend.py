"""The slurm backend: Suanli admits (accounts, projects, quotas, fair share), Slurm places.

`launch` submits a batch script (see translate.batch_script) as the job's Unix user and
returns at once with the handle

    {"slurm_job_id": <id>, "user": "<unix user>", "max_duration": <seconds or null>}

which is all a later server needs to follow or stop the job. Logs: Slurm's nodes write the
job's output file under the data directory, which must be on a filesystem every node mounts
at the same path (a shared filesystem, as on every Slurm cluster).

Time limits: Suanli stops a job at its maximum duration to the second (SIGTERM, then a
cancel after the grace period); Slurm's own limit, a minute later, is only a backstop.
"""

import logging
import os
import pwd
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from suanli.backends.base import Capabilities, Handle, LaunchSpec, Status
from suanli.backends.slurm.client import (
    CommandClient,
    RestClient,
    SlurmClient,
    SlurmError,
    Tokens,
)
from suanli.backends.slurm.translate import (
    QUEUED_STATES,
    RUNNING_STATES,
    batch_script,
    host_of,
    job_description,
    job_id_of,
    status_of,
)
from suanli.config import Settings, SlurmSettings
from suanli.gpu.model import Host
from suanli.monitoring.model import Sample, labels_of

log = logging.getLogger(__name__)

# squeue (or GET /jobs) once per controller tick, not once per job.
JOBS_CACHE_SECONDS = 1.0


def slurm_environment(slurm: SlurmSettings) -> dict[str, str]:
    """The environment of Slurm's tools: this process's PATH and the cluster's slurm.conf,
    no stray SLURM_* or SBATCH_* variables of the server's own."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    if slurm.conf:
        env["SLURM_CONF"] = slurm.conf
    return env


class SlurmBackend:
    name = "slurm"
    capabilities = Capabilities(places_work=True, remote=True)

    def __init__(
        self,
        settings: Settings,
        *,
        client: SlurmClient | None = None,
        timeout_grace_seconds: float = 10.0,
    ) -> None:
        self.slurm = settings.slurm
        env = slurm_environment(self.slurm)
        if client is None and self.slurm.rest_url:
            tokens = Tokens(env, self.slurm.token_lifespan_seconds)
            client = RestClient(
                self.slurm.rest_url, tokens, self.slurm.service_user, self.slurm.rest_api
            )
        self.client: SlurmClient = client or CommandClient(env)
        self.timeout_grace_seconds = timeout_grace_seconds
        self._lock = threading.Lock()
        self._jobs: tuple[float, dict[int, dict[str, Any]]] = (0.0, {})
        self._timed_out: set[int] = set()
        log.info("slurm backend: %s", self.slurm.rest_url or "command-line tools (no rest_url set)")

    # -- inventory and telemetry --------------------------------------------------------
    def inventory(self) -> tuple[Host, ...]:
        return tuple(host_of(node) for node in self.client.nodes())

    def telemetry(self, busy: Mapping[str, float], jobs: Mapping[int, Handle]) -> list[Sample]:
        """What slurmctld knows of each node: load and memory. GPU telemetry of Slurm nodes
        comes from dcgm-exporter on the nodes, not through Slurm."""
        samples = []
        for node in self.client.nodes():
            labels = labels_of({"node": str(node["name"])})
            total = int(node.get("real_memory") or 0) * 2**20
            free = node.get("free_memory")
            samples.append(Sample("node_load1", labels, float(node.get("cpu_load") or 0) / 100))
            samples.append(Sample("node_memory_total_bytes", labels, float(total)))
            if isinstance(free, int) and total:
                used = max(0, total - free * 2**20)
                samples.append(Sample("node_memory_used_bytes", labels, float(used)))
                samples.append(Sample("node_memory_percent", labels, 100.0 * used / total))
        return samples

    # -- workloads ------------------------------------------------------------------------
    def launch(self, spec: LaunchSpec) -> Handle:
        user = spec.run_as or spec.user
        if not user or user == "root":
            raise SlurmError(
                f"jobs on Slurm never run as root: map Suanli user '{spec.user}' to a Unix "
                "user (setting unix_users)"
            )
        if spec.mounts:  # capabilities.mounts is False: the controller should not ask
            raise SlurmError(
                "read-only mounts (datasets, models) are not available on Slurm: the job was "
                "not submitted"
            )
        _prepare_log(Path(spec.log_path), user)
        script = batch_script(spec, slurm_conf=self.slurm.conf or None)
        job = job_description(spec, partition=self.slurm.partition or None)
        job_id = self.client.submit(user, script, job)
        self._ask_again()
        return {"slurm_job_id": job_id, "user": user, "max_duration": spec.max_duration}

    def poll(self, handle: Handle) -> Status:
        job_id = job_id_of(handle)
        job = self._current_jobs().get(job_id)
        now = time.time()
        status = status_of(job, handle, now=now, timed_out=job_id in self._timed_out)
        limit = handle.get("max_duration")
        started = status.started_at
        if status.running and limit and started and now - started >= limit:
            if job_id not in self._timed_out:
                self._timed_out.add(job_id)
                self.stop(handle, reason="timeout", grace_seconds=self.timeout_grace_seconds)
        elif not status.running:
            self._timed_out.discard(job_id)
            if job is not None and job.get("job_state") in QUEUED_STATES | RUNNING_STATES:
                self._cancel(job_id)  # restarted by Slurm: it must not run twice
        return status

    def stop(self, handle: Handle, *, reason: str, grace_seconds: float) -> None:
        """SIGTERM to the batch script and every step now; a cancel (Slurm's own SIGTERM,
        KillWait, SIGKILL) after the grace period. A job still queued is cancelled at once."""
        job_id = job_id_of(handle)
        job = self._current_jobs().get(job_id)
        if job is not None and job.get("job_state") in QUEUED_STATES:
            self._cancel(job_id)
            return
        try:
            self.client.signal(job_id, "TERM")
        except SlurmError as error:  # ended meanwhile, or not started: cancel outright
            log.info("signalling Slurm job %s (%s): %s", job_id, reason, error)
            self._cancel(job_id)
            return
        timer = threading.Timer(grace_seconds, self._cancel, (job_id,))
        timer.daemon = True
        timer.start()

    def address(self, node: str) -> str:
        """The node's own name: Slurm's node names are its hosts' names."""
        return node

    def warnings(self, handle: Handle) -> tuple[str, ...]:
        return ()

    def _cancel(self, job_id: int) -> None:
        try:
            self.client.cancel(job_id)
        except SlurmError as error:  # already ended: nothing to do
            log.info("cancelling Slurm job %s: %s", job_id, error)
        self._ask_again()

    def _ask_again(self) -> None:
        """Slurm's jobs changed by our hand: the next poll reads them afresh."""
        with self._lock:
            self._jobs = (0.0, self._jobs[1])

    def _current_jobs(self) -> dict[int, dict[str, Any]]:
        with self._lock:
            fetched_at, jobs = self._jobs
            if time.monotonic() - fetched_at < JOBS_CACHE_SECONDS:
                return jobs
        jobs = {int(job["job_id"]): job for job in self.client.jobs()}
        with self._lock:
            self._jobs = (time.monotonic(), jobs)
        return jobs


def _prepare_log(log_path: Path, user: str) -> None:
    """The output file exists and belongs to the job's user: Slurm opens it as that user. A
    server that is not root leaves ownership as it is (it submits as itself then)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.touch(exist_ok=True)
    if os.geteuid() != 0:
        return
    try:
        account = pwd.getpwnam(user)
    except KeyError:  # known to the cluster's nodes only (LDAP there): Slurm decides
        return
    os.chown(log_path.parent, account.pw_uid, account.pw_gid)
    os.chown(log_path, account.pw_uid, account.pw_gid)
