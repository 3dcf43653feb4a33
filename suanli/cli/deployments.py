"""`suanli deployments`: commands kept running as N replicas, replaced when they end."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.text import Text

from suanli.cli.commands import App
from suanli.cli.jobs import (
    CpusOption,
    EnvOption,
    Follow,
    GpuComputeOption,
    GpuMemoryOption,
    GpuModelOption,
    GpusOption,
    MaxDurationOption,
    MemoryOption,
    PriorityOption,
    Tail,
    WorkdirOption,
    age,
    gpus_cell,
    load_spec,
    name_from,
    parse_env,
    resources,
    state_text,
    why,
)
from suanli.cli.output import (
    JsonOption,
    fields,
    label,
    print_json,
    print_json_line,
    report,
    say,
    stream_log,
    t,
    table,
)
from suanli.cli.session import connect
from suanli.core.durations import format_duration
from suanli.core.quantities import format_bytes
from suanli.schemas.deployments import MAX_REPLICAS, DeploymentDetailOut, DeploymentOut

app = App(
    help="Deployments: commands kept running as N replicas (create, list, show, scale, stop, "
    "start, remove, logs).",
    no_args_is_help=True,
)
DeploymentId = Annotated[int, typer.Argument(help="Deployment id (see 'suanli deployments list').")]
ReplicaId = Annotated[int, typer.Argument(help="Replica id (see 'suanli deployments show').")]
Replicas = Annotated[int, typer.Argument(min=0, max=MAX_REPLICAS, help="Replicas wanted.")]
_FRACTION = ("gpu_memory", "gpu_compute_percent")
_SIZES = ("memory", "gpu_memory")
NAME_LENGTH = 32  # a deployment's name is at most this long
# As jobs' states are coloured: all wanted replicas run, on their way, failing, stopped.
HEALTH_STYLES = {
    "ready": "green",
    "starting": "cyan",
    "failing": "bold red",
    "stopping": "yellow",
    "stopped": "dim",
}


def health_text(deployment: DeploymentOut) -> Text:
    word = deployment.health
    return Text(label("deployment", word), style=HEALTH_STYLES.get(word, ""))


@app.command(context_settings={"allow_interspersed_args": False})
def create(
    command: Annotated[
        list[str] | None, typer.Argument(help="The replica's command, after --.")
    ] = None,
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Project to run in.")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Its name (default: from the command or the file).")
    ] = None,
    replicas: Annotated[
        int | None, typer.Option(min=0, max=MAX_REPLICAS, help="Replicas to keep running.")
    ] = None,
    gpus: GpusOption = None,
    gpu_model: GpuModelOption = None,
    gpu_memory: GpuMemoryOption = None,
    gpu_compute: GpuComputeOption = None,
    cpus: CpusOption = None,
    memory: MemoryOption = None,
    priority: PriorityOption = None,
    max_duration: MaxDurationOption = None,
    workdir: WorkdirOption = None,
    env: EnvOption = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help="A deployment spec in YAML (or JSON); the options given override it.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    json: JsonOption = False,
) -> None:
    """Create a deployment: suanli deployments create -p vision --replicas 2 -- python serve.py

    Its replicas run until stopped; one that ends by itself is replaced, after a backoff
    while they keep failing."""
    spec = load_spec(file, "cli.deployments.bad_yaml") if file else {}
    template = spec.get("template")
    template = dict(template) if isinstance(template, dict) else {}
    if command:
        template.pop("script", None)
        template["command"] = list(command)
    if not template.get("command") and not template.get("script"):
        raise typer.BadParameter(t("cli.deployments.no_command"), param_hint="COMMAND")
    given = {"project": project, "name": name, "replicas": replicas}
    spec.update({key: value for key, value in given.items() if value is not None})
    if "name" not in spec and template.get("command"):
        spec["name"] = name_from(template["command"])[:NAME_LENGTH].rstrip("-")
    optional = {"priority": priority, "max_duration": max_duration, "workdir": workdir}
    template.update({key: value for key, value in optional.items() if value is not None})
    if env:
        base_env = template.get("env")
        template["env"] = {**(base_env if isinstance(base_env, dict) else {}), **parse_env(env)}
    wanted = resources(
        gpus=gpus,
        gpu_model=gpu_model,
        gpu_memory=gpu_memory,
        gpu_compute_percent=gpu_compute,
        cpus=cpus,
        memory=memory,
    )
    if wanted:
        template["resources"] = _merged(template.get("resources"), wanted)
    spec["template"] = template
    with connect() as client:
        created = client.deployments.create(spec)
    if json:
        print_json(created)
        return
    say(
        "cli.deployments.created",
        id=created.id,
        name=created.name,
        replicas=created.replicas,
    )


def _merged(base: Any, wanted: dict[str, Any]) -> dict[str, Any]:
    """The file's resources with the options' over them: whole GPUs or a fraction of one,
    what the command line asks for replaces the file's choice instead of clashing with it."""
    merged = dict(base) if isinstance(base, dict) else {}
    if "gpus" in wanted:
        merged = {k: v for k, v in merged.items() if k not in _FRACTION}
    if any(key in wanted for key in _FRACTION):
        merged.pop("gpus", None)
    return {**merged, **wanted}


@app.command("list")
def list_deployments(
    project: Annotated[str | None, typer.Option("--project", "-p")] = None,
    state: Annotated[str | None, typer.Option(help="active or stopped.")] = None,
    json: JsonOption = False,
) -> None:
    """List deployments, newest first: replicas running of those wanted, and failures."""
    with connect() as client:
        found = client.deployments.list(project=project, state=state)
    if json:
        print_json(found)
        return
    table(
        ["id", "name", "project", "user", "state", "replicas", "failures", "age", "why"],
        [
            (
                d.id,
                d.name,
                d.project,
                d.user,
                health_text(d),
                replicas_cell(d),
                d.failures,
                age(d.created_at),
                next_start(d),
            )
            for d in found
        ],
    )


def replicas_cell(deployment: DeploymentOut) -> str:
    """Running of wanted, as "2/3"."""
    return f"{deployment.running}/{deployment.replicas}"


def next_start(deployment: DeploymentOut) -> str:
    """When the next replacement starts, in words, while replicas keep failing."""
    moment = deployment.next_start_at
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    wait = max(0.0, (moment - datetime.now(UTC)).total_seconds())
    return t("cli.deployments.next_start", duration=format_duration(wait))


@app.command()
def show(deployment_id: DeploymentId, json: JsonOption = False) -> None:
    """Show a deployment: its replicas, their states, and its template."""
    with connect() as client:
        deployment = client.deployments.get(deployment_id)
    if json:
        print_json(deployment)
        return
    _show(deployment)


def _show(deployment: DeploymentDetailOut) -> None:
    fields(
        [
            ("id", deployment.id),
            ("name", deployment.name),
            ("project", deployment.project),
            ("user", deployment.user),
            ("state", label("deployment", deployment.health)),
            ("replicas", replicas_cell(deployment)),
            ("failures", deployment.failures),
            ("why", next_start(deployment) or None),
            ("created", deployment.created_at),
        ]
    )
    print()
    table(
        ["id", "state", "gpus", "started", "finished", "why"],
        [
            (r.id, state_text(r.state), gpus_cell(r), r.started_at, r.finished_at, why(r))
            for r in deployment.workloads
        ],
    )
    print()
    say("cli.deployments.template")
    print(_yaml(deployment.template), end="")


def _yaml(template: dict[str, Any]) -> str:
    """The template as YAML, as a spec file would say it: no empty fields, sizes in units."""
    return yaml.safe_dump(_readable(template), allow_unicode=True, sort_keys=False)


def _readable(mapping: dict[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    for key, value in mapping.items():
        if value in (None, "", {}, []):
            continue
        if isinstance(value, dict):
            value = _readable(value)
        elif key in _SIZES and isinstance(value, int):
            value = format_bytes(value)
        shown[key] = value
    return shown


@app.command()
def scale(deployment_id: DeploymentId, replicas: Replicas, json: JsonOption = False) -> None:
    """Want this many replicas: missing ones start, surplus ones stop (youngest first)."""
    with connect() as client:
        deployment = client.deployments.scale(deployment_id, replicas)
    if json:
        print_json(deployment)
        return
    say(
        "cli.deployments.scaled",
        id=deployment.id,
        name=deployment.name,
        replicas=deployment.replicas,
    )


@app.command()
def stop(deployment_id: DeploymentId, json: JsonOption = False) -> None:
    """Stop every replica; the deployment stays, and 'start' brings it back."""
    with connect() as client:
        deployment = client.deployments.stop(deployment_id)
    if json:
        print_json(deployment)
        return
    say("cli.deployments.stopping", id=deployment.id, name=deployment.name)


@app.command()
def start(deployment_id: DeploymentId, json: JsonOption = False) -> None:
    """Start a stopped deployment again, with as many replicas as before."""
    with connect() as client:
        deployment = client.deployments.start(deployment_id)
    if json:
        print_json(deployment)
        return
    say(
        "cli.deployments.started",
        id=deployment.id,
        name=deployment.name,
        replicas=deployment.replicas,
    )


@app.command()
def remove(deployment_id: DeploymentId, json: JsonOption = False) -> None:
    """Forget a stopped deployment whose replicas have all ended; its name is free again."""
    with connect() as client:
        client.deployments.remove(deployment_id)
    data = {"id": deployment_id, "removed": True}
    report(json, "cli.deployments.removed", data, id=deployment_id)


@app.command()
def logs(
    deployment_id: DeploymentId,
    replica_id: ReplicaId,
    follow: Follow = False,
    tail: Tail = None,
    json: JsonOption = False,
) -> None:
    """Print a replica's output; --follow streams it until the replica ends. With --json:
    JSON Lines, {"line": …} per line (with --follow, {"replica": …} at the end)."""
    with connect() as client:
        if not follow:
            chunk = client.deployments.logs(deployment_id, replica_id, tail=tail)
            stream_log([chunk.text], json)
            return
        stream_log(client.deployments.follow(deployment_id, replica_id, tail=tail), json)
        deployment = client.deployments.get(deployment_id)
    ended = next((r for r in deployment.workloads if r.id == replica_id), None)
    if ended is None:
        return
    if json:
        print_json_line({"replica": ended.model_dump(mode="json")})
    else:
        say("cli.deployments.replica_ended", id=ended.id, how=why(ended) or ended.state)
