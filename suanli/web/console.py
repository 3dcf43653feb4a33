"""The web console: server-rendered pages on the same services as the API.

Pages live at the site's root (`/`, `/jobs`, ...) beside `/api/v1`; they are left out of the
OpenAPI document, which describes the API only. Errors on console paths are answered as pages
(a missing session: to the login page) instead of problem+json.
"""

from fastapi import FastAPI, Request, Response

from suanli.web import render, session
from suanli.web.routes import (
    account,
    admin,
    auth,
    data,
    deployments,
    devenvs,
    finetunes,
    jobs,
    monitoring,
    nodes,
    overview,
    projects,
    services,
)

_NOT_CONSOLE = ("/api/", "/static/", "/docs", "/openapi.json", "/healthz", "/readyz", "/metrics")


def is_console(path: str) -> bool:
    return not path.startswith(_NOT_CONSOLE)


def error_page(request: Request, status: int, detail: str) -> Response | None:
    if not is_console(request.url.path):
        return None
    session.find_viewer(request)
    if status == 401:
        return render.to_login(request)
    return render.page(request, "error.html", status=status, code=status, message=detail)


def install(app: FastAPI) -> None:
    for module in (
        auth,
        overview,
        jobs,
        devenvs,
        deployments,
        services,
        finetunes,
        data,
        nodes,
        monitoring,
        projects,
        admin,
        account,
    ):
        app.include_router(module.router)
