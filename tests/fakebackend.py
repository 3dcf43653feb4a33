"""A recording backend for unit tests of the controllers: it implements the backend protocol
(suanli.backends.base.Backend) without starting anything, keeps every call it gets, and
reports what the test tells it to. The point of such tests is the controller's decisions, not
processes: everything the backends do themselves is tested against real processes elsewhere.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

from suanli.backends.base import Capabilities, ExitStatus, Handle, LaunchSpec, Status
from suanli.gpu.model import Host
from suanli.monitoring.model import Sample


@dataclass(frozen=True)
class StopCall:
    handle: Handle
    reason: str
    grace_seconds: float


@dataclass
class FakeBackend:
    """Launches are idempotent per attempt, as the protocol asks: a second launch with the
    same state directory returns the first one's handle (its `start` number stays)."""

    name: str = "fake"
    capabilities: Capabilities = field(default_factory=Capabilities)
    hosts: tuple[Host, ...] = ()
    launches: list[LaunchSpec] = field(default_factory=list)
    stops: list[StopCall] = field(default_factory=list)
    polls: list[Handle] = field(default_factory=list)
    # What poll() says, by job id; a job not named here is running.
    statuses: dict[int, Status] = field(default_factory=dict)
    # Launches that raise, by job id: the error's message.
    failing: dict[int, str] = field(default_factory=dict)
    # What each attempt started, by its state directory.
    started: dict[str, Handle] = field(default_factory=dict)

    def inventory(self) -> tuple[Host, ...]:
        return self.hosts

    def launch(self, spec: LaunchSpec) -> Handle:
        self.launches.append(spec)
        if spec.job_id in self.failing:
            raise RuntimeError(self.failing[spec.job_id])
        key = str(spec.state_dir)
        if key not in self.started:
            self.started[key] = {
                "job": spec.job_id,
                "state_dir": key,
                "start": len(self.started) + 1,
            }
        return dict(self.started[key])

    def poll(self, handle: Handle) -> Status:
        self.polls.append(handle)
        return self.statuses.get(handle["job"], Status(running=True))

    def stop(self, handle: Handle, *, reason: str, grace_seconds: float) -> None:
        self.stops.append(StopCall(dict(handle), reason, grace_seconds))

    def telemetry(self, busy: Mapping[str, float], jobs: Mapping[int, Handle]) -> list[Sample]:
        return []

    def address(self, node: str) -> str:
        return "127.0.0.1"

    def warnings(self, handle: Handle) -> tuple[str, ...]:
        return ()

    # What the tests tell it.
    def end(self, job_id: int, exit: ExitStatus) -> None:
        """From now on poll() says the job ended so."""
        self.statuses[job_id] = Status(running=False, exit=exit)

    def report(self, job_id: int, status: Status) -> None:
        self.statuses[job_id] = status
