"""The audit log records every change and login, and administrators filter it."""

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from suanli.client import ApiError, Client
from tests.conftest import RunningServer, unique


def test_changes_and_logins_are_recorded(server: RunningServer, admin: Client, make_user) -> None:
    person = make_user("audited")
    project = unique("audited")
    admin.projects.create(project)
    admin.projects.add_member(project, person.name, "viewer")
    admin.projects.set_quota(project, guaranteed_gpus=1, max_gpus=2)
    person.client.tokens.create("nightly")
    httpx.post(
        f"{server.url}/api/v1/auth/login",
        json={"username": person.name, "password": "not-it-at-all"},
    )

    mine = admin.audit.list(project=project)
    assert [e.action for e in reversed(mine)] == [
        "project.create",
        "project.member_add",
        "project.quota",
    ]
    quota = mine[0]
    assert quota.actor == "admin" and quota.result == "success"
    assert quota.detail["max_gpus"] == [None, 2]
    assert quota.address == "127.0.0.1"

    logins = admin.audit.list(action="auth.login", target=person.name)
    assert [e.result for e in logins][:2] == ["failure", "success"]
    assert logins[0].detail == {"reason": "bad_credentials"}
    assert "not-it-at-all" not in str(logins[0].model_dump())
    created = admin.audit.list(actor=person.name, action="token.")
    assert [(e.action, e.target) for e in created] == [("token.create", "nightly")]


def test_filters_and_paging(admin: Client) -> None:
    project = unique("paged")
    admin.projects.create(project)
    for gpus in range(1, 6):
        admin.projects.set_quota(project, max_gpus=gpus)
    events = admin.audit.list(project=project, action="project.quota")
    assert len(events) == 5
    first_page = admin.audit.list(project=project, limit=2)
    second_page = admin.audit.list(project=project, limit=2, before_id=first_page[-1].id)
    assert [e.id for e in first_page + second_page] == [e.id for e in events[:4]]

    now = datetime.now(UTC)
    assert admin.audit.list(project=project, since=now + timedelta(minutes=1)) == []
    assert len(admin.audit.list(project=project, until=now + timedelta(minutes=1))) == 6
    assert admin.audit.list(project=project, result="failure") == []


def test_only_admins_read_the_audit_log(make_user) -> None:
    with pytest.raises(ApiError) as refused:
        make_user().client.audit.list()
    assert refused.value.status == 403


def test_a_projects_history_survives_its_rename(admin: Client) -> None:
    old, new = unique("before"), unique("after")
    admin.projects.create(old)
    admin.projects.set_quota(old, max_gpus=3)
    admin.projects.update(old, new_name=new)
    assert [e.action for e in admin.audit.list(project=new)] == [
        "project.update",
        "project.quota",
        "project.create",
    ]
    admin.projects.create(old)  # a new project may take the old name: its history is its own
    assert [e.action for e in admin.audit.list(project=old)] == ["project.create"]
