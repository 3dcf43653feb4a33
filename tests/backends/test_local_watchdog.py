"""The GPU memory watchdog: the pure decision, the NVML sampler, and the backend stopping a
fractional job that exceeds its share (NVML test double; real job processes)."""

import os
from pathlib import Path

from fakenvml import FakeGpu, FakeNvml
from localjobs import Jobs, make_backend

from suanli.backends.local.watchdog import DETAIL, ProcessSample, Share, offenders, sample
from suanli.scheduler.model import DeviceShare, Placement

MiB, GiB = 2**20, 2**30


def test_offenders_sums_a_jobs_processes_by_group_and_session() -> None:
    samples = [
        ProcessSample("GPU-a", pid=10, used_bytes=600 * MiB, pgid=10, sid=9),  # job A leader
        ProcessSample("GPU-a", pid=11, used_bytes=500 * MiB, pgid=11, sid=9),  # A, own group
        ProcessSample("GPU-a", pid=20, used_bytes=900 * MiB, pgid=20, sid=19),  # job B
        ProcessSample("GPU-a", pid=30, used_bytes=8 * GiB, pgid=30, sid=30),  # nobody's (MPS)
        ProcessSample("GPU-b", pid=12, used_bytes=4 * GiB, pgid=10, sid=9),  # A on another GPU
    ]
    shares = [
        Share("A", "GPU-a", GiB, frozenset({9, 10})),
        Share("B", "GPU-a", GiB, frozenset({19, 20})),
        Share("C", "GPU-a", 0, frozenset({30})),  # compute-only fraction: no memory share
    ]
    (found,) = offenders(samples, shares)
    assert (found.job, found.device, found.pids) == ("A", "GPU-a", (10, 11))
    assert (found.used_bytes, found.limit_bytes) == (1100 * MiB, GiB)
    assert found.detail == f"{DETAIL}: 1100 MiB used on GPU-a, share 1024 MiB"
    assert offenders(samples, shares, slack_bytes=100 * MiB) == []
    assert offenders([], shares) == []


def test_sample_attributes_processes_through_proc() -> None:
    me = os.getpid()
    nvml = FakeNvml(
        [
            FakeGpu("GPU-a", processes={me: 123, 2**22 + 12345: 5}),  # the second is gone
            FakeGpu("GPU-b", processes={me: 7}),
        ]
    )
    assert sample(nvml, ["GPU-a"]) == [
        ProcessSample("GPU-a", me, 123, os.getpgid(me), os.getsid(me))
    ]
    assert len(sample(nvml)) == 2


def test_the_backend_stops_a_job_over_its_gpu_memory_share(
    tmp_path: Path, cgroup_parent: str
) -> None:
    gpu = FakeGpu("GPU-real-0")
    backend = make_backend(
        tmp_path, cgroup_parent, nvml=FakeNvml([gpu]), watchdog_interval=0,
        gpu_memory_slack_bytes=0,
    )  # fmt: skip
    jobs = Jobs(tmp_path, backend)
    share = Placement("box", (DeviceShare("GPU-real-0", memory_bytes=GiB),))
    within = jobs.launch(jobs.spec(["sleep", "30"], placement=share))
    beyond = jobs.launch(jobs.spec(["sleep", "30"], placement=share))
    gpu.processes = {
        jobs.process(within)["pgid"]: GiB,  # exactly its share
        jobs.process(beyond)["pgid"]: GiB + MiB,
    }
    assert backend.poll(within).running
    status = jobs.wait(beyond)
    assert status.exit.reason == "oom"
    assert status.exit.detail.startswith("GPU memory share exceeded: 1025 MiB used on GPU-real-0")
    assert backend.poll(within).running
    gpu.processes = {}
    backend.stop(within, reason="cancelled", grace_seconds=0)
    assert jobs.wait(within).exit.reason == "cancelled"
