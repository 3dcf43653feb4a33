"""The gateway's added time and CPU for one request at a time, alone: one fake-engine service,
the same body sent directly to its replica (port and token read from the server's database)
and through the gateway with a key, one request after another, alternating rounds.

    python3 bench/gateway_overhead.py [--requests 500] [--rounds 2]

See bench/README.md, "Model gateway"."""

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import sqlalchemy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import start_server
from tests.serving.helpers import (
    api,
    deploy,
    make_key,
    make_project,
    serving_server,
    wait_ready,
)

BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 64, "stream": False}


async def sequential(url: str, secret: str, model: str, requests: int) -> float:
    """The median time of `requests` requests sent one after another (ms)."""
    body = json.dumps({**BODY, "model": model}).encode()
    headers = {"authorization": f"Bearer {secret}", "content-type": "application/json"}
    times = []
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(requests):
            started = time.perf_counter()
            answer = await client.post(url + "/v1/chat/completions", headers=headers, content=body)
            answer.raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="gateway-overhead-"))
    server = serving_server(
        lambda env: start_server(base / "data", f"sqlite:///{base / 'suanli.db'}", env)
    )
    try:
        http = api(server)
        project = make_project(http)
        resources = {"cpus": 1.0, "memory": 2**30}
        service = deploy(http, project, "chat", args=["--tokens", "64"], resources=resources)
        wait_ready(http, service["id"])
        key = make_key(http, project)
        engine = sqlalchemy.create_engine(server.database_url)
        with engine.connect() as db:
            port, token = db.execute(
                sqlalchemy.text(
                    "select port, token from jobs where deployment_id = :d and state = 'running'"
                ),
                {"d": service["id"]},
            ).one()
        engine.dispose()
        process = psutil.Process(server.process.pid)
        print("| round | direct p50 ms | gateway p50 ms | added ms | server CPU ms/request |")
        print("|---|---|---|---|---|")
        for number in range(1, args.rounds + 1):
            direct = asyncio.run(
                sequential(f"http://127.0.0.1:{port}", token, "chat", args.requests)
            )
            before = sum(process.cpu_times()[:2])
            through = asyncio.run(sequential(server.url, key, "chat", args.requests))
            cpu = (sum(process.cpu_times()[:2]) - before) / args.requests * 1000
            print(
                f"| {number} | {direct:.2f} | {through:.2f} | {through - direct:+.2f} | {cpu:.2f} |"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
