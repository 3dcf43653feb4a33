"""The workload state machine shared by every kind (docs/architecture.md):

    pending → admitted → starting → running → succeeded | failed | cancelled

A preempted or retried workload goes back to pending. Anything not yet running may be
cancelled; admitted and starting may fail (launch error). A stopped dev environment may be
restarted in place: from its end state back to pending (services.devenvs.restart), keeping
its id, name and URLs.
"""

from enum import StrEnum


class State(StrEnum):
    pending = "pending"
    admitted = "admitted"
    starting = "starting"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def active(self) -> bool:
        """Holds (or is about to hold) resources on a node."""
        return self in ACTIVE


TERMINAL = frozenset({State.succeeded, State.failed, State.cancelled})
ACTIVE = frozenset({State.admitted, State.starting, State.running})


def gpu_state(*, present: bool, schedulable: bool, shared: bool, in_use: bool) -> str:
    """A GPU as people see it: free / in_use / shared_free / shared_in_use / drained /
    missing. The CLI and the console both show this word (catalogue `label.gpu.*`)."""
    if not present:
        return "missing"
    if not schedulable:
        return "drained"
    if shared:
        return "shared_in_use" if in_use else "shared_free"
    return "in_use" if in_use else "free"
