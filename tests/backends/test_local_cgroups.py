"""Limits through cgroups: detection from the mount table, and the real limits on this host
(v1 memory, cpu and pids controllers at the time of writing), with the warnings said when a
limit cannot be applied."""

import os
from pathlib import Path

from localjobs import PY, Jobs, make_backend

from suanli.backends.base import Limits
from suanli.backends.local import cgroups

HYBRID = """\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup2 {unified} cgroup2 rw,relatime 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
"""


def test_detect_a_hybrid_host(tmp_path: Path) -> None:
    unified = tmp_path / "unified"  # systemd's empty v2 mount: no controllers
    unified.mkdir()
    (unified / "cgroup.controllers").write_text("\n")
    mounts = tmp_path / "mounts"
    mounts.write_text(HYBRID.format(unified=unified))
    found = cgroups.detect(mounts)
    assert found.where == {
        "memory": (1, "/sys/fs/cgroup/memory"),
        "cpu": (1, "/sys/fs/cgroup/cpu,cpuacct"),
        "pids": (1, "/sys/fs/cgroup/pids"),
    }
    assert found.missing == {} and found.versions == {1}


def test_detect_a_unified_host(tmp_path: Path) -> None:
    root = tmp_path / "cgroup v2"  # a space in the mount point, escaped in the table
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    mounts = tmp_path / "mounts"
    mounts.write_text(f"cgroup2 {str(root).replace(' ', chr(92) + '040')} cgroup2 rw 0 0\n")
    found = cgroups.detect(mounts)
    assert found.where == {c: (2, str(root)) for c in ("memory", "cpu", "pids")}
    assert found.versions == {2}
    assert cgroups.Hierarchies.from_json(found.to_json()) == found


def test_detect_nothing(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("proc /proc proc rw 0 0\n")
    found = cgroups.detect(mounts)
    assert found.where == {}
    assert found.missing["memory"] == "the host has no cgroup memory controller available"
    assert cgroups.detect(tmp_path / "missing").missing["cpu"].startswith("cannot read")


def test_what_this_host_offers() -> None:
    """Says, in the test log, what the detection found here (see the report in -rA)."""
    found = cgroups.detect()
    print("cgroups on this host:", found.describe())
    assert set(found.where) | set(found.missing) == {"memory", "cpu", "pids"}


def _can_limit(jobs: Jobs, controller: str) -> bool:
    return controller in jobs.backend.hierarchies.where and os.geteuid() == 0


def test_the_job_is_inside_its_cgroups_with_its_limits(jobs: Jobs) -> None:
    where = jobs.backend.hierarchies.where
    limits = Limits(cpus=1.5, memory_bytes=300 * 2**20, pids=64)
    spec = jobs.spec(["cat", "/proc/self/cgroup"], limits=limits)
    handle = jobs.launch(spec)
    status = jobs.wait(handle)
    assert status.exit.exit_code == 0
    if len(where) < 3 or os.geteuid() != 0:  # not here: this host offers all three to root
        assert len(status.warnings) == 3 - len(where) or os.geteuid() != 0
        assert all("not applied" in w for w in status.warnings)
        return
    assert status.warnings == ()
    process = jobs.process(handle)
    membership = {}
    for line in jobs.log(spec).splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            membership[controller or "unified"] = path
    (job_name,) = {Path(d).name for d, _, _ in process["cgroups"]}
    assert job_name.startswith(f"job-{spec.job_id}-")
    for controller, (version, mount) in where.items():
        key = controller if version == 1 else "unified"
        assert membership[key] == f"/{jobs.backend.cgroup_parent}/{job_name}"
        assert not (Path(mount) / jobs.backend.cgroup_parent / job_name).exists()  # removed
    assert len(process["cgroups"]) == len({m for _, m in where.values()})


def test_limit_files_are_written(jobs: Jobs) -> None:
    """Read the limits back from inside the running job."""
    where = jobs.backend.hierarchies.where
    handle = jobs.launch(jobs.spec(["sleep", "30"], limits=Limits(1.5, 300 * 2**20, 64)))
    if set(where) != {"memory", "cpu", "pids"} or os.geteuid() != 0:  # see the test above
        assert jobs.backend.poll(handle).warnings or os.geteuid() != 0
        return
    dirs = {cs[0]: (Path(d), v) for d, v, cs in jobs.process(handle)["cgroups"]}
    memory, version = dirs["memory"]
    if version == 1:
        assert (memory / "memory.limit_in_bytes").read_text().strip() == str(300 * 2**20)
        cpu = dirs["cpu"][0]
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "150000"
        assert (cpu / "cpu.cfs_period_us").read_text().strip() == "100000"
    else:
        assert (memory / "memory.max").read_text().strip() == str(300 * 2**20)
        assert (memory / "cpu.max").read_text().strip() == "150000 100000"
    assert (dirs["pids"][0] / "pids.max").read_text().strip() == "64"
    jobs.backend.stop(handle, reason="cancelled", grace_seconds=0)
    jobs.wait(handle)


ALLOCATE = [PY, "-c", "import time; b = b'x' * (512 * 2**20); time.sleep(1); print('survived')"]


def test_memory_limit_exceeded_is_oom(jobs: Jobs) -> None:
    spec = jobs.spec(ALLOCATE, limits=Limits(memory_bytes=64 * 2**20))
    status = jobs.run(spec)
    if _can_limit(jobs, "memory"):
        assert status.exit.reason == "oom", (status, jobs.log(spec))
        assert status.exit.signal == 9
        assert "memory limit of 64 MiB" in status.exit.detail
        assert status.warnings == ()
        assert "out of memory" in jobs.log(spec)
    else:
        # Not on this machine (it has a memory controller), but on one without: the job
        # runs unlimited and the status says why.
        assert status.exit.reason == "exit_code" and "survived" in jobs.log(spec)
        assert status.warnings and "memory limit (64 MiB) not applied" in status.warnings[0]


def test_oom_of_a_child_fails_the_whole_job_as_oom(jobs: Jobs) -> None:
    """A shell whose child is OOM-killed exits with 137: still reported as OOM."""
    script = f"'{PY}' -c \"b = b'x' * (512 * 2**20)\"; exit $?"
    status = jobs.run(jobs.spec(["sh", "-c", script], limits=Limits(memory_bytes=64 * 2**20)))
    if _can_limit(jobs, "memory"):
        assert status.exit.reason == "oom" and status.exit.exit_code == 137
    else:  # see above
        assert status.exit.reason == "exit_code" and status.warnings


def test_cpu_quota_applies(jobs: Jobs) -> None:
    burn = (
        "import time\n"
        "start = time.monotonic()\n"
        "while time.monotonic() - start < 1.0: pass\n"
        "print(time.process_time() / (time.monotonic() - start))"
    )
    spec = jobs.spec([PY, "-c", burn], limits=Limits(cpus=0.2))
    status = jobs.run(spec)
    assert status.exit.exit_code == 0
    share = float(jobs.log(spec).split()[-1])
    if _can_limit(jobs, "cpu"):
        assert share < 0.45, f"a 0.2-CPU job used {share:.2f} CPUs"
    else:  # not on this host, which has a cpu controller
        assert "CPU limit (0.2 CPUs) not applied" in status.warnings[0]


def test_pids_limit_applies(jobs: Jobs) -> None:
    fork = (
        "import os, subprocess\n"
        "made = failed = 0\n"
        "procs = []\n"
        "for _ in range(20):\n"
        "    try: procs.append(subprocess.Popen(['sleep', '2'])); made += 1\n"
        "    except OSError: failed += 1\n"
        "print(made, failed)\n"
        "for p in procs: p.kill()"
    )
    spec = jobs.spec([PY, "-c", fork], limits=Limits(pids=6))
    status = jobs.run(spec)
    assert status.exit.exit_code == 0
    made, failed = map(int, jobs.log(spec).split()[-2:])
    if _can_limit(jobs, "pids"):
        assert made <= 5 and failed >= 15
    else:  # not on this host, which has a pids controller
        assert made == 20 and "process limit (6 processes) not applied" in status.warnings[0]


def test_limits_that_cannot_apply_are_said_and_the_job_runs(tmp_path: Path) -> None:
    """No cgroup controller at all (a fake mount table): every limit asked is a warning."""
    mounts = tmp_path / "mounts"
    mounts.write_text("proc /proc proc rw 0 0\n")
    jobs = Jobs(tmp_path, make_backend(tmp_path, "suanli-unused", cgroup_mounts=mounts))
    spec = jobs.spec(["echo", "ran"], limits=Limits(cpus=2, memory_bytes=3 * 2**30, pids=100))
    handle = jobs.launch(spec)
    status = jobs.wait(handle)
    assert status.exit.exit_code == 0 and jobs.log(spec) == "ran\n"
    assert status.warnings == (
        "memory limit (3.0 GiB) not applied: the host has no cgroup memory controller available",
        "CPU limit (2 CPUs) not applied: the host has no cgroup cpu controller available",
        "process limit (100 processes) not applied: the host has no cgroup pids controller "
        "available",
    )
    assert jobs.backend.warnings(handle) == status.warnings
    # without limits asked, nothing to warn about
    assert jobs.run(jobs.spec(["true"])).warnings == ()


def test_a_cgroup_that_cannot_be_made_is_said(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("cgroup /proc/no-cgroup-here cgroup rw,memory 0 0\n")
    jobs = Jobs(tmp_path, make_backend(tmp_path, "suanli-unused", cgroup_mounts=mounts))
    status = jobs.run(jobs.spec(["true"], limits=Limits(memory_bytes=2**30)))
    assert status.exit.exit_code == 0
    (warning,) = status.warnings
    assert warning.startswith("memory limit (1.0 GiB) not applied: cannot create the cgroup")
    assert "/proc/no-cgroup-here/suanli-unused/job-" in warning


def test_warnings_are_known_when_launch_returns(jobs: Jobs, tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("")
    backend = make_backend(tmp_path, "suanli-unused", cgroup_mounts=mounts)
    handle = jobs.launch(jobs.spec(["sleep", "30"], limits=Limits(pids=10)), backend=backend)
    assert "process limit (10 processes) not applied" in backend.warnings(handle)[0]  # at once
    status = backend.poll(handle)
    assert status.running and "process limit (10 processes) not applied" in status.warnings[0]
    backend.stop(handle, reason="cancelled", grace_seconds=0)
    jobs.wait(handle, backend=backend)


def test_v2_files_on_a_stand_in_hierarchy(tmp_path: Path) -> None:
    """The unified hierarchy's file names and values (production Ubuntu hosts), checked on a
    directory tree standing in for /sys/fs/cgroup: this host has no v2 controllers."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    (root / "cgroup.subtree_control").write_text("cpu memory pids\n")  # root hands them on
    (root / "suanli").mkdir()
    (root / "suanli" / "cgroup.subtree_control").write_text("")  # the parent does not yet
    hierarchies = cgroups.Hierarchies({c: (2, str(root)) for c in ("memory", "cpu", "pids")})
    job = cgroups.JobCgroups(hierarchies, "suanli", "job-1-abc")
    limits = {"cpus": 0.5, "memory_bytes": 2**30, "pids": 32}
    (root / "suanli" / "job-1-abc").mkdir()
    for name in ("cgroup.subtree_control", "memory.swap.max", "memory.oom.group"):
        (root / "suanli" / "job-1-abc" / name).write_text("")
    assert job.create(limits) == []
    directory = root / "suanli" / "job-1-abc"
    assert list(job.dirs) == [directory]
    assert (root / "suanli" / "cgroup.subtree_control").read_text() == "+pids"  # last enabled
    assert (directory / "memory.max").read_text() == str(2**30)
    assert (directory / "memory.swap.max").read_text() == "0"
    assert (directory / "memory.oom.group").read_text() == "1"
    assert (directory / "cpu.max").read_text() == "50000 100000"
    assert (directory / "pids.max").read_text() == "32"
    (directory / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (directory / "memory.peak").write_text("1073741824\n")
    assert job.oom_kills() == 1 and job.memory_peak() == 2**30


def test_v1_oom_counters(tmp_path: Path) -> None:
    directory = tmp_path / "memory" / "suanli" / "job-1-abc"
    directory.mkdir(parents=True)
    job = cgroups.JobCgroups.existing(cgroups.Hierarchies(), [[str(directory), 1, ["memory"]]])
    (directory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert job.oom_kills() == 2
    # kernels before 4.13 have no oom_kill line: hitting the limit is the hint
    (directory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\n")
    (directory / "memory.failcnt").write_text("5\n")
    assert job.oom_kills() == 1
