"""`suanli run`, `suanli submit` and `suanli jobs`: work on the shared GPUs."""

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.text import Text

from suanli.cli.output import (
    JsonOption,
    fail,
    fields,
    label,
    print_json,
    say,
    t,
    table,
)
from suanli.cli.session import connect
from suanli.client import Client
from suanli.core.durations import format_duration
from suanli.core.quantities import format_bytes
from suanli.schemas.jobs import EventOut, JobDetailOut, JobOut

app = typer.Typer(help="Jobs: list, show, follow logs, cancel, resubmit.", no_args_is_help=True)
JobId = Annotated[int, typer.Argument(help="Job id.")]
Follow = Annotated[bool, typer.Option("--follow", "-f", help="Stream the output until it ends.")]
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
    name: Annotated[str, typer.Option(help="A name to recognise it by.")] = "",
    workdir: WorkdirOption = None,
    env: EnvOption = None,
    follow: Follow = False,
    json: JsonOption = False,
) -> None:
    """Run a command as a job: suanli run -p vision --gpus 2 -- python train.py"""
    spec: dict[str, Any] = {
        "project": project,
        "name": name,
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
    file: Annotated[
        Path,
        typer.Argument(
            help="A job spec in YAML (or JSON).", exists=True, dir_okay=False, readable=True
        ),
    ],
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Overrides the file's.")
    ] = None,
    follow: Follow = False,
    json: JsonOption = False,
) -> None:
    """Submit a job spec file (the same fields as `suanli run`'s options)."""
    spec = load_spec(file)
    if project:
        spec["project"] = project
    _submit(spec, follow, json)


def _submit(spec: dict[str, Any], follow: bool, json: bool) -> None:
    with connect() as client:
        job = client.jobs.submit(spec)
        if json:
            print_json(job)
        else:
            say("cli.job_submitted", id=job.id, state=label("state", job.state))
            if job.pending:
                say("cli.job_pending", reason=job.pending.message)
        if follow:
            _follow(client, job.id)


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
) -> None:
    """Print a job's output (kept after it ends); --follow streams it until the job ends."""
    with connect() as client:
        if follow:
            _follow(client, job_id, tail=tail)
            return
        sys.stdout.write(client.jobs.logs(job_id, tail=tail).text)


@app.command()
def cancel(job_id: JobId) -> None:
    """Cancel a job: pending ones end at once, running ones get SIGTERM then SIGKILL."""
    with connect() as client:
        job = client.jobs.cancel(job_id)
    say("cli.job_cancelled", id=job.id, state=label("state", job.state))


@app.command()
def resubmit(job_id: JobId, json: JsonOption = False) -> None:
    """Submit the same job again."""
    with connect() as client:
        job = client.jobs.resubmit(job_id)
    if json:
        print_json(job)
    else:
        say("cli.job_submitted", id=job.id, state=label("state", job.state))


def _follow(client: Client, job_id: int, tail: int | None = None) -> None:
    for text in client.jobs.follow(job_id, tail=tail):
        sys.stdout.write(text)
        sys.stdout.flush()
    job = client.jobs.get(job_id)
    if job.exit:
        say("cli.job_ended", id=job.id, state=label("state", job.state), how=job.exit.message)


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
    if job.pending:
        return job.pending.message
    if job.exit:
        return job.exit.message
    return ""


def placement(job: JobOut) -> str:
    if not job.placement:
        return "-"
    gpus = ", ".join(g.uuid for g in job.placement.gpus)
    return job.placement.node + (f" [{gpus}]" if gpus else "")


def load_spec(file: Path, message: str = "cli.bad_yaml") -> dict[str, Any]:
    """A spec file in YAML (or JSON) as a mapping; usage errors say what is wrong with it."""
    try:
        spec = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise typer.BadParameter(t(message, reason=str(error))) from None
    if not isinstance(spec, dict):
        raise typer.BadParameter(t(message, reason="not a mapping"))
    return spec


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
