"""`suanli projects`, `suanli members` and `suanli quota`."""

from collections.abc import Callable
from typing import Annotated, Any

import typer

from suanli.cli.commands import App
from suanli.cli.output import JsonOption, fields, label, print_json, report, t, table
from suanli.cli.session import connect
from suanli.core.quantities import format_bytes, parse_bytes
from suanli.core.roles import ProjectRole
from suanli.schemas.projects import ProjectOut, QuotaOut

app = App(help="Projects: the tenants that own quotas and work.", no_args_is_help=True)
members_app = App(help="Project members and their roles.", no_args_is_help=True)
quota_app = App(help="Project quotas.", no_args_is_help=True)

Project = Annotated[str, typer.Argument(help="Project name.")]
User = Annotated[str, typer.Argument(help="User name.")]
UNLIMITED = ("none", "unlimited", "-")


def _quota_rows(quota: QuotaOut) -> list[tuple[str, Any]]:
    unlimited = t("cli.unlimited")
    return [
        ("guaranteed_gpus", quota.guaranteed_gpus),
        ("max_gpus", unlimited if quota.max_gpus is None else quota.max_gpus),
        (
            "max_gpus_per_user",
            unlimited if quota.max_gpus_per_user is None else quota.max_gpus_per_user,
        ),
        ("cpus", unlimited if quota.cpus is None else f"{quota.cpus:g}"),
        ("memory", unlimited if quota.memory_bytes is None else format_bytes(quota.memory_bytes)),
        (
            "storage",
            unlimited if quota.storage_bytes is None else format_bytes(quota.storage_bytes),
        ),
    ]


def _show(project: ProjectOut, json: bool) -> None:
    if json:
        print_json(project)
        return
    fields(
        [
            ("name", project.name),
            ("display_name", project.display_name),
            ("description", project.description),
            ("my_role", label("role", project.my_role)),
            ("members", project.member_count),
            ("created", project.created_at),
            ("archived", project.archived_at),
            *_quota_rows(project.quota),
        ]
    )


@app.command("list")
def list_projects(
    all_: Annotated[bool, typer.Option("--all", help="Include archived projects.")] = False,
    json: JsonOption = False,
) -> None:
    """List your projects (administrators see all)."""
    with connect() as client:
        projects = client.projects.list(include_archived=all_)
    if json:
        print_json(projects)
        return
    unlimited = t("cli.unlimited")
    table(
        ["name", "display_name", "my_role", "members", "guaranteed_gpus", "max_gpus", "archived"],
        [
            (
                p.name,
                p.display_name,
                p.my_role,
                p.member_count,
                p.quota.guaranteed_gpus,
                unlimited if p.quota.max_gpus is None else p.quota.max_gpus,
                p.archived_at is not None,
            )
            for p in projects
        ],
    )


@app.command()
def create(
    name: Project,
    display_name: Annotated[str, typer.Option()] = "",
    description: Annotated[str, typer.Option()] = "",
    owner: Annotated[str | None, typer.Option(help="First owner (administrators).")] = None,
    json: JsonOption = False,
) -> None:
    """Create a project; you (or --owner) become its owner."""
    with connect() as client:
        project = client.projects.create(
            name, display_name=display_name, description=description, owner=owner
        )
    report(json, "cli.project_created", project, name=project.name)


@app.command()
def show(name: Project, json: JsonOption = False) -> None:
    """Show a project with its quota."""
    with connect() as client:
        _show(client.projects.get(name), json)


@app.command()
def rename(
    name: Project, new_name: Annotated[str, typer.Argument()], json: JsonOption = False
) -> None:
    """Rename a project (owners)."""
    with connect() as client:
        project = client.projects.update(name, new_name=new_name)
    report(json, "cli.project_renamed", project, name=name, new_name=new_name)


@app.command()
def update(
    name: Project,
    display_name: Annotated[str | None, typer.Option()] = None,
    description: Annotated[str | None, typer.Option()] = None,
    json: JsonOption = False,
) -> None:
    """Change a project's display name or description (owners)."""
    with connect() as client:
        _show(
            client.projects.update(name, display_name=display_name, description=description), json
        )


@app.command()
def archive(name: Project, json: JsonOption = False) -> None:
    """Archive a project: read-only and hidden from the default list."""
    with connect() as client:
        project = client.projects.archive(name)
    report(json, "cli.project_archived", project, name=name)


@app.command()
def unarchive(name: Project, json: JsonOption = False) -> None:
    """Bring an archived project back."""
    with connect() as client:
        project = client.projects.unarchive(name)
    report(json, "cli.project_unarchived", project, name=name)


@members_app.command("list")
def list_members(project: Project, json: JsonOption = False) -> None:
    """List a project's members."""
    with connect() as client:
        members = client.projects.members(project)
    if json:
        print_json(members)
        return
    table(
        ["user", "display_name", "role", "since"],
        [(m.user, m.display_name, label("role", m.role), m.created_at) for m in members],
    )


Role = Annotated[ProjectRole, typer.Option(help="owner, member or viewer.")]


@members_app.command()
def add(
    project: Project, user: User, role: Role = ProjectRole.member, json: JsonOption = False
) -> None:
    """Add a user to a project (owners)."""
    with connect() as client:
        member = client.projects.add_member(project, user, role)
    role_word = label("role", role.value)
    report(json, "cli.member_added", member, user=user, project=project, role=role_word)


@members_app.command("set-role")
def set_role(
    project: Project,
    user: User,
    role: Annotated[ProjectRole, typer.Argument()],
    json: JsonOption = False,
) -> None:
    """Change a member's role (owners)."""
    with connect() as client:
        member = client.projects.set_member_role(project, user, role)
    role_word = label("role", role.value)
    report(json, "cli.member_role_set", member, user=user, project=project, role=role_word)


@members_app.command()
def remove(project: Project, user: User, json: JsonOption = False) -> None:
    """Remove a member from a project (owners)."""
    with connect() as client:
        client.projects.remove_member(project, user)
    gone = {"project": project, "user": user, "removed": True}
    report(json, "cli.member_removed", gone, user=user, project=project)


@quota_app.command("show")
def show_quota(project: Project, json: JsonOption = False) -> None:
    """Show a project's quota."""
    with connect() as client:
        quota = client.projects.quota(project)
    if json:
        print_json(quota)
    else:
        fields(_quota_rows(quota))


def _limit(text: str | None, option: str, parse: Callable[[str], Any], error_key: str) -> Any:
    """`...` when the option was left out, None for 'none', else the parsed value."""
    if text is None:
        return ...
    if text.lower() in UNLIMITED:
        return None
    try:
        return parse(text)
    except ValueError:
        raise typer.BadParameter(t(error_key), param_hint=option) from None


Limit = Annotated[str | None, typer.Option(help="A number, or 'none' for no limit.")]
SizeLimit = Annotated[str | None, typer.Option(help="A size like 256Gi or 2T, or 'none'.")]


@quota_app.command("set")
def set_quota(
    project: Project,
    guaranteed_gpus: Annotated[
        int | None, typer.Option(min=0, help="GPUs always available.")
    ] = None,
    max_gpus: Limit = None,
    max_gpus_per_user: Limit = None,
    cpus: Limit = None,
    memory: SizeLimit = None,
    storage: SizeLimit = None,
    json: JsonOption = False,
) -> None:
    """Change a project's quota (administrators). Options left out stay as they are."""
    changes = {
        "guaranteed_gpus": ... if guaranteed_gpus is None else guaranteed_gpus,
        "max_gpus": _limit(max_gpus, "--max-gpus", int, "cli.bad_count"),
        "max_gpus_per_user": _limit(max_gpus_per_user, "--max-gpus-per-user", int, "cli.bad_count"),
        "cpus": _limit(cpus, "--cpus", float, "cli.bad_number"),
        "memory_bytes": _limit(memory, "--memory", parse_bytes, "cli.bad_size"),
        "storage_bytes": _limit(storage, "--storage", parse_bytes, "cli.bad_size"),
    }
    with connect() as client:
        quota = client.projects.set_quota(
            project, **{k: v for k, v in changes.items() if v is not ...}
        )
    if json:
        print_json(quota)
    else:
        fields(_quota_rows(quota))
