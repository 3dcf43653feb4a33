"""The scheduler: pure and deterministic. From a Snapshot it returns Decisions.

No database, no clock, no processes: that is what makes it testable, benchmarkable and
replayable against traces (see docs/architecture.md). Admission (quotas, fairness,
priorities) is kept apart from placement (which node, which GPUs), so an engine that places
work itself (Slurm) can use admission alone.

- `schedule(snapshot, places_work=False)`: one cycle (cycle.py);
- `check_feasible(request, nodes)`: refuse at submit what can never run (feasibility.py);
- `decayed_usage(...)`: age per-project usage between cycles, for fair share (fairshare.py);
- reason codes: reasons.py; each has a `reason.<code>` message in suanli/i18n.
"""

from suanli.scheduler.cycle import schedule
from suanli.scheduler.devices import fraction_share, gpu_charge, model_matches
from suanli.scheduler.fairshare import Capacity, decayed_usage, dominant_share
from suanli.scheduler.feasibility import check_feasible

__all__ = [
    "Capacity",
    "check_feasible",
    "decayed_usage",
    "dominant_share",
    "fraction_share",
    "gpu_charge",
    "model_matches",
    "schedule",
]
