"""Projects, roles, quotas, and isolation between tenants."""

import httpx
import pytest

from suanli.client import ApiError, Client
from tests.conftest import RunningServer, unique
from tests.test_users import status_of


@pytest.fixture
def team(admin: Client, make_user):
    """A project with an owner, a member and a viewer, plus an outsider."""
    project = unique("proj")
    owner, member, viewer, outsider = (make_user(r) for r in ("owner", "member", "viewer", "out"))
    admin.projects.create(project, display_name="视觉组", owner=owner.name)
    owner.client.projects.add_member(project, member.name, "member")
    owner.client.projects.add_member(project, viewer.name, "viewer")
    return project, owner, member, viewer, outsider


def test_admin_creates_a_project_with_an_empty_quota(admin: Client) -> None:
    name = unique("lab")
    project = admin.projects.create(name, display_name="实验室", description="NLP")
    assert (project.name, project.my_role, project.member_count) == (name, "owner", 1)
    quota = project.quota
    assert quota.guaranteed_gpus == 0
    assert quota.max_gpus is quota.cpus is quota.memory_bytes is quota.storage_bytes is None
    assert status_of(admin.projects.create, name) == 409


def test_users_cannot_create_projects_unless_allowed(make_user, server_factory) -> None:
    assert status_of(make_user().client.projects.create, unique("p")) == 403
    open_server = server_factory({"SUANLI_USERS_CAN_CREATE_PROJECTS": "true"})
    admin = open_server.login()
    admin.users.create("frank", "frank-password")
    frank = open_server.login("frank", "frank-password")
    assert frank.projects.create("franks").my_role == "owner"
    assert status_of(frank.projects.create, "other", owner="admin") == 403


def test_roles(team) -> None:
    project, owner, member, viewer, _ = team
    assert {p.name for p in viewer.client.projects.list()} == {project}
    assert viewer.client.projects.get(project).my_role == "viewer"
    assert len(viewer.client.projects.members(project)) == 3
    assert viewer.client.projects.quota(project).guaranteed_gpus == 0

    for client in (viewer.client, member.client):
        assert status_of(client.projects.update, project, display_name="x") == 403
        assert status_of(client.projects.add_member, project, "admin") == 403
        assert status_of(client.projects.remove_member, project, owner.name) == 403
        assert status_of(client.projects.archive, project) == 403
        assert status_of(client.projects.set_quota, project, max_gpus=100) == 403

    # Owners manage members but not quotas.
    owner.client.projects.set_member_role(project, viewer.name, "member")
    assert status_of(owner.client.projects.set_quota, project, max_gpus=100) == 403
    assert status_of(owner.client.projects.add_member, project, viewer.name) == 409
    assert status_of(owner.client.projects.add_member, project, unique("nobody")) == 404


def test_a_project_keeps_an_owner(team) -> None:
    project, owner, member, _, _ = team
    assert status_of(owner.client.projects.set_member_role, project, owner.name, "member") == 409
    assert status_of(owner.client.projects.remove_member, project, owner.name) == 409
    owner.client.projects.set_member_role(project, member.name, "owner")
    owner.client.projects.remove_member(project, owner.name)
    assert status_of(owner.client.projects.get, project) == 404


def test_rename_and_archive(admin: Client, team) -> None:
    project, owner, _, viewer, _ = team
    renamed = unique("renamed")
    assert owner.client.projects.update(project, new_name=renamed).name == renamed
    assert status_of(owner.client.projects.get, project) == 404

    owner.client.projects.archive(renamed)
    assert renamed not in {p.name for p in viewer.client.projects.list()}
    assert renamed in {p.name for p in viewer.client.projects.list(include_archived=True)}
    assert status_of(owner.client.projects.update, renamed, description="x") == 409
    assert status_of(owner.client.projects.add_member, renamed, "admin") == 409
    assert status_of(admin.projects.set_quota, renamed, max_gpus=1) == 409
    owner.client.projects.unarchive(renamed)
    assert owner.client.projects.update(renamed, description="back").description == "back"


def test_rename_onto_an_existing_name_conflicts(admin: Client) -> None:
    a, b = unique("a"), unique("b")
    admin.projects.create(a)
    admin.projects.create(b)
    assert status_of(admin.projects.update, a, new_name=b) == 409


def test_quotas(admin: Client, team) -> None:
    project, _, _, viewer, _ = team
    quota = admin.projects.set_quota(
        project,
        guaranteed_gpus=2,
        max_gpus=8,
        max_gpus_per_user=4,
        cpus=64,
        memory_bytes=512 * 2**30,
        storage_bytes=10 * 2**40,
    )
    assert (quota.guaranteed_gpus, quota.max_gpus, quota.max_gpus_per_user) == (2, 8, 4)
    assert viewer.client.projects.quota(project).memory_bytes == 512 * 2**30

    # Partial update: only max_gpus changes; None lifts a limit.
    quota = admin.projects.set_quota(project, max_gpus=None)
    assert (quota.guaranteed_gpus, quota.max_gpus, quota.cpus) == (2, None, 64)

    with pytest.raises(ApiError) as below:
        admin.projects.set_quota(project, max_gpus=1)
    assert below.value.status == 422
    assert below.value.problem.errors[0].field == "max_gpus"
    with pytest.raises(ApiError) as per_user:
        admin.projects.set_quota(project, max_gpus=3)
    assert per_user.value.problem.errors[0].field == "max_gpus_per_user"
    with pytest.raises(ApiError) as negative:
        admin.projects.set_quota(project, cpus=-1)
    assert negative.value.problem.errors[0].field == "cpus"
    assert admin.projects.quota(project).max_gpus is None  # nothing half-written


def test_tenants_cannot_see_each_other(server: RunningServer, team) -> None:
    project, _, _, _, outsider = team
    missing = unique("missing")
    client = outsider.client
    assert project not in {p.name for p in client.projects.list()}
    calls = [
        ("GET", "projects/{}"),
        ("PATCH", "projects/{}"),
        ("POST", "projects/{}/archive"),
        ("GET", "projects/{}/members"),
        ("POST", "projects/{}/members"),
        ("GET", "projects/{}/quota"),
        ("DELETE", "projects/{}/members/admin"),
    ]
    bodies = {"PATCH": {"description": "x"}, "POST": {"user": outsider.name}}
    for method, path in calls:
        answers = []
        for name in (project, missing):
            response = httpx.request(
                method,
                f"{server.url}/api/v1/{path.format(name)}",
                json=bodies.get(method) if "archive" not in path else None,
                headers={"Authorization": f"Bearer {client.token}"},
            )
            answers.append((response.status_code, response.json()["detail"].replace(name, "N")))
        # The same answer as for a project that does not exist: no existence leak.
        assert answers[0] == answers[1], (method, path)
        assert answers[0][0] == 404, (method, path, answers)
