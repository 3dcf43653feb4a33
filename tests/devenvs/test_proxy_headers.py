"""What the proxy passes on to an environment's tools, and what it lets back: the server's
own credentials and cookies never reach a tool, and a tool cannot set the server's cookies."""

from starlette.requests import HTTPConnection

from suanli.devenvs import endpoints
from suanli.devenvs.endpoints import Endpoints
from suanli.services.devenvs import Entry
from suanli.web import proxy

ENTRY = Entry(env_id=7, name="nb", token="the-env-token", endpoints=Endpoints(host="127.0.0.1"))


def connection(headers: dict[str, str]) -> HTTPConnection:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return HTTPConnection({"type": "http", "headers": raw, "path": "/x/7/jupyter/lab"})


def test_the_servers_credentials_and_cookies_stay_here() -> None:
    sent = proxy._headers(
        connection(
            {
                "Host": "suanli.example:8686",
                "Cookie": "suanli_session=SECRET; _xsrf=2|abc; suanli_csrf=C; suanli_lang=zh-CN",
                "Authorization": "Bearer SUANLI-TOKEN",
                "X-CSRF-Token": "C",
                "X-Forwarded-Host": "spoofed.example",
                "Forwarded": "host=spoofed.example",
                "Connection": "keep-alive",
                "Accept": "application/json",
            }
        ),
        ENTRY,
        "jupyter",
    )
    headers = dict(sent)
    assert len(headers) == len(sent)  # each header once
    assert headers["authorization"] == "token the-env-token"
    assert headers["cookie"] == "_xsrf=2|abc"
    assert headers["x-forwarded-host"] == "suanli.example:8686"
    assert headers["accept"] == "application/json"
    assert headers["accept-encoding"] == "identity"  # the browser asked for no compression
    text = repr(sent)
    for secret in ("SECRET", "SUANLI-TOKEN", "spoofed", "suanli_", "keep-alive", "x-csrf-token"):
        assert secret not in text


def test_without_cookies_of_ours_none_is_sent() -> None:
    sent = proxy._headers(connection({"Host": "h", "Cookie": "suanli_session=S"}), ENTRY, "jupyter")
    assert "cookie" not in dict(sent)


def test_code_server_gets_its_session_cookie_from_the_token() -> None:
    """code-server listens on loopback, where other accounts' workloads reach it: it lets in
    only the cookie that the agent's HASHED_PASSWORD makes, which the proxy alone sends."""
    cookie = f"{endpoints.CODE_SERVER_COOKIE}={endpoints.code_server_secret('the-env-token')}"
    sent = dict(proxy._headers(connection({"Host": "h", "Cookie": "a=1"}), ENTRY, "vscode"))
    assert sent["cookie"] == f"a=1; {cookie}"
    bare = dict(proxy._headers(connection({"Host": "h"}), ENTRY, "vscode"))
    assert bare["cookie"] == cookie
    assert "the-env-token" not in cookie
    other = Entry(env_id=8, name="x", token="another-token", endpoints=ENTRY.endpoints)
    assert cookie not in dict(proxy._headers(connection({"Host": "h"}), other, "vscode"))["cookie"]


def test_a_tool_cannot_set_the_servers_cookies() -> None:
    assert proxy._sets_our_cookie("Set-Cookie", "suanli_session=x; Path=/")
    assert proxy._sets_our_cookie("set-cookie", "suanli_csrf=x")
    assert not proxy._sets_our_cookie("Set-Cookie", "_xsrf=x; Path=/x/7/jupyter/")
    assert not proxy._sets_our_cookie("Content-Type", "suanli_session=x")
