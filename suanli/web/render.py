"""Pages from Jinja2 templates, in the reader's language, with every value escaped.

Autoescaping is on for every template: a job named `<script>` is shown as text. Templates get
`t()` bound to the page's language, the viewer, the CSRF token for their forms and a few
formatting filters; everything else comes from the route as plain values.
"""

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from suanli import __version__
from suanli.core.durations import format_duration
from suanli.core.quantities import format_bytes
from suanli.i18n import LANGUAGES, translate
from suanli.web import session

TEMPLATES = Path(__file__).parent / "templates"
FLASH_COOKIE = "suanli_flash"

templates = Jinja2Templates(directory=TEMPLATES)

# Colours of workload states (CSS classes), shared by lists, badges and the timeline.
STATE_TONES = {
    "pending": "wait",
    "admitted": "busy",
    "starting": "busy",
    "running": "run",
    "succeeded": "ok",
    "failed": "bad",
    "cancelled": "off",
}
GPU_TONES = {
    "free": "ok",
    "shared_free": "ok",
    "in_use": "run",
    "shared_in_use": "run",
    "drained": "wait",
    "missing": "bad",
}


# A cluster engine's node states (Slurm: "idle", "mixed+drain", "down+not_responding"): the
# state, then its flags. Draining is amber, down or not responding red; otherwise green while
# the engine still gives the node new work, red when it does not.
ENGINE_DOWN = {"down", "error", "fail", "not_responding"}
ENGINE_DRAIN = {"drain", "draining", "drained"}


def engine_tone(state: str, available: bool) -> str:
    words = set(state.lower().split("+"))
    if words & ENGINE_DOWN:
        return "bad"
    if words & ENGINE_DRAIN:
        return "wait"
    return "ok" if available else "bad"


def format_gpus(value: float) -> str:
    """2.0 → "2", 0.25 → "0.25": whole GPUs read as whole numbers."""
    return f"{value:g}" if value != int(value) else str(int(value))


def ago(moment: datetime | None, language: str) -> str:
    if moment is None:
        return "-"
    seconds = max(0, int((datetime.now(UTC) - moment).total_seconds()))
    if seconds < 60:
        return translate("web.time.seconds_ago", language, n=seconds)
    if seconds < 3600:
        return translate("web.time.minutes_ago", language, n=seconds // 60)
    if seconds < 86400:
        return translate("web.time.hours_ago", language, n=seconds // 3600)
    return translate("web.time.days_ago", language, n=seconds // 86400)


def stamp(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def percent(used: float, limit: float | None) -> float:
    if not limit:
        return 0.0
    return max(0.0, min(100.0, 100.0 * used / limit))


templates.env.filters.update(
    bytes=format_bytes, duration=format_duration, gpus=format_gpus, stamp=stamp
)
templates.env.globals.update(
    STATE_TONES=STATE_TONES,
    GPU_TONES=GPU_TONES,
    LANGUAGES=LANGUAGES,
    engine_tone=engine_tone,
    version=__version__,
)


def context(request: Request, values: Mapping[str, Any]) -> dict[str, Any]:
    viewer = session.find_viewer(request)
    language: str = request.state.language

    def t(key: str, **params: Any) -> str:
        return translate(key, language, **params)

    def label(group: str, value: object) -> str:
        return t(f"label.{group}.{value}") if value not in (None, "") else "-"

    return {
        "request": request,
        "viewer": viewer,
        "lang": language,
        "t": t,
        "label": label,
        "ago": lambda moment: ago(moment, language),
        "percent": percent,
        "csrf": session.csrf_token(request),
        "flash": request.cookies.get(FLASH_COOKIE, ""),
        "isolation": request.app.state.isolation if viewer and viewer.actor.is_admin else [],
        **values,
    }


def page(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    response = templates.TemplateResponse(
        request, template, context(request, values), status_code=status
    )
    response.headers["Cache-Control"] = "no-store"
    if request.cookies.get(FLASH_COOKIE):
        response.delete_cookie(FLASH_COOKIE, path="/")
    session.keep_anonymous_csrf(response, request)
    return response


def redirect(url: str, flash: str = "") -> RedirectResponse:
    """After a form: go where the result shows (303, so a reload does not post again), with a
    one-time message (a catalogue key) for the next page."""
    response = RedirectResponse(url, status_code=303)
    if flash:
        response.set_cookie(FLASH_COOKIE, flash, max_age=60, httponly=True, samesite="lax")
    return response


def to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    url = "/login" if target in ("/", "/login") else f"/login?next={quote(target, safe='')}"
    if request.headers.get("hx-request"):
        return Response(status_code=401, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def safe_next(target: str | None) -> str:
    """Only a path on this site: never an open redirect to another host."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
