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
from suanli.api.routes import alerts, audit, auth, health, jobs, me, metrics, nodes, projects, users
from suanli.backends.base import Backend
from suanli.config import Settings
from suanli.controllers.inventory import InventoryController
from suanli.controllers.loop import Loop
from suanli.controllers.metrics import MetricsController
from suanli.controllers.notifier import NotifierController
from suanli.controllers.workloads import WorkloadController
from suanli.db import migrate
from suanli.db.engine import Database
from suanli.monitoring.prometheus import PlatformMetrics, RequestTiming
from suanli.services import accounts
from suanli.web import console, docs

API_PREFIX = "/api/v1"


class Runtime:
    """The backend and the controller loops of a serving process."""

    def __init__(self, settings: Settings, database: Database, backend: Backend):
        self.platform = PlatformMetrics()
        self.inventory = InventoryController(database, backend, settings.inventory_interval_seconds)
        self.metrics = MetricsController(settings, database, backend)
        workloads = WorkloadController(settings, database, backend, self.platform.scheduler_cycle)
        self.loops = [
            Loop(self.inventory),
            Loop(workloads),
            Loop(self.metrics),
            Loop(NotifierController(settings, database)),
        ]

    def start(self) -> None:
        self.inventory.tick()  # know the nodes before the first submit is checked against them
        for loop in self.loops:
            loop.start()

    def wake(self) -> None:
        """A submit or cancel: the scheduler looks at once."""
        self.loops[1].wake()

    def stop(self) -> None:
        for loop in self.loops:
            loop.stop()


def create_app(
    settings: Settings, database: Database | None = None, runtime: Runtime | None = None
) -> FastAPI:
    """The application. Without a runtime (tests that only walk the API) nothing runs work:
    submitted jobs stay pending."""
    database = database or Database(settings.effective_database_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if runtime is not None:
            runtime.start()
        yield
        if runtime is not None:
            runtime.stop()
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
    app.state.wake = runtime.wake if runtime is not None else lambda: None
    app.state.runtime = runtime
    app.state.platform = runtime.platform if runtime is not None else PlatformMetrics()
    app.add_middleware(RequestTiming)
    problems.install(app, page=console.error_page)

    api = APIRouter(prefix=API_PREFIX, responses=problems.ERROR_RESPONSES)
    for module in (auth, me, users, projects, audit, jobs, nodes, metrics, alerts):
        api.include_router(module.router)
    api.include_router(health.router)
    app.include_router(api)
    app.include_router(health.public)
    app.include_router(metrics.exposition)
    problems.document(app)
    docs.install(app)
    console.install(app)
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
