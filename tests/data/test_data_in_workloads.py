"""Datasets and models used by workloads on a real server: mounted read-only at the
documented paths, fixed at submit, an output committed back with its lineage, and what
another tenant's workload cannot name."""

import hashlib

import httpx
from waiting import wait_for

from suanli.client import Client
from tests.conftest import RunningServer
from tests.data.test_repositories import api, commit, project_of, repo, upload

SMALL = {"cpus": 0.1, "memory": "64Mi"}
SCRIPT = """
set -u
cat "$SUANLI_DATASETS/{name}/data/rows.jsonl" > seen.txt
ls models
if echo x > "$SUANLI_DATASETS/{name}/new.txt" 2>/dev/null; then echo WROTE; else echo REFUSED; fi
mkdir -p out/sub
cp "$SUANLI_DATASETS/{name}/data/rows.jsonl" out/sub/copy.jsonl
echo trained > out/weights.bin
"""


def finished(client: Client, job_id: int) -> str:
    state = client.jobs.get(job_id).state
    return state if state in ("succeeded", "failed", "cancelled") else ""


def test_job_reads_dataset_and_commits_output(server: RunningServer, admin: Client, make_user):
    alice = make_user("alice")
    project = project_of(admin, alice)
    http = api(server, alice.client)
    name = repo(http, project)
    rows = b'{"instruction": "hi", "output": "hello"}\n'
    upload(http, project, rows)
    commit(http, f"datasets/{project}/{name}", {"data/rows.jsonl": rows})
    job = alice.client.jobs.submit(
        {
            "project": project,
            "script": SCRIPT.format(name=name),
            "resources": SMALL,
            "datasets": [name],
        }
    )
    # A newer version after submit does not change what the job reads.
    upload(http, project, b"newer")
    commit(http, f"datasets/{project}/{name}", {"data/rows.jsonl": b"newer"})
    state = wait_for(lambda: finished(alice.client, job.id), 60, "the job to end")
    log = alice.client.jobs.logs(job.id).text
    assert state == "succeeded", log
    assert "REFUSED" in log and "WROTE" not in log
    out = repo(http, project, "models")
    made = http.post(
        f"models/{project}/{out}/commit",
        json={"job": job.id, "path": "out", "message": "from the job"},
    )
    assert made.status_code == 201, made.text
    version = made.json()
    assert version["source"] == "job" and version["job_id"] == job.id
    assert version["lineage"] == [f"{project}/{name}@1"]
    files = {f["path"]: f["sha256"] for f in version["files"]}
    assert files == {
        "sub/copy.jsonl": hashlib.sha256(rows).hexdigest(),
        "weights.bin": hashlib.sha256(b"trained\n").hexdigest(),
    }


def test_output_with_a_link_is_refused(server: RunningServer, admin: Client, make_user):
    bob = make_user("bob")
    project = project_of(admin, bob)
    http = api(server, bob.client)
    job = bob.client.jobs.submit(
        {
            "project": project,
            "script": "mkdir out && echo ok > out/a && ln -s /etc/shadow out/secret",
            "resources": SMALL,
        }
    )
    assert wait_for(lambda: finished(bob.client, job.id), 60) == "succeeded"
    target = repo(http, project, "models")
    refused = http.post(f"models/{project}/{target}/commit", json={"job": job.id, "path": "out"})
    assert refused.status_code == 422 and "secret" in refused.text
    assert http.get(f"models/{project}/{target}/versions").json() == []
    escape = http.post(f"models/{project}/{target}/commit", json={"job": job.id, "path": "../.."})
    assert escape.status_code == 422


def test_another_tenants_dataset_cannot_be_named(server: RunningServer, admin: Client, make_user):
    owner, other = make_user("carol"), make_user("dave")
    project, theirs = project_of(admin, owner), project_of(admin, other)
    http = api(server, owner.client)
    name = repo(http, project)
    upload(http, project, b"private")
    commit(http, f"datasets/{project}/{name}", {"p.txt": b"private"})
    refused = httpx.post(
        server.url + "/api/v1/jobs",
        headers={"Authorization": f"Bearer {other.client.token}"},
        json={
            "project": theirs,
            "command": ["true"],
            "resources": SMALL,
            "datasets": [f"{project}/{name}"],
        },
    )
    assert refused.status_code == 404
    assert refused.json()["field"] == "datasets.0" if "field" in refused.json() else True
    # Nor commit another's job output into their own repository.
    job = owner.client.jobs.submit(
        {"project": project, "script": "mkdir out; echo s > out/s", "resources": SMALL}
    )
    wait_for(lambda: finished(owner.client, job.id), 60)
    mine = api(server, other.client)
    target = repo(mine, theirs, "models")
    stolen = mine.post(f"models/{theirs}/{target}/commit", json={"job": job.id, "path": "out"})
    assert stolen.status_code == 404
