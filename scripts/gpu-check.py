"""What only a real NVIDIA GPU can show about workload isolation, in one run (as root).

Fractional jobs now run as their users' own Unix accounts (docs/admin-guide.md, "Security
model"): the local backend starts one MPS control daemon per shared GPU as root, and CUDA's
MPS starts an MPS server as the first client's user. This runs, through the real
LocalBackend, NVML and MPS:

1. two fractions of account A side by side on one GPU (one MPS server, A's), each within its
   memory share, and one asking for more than its share, refused by MPS;
2. then a fraction of account B on the same GPU once A's have ended (the daemon serves the
   next user), B's uid and the GPU's name printed by the job itself;
3. that a job of account B can read neither the data directory nor A's job folder.

    python3 scripts/gpu-check.py OUT_DIR      # prints a report, also to OUT_DIR/gpu-check.txt

Needs torch in the machine's python3 and nvidia-cuda-mps-control; creates two accounts
(removed at the end).
"""

import os
import pwd
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from suanli.backends.base import LaunchSpec, Limits
from suanli.backends.local import LocalBackend
from suanli.config import Settings
from suanli.scheduler.model import DeviceShare, Placement

GIB = 2**30
TORCH_JOB = """
import os, sys, torch
want = int(sys.argv[1])
name = torch.cuda.get_device_name(0)
print(f"uid={os.getuid()} gpu={name} visible={os.environ.get('CUDA_VISIBLE_DEVICES')}", flush=True)
try:
    block = torch.empty(want * 2**30, dtype=torch.uint8, device="cuda")
    block.fill_(1)
    torch.cuda.synchronize()
    print(f"allocated {want} GiB", flush=True)
except Exception as error:
    print(f"refused {want} GiB: {type(error).__name__}: {str(error).splitlines()[0]}", flush=True)
import time; time.sleep(float(sys.argv[2]))
"""


def account(prefix: str) -> str:
    name = f"{prefix}{secrets.token_hex(2)}"
    command = ["useradd", "--no-create-home", "--shell", "/bin/sh", name]
    subprocess.run(command, check=True)  # noqa: S603 - our own argument vector
    return name


def main(out: Path) -> int:
    report: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        report.append(line)

    root = Path(tempfile.mkdtemp(prefix="suanli-gpu-", dir="/tmp"))
    root.chmod(0o755)
    work = root / "work"
    settings = Settings(data_dir=root / "data", work_dir=work, workload_identity="own")
    (root / "data").mkdir(mode=0o700)
    work.mkdir(mode=0o711)
    script = work / "job.py"
    script.write_text(TORCH_JOB)
    script.chmod(0o644)
    users = [account("gpua"), account("gpub")]
    backend = LocalBackend(settings, timeout_grace_seconds=2)
    try:
        host = backend.inventory()[0]
        gpu = host.gpus[0]
        size = gpu.memory_bytes / GIB
        say(f"GPU {gpu.uuid} {gpu.model} {size:.0f} GiB (simulated: {gpu.simulated})")
        say(f"MPS control: {backend.mps.binary()}")
        python = sys.executable

        def fraction(job_id: int, user: str, want: int, hold: float) -> LaunchSpec:
            folder = work / str(job_id)
            folder.mkdir(mode=0o700)
            entry = pwd.getpwnam(user)
            os.chown(folder, entry.pw_uid, entry.pw_gid)
            return LaunchSpec(
                job_id=job_id,
                argv=(python, str(script), str(want), str(hold)),
                workdir=folder,
                env={},
                placement=Placement(host.name, (DeviceShare(gpu.uuid, 20 * GIB, 40),)),
                limits=Limits(),
                log_path=folder / "output.log",
                state_dir=root / "data" / "jobs" / str(job_id),
                run_as=user,
            )

        def wait(handles: list, timeout: float = 180) -> None:
            deadline = time.monotonic() + timeout
            while any(backend.poll(h).running for h in handles):
                if time.monotonic() > deadline:
                    raise TimeoutError("jobs still running")
                time.sleep(0.5)

        def show(spec: LaunchSpec, handle: dict) -> None:
            status = backend.poll(handle)
            say(
                f"job {spec.job_id} as {spec.run_as}: exit {status.exit} warnings {status.warnings}"
            )
            for line in Path(spec.log_path).read_text().splitlines():
                say(f"    {line}")

        a1, a2, a3 = (
            fraction(1, users[0], 10, 8),
            fraction(2, users[0], 10, 8),
            fraction(3, users[0], 30, 0),
        )
        started = time.monotonic()
        handles = [backend.launch(s) for s in (a1, a2, a3)]
        wait(handles)
        say(
            f"three fractions of {users[0]} ended after {time.monotonic() - started:.1f} s "
            "(side by side: about the 8 s each holds)"
        )
        for spec, handle in zip((a1, a2, a3), handles, strict=True):
            show(spec, handle)
        b1 = fraction(4, users[1], 10, 0)
        b_handle = backend.launch(b1)
        wait([b_handle])
        show(b1, b_handle)
        probe = work / "5"
        probe.mkdir(mode=0o700)
        os.chown(probe, pwd.getpwnam(users[1]).pw_uid, -1)
        attack = LaunchSpec(
            job_id=5,
            argv=("/bin/sh", "-c", f"ls {root / 'data'} || echo refused-data; "
                  f"cat {work / '1' / 'output.log'} || echo refused-other-log"),
            workdir=probe, env={}, placement=Placement(host.name), limits=Limits(),
            log_path=probe / "output.log", state_dir=root / "data" / "jobs" / "5", run_as=users[1],
        )  # fmt: skip
        attack_handle = backend.launch(attack)
        wait([attack_handle])
        show(attack, attack_handle)
    finally:
        for user in users:
            subprocess.run(["userdel", user], check=False)  # noqa: S603, S607
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu-check.txt").write_text("\n".join(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
