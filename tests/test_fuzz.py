"""Schemathesis fuzzes every operation of the OpenAPI document, signed in as an
administrator, and no input may make the server answer 5xx.

The number of examples is bounded for CI (SUANLI_FUZZ_EXAMPLES, default 25 per operation).
"""

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from suanli.core.errors import Unauthenticated
from suanli.db.engine import Database
from suanli.services import tokens
from suanli.services.accounts import get_user

EXAMPLES = int(os.environ.get("SUANLI_FUZZ_EXAMPLES", "25"))
# Rules across fields or against stored state, which JSON Schema cannot state: a schema-valid
# body may rightly get 422 here (the wrong current password, a password equal to the user
# name, a quota whose maximum is below its guarantee, a job no node could ever run, a job
# with both a command and a script, an alert rule on an unknown metric, a channel whose URL
# does not suit its kind, a time range beyond a year written as "9999h", a dev environment
# naming an unknown Python environment or an idle timeout of "0", text that is not an SSH
# public key); an upload's metadata without its project or a body of another media type, a
# version naming content the project never uploaded or a part of a path longer than 255
# bytes, a workload's output that is no folder, an import whose URL does not suit its kind;
# a service with both an engine and a command (or an unknown engine, a model that is not
# there, replicas "3..1" or "0", a duration of "0"), a key that expires in "0", a usage
# query whose `since` is not before its `until`, a prompt template with a malformed brace;
# a fine-tuning run without a dataset, QLoRA without a GPU, a model that is not there, or
# more than 20 prompts to compare.
RULES_BEYOND_THE_SCHEMA = {
    "POST /api/v1/uploads",
    "PATCH /api/v1/uploads/{upload_id}",
    "POST /api/v1/datasets/{project}/{name}/versions",
    "POST /api/v1/models/{project}/{name}/versions",
    "POST /api/v1/datasets/{project}/{name}/commit",
    "POST /api/v1/models/{project}/{name}/commit",
    "POST /api/v1/datasets/{project}/{name}/imports",
    "POST /api/v1/models/{project}/{name}/imports",
    "POST /api/v1/alerts/rules",
    "PATCH /api/v1/alerts/rules/{rule_id}",
    "POST /api/v1/alerts/channels",
    "PATCH /api/v1/alerts/channels/{channel_id}",
    "GET /api/v1/metrics/query",
    "POST /api/v1/jobs",
    "POST /api/v1/devenvs",
    "POST /api/v1/deployments",
    "POST /api/v1/me/ssh-keys",
    "POST /api/v1/me/password",
    "POST /api/v1/users",
    "POST /api/v1/users/{name}/password",
    "PATCH /api/v1/projects/{name}/quota",
    "POST /api/v1/services",
    "PATCH /api/v1/services/{service_id}",
    "POST /api/v1/service-keys",
    "GET /api/v1/service-usage",
    "GET /api/v1/service-usage.csv",
    "POST /api/v1/projects/{project}/prompts/{name}",
    "POST /api/v1/finetunes",
    "POST /api/v1/finetune-estimates",
    "POST /api/v1/finetunes/{run_id}/compare",
}


class AdminToken:
    """An API token for the fuzzer. The fuzzer may revoke it (DELETE /me/tokens/{id}) or log
    it out, so it is checked before every case and reissued straight in the database."""

    def __init__(self, database: Database):
        self.database = database
        self.secret = ""

    def current(self) -> str:
        with self.database.reading() as session:
            try:
                tokens.authenticate(session, self.secret)
                return self.secret
            except Unauthenticated:
                pass
        with self.database.writing() as session:
            _, self.secret = tokens.issue(
                session, get_user(session, "admin"), name="fuzz", kind="api", expires_at=None
            )
            session.commit()
        return self.secret


@pytest.fixture
def fuzz_schema(app_and_database):
    """The app's own OpenAPI document, with schemathesis told how to sign in: it then knows
    which generated cases carry a token, including the ones meant to lack it."""
    app, database = app_and_database
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    token = AdminToken(database)

    @schema.auth()
    class Bearer:
        # The token is checked (and reissued if the fuzzer revoked it) for every case, in
        # set(): schemathesis may hand set() a cached value from get().
        def get(self, case, context) -> str:
            return token.current()

        def set(self, case, data: str, context) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token.current()}"}

    return schema


schema = schemathesis.pytest.from_fixture("fuzz_schema")


@schema.parametrize()
# One test walks every operation (subtests): the limit is for all of them together.
@pytest.mark.timeout(300)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_input_makes_a_server_error(case) -> None:
    excluded = [positive_data_acceptance] if case.operation.label in RULES_BEYOND_THE_SCHEMA else []
    response = case.call_and_validate(excluded_checks=excluded)
    # A fuzzer that lost its token would only ever test the authentication layer: every
    # signed-in case must get past it (only a login may answer 401 to a signed-in caller).
    signed_in = (case.headers or {}).get("Authorization", "").startswith("Bearer sl_")
    if signed_in and case.operation.label != "POST /api/v1/auth/login":
        assert response.status_code != 401, response.text
