"""Bad input gets problem+json naming the field and the reason, in the caller's language,
and never a 500."""

import json

import httpx
import pytest

from tests.conftest import RunningServer


@pytest.fixture
def api(server: RunningServer, admin):
    def call(
        method: str, path: str, language: str = "en", headers_extra: dict | None = None, **kwargs
    ) -> httpx.Response:
        headers = {
            "Authorization": f"Bearer {admin.token}",
            "Accept-Language": language,
            **(headers_extra or {}),
        }
        return httpx.request(method, f"{server.url}/api/v1/{path}", headers=headers, **kwargs)

    return call


def fields(response: httpx.Response) -> dict[str, str]:
    return {e["field"]: e["type"] for e in response.json()["errors"]}


def test_validation_errors_name_each_field(api) -> None:
    response = api("POST", "projects", json={"name": "Bad Name", "colour": "red"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "urn:suanli:problem:validation-error"
    assert body["status"] == 422 and body["instance"] == "/api/v1/projects"
    assert fields(response) == {"name": "string_pattern_mismatch", "colour": "extra_forbidden"}
    assert "lowercase letters" in body["errors"][0]["message"]


def test_validation_errors_in_chinese(api) -> None:
    response = api("POST", "users", language="zh-CN,zh;q=0.9", json={"name": "ok-name"})
    assert response.status_code == 422
    body = response.json()
    assert body["title"] == "输入无效"
    assert body["errors"] == [
        {"field": "password", "in": "body", "type": "missing", "message": "此字段为必填项。"}
    ]


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "projects", {"name": "ok", "description": "a\x00b"}, "description"),
        ("POST", "projects", {"name": "ok", "display_name": "\ud800"}, "display_name"),
        ("PATCH", "projects/nope/quota", {"max_gpus": 2**40}, "max_gpus"),
        ("PATCH", "projects/nope/quota", {"cpus": "NaN"}, "cpus"),
        ("PATCH", "projects/nope/quota", {"memory_bytes": -1}, "memory_bytes"),
        ("POST", "me/tokens", {"name": "t", "expires_in_days": 0}, "expires_in_days"),
        ("POST", "users", {"name": "x", "password": "p" * 300}, "password"),
        ("POST", "users", {"name": "x\n", "password": "password1"}, "name"),
    ],
)
def test_values_no_database_can_store_are_refused_at_the_edge(api, method, path, body, field):
    # json.dumps escapes a lone surrogate as \\ud800, which httpx's encoder would refuse.
    response = api(
        method, path, content=json.dumps(body), headers_extra={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert field in fields(response)


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("POST", "projects", {"content": b"{not json"}, 422),
        ("POST", "projects", {"content": b"[1, 2]"}, 422),
        ("POST", "projects", {"content": b""}, 422),
        ("GET", "audit?limit=0", {}, 422),
        ("GET", "audit?before_id=99999999999", {}, 422),
        ("GET", "audit?since=not-a-date", {}, 422),
        ("GET", "audit?since=9999-12-31T23:59:59-14:00", {}, 422),
        ("GET", "audit?actor=%00", {}, 422),
        ("DELETE", "me/tokens/99999999999", {}, 422),
        ("GET", "users/Not%20A%20Name", {}, 422),
        ("GET", "no/such/route", {}, 404),
        ("PUT", "projects", {}, 405),
    ],
)
def test_malformed_requests(api, method, path, kwargs, status) -> None:
    response = api(method, path, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "Traceback" not in response.text


def test_naive_times_in_filters_mean_utc(api) -> None:
    assert api("GET", "audit?since=2026-01-01T00:00:00&limit=1").status_code == 200
