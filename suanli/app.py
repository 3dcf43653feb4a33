"""Composition root: settings in, a ready FastAPI application out.

`prepare()` brings the database to the code's schema and makes the first administrator; the
`server` command calls it once before it starts serving.
"""

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from suanli import __version__
from suanli.api import limits, problems
from suanli.api.routes import (
    alerts,
    audit,
    auth,
    data,
    deployments,
    devenvs,
    finetunes,
    health,
    imports,
    jobs,
    me,
    metrics,
    nodes,
    projects,
    prompts,
    service_keys,
    services,
    uploads,
    users,
)
from suanli.application import Workloads
from suanli.backends.base import Backend, Capabilities
from suanli.config import Settings
from suanli.controllers.deployments import DeploymentController
from suanli.controllers.imports import ImportController
from suanli.controllers.inventory import InventoryController
from suanli.controllers.lease import Leases
from suanli.controllers.loop import Loop, Ticking
from suanli.controllers.metrics import MetricsController
from suanli.controllers.notifier import NotifierController
from suanli.controllers.scrub import ScrubController
from suanli.controllers.workloads import WorkloadController
from suanli.data.store import BlobStore
from suanli.db import migrate
from suanli.db.engine import Database
from suanli.gateway import Gateway
from suanli.i18n import translate
from suanli.kinds.registry import KINDS
from suanli.monitoring.prometheus import PlatformMetrics, RequestTiming
from suanli.services import accounts, isolation
from suanli.serving.autoscale import Autoscaler, Traffic
from suanli.serving.gateway import Dispatch
from suanli.serving.gateway import Gateway as ModelGateway
from suanli.serving.meter import Meter
from suanli.serving.probe import Prober
from suanli.serving.table import Table
from suanli.web import console, docs, proxy

API_PREFIX = "/api/v1"
log = logging.getLogger("suanli")


class Runtime:
    """The backend and the controller loops of a serving process. Every loop holds a lease in
    the database (suanli.controllers.lease): with several servers on one database each loop
    runs in one of them at a time."""

    def __init__(self, settings: Settings, database: Database, backend: Backend):
        self.platform = PlatformMetrics()
        self.capabilities = backend.capabilities
        self.address = backend.address
        self.traffic = Traffic()
        self.inventory = InventoryController(database, backend, settings.inventory_interval_seconds)
        self.metrics = MetricsController(settings, database, backend)
        leases = Leases(database)
        store = BlobStore(settings.data_dir / "data")
        controllers: list[Ticking] = [
            self.inventory,
            WorkloadController(
                settings,
                database,
                backend,
                self.platform.scheduler_cycle,
                replica_ended=lambda: self.wake(DeploymentController.name),
            ),
            self.metrics,
            NotifierController(settings, database),
            DeploymentController(database, self.wake),
            ImportController(settings, database, store),
            ScrubController(settings, database, store),
            Prober(settings, database, backend.address),
            Autoscaler(database, self.traffic, self.wake),
            *(
                controller
                for kind in KINDS.values()
                for controller in kind.controllers(settings, database, self.wake)
            ),
        ]
        self.loops = {controller.name: Loop(controller, leases) for controller in controllers}
        if len(self.loops) != len(controllers):  # a loop's name is also its lease's
            raise ValueError("two controller loops share a name")

    def start(self) -> None:
        # Know the nodes before the first submit is checked against them. Only the holder of
        # the inventory's lease writes them: two servers that both find a new node would both
        # insert its row, and one of them would fail to start.
        if self.loops[self.inventory.name].holds():
            self.inventory.tick()
        for loop in self.loops.values():
            loop.start()

    def wake(self, name: str = WorkloadController.name) -> None:
        """A change for the loop `name` (a submit or cancel: the scheduler): it looks at
        once, if it runs in this process; the one that holds its lease sees the change on its
        next tick."""
        self.loops[name].wake()

    def stop(self) -> None:
        for loop in self.loops.values():
            loop.stop()


def create_app(
    settings: Settings, database: Database | None = None, runtime: Runtime | None = None
) -> FastAPI:
    """The application. Without a runtime (tests that only walk the API) nothing runs work:
    submitted jobs stay pending."""
    database = database or Database(settings.effective_database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.proxy_client = proxy.new_client()
        await app.state.gateway.start()
        gateway = None
        if runtime is not None:
            runtime.start()
            if settings.ssh_enabled:
                gateway = Gateway(settings, database, app.state.gateway.table)
                app.state.ssh_port = await gateway.start()
                log.info(
                    "SSH gateway: ssh <environment>@%s -p %s; datasets and models: "
                    "sftp -P %s data@%s",
                    settings.effective_ssh_host,
                    app.state.ssh_port,
                    app.state.ssh_port,
                    settings.effective_ssh_host,
                )
        yield
        if gateway is not None:
            await gateway.close()
        await app.state.proxy_client.aclose()
        await app.state.gateway.close()
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
    app.state.store = BlobStore(settings.data_dir / "data")
    capabilities = runtime.capabilities if runtime is not None else Capabilities()
    wake = runtime.wake if runtime is not None else lambda name: None
    app.state.workloads = Workloads(settings, database, capabilities, wake)
    app.state.runtime = runtime
    app.state.platform = runtime.platform if runtime is not None else PlatformMetrics()
    # The SSH gateway's port once it listens (None: no gateway, as in API-only tests).
    app.state.ssh_port = None
    # What does not isolate workloads here: a banner on every page administrators see.
    app.state.isolation = isolation.assess(settings)
    app.state.gateway = model_gateway(settings, database, runtime, app.state.platform)
    app.add_middleware(RequestTiming)
    app.add_middleware(limits.BodyLimit)  # outermost of the app's: nothing runs for a refused body
    problems.install(app, page=console.error_page)

    api = APIRouter(prefix=API_PREFIX, responses=problems.ERROR_RESPONSES)
    for module in (
        auth,
        me,
        users,
        projects,
        audit,
        jobs,
        devenvs,
        deployments,
        services,
        service_keys,
        prompts,
        finetunes,
        uploads,
        imports,
        nodes,
        metrics,
        alerts,
    ):
        api.include_router(module.router)
    api.include_router(uploads.held)
    api.include_router(data.datasets)
    api.include_router(data.models)
    api.include_router(health.router)
    app.include_router(api)
    app.include_router(health.public)
    app.include_router(metrics.exposition)
    problems.document(app)
    docs.install(app)
    app.router.routes.extend(proxy.routes())
    console.install(app)
    # In front of everything, Starlette's own error handling included: the model gateway's
    # lean path (/v1, /s/), which answers its own errors in OpenAI's shape.
    app.middleware_stack = Dispatch(app.build_middleware_stack(), lambda: app.state.gateway)
    return app


def model_gateway(
    settings: Settings, database: Database, runtime: Runtime | None, platform: PlatformMetrics
) -> ModelGateway:
    """The gateway at /v1 and /s/; it shares the traffic it counts with the runtime's
    autoscaler. Without a runtime nothing serves, but the gateway still answers."""
    address = runtime.address if runtime is not None else (lambda node: "127.0.0.1")
    traffic = runtime.traffic if runtime is not None else Traffic()
    wake = runtime.wake if runtime is not None else (lambda name: None)
    return ModelGateway(
        settings,
        database,
        Table(settings, database, address),
        traffic,
        Meter(database, platform.gateway),
        wake,
    )


def prepare(settings: Settings, database: Database) -> str | None:
    """Migrate to head and bootstrap the first administrator.

    Returns the administrator's password when it was generated here, so the caller can show it
    once; None when an administrator already existed or the password came from the settings.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    migrate.upgrade(database.engine)
    BlobStore(settings.data_dir / "data").prepare()
    isolation.secure(settings)
    for finding in isolation.assess(settings):
        log.warning("%s", translate(finding.key, "en", **finding.params))
    given = settings.admin_password.get_secret_value()
    password = given or secrets.token_urlsafe(12)
    with database.writing() as session:
        created = accounts.bootstrap_admin(session, settings.admin_username, password)
    return password if created and not given else None
