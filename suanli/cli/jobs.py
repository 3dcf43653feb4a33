"""`suanli run`, `suanli submit` and `suanli jobs`: work on the shared GPUs."""

import sys
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
from suanli.schemas.jobs import JobDetailOut, JobOut

app = typer.Typer(help="Jobs: list, show, follow logs, cancel, resubmit.", no_args_is_help=True)
JobId = Annotated[int, typer.Argument(help="Job id.")]
Follow = Annotated[bool, typer.Option("--follow", "-f", help="Stream the output until it ends.")]

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
    gpus: Annotated[int, typer.Option(help="Whole GPUs.")] = 0,
    gpu_model: Annotated[str | None, typer.Option(help="Only GPUs of this model.")] = None,
    gpu_memory: Annotated[
        str | None, typer.Option(help="A GPU fraction: memory, e.g. 10Gi.")
    ] = None,
    gpu_compute: Annotated[int | None, typer.Option(help="A GPU fraction: compute %.")] = None,
    cpus: Annotated[float, typer.Option(help="CPU cores.")] = 1.0,
    memory: Annotated[str, typer.Option(help="Memory, e.g. 16Gi.")] = "4Gi",
    priority: Annotated[str, typer.Option(help="high, normal or low.")] = "normal",
    max_duration: Annotated[str | None, typer.Option(help="e.g. 30m, 2h, 1d.")] = None,
    retries: Annotated[int, typer.Option(help="Runs again on failure or preemption.")] = 0,
    preemptible: Annotated[bool, typer.Option(help="May be preempted.")] = True,
    name: Annotated[str, typer.Option(help="A name to recognise it by.")] = "",
    workdir: Annotated[str | None, typer.Option(help="Working directory.")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE.")] = None,
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
        "env": _env(env or []),
        "resources": {"gpus": gpus, "cpus": cpus, "memory": memory},
    }
    resources = spec["resources"]
    for key, value in (
        ("gpu_model", gpu_model),
        ("gpu_memory", gpu_memory),
        ("gpu_compute_percent", gpu_compute),
    ):
        if value is not None:
            resources[key] = value
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
    try:
        spec = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise typer.BadParameter(t("cli.bad_yaml", reason=str(error))) from None
    if not isinstance(spec, dict):
        raise typer.BadParameter(t("cli.bad_yaml", reason="not a mapping"))
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
                _gpus(j),
                j.submitted_at,
                _why(j),
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
    tail: Annotated[int | None, typer.Option(help="Only the last N lines.")] = None,
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
            ("gpus", _gpus(job)),
            ("submitted", job.submitted_at),
            ("started", job.started_at),
            ("finished", job.finished_at),
            ("attempts", job.attempts),
            ("placement", _placement(job)),
            ("why", _why(job)),
            ("exit", job.exit.message if job.exit else None),
            ("command", " ".join(job.spec.get("command") or []) or t("cli.script")),
            ("max_duration", format_duration(job.spec.get("max_duration"))),
            ("usage", _usage(job)),
        ]
    )
    for warning in job.warnings:
        fail(warning)
    table(["time", "state", "detail"], [(e.at, state_text(e.state), e.detail) for e in job.history])


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


def _gpus(job: JobOut) -> str:
    return f"{job.gpus:g}" if job.gpus else "-"


def _why(job: JobOut) -> str:
    if job.pending:
        return job.pending.message
    if job.exit:
        return job.exit.message
    return ""


def _placement(job: JobOut) -> str:
    if not job.placement:
        return "-"
    gpus = ", ".join(g.uuid for g in job.placement.gpus)
    return job.placement.node + (f" [{gpus}]" if gpus else "")


def _env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(t("cli.bad_env", pair=pair), param_hint="--env")
        env[key] = value
    return env
