"""`suanli services`, `suanli keys` and `suanli prompts`: model services behind the gateway.

Services are named as users think of them, by project and name (`-p nlp chat`); the API's ids
are looked up. `--wait` follows a deploy or an update until its replicas answer their health
check, or shows why they do not: the reason and the last lines of the failed replica's log
(an engine that exits at start says why there).
"""

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from suanli.cli.commands import App
from suanli.cli.deployments import HEALTH_STYLES, _yaml
from suanli.cli.jobs import (
    CpusOption,
    Follow,
    MemoryOption,
    Tail,
    age,
    gpus_cell,
    parse_env,
    resources,
    state_text,
    why,
)
from suanli.cli.output import (
    JsonOption,
    error_console,
    fail,
    fields,
    label,
    print_json,
    report,
    say,
    stream_log,
    t,
    table,
)
from suanli.cli.session import connect
from suanli.client import Client
from suanli.client.services import Reply, last_failed, live_replicas, progress
from suanli.core import documents
from suanli.core.durations import parse_duration
from suanli.schemas.services import ServiceDetailOut, ServiceOut, SweepOut

app = App(
    help="Model services: deploy a model with an engine, call it through the gateway "
    "(deploy, list, show, update, scale, stop, start, rm, logs, call, usage, engines).",
    no_args_is_help=True,
)
keys_app = App(help="API keys for the model gateway (create, list, revoke).", no_args_is_help=True)
prompts_app = App(help="A project's prompt templates (list, save, show).", no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="The service's name in its project.")]
Project = Annotated[str, typer.Option("--project", "-p", help="Its project.")]
ReplicasOption = Annotated[
    str | None, typer.Option("--replicas", "-r", help="A number, or min..max to autoscale.")
]
ModelOption = Annotated[
    str | None, typer.Option(help="The model version: name@version or project/name@tag.")
]
ArgOption = Annotated[
    list[str] | None,
    typer.Option("--arg", help="An argument for the engine (repeat; --arg=--flag for flags)."),
]
EnvOption = Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE.")]
GpusOption = Annotated[int | None, typer.Option(help="Whole GPUs per replica.")]
Wait = Annotated[
    bool, typer.Option("--wait", help="Follow it until its replicas are ready, or say why not.")
]
Timeout = Annotated[str, typer.Option(help="How long --wait waits, e.g. 90, 10m.")]
LOG_LINES = 20  # of a failed replica's log, shown by --wait
POLL_SECONDS = 0.5


def _service_text(service: ServiceOut) -> Text:
    return Text(label("deployment", service.health), style=HEALTH_STYLES.get(service.health, ""))


def _replicas_cell(service: ServiceOut) -> str:
    """Ready of wanted, and the autoscaling range when there is one: "1/2 (0..4)"."""
    shown = f"{service.ready}/{service.replicas}"
    if service.min_replicas != service.max_replicas:
        shown += f" ({service.min_replicas}..{service.max_replicas})"
    return shown


def _served(service: ServiceOut) -> str:
    return " ".join(part for part in (service.engine, service.model) if part) or "-"


@app.command()
def deploy(
    name: Annotated[
        str | None, typer.Argument(help="The service's name (the model name callers give).")
    ] = None,
    project: Annotated[str | None, typer.Option("--project", "-p", help="Its project.")] = None,
    engine: Annotated[str | None, typer.Option(help="A registered engine, e.g. vllm.")] = None,
    model: ModelOption = None,
    replicas: ReplicasOption = None,
    gpus: GpusOption = None,
    cpus: CpusOption = None,
    memory: MemoryOption = None,
    arg: ArgOption = None,
    env: EnvOption = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help="A service spec in YAML (or JSON); the options given override it.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    wait: Wait = False,
    timeout: Timeout = "10m",
    json: JsonOption = False,
) -> None:
    """Deploy a model service: suanli services deploy chat -p nlp --engine vllm --model qwen@prod

    Callers reach it through the gateway as model `project/name`."""
    spec = _load(file) if file else {}
    given = {"name": name, "project": project, "engine": engine, "model": model}
    spec.update({key: value for key, value in given.items() if value is not None})
    if replicas is not None:
        spec["replicas"] = replicas
    if arg:
        spec["args"] = list(arg)
    if env:
        base = spec.get("env")
        spec["env"] = {**(base if isinstance(base, dict) else {}), **parse_env(env)}
    wanted = resources(gpus=gpus, cpus=cpus, memory=memory)
    if wanted:
        base = spec.get("resources")
        spec["resources"] = {**(base if isinstance(base, dict) else {}), **wanted}
    if not spec.get("name"):
        raise typer.BadParameter(t("cli.services.no_name"), param_hint="NAME")
    limit = _seconds(timeout, "--timeout")
    with connect() as client:
        service = client.services.deploy(spec)
        if not json:
            say("cli.services.deployed", name=service.name, project=service.project)
        if wait:
            service = _wait(client, service, set(), limit, json)
    if json:
        print_json(service)
    elif wait:
        say("cli.services.ready", name=service.name, endpoint=service.endpoint)


def _load(file: Path) -> dict[str, Any]:
    """A spec file as a mapping; what is wrong with it is one line naming the file (exit 2)."""
    try:
        spec = documents.read_file(file)
    except documents.DocumentError as error:
        reason = t(error.key, **error.params)
    except OSError as error:
        reason = error.strerror or type(error).__name__
    else:
        if isinstance(spec, dict):
            return spec
        reason = t("cli.services.not_mapping")
    fail(t("cli.services.bad_file", reason=reason), "usage", [_problem("--file", reason)])
    raise typer.Exit(2)


def _problem(field: str, message: str) -> dict[str, str]:
    return {"field": field, "type": "invalid", "message": message}


def _seconds(text: str, option: str) -> int:
    try:
        return parse_duration(text)
    except ValueError:
        raise typer.BadParameter(
            t("cli.services.bad_duration", value=text), param_hint=option
        ) from None


def _wait(
    client: Client, service: ServiceDetailOut, old: set[int], limit: int, json: bool
) -> ServiceDetailOut:
    """Poll until the replicas (of the new template, when `old` names those it replaces)
    are ready; on a failure show why and exit 1, as on running out of time."""
    deadline = time.monotonic() + limit
    with _status() as show:
        for current in client.services.watch(service.id, poll=POLL_SECONDS):
            state = progress(current, old)
            if state == "ready":
                return current
            if state == "failed":
                break
            if time.monotonic() > deadline:
                fail(t("cli.services.wait_timeout", name=service.name, timeout=limit), "timeout")
                raise typer.Exit(1)
            show(_status_line(current))
    _explain(client, current, json)
    raise typer.Exit(1)


def _status_line(service: ServiceDetailOut) -> str:
    """Where it stands, and why it is not ready when the server says."""
    key = "cli.services.waiting_because" if service.reason else "cli.services.waiting"
    return t(
        key,
        name=service.name,
        health=label("deployment", service.health),
        ready=service.ready,
        replicas=service.replicas,
        reason=service.reason,
    )


@contextmanager
def _status() -> Iterator[Callable[[str], None]]:
    """A spinner with a live line on a terminal; elsewhere (a pipe, a log) a line on stderr
    each time the status changes."""
    console = error_console()
    if console.is_terminal:
        with console.status("") as spinner:
            yield lambda text: spinner.update(text)
        return
    last = [""]

    def show(text: str) -> None:
        if text != last[0]:
            last[0] = text
            console.print(text)

    yield show


def _explain(client: Client, service: ServiceDetailOut, json: bool) -> None:
    """Why it is not ready: the reason, and the tail of the failed replica's log."""
    reason = service.reason or label("deployment", service.health)
    message = t("cli.services.failed", name=service.name, reason=reason)
    replica = last_failed(service)
    log = ""
    if replica is not None:
        log = client.services.logs(service.id, replica, tail=LOG_LINES).text
    if json:
        fail(message + ("\n" + log if log else ""), "service-failed")
        return
    fail(message)
    if log:
        console = error_console()
        console.print(t("cli.services.log_tail", id=replica, lines=LOG_LINES))
        console.print(Text(log.rstrip("\n"), style="dim"))


@app.command("list")
def list_services(
    project: Annotated[str | None, typer.Option("--project", "-p")] = None,
    json: JsonOption = False,
) -> None:
    """List model services, newest first: ready replicas of those wanted, and why not."""
    with connect() as client:
        found = client.services.list(project)
    if json:
        print_json(found)
        return
    table(
        ["name", "project", "served_model", "state", "replicas", "age", "why"],
        [
            (
                s.name,
                s.project,
                _served(s),
                _service_text(s),
                _replicas_cell(s),
                age(s.created_at),
                s.reason,
            )
            for s in found
        ],
    )


@app.command()
def show(name: Name, project: Project, json: JsonOption = False) -> None:
    """Show a service: how to call it, its replicas and its template."""
    with connect() as client:
        service = client.services.find(project, name)
    if json:
        print_json(service)
        return
    fields(
        [
            ("name", service.name),
            ("project", service.project),
            ("user", service.user),
            ("served_model", _served(service)),
            ("state", label("deployment", service.health)),
            ("replicas", _replicas_cell(service)),
            ("failures", service.failures),
            ("why", service.reason or None),
            ("endpoint", service.endpoint),
            ("created", service.created_at),
        ]
    )
    print()
    table(
        ["id", "state", "ready", "gpus", "started", "finished", "why"],
        [
            (r.id, state_text(r.state), r.ready, gpus_cell(r), r.started_at, r.finished_at, why(r))
            for r in service.replicas_list
        ],
    )
    print()
    say("cli.deployments.template")
    print(_yaml(service.template), end="")


@app.command()
def update(
    name: Name,
    project: Project,
    model: ModelOption = None,
    arg: ArgOption = None,
    env: EnvOption = None,
    gpus: GpusOption = None,
    cpus: CpusOption = None,
    memory: MemoryOption = None,
    replicas: ReplicasOption = None,
    wait: Wait = False,
    timeout: Timeout = "10m",
    json: JsonOption = False,
) -> None:
    """Roll out a new model version, arguments, environment or resources, one replica at a time
    (each new one ready before an old one stops)."""
    change: dict[str, Any] = {}
    if model is not None:
        change["model"] = model
    if arg is not None:
        change["args"] = list(arg)
    if replicas is not None:
        change["replicas"] = replicas
    limit = _seconds(timeout, "--timeout")
    with connect() as client:
        service = client.services.find(project, name)
        if env:
            change["env"] = {**service.template.get("env", {}), **parse_env(env)}
        wanted = resources(gpus=gpus, cpus=cpus, memory=memory)
        if wanted:
            change["resources"] = {**service.template.get("resources", {}), **wanted}
        if not change:
            raise typer.BadParameter(t("cli.services.nothing_to_update"), param_hint="--model")
        rolled = set(change) - {"replicas"}
        old = live_replicas(service) if rolled else set()
        service = client.services.update(service.id, change)
        if not json:
            say("cli.services.updating", name=service.name)
        if wait:
            service = _wait(client, service, old, limit, json)
    if json:
        print_json(service)
    elif wait:
        say("cli.services.ready", name=service.name, endpoint=service.endpoint)


@app.command()
def scale(
    name: Name,
    project: Project,
    replicas: Annotated[
        str, typer.Option("--replicas", "-r", help="A number, or min..max to autoscale.")
    ],
    json: JsonOption = False,
) -> None:
    """Want this many replicas, or autoscale within a range (0..4: none while idle)."""
    with connect() as client:
        service = client.services.find(project, name)
        service = client.services.scale(service.id, replicas)
    data = service.model_dump(mode="json")
    report(json, "cli.services.scaled", data, name=service.name, replicas=_replicas_cell(service))


@app.command()
def stop(name: Name, project: Project, json: JsonOption = False) -> None:
    """Stop every replica; the service stays, and 'start' brings it back."""
    with connect() as client:
        service = client.services.stop(client.services.find(project, name).id)
    data = service.model_dump(mode="json")
    report(json, "cli.services.stopping", data, name=service.name, project=project)


@app.command()
def start(name: Name, project: Project, json: JsonOption = False) -> None:
    """Start a stopped service again, with as many replicas as before."""
    with connect() as client:
        service = client.services.start(client.services.find(project, name).id)
    data = service.model_dump(mode="json")
    report(json, "cli.services.started", data, name=service.name)


@app.command("rm")
def remove(name: Name, project: Project, json: JsonOption = False) -> None:
    """Forget a stopped service whose replicas have all ended; its usage stays."""
    with connect() as client:
        service = client.services.find(project, name)
        client.services.remove(service.id)
    data = {"id": service.id, "name": name, "project": project, "removed": True}
    report(json, "cli.services.removed", data, name=name)


@app.command()
def logs(
    name: Name,
    project: Project,
    replica: Annotated[
        int | None, typer.Option(help="A replica's id (default: the newest; see 'show').")
    ] = None,
    tail: Tail = None,
    follow: Follow = False,
    json: JsonOption = False,
) -> None:
    """Print a replica's log (the engine's output); --follow streams it until it ends."""
    with connect() as client:
        service = client.services.find(project, name)
        if replica is None:
            if not service.replicas_list:
                fail(t("cli.services.no_replicas", name=name))
                raise typer.Exit(1)
            replica = service.replicas_list[0].id
        if follow:
            stream_log(client.services.follow(service.id, replica, tail=tail), json)
        else:
            stream_log([client.services.logs(service.id, replica, tail=tail).text], json)


@app.command()
def call(
    name: Name,
    prompt: Annotated[str, typer.Argument(help="What to say to the model.")],
    project: Project,
    system: Annotated[str | None, typer.Option(help="A system message.")] = None,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="At most this many.")] = None,
    temperature: Annotated[float | None, typer.Option(min=0, max=2)] = None,
    json: JsonOption = False,
) -> None:
    """Chat with a service through the gateway (/v1/chat/completions, as yourself): the
    answer streams in, then the tokens counted and how long it took."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    parameters = {"max_tokens": max_tokens, "temperature": temperature}
    given = {key: value for key, value in parameters.items() if value is not None}
    with connect() as client:
        reply = _stream(client.services.chat(project, name, messages, **given), not json)
    if json:
        print_json(
            {
                "text": reply.text,
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "latency_s": round(reply.latency, 4),
                "first_token_s": None if reply.first_token is None else round(reply.first_token, 4),
            }
        )
        return
    first = "-" if reply.first_token is None else f"{reply.first_token * 1000:.0f}"
    error_console().print(
        Text(
            t(
                "cli.services.call_stats",
                prompt=_count(reply.prompt_tokens),
                completion=_count(reply.completion_tokens),
                seconds=f"{reply.latency:.2f}",
                first=first,
            ),
            style="dim",
        )
    )


def _stream(pieces: Iterator[str | Reply], echo: bool) -> Reply:
    """Write the text as it arrives (when `echo`); the Reply that ends the stream."""
    for piece in pieces:
        if isinstance(piece, Reply):
            if echo:
                sys.stdout.write("\n")
                sys.stdout.flush()
            return piece
        if echo:
            sys.stdout.write(piece)
            sys.stdout.flush()
    raise RuntimeError("the gateway's stream ended without a reply")  # never: chat ends so


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


@app.command()
def usage(
    project: Project,
    service: Annotated[str | None, typer.Option(help="Only this service.")] = None,
    by: Annotated[str, typer.Option(help="hour or day.")] = "hour",
    since: Annotated[
        str | None, typer.Option(help="From: a date (2025-01-31) or a duration ago (7d).")
    ] = None,
    csv: Annotated[
        Path | None, typer.Option(help="Write the rows as CSV to this file ('-': stdout).")
    ] = None,
    json: JsonOption = False,
) -> None:
    """Requests and tokens per hour or day, model, user and key."""
    start = _since(since) if since else None
    with connect() as client:
        if csv is not None:
            text = client.service_usage.csv(project, service=service, group=by, since=start)
        else:
            rows = client.service_usage.query(project, service=service, group=by, since=start)
    if csv is not None:
        _write_csv(csv, text, json)
        return
    if json:
        print_json(rows)
        return
    table(
        ["period", "served_model", "user", "key", "requests", "errors", "tokens_in", "tokens_out"],
        [
            (
                r.period,
                r.model,
                r.user,
                r.key or "-",
                r.requests,
                r.errors,
                r.prompt_tokens,
                r.completion_tokens,
            )
            for r in rows
        ],
    )


def _since(text: str) -> datetime:
    """A date or time (UTC unless it says), or a duration back from now."""
    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            t("cli.services.bad_since", value=text), param_hint="--since"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _write_csv(path: Path, text: str, json: bool) -> None:
    if str(path) == "-":
        sys.stdout.write(text)
        return
    path.write_text(text, encoding="utf-8")
    rows = max(0, len(text.strip().splitlines()) - 1)
    data = {"path": str(path), "rows": rows}
    report(json, "cli.services.usage_written", data, path=str(path), rows=rows)


@app.command()
def sweep(
    name: Name,
    project: Project,
    max_concurrency: Annotated[
        int, typer.Option(help="The highest concurrency (1, 2, 4, … up to it).")
    ] = 8,
    prompts: Annotated[int, typer.Option(help="Requests at each concurrency.")] = 16,
    input_len: Annotated[int, typer.Option(help="Prompt tokens.")] = 128,
    output_len: Annotated[int, typer.Option(help="Output tokens.")] = 64,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow it until its curves are in.")
    ] = False,
    json: JsonOption = False,
) -> None:
    """Capacity planning: a load sweep of the service through the gateway with vLLM's serving
    benchmark, as a job; `suanli services size` answers from its curves."""
    spec = {
        "max_concurrency": max_concurrency,
        "prompts": prompts,
        "input_len": input_len,
        "output_len": output_len,
    }
    with connect() as client:
        service = client.services.find(project, name)
        started = client.services.sweep(service.id, spec)
        if not wait:
            report(
                json,
                "cli.services.sweep_started",
                started.model_dump(mode="json"),
                id=started.id,
                job=started.job_id,
                name=name,
            )
            return
        with _status() as show:
            while (done := _sweep_of(client, service.id, started.id)).state == "running":
                show(t("cli.services.sweep_running", id=done.id, job=done.job_id))
                time.sleep(2)
    if json:
        print_json(done)
    else:
        _show_sweep(done)
    if done.state != "succeeded":
        raise typer.Exit(1)


def _sweep_of(client: Client, service_id: int, sweep_id: int) -> SweepOut:
    return next(s for s in client.services.sweeps(service_id) if s.id == sweep_id)


def _show_sweep(found: SweepOut) -> None:
    say("cli.services.sweep_result", id=found.id, state=found.state, job=found.job_id)
    if found.error:
        error_console().print(found.error)
    table(
        [
            "concurrency",
            "req/s",
            "output tok/s",
            "TTFT p50 ms",
            "TTFT p95 ms",
            "TPOT p95 ms",
            "failed",
        ],
        [
            (
                p.concurrency,
                f"{p.requests_per_second:.2f}",
                f"{p.output_tokens_per_second:.1f}",
                f"{p.ttft_p50_ms:.1f}",
                f"{p.ttft_p95_ms:.1f}",
                f"{p.tpot_p95_ms:.1f}",
                p.failed,
            )
            for p in found.points
        ],
    )


@app.command()
def size(
    name: Name,
    project: Project,
    rps: Annotated[float, typer.Option(help="Requests per second to serve.")],
    ttft_p95: Annotated[float, typer.Option(help="The highest TTFT p95 allowed, in ms.")],
    sweep_id: Annotated[
        int | None, typer.Option("--sweep", help="A sweep (default: the newest).")
    ] = None,
    json: JsonOption = False,
) -> None:
    """How many replicas (GPUs) serve RPS requests/s at a TTFT p95 of at most TTFT_P95 ms,
    from the service's measured load sweep."""
    with connect() as client:
        service = client.services.find(project, name)
        answer = client.services.size(service.id, rps, ttft_p95, sweep_id)
    if json:
        print_json(answer)
    elif answer.replicas is None:
        say("cli.services.size_unmet", best=f"{answer.best_ttft_p95_ms:.1f}", sweep=answer.sweep_id)
    else:
        say(
            "cli.services.size_met",
            replicas=answer.replicas,
            concurrency=answer.concurrency,
            rps=f"{answer.requests_per_second_per_replica:.2f}",
            gpus=answer.gpus or 0,
            sweep=answer.sweep_id,
        )


@app.command()
def engines(json: JsonOption = False) -> None:
    """The engines the administrator registered, to deploy with."""
    with connect() as client:
        found = client.services.engines()
    if json:
        print_json(found)
        return
    table(
        ["name", "version", "protocol", "needs_model"],
        [(e.name, e.version, e.protocol, e.needs_model) for e in found],
    )


@keys_app.command("create")
def create_key(
    name: Annotated[str, typer.Argument(help="A name to know the key by.")],
    project: Project,
    models: Annotated[
        str | None, typer.Option(help="Only these services, comma-separated (default: all).")
    ] = None,
    expires: Annotated[str | None, typer.Option(help="Valid for, e.g. 30d.")] = None,
    rpm: Annotated[int | None, typer.Option(help="At most N requests a minute.")] = None,
    tpm: Annotated[int | None, typer.Option(help="At most N tokens a minute.")] = None,
    budget: Annotated[int | None, typer.Option(help="At most N tokens per --per.")] = None,
    per: Annotated[str, typer.Option(help="The budget's period: day or month.")] = "month",
    json: JsonOption = False,
) -> None:
    """Create an API key for the project's services; it is shown only this once."""
    names = [m.strip() for m in models.split(",") if m.strip()] if models else None
    with connect() as client:
        key = client.service_keys.create(
            project,
            name,
            models=names,
            expires_in=expires,
            requests_per_minute=rpm,
            tokens_per_minute=tpm,
            token_budget=budget,
            budget_period=per,
        )
    if json:
        print_json(key)
        return
    say("cli.keys.created", name=key.name, id=key.id, project=key.project)
    print(key.key)
    error_console().print(Text(t("cli.keys.shown_once"), style="bold yellow"))


@keys_app.command("list")
def list_keys(project: Project, json: JsonOption = False) -> None:
    """The project's keys you may see, with what they spent this period."""
    with connect() as client:
        found = client.service_keys.list(project)
    if json:
        print_json(found)
        return
    table(
        ["id", "name", "prefix", "user", "services", "limits", "budget", "expires", "last_used"],
        [
            (
                k.id,
                Text(k.name, style="dim" if k.revoked_at else ""),
                k.prefix,
                k.user,
                ", ".join(k.models) if k.models else t("cli.keys.all_services"),
                _limits(k.requests_per_minute, k.tokens_per_minute),
                _budget(k.used_in_period, k.token_budget, k.budget_period),
                t("cli.keys.revoked") if k.revoked_at else k.expires_at,
                k.last_used_at,
            )
            for k in found
        ],
    )


def _limits(rpm: int | None, tpm: int | None) -> str:
    parts = [t("cli.keys.rpm", n=rpm) if rpm else "", t("cli.keys.tpm", n=tpm) if tpm else ""]
    return ", ".join(part for part in parts if part) or "-"


def _budget(used: int, budget: int | None, period: str) -> str:
    if budget is None:
        return t("cli.keys.spent", used=used, period=label("period", period))
    return t("cli.keys.budget", used=used, budget=budget, period=label("period", period))


@keys_app.command("revoke")
def revoke_key(
    key_id: Annotated[int, typer.Argument(help="The key's id (see 'suanli keys list').")],
    json: JsonOption = False,
) -> None:
    """Revoke a key: the gateway refuses it from now on."""
    with connect() as client:
        key = client.service_keys.revoke(key_id)
    report(json, "cli.keys.revoked_one", key.model_dump(mode="json"), id=key.id, name=key.name)


@prompts_app.command("list")
def list_prompts(project: Project, json: JsonOption = False) -> None:
    """The project's prompt templates, each at its newest version."""
    with connect() as client:
        found = client.prompts.list(project)
    if json:
        print_json(found)
        return
    table(
        ["name", "version", "variables", "user", "created"],
        [(p.name, p.version, ", ".join(p.variables), p.user, p.created_at) for p in found],
    )


@prompts_app.command("save")
def save_prompt(
    name: Annotated[str, typer.Argument(help="The prompt's name.")],
    project: Project,
    template: Annotated[str, typer.Option(help="The text; {variable} marks what is filled in.")],
    system: Annotated[str, typer.Option(help="A system message.")] = "",
    json: JsonOption = False,
) -> None:
    """Save a new version of a prompt template (the first one creates it)."""
    with connect() as client:
        saved = client.prompts.save(project, name, template, system=system)
    data = saved.model_dump(mode="json")
    variables = ", ".join(saved.variables) or "-"
    report(json, "cli.prompts.saved", data, name=name, version=saved.version, variables=variables)


@prompts_app.command("show")
def show_prompt(
    name: Annotated[str, typer.Argument(help="The prompt's name.")],
    project: Project,
    json: JsonOption = False,
) -> None:
    """A prompt's versions, newest first, and the newest one's text."""
    with connect() as client:
        versions = client.prompts.versions(project, name)
    if json:
        print_json(versions)
        return
    table(
        ["version", "variables", "user", "created"],
        [(p.version, ", ".join(p.variables), p.user, p.created_at) for p in versions],
    )
    if versions:
        newest = versions[0]
        print()
        fields([("system", newest.system or None), ("template", newest.template)])
