"""Every route needs a signed-in caller, except the few that are public on purpose."""

import re

from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from suanli.web.console import is_console

PUBLIC = {
    ("POST", "/api/v1/auth/login"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("POST", "/language"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
}
# Mounted, not routed: the vendored static files (scripts and styles, no data).
PUBLIC_MOUNTS = {"/static"}
# The dev environments' proxy: its websockets check the caller themselves (tests/devenvs),
# and its HTTP side takes no CSRF token (the tools' own pages send their requests; the
# SameSite=Lax cookie and the Origin check keep other sites out).
PROXY = "/x/{env_id:int}/{tool}/{path:path}"


def routes(app):
    """Every HTTP route of the app, included routers flattened, with its full path."""
    return [r for r in iter_route_contexts(app.routes) if r.methods and r.path]


def test_every_route_but_the_public_ones_requires_authentication(app_and_database) -> None:
    app, _ = app_and_database
    client = TestClient(app)
    checked = 0
    for route in routes(app):
        if is_console(route.path):
            continue
        for method in sorted(route.methods - {"HEAD"}):
            path = re.sub(r"\{token_id\}", "1", route.path)
            path = re.sub(r"\{[^}]+\}", "someone", path)
            response = client.request(method, path)
            if (method, route.path) in PUBLIC:
                # Public routes answer without a caller (login: 422 for the missing body).
                assert response.status_code != 401, (method, route.path)
                continue
            assert response.status_code == 401, (method, route.path, response.status_code)
            assert response.json()["type"] == "urn:suanli:problem:unauthenticated"
            checked += 1
    assert checked >= 25  # the walk really covered the API


def test_every_console_page_but_login_needs_a_session_and_every_form_a_csrf_token(
    app_and_database,
) -> None:
    """Pages send a stranger to the login page; state-changing requests without the CSRF
    token are refused before anything else, and with an anonymous one still need a session."""
    app, _ = app_and_database
    client = TestClient(app, follow_redirects=False)
    anonymous_csrf = "a" * 32
    checked = 0
    for route in routes(app):
        if not is_console(route.path) or route.path in ("/docs", PROXY):
            continue
        for method in sorted(route.methods - {"HEAD"}):
            path = re.sub(r"\{(job_id|token_id)\}", "1", route.path)
            path = re.sub(r"\{[^}]+\}", "someone", path)
            if method == "GET":
                response = client.get(path)
                if (method, route.path) in PUBLIC:
                    assert response.status_code == 200, (method, route.path)
                    continue
                assert response.status_code == 303, (method, route.path, response.status_code)
                assert response.headers["location"].startswith("/login"), route.path
            else:
                refused = client.post(path, data={"language": "en"})
                assert refused.status_code == 403, (method, route.path, refused.status_code)
                client.cookies.set("suanli_csrf", anonymous_csrf)
                response = client.post(path, data={"csrf_token": anonymous_csrf, "language": "en"})
                client.cookies.clear()
                if (method, route.path) in PUBLIC:
                    assert response.status_code != 403, (method, route.path)
                    continue
                assert response.status_code == 303, (method, route.path, response.status_code)
                assert response.headers["location"].startswith("/login"), route.path
            checked += 1
    assert checked >= 20  # the walk really covered the console


def test_only_static_files_are_mounted(app_and_database) -> None:
    app, _ = app_and_database
    mounts = {r.path for r in iter_route_contexts(app.routes) if not r.methods}
    assert mounts == PUBLIC_MOUNTS | {PROXY}  # the proxy's websocket route


def test_the_proxy_lets_nobody_through_anonymously_or_from_elsewhere(app_and_database) -> None:
    app, _ = app_and_database
    client = TestClient(app, follow_redirects=False)
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        response = client.request(method, "/x/1/jupyter/api/kernels")
        assert response.status_code == 303, method  # to the login page, never to a tool
        assert response.headers["location"].startswith("/login")
        foreign = client.request(
            method, "/x/1/jupyter/api/kernels", headers={"Origin": "https://evil.example"}
        )
        assert foreign.status_code == (303 if method == "GET" else 403), method


def test_the_public_list_is_not_stale(app_and_database) -> None:
    app, _ = app_and_database
    table = {(m, r.path) for r in routes(app) for m in r.methods}
    assert table >= PUBLIC
