"""User administration and each user's own account."""

import pytest

from suanli.client import ApiError, Client
from tests.conftest import RunningServer, unique


def status_of(call, *args, **kwargs) -> int:
    with pytest.raises(ApiError) as error:
        call(*args, **kwargs)
    return error.value.status


def test_admin_manages_users(server: RunningServer, admin: Client) -> None:
    name = unique("erin")
    created = admin.users.create(
        name, "erin-password", display_name="Erin 张", email="erin@example.org"
    )
    assert (created.name, created.display_name, created.is_admin) == (name, "Erin 张", False)
    assert name in {u.name for u in admin.users.list()}
    assert status_of(admin.users.create, name, "other-password") == 409

    admin.users.update(name, is_admin=True)
    assert admin.users.get(name).is_admin
    admin.users.update(name, is_admin=False)

    admin.users.reset_password(name, "erin-new-password")
    assert status_of(server.login, name, "erin-password") == 401
    assert server.login(name, "erin-new-password").whoami().name == name

    admin.users.delete(name)
    assert status_of(admin.users.get, name) == 404
    assert status_of(admin.users.delete, name) == 404


def test_only_admins_manage_users(make_user) -> None:
    person = make_user()
    client = person.client
    assert status_of(client.users.list) == 403
    assert status_of(client.users.create, unique("x"), "password-1") == 403
    assert status_of(client.users.update, person.name, is_admin=True) == 403
    assert status_of(client.users.reset_password, "admin", "hijacked-1") == 403
    assert status_of(client.users.delete, "admin") == 403


def test_admins_cannot_lock_themselves_out(admin: Client) -> None:
    assert status_of(admin.users.delete, "admin") == 403
    assert status_of(admin.users.update, "admin", is_disabled=True) == 403
    assert status_of(admin.users.update, "admin", is_admin=False) == 403


def test_admins_demote_each_other_but_never_themselves(admin: Client, make_user) -> None:
    other = make_user("boss", is_admin=True)
    other.client.users.update("admin", is_admin=False)
    assert status_of(admin.users.list) == 403
    assert status_of(other.client.users.update, other.name, is_admin=False) == 403
    other.client.users.update("admin", is_admin=True)
    assert admin.users.list()


def test_a_sole_project_owner_cannot_be_deleted(admin: Client, make_user) -> None:
    person = make_user()
    project = unique("solo")
    admin.projects.create(project, owner=person.name)
    assert status_of(admin.users.delete, person.name) == 409
    admin.projects.add_member(project, "admin", "owner")
    admin.users.delete(person.name)
    assert [m.user for m in admin.projects.members(project)] == ["admin"]


def test_change_own_password_ends_other_sessions(server: RunningServer, make_user) -> None:
    person = make_user()
    other_session = server.login(person.name, person.password)
    script = person.client.tokens.create("script").token
    assert status_of(person.client.change_password, "wrong-current", "next-password-1") == 422
    person.client.change_password(person.password, "next-password-1")
    assert person.client.whoami().name == person.name  # this session stays
    assert status_of(other_session.whoami) == 401  # the other one ends
    with Client(server.url, script) as api:
        assert api.whoami().name == person.name  # API tokens stay
    assert server.login(person.name, "next-password-1")


def test_update_own_profile_and_language(make_user) -> None:
    person = make_user()
    me = person.client.update_me(display_name="李雷", language="zh-CN")
    assert (me.display_name, me.language) == ("李雷", "zh-CN")


def test_password_rules(admin: Client) -> None:
    with pytest.raises(ApiError) as short:
        admin.users.create(unique("f"), "short")
    assert short.value.status == 422
    assert short.value.problem.errors[0].field == "password"
    name = unique("gina")
    with pytest.raises(ApiError) as same:
        admin.users.create(name, name)
    assert same.value.status == 422
