"""Every route needs a signed-in caller, except the few that are public on purpose."""

import re

from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

PUBLIC = {
    ("POST", "/api/v1/auth/login"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
}
# Mounted, not routed: the vendored static files (scripts and styles, no data).
PUBLIC_MOUNTS = {"/static"}


def routes(app):
    """Every HTTP route of the app, included routers flattened, with its full path."""
    return [r for r in iter_route_contexts(app.routes) if r.methods and r.path]


def test_every_route_but_the_public_ones_requires_authentication(app_and_database) -> None:
    app, _ = app_and_database
    client = TestClient(app)
    checked = 0
    for route in routes(app):
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


def test_only_static_files_are_mounted(app_and_database) -> None:
    app, _ = app_and_database
    mounts = {r.path for r in iter_route_contexts(app.routes) if not r.methods}
    assert mounts == PUBLIC_MOUNTS


def test_the_public_list_is_not_stale(app_and_database) -> None:
    app, _ = app_and_database
    table = {(m, r.path) for r in routes(app) for m in r.methods}
    assert table >= PUBLIC
