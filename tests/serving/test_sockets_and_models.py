"""A replica on a Unix socket (an engine's socket_args on the local backend) and a model
version that a service serves."""

import json
import socket
import time

import openai
import pytest
import sqlalchemy

from tests.conftest import RunningServer, unique
from tests.data.test_repositories import commit, repo, upload
from tests.serving.helpers import (
    FAKE_ENGINE,
    api,
    deploy,
    make_key,
    make_project,
    serving_server,
    wait_ready,
)

SOCKET_ENGINE = {**FAKE_ENGINE, "socket_args": ["--uds", "{socket}"]}


@pytest.fixture(scope="module")
def server(launch_server, tmp_path_factory: pytest.TempPathFactory) -> RunningServer:
    base = tmp_path_factory.mktemp("sockets")
    running = serving_server(
        lambda env: launch_server(base, env), SUANLI_ENGINES=json.dumps({"sock": SOCKET_ENGINE})
    )
    yield running
    running.stop()


def _replica_row(server: RunningServer, service_id: int) -> tuple[int, str, int]:
    """Straight from the database (SQLite or PostgreSQL): the API never shows these."""
    engine = sqlalchemy.create_engine(server.database_url)
    with engine.connect() as db:
        row = db.execute(
            sqlalchemy.text(
                "select port, socket, id from jobs where deployment_id = :d and state = 'running'"
            ),
            {"d": service_id},
        ).one()
    engine.dispose()
    return tuple(row)


def test_a_replica_on_a_socket_is_reached_by_the_gateway_and_by_no_port(server) -> None:
    http = api(server)
    project = make_project(http)
    service = deploy(http, project, "chat", engine="sock")
    wait_ready(http, service["id"])
    port, path, _ = _replica_row(server, service["id"])
    assert path.endswith("/service.sock"), path
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass  # nothing listens on the port it was given: only the socket, in its own folder
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=make_key(http, project))
    answer = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert answer.usage.completion_tokens == 3


def test_a_model_version_a_service_serves_is_not_deleted_unless_forced(server) -> None:
    """Also while the service is scaled to zero: its next request would start a replica that
    reads the version."""
    http = api(server)
    project = make_project(http)
    name = repo(http, project, "models")
    upload(http, project, b'{"model_type": "llama"}')
    commit(http, f"models/{project}/{name}", {"config.json": b'{"model_type": "llama"}'})
    service_name = unique("svc")
    service = deploy(
        http, project, service_name, model=f"{name}@1", replicas="0..1", scaling={"idle_after": 1}
    )
    assert service["model"] == f"{project}/{name}@1"
    assert http.delete(f"models/{project}/{name}/versions/1").status_code == 409
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        detail = http.get(f"services/{service['id']}").json()
        if detail["replicas"] == 0 and not detail["running"] + detail["starting"]:
            break
        time.sleep(0.3)
    assert detail["replicas"] == 0, detail
    refused = http.delete(f"models/{project}/{name}/versions/1")
    assert refused.status_code == 409, refused.text
    assert service_name in refused.json()["detail"], refused.json()
    http.post(f"services/{service['id']}/stop")
    assert http.delete(f"models/{project}/{name}/versions/1").status_code == 204
