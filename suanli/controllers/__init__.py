"""Background loops that make the world match the rows (docs/architecture.md).

Each is a small class with an idempotent `tick()`, run in a thread, woken at once by an event
(a submit wakes the scheduler) and also on a timer. Every transition is written to the
database before and after its side effect, so a server killed at any moment restarts into a
consistent state, re-adopts what still runs and never starts a workload twice.
"""
