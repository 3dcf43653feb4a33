"""Running a controller's tick in a thread: on a timer, or at once when woken."""

import logging
import threading
from typing import Protocol

log = logging.getLogger("suanli.controllers")


class Ticking(Protocol):
    name: str
    interval: float

    def tick(self) -> None: ...


class Loop:
    def __init__(self, controller: Ticking):
        self.controller = controller
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
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.controller.tick()
            except Exception:  # a failed tick is logged and retried on the next one
                log.exception("%s tick failed", self.controller.name)
            self._wake.wait(self.controller.interval)
