"""Placement: gangs, best fit, topology, fractions on shared devices, models and MIG
profiles, drained nodes and devices, CPUs and memory per node."""

from sched_builders import GIB, H100, admitted, devices_of, gpu_node, job, running, snapshot

from suanli.scheduler import schedule
from suanli.scheduler.model import Device, Node


def test_gang_is_all_or_nothing() -> None:
    busy = [running(job(100, "other"), "n1", [f"n1-g{i}" for i in range(5)])]
    decisions = schedule(snapshot([gpu_node()], [job(1, gpus=4)], busy))
    assert decisions.admit == ()
    reason = decisions.pending[1]
    assert reason.code == "capacity_gpus"
    assert reason.params["requested"] == 4 and reason.params["free"] == 3


def test_whole_gpus_land_on_distinct_devices_of_one_node() -> None:
    decisions = schedule(snapshot([gpu_node("a"), gpu_node("b")], [job(1, gpus=8)]))
    placement = admitted(decisions)[1]
    assert placement is not None and len(placement.devices) == 8
    assert len({d.device for d in placement.devices}) == 8
    assert all(d.device.startswith(placement.node + "-") and d.whole for d in placement.devices)


def test_best_fit_keeps_a_whole_node_free_for_an_eight_gpu_job() -> None:
    # Node a has 4 GPUs busy, b is empty: the 1-GPU job goes to a, so the 8-GPU job fits b.
    busy = [running(job(100, "other"), "a", [f"a-g{i}" for i in range(4)])]
    pending = [job(1, gpus=1), job(2, gpus=8)]
    decisions = schedule(snapshot([gpu_node("b"), gpu_node("a")], pending, busy))
    assert admitted(decisions)[1].node == "a"
    assert admitted(decisions)[2].node == "b"


def test_topology_a_two_gpu_job_gets_two_devices_of_one_group() -> None:
    # Group nvl0 (g0-g3) has g0 busy: 3 free; nvl1 (g4-g7) 4 free. Best fit: nvl0.
    busy = [running(job(100, "other"), "n1", ["n1-g0"])]
    decisions = schedule(snapshot([gpu_node()], [job(1, gpus=2)], busy))
    assert devices_of(decisions, 1) == ["n1-g1", "n1-g2"]


def test_topology_a_four_gpu_job_takes_the_whole_free_group() -> None:
    busy = [running(job(100, "other"), "n1", ["n1-g1"])]
    decisions = schedule(snapshot([gpu_node()], [job(1, gpus=4)], busy))
    assert devices_of(decisions, 1) == ["n1-g4", "n1-g5", "n1-g6", "n1-g7"]


def test_topology_prefers_one_socket_when_no_group_holds_the_gang() -> None:
    # Groups of 2, sockets of 4 GPUs: socket 0 = g0-g3, socket 1 = g4-g7. g0, g2 and g4 busy.
    node = gpu_node(group_size=2)
    busy = [running(job(100, "other"), "n1", ["n1-g0", "n1-g2", "n1-g4"])]
    decisions = schedule(snapshot([node], [job(1, gpus=3)], busy))
    assert sorted(devices_of(decisions, 1)) == ["n1-g5", "n1-g6", "n1-g7"]
    decisions = schedule(snapshot([node], [job(1, gpus=2)], busy))
    assert sorted(devices_of(decisions, 1)) in (["n1-g6", "n1-g7"],)


def test_small_jobs_fill_a_broken_group_before_a_whole_one() -> None:
    busy = [running(job(100, "other"), "n1", ["n1-g5"])]
    decisions = schedule(snapshot([gpu_node()], [job(1), job(2), job(3)], busy))
    used = [devices_of(decisions, i)[0] for i in (1, 2, 3)]
    assert used == ["n1-g4", "n1-g6", "n1-g7"]


def test_fractions_are_packed_on_shared_devices_only_and_never_over_capacity() -> None:
    node = gpu_node(gpus=4, shared=[2, 3])
    pending = [
        job(1, fraction_gib=30, compute=20),
        job(2, fraction_gib=30, compute=20),
        job(3, fraction_gib=30, compute=20),  # 90 GiB > 80: the other shared device
        job(4, fraction_gib=10, compute=70),  # 20 + 20 + 70 > 100 % on g2: g3
        job(5, gpus=1),
    ]
    decisions = schedule(snapshot([node], pending))
    placements = admitted(decisions)
    assert len(placements) == 5
    assert [placements[i].devices[0].device for i in (1, 2, 3, 4)] == [
        "n1-g2",
        "n1-g2",
        "n1-g3",
        "n1-g3",
    ]
    share = placements[1].devices[0]
    assert (share.memory_bytes, share.compute_percent) == (30 * GIB, 20)
    assert placements[5].devices[0].device in ("n1-g0", "n1-g1")


def test_fraction_waits_when_no_shared_device_has_room() -> None:
    node = gpu_node(gpus=2, shared=[1])
    busy = [running(job(100, "other", fraction_gib=60), "n1", fraction=("n1-g1", 60, 0))]
    decisions = schedule(snapshot([node], [job(1, fraction_gib=40)], busy))
    reason = decisions.pending[1]
    assert reason.code == "capacity_fraction"
    assert reason.params["free_memory_gib"] == 20 and reason.params["memory_gib"] == 40


def test_whole_gpus_never_land_on_shared_devices() -> None:
    node = gpu_node(gpus=2, shared=[0, 1])
    decisions = schedule(snapshot([node], [job(1, gpus=1)]))
    assert decisions.admit == ()
    assert decisions.pending[1].code == "capacity_no_gpus"


def test_gpu_model_is_respected() -> None:
    nodes = [gpu_node("a"), gpu_node("h", model=H100)]
    decisions = schedule(snapshot(nodes, [job(1, model="H100"), job(2, model="h100 80gb")]))
    assert admitted(decisions)[1].node == "h"
    assert admitted(decisions)[2].node == "h"
    decisions = schedule(snapshot(nodes, [job(1, model="A10")]))
    assert decisions.pending[1].code == "capacity_gpu_model"
    assert decisions.pending[1].params == {"model": "A10"}


def test_mig_instances_match_their_profile_and_only_that() -> None:
    devices = (
        Device("gpu0", "m", "NVIDIA A100-SXM4-80GB", 80 * GIB),
        Device("mig0", "m", "NVIDIA A100-SXM4-80GB", 10 * GIB, mig_profile="1g.10gb"),
        Device("mig1", "m", "NVIDIA A100-SXM4-80GB", 10 * GIB, mig_profile="1g.10gb"),
    )
    node = Node("m", 32, 256 * GIB, devices)
    decisions = schedule(snapshot([node], [job(1, model="1g.10gb"), job(2), job(3)]))
    assert devices_of(decisions, 1) == ["mig0"]
    assert devices_of(decisions, 2) == ["gpu0"]  # no model: a full GPU, never a MIG slice
    assert decisions.pending[3].code == "capacity_gpus"


def test_drained_nodes_and_devices_are_skipped() -> None:
    nodes = [gpu_node("a", schedulable=False), gpu_node("b", drained=range(6))]
    decisions = schedule(snapshot(nodes, [job(1, gpus=2), job(2, gpus=1)]))
    assert sorted(devices_of(decisions, 1)) == ["b-g6", "b-g7"]
    assert decisions.pending[2].code == "capacity_gpus"
    # An 8-GPU job could only run on the drained node.
    decisions = schedule(snapshot(nodes, [job(3, gpus=8)]))
    assert decisions.pending[3].code == "node_drained"


def test_cpus_and_memory_per_node() -> None:
    nodes = [gpu_node("a", cpus=8), gpu_node("b", cpus=32)]
    decisions = schedule(snapshot(nodes, [job(1, cpus=16), job(2, cpus=8, memory_gib=600)]))
    assert admitted(decisions)[1].node == "b"
    reason = decisions.pending[2]
    assert reason.code == "capacity_cpus_memory"
    assert reason.params["memory_gib"] == 600 and reason.params["free_memory_gib"] == 512


def test_cpu_only_work_prefers_nodes_without_free_gpus() -> None:
    busy = [running(job(100, "other", gpus=8), "full", [f"full-g{i}" for i in range(8)])]
    nodes = [gpu_node("free"), gpu_node("full")]
    decisions = schedule(snapshot(nodes, [job(1, gpus=0, cpus=4)], busy))
    placement = admitted(decisions)[1]
    assert placement.node == "full" and placement.devices == ()


def test_multi_node_requests_wait_for_an_engine_that_places_them() -> None:
    from suanli.scheduler.model import Request, Workload

    workload = Workload(1, "p", "u", Request(gpus=8, nodes=2))
    decisions = schedule(snapshot([gpu_node("a"), gpu_node("b")], [workload]))
    assert decisions.pending[1].code == "multi_node"
    decisions = schedule(snapshot([gpu_node("a"), gpu_node("b")], [workload]), places_work=True)
    assert admitted(decisions) == {1: None}
