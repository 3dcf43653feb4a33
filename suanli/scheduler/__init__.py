"""The scheduler: pure and deterministic. From a Snapshot it returns Decisions.

No database, no clock, no processes: that is what makes it testable, benchmarkable and
replayable against traces (see DESIGN.md). Admission (quotas, fairness, priorities) is kept
apart from placement (which node, which GPUs), so an engine that places work itself (Slurm)
can use admission alone.
"""
