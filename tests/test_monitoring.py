"""Monitoring end to end on a real server with simulated GPUs, collecting every second: a
simulated over-temperature fires a webhook alert (to a real receiver on loopback) and
resolves; Prometheus can scrape /metrics; series are queryable; a job's energy is counted."""

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from suanli.cli.main import main as cli_main
from suanli.client import ApiError, Client
from suanli.monitoring.model import METRICS

GPUS = json.dumps([{"count": 2, "model": "A100", "memory_bytes": 80 * 2**30}])


@pytest.fixture
def monitored(server_factory, webhook_receiver) -> Iterator[tuple]:
    server = server_factory({"SUANLI_SIMULATED_GPUS": GPUS, "SUANLI_METRICS_INTERVAL_SECONDS": "1"})
    admin = server.login()
    yield server, admin, webhook_receiver()
    admin.close()


def http_of(server, client: Client) -> httpx.Client:
    """Plain HTTP with the client's token, for the routes the SDK does not cover yet."""
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {client.token}"})


def wait(check: Callable[[], object], timeout: float = 30, step: float = 0.3) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(step)
    raise AssertionError("timed out")


def set_override(data_dir: Path, values: dict) -> None:
    path = data_dir / "simulated-gpu-telemetry.json"
    path.write_text(json.dumps(values))


def test_a_simulated_over_temperature_fires_a_webhook_and_resolves(monitored) -> None:
    server, admin, receiver = monitored
    http = http_of(server, admin)
    rules = {r["name"]: r for r in http.get("/api/v1/alerts/rules").json()}
    assert {"GPU temperature high", "GPU lost", "Job failed", "Data disk nearly full"} <= set(rules)
    hot = rules["GPU temperature high"]
    assert (hot["op"], hot["threshold"], hot["for_seconds"]) == (">", 85, 300)
    http.patch(f"/api/v1/alerts/rules/{hot['id']}", json={"for_seconds": 2}).raise_for_status()
    created = http.post(
        "/api/v1/alerts/channels", json={"name": "ops", "kind": "webhook", "url": receiver.url}
    )
    assert created.status_code == 201, created.text
    uuid = admin.nodes.list()[0].gpus[0].uuid
    set_override(server.data_dir, {uuid: {"gpu_temperature_celsius": 93}})
    firing = receiver.wait_for(lambda m: json.dumps(m).find("firing") >= 0)
    assert "93" in json.dumps(firing) and uuid in json.dumps(firing)
    events = http.get("/api/v1/alerts", params={"firing": "true"}).json()
    assert [e["rule"] for e in events] == ["GPU temperature high"]
    assert events[0]["labels"]["uuid"] == uuid and events[0]["state"] == "firing"
    set_override(server.data_dir, {})
    resolved = receiver.wait_for(lambda m: json.dumps(m).find("resolved") >= 0)
    assert uuid in json.dumps(resolved)
    history = http.get("/api/v1/alerts").json()
    assert history[0]["state"] == "resolved" and history[0]["resolved_at"]
    assert http.get("/api/v1/alerts", params={"firing": "true"}).json() == []


def test_prometheus_scrapes_metrics_with_a_token(monitored) -> None:
    server, admin, _ = monitored
    http = http_of(server, admin)
    assert httpx.get(f"{server.url}/metrics").status_code == 401

    def scraped() -> str:
        text = http.get("/metrics").text
        return text if "DCGM_FI_DEV_GPU_TEMP" in text and "node_cpu_percent" in text else ""

    page = str(wait(scraped))
    assert 'DCGM_FI_DEV_GPU_TEMP{Hostname="' in page and 'UUID="GPU-' in page
    assert "# TYPE DCGM_FI_DEV_POWER_USAGE gauge" in page
    assert "suanli_node_cpu_percent" in page and "suanli_node_memory_used_bytes" in page
    assert "suanli_scheduler_cycle_seconds_bucket" in page
    assert 'suanli_api_request_duration_seconds_count{method="GET"' in page


def test_series_are_queryable_and_a_jobs_energy_is_counted(monitored) -> None:
    server, admin, _ = monitored
    http = http_of(server, admin)
    admin.projects.create("lab")
    job = admin.jobs.submit({"project": "lab", "command": ["sleep", "4"], "resources": {"gpus": 1}})
    done = wait(lambda: (j := admin.jobs.get(job.id)).state == "succeeded" and j, timeout=40)
    assert done.energy_wh > 0  # simulated busy A100: ~400 W for ~4 s ≈ 0.4 Wh
    energy = admin.projects.energy("lab")
    assert energy.by_user == {"admin": pytest.approx(done.energy_wh, abs=1e-3)}
    assert energy.total_wh == pytest.approx(done.energy_wh, abs=1e-3)
    answer = http.get(
        "/api/v1/metrics/query",
        params={"metric": "gpu_temperature_celsius", "label": "gpu=0", "range": "5m"},
    ).json()
    assert answer["unit"] == "celsius" and len(answer["series"]) == 1
    assert answer["series"][0]["labels"]["gpu"] == "0" and answer["series"][0]["points"]
    power = http.get(
        "/api/v1/metrics/query",
        params={"metric": "job_gpu_power_watts", "label": f"job={job.id}", "range": "5m"},
    ).json()
    assert power["series"] and max(v for _, v in power["series"][0]["points"]) > 100
    memory = http.get(
        "/api/v1/metrics/query",
        params={"metric": "job_memory_bytes", "label": f"job={job.id}", "range": "5m"},
    ).json()
    assert max(v for _, v in memory["series"][0]["points"]) > 100_000  # sleep + its wrapper
    bad = http.get("/api/v1/metrics/query", params={"metric": "gpu_nonsense"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "metric"


def test_job_series_are_closed_to_strangers_and_rules_explain_bad_input(monitored) -> None:
    server, admin, _ = monitored
    http = http_of(server, admin)
    admin.projects.create("secret")
    job = admin.jobs.submit({"project": "secret", "command": ["true"]})
    admin.users.create("eve", "eve-password")
    eve = http_of(server, server.login("eve", "eve-password"))
    response = eve.get(
        "/api/v1/metrics/query",
        params={"metric": "job_gpu_power_watts", "label": f"job={job.id}"},
    )
    assert response.status_code == 404
    assert eve.post("/api/v1/alerts/rules", json={"name": "x"}).status_code == 403
    bad = http.post(
        "/api/v1/alerts/rules",
        json={
            "name": "too hot",
            "metric": "gpu_temperature_celsius",
            "op": ">",
            "threshold": "hot",
        },
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "threshold"
    unknown = http.post(
        "/api/v1/alerts/rules", json={"name": "odd", "metric": "no_such_metric", "threshold": 1}
    )
    assert unknown.status_code == 422 and "metric" in unknown.text
    clash = http.post(
        "/api/v1/alerts/rules",
        json={"name": "GPU lost", "metric": "gpu_present", "op": "==", "threshold": 0},
    )
    assert clash.status_code == 409
    with pytest.raises(ApiError):
        Client(server.url, "sl_not_a_token").whoami()
    eve.close()


def test_the_shipped_grafana_dashboard_asks_only_for_metrics_we_export() -> None:
    """Every metric name in the dashboard's queries is one /metrics publishes."""
    exported = {m.dcgm or f"suanli_{name}" for name, m in METRICS.items()}
    exported |= {"suanli_jobs", "suanli_queue_length"}
    exported |= {
        f"{base}_{suffix}"
        for base in ("suanli_scheduler_cycle_seconds", "suanli_api_request_duration_seconds")
        for suffix in ("bucket", "sum", "count")
    }
    root = Path(__file__).resolve().parent.parent
    dashboard = json.loads((root / "deploy/grafana/suanli.json").read_text())
    asked = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            asked |= set(re.findall(r"\b((?:DCGM_FI_|suanli_)\w+)", target["expr"]))
    asked |= set(re.findall(r"\b(suanli_\w+)", json.dumps(dashboard["templating"])))
    assert len(asked) >= 12
    assert asked <= exported, asked - exported


def test_the_cli_shows_alerts_and_a_metrics_trend_in_both_languages(
    monitored, monkeypatch, capsys, tmp_path
) -> None:
    server, admin, _ = monitored
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("SUANLI_URL", server.url)
    monkeypatch.setenv("SUANLI_TOKEN", admin.token)
    uuid = admin.nodes.list()[0].gpus[1].uuid
    set_override(server.data_dir, {uuid: {"gpu_present": 0}})  # "GPU lost" fires at once
    wait(lambda: admin.alerts.list(firing=True))
    for language, firing in (("en", "firing"), ("zh-CN", "告警中")):
        monkeypatch.setenv("SUANLI_LANG", language)
        assert cli_main(["alerts", "--firing"]) == 0
        out = capsys.readouterr().out
        assert firing in out and uuid in out and "GPU lost" in out
        assert cli_main(["metrics", "gpu_temperature_celsius", "-l", "gpu=0", "--range", "5m"]) == 0
        out = capsys.readouterr().out
        assert "gpu=0" in out and "°C" in out and any(c in out for c in "▁▂▃▄▅▆▇█")
    set_override(server.data_dir, {})
