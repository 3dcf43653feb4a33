"""Logging in and out, tokens, throttling, and secrets kept out of responses and logs."""

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import create_engine, select, update

from suanli.client import ApiError, Client
from suanli.db.models import ApiToken, AuditEvent, utcnow
from suanli.security.tokens import hash_token
from tests.conftest import ADMIN_PASSWORD, RunningServer, unique


def test_login_whoami_logout(server: RunningServer) -> None:
    client = server.login()
    assert client.whoami().name == "admin"
    client.logout()
    client.token = None
    with pytest.raises(ApiError) as refused:
        client.whoami()
    assert refused.value.status == 401


def test_wrong_password_is_401_with_a_bearer_challenge(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.url}/api/v1/auth/login",
        json={"username": "admin", "password": "wrong-password-x"},
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:suanli:problem:unauthenticated"
    assert "wrong-password-x" not in response.text


def test_unknown_user_and_wrong_password_look_the_same(server: RunningServer) -> None:
    a = httpx.post(
        f"{server.url}/api/v1/auth/login",
        json={"username": unique("ghost"), "password": "whatever1"},
    )
    b = httpx.post(
        f"{server.url}/api/v1/auth/login", json={"username": "admin", "password": "whatever1"}
    )
    assert a.status_code == b.status_code == 401
    assert a.json()["detail"] == b.json()["detail"]


def test_a_revoked_or_made_up_token_is_refused(server: RunningServer) -> None:
    for token in ("sl_made-up", "not-even-a-token", "sl_ x"):
        response = httpx.get(
            f"{server.url}/api/v1/me", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 401


def test_api_tokens_are_shown_once_stored_hashed_and_revocable(
    server: RunningServer, make_user
) -> None:
    person = make_user()
    created = person.client.tokens.create("ci", expires_in_days=7)
    assert created.token.startswith("sl_")
    assert created.expires_at is not None
    assert created.expires_at - utcnow() > timedelta(days=6)

    listed = {t.id: t for t in person.client.tokens.list()}
    assert created.id in listed
    assert "token" not in listed[created.id].model_dump()
    assert created.token.startswith(listed[created.id].prefix)

    engine = create_engine(server.database_url)
    with engine.connect() as connection:
        stored = connection.execute(
            select(ApiToken.token_hash).where(ApiToken.id == created.id)
        ).scalar_one()
    engine.dispose()
    assert stored == hash_token(created.token) and created.token not in stored

    with Client(server.url, created.token) as script:
        assert script.whoami().name == person.name
        person.client.tokens.revoke(created.id)
        with pytest.raises(ApiError) as refused:
            script.whoami()
    assert refused.value.status == 401

    with pytest.raises(ApiError) as again:
        person.client.tokens.revoke(created.id)
    assert again.value.status == 404


def test_an_expired_token_is_refused(server: RunningServer, make_user) -> None:
    person = make_user()
    created = person.client.tokens.create("short", expires_in_days=1)
    engine = create_engine(server.database_url)
    with engine.begin() as connection:
        connection.execute(
            update(ApiToken)
            .where(ApiToken.id == created.id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    engine.dispose()
    with Client(server.url, created.token) as script, pytest.raises(ApiError) as refused:
        script.whoami()
    assert refused.value.status == 401


def test_users_cannot_revoke_each_others_tokens(make_user) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    token = alice.client.tokens.create("mine")
    with pytest.raises(ApiError) as refused:
        bob.client.tokens.revoke(token.id)
    assert refused.value.status == 404
    assert token.id in {t.id for t in alice.client.tokens.list()}


def test_throttling_locks_a_name_then_an_address(server_factory) -> None:
    server = server_factory(
        {
            "SUANLI_LOGIN_MAX_FAILURES_PER_USER": "3",
            "SUANLI_LOGIN_MAX_FAILURES_PER_ADDRESS": "6",
            "SUANLI_LOGIN_LOCKOUT_SECONDS": "120",
        }
    )
    admin = server.login()
    admin.users.create("carol", "carol-password")
    login = f"{server.url}/api/v1/auth/login"

    codes = [
        httpx.post(login, json={"username": "carol", "password": "nope-nope"}).status_code
        for _ in range(3)
    ]
    assert codes == [401, 401, 401]
    locked = httpx.post(
        login,
        json={"username": "carol", "password": "carol-password"},
        headers={"Accept-Language": "zh-CN"},
    )
    assert locked.status_code == 429
    assert 0 < int(locked.headers["retry-after"]) <= 120
    assert "秒后重试" in locked.json()["detail"]

    # Other names from the same address: the address locks after 6 failures in all.
    for i in range(3):
        httpx.post(login, json={"username": f"guess-{i}", "password": "x"})
    assert (
        httpx.post(login, json={"username": "admin", "password": ADMIN_PASSWORD}).status_code == 429
    )

    results = [e.result for e in admin.audit.list(action="auth.login", target="carol")]
    assert results.count("failure") == 3 and "locked" in results
    # The token issued before the lock still works: locks stop guessing, not work.
    assert admin.whoami().name == "admin"


def test_disabling_a_user_ends_their_access(
    server: RunningServer, admin: Client, make_user
) -> None:
    person = make_user()
    admin.users.update(person.name, is_disabled=True)
    with pytest.raises(ApiError) as refused:
        person.client.whoami()
    assert refused.value.status == 401
    with pytest.raises(ApiError) as login:
        server.login(person.name, person.password)
    assert login.value.status == 401
    admin.users.update(person.name, is_disabled=False)
    assert server.login(person.name, person.password).whoami().name == person.name


def test_secrets_never_reach_the_log(server_factory) -> None:
    server = server_factory({"SUANLI_LOG_LEVEL": "debug"})
    admin = server.login()
    admin.users.create("dave", "dave-secret-password")
    dave = server.login("dave", "dave-secret-password")
    token = dave.tokens.create("script").token
    with Client(server.url, token) as script:
        script.whoami()
    bad = httpx.post(
        f"{server.url}/api/v1/auth/login",
        json={"username": "dave", "password": "another-secret-guess"},
    )
    assert bad.status_code == 401
    server.stop()
    assert server.process.stdout is not None
    log = "".join(server.output) + server.process.stdout.read()
    assert "GET /api/v1/me" in log  # the access log was on
    for secret in (
        "dave-secret-password",
        "another-secret-guess",
        token,
        ADMIN_PASSWORD,
        admin.token,
    ):
        assert secret and secret not in log


def test_a_client_cannot_claim_another_address(server_factory) -> None:
    """X-Forwarded-For is believed only from configured proxies: by default a client that
    sends it neither escapes the address lock nor writes a false address into the audit."""
    server = server_factory({"SUANLI_LOGIN_MAX_FAILURES_PER_ADDRESS": "4"})
    login = f"{server.url}/api/v1/auth/login"
    codes = [
        httpx.post(
            login,
            json={"username": f"who-{i}", "password": "x"},
            headers={"X-Forwarded-For": f"203.0.113.{i}"},
        ).status_code
        for i in range(6)
    ]
    assert codes == [401] * 4 + [429] * 2
    engine = create_engine(server.database_url)
    with engine.connect() as connection:
        addresses = set(connection.execute(select(AuditEvent.address)).scalars())
    engine.dispose()
    assert addresses <= {"127.0.0.1", ""}


def test_trusted_proxies_may_name_the_client(server_factory) -> None:
    server = server_factory({"SUANLI_FORWARDED_ALLOW_IPS": "127.0.0.1"})
    httpx.post(
        f"{server.url}/api/v1/auth/login",
        json={"username": "x", "password": "y"},
        headers={"X-Forwarded-For": "198.51.100.7"},
    )
    admin = server.login()
    assert admin.audit.list(action="auth.login", target="x")[0].address == "198.51.100.7"


def test_wrong_current_passwords_count_towards_the_lock(server_factory) -> None:
    """A stolen token must not let anyone guess the password through /me/password."""
    server = server_factory({"SUANLI_LOGIN_MAX_FAILURES_PER_USER": "3"})
    admin = server.login()
    admin.users.create("jack", "jack-password")
    jack = server.login("jack", "jack-password")
    statuses = []
    for i in range(4):
        try:
            jack.change_password(f"guess-{i}", "new-password-1")
        except ApiError as error:
            statuses.append(error.status)
    assert statuses == [422, 422, 422, 429]
    with pytest.raises(ApiError) as locked:
        jack.change_password("jack-password", "new-password-1")
    assert locked.value.status == 429
    with pytest.raises(ApiError) as login:
        server.login("jack", "jack-password")
    assert login.value.status == 429
