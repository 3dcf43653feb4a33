"""Health, readiness, version and the OpenAPI document."""

import httpx

from suanli import __version__
from tests.conftest import RunningServer


def test_health_and_readiness_are_public(server: RunningServer) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok", "checks": {}}
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "migrations": "ok"}


def test_version_needs_a_caller(server: RunningServer, admin) -> None:
    assert httpx.get(f"{server.url}/api/v1/version").status_code == 401
    version = admin.version()
    assert version.version == __version__
    assert version.database in {"sqlite", "postgresql"}


def test_openapi_document_is_public_and_lists_the_api(server: RunningServer) -> None:
    document = httpx.get(f"{server.url}/openapi.json").json()
    assert "/api/v1/projects/{name}/quota" in document["paths"]
    page = httpx.get(f"{server.url}/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower()  # served from the package: works offline
    script = httpx.get(f"{server.url}/static/vendor/swagger-ui/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.content) > 100_000


def test_readiness_fails_when_migrations_are_behind(server_factory, database_url) -> None:
    server = server_factory()
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'old'"))
    engine.dispose()
    response = httpx.get(f"{server.url}/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["migrations"] == "pending"
