"""Jobs as their readers see them: ORM rows to the transport schemas, messages in the reader's
language. The API's routes and the console's pages both show jobs through these."""

from suanli.config import Settings
from suanli.db.models import Job, JobEvent
from suanli.i18n import translate
from suanli.schemas.devenvs import DevEnvDetailOut, DevEnvOut, SshAccessOut
from suanli.schemas.jobs import (
    EventOut,
    ExitOut,
    GpuShareOut,
    JobDetailOut,
    JobOut,
    PendingOut,
    PlacementOut,
)


def job_out(job: Job, language: str) -> JobOut:
    pending = None
    if job.state in ("pending", "starting") and job.pending_code:
        message = translate(
            f"reason.{job.pending_code}",
            language,
            position=job.pending_position,
            **job.pending_params,
        )
        pending = PendingOut(code=job.pending_code, message=message, position=job.pending_position)
    exit_ = None
    if job.exit_reason:
        exit_ = ExitOut(
            reason=job.exit_reason,
            exit_code=job.exit_code,
            signal=job.exit_signal,
            detail=job.exit_detail,
            message=translate(
                f"exit.{job.exit_reason}",
                language,
                code=job.exit_code,
                signal=job.exit_signal,
                detail=job.exit_detail,
            ),
        )
    placement = None
    if job.placement:
        placement = PlacementOut(
            node=job.placement["node"],
            gpus=[GpuShareOut(**gpu) for gpu in job.placement.get("gpus", [])],
        )
    return JobOut(
        id=job.id,
        name=job.name,
        project=job.project.name,
        user=job.user_name,
        state=job.state,
        priority=job.priority,
        gpus=job.gpus,
        submitted_at=job.submitted_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        attempts=job.attempts,
        pending=pending,
        exit=exit_,
        placement=placement,
        warnings=list(job.warnings or []),
        usage=dict(job.usage or {}),
        energy_wh=round(job.energy_wh or 0.0, 4),
    )


def event_text(event: JobEvent, language: str) -> str:
    """A history entry in the reader's language; an ending also says how, as `exit.*` does."""
    params = dict(event.params or {})
    if params.get("exit_reason"):
        params["how"] = translate(
            f"exit.{params['exit_reason']}",
            language,
            code=params.get("exit_code"),
            signal=params.get("exit_signal"),
            detail=params.get("exit_detail", ""),
        )
    if "reason" in params:
        params["reason"] = translate(
            f"exit.{params['reason']}",
            language,
            code="",
            signal="",
            detail=params.get("detail", ""),
        )
    return translate(event.detail, language, **params)


def detail_out(job: Job, language: str) -> JobDetailOut:
    return JobDetailOut(
        **job_out(job, language).model_dump(),
        spec=job.spec,
        history=[
            EventOut(at=e.at, state=e.state, detail=event_text(e, language)) for e in job.events
        ],
    )


def devenv_out(
    job: Job, language: str, settings: Settings, ssh_port: int | None, reader_id: int
) -> DevEnvOut:
    """A dev environment, with the browser paths of its tools (the proxy's, and the
    console's terminal page) and how to reach it over SSH: its owner logs in as `<name>`,
    a project owner entering a member's as `<name>.<user>` (what the gateway reads)."""
    tools = list(job.spec.get("tools", []))
    urls: dict[str, str] = {}
    if job.state == "running":
        paths = {
            "jupyter": f"/x/{job.id}/jupyter/lab",
            "vscode": f"/x/{job.id}/vscode/",
            "terminal": f"/devenvs/{job.id}/terminal",
        }
        urls = {tool: paths[tool] for tool in tools if tool in paths}
    ssh = None
    if "ssh" in tools and ssh_port is not None:
        login = job.name if job.user_id == reader_id else f"{job.name}.{job.user_name}"
        ssh = ssh_access(login, settings.effective_ssh_host, ssh_port)
    return DevEnvOut(
        **job_out(job, language).model_dump(),
        tools=tools,
        environment=job.spec.get("environment"),
        urls=urls,
        ssh=ssh,
        idle_timeout_seconds=job.spec.get("idle_timeout"),
        max_duration_seconds=job.spec.get("max_duration"),
    )


def ssh_access(name: str, host: str, port: int) -> SshAccessOut:
    """The command, and an entry for ~/.ssh/config (VS Code Remote-SSH and PyCharm read it):
    `ssh suanli-<name>` then works, and so do scp, sftp and rsync."""
    config = "\n".join(
        [
            f"Host suanli-{name}",
            f"    HostName {host}",
            f"    Port {port}",
            f"    User {name}",
            "    ServerAliveInterval 30",
            "",
        ]
    )
    return SshAccessOut(
        host=host, port=port, user=name, command=f"ssh -p {port} {name}@{host}", config=config
    )


def devenv_detail_out(
    job: Job, language: str, settings: Settings, ssh_port: int | None, reader_id: int
) -> DevEnvDetailOut:
    detail = detail_out(job, language)
    return DevEnvDetailOut(
        **devenv_out(job, language, settings, ssh_port, reader_id).model_dump(),
        spec=detail.spec,
        history=detail.history,
    )
