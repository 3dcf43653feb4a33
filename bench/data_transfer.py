"""Datasets and models: transfers, verification and storage, each against a standard tool
run side by side in the same run.

1. Upload of one large file through tus (32 MiB PATCHes with httpx, as the console and the CLI
   send them; and the SDK's `datasets.push`, which hashes the file first) against `scp` of the
   same file to the same disk, through an sshd of the bench's own on a loopback port.
2. Import over http (`suanli.data.sources.fetch`) against `curl -o`, from one local
   `python3 -m http.server`.
3. sha256 verification: the server's verify of a version holding the file (over the API, end
   to end) and `BlobStore.verify` against `sha256sum` of the same blob (and, for reference,
   `openssl dgst -sha256`, whose library hashlib uses).
4. Storage of ten versions that differ in one small file: bytes under data/blobs (du) against
   one copy of a version.
5. The server's RSS, sampled every 0.2 s, during each tus upload.

Rounds alternate which side goes first (A/B, B/A, ...); the table gives each side's median and
the ratio of the medians (ours / peer for speeds). Everything is written under /var/tmp, the
disk the server's data directory is on, and removed at the end.

    python3 bench/data_transfer.py --size 2G --dataset-size 1G --rounds 3
"""

import argparse
import base64
import contextlib
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
from submit_latency import PASSWORD, local_server

from suanli.client import Client
from suanli.data.sources import fetch
from suanli.data.store import BlobStore
from suanli.schemas.imports import ImportSource

MIB = 1 << 20
CHUNK = 32 * MIB  # the PATCH size of the CLI (the console's: 64 MiB)
SAMPLE_EVERY = 0.2
MARGIN = 1 << 30  # free space left untouched on the disk
TUS = {"Tus-Resumable": "1.0.0"}
SSHD = "/usr/sbin/sshd"

Row = tuple[str, str, list[float], list[float], str, str]  # what, peer, ours, theirs, unit, goal
Memory = tuple[str, int, int, int]  # what, RSS at its start, peak, end


def parse_size(text: str) -> int:
    """'2G', '512M', '100k' or a number of bytes (binary units)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def make_file(path: Path, size: int) -> str:
    """`size` random bytes (incompressible); their sha256, computed as they are written."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(CHUNK, left))
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def timed(action: Callable[[], object]) -> float:
    """Seconds `action` took; dirty pages of the step before are flushed first (untimed), so
    that no side pays for the other's writeback."""
    os.sync()
    begin = time.perf_counter()
    action()
    return time.perf_counter() - begin


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# -- the server's side: tus, versions, verify ------------------------------------------------


def meta(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def tus_upload(http: httpx.Client, project: str, path: Path) -> str:
    """The file over tus in 32 MiB PATCHes read from disk; the sha256 the server answers."""
    size = path.stat().st_size
    created = http.post(
        "uploads",
        headers={**TUS, "Upload-Length": str(size), "Upload-Metadata": meta(project=project)},
    )
    created.raise_for_status()
    location = created.headers["Location"]
    offset = 0
    answer = None
    with path.open("rb") as source:
        while offset < size or answer is None:
            answer = http.patch(
                location,
                content=source.read(CHUNK),
                headers={
                    **TUS,
                    "Upload-Offset": str(offset),
                    "Content-Type": "application/offset+octet-stream",
                },
            )
            answer.raise_for_status()
            offset = int(answer.headers["Upload-Offset"])
    return answer.headers["Upload-Sha256"]


def commit(http: httpx.Client, where: str, files: dict[str, tuple[str, int]]) -> int:
    entries = [{"path": p, "sha256": s, "size": n} for p, (s, n) in files.items()]
    answer = http.post(f"{where}/versions", json={"files": entries})
    answer.raise_for_status()
    return int(answer.json()["number"])


def new_repository(http: httpx.Client, project: str, name: str) -> str:
    http.post("datasets", json={"project": project, "name": name}).raise_for_status()
    return f"datasets/{project}/{name}"


@contextlib.contextmanager
def api_session(url: str, project: str) -> Iterator[httpx.Client]:
    """A raw httpx client with the administrator's token, and `project` created."""
    with Client(url) as client:
        client.login("admin", PASSWORD)
        client.projects.create(project)
        token = client.token
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url + "/api/v1/", headers=headers, timeout=600) as http:
        yield http


def data_dir_of(server: subprocess.Popen[str]) -> Path:
    """The server's data directory, from its command line."""
    args = list(server.args)  # type: ignore[arg-type]
    return Path(args[args.index("--data-dir") + 1])


class RssSampler:
    """The server process's RSS every 0.2 s while the block runs: start, peak, end."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.samples: list[int] = []
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self.samples.append(self.process.memory_info().rss)

    def summary(self) -> tuple[int, int, int]:
        return self.samples[0], max(self.samples), self.samples[-1]

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        self.samples = [self.process.memory_info().rss]
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join()
            self._stop.clear()
            self.samples.append(self.process.memory_info().rss)


# -- the peers: sshd + scp, http.server + curl, sha256sum -------------------------------------


def ensure_sshd() -> bool:
    """OpenSSH's server, installed from Debian's package when missing (the bench only runs
    its own instance of it; the system's configuration is not touched)."""
    if Path(SSHD).exists():
        return True
    print("openssh-server is not installed: apt-get install -y openssh-server", flush=True)
    installed = subprocess.run(
        ["apt-get", "install", "-y", "openssh-server"], capture_output=True, text=True
    )
    if installed.returncode != 0 or not Path(SSHD).exists():
        print(f"could not install openssh-server: {installed.stderr[-500:]}", flush=True)
        return False
    return True


@contextlib.contextmanager
def own_sshd(folder: Path) -> Iterator[list[str]]:
    """An sshd on a free loopback port with its own host key, an authorized key of the
    bench's and a configuration file in `folder`; the scp options that reach it."""
    folder.mkdir(mode=0o700)
    for name in ("host", "user"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True
        )
    shutil.copy(folder / "user.pub", folder / "authorized_keys")
    port = free_port()
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPidFile {folder / 'sshd.pid'}\n"
        "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        "Subsystem sftp internal-sftp\n"
    )
    # sshd's privilege separation folder; the package's service makes it at boot.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = (folder / "sshd.log").open("w")
    sshd = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(folder / "sshd_config")], stdout=log, stderr=log
    )
    try:
        wait_for_port(port)
        yield [
            "-q",
            "-P",
            str(port),
            "-i",
            str(folder / "user"),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
        ]
    finally:
        sshd.terminate()
        sshd.wait(timeout=10)
        log.close()


def scp(options: list[str], source: Path, target: Path) -> None:
    user = os.environ.get("USER") or psutil.Process().username()
    subprocess.run(["scp", *options, str(source), f"{user}@127.0.0.1:{target}"], check=True)


@contextlib.contextmanager
def http_server(folder: Path) -> Iterator[str]:
    """`python3 -m http.server` serving `folder` on a free loopback port: its URL."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def import_http(url: str, into: Path) -> None:
    """`suanli.data.sources.fetch` of an http source, as an import job runs it."""
    fetch(
        ImportSource(kind="http", url=url),
        into,
        progress=lambda done, total: None,
        cancelled=lambda: False,
        limit_bytes=None,
        allow_private=True,
    )


def sha256sum(path: Path) -> str:
    done = subprocess.run(["sha256sum", str(path)], check=True, capture_output=True, text=True)
    return done.stdout.split()[0]


def openssl_sha256(path: Path) -> str:
    """OpenSSL's sha256 (the library hashlib uses, with the CPU's SHA extensions where there
    are): the fastest a plain tool hashes on this machine."""
    done = subprocess.run(
        ["openssl", "dgst", "-sha256", "-r", str(path)], check=True, capture_output=True, text=True
    )
    return done.stdout.split()[0]


def du_bytes(path: Path) -> int:
    """Bytes allocated on disk under `path` (hard links counted once)."""
    done = subprocess.run(["du", "-sB1", str(path)], check=True, capture_output=True, text=True)
    return int(done.stdout.split()[0])


# -- the measures ------------------------------------------------------------------------------


def alternate(rounds: int, first: Callable[[], None], second: Callable[[], None]) -> None:
    """Each round runs both; odd rounds start with the second, so drift hits both alike."""
    for number in range(rounds):
        for step in (first, second) if number % 2 == 0 else (second, first):
            step()


def uploads(
    args: argparse.Namespace,
    server: subprocess.Popen[str],
    http: httpx.Client,
    work: Path,
    source: Path,
    expected: str,
) -> tuple[list[Row], list[Memory]]:
    """Sections 1 and 5: tus and the SDK's push against scp, the server's RSS meanwhile."""
    size = source.stat().st_size
    sampler = RssSampler(server.pid)
    memory: list[Memory] = []
    tus: list[float] = []
    pushed: list[float] = []
    copied: list[float] = []
    folder = work / "push"  # what `push` sends: the file, hard-linked (no second copy)
    folder.mkdir()
    os.link(source, folder / source.name)
    token = http.headers["Authorization"].split()[1]
    sdk = Client(str(http.base_url).removesuffix("/api/v1/"), token, timeout=600)
    scp_options: list[str] | None = None
    stack = contextlib.ExitStack()
    stack.enter_context(sdk)
    if ensure_sshd():
        scp_options = stack.enter_context(own_sshd(work / "ssh"))

    def ours() -> None:
        got: list[str] = []
        with sampler.running():
            tus.append(size / timed(lambda: got.append(tus_upload(http, "bench", source))))
        assert got == [expected], f"the server answered {got}, expected {expected}"
        memory.append(("tus", *sampler.summary()))
        # A project of its own each round: one that holds the content already is sent nothing.
        project = f"push-{len(pushed)}"
        sdk.projects.create(project)
        sdk.datasets.create(project, "big")
        # A fresh state each round too: a remembered hash would spare the push its reading.
        state = work / f"push-state-{len(pushed)}.json"
        with sampler.running():
            pushed.append(
                size / timed(lambda: sdk.datasets.push(project, "big", folder, state_file=state))
            )
        memory.append(("SDK push", *sampler.summary()))

    def theirs() -> None:
        if scp_options is None:
            return
        target = work / "scp-copy"
        copied.append(size / timed(lambda: scp(scp_options, source, target)))
        assert target.stat().st_size == size
        remove(target)

    with stack:
        alternate(args.rounds, ours, theirs)
    remove(folder)
    return [
        ("upload, tus (httpx, 32 MiB PATCHes)", "scp", tus, copied, "MiB/s", "≥ 0.8"),
        (
            "upload, SDK `datasets.push` (hash + send + commit)",
            "scp",
            pushed,
            copied,
            "MiB/s",
            "≥ 0.8",
        ),
    ], memory


def imports(args: argparse.Namespace, work: Path, source: Path) -> Row:
    """Section 2: the import code's http download against curl, one http.server for both."""
    size = source.stat().st_size
    fetched: list[float] = []
    curled: list[float] = []

    with http_server(source.parent) as base:
        url = f"{base}/{source.name}"

        def ours() -> None:
            into = work / "import"
            fetched.append(size / timed(lambda: import_http(url, into)))
            assert sum(f.stat().st_size for f in into.rglob("*") if f.is_file()) == size
            remove(into)

        def theirs() -> None:
            target = work / "curl-copy"
            command = ["curl", "-sS", "--fail", "-o", str(target), url]
            curled.append(size / timed(lambda: subprocess.run(command, check=True)))
            assert target.stat().st_size == size
            remove(target)

        alternate(args.rounds, ours, theirs)
    return ("import, http (sources.fetch)", "curl -o", fetched, curled, "MiB/s", "")


def verifications(
    args: argparse.Namespace, server: subprocess.Popen[str], http: httpx.Client, sha: str
) -> list[Row]:
    """Section 3: the server's verify (API, end to end) and BlobStore.verify, each against
    sha256sum of the same blob."""
    where = new_repository(http, "bench", "big")
    blob = BlobStore(data_dir_of(server) / "data")
    number = commit(http, where, {"big.bin": (sha, blob.path_of(sha).stat().st_size)})
    size = blob.path_of(sha).stat().st_size
    api: list[float] = []
    direct: list[float] = []
    summed: list[float] = []
    openssl: list[float] = []

    def ours() -> None:
        answers: list[httpx.Response] = []
        api.append(
            size / timed(lambda: answers.append(http.post(f"{where}/versions/{number}/verify")))
        )
        assert answers[0].json()["ok"] is True, answers[0].text
        states: list[str] = []
        direct.append(size / timed(lambda: states.append(blob.verify(sha))))
        assert states == ["ok"]

    def theirs() -> None:
        found: list[str] = []
        summed.append(size / timed(lambda: found.append(sha256sum(blob.path_of(sha)))))
        openssl.append(size / timed(lambda: found.append(openssl_sha256(blob.path_of(sha)))))
        assert found == [sha, sha]

    alternate(args.rounds, ours, theirs)
    return [
        ("verify, API end to end", "sha256sum", api, summed, "MiB/s", "≥ 0.9"),
        ("verify, BlobStore.verify", "sha256sum", direct, summed, "MiB/s", "≥ 0.9"),
        ("verify, API end to end", "openssl dgst -sha256", api, openssl, "MiB/s", ""),
        ("verify, BlobStore.verify", "openssl dgst -sha256", direct, openssl, "MiB/s", ""),
    ]


def storage(args: argparse.Namespace, work: Path) -> dict[str, int]:
    """Section 4: ten versions that differ in one small file, on a fresh server: bytes on disk
    under data/blobs against one copy of a version."""
    folder = work / "dataset"
    folder.mkdir()
    big = args.dataset_size // args.dataset_files
    files = {
        f"part-{n:02}.bin": make_file(folder / f"part-{n:02}.bin", big)
        for n in range(args.dataset_files)
    }
    with local_server({}) as (server, url), api_session(url, "store") as http:
        where = new_repository(http, "store", "ten")
        manifest = {name: (sha, big) for name, sha in files.items()}
        for name in files:
            assert tus_upload(http, "store", folder / name) == files[name]
        one_copy = 0
        for number in range(1, args.versions + 1):
            note = folder / "CHANGES.txt"
            note.write_text(f"version {number}\n" * 100)
            sha = hashlib.sha256(note.read_bytes()).hexdigest()
            missing = http.post(
                "projects/store/contents/missing",
                json={"sha256": [s for s, _ in manifest.values()] + [sha]},
            ).json()
            assert missing == [sha], missing  # the big files are sent once, in version 1 only
            tus_upload(http, "store", note)
            version = {**manifest, "CHANGES.txt": (sha, note.stat().st_size)}
            commit(http, where, version)
            one_copy = sum(du_bytes(folder / name) for name in version)
        data = data_dir_of(server) / "data"
        result = {
            "one_copy": one_copy,
            "blobs": du_bytes(data / "blobs"),
            "trees": du_bytes(data / "trees"),
            "blobs_and_trees": int(
                subprocess.run(
                    ["du", "-csB1", str(data / "blobs"), str(data / "trees")],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.split()[-2]
            ),
        }
    remove(folder)
    return result


# -- the run -------------------------------------------------------------------------------


def fit(args: argparse.Namespace, where: Path) -> None:
    """Size down to the free space: the transfers hold ≈ 3 copies of the file at once (the
    source, its blob, and the upload's incoming file or scp's copy), the storage run 2."""
    free = shutil.disk_usage(where).free - MARGIN
    if 3 * args.size > free:
        size = max(free // 3 // MIB * MIB, MIB)
        print(
            f"NOTE: {free / 2**30:.1f} GiB free on {where} after a 1 GiB margin: the file is "
            f"{size / MIB:.0f} MiB instead of {args.size / MIB:.0f} MiB",
            flush=True,
        )
        args.size = size
    if 2 * args.dataset_size > free:
        size = max(free // 2 // MIB * MIB, MIB * args.dataset_files)
        print(
            f"NOTE: the dataset is {size / MIB:.0f} MiB instead of "
            f"{args.dataset_size / MIB:.0f} MiB (free space)",
            flush=True,
        )
        args.dataset_size = size


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(rows: list[Row], memory: list[Memory], stored: dict[str, int]) -> None:
    print(
        "| measure | peer | ours (median) | peer (median) | ratio ours/peer | goal "
        "| ours, each round | peer, each round |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for what, peer, ours, theirs, unit, goal in rows:
        ratio = median(ours) / median(theirs) if theirs else float("nan")
        each = ", ".join(f"{v / MIB:.0f}" for v in ours)
        peers = ", ".join(f"{v / MIB:.0f}" for v in theirs) or "–"
        print(
            f"| {what} | {peer} | {median(ours) / MIB:.0f} {unit} | {median(theirs) / MIB:.0f} "
            f"{unit} | {ratio:.2f} | {goal or '–'} | {each} | {peers} |"
        )
    print()
    print("| server RSS during each upload | start MiB | peak MiB | end MiB | peak − start MiB |")
    print("|---|---|---|---|---|")
    for number, (what, start, peak, end) in enumerate(memory):
        print(
            f"| {what}, round {number // 2 + 1} | {start / MIB:.1f} | {peak / MIB:.1f} "
            f"| {end / MIB:.1f} | {(peak - start) / MIB:.1f} |"
        )
    print()
    one = stored["one_copy"]
    print("| storage, ten versions | bytes on disk | × one copy |")
    print("|---|---|---|")
    for label, key in (
        ("one copy of a version (du of its files)", "one_copy"),
        ("data/blobs (du)", "blobs"),
        ("data/trees (du, hard links)", "trees"),
        ("data/blobs + data/trees (one du)", "blobs_and_trees"),
    ):
        print(f"| {label} | {stored[key]:,} | {stored[key] / one:.3f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("256M"),
                        help="the large file (binary units: 2G = 2 GiB)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="rounds per measure")
    parser.add_argument("--dataset-size", type=parse_size, default=parse_size("128M"),
                        help="the storage measure's big files, together")  # fmt: skip
    parser.add_argument("--dataset-files", type=int, default=9, help="its big files")
    parser.add_argument("--versions", type=int, default=10, help="versions of the dataset")
    args = parser.parse_args()
    base = Path("/var/tmp")  # noqa: S108 - the disk local_server puts the server's data directory on
    fit(args, base)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=base, prefix="suanli-bench-data-") as folder:
        work = Path(folder)
        work.chmod(0o755)
        source = work / "served" / "big.bin"
        source.parent.mkdir()
        expected = make_file(source, args.size)
        with local_server({}) as (server, url), api_session(url, "bench") as http:
            rows, memory = uploads(args, server, http, work, source, expected)
            rows.append(imports(args, work, source))
            rows += verifications(args, server, http, expected)
        remove(source)
        stored = storage(args, work)
    print(
        f"\nfile {args.size / MIB:.0f} MiB, {args.rounds} rounds, dataset "
        f"{args.dataset_size / MIB:.0f} MiB in {args.dataset_files} files + 1 small, "
        f"{args.versions} versions, {os.cpu_count()} CPUs, {time.monotonic() - started:.0f} s"
    )
    report(rows, memory, stored)
    return 0


if __name__ == "__main__":
    sys.exit(main())
