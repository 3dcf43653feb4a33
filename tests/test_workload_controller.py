"""The workload controller's decisions, one tick at a time: a real `WorkloadController` over a
real migrated database (SQLite, or PostgreSQL with SUANLI_TEST_POSTGRES_URL) and a recording
backend (tests/fakebackend.py) in place of processes.

Rows are made with the ORM as the API would have left them; each test then ticks the
controller (or runs one of its steps) and reads back the rows and what the backend was asked.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fakebackend import FakeBackend, StopCall
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from suanli.backends.base import Capabilities, ExitStatus, LaunchSpec, Limits, Status
from suanli.config import Settings
from suanli.controllers.workloads import STOP_GRACE_SECONDS, WorkloadController
from suanli.db.engine import Database
from suanli.db.models import GpuDevice, Job, Node, Project, ProjectQuota, utcnow
from suanli.kinds import demand
from suanli.kinds.registry import kind_of
from suanli.scheduler import fraction_share
from suanli.scheduler.model import DeviceShare, Placement

GiB = 2**30
USER = "alice"
PROJECT = "p"
NODE = "n1"
GPUS = ("GPU-0", "GPU-1")
ENDED_AT = 1_700_000_000.5  # when the backend says a workload ended
DERIVE = object()  # a job's request as submit keeps it: derived from its spec


@dataclass
class World:
    settings: Settings
    database: Database
    backend: FakeBackend
    controller: WorkloadController

    def add(
        self,
        spec: dict[str, Any] | None = None,
        *,
        kind: str = "job",
        request: Any = DERIVE,
        **columns: Any,
    ) -> int:
        """A workload row as the API leaves it (pending unless `columns` say otherwise)."""
        spec = job_spec() if spec is None else spec
        if request is DERIVE:
            request = demand.of(kind_of(kind).load(spec))
        with self.database.writing() as session:
            project = session.scalars(select(Project).where(Project.name == PROJECT)).one()
            job = Job(
                kind=kind,
                project_id=project.id,
                user_name=USER,
                spec=spec,
                spec_version=1,
                request=request,
                **columns,
            )
            session.add(job)
            session.commit()
            return job.id

    def add_running(self, spec: dict[str, Any] | None = None, **columns: Any) -> int:
        """A workload the backend runs: launched by an earlier tick, its handle recorded."""
        job_id = self.add(
            spec,
            state="running",
            attempts=1,
            placement={"node": NODE, "gpus": []},
            started_at=utcnow(),
            **columns,
        )
        self.update(job_id, handle={"job": job_id, "start": 0})
        return job_id

    def update(self, job_id: int, **columns: Any) -> None:
        with self.database.writing() as session:
            job = session.get(Job, job_id)
            for name, value in columns.items():
                setattr(job, name, value)
            session.commit()

    def job(self, job_id: int) -> Job:
        """The row as it is now, with its project and history loaded."""
        with self.database.reading() as session:
            return session.get(
                Job, job_id, options=[selectinload(Job.events), selectinload(Job.project)]
            )

    def events(self, job_id: int) -> list[str]:
        return [event.detail for event in self.job(job_id).events]

    def event(self, job_id: int, detail: str) -> tuple[str, dict[str, Any]]:
        """The state and parameters of the job's last `detail` event."""
        found = [e for e in self.job(job_id).events if e.detail == detail]
        assert found, f"no {detail} in {self.events(job_id)}"
        return found[-1].state, found[-1].params

    def launched(self, job_id: int) -> list[LaunchSpec]:
        return [spec for spec in self.backend.launches if spec.job_id == job_id]


def job_spec(**resources: Any) -> dict[str, Any]:
    return {
        "project": PROJECT,
        "command": ["python3", "-c", "pass"],
        "resources": {"cpus": 1.0, "memory": GiB, **resources},
    }


def seed(database: Database, *, shared: bool = False) -> None:
    """A user's project without limits, and one node with two GPUs."""
    with database.writing() as session:
        project = Project(name=PROJECT)
        project.quota = ProjectQuota()
        node = Node(name=NODE, backend="fake", cpus=16, memory_bytes=64 * GiB)
        node.gpus = [
            GpuDevice(
                uuid=uuid, index=index, model="Test GPU", memory_bytes=80 * GiB, shared=shared
            )
            for index, uuid in enumerate(GPUS)
        ]
        session.add_all([project, node])
        session.commit()


def make_world(
    tmp_path: Path, database: Database, *, shared: bool = False, places_work: bool = False
) -> World:
    settings = Settings(
        data_dir=tmp_path / "data", work_dir=tmp_path / "work", workload_identity="server"
    )
    seed(database, shared=shared)
    backend = FakeBackend(capabilities=Capabilities(places_work=places_work))
    return World(settings, database, backend, WorkloadController(settings, database, backend))


@pytest.fixture
def world(tmp_path: Path, migrated_database: Database) -> World:
    return make_world(tmp_path, migrated_database)


# Admission and launch.


def test_a_pending_job_is_admitted_and_launched_in_one_tick(world: World) -> None:
    spec = {**job_spec(gpus=1, cpus=2.0), "env": {"ANSWER": "42"}, "name": "train"}
    job_id = world.add(spec, name="train")

    world.controller.tick()

    job = world.job(job_id)
    assert (job.state, job.attempts, job.stop_reason) == ("running", 1, "")
    assert job.started_at is not None and job.finished_at is None
    assert job.placement == {
        "node": NODE,
        "gpus": [{"uuid": GPUS[0], "memory_bytes": 0, "compute_percent": 0}],
    }
    assert job.gpus == 1.0
    [launch] = world.backend.launches
    assert job.handle == world.backend.started[str(launch.state_dir)]
    folder = world.settings.work_dir / str(job_id)
    assert launch.job_id == job_id and launch.name == "train" and launch.user == USER
    assert launch.argv == ("python3", "-c", "pass")
    assert launch.env == {"ANSWER": "42", "SUANLI_PROJECT": PROJECT, "SUANLI_USER": USER}
    assert launch.workdir == folder and folder.is_dir()
    assert launch.limits == Limits(cpus=2.0, memory_bytes=GiB)
    assert launch.placement == Placement(NODE, (DeviceShare(GPUS[0]),))
    assert launch.state_dir == world.settings.data_dir / "jobs" / str(job_id) / "attempt-1"
    assert launch.log_path == folder / "output.log"
    assert launch.run_as is None and launch.gpus == 1 and launch.nodes == 1
    history = [(e.detail, e.state, e.params) for e in job.events]
    assert history == [
        ("event.admitted", "admitted", {"node": NODE, "gpus": GPUS[0]}),
        ("event.attempt", "starting", {"attempt": 1}),
        ("event.started", "running", {}),
    ]


def test_a_cpu_job_is_admitted_to_a_node_without_gpus(world: World) -> None:
    job_id = world.add()
    world.controller.tick()
    assert world.job(job_id).placement == {"node": NODE, "gpus": []}
    assert world.event(job_id, "event.admitted_cpu") == ("admitted", {"node": NODE})
    assert world.launched(job_id)[0].placement == Placement(NODE)


def test_a_launch_error_fails_its_job_and_the_others_still_launch(world: World) -> None:
    broken, fine = world.add(), world.add()
    world.backend.failing[broken] = "no such executable: python3"

    world.controller.tick()

    job = world.job(broken)
    assert (job.state, job.exit_reason, job.attempts) == ("failed", "launch_error", 1)
    assert "no such executable: python3" in job.exit_detail
    assert job.handle is None and job.finished_at is not None
    assert world.events(broken)[-1] == "event.failed"
    assert world.job(fine).state == "running"
    assert len(world.launched(fine)) == 1


# Following what runs.


def test_an_exit_code_0_succeeds_and_the_backend_end_time_is_kept(world: World) -> None:
    job_id = world.add()
    world.controller.tick()
    usage = {"cpu_seconds": 1.5, "wall_seconds": 3.0}
    world.backend.end(job_id, ExitStatus("exit_code", exit_code=0, usage=usage, ended_at=ENDED_AT))

    world.controller.tick()

    job = world.job(job_id)
    assert (job.state, job.exit_reason, job.exit_code) == ("succeeded", "exit_code", 0)
    assert job.finished_at == datetime.fromtimestamp(ENDED_AT, UTC)
    assert job.usage == usage
    assert world.events(job_id)[-1] == "event.succeeded"


def test_a_failed_attempt_is_retried_as_its_request_says_then_fails(world: World) -> None:
    job_id = world.add({**job_spec(), "retries": 1})
    assert world.job(job_id).request["retries"] == 1
    world.controller.tick()
    world.backend.end(job_id, ExitStatus("exit_code", exit_code=1, ended_at=ENDED_AT))

    world.controller.follow()  # the first attempt ended: back in the queue

    job = world.job(job_id)
    assert (job.state, job.attempts, job.handle, job.placement) == ("pending", 1, None, None)
    assert job.finished_at is None
    state, params = world.event(job_id, "event.requeued")
    assert state == "pending"
    assert params == {"reason": "exit_code", "detail": "", "attempt": 1, "attempts": 2}

    world.controller.tick()  # admitted and launched again: the second attempt
    job = world.job(job_id)
    assert (job.state, job.attempts) == ("running", 2)
    first, second = world.launched(job_id)
    assert first.state_dir.name == "attempt-1" and second.state_dir.name == "attempt-2"
    assert job.handle == world.backend.started[str(second.state_dir)]

    world.controller.tick()  # it failed again: no retry left
    job = world.job(job_id)
    assert (job.state, job.exit_reason, job.exit_code) == ("failed", "exit_code", 1)
    assert job.finished_at == datetime.fromtimestamp(ENDED_AT, UTC)
    assert len(world.launched(job_id)) == 2
    assert world.events(job_id)[-1] == "event.failed"


# Stops.


def test_an_admitted_job_cancelled_before_its_launch_is_cancelled_without_a_backend(
    world: World,
) -> None:
    job_id = world.add(state="admitted", placement={"node": NODE, "gpus": []})
    world.update(job_id, stop_reason="cancelled")

    world.controller.tick()

    job = world.job(job_id)
    assert (job.state, job.exit_reason) == ("cancelled", "cancelled")
    assert world.events(job_id)[-1] == "event.cancelled_before_start"
    assert world.backend.launches == [] and world.backend.stops == []


def test_an_admitted_job_preempted_before_its_launch_goes_back_to_the_queue(
    world: World,
) -> None:
    job_id = world.add(state="admitted", placement={"node": NODE, "gpus": []})
    world.update(job_id, stop_reason="preempted")

    world.controller.send_stops()

    job = world.job(job_id)
    assert (job.state, job.stop_reason, job.placement, job.handle) == ("pending", "", None, None)
    assert world.events(job_id)[-1] == "event.preempted_before_start"
    assert world.backend.stops == []


def test_a_running_job_cancelled_is_stopped_once_then_ends_cancelled(world: World) -> None:
    job_id = world.add_running()
    handle = world.job(job_id).handle
    world.update(job_id, stop_reason="cancelled")

    world.controller.tick()
    world.controller.tick()  # still stopping: not asked again

    assert world.backend.stops == [StopCall(handle, "cancelled", STOP_GRACE_SECONDS)]
    job = world.job(job_id)
    assert job.state == "running" and job.stop_sent_at is not None
    assert world.events(job_id)[-1] == "event.stopping_cancelled"

    world.backend.end(job_id, ExitStatus("cancelled", signal=15, ended_at=ENDED_AT))
    world.controller.tick()

    job = world.job(job_id)
    assert (job.state, job.exit_reason, job.exit_signal) == ("cancelled", "cancelled", 15)
    assert job.finished_at == datetime.fromtimestamp(ENDED_AT, UTC)
    assert world.events(job_id)[-1] == "event.cancelled"
    assert len(world.backend.stops) == 1


def test_an_idle_dev_environment_ends_cancelled_for_being_idle(world: World) -> None:
    spec = {"project": PROJECT, "name": "env1", "tools": ["terminal"]}
    env_id = world.add_running(spec, kind="devenv")
    world.update(env_id, stop_reason="idle")

    world.controller.tick()
    assert [stop.reason for stop in world.backend.stops] == ["idle"]
    assert world.events(env_id)[-1] == "event.stopping_idle"

    world.backend.end(env_id, ExitStatus("cancelled", signal=15, ended_at=ENDED_AT))
    world.controller.tick()

    job = world.job(env_id)
    assert (job.state, job.exit_reason) == ("cancelled", "idle")
    assert world.events(env_id)[-1] == "event.stopped_idle"


def test_a_surplus_replica_ends_cancelled_for_the_scale_down(world: World) -> None:
    spec = {"command": ["python3", "-m", "http.server"], "resources": {"memory": GiB}}
    replica_id = world.add_running(spec, kind="replica")
    world.update(replica_id, stop_reason="scaled_down")

    world.controller.tick()
    assert [stop.reason for stop in world.backend.stops] == ["scaled_down"]

    world.backend.end(replica_id, ExitStatus("cancelled", signal=15, ended_at=ENDED_AT))
    world.controller.tick()

    job = world.job(replica_id)
    assert (job.state, job.exit_reason) == ("cancelled", "scaled_down")
    assert world.events(replica_id)[-1] == "event.stopped_scaled_down"


# Rows the server cannot read.


def test_a_pending_job_with_a_malformed_request_fails_and_the_queue_goes_on(
    world: World,
) -> None:
    bad = world.add(request={**demand.of(kind_of("job").load(job_spec())), "gpus": "lots"})
    good = world.add()

    world.controller.tick()

    job = world.job(bad)
    assert (job.state, job.exit_reason) == ("failed", "unreadable")
    assert "request.gpus" in job.exit_detail
    state, params = world.event(bad, "event.unreadable")
    assert state == "failed" and "request.gpus" in params["reason"]
    assert world.launched(bad) == []
    assert world.job(good).state == "running" and len(world.launched(good)) == 1


def test_a_pending_job_of_an_unknown_kind_without_a_request_fails_as_unreadable(
    world: World,
) -> None:
    bad = world.add(kind="notebook", request=None)
    good = world.add()

    world.controller.tick()

    job = world.job(bad)
    assert (job.state, job.exit_reason) == ("failed", "unreadable")
    assert "notebook" in job.exit_detail
    assert job.request is None  # nothing was derived to keep
    assert world.launched(bad) == []
    assert world.job(good).state == "running" and len(world.launched(good)) == 1


def test_a_pending_job_of_an_unknown_kind_with_its_request_fails_as_unreadable(
    world: World,
) -> None:
    """A downgraded server keeps the rows of a kind it no longer knows, with their requests:
    such a row is unreadable, as the controller says of rows it cannot read."""
    bad = world.add(kind="notebook", request=demand.of(kind_of("job").load(job_spec())))
    good = world.add()

    world.controller.tick()

    job = world.job(bad)
    assert job.state == "failed"
    assert "notebook" in job.exit_detail
    assert job.exit_reason == "unreadable", (job.exit_reason, world.events(bad))
    assert world.job(good).state == "running" and len(world.launched(good)) == 1


def test_a_running_job_whose_request_became_unreadable_is_stopped_then_fails(
    world: World,
) -> None:
    job_id = world.add_running()
    world.update(job_id, request={"gpus": "lots"})
    handle = world.job(job_id).handle

    world.controller.tick()  # found unreadable: to be stopped
    job = world.job(job_id)
    assert (job.state, job.stop_reason, job.exit_reason) == ("running", "unreadable", "unreadable")

    world.controller.tick()  # the stop is sent, once
    world.controller.tick()
    assert [(stop.handle, stop.reason) for stop in world.backend.stops] == [(handle, "unreadable")]
    assert world.events(job_id)[-1] == "event.stopping_unreadable"

    world.backend.end(job_id, ExitStatus("cancelled", signal=15, ended_at=ENDED_AT))
    world.controller.tick()

    job = world.job(job_id)
    assert (job.state, job.exit_reason) == ("failed", "unreadable")
    state, params = world.event(job_id, "event.unreadable")
    assert state == "failed"
    # Why it failed is what the history and the job say, not the backend's words on the stop.
    assert "request.gpus" in params["reason"], params
    assert "request.gpus" in job.exit_detail, job.exit_detail


# Rows from before requests were kept.


def test_a_row_without_a_request_is_scheduled_and_its_request_is_kept(world: World) -> None:
    spec = job_spec(gpus=1)
    job_id = world.add(spec, request=None)

    world.controller.tick()

    job = world.job(job_id)
    assert job.state == "running" and job.placement["gpus"][0]["uuid"] == GPUS[0]
    assert job.request == demand.of(kind_of("job").load(spec))


# An engine that places work itself.


def test_an_engine_job_stays_starting_while_queued_and_runs_where_the_engine_says(
    tmp_path: Path, migrated_database: Database
) -> None:
    world = make_world(tmp_path, migrated_database, places_work=True)
    job_id = world.add(job_spec(gpus=1))

    world.controller.tick()

    job = world.job(job_id)
    assert (job.state, job.placement, job.started_at) == ("starting", None, None)
    assert job.handle is not None
    [launch] = world.backend.launches
    assert launch.placement == Placement(node="") and launch.gpus == 1
    assert world.events(job_id) == [
        "event.admitted_engine",
        "event.attempt",
        "event.submitted_to_engine",
    ]
    assert world.event(job_id, "event.submitted_to_engine")[1] == {"engine": "Fake"}

    world.backend.report(job_id, Status(running=True, queued="Resources"))
    world.controller.tick()

    job = world.job(job_id)
    assert job.state == "starting"
    assert (job.pending_code, job.pending_params) == (
        "engine_queued",
        {"engine": "Fake", "reason": "Resources"},
    )
    assert world.controller.interval < 2.0  # its start is looked for sooner

    placement = {"node": "c7", "gpus": [{"uuid": "GPU-c7-3"}]}
    world.backend.report(job_id, Status(running=True, placement=placement, started_at=ENDED_AT))
    world.controller.tick()

    job = world.job(job_id)
    assert (job.state, job.pending_code, job.pending_params) == ("running", "", {})
    assert job.placement == placement
    assert job.started_at == datetime.fromtimestamp(ENDED_AT, UTC)
    assert world.event(job_id, "event.started_on") == (
        "running",
        {"node": "c7", "gpus": "GPU-c7-3"},
    )
    assert len(world.backend.launches) == 1


# Re-adoption after a restart.


def test_a_job_left_starting_without_a_handle_is_adopted_with_the_same_attempt(
    world: World,
) -> None:
    job_id = world.add(state="admitted", placement={"node": NODE, "gpus": []})
    world.controller.launch([job_id])
    earlier = world.job(job_id).handle
    # A server that stopped between the launch and recording its handle left it so.
    world.update(job_id, state="starting", handle=None)
    restarted = WorkloadController(world.settings, world.database, world.backend)

    restarted.tick()

    job = world.job(job_id)
    assert (job.state, job.attempts) == ("running", 1)
    first, again = world.launched(job_id)
    assert again.state_dir == first.state_dir
    assert again.state_dir.name == "attempt-1"
    assert job.handle == earlier  # the same process, not a second one
    assert world.events(job_id)[-2:] == ["event.adopted", "event.started"]


# What admission charges.


def test_a_gpu_fraction_is_charged_its_share_of_the_shared_gpu(
    tmp_path: Path, migrated_database: Database
) -> None:
    world = make_world(tmp_path, migrated_database, shared=True)
    job_id = world.add(job_spec(gpu_memory=20 * GiB))

    world.controller.tick()

    job = world.job(job_id)
    assert job.state == "running"
    assert job.gpus == pytest.approx(fraction_share(20 * GiB, 0, 80 * GiB)) == 0.25
    [gpu] = job.placement["gpus"]
    assert gpu["memory_bytes"] == 20 * GiB and gpu["uuid"] in GPUS
    assert world.launched(job_id)[0].placement.devices == (DeviceShare(gpu["uuid"], 20 * GiB),)
