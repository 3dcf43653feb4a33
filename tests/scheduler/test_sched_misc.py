"""Admission without placement, refusal of impossible requests at submit, decayed usage,
and the catalogue entries of every reason."""

import pytest
from sched_builders import GIB, H100, admitted, gpu_node, job, running, snapshot

from suanli.i18n import catalogue, translate
from suanli.scheduler import check_feasible, decayed_usage, schedule
from suanli.scheduler.model import Quota, Request
from suanli.scheduler.reasons import CODES


def test_place_false_admits_on_quota_and_total_capacity_without_placement() -> None:
    # Two nodes of 4 GPUs; 5 busy. A 3-GPU gang fits the cluster's total (the engine
    # decides where); a 1-GPU job then no longer fits; quotas still apply.
    nodes = [gpu_node("a", gpus=4), gpu_node("b", gpus=4)]
    run = [running(job(100, "x", gpus=5), "a", ["a-g0", "a-g1", "a-g2", "a-g3", "b-g0"])]
    pending = [job(1, "p", gpus=3), job(2, "q"), job(3, "r", gpus=2)]
    decisions = schedule(snapshot(nodes, pending, run, [Quota("r", max_gpus=1)]), places_work=True)
    assert admitted(decisions) == {1: None}
    assert decisions.pending[2].code == "capacity_gpus"
    assert decisions.pending[3].code == "quota_max_gpus"


def test_place_false_counts_running_work_without_placement() -> None:
    from suanli.scheduler.model import Workload

    engine_placed = Workload(100, "x", "u", Request(gpus=7), started_at=0.0)
    pending = [job(1, "p"), job(2, "p")]
    decisions = schedule(snapshot([gpu_node()], pending, [engine_placed]), places_work=True)
    assert admitted(decisions) == {1: None}
    assert decisions.pending[2].code == "capacity_gpus"


@pytest.mark.parametrize(
    ("request_", "code", "params"),
    [
        (Request(gpus=-1), "invalid_value", {"field": "gpus", "value": -1}),
        (Request(cpus=-0.5), "invalid_value", {"field": "cpus", "value": -0.5}),
        (Request(gpus=1, nodes=0), "invalid_value", {"field": "nodes", "value": 0}),
        (Request(gpu_compute_percent=150), "compute_percent_range", {"value": 150}),
        (Request(gpus=1, gpu_memory_bytes=GIB), "mixed_gpu_request", {"gpus": 1}),
        (Request(gpus=9), "too_many_gpus", {"requested": 9, "largest": 8}),
        (
            Request(gpus=2, gpu_model="H100"),
            "too_many_model_gpus",
            {"requested": 2, "largest": 1, "model": "H100"},
        ),
        (
            Request(gpus=1, gpu_model="V100"),
            "unknown_gpu_model",
            {"model": "V100", "available": f"NVIDIA A100-SXM4-80GB, {H100}"},
        ),
        (Request(gpu_memory_bytes=GIB), "no_shared_gpus", {}),
        (
            Request(gpu_memory_bytes=GIB, gpu_model="H100"),
            "no_shared_model_gpus",
            {"model": "H100"},
        ),
        (Request(gpus=1, cpus=65), "too_many_cpus", {"requested": 65, "largest": 64}),
        (Request(cpus=64.5), "too_many_cpus", {"requested": 64.5, "largest": 64}),
        (
            Request(gpus=1, memory_bytes=600 * GIB),
            "too_much_memory",
            {"requested_gib": 600, "largest_gib": 512},
        ),
        (Request(gpus=4, nodes=3), "too_many_nodes", {"requested": 3, "available": 2}),
    ],
)
def test_check_feasible_refuses_impossible_requests(
    request_: Request, code: str, params: dict
) -> None:
    nodes = [gpu_node("a"), gpu_node("b", drained=range(8)), gpu_node("h", gpus=1, model=H100)]
    assert check_feasible(request_, nodes) == (code, params)


def test_check_feasible_accepts_what_could_run_some_day() -> None:
    nodes = [gpu_node("a", schedulable=False), gpu_node("s", gpus=2, shared=[1], memory_gib=40)]
    assert check_feasible(Request(gpus=8), nodes) is None  # drained now, fine later
    assert check_feasible(Request(gpus=1, cpus=64, memory_bytes=512 * GIB), nodes) is None
    assert check_feasible(Request(gpu_memory_bytes=40 * GIB, gpu_compute_percent=50), nodes) is None
    assert check_feasible(Request(cpus=2), nodes) is None
    assert check_feasible(Request(gpu_memory_bytes=41 * GIB), nodes) == (
        "fraction_memory_too_large",
        {"requested_gib": 41, "largest_gib": 40},
    )


def test_decayed_usage_ages_and_accumulates() -> None:
    nodes = [gpu_node(gpus=4, cpus=1000, memory=10**15)]
    run = [running(job(1, "a", gpus=2), "n1", ["n1-g0", "n1-g1"])]
    usage = decayed_usage({"b": 0.4}, run, elapsed=60.0, half_life=60.0, nodes=nodes)
    assert usage == pytest.approx({"a": 0.25, "b": 0.2})  # a: 0.5 share · (1 − ½)
    for _ in range(30):
        usage = decayed_usage(usage, run, elapsed=60.0, half_life=60.0, nodes=nodes)
    assert usage["a"] == pytest.approx(0.5) and "b" not in usage


def test_every_reason_code_has_a_message_in_both_languages() -> None:
    params = {
        "used": 2,
        "limit": 2,
        "requested": 1,
        "user": "ann",
        "used_gib": 1,
        "limit_gib": 2,
        "requested_gib": 1,
        "guaranteed": 0,
        "free": 0,
        "largest": 8,
        "model": "A100",
        "memory_gib": 10,
        "compute": 50,
        "free_memory_gib": 5,
        "free_compute": 20,
        "cpus": 4,
        "free_cpus": 2,
        "nodes": 2,
        "job": 7,
        "victims": 1,
        "position": 3,
    }
    for language in ("en", "zh-CN"):
        for code in CODES:
            assert f"reason.{code}" in catalogue(language), (language, code)
            text = translate(f"reason.{code}", language, **params)
            assert "{" not in text and "3" in text, (language, code, text)
