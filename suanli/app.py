"""Composition root: settings in, a ready FastAPI application out.

`prepare()` brings the database to the code's schema and makes the first administrator; the
`server` command calls it once before it starts serving.
"""

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from suanli import __version__
from suanli.api import problems
from suanli.api.routes import audit, auth, health, me, projects, users
from suanli.config import Settings
from suanli.db import migrate
from suanli.db.engine import Database
from suanli.services import accounts
from suanli.web import docs

API_PREFIX = "/api/v1"


def create_app(settings: Settings, database: Database | None = None) -> FastAPI:
    database = database or Database(settings.effective_database_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        database.dispose()

    app = FastAPI(
        title="Suanli",
        version=__version__,
        description="Suanli (算力): share GPU servers across projects and people.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.database = database
    problems.install(app)

    api = APIRouter(prefix=API_PREFIX, responses=problems.ERROR_RESPONSES)
    for module in (auth, me, users, projects, audit):
        api.include_router(module.router)
    api.include_router(health.router)
    app.include_router(api)
    app.include_router(health.public)
    problems.document(app)
    docs.install(app)
    return app


def prepare(settings: Settings, database: Database) -> str | None:
    """Migrate to head and bootstrap the first administrator.

    Returns the administrator's password when it was generated here, so the caller can show it
    once; None when an administrator already existed or the password came from the settings.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(database.engine)
    given = settings.admin_password.get_secret_value()
    password = given or secrets.token_urlsafe(12)
    with database.writing() as session:
        created = accounts.bootstrap_admin(session, settings.admin_username, password)
    return password if created and not given else None
