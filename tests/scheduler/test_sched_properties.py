"""Properties over random clusters and queues (hypothesis): whatever the snapshot, a cycle
never over-commits a device or a node, never exceeds a project's GPU limits, never grants
part of a gang, preempts only what it may, explains every wait, and is deterministic."""

from collections import Counter, defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sched_builders import A100, GIB, H100

from suanli.scheduler import model_matches, schedule
from suanli.scheduler.model import (
    Device,
    DeviceShare,
    Node,
    Placement,
    Priority,
    Quota,
    Request,
    Snapshot,
    Workload,
)

PROJECTS = ("p0", "p1", "p2")


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    nodes = []
    for n in range(draw(st.integers(1, 3))):
        name = f"n{n}"
        model = draw(st.sampled_from((A100, H100)))
        count = draw(st.integers(0, 8))
        group_size = draw(st.sampled_from((1, 2, 4, 8)))
        devices = tuple(
            Device(
                id=f"{name}-g{i}",
                node=name,
                model=model,
                memory_bytes=draw(st.sampled_from((40, 80))) * GIB,
                group=f"{name}-x{i // group_size}",
                socket=i // 4,
                shared=draw(st.booleans()) and draw(st.booleans()),
                schedulable=draw(st.integers(0, 9)) > 0,
            )
            for i in range(count)
        )
        cpus = draw(st.sampled_from((4, 16, 64)))
        nodes.append(Node(name, cpus, 256 * GIB, devices, draw(st.integers(0, 9)) > 0))

    # Running work, placed validly by a simple allocator.
    running = []
    whole_free = {n.name: [d for d in n.devices if not d.shared] for n in nodes}
    shared_use: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    cpu_free = {n.name: n.cpus for n in nodes}
    by_name = {n.name: n for n in nodes}
    for i in range(draw(st.integers(0, 8))):
        node = by_name[draw(st.sampled_from(sorted(by_name)))]
        cpus = draw(st.sampled_from((1, 2, 4)))
        if cpu_free[node.name] < cpus:
            continue
        shared = [d for d in node.devices if d.shared]
        if shared and draw(st.booleans()):
            device = draw(st.sampled_from(shared))
            memory = draw(st.sampled_from((10, 20, 40))) * GIB
            compute = draw(st.sampled_from((0, 30, 50)))
            use = shared_use[device.id]
            if use[0] + memory > device.memory_bytes or use[1] + compute > 100:
                continue
            use[0] += memory
            use[1] += compute
            request = Request(gpu_memory_bytes=memory, gpu_compute_percent=compute, cpus=cpus)
            shares = (DeviceShare(device.id, memory, compute),)
        else:
            free = whole_free[node.name]
            gpus = draw(st.integers(0, min(4, len(free))))
            shares = tuple(DeviceShare(d.id) for d in free[:gpus])
            whole_free[node.name] = free[gpus:]
            request = Request(gpus=gpus, cpus=cpus)
        cpu_free[node.name] -= cpus
        running.append(
            Workload(
                id=1000 + i,
                project=draw(st.sampled_from(PROJECTS)),
                user=draw(st.sampled_from(("u1", "u2"))),
                request=request,
                priority=draw(st.sampled_from(list(Priority))),
                preemptible=draw(st.integers(0, 3)) > 0,
                max_duration=draw(st.sampled_from((None, 50.0, 500.0))),
                started_at=float(draw(st.integers(0, 90))),
                placement=Placement(node.name, shares),
            )
        )

    pending = []
    for i in range(draw(st.integers(0, 12))):
        if draw(st.integers(0, 4)) == 0:
            request = Request(
                gpu_memory_bytes=draw(st.sampled_from((0, 10, 30, 60))) * GIB,
                gpu_compute_percent=draw(st.sampled_from((10, 40, 80))),
                cpus=draw(st.sampled_from((0.5, 1, 8))),
            )
        else:
            request = Request(
                gpus=draw(st.integers(0, 5)),
                gpu_model=draw(st.sampled_from((None, None, "A100", "H100"))),
                cpus=draw(st.sampled_from((0.5, 1, 8, 32))),
                memory_bytes=draw(st.sampled_from((0, 8, 200))) * GIB,
            )
        pending.append(
            Workload(
                id=i + 1,
                project=draw(st.sampled_from(PROJECTS)),
                user=draw(st.sampled_from(("u1", "u2"))),
                request=request,
                priority=draw(st.sampled_from(list(Priority))),
                submitted_at=float(draw(st.integers(0, 100))),
                preemptible=draw(st.integers(0, 3)) > 0,
                max_duration=draw(st.sampled_from((None, 20.0, 200.0))),
            )
        )
    quotas = {}
    for project in PROJECTS:
        if draw(st.booleans()):
            guaranteed = draw(st.integers(0, 4))
            quotas[project] = Quota(
                project,
                guaranteed_gpus=guaranteed,
                max_gpus=draw(st.one_of(st.none(), st.integers(guaranteed, 8))),
                max_gpus_per_user=draw(st.one_of(st.none(), st.integers(0, 4))),
                cpus=draw(st.one_of(st.none(), st.sampled_from((4.0, 16.0)))),
                memory_bytes=draw(st.one_of(st.none(), st.just(100 * GIB))),
            )
    usage = {p: draw(st.floats(0, 1)) for p in PROJECTS if draw(st.booleans())}
    return Snapshot(100.0, tuple(nodes), quotas, tuple(pending), tuple(running), usage)


def charge(workload: Workload, memory_of: dict[str, int], smallest: int | None) -> float:
    request = workload.request
    if not request.is_fraction:
        return request.gpus * request.nodes
    memory = smallest
    if workload.placement is not None:
        memory = memory_of[workload.placement.devices[0].device]
    if memory is None:
        return 1.0
    return min(1.0, max(request.gpu_memory_bytes / memory, request.gpu_compute_percent / 100))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots(), st.booleans())
def test_cycle_invariants(snapshot: Snapshot, place: bool) -> None:
    decisions = schedule(snapshot, places_work=not place)
    assert schedule(snapshot, places_work=not place) == decisions  # deterministic

    pending = {w.id: w for w in snapshot.pending}
    running = {w.id: w for w in snapshot.running}
    admitted = {a.workload: a.placement for a in decisions.admit}
    # Every pending workload: admitted, or waiting with a reason; never both.
    assert set(admitted) | set(decisions.pending) == set(pending)
    assert not set(admitted) & set(decisions.pending)
    positions = defaultdict(list)
    for workload_id, reason in decisions.pending.items():
        assert reason.code
        positions[pending[workload_id].project].append(reason.position)
    for values in positions.values():
        assert sorted(values) == list(range(1, len(values) + 1))

    # Preemption: only preemptible running work of no higher priority, once each, for a
    # beneficiary that waits for it.
    victims = Counter(p.victim for p in decisions.preempt)
    assert all(count == 1 for count in victims.values())
    for preemption in decisions.preempt:
        victim, beneficiary = running[preemption.victim], pending[preemption.beneficiary]
        assert victim.preemptible
        assert victim.priority <= beneficiary.priority
        if victim.project == beneficiary.project:
            assert victim.priority < beneficiary.priority
        assert decisions.pending[beneficiary.id].code == "preempting"

    devices = {d.id: d for n in snapshot.nodes for d in n.devices}
    nodes = {n.name: n for n in snapshot.nodes}
    memory_of = {d.id: d.memory_bytes for d in devices.values()}
    smallest = min((d.memory_bytes for d in devices.values() if d.shared), default=None)

    if place:
        whole_users: Counter = Counter()
        shared_use: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        cpus: Counter = Counter()
        memory: Counter = Counter()
        for workload in snapshot.running:
            placement = workload.placement
            cpus[placement.node] += workload.request.cpus
            memory[placement.node] += workload.request.memory_bytes
            for share in placement.devices:
                if share.whole:
                    whole_users[share.device] += 1
                else:
                    shared_use[share.device][0] += share.memory_bytes
                    shared_use[share.device][1] += share.compute_percent
        for workload_id, placement in admitted.items():
            request = pending[workload_id].request
            node = nodes[placement.node]
            assert node.schedulable
            cpus[node.name] += request.cpus
            memory[node.name] += request.memory_bytes
            if request.is_fraction:
                assert len(placement.devices) == 1
                share = placement.devices[0]
                device = devices[share.device]
                assert device.shared and device.schedulable and device.node == node.name
                assert model_matches(request.gpu_model, device.model, device.mig_profile)
                assert (share.memory_bytes, share.compute_percent) == (
                    request.gpu_memory_bytes,
                    request.gpu_compute_percent,
                )
                shared_use[share.device][0] += share.memory_bytes
                shared_use[share.device][1] += share.compute_percent
            else:
                assert len(placement.devices) == request.gpus  # the whole gang or nothing
                for share in placement.devices:
                    device = devices[share.device]
                    assert share.whole and not device.shared and device.schedulable
                    assert device.node == node.name
                    assert model_matches(request.gpu_model, device.model, device.mig_profile)
                    whole_users[share.device] += 1
        assert all(count == 1 for count in whole_users.values())
        for device_id, (used_memory, used_compute) in shared_use.items():
            assert used_memory <= devices[device_id].memory_bytes and used_compute <= 100
        for name, used in cpus.items():
            assert used <= nodes[name].cpus + 1e-9
        for name, used in memory.items():
            assert used <= nodes[name].memory_bytes
    else:
        assert all(placement is None for placement in admitted.values())
        usable = sum(
            1
            for n in snapshot.nodes
            if n.schedulable
            for d in n.devices
            if d.schedulable and not d.shared
        )
        busy = sum(
            1
            for w in snapshot.running
            for s in w.placement.devices
            if s.whole and devices[s.device].schedulable and nodes[w.placement.node].schedulable
        )
        granted = sum(pending[w].request.gpus for w in admitted)
        assert granted <= usable - busy

    # Project GPU limits: what runs after the victims leave, plus what was admitted, stays
    # within max_gpus and the per-user cap, when it was within them before the cycle.
    gone = set(victims)

    def totals(workloads: list[Workload]) -> tuple[Counter, Counter]:
        projects: Counter = Counter()
        users: Counter = Counter()
        for w in workloads:
            amount = charge(w, memory_of, smallest)
            projects[w.project] += amount
            users[w.project, w.user] += amount
        return projects, users

    before, before_users = totals(list(snapshot.running))
    after_workloads = [w for w in snapshot.running if w.id not in gone]
    for workload_id, placement in admitted.items():
        workload = pending[workload_id]
        if placement is not None:
            workload = Workload(
                workload.id, workload.project, workload.user, workload.request, placement=placement
            )
        after_workloads.append(workload)
    after, after_users = totals(after_workloads)
    for project, quota in snapshot.quotas.items():
        if quota.max_gpus is not None:
            limit = max(quota.max_gpus, quota.guaranteed_gpus)
            if before[project] <= limit:
                assert after[project] <= limit + 1e-6
        if quota.max_gpus_per_user is not None:
            for (user_project, user), used in after_users.items():
                if (
                    user_project == project
                    and before_users[project, user] <= quota.max_gpus_per_user
                ):
                    assert used <= quota.max_gpus_per_user + 1e-6
