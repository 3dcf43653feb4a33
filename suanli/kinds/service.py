"""A model service's replica: an engine the administrator registered (vLLM, SGLang, a team's
own server) serving a model version, or the user's own command, listening on a port the
server chose. The gateway (suanli.serving) routes to it once it answers its health check
(suanli.serving.probe); the deployment controller keeps the service's replicas.

Placeholders in an engine's command and environment, and in a user's command, are filled
here: {python} {model} {name} {host} {port} {socket}, and {token} in the environment only
(argument vectors are visible to every account on a node: `ps`). An engine with socket args
listens on a Unix socket in the replica's folder instead of the port, where the replica runs
on this host: the folder's mode keeps every other account out.
"""

import random
import secrets
import socket
import sys
from collections.abc import Mapping
from typing import ClassVar

from suanli.config import Engine, Settings
from suanli.kinds.base import Kind, Launch, Start, Unsupported, data_inputs
from suanli.schemas.services import ServiceTemplate
from suanli.services import workfolders

# Where a node's port is chosen blindly (a cluster's node, not this host).
REMOTE_PORTS = (20000, 60000)
SOCKET = "service.sock"


class ServiceKind(Kind):
    name = "service"
    spec_model = ServiceTemplate
    stops: ClassVar[Mapping[str, str]] = {
        "scaled_down": "event.stopped_scaled_down",
        "updated": "event.stopped_updated",
    }
    probed: ClassVar[bool] = True

    def launch(self, start: Start) -> Launch:
        spec: ServiceTemplate = start.spec
        job, settings = start.job, start.settings
        engine = engine_of(settings, spec)
        if start.fresh or job.port is None or not job.token:
            job.port = free_port(remote=start.capabilities.remote)
            job.token = secrets.token_urlsafe(32)
            job.ready_at = None
            job.socket = ""
            if engine and engine.socket_args and not start.capabilities.remote:
                job.socket = str(start.folder / SOCKET)
                workfolders.remove(start.folder, SOCKET)
        mounts, inputs = data_inputs(start)
        model = next((item for item in job.inputs or [] if item.get("kind") == "model"), None)
        values = {
            "{python}": str(engine.prefix / "bin" / "python")
            if engine and engine.prefix
            else sys.executable,
            "{model}": str(start.folder / "models" / str(model["name"])) if model else "",
            "{name}": job.name,
            # Reached over the network on a cluster's node; here, on loopback only.
            "{host}": "0.0.0.0" if start.capabilities.remote else "127.0.0.1",  # noqa: S104
            "{port}": str(job.port),
        }
        command = list(engine.command if engine else spec.command or [])
        if job.socket and engine:
            command += engine.socket_args
        values["{socket}"] = job.socket
        argv = tuple(fill(part, values) for part in [*command, *spec.args])
        secret = {**values, "{token}": job.token}
        env = {
            **start.env,
            **{key: fill(value, secret) for key, value in (engine.env if engine else {}).items()},
            **inputs,
            "HOST": values["{host}"],
            "PORT": values["{port}"],
            "SUANLI_SERVICE_TOKEN": job.token,
            "SUANLI_MODEL_DIR": values["{model}"],
        }
        if engine and engine.prefix:
            env["PATH"] = f"{engine.prefix / 'bin'}:{start.env.get('PATH', '/usr/bin:/bin')}"
            env["VIRTUAL_ENV"] = str(engine.prefix)
        return Launch(argv=argv, workdir=start.folder, env=env, ports=("service",), mounts=mounts)


KIND = ServiceKind()


def engine_of(settings: Settings, spec: ServiceTemplate) -> Engine | None:
    """The registered engine the spec names (None: the user's own command)."""
    if spec.engine is None:
        return None
    engine = settings.engines.get(spec.engine)
    if engine is None:
        raise Unsupported(f"the engine {spec.engine!r} is not registered on this server")
    return engine


def protocol_of(settings: Settings, template: Mapping[str, object]) -> str:
    """How it is reached: the template's own word, else its engine's, else http."""
    return _own_or_engines(settings, template, "protocol", "http")


def health_of(settings: Settings, template: Mapping[str, object]) -> str:
    """Where its readiness is asked: the template's path, else its engine's, else /health."""
    return _own_or_engines(settings, template, "health", "/health")


def _own_or_engines(
    settings: Settings, template: Mapping[str, object], field: str, default: str
) -> str:
    given = template.get(field)
    if isinstance(given, str):
        return given
    engine = settings.engines.get(str(template.get("engine") or ""))
    return str(getattr(engine, field)) if engine else default


def fill(text: str, values: Mapping[str, str]) -> str:
    """Placeholders replaced one by one: braces the user meant (JSON in an argument) stay."""
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


def free_port(*, remote: bool) -> int:
    """A port free on this host now (the local backend), or one picked at random on a
    node the server cannot look into (a clash fails the replica, which is then replaced)."""
    if remote:
        return random.randint(*REMOTE_PORTS)  # noqa: S311 - not a secret
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
