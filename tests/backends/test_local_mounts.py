"""Read-only mounts of the local backend, with real processes: a job sees the source at the
target and cannot write there (as root or as the files' owner), the host never sees the
mount, the rest of the filesystem is the host's own, and what cannot be mounted is refused
in words (exit code 125) before the job runs."""

import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from localjobs import Jobs, make_backend

from suanli.backends.base import LaunchSpec, Mount
from suanli.backends.slurm.backend import SlurmBackend
from suanli.backends.slurm.client import SlurmError
from suanli.config import Settings

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root")

# Each attempt prints its outcome: the shell's own error says which error the kernel gave.
WRITES = (
    'for what in "echo changed > {t}/data.txt" "touch {t}/new" "mkdir {t}/dir" "rm {t}/data.txt"; '
    'do sh -c "$what" 2>&1 || echo "refused: $what"; done'
)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder every account can reach (pytest's own is root's alone): source and target."""
    folder = Path(tempfile.mkdtemp(prefix="suanli-mounts-", dir="/tmp"))
    folder.chmod(0o755)
    source = folder / "dataset"
    source.mkdir(mode=0o755)
    (source / "data.txt").write_text("the dataset\n")
    (source / "data.txt").chmod(0o644)
    yield folder
    shutil.rmtree(folder)


def _mounted(jobs: Jobs, shared: Path, argv: list[str], **kwargs) -> LaunchSpec:
    mount = Mount(shared / "dataset", shared / "mnt" / "data")
    return jobs.spec(argv, mounts=(mount,), workdir=Path("/"), **kwargs)


def _mountinfo(pid: int | str) -> list[tuple[str, ...]]:
    """Each mount as (root, mount point, options, type, source, super options): all but its
    id and its propagation, which a private namespace of its own changes."""
    found = []
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        before, after = line.split(" - ", 1)
        fields = before.split()
        found.append((fields[3], fields[4], fields[5], *after.split()))
    return sorted(found)


def test_only_a_server_that_runs_as_root_can_mount(tmp_path: Path, cgroup_parent: str) -> None:
    assert make_backend(tmp_path, cgroup_parent).capabilities.mounts is True
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "geteuid", lambda: 1000)
        unprivileged = make_backend(tmp_path, cgroup_parent)
    assert unprivileged.capabilities.mounts is False
    jobs = Jobs(tmp_path, unprivileged)
    spec = jobs.spec(["true"], mounts=(Mount(tmp_path, tmp_path / "mnt"),))
    status = jobs.run(spec)
    assert (status.exit.reason, status.exit.exit_code) == ("exit_code", 125)
    assert status.exit.detail == "this server cannot mount paths into jobs: it does not run as root"
    assert "does not run as root" in jobs.log(spec)
    assert not (tmp_path / "mnt").exists()


def test_a_job_reads_the_source_at_the_target_made_for_it(jobs: Jobs, shared: Path) -> None:
    spec = _mounted(jobs, shared, ["cat", str(shared / "mnt" / "data" / "data.txt")])
    status = jobs.run(spec)
    assert status.exit.exit_code == 0, jobs.log(spec)
    assert jobs.log(spec) == "the dataset\n"
    made = shared / "mnt" / "data"
    assert stat.S_IMODE(made.stat().st_mode) == 0o755
    assert stat.S_IMODE(made.parent.stat().st_mode) == 0o755
    assert os.listdir(made) == []  # on the host: only the empty mount point


def test_root_cannot_write_under_the_mount(jobs: Jobs, shared: Path) -> None:
    target = shared / "mnt" / "data"
    spec = _mounted(jobs, shared, ["sh", "-c", WRITES.format(t=target)])
    assert spec.run_as is None and os.geteuid() == 0  # the job runs as root
    assert jobs.run(spec).exit.exit_code == 0, jobs.log(spec)
    log = jobs.log(spec)
    assert log.count("refused:") == 4 and log.count("Read-only file system") == 4, log
    assert sorted(os.listdir(shared / "dataset")) == ["data.txt"]
    assert (shared / "dataset" / "data.txt").read_text() == "the dataset\n"


def test_another_account_reads_but_cannot_write_even_its_own_files(
    jobs: Jobs, shared: Path, unix_user: str
) -> None:
    account = pwd.getpwnam(unix_user)
    for path in (shared / "dataset", shared / "dataset" / "data.txt"):
        os.chown(path, account.pw_uid, account.pw_gid)
    target = shared / "mnt" / "data"
    script = f"id -un; cat {target}/data.txt; " + WRITES.format(t=target)
    spec = _mounted(jobs, shared, ["sh", "-c", script], run_as=unix_user)
    assert jobs.run(spec).exit.exit_code == 0, jobs.log(spec)
    log = jobs.log(spec)
    assert log.startswith(f"{unix_user}\nthe dataset\n"), log
    # Its own files: the permissions would let it; the read-only mount does not.
    assert log.count("refused:") == 4 and log.count("Read-only file system") == 4, log
    assert "Permission denied" not in log
    assert (shared / "dataset" / "data.txt").read_text() == "the dataset\n"


def test_the_host_never_sees_the_mount(jobs: Jobs, shared: Path) -> None:
    target = shared / "mnt" / "data"
    spec = _mounted(jobs, shared, ["sh", "-c", f"cat {target}/data.txt; exec sleep 30"])
    handle = jobs.launch(spec)
    jobs.wait_for_log(spec, "the dataset")
    pid = jobs.process(handle)["pgid"]
    assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    (in_job,) = [m for m in _mountinfo(pid) if m[1] == str(target)]
    assert in_job[0] == str(shared / "dataset")
    assert {"ro", "nosuid", "nodev"} <= set(in_job[2].split(","))
    # Meanwhile, on the host: no such mount, an empty folder.
    assert all(m[1] != str(target) for m in _mountinfo("self"))
    assert os.listdir(target) == []
    jobs.backend.stop(handle, reason="cancelled", grace_seconds=1)
    assert jobs.wait(handle).exit.reason == "cancelled"
    assert all(m[1] != str(target) for m in _mountinfo("self"))
    assert os.listdir(target) == []


def test_the_rest_of_the_filesystem_is_the_hosts(jobs: Jobs, shared: Path) -> None:
    """The job's mounts are the host's plus its own, and what it writes elsewhere lands on
    the host."""
    target = shared / "mnt" / "data"
    script = f"echo written > {shared}/out.txt; echo ready; exec sleep 30"
    spec = _mounted(jobs, shared, ["sh", "-c", script])
    handle = jobs.launch(spec)
    jobs.wait_for_log(spec, "ready")
    pid = jobs.process(handle)["pgid"]
    assert (shared / "out.txt").read_text() == "written\n"
    in_job = _mountinfo(pid)
    host = _mountinfo("self")
    assert [m for m in in_job if m[1] != str(target)] == host
    jobs.backend.stop(handle, reason="cancelled", grace_seconds=0)
    jobs.wait(handle)


def test_a_job_without_mounts_stays_in_the_hosts_namespace(jobs: Jobs) -> None:
    spec = jobs.spec(["sh", "-c", "readlink /proc/self/ns/mnt"])
    assert jobs.run(spec).exit.exit_code == 0
    assert jobs.log(spec).strip() == os.readlink("/proc/self/ns/mnt")


def test_a_file_is_mounted_on_a_file(jobs: Jobs, shared: Path) -> None:
    source, target = shared / "dataset" / "data.txt", shared / "mnt" / "model.bin"
    script = f"cat {target}; echo changed > {target} || echo refused"
    spec = jobs.spec(["sh", "-c", script], mounts=(Mount(source, target),), workdir=Path("/"))
    assert jobs.run(spec).exit.exit_code == 0
    log = jobs.log(spec)
    assert log.startswith("the dataset\n") and "Read-only file system" in log and "refused" in log
    assert target.read_text() == ""  # the host's: the empty file made to mount on


@pytest.mark.parametrize(
    ("source", "target", "detail"),
    [
        ("{s}/missing", "{s}/mnt/data", "the mount source {s}/missing does not exist"),
        ("dataset", "{s}/mnt/data", "the mount source 'dataset' is not an absolute path"),
        ("{s}/dataset", "mnt/data", "the mount target 'mnt/data' is not an absolute path"),
        ("{s}/dataset", "{s}/link/x", "the mount target {t} goes through a symbolic link (link)"),
        ("{s}/dataset", "{s}/link", "the mount target {t} goes through a symbolic link (link)"),
        ("{s}/dataset", "{s}/mnt/../etc", "the mount target '{t}' must not contain '..'"),
        ("{s}/dataset", "/", "a mount cannot cover the root directory /"),
    ],
)  # fmt: skip
def test_what_cannot_be_mounted_is_refused_in_words(
    jobs: Jobs, shared: Path, source: str, target: str, detail: str
) -> None:
    elsewhere = shared / "elsewhere"
    elsewhere.mkdir()
    (shared / "link").symlink_to(elsewhere)  # e.g. a link a user left along the target
    mount = Mount(Path(source.format(s=shared)), Path(target.format(s=shared)))
    spec = jobs.spec(["touch", str(shared / "ran")], mounts=(mount,), workdir=Path("/"))
    status = jobs.run(spec)
    assert (status.exit.reason, status.exit.exit_code) == ("exit_code", 125)
    assert status.exit.detail == detail.format(s=shared, t=mount.target)
    assert f"the job did not start: {status.exit.detail}" in jobs.log(spec)
    assert not (shared / "ran").exists()
    assert os.listdir(elsewhere) == [] and not (shared / "mnt").exists()
    assert not any(m[1].startswith(str(shared)) for m in _mountinfo("self"))


def test_slurm_refuses_a_job_with_mounts_in_words(jobs: Jobs, tmp_path: Path) -> None:
    class NoSubmit:
        def submit(self, *args: object) -> str:
            raise AssertionError("a job with mounts reached Slurm")

    backend = SlurmBackend(Settings(data_dir=tmp_path / "data"), client=NoSubmit())  # type: ignore[arg-type]
    assert backend.capabilities.mounts is False
    spec = jobs.spec(["true"], run_as="alice", mounts=(Mount(tmp_path, tmp_path / "mnt"),))
    with pytest.raises(SlurmError, match=r"read-only mounts .* are not available on Slurm"):
        backend.launch(spec)
