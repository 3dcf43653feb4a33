"""The MPS identity rule: a shared GPU's MPS daemon serves one Unix identity at a time (a
client of another identity blocks until every client of the current one has ended), so the
scheduler never puts fractions of two identities (`Workload.identity`) on one GPU at once:
not in placement, not in the cycle, not through preemption. Whole GPUs ignore identities."""

from collections import defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sched_builders import GIB, admitted, devices_of, gpu_node, job, running, snapshot

from suanli.scheduler import schedule
from suanli.scheduler.model import (
    Decisions,
    Device,
    DeviceShare,
    Node,
    Placement,
    Priority,
    Request,
    Snapshot,
    Workload,
)

OTHER_USER = "gpu_shared_other_user"


def one_shared_gpu() -> list[Node]:
    return [gpu_node(gpus=1, shared=[0])]


def alice_on_g0(
    id: int = 100,
    gib: int = 20,
    *,
    priority: Priority = Priority.normal,
    preemptible: bool = True,
) -> Workload:
    """A fraction of identity alice running on the shared GPU n1-g0."""
    workload = job(
        id, fraction_gib=gib, identity="alice", priority=priority, preemptible=preemptible
    )
    return running(workload, "n1", fraction=("n1-g0", gib, 0))


# -- placement and the cycle ------------------------------------------------------------


def test_a_second_identity_waits_for_a_shared_gpu_another_identity_holds() -> None:
    decisions = schedule(
        snapshot(one_shared_gpu(), [job(1, fraction_gib=20, identity="bob")], [alice_on_g0()])
    )
    assert decisions.admit == ()
    reason = decisions.pending[1]
    assert reason.code == OTHER_USER
    assert reason.params == {"memory_gib": 20, "compute": 0}
    assert reason.position == 1


def test_two_identities_submitted_together_do_not_share_an_empty_gpu() -> None:
    pending = [job(1, fraction_gib=10, identity="alice"), job(2, fraction_gib=10, identity="bob")]
    decisions = schedule(snapshot(one_shared_gpu(), pending))
    assert sorted(admitted(decisions)) == [1]
    assert decisions.pending[2].code == OTHER_USER


def test_the_same_identity_shares_a_gpu() -> None:
    pending = [job(1, fraction_gib=20, identity="alice"), job(2, fraction_gib=20, identity="alice")]
    decisions = schedule(snapshot(one_shared_gpu(), pending, [alice_on_g0()]))
    assert sorted(admitted(decisions)) == [1, 2]
    assert devices_of(decisions, 1) == devices_of(decisions, 2) == ["n1-g0"]


def test_the_default_identity_is_an_identity_like_any_other() -> None:
    # "" (every workload before identities were set) does not share with a named one.
    decisions = schedule(snapshot(one_shared_gpu(), [job(1, fraction_gib=20)], [alice_on_g0()]))
    assert decisions.pending[1].code == OTHER_USER


def test_once_the_other_identitys_fractions_have_ended_the_gpu_is_served() -> None:
    pending = [job(1, fraction_gib=20, identity="bob")]
    waiting = schedule(snapshot(one_shared_gpu(), pending, [alice_on_g0()]))
    assert waiting.pending[1].code == OTHER_USER
    ended = schedule(snapshot(one_shared_gpu(), pending, []))  # alice's fraction has ended
    assert devices_of(ended, 1) == ["n1-g0"]


def test_a_fraction_goes_to_an_empty_gpu_rather_than_one_another_identity_holds() -> None:
    # Packing alone would put bob on g0, the more used device.
    node = gpu_node(gpus=2, shared=[0, 1])
    decisions = schedule(
        snapshot([node], [job(1, fraction_gib=20, identity="bob")], [alice_on_g0()])
    )
    assert devices_of(decisions, 1) == ["n1-g1"]


def test_a_shape_that_failed_for_one_identity_is_still_searched_for_another() -> None:
    # alice (first in the queue) finds no GPU serving her; bob's identical request does.
    bob_on_g0 = running(job(100, fraction_gib=20, identity="bob"), "n1", fraction=("n1-g0", 20, 0))
    pending = [job(1, fraction_gib=20, identity="alice"), job(2, fraction_gib=20, identity="bob")]
    decisions = schedule(snapshot(one_shared_gpu(), pending, [bob_on_g0]))
    assert sorted(admitted(decisions)) == [2]
    assert decisions.pending[1].code == OTHER_USER


def test_without_room_anywhere_the_reason_stays_capacity() -> None:
    # bob would not fit even if alice's GPU served him: that is capacity, not identity.
    decisions = schedule(
        snapshot(one_shared_gpu(), [job(1, fraction_gib=70, identity="bob")], [alice_on_g0()])
    )
    assert decisions.pending[1].code == "capacity_fraction"


def test_a_gpu_already_holding_two_identities_serves_neither_until_one_has_left() -> None:
    # Work started before identities were set can leave two identities on one GPU.
    bob_on_g0 = running(job(101, fraction_gib=20, identity="bob"), "n1", fraction=("n1-g0", 20, 0))
    pending = [job(1, fraction_gib=10, identity="alice"), job(2, fraction_gib=10, identity="bob")]
    decisions = schedule(snapshot(one_shared_gpu(), pending, [alice_on_g0(), bob_on_g0]))
    assert decisions.admit == ()
    assert decisions.pending[1].code == decisions.pending[2].code == OTHER_USER


def test_whole_gpus_ignore_identities() -> None:
    node = gpu_node(gpus=2, shared=[0])
    decisions = schedule(snapshot([node], [job(1, gpus=1, identity="bob")], [alice_on_g0()]))
    assert devices_of(decisions, 1) == ["n1-g1"]


def test_admission_without_placement_applies_the_rule_too() -> None:
    # An engine places the work (`places_work=True`): the one shared GPU is still alice's.
    decisions = schedule(
        snapshot(one_shared_gpu(), [job(1, fraction_gib=20, identity="bob")], [alice_on_g0()]),
        places_work=True,
    )
    assert decisions.pending[1].code == OTHER_USER


# -- preemption ------------------------------------------------------------------------


def test_preemption_frees_every_fraction_of_the_other_identity() -> None:
    # Memory alone would need one victim; the GPU serves bob only once both are gone.
    run = [
        alice_on_g0(100, 30, priority=Priority.low),
        alice_on_g0(101, 30, priority=Priority.low),
    ]
    pending = [job(1, fraction_gib=20, identity="bob", priority=Priority.high)]
    decisions = schedule(snapshot(one_shared_gpu(), pending, run))
    assert sorted(p.victim for p in decisions.preempt) == [100, 101]
    assert decisions.pending[1].code == "preempting"


def test_preemption_within_one_identity_stops_only_what_is_needed() -> None:
    run = [
        alice_on_g0(100, 30, priority=Priority.low),
        alice_on_g0(101, 30, priority=Priority.low),
    ]
    pending = [job(1, fraction_gib=40, identity="alice", priority=Priority.high)]
    decisions = schedule(snapshot(one_shared_gpu(), pending, run))
    assert len(decisions.preempt) == 1


def test_no_preemption_when_a_fraction_of_the_other_identity_must_stay() -> None:
    run = [
        alice_on_g0(100, 30, priority=Priority.low),
        alice_on_g0(101, 10, priority=Priority.low, preemptible=False),
    ]
    pending = [job(1, fraction_gib=20, identity="bob", priority=Priority.high)]
    decisions = schedule(snapshot(one_shared_gpu(), pending, run))
    assert decisions.preempt == ()
    assert decisions.pending[1].code == OTHER_USER


def test_a_preemption_plan_that_failed_for_one_identity_is_still_tried_for_another() -> None:
    # bob's fraction that may not be preempted keeps g0 from alice; bob's next one can
    # have it by stopping his own low-priority fraction.
    def bob_on_g0(id: int, gib: int, preemptible: bool) -> Workload:
        workload = job(
            id, fraction_gib=gib, identity="bob", priority=Priority.low, preemptible=preemptible
        )
        return running(workload, "n1", fraction=("n1-g0", gib, 0))

    run = [bob_on_g0(100, 50, True), bob_on_g0(101, 20, False)]
    pending = [
        job(1, fraction_gib=40, identity="alice", priority=Priority.high),
        job(2, fraction_gib=40, identity="bob", priority=Priority.high),
    ]
    decisions = schedule(snapshot(one_shared_gpu(), pending, run))
    assert [(p.victim, p.beneficiary) for p in decisions.preempt] == [(100, 2)]
    assert decisions.pending[1].code == "capacity_fraction"  # no room now, whoever holds it


def test_a_gpu_being_emptied_for_a_preemptor_takes_no_new_fraction_in_that_cycle() -> None:
    # bob preempts alice's fraction; alice's next fraction (not entitled to preempt) would
    # fit in what is left, but would keep the GPU hers, and another of bob's would start
    # while alice's still runs.
    run = [alice_on_g0(100, 40, priority=Priority.low)]
    pending = [
        job(1, fraction_gib=20, identity="bob", priority=Priority.high),
        job(2, fraction_gib=10, identity="alice", priority=Priority.low),
        job(3, fraction_gib=10, identity="bob", priority=Priority.low),
    ]
    decisions = schedule(snapshot(one_shared_gpu(), pending, run))
    assert [(p.victim, p.beneficiary) for p in decisions.preempt] == [(100, 1)]
    assert decisions.admit == ()
    assert decisions.pending[2].code == decisions.pending[3].code == OTHER_USER


# -- property: no decision ever puts two identities on one GPU --------------------------

IDENTITIES = ("", "alice", "bob")


@st.composite
def identity_snapshots(draw: st.DrawFn) -> Snapshot:
    """Small clusters of mostly shared GPUs, fractions of three identities running (placed
    by the rule, except now and then two on one GPU, as left by work started before
    identities were set) and pending, a few whole-GPU jobs, all priorities."""
    nodes = []
    for n in range(draw(st.integers(1, 2))):
        name = f"n{n}"
        devices = tuple(
            Device(
                id=f"{name}-g{i}",
                node=name,
                model="NVIDIA A100-SXM4-80GB",
                memory_bytes=draw(st.sampled_from((40, 80))) * GIB,
                shared=draw(st.integers(0, 3)) > 0,
                schedulable=draw(st.integers(0, 9)) > 0,
            )
            for i in range(draw(st.integers(1, 4)))
        )
        nodes.append(Node(name, draw(st.sampled_from((4, 16))), 256 * GIB, devices))

    running_work = []
    use: dict[str, list] = defaultdict(lambda: [0, 0, set()])
    for i in range(draw(st.integers(0, 8))):
        node = draw(st.sampled_from(nodes))
        shared = [d for d in node.devices if d.shared]
        if not shared:
            continue
        device = draw(st.sampled_from(shared))
        memory = draw(st.sampled_from((10, 20, 40))) * GIB
        compute = draw(st.sampled_from((0, 30, 50)))
        identity = draw(st.sampled_from(IDENTITIES))
        held = use[device.id]
        if held[0] + memory > device.memory_bytes or held[1] + compute > 100:
            continue
        if held[2] - {identity} and draw(st.integers(0, 4)) > 0:
            continue  # mostly placed by the rule
        held[0] += memory
        held[1] += compute
        held[2].add(identity)
        running_work.append(
            Workload(
                id=1000 + i,
                project=draw(st.sampled_from(("p0", "p1"))),
                user="u",
                request=Request(gpu_memory_bytes=memory, gpu_compute_percent=compute, cpus=1),
                priority=draw(st.sampled_from(list(Priority))),
                preemptible=draw(st.integers(0, 3)) > 0,
                started_at=float(i),
                placement=Placement(node.name, (DeviceShare(device.id, memory, compute),)),
                identity=identity,
            )
        )

    pending = []
    for i in range(draw(st.integers(1, 10))):
        if draw(st.integers(0, 5)) == 0:
            request = Request(gpus=draw(st.integers(1, 2)), cpus=1)
        else:
            request = Request(
                gpu_memory_bytes=draw(st.sampled_from((0, 10, 20, 40))) * GIB,
                gpu_compute_percent=draw(st.sampled_from((10, 30, 60))),
                cpus=draw(st.sampled_from((0.5, 1, 8))),
            )
        pending.append(
            Workload(
                id=i + 1,
                project=draw(st.sampled_from(("p0", "p1"))),
                user="u",
                request=request,
                priority=draw(st.sampled_from(list(Priority))),
                submitted_at=float(draw(st.integers(0, 50))),
                identity=draw(st.sampled_from(IDENTITIES)),
            )
        )
    return Snapshot(100.0, tuple(nodes), {}, tuple(pending), tuple(running_work))


def fractions(workloads: list[Workload]) -> list[tuple[Workload, DeviceShare]]:
    return [
        (workload, share)
        for workload in workloads
        for share in workload.placement.devices
        if not share.whole
    ]


def assert_one_identity_per_gpu(snapshot: Snapshot, decisions: Decisions) -> None:
    """Every fraction admitted shares its GPU, once the victims are gone, only with fractions
    of its own identity."""
    victims = {p.victim for p in decisions.preempt}
    staying = [w for w in snapshot.running if w.id not in victims]
    pending = {w.id: w for w in snapshot.pending}
    on_device: dict[str, set[str]] = defaultdict(set)
    for workload, share in fractions(staying):
        on_device[share.device].add(workload.identity)
    arrivals: dict[str, set[str]] = defaultdict(set)
    for workload_id, placement in admitted(decisions).items():
        workload = pending[workload_id]
        if workload.request.is_fraction:
            device = placement.devices[0].device
            assert on_device[device] <= {workload.identity}, (device, on_device[device])
            arrivals[device].add(workload.identity)
    assert all(len(identities) == 1 for identities in arrivals.values())


def assert_other_user_waits_are_true(snapshot: Snapshot, decisions: Decisions) -> None:
    """A wait blamed on another identity has a shared GPU that had room for it before the
    cycle and that another identity holds (running, or admitted in the cycle; skipped when
    a preemptor may hold it). A necessary condition: the reason was given at its turn."""
    pending = {w.id: w for w in snapshot.pending}
    if any(pending[p.beneficiary].request.is_fraction for p in decisions.preempt):
        return
    room = {d.id: [d.memory_bytes, 100] for n in snapshot.nodes for d in n.devices if d.shared}
    holders: dict[str, set[str]] = defaultdict(set)
    for workload, share in fractions(list(snapshot.running)):
        room[share.device][0] -= share.memory_bytes
        room[share.device][1] -= share.compute_percent
        holders[share.device].add(workload.identity)
    for workload_id, placement in admitted(decisions).items():
        if pending[workload_id].request.is_fraction:
            holders[placement.devices[0].device].add(pending[workload_id].identity)
    for workload_id, reason in decisions.pending.items():
        if reason.code == OTHER_USER:
            request, identity = pending[workload_id].request, pending[workload_id].identity
            assert any(
                holders[device] - {identity}
                and memory >= request.gpu_memory_bytes
                and compute >= request.gpu_compute_percent
                for device, (memory, compute) in room.items()
            )


def next_snapshot(snapshot: Snapshot, decisions: Decisions, ended: set[int]) -> Snapshot:
    """The world after the decisions: victims and `ended` gone, admitted work running."""
    gone = {p.victim for p in decisions.preempt} | ended
    still = [w for w in snapshot.running if w.id not in gone]
    placements = admitted(decisions)
    started = []
    for workload in snapshot.pending:
        placement = placements.get(workload.id)
        if placement is not None:
            started.append(
                Workload(
                    workload.id,
                    workload.project,
                    workload.user,
                    workload.request,
                    workload.priority,
                    workload.submitted_at,
                    started_at=snapshot.now,
                    placement=placement,
                    identity=workload.identity,
                )
            )
    waiting = tuple(w for w in snapshot.pending if w.id not in placements)
    return Snapshot(
        snapshot.now + 1, snapshot.nodes, {}, waiting, tuple(still + started), snapshot.usage
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(identity_snapshots(), st.data())
def test_no_decision_puts_two_identities_on_one_gpu(
    snapshot: Snapshot, data: st.DataObject
) -> None:
    for _ in range(4):  # a few cycles, some running work ending between them
        decisions = schedule(snapshot)
        assert_one_identity_per_gpu(snapshot, decisions)
        assert_other_user_waits_are_true(snapshot, decisions)
        ids = sorted(w.id for w in snapshot.running)
        ended = set(data.draw(st.lists(st.sampled_from(ids), unique=True))) if ids else set()
        snapshot = next_snapshot(snapshot, decisions, ended)
