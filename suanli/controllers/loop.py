"""Running a controller's tick in a thread: on a timer, or at once when woken; with leases,
only in the one server process that holds the loop's lease (suanli.controllers.lease)."""

import logging
import threading
import time
from typing import Protocol

from suanli.controllers.lease import Leases

log = logging.getLogger("suanli.controllers")

# A server that died hands its loops over after at most this long (or three intervals, for a
# loop that ticks more seldom).
MIN_LEASE_SECONDS = 30.0


class Ticking(Protocol):
    name: str
    interval: float

    def tick(self) -> None: ...


def lease_ttl(interval: float) -> float:
    """Long enough that a holder which ticks on time renews its lease before it lapses, short
    enough that another server takes over soon after the holder died."""
    return max(MIN_LEASE_SECONDS, 3 * interval)


class Loop:
    def __init__(self, controller: Ticking, leases: Leases | None = None):
        self.controller = controller
        self.leases = leases
        # Whether this process held the lease at the last look; None before the first.
        self._held: bool | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"suanli-{controller.name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10) -> None:
        """Stop ticking, then hand the lease over at once. A tick still running after
        `timeout` keeps it: the lease then lapses on its own, and no other server starts the
        loop while this one may still be in it."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        if self.leases is None or not self._held or self._thread.is_alive():
            return
        try:
            self.leases.release(self.controller.name)
        except Exception:  # the lease lapses by itself; stopping must go on
            log.exception("%s: releasing its lease failed", self.controller.name)

    def holds(self) -> bool:
        """Whether this process may tick now (always, without leases). Logs when that
        changes, not on every tick; a lease held from the start is the usual case of one
        server, and goes unsaid."""
        if self.leases is None:
            return True
        name = self.controller.name
        held = self.leases.hold(name, lease_ttl(self.controller.interval))
        if held and self._held is False:
            log.info("%s: this server now holds the loop's lease and runs it", name)
        elif not held and self._held is not False:
            log.info("%s: another server holds the loop's lease; this one stands by", name)
        self._held = held
        return held

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                if self.holds():
                    self._tick()
            except Exception:  # a failed tick is logged and retried on the next one
                log.exception("%s tick failed", self.controller.name)
            self._wake.wait(self.controller.interval)

    def _tick(self) -> None:
        """Tick; warn when the tick ran so long that the lease, renewed with at least half
        its ttl left, may have lapsed meanwhile and another server started the loop too."""
        started = time.monotonic()
        self.controller.tick()
        took, safe = time.monotonic() - started, lease_ttl(self.controller.interval) / 2
        if self.leases is not None and took > safe:
            log.warning(
                "%s: a tick took %.0f s, more than the %.0f s its lease is sure to last",
                self.controller.name,
                took,
                safe,
            )
