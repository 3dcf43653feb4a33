"""What the gateway refuses, as an outsider meets it on a real server: missing, bad, revoked
and expired keys, keys of another project or limited to other models, unknown models and
paths, bodies that are not JSON objects or too large, and a key's limits (requests and
tokens per minute, a token budget), each in OpenAI's error shape with its status, code and,
for a 429, Retry-After, in the caller's language."""

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import openai
import pytest

from suanli.client import Client
from suanli.i18n import translate
from suanli.services.service_keys import period_end
from tests.conftest import RunningServer, unique
from tests.serving.helpers import (
    api,
    deploy,
    key_named,
    make_key,
    make_project,
    serving_server,
    wait_ready,
)

MAX_BODY = 2048
MESSAGES = [{"role": "user", "content": "hello there"}]


@dataclass
class Setup:
    server: RunningServer
    http: httpx.Client  # the admin's, on /api/v1/
    admin: Client
    project: str  # with the service "chat"
    other: str  # a project with no service

    def key(self, project: str | None = None, **limits: object) -> str:
        return make_key(self.http, project or self.project, **limits)

    def openai(self, secret: str, **headers: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.server.url + "/v1",
            api_key=secret,
            max_retries=0,
            timeout=30,
            default_headers=headers,
        )

    def post(self, path: str, secret: str | None, **kwargs: object) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))  # type: ignore[call-overload]
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        return httpx.post(self.server.url + path, headers=headers, timeout=30, **kwargs)

    def chat(self, secret: str, model: str = "chat", **headers: str) -> httpx.Response:
        body = {"model": model, "messages": MESSAGES, "max_tokens": 4}
        return self.post("/v1/chat/completions", secret, json=body, headers=headers)


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, launch_server: Callable[..., RunningServer]
) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("limits")
    server = serving_server(
        functools.partial(launch_server, base), SUANLI_GATEWAY_MAX_BODY_BYTES=str(MAX_BODY)
    )
    try:
        http = api(server)
        project, other = make_project(http), make_project(http)
        wait_ready(http, deploy(http, project, "chat")["id"])
        yield Setup(server, http, server.login(), project, other)
    finally:
        server.stop()


def refused(response: httpx.Response, status: int, code: str) -> dict:
    """OpenAI's error shape, exactly: the error's message, type, param and code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["code"] == code and isinstance(error["message"], str) and error["message"]
    return error


def retry_after(response: httpx.Response) -> int:
    seconds = int(response.headers["retry-after"])
    assert seconds >= 1
    return seconds


# --- who calls ----------------------------------------------------------------------------


def test_no_key_or_a_bad_key(setup: Setup) -> None:
    refused(setup.chat(""), 401, "invalid_api_key")
    refused(setup.chat("sk-suanli-" + "x" * 40), 401, "invalid_api_key")
    basic = setup.post("/v1/chat/completions", None, headers={"Authorization": "Basic YTpi"})
    refused(basic, 401, "invalid_api_key")
    with pytest.raises(openai.AuthenticationError) as caught:
        setup.openai("sk-suanli-nope").chat.completions.create(model="chat", messages=MESSAGES)
    assert caught.value.code == "invalid_api_key"
    assert caught.value.type == "authentication_error"


@pytest.mark.parametrize("model", ["{project}/chat", "{project}/ghost", "nowhere/chat"])
def test_a_key_of_another_project(setup: Setup, model: str) -> None:
    """Refused as the wrong project whether the model exists there or not: the answer
    does not tell another project's services apart."""
    secret = setup.key(setup.other)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        setup.openai(secret).chat.completions.create(
            model=model.format(project=setup.project), messages=MESSAGES
        )
    assert caught.value.code == "wrong_project"
    assert caught.value.status_code == 403


def test_a_key_limited_to_other_models(setup: Setup) -> None:
    secret = setup.key(models=["summarise"])
    error = refused(setup.chat(secret), 403, "model_not_allowed")
    assert error["type"] == "permission_error"
    refused(setup.chat(secret, f"{setup.project}/chat"), 403, "model_not_allowed")
    assert setup.chat(setup.key(models=["chat"])).status_code == 200


def test_an_unknown_model(setup: Setup) -> None:
    secret = setup.key()
    with pytest.raises(openai.NotFoundError) as caught:
        setup.openai(secret).chat.completions.create(model="ghost", messages=MESSAGES)
    assert caught.value.code == "model_not_found"
    refused(setup.chat(secret, f"{setup.project}/ghost"), 404, "model_not_found")


def test_users_name_models_with_their_project(setup: Setup) -> None:
    """A user's token calls `project/service` of their projects; a stranger learns nothing
    (the same 404 for a service that exists and one that does not)."""
    assert setup.chat(setup.admin.token or "", f"{setup.project}/chat").status_code == 200
    refused(setup.chat(setup.admin.token or "", "chat"), 400, "model_not_qualified")
    name, password = unique("stranger"), "password-" + unique("pw")
    setup.admin.users.create(name, password)
    stranger = setup.server.login(name, password).token or ""
    existing = refused(setup.chat(stranger, f"{setup.project}/chat"), 404, "model_not_found")
    ghost = refused(setup.chat(stranger, f"{setup.project}/ghost"), 404, "model_not_found")
    assert existing["message"].replace("chat", "ghost") == ghost["message"]


def test_a_revoked_key_is_refused_at_once(setup: Setup) -> None:
    secret = setup.key()
    assert setup.chat(secret).status_code == 200  # now known to the gateway
    key = key_named(setup.http, setup.project, secret)
    assert setup.http.delete(f"service-keys/{key['id']}").status_code == 200
    refused(setup.chat(secret), 401, "invalid_api_key")


def created_key(setup: Setup, **spec: object) -> tuple[str, datetime]:
    answer = setup.http.post(
        "service-keys", json={"project": setup.project, "name": unique("key"), **spec}
    )
    assert answer.status_code == 201, answer.text
    created = answer.json()
    return created["key"], datetime.fromisoformat(created["expires_at"].replace("Z", "+00:00"))


def sleep_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))


def test_an_expired_key(setup: Setup) -> None:
    secret, expires = created_key(setup, expires_in=1)
    sleep_until(expires + timedelta(seconds=1.2))
    refused(setup.chat(secret), 401, "invalid_api_key")


def test_a_key_is_refused_the_moment_it_expires(setup: Setup) -> None:
    """Used just before its expiry (and so remembered by the gateway), refused just after:
    remembering a key must not stretch its life."""
    secret, expires = created_key(setup, expires_in=2)
    sleep_until(expires - timedelta(seconds=0.5))
    assert setup.chat(secret).status_code == 200
    sleep_until(expires + timedelta(seconds=0.2))
    refused(setup.chat(secret), 401, "invalid_api_key")


# --- what is sent -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"\xff\xfe{}", "invalid_json"),
        (b"", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b'"chat"', "invalid_json"),
        (b'{"messages": []}', "missing_model"),
        (b'{"model": 7, "messages": []}', "missing_model"),
        (b'{"model": "  "}', "missing_model"),
    ],
)
def test_bodies_that_are_not_requests(setup: Setup, body: bytes, code: str) -> None:
    response = setup.post(
        "/v1/chat/completions",
        setup.key(),
        content=body,
        headers={"Content-Type": "application/json"},
    )
    error = refused(response, 400, code)
    assert error["type"] == "invalid_request_error"


def test_a_deeply_nested_body_is_a_bad_request(setup: Setup) -> None:
    """JSON nested deeper than Python's parser recurses (well under the body limit) is
    invalid input for the caller, not a 500."""
    body = b"[" * 2000  # unterminated: the parser gives up on its depth before the end
    assert len(body) < MAX_BODY
    refused(setup.post("/v1/chat/completions", setup.key(), content=body), 400, "invalid_json")


def test_a_body_over_the_limit(setup: Setup) -> None:
    """Refused by its declared length, and when sent chunked without one."""
    secret = setup.key()
    big = b'{"model": "chat", "pad": "' + b"x" * MAX_BODY + b'"}'
    refused(setup.post("/v1/chat/completions", secret, content=big), 413, "body_too_large")

    def chunks() -> Iterator[bytes]:
        yield from (big[i : i + 512] for i in range(0, len(big), 512))

    chunked = setup.post("/v1/chat/completions", secret, content=chunks())
    refused(chunked, 413, "body_too_large")


def test_wrong_method_and_unknown_path(setup: Setup) -> None:
    secret = setup.key()
    headers = {"Authorization": f"Bearer {secret}"}
    url = setup.server.url
    refused(httpx.get(url + "/v1/chat/completions", headers=headers), 405, "method_not_allowed")
    refused(httpx.post(url + "/v1/models", headers=headers), 405, "method_not_allowed")
    refused(setup.post("/v1/chat/completion", secret, json={}), 404, "unknown_url")
    refused(setup.post("/v1/images/generations", secret, json={}), 404, "unknown_url")


# --- a key's limits -------------------------------------------------------------------------


def test_requests_per_minute(setup: Setup) -> None:
    secret = setup.key(requests_per_minute=2)
    assert [setup.chat(secret).status_code for _ in range(2)] == [200, 200]
    third = setup.chat(secret)
    error = refused(third, 429, "rate_limit_requests")
    assert error["type"] == "rate_limit_error" and "2" in error["message"]
    assert retry_after(third) <= 60
    with pytest.raises(openai.RateLimitError) as caught:
        setup.openai(secret).chat.completions.create(model="chat", messages=MESSAGES)
    assert caught.value.code == "rate_limit_requests"


def test_tokens_per_minute(setup: Setup) -> None:
    """One answer spends 2 + 4 tokens of a limit of 5 a minute: the next one waits."""
    secret = setup.key(tokens_per_minute=5)
    assert setup.chat(secret).status_code == 200
    second = setup.chat(secret)
    refused(second, 429, "rate_limit_tokens")
    assert retry_after(second) <= 60


@pytest.mark.parametrize("period", ["day", "month"])
def test_a_token_budget(setup: Setup, period: str) -> None:
    """A budget of 5 tokens a period, spent by the first answer (6): refused until the
    period ends, which the message and Retry-After both say; still refused once the usage
    was written to the database."""
    secret = setup.key(token_budget=5, budget_period=period)
    assert setup.chat(secret).status_code == 200
    reset = period_end(period, datetime.now(UTC))
    for _ in range(2):
        answer = setup.chat(secret)
        error = refused(answer, 429, "budget_exceeded")
        assert reset.isoformat(timespec="seconds") in error["message"], error
        wait = (reset - datetime.now(UTC)).total_seconds()
        assert abs(retry_after(answer) - wait) < 5
        time.sleep(1.5)  # the meter writes its rows each second


# --- in the caller's language ---------------------------------------------------------------


def test_messages_in_simplified_chinese(setup: Setup) -> None:
    chinese = {"Accept-Language": "zh-CN"}
    error = refused(setup.chat("", **chinese), 401, "invalid_api_key")
    assert error["message"] == translate("error.gateway_unauthenticated", "zh-CN")
    assert error["message"] != translate("error.gateway_unauthenticated", "en")
    error = refused(setup.chat(setup.key(), "ghost", **chinese), 404, "model_not_found")
    assert error["message"] == translate("error.gateway_model_unknown", "zh-CN", model="ghost")
    secret = setup.key(token_budget=1, budget_period="day")
    setup.chat(secret)
    error = refused(setup.chat(secret, **chinese), 429, "budget_exceeded")
    resets = period_end("day", datetime.now(UTC)).isoformat(timespec="seconds")
    assert error["message"] == translate(
        "error.gateway_budget_exceeded", "zh-CN", budget=1, resets=resets
    )
