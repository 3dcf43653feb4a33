"""`suanli audit`: the audit log (administrators)."""

from datetime import datetime
from typing import Annotated

import typer

from suanli.cli.output import JsonOption, print_json, table
from suanli.cli.session import connect

Filter = Annotated[str | None, typer.Option()]


def audit(
    actor: Annotated[str | None, typer.Option(help="Who acted.")] = None,
    action: Annotated[str | None, typer.Option(help="Action prefix, e.g. 'user.'.")] = None,
    project: Filter = None,
    target: Filter = None,
    result: Annotated[str | None, typer.Option(help="success, failure or locked.")] = None,
    since: Annotated[
        datetime | None, typer.Option(help="From this time (local if no zone).")
    ] = None,
    until: Annotated[datetime | None, typer.Option(help="Before this time.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    before_id: Annotated[int | None, typer.Option(help="Older than this event id.")] = None,
    json: JsonOption = False,
) -> None:
    """Show the audit log, newest first."""
    with connect() as client:
        events = client.audit.list(
            actor=actor,
            action=action,
            project=project,
            target=target,
            result=result,
            since=_aware(since),
            until=_aware(until),
            limit=limit,
            before_id=before_id,
        )
    if json:
        print_json(events)
        return
    table(
        ["id", "time", "actor", "action", "target", "project", "result", "address"],
        [
            (
                e.id,
                e.at,
                e.actor,
                e.action,
                f"{e.target_type}:{e.target}" if e.target else "",
                e.project,
                e.result,
                e.address,
            )
            for e in events
        ],
    )


def _aware(moment: datetime | None) -> datetime | None:
    """A time typed without a zone means the user's local time."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.astimezone()
