"""Datasets on the real Slurm cluster of scripts/slurm, which cannot mount: the version's files
are hard links to the stored blobs in the job's own folder on the shared work directory,
which the job (as its mapped Unix user) reads and cannot change, remove or add to; a link its
user plants there before a retry is never followed."""

import hashlib
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from slurmcluster import running_cluster
from test_slurm_backend import ALICE, _unix_user, ended, log_of, slurm_env

from tests.data.test_repositories import api, commit, repo, upload

pytestmark = pytest.mark.timeout(300)

ROWS = b'{"instruction": "hi", "output": "hello"}\n'
SCRIPT = """
set -u
rows="$SUANLI_DATASETS/{name}/data/rows.jsonl"
echo "user=$(id -un) read=$(cat "$rows") tree=$(stat -c %i "$SUANLI_DATASETS/{name}")"
try() {{ if "$@" 2>/dev/null; then echo "$1=ok"; else echo "$1=refused"; fi; }}
if [ ! -e retried ]; then  # the first attempt tries, then fails: the retry reads again
    touch retried
    try sh -c "echo x >> '$rows'"
    try rm -f "$rows"
    try chmod 666 "$rows"
    try touch "$SUANLI_DATASETS/{name}/new.txt"
    try mv "$SUANLI_DATASETS/{name}" "$SUANLI_DATASETS/moved"
    exit 3
fi
"""


@pytest.fixture(scope="module")
def suanli(launch_server) -> Iterator[Any]:
    """A Suanli server on its own cluster, its admin mapped to ALICE; its work directory (the
    nodes' shared one) and data directory on the same filesystem, as hard links need."""
    _unix_user(ALICE)
    with running_cluster() as cluster:
        base = Path(tempfile.mkdtemp(prefix="suanli-data-on-slurm-", dir="/tmp"))
        base.chmod(0o755)
        env = slurm_env(cluster, base, {"admin": ALICE})
        server = launch_server(base, env)
        try:
            admin = server.login()
            admin.projects.create("hpc")
            yield server, admin, base
        finally:
            server.stop()
            subprocess.run(["rm", "-rf", str(base)], check=False)


def dataset(server: Any, admin: Any) -> str:
    """A dataset of project hpc with one version: data/rows.jsonl."""
    http = api(server, admin)
    name = repo(http, "hpc")
    upload(http, "hpc", ROWS)
    commit(http, f"datasets/hpc/{name}", {"data/rows.jsonl": ROWS})
    return name


def blob(server: Any, content: bytes) -> Path:
    sha256 = hashlib.sha256(content).hexdigest()
    return server.data_dir / "data" / "blobs" / sha256[:2] / sha256[2:4] / sha256


def test_a_job_reads_its_dataset_and_cannot_change_it(suanli) -> None:
    server, admin, base = suanli
    name = dataset(server, admin)
    job_id = admin.jobs.submit(
        {"project": "hpc", "script": SCRIPT.format(name=name), "datasets": [name], "retries": 1}
    ).id
    job = ended(admin, job_id, timeout=120)
    log = log_of(admin, job_id)
    assert job.state == "succeeded" and job.attempts == 2, (job.exit, log)
    seen = re.findall(rf"user={ALICE} read=(.*) tree=(\d+)", log)
    assert len(seen) == 2 and seen[0] == seen[1], log  # the same files, kept for the retry
    assert seen[0][0] == ROWS.decode().strip()
    for refused in ("sh=refused", "rm=refused", "chmod=refused", "touch=refused", "mv=refused"):
        assert refused in log, log
    assert "=ok" not in log, log
    placed = base / "work" / str(job_id) / "datasets" / name / "data" / "rows.jsonl"
    assert placed.read_bytes() == ROWS
    stored = blob(server, ROWS)
    assert os.stat(placed).st_ino == os.stat(stored).st_ino
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == hashlib.sha256(ROWS).hexdigest()


def test_a_link_planted_before_a_retry_is_never_followed(suanli) -> None:
    server, admin, base = suanli
    name = dataset(server, admin)
    outside = base / "outside"
    outside.mkdir(mode=0o755)
    (outside / "keep").write_text("kept\n")
    script = f"mv datasets mine && ln -s {outside} datasets && exit 1\n"
    job_id = admin.jobs.submit(
        {"project": "hpc", "script": script, "datasets": [name], "retries": 1}
    ).id
    job = ended(admin, job_id, timeout=120)
    assert job.state == "failed" and job.attempts == 2, (job.exit, log_of(admin, job_id))
    assert job.exit is not None and job.exit.reason == "launch_error"
    folder = base / "work" / str(job_id)
    assert f"{folder}/datasets" in job.exit.detail and "symbolic link" in job.exit.detail
    assert os.listdir(outside) == ["keep"] and (outside / "keep").read_text() == "kept\n"
    assert os.readlink(folder / "datasets") == str(outside)
