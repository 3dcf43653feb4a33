"""`suanli run`, `suanli submit` and `suanli jobs`: work on the shared GPUs."""

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from suanli.cli.commands import App
from suanli.cli.output import (
    JsonOption,
    fail,
    fields,
    label,
    print_json,
    print_json_line,
    say,
    stream_log,
    t,
    table,
)
from suanli.cli.session import connect
from suanli.client import Client
from suanli.core import documents
from suanli.core.durations import format_duration
from suanli.core.quantities import format_bytes
from suanli.core.states import State
from suanli.schemas.jobs import EventOut, JobDetailOut, JobOut

app = App(help="Jobs: list, show, follow logs, cancel, resubmit.", no_args_is_help=True)
JobId = Annotated[int, typer.Argument(help="Job id.")]
Follow = Annotated[bool, typer.Option("--follow", "-f", help="Stream the output until it ends.")]
# `run` and `submit` keep -f for the spec file (as `envs create` does): following is long-only.
FollowJob = Annotated[
    bool,
    typer.Option(
        "--follow", help="Stream the output until the job ends; exit with the job's status."
    ),
]
SpecFile = Annotated[
    Path | None,
    typer.Option(
        "--file",
        "-f",
        help="A job spec in YAML (or JSON).",
        exists=True,
        dir_okay=False,
        readable=True,
    ),
]
Tail = Annotated[int | None, typer.Option(help="Only the last N lines.")]
# What `suanli run` and `suanli envs create` ask for the same way.
GpusOption = Annotated[int | None, typer.Option(help="Whole GPUs.")]
GpuModelOption = Annotated[str | None, typer.Option(help="Only GPUs of this model.")]
GpuMemoryOption = Annotated[str | None, typer.Option(help="A GPU fraction: memory, e.g. 10Gi.")]
GpuComputeOption = Annotated[int | None, typer.Option(help="A GPU fraction: compute %.")]
CpusOption = Annotated[float | None, typer.Option(help="CPU cores.")]
MemoryOption = Annotated[str | None, typer.Option(help="Memory, e.g. 16Gi.")]
PriorityOption = Annotated[str | None, typer.Option(help="high, normal or low.")]
MaxDurationOption = Annotated[str | None, typer.Option(help="e.g. 30m, 2h, 1d.")]
WorkdirOption = Annotated[str | None, typer.Option(help="Working directory.")]
EnvOption = Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE.")]

STATE_STYLES = {
    "pending": "yellow",
    "admitted": "cyan",
    "starting": "cyan",
    "running": "green",
    "succeeded": "blue",
    "failed": "bold red",
    "cancelled": "dim",
}


def state_text(state: str) -> Text:
    return Text(label("state", state), style=STATE_STYLES.get(state, ""))


def run(
    command: Annotated[list[str], typer.Argument(help="The command, after --.")],
    project: Annotated[str, typer.Option("--project", "-p", help="Project to run in.")],
    gpus: GpusOption = 0,
    gpu_model: GpuModelOption = None,
    gpu_memory: GpuMemoryOption = None,
    gpu_compute: GpuComputeOption = None,
    cpus: CpusOption = 1.0,
    memory: MemoryOption = "4Gi",
    priority: PriorityOption = "normal",
    max_duration: MaxDurationOption = None,
    retries: Annotated[int, typer.Option(help="Runs again on failure or preemption.")] = 0,
    preemptible: Annotated[bool, typer.Option(help="May be preempted.")] = True,
    name: Annotated[
        str, typer.Option(help="A name to recognise it by (default: from the command).")
    ] = "",
    workdir: WorkdirOption = None,
    env: EnvOption = None,
    follow: FollowJob = False,
    json: JsonOption = False,
) -> None:
    """Run a command as a job: suanli run -p vision --gpus 2 -- python train.py

    With --follow, the exit status is the job's: 0 when it succeeded, its exit code, 128+N
    when signal N killed it, 124 when it ran out of time, 130 when cancelled, else 1."""
    spec: dict[str, Any] = {
        "project": project,
        "name": name or name_from(command),
        "command": command,
        "priority": priority,
        "retries": retries,
        "preemptible": preemptible,
        "env": parse_env(env or []),
        "resources": resources(
            gpus=gpus,
            gpu_model=gpu_model,
            gpu_memory=gpu_memory,
            gpu_compute_percent=gpu_compute,
            cpus=cpus,
            memory=memory,
        ),
    }
    if max_duration:
        spec["max_duration"] = max_duration
    if workdir:
        spec["workdir"] = workdir
    _submit(spec, follow, json)


def submit(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="The spec file, also without -f.",
            exists=True,
            dir_okay=False,
            readable=True,
            metavar="FILE",
            show_default=False,
        ),
    ] = None,
    file: SpecFile = None,
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Overrides the file's.")
    ] = None,
    follow: FollowJob = False,
    json: JsonOption = False,
) -> None:
    """Submit a job spec file: suanli submit -f job.yaml (the same fields as `suanli run`'s
    options). --follow exits with the job's status, as `suanli run --follow` does."""
    if (path is None) == (file is None):
        raise typer.BadParameter(t("cli.submit_one_file"), param_hint="--file")
    spec = load_spec(file or path)
    if project:
        spec["project"] = project
    _submit(spec, follow, json)


def _submit(spec: dict[str, Any], follow: bool, json: bool) -> None:
    """Submit; with `follow`, stream the output and end with the job's exit status. Under
    --json and --follow the output is JSON Lines: {"job": …} as submitted, {"line": …} per
    line of output, {"job": …} as it ended."""
    with connect() as client:
        job = client.jobs.submit(spec)
        if json and follow:
            print_json_line({"job": job.model_dump(mode="json")})
        elif json:
            print_json(job)
        else:
            say("cli.job_submitted", id=job.id, state=label("state", job.state))
            if job.pending:
                say("cli.job_pending", reason=job.pending.message)
        if not follow:
            return
        status = exit_status(_follow(client, job.id, json=json))
    if status:
        raise typer.Exit(status)


def exit_status(job: JobOut) -> int:
    """A followed job's end as a shell's exit status: 0 when it succeeded; its own exit code;
    128+N when signal N killed it (as shells say); 124 when it ran out of time (as
    timeout(1)); 130 when cancelled (as after Ctrl-C); 1 for any other end (OOM, node lost)."""
    if job.state == "succeeded":
        return 0
    end = job.exit
    if end is None:
        return 1
    if end.reason == "cancelled":
        return 130
    if end.reason == "timeout":
        return 124
    if end.reason == "signal" and end.signal:
        return min(128 + end.signal, 255)
    if end.reason == "exit_code" and end.exit_code and 0 < end.exit_code < 256:
        return end.exit_code
    return 1


def name_from(command: Sequence[str]) -> str:
    """A job's name when none is given: the program and its first argument that is not an
    option, as a DNS label (`python train.py --lr 3e-4` → `python-train`), so that the jobs
    of a list can be told apart."""
    program, *arguments = command
    words = [Path(program).stem, *[Path(w).stem for w in arguments if w[:1] != "-"][:1]]
    slugs = [re.sub(r"[^a-z0-9]+", "-", word.lower()).strip("-") for word in words]
    name = "-".join(slug for slug in slugs if slug)[:63].rstrip("-")
    return name or "job"


@app.command("list")
def list_jobs(
    project: Annotated[str | None, typer.Option("--project", "-p")] = None,
    user: Annotated[str | None, typer.Option()] = None,
    state: Annotated[str | None, typer.Option(help="A state, or active / finished.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    json: JsonOption = False,
) -> None:
    """List jobs, newest first, with why each pending one waits."""
    with connect() as client:
        jobs = client.jobs.list(project=project, user=user, state=state, limit=limit)
    if json:
        print_json(jobs)
        return
    table(
        ["id", "name", "project", "user", "state", "gpus", "submitted", "why"],
        [
            (
                j.id,
                j.name,
                j.project,
                j.user,
                state_text(j.state),
                gpus_cell(j),
                j.submitted_at,
                why(j),
            )
            for j in jobs
        ],
    )


@app.command()
def show(job_id: JobId, json: JsonOption = False) -> None:
    """Show a job: spec, state timeline, placement, why it waits or how it ended."""
    with connect() as client:
        job = client.jobs.get(job_id)
    if json:
        print_json(job)
        return
    _show(job)


@app.command()
def logs(
    job_id: JobId,
    follow: Follow = False,
    tail: Tail = None,
    json: JsonOption = False,
) -> None:
    """Print a job's output (kept after it ends); --follow streams it until the job ends.
    With --json: JSON Lines, {"line": …} per line (and, with --follow, {"job": …} at the end)."""
    with connect() as client:
        if follow:
            _follow(client, job_id, tail=tail, json=json)
            return
        stream_log([client.jobs.logs(job_id, tail=tail).text], json)


@app.command()
def cancel(job_id: JobId, json: JsonOption = False) -> None:
    """Cancel a job: pending ones end at once, running ones get SIGTERM then SIGKILL."""
    with connect() as client:
        job = client.jobs.cancel(job_id)
    if json:
        print_json(job)
    elif State(job.state).terminal:
        say("cli.job_cancelled", id=job.id, state=label("state", job.state))
    else:
        say("cli.job_cancelling", id=job.id)


@app.command()
def resubmit(job_id: JobId, json: JsonOption = False) -> None:
    """Submit the same job again."""
    with connect() as client:
        job = client.jobs.resubmit(job_id)
    if json:
        print_json(job)
    else:
        say("cli.job_submitted", id=job.id, state=label("state", job.state))


def _follow(
    client: Client, job_id: int, tail: int | None = None, *, json: bool = False
) -> JobDetailOut:
    """Stream the job's output until it has ended; return it as it ended."""
    stream_log(client.jobs.follow(job_id, tail=tail), json)
    job = client.jobs.get(job_id)
    if json:
        print_json_line({"job": job.model_dump(mode="json")})
    elif job.exit:
        say("cli.job_ended", id=job.id, state=label("state", job.state), how=job.exit.message)
    return job


def _show(job: JobDetailOut) -> None:
    fields(
        [
            ("id", job.id),
            ("name", job.name),
            ("project", job.project),
            ("user", job.user),
            ("state", label("state", job.state)),
            ("priority", label("priority", job.priority)),
            ("gpus", gpus_cell(job)),
            ("submitted", job.submitted_at),
            ("started", job.started_at),
            ("finished", job.finished_at),
            ("attempts", job.attempts),
            ("placement", placement(job)),
            ("why", why(job)),
            ("exit", job.exit.message if job.exit else None),
            ("command", " ".join(job.spec.get("command") or []) or t("cli.script")),
            ("max_duration", format_duration(job.spec.get("max_duration"))),
            ("usage", _usage(job)),
        ]
    )
    for warning in job.warnings:
        fail(warning)
    history(job.history)


def history(events: Sequence[EventOut]) -> None:
    """The state timeline of a job or a dev environment."""
    table(["time", "state", "detail"], [(e.at, state_text(e.state), e.detail) for e in events])


def _usage(job: JobOut) -> str | None:
    usage = job.usage
    if not usage:
        return None
    parts = [t("cli.usage_cpu", seconds=f"{usage.get('cpu_seconds', 0):g}")]
    peak = usage.get("memory_peak_bytes") or usage.get("max_rss_bytes")
    if peak:
        parts.append(t("cli.usage_memory", size=format_bytes(int(peak))))
    if "wall_seconds" in usage:
        parts.append(t("cli.usage_wall", duration=format_duration(usage["wall_seconds"])))
    return ", ".join(parts)


def gpus_cell(job: JobOut) -> str:
    return f"{job.gpus:g}" if job.gpus else "-"


def why(job: JobOut) -> str:
    """Why it waits, how it ended, or where it runs and for how long."""
    if job.pending:
        return job.pending.message
    if job.exit:
        return job.exit.message
    node = job.placement.node if job.placement else ""
    if job.state == "running" and job.started_at:
        duration = age(job.started_at)
        if node:
            return t("cli.why_running_on", node=node, duration=duration)
        return t("cli.why_running", duration=duration)
    if node and job.state in ("admitted", "starting"):
        return t("cli.why_starting_on", node=node)
    return ""


def age(since: datetime) -> str:
    """How long ago `since` was, e.g. 3m12s (times without a zone are UTC, as the API's)."""
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    seconds = (datetime.now(UTC) - since).total_seconds()
    return format_duration(max(seconds, 0))


def placement(job: JobOut) -> str:
    if not job.placement:
        return "-"
    gpus = ", ".join(g.uuid for g in job.placement.gpus)
    return job.placement.node + (f" [{gpus}]" if gpus else "")


def load_spec(file: Path, message: str = "cli.bad_yaml") -> dict[str, Any]:
    """A spec file in YAML (or JSON, named *.json) as a mapping, read within bounds (no YAML
    aliases, at most a mebibyte: see core.documents). What is wrong with it is one line on
    stderr and exit code 2, as for a bad option."""
    try:
        spec = documents.read_file(file)
    except documents.DocumentError as error:
        reason = t(error.key, **error.params)
    except OSError as error:
        reason = error.strerror or type(error).__name__
    else:
        if isinstance(spec, dict):
            return spec
        reason = "not a mapping"
    fail(t(message, reason=reason), "usage")
    raise typer.Exit(2)


def resources(**given: Any) -> dict[str, Any]:
    """A spec's `resources` from the options given (None: not given, the server decides)."""
    return {key: value for key, value in given.items() if value is not None}


def parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(t("cli.bad_env", pair=pair), param_hint="--env")
        env[key] = value
    return env
