"""`suanli envs`: dev environments (JupyterLab, a web terminal, VS Code, SSH) on the GPUs."""

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from suanli.cli import config
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
    history,
    load_spec,
    parse_env,
    placement,
    resources,
    state_text,
    why,
)
from suanli.cli.output import (
    JsonOption,
    fail,
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
from suanli.client import Client
from suanli.core.durations import format_duration
from suanli.core.states import State
from suanli.schemas.devenvs import DevEnvDetailOut, DevEnvOut

app = App(
    help="Dev environments: create, list, show, stop, restart, remove, logs, SSH config.",
    no_args_is_help=True,
)
EnvId = Annotated[int, typer.Argument(help="Dev environment id (see 'suanli envs list').")]
_FRACTION = ("gpu_memory", "gpu_compute_percent")
POLL_SECONDS = 0.5


@app.command()
def create(
    name: Annotated[
        str | None, typer.Argument(help="Its name, also the SSH user name (or the file's 'name').")
    ] = None,
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Project to run in.")
    ] = None,
    gpus: GpusOption = None,
    gpu_model: GpuModelOption = None,
    gpu_memory: GpuMemoryOption = None,
    gpu_compute: GpuComputeOption = None,
    cpus: CpusOption = None,
    memory: MemoryOption = None,
    tools: Annotated[
        list[str] | None,
        typer.Option(
            "--tool",
            "-t",
            help="jupyter, terminal, vscode or ssh; repeat for several "
            "(default: jupyter, terminal and ssh).",
        ),
    ] = None,
    environment: Annotated[
        str | None,
        typer.Option(help="A Python or conda environment the administrator prepared."),
    ] = None,
    workdir: WorkdirOption = None,
    idle_timeout: Annotated[
        str | None, typer.Option(help="Stop after this long unused, e.g. 30m.")
    ] = None,
    max_duration: MaxDurationOption = None,
    priority: PriorityOption = None,
    env: EnvOption = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help="A spec in YAML (or JSON); the options given override its fields.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    json: JsonOption = False,
) -> None:
    """Create a dev environment: suanli envs create lab -p vision --gpu-memory 10Gi"""
    spec = load_spec(file, "cli.bad_devenv_yaml") if file else {}
    given = {
        "project": project,
        "name": name,
        "tools": tools or None,
        "environment": environment,
        "workdir": workdir,
        "idle_timeout": idle_timeout,
        "max_duration": max_duration,
        "priority": priority,
    }
    spec.update({key: value for key, value in given.items() if value is not None})
    if env:
        base_env = spec.get("env")
        spec["env"] = {**(base_env if isinstance(base_env, dict) else {}), **parse_env(env)}
    wanted = resources(
        gpus=gpus,
        gpu_model=gpu_model,
        gpu_memory=gpu_memory,
        gpu_compute_percent=gpu_compute,
        cpus=cpus,
        memory=memory,
    )
    if wanted:
        base = spec.get("resources")
        base = dict(base) if isinstance(base, dict) else {}
        # Whole GPUs or a fraction of one: what the command line asks for replaces the
        # file's choice instead of clashing with it.
        if "gpus" in wanted:
            base = {k: v for k, v in base.items() if k not in _FRACTION}
        if any(key in wanted for key in _FRACTION):
            base.pop("gpus", None)
        spec["resources"] = {**base, **wanted}
    with connect() as client:
        created = client.devenvs.create(spec)
    if json:
        print_json(created)
        return
    say(
        "cli.devenv_created",
        id=created.id,
        name=created.name,
        state=label("state", created.state),
    )
    if created.pending:
        say("cli.job_pending", reason=created.pending.message)
    say("cli.devenv_next", id=created.id)


@app.command("list")
def list_envs(
    project: Annotated[str | None, typer.Option("--project", "-p")] = None,
    user: Annotated[str | None, typer.Option()] = None,
    state: Annotated[str | None, typer.Option(help="active or finished.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    json: JsonOption = False,
) -> None:
    """List dev environments, newest first."""
    with connect() as client:
        envs = client.devenvs.list(project=project, user=user, state=state, limit=limit)
    if json:
        print_json(envs)
        return
    table(
        ["id", "name", "project", "user", "state", "gpus", "tools", "age"],
        [
            (
                e.id,
                e.name,
                e.project,
                e.user,
                state_text(e.state),
                gpus_cell(e),
                _tools(e),
                age(e.submitted_at),
            )
            for e in envs
        ],
    )


@app.command()
def show(env_id: EnvId, json: JsonOption = False) -> None:
    """Show a dev environment: state, resources, its tools' addresses, how to SSH in."""
    with connect() as client:
        env = client.devenvs.get(env_id)
        keys = client.ssh_keys.list() if env.ssh else []
    if json:
        print_json(env)
        return
    fields(
        [
            ("id", env.id),
            ("name", env.name),
            ("project", env.project),
            ("user", env.user),
            ("state", label("state", env.state)),
            ("gpus", gpus_cell(env)),
            ("tools", _tools(env)),
            ("environment", env.environment),
            ("workdir", env.spec.get("workdir")),
            ("placement", placement(env)),
            ("why", why(env)),
            ("submitted", env.submitted_at),
            ("started", env.started_at),
            ("finished", env.finished_at),
            ("idle_timeout", _duration(env.idle_timeout_seconds)),
            ("max_duration", _duration(env.max_duration_seconds)),
        ]
    )
    for warning in env.warnings:
        fail(warning)
    print()
    _access(env, has_keys=bool(keys))
    print()
    history(env.history)


@app.command()
def stop(
    env_id: EnvId,
    wait: Annotated[bool, typer.Option(help="Return once it has stopped.")] = False,
    json: JsonOption = False,
) -> None:
    """Stop it: its processes end; its files stay, and 'restart' starts it again."""
    with connect() as client:
        env = client.devenvs.stop(env_id)
        while wait and not State(env.state).terminal:
            time.sleep(POLL_SECONDS)
            env = client.devenvs.get(env_id)
    if json:
        print_json(env)
        return
    stopped = State(env.state).terminal
    key = "cli.devenv_stopped" if stopped else "cli.devenv_stopping"
    say(key, id=env.id, name=env.name, state=label("state", env.state))


@app.command()
def restart(env_id: EnvId, json: JsonOption = False) -> None:
    """Start a stopped environment again, in place (same id, addresses and SSH name)."""
    with connect() as client:
        env = client.devenvs.restart(env_id)
    if json:
        print_json(env)
        return
    say("cli.devenv_restarted", id=env.id, name=env.name, state=label("state", env.state))


@app.command("rm")
def remove(env_id: EnvId, json: JsonOption = False) -> None:
    """Forget a stopped environment; its name is free again (its files stay)."""
    with connect() as client:
        client.devenvs.remove(env_id)
    report(json, "cli.devenv_removed", {"id": env_id, "removed": True}, id=env_id)


@app.command()
def logs(
    env_id: EnvId, follow: Follow = False, tail: Tail = None, json: JsonOption = False
) -> None:
    """Print what its tools logged; --follow streams it until the environment stops.
    With --json: JSON Lines, {"line": …} per line (with --follow, {"devenv": …} at the end)."""
    with connect() as client:
        if follow:
            _follow(client, env_id, tail, json=json)
            return
        stream_log([client.devenvs.logs(env_id, tail=tail).text], json)


@app.command("ssh-config")
def ssh_config(env_id: EnvId, json: JsonOption = False) -> None:
    """Print its ~/.ssh/config entry: suanli envs ssh-config 12 >> ~/.ssh/config"""
    with connect() as client:
        env = client.devenvs.get(env_id)
    if env.ssh is None:
        fail(t("cli.devenv_no_ssh", name=env.name))
        raise typer.Exit(1)
    if json:
        print_json(env.ssh)
        return
    sys.stdout.write(env.ssh.config)


def _access(env: DevEnvDetailOut, *, has_keys: bool) -> None:
    """The tools' addresses on the server, the SSH command and the ~/.ssh/config entry."""
    if env.urls:
        say("cli.devenv_urls")
        server = config.load().url.rstrip("/")
        for tool, path in env.urls.items():
            say("cli.devenv_url", tool=label("tool", tool), url=server + path)
    elif any(tool != "ssh" for tool in env.tools):
        say("cli.devenv_urls_later")
    if env.ssh is None:
        return
    print()
    say("cli.devenv_ssh_command", command=env.ssh.command)
    say("cli.devenv_ssh_config", host=f"suanli-{env.name}")
    sys.stdout.write(env.ssh.config)
    if not has_keys:
        say("cli.devenv_no_ssh_keys")


def _follow(client: Client, env_id: int, tail: int | None, *, json: bool) -> None:
    stream_log(client.devenvs.follow(env_id, tail=tail), json)
    env = client.devenvs.get(env_id)
    if json:
        print_json_line({"devenv": env.model_dump(mode="json")})
        return
    how = why(env) or label("state", env.state)
    say("cli.devenv_ended", id=env.id, name=env.name, how=how)


def _tools(env: DevEnvOut) -> str:
    return ", ".join(label("tool", tool) for tool in env.tools)


def _duration(seconds: int | None) -> str | None:
    return format_duration(seconds) if seconds else None
