"""Fine-tuning runs from the SDK: create one from a spec (estimate its memory first), follow
its loss and progress until it ends, read its log, stop and resume it, and compare the base
and the tuned model's answers.

A run is addressed by its id (the id of its job). `follow` polls the run and its metrics,
asking only for the points logged since the last look, and hands each look to a callback
(a progress bar, a chart) until the run has ended.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from suanli.client.client import _follow, _Group
from suanli.schemas.finetune import (
    BuiltinDatasetOut,
    CompareOut,
    EstimateOut,
    FinetuneDetailOut,
    FinetuneOut,
    FinetuneSpec,
    MetricsOut,
    OptionsOut,
)
from suanli.schemas.system import LogChunkOut

# A run in one of these states has ended: its metrics will not change any more.
ENDED = frozenset({"succeeded", "failed", "cancelled"})
Look = Callable[[FinetuneDetailOut, MetricsOut], None]


class Finetunes(_Group):
    """Fine-tuning runs with LLaMA-Factory: a base model version trained on datasets (yours
    or the built-in ones), registered as a new model version once it succeeds."""

    def create(self, spec: FinetuneSpec | dict[str, Any]) -> FinetuneDetailOut:
        """Start a run from a spec (the same schema as a YAML run file); refused with the
        field named when a value is out of range or the run would not fit one device."""
        data = self._client.request("POST", "finetunes", json=_body(spec))
        return FinetuneDetailOut.model_validate(data)

    def estimate(self, spec: FinetuneSpec | dict[str, Any]) -> EstimateOut:
        """The memory per device a spec would take, its parts, whether it fits one device
        and which settings would; no run is created."""
        data = self._client.request("POST", "finetune-estimates", json=_body(spec))
        return EstimateOut.model_validate(data)

    def list(
        self, project: str | None = None, state: str | None = None, *, limit: int = 100
    ) -> list[FinetuneOut]:
        """Newest first, from the projects you belong to. `state`: a state, or `active` or
        `finished`."""
        return self._client.get(
            "finetunes", list[FinetuneOut], project=project, state=state, limit=limit
        )

    def get(self, run_id: int) -> FinetuneDetailOut:
        """With its spec, history, estimate, final metrics and the LLaMA-Factory YAML."""
        return self._client.get(f"finetunes/{run_id}", FinetuneDetailOut)

    def metrics(self, run_id: int, after: int = 0) -> MetricsOut:
        """The logged points after step `after` (all by default), and where the run stands."""
        return self._client.get(f"finetunes/{run_id}/metrics", MetricsOut, after=after)

    def log(self, run_id: int, *, offset: int = 0, tail: int | None = None) -> LogChunkOut:
        """The trainer's output from byte `offset`, or its last `tail` lines."""
        return self._client.get(f"finetunes/{run_id}/log", LogChunkOut, offset=offset, tail=tail)

    def follow_log(
        self, run_id: int, *, tail: int | None = None, poll_seconds: float = 0.5
    ) -> Iterator[str]:
        """The trainer's output as it arrives, until the run has ended."""

        def logs(item_id: int, **given: Any) -> LogChunkOut:
            return self.log(item_id, **given)

        return _follow(logs, run_id, tail, poll_seconds)

    def stop(self, run_id: int) -> FinetuneDetailOut:
        """Stop the run; its checkpoints stay, and `resume` continues from the last one."""
        data = self._client.request("POST", f"finetunes/{run_id}/stop")
        return FinetuneDetailOut.model_validate(data)

    def resume(self, run_id: int) -> FinetuneDetailOut:
        """Queue a stopped or failed run again, from its last checkpoint (the same id)."""
        data = self._client.request("POST", f"finetunes/{run_id}/resume")
        return FinetuneDetailOut.model_validate(data)

    def compare(self, run_id: int, prompts: list[str]) -> CompareOut:
        """Start a job that answers `prompts` with the base and with the tuned model."""
        body = {"prompts": list(prompts)}
        data = self._client.request("POST", f"finetunes/{run_id}/compare", json=body)
        return CompareOut.model_validate(data)

    def comparison(self, run_id: int) -> CompareOut:
        """The latest comparison: its state and, once it has ended, the answers side by side."""
        return self._client.get(f"finetunes/{run_id}/compare", CompareOut)

    def datasets(self) -> list[BuiltinDatasetOut]:
        """The datasets Suanli ships, to name in `builtin_datasets`."""
        return self._client.get("finetunes/datasets", list[BuiltinDatasetOut])

    def options(self) -> OptionsOut:
        """What a spec may choose: chat templates, stages, methods, schedulers, precisions
        and the trainers the administrator registered."""
        return self._client.get("finetunes/options", OptionsOut)

    def follow(
        self, run_id: int, callback: Look | None = None, *, interval: float = 1.0
    ) -> FinetuneDetailOut:
        """Poll the run every `interval` seconds until it has ended; return it as it ended.

        Each look calls `callback(run, metrics)` where `metrics.points` holds only the points
        logged since the previous look (the totals are current). The run is read before its
        metrics, so the last look, made once the run has ended, has every point."""
        after = 0
        while True:
            run = self.get(run_id)
            metrics = self.metrics(run_id, after=after)
            if metrics.points:
                after = max(point.step for point in metrics.points)
            if callback is not None:
                callback(run, metrics)
            if run.state in ENDED:
                return run
            time.sleep(interval)


def _body(spec: FinetuneSpec | dict[str, Any]) -> Any:
    if isinstance(spec, FinetuneSpec):
        return spec.model_dump(mode="json", exclude_none=True)
    return spec
