"""The client and its resource groups. It speaks only the public API under /api/v1."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
from pydantic import TypeAdapter

from suanli.core.roles import ProjectRole
from suanli.schemas.accounts import LoginResponse, TokenCreated, TokenOut, UserOut
from suanli.schemas.deployments import (
    DeploymentDetailOut,
    DeploymentListQuery,
    DeploymentOut,
    DeploymentSpec,
)
from suanli.schemas.devenvs import (
    DevEnvDetailOut,
    DevEnvListQuery,
    DevEnvOut,
    DevEnvSpec,
    SshKeyOut,
)
from suanli.schemas.jobs import JobDetailOut, JobListQuery, JobOut, JobSpec
from suanli.schemas.metrics import AlertEventOut, MetricQuery, QueryOut, RuleOut
from suanli.schemas.nodes import GpuOut, NodeOut
from suanli.schemas.projects import EnergyOut, MemberOut, ProjectOut, QuotaOut
from suanli.schemas.system import AuditEventOut, AuditQuery, LogChunkOut, Problem, VersionOut

T = TypeVar("T")
_UNSET: Any = object()


class ApiError(Exception):
    """An error answered by the server, with its problem details."""

    def __init__(self, status: int, problem: Problem):
        self.status = status
        self.problem = problem
        super().__init__(f"{status} {problem.title}: {problem.detail}")

    @property
    def type(self) -> str:
        return self.problem.type.rsplit(":", 1)[-1]


class Client:
    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        language: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ):
        headers = {"User-Agent": "suanli-sdk"}
        if language:
            headers["Accept-Language"] = language
        self._http = httpx.Client(
            base_url=url.rstrip("/") + "/api/v1/",
            headers=headers,
            timeout=timeout,
            transport=transport,
        )
        self.token = token
        self.users = Users(self)
        self.tokens = Tokens(self)
        self.projects = Projects(self)
        self.audit = Audit(self)
        self.jobs = Jobs(self)
        self.nodes = Nodes(self)
        self.metrics = Metrics(self)
        self.alerts = Alerts(self)
        self.devenvs = DevEnvs(self)
        self.deployments = Deployments(self)
        self.ssh_keys = SshKeys(self)
        # Imported here: these groups build on this module's ApiError and _Group.
        from suanli.client.data import Imports, Repositories, Uploads

        self.datasets = Repositories(self, "datasets")
        self.models = Repositories(self, "models")
        self.uploads = Uploads(self)
        self.imports = Imports(self)
        from suanli.client.services import Prompts, ServiceKeys, Services, ServiceUsage

        self.services = Services(self)
        self.service_keys = ServiceKeys(self)
        self.service_usage = ServiceUsage(self)
        self.prompts = Prompts(self)
        from suanli.client.finetunes import Finetunes

        self.finetunes = Finetunes(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        """Send a request; return the decoded JSON (None for 204), raise ApiError otherwise."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if params:
            params = {k: v for k, v in params.items() if v is not None}
        response = self._http.request(method, path, json=json, params=params, headers=headers)
        if response.is_success:
            return None if response.status_code == 204 else response.json()
        raise _error(response)

    def get(self, path: str, model: type[T], **params: Any) -> T:
        return TypeAdapter(model).validate_python(self.request("GET", path, params=params))

    # Session and the signed-in user.
    def login(self, username: str, password: str, *, token_name: str = "login") -> LoginResponse:
        """Sign in; the client keeps the returned session token for later calls."""
        body = {"username": username, "password": password, "token_name": token_name}
        result = LoginResponse.model_validate(self.request("POST", "auth/login", json=body))
        self.token = result.token
        return result

    def logout(self) -> None:
        self.request("POST", "auth/logout")
        self.token = None

    def whoami(self) -> UserOut:
        return self.get("me", UserOut)

    def update_me(
        self,
        *,
        display_name: str | None = None,
        email: str | None = None,
        language: str | None = None,
    ) -> UserOut:
        body = _given(display_name=display_name, email=email, language=language)
        return UserOut.model_validate(self.request("PATCH", "me", json=body))

    def change_password(self, current_password: str, new_password: str) -> None:
        body = {"current_password": current_password, "new_password": new_password}
        self.request("POST", "me/password", json=body)

    def version(self) -> VersionOut:
        return self.get("version", VersionOut)


class _Group:
    def __init__(self, client: Client):
        self._client = client


class Users(_Group):
    """User administration (administrators only)."""

    def list(self) -> list[UserOut]:
        return self._client.get("users", list[UserOut])

    def get(self, name: str) -> UserOut:
        return self._client.get(f"users/{name}", UserOut)

    def create(
        self,
        name: str,
        password: str,
        *,
        is_admin: bool = False,
        display_name: str = "",
        email: str = "",
    ) -> UserOut:
        body = {
            "name": name,
            "password": password,
            "is_admin": is_admin,
            "display_name": display_name,
            "email": email,
        }
        return UserOut.model_validate(self._client.request("POST", "users", json=body))

    def update(
        self,
        name: str,
        *,
        display_name: str | None = None,
        email: str | None = None,
        is_admin: bool | None = None,
        is_disabled: bool | None = None,
    ) -> UserOut:
        body = _given(
            display_name=display_name, email=email, is_admin=is_admin, is_disabled=is_disabled
        )
        return UserOut.model_validate(self._client.request("PATCH", f"users/{name}", json=body))

    def delete(self, name: str) -> None:
        self._client.request("DELETE", f"users/{name}")

    def reset_password(self, name: str, password: str) -> None:
        self._client.request("POST", f"users/{name}/password", json={"password": password})


class Tokens(_Group):
    """The signed-in user's API tokens."""

    def list(self) -> list[TokenOut]:
        return self._client.get("me/tokens", list[TokenOut])

    def create(
        self, name: str, *, expires_in_days: int | None = None, kind: str = "api"
    ) -> TokenCreated:
        """`kind`: "api" (everything you may do) or "metrics" (reads only /metrics, for
        Prometheus; administrators)."""
        body = {"name": name, "expires_in_days": expires_in_days, "kind": kind}
        return TokenCreated.model_validate(self._client.request("POST", "me/tokens", json=body))

    def revoke(self, token_id: int) -> None:
        self._client.request("DELETE", f"me/tokens/{token_id}")


class Projects(_Group):
    def list(self, *, include_archived: bool = False) -> list[ProjectOut]:
        return self._client.get("projects", list[ProjectOut], include_archived=include_archived)

    def get(self, name: str) -> ProjectOut:
        return self._client.get(f"projects/{name}", ProjectOut)

    def create(
        self,
        name: str,
        *,
        display_name: str = "",
        description: str = "",
        owner: str | None = None,
    ) -> ProjectOut:
        body = {
            "name": name,
            "display_name": display_name,
            "description": description,
            "owner": owner,
        }
        return ProjectOut.model_validate(self._client.request("POST", "projects", json=body))

    def update(
        self,
        name: str,
        *,
        new_name: str | None = None,
        display_name: str | None = None,
        description: str | None = None,
    ) -> ProjectOut:
        body = _given(name=new_name, display_name=display_name, description=description)
        return _project(self._client.request("PATCH", f"projects/{name}", json=body))

    def archive(self, name: str) -> ProjectOut:
        return _project(self._client.request("POST", f"projects/{name}/archive"))

    def unarchive(self, name: str) -> ProjectOut:
        return _project(self._client.request("POST", f"projects/{name}/unarchive"))

    def members(self, name: str) -> list[MemberOut]:
        return self._client.get(f"projects/{name}/members", list[MemberOut])

    def add_member(
        self, name: str, user: str, role: ProjectRole | str = ProjectRole.member
    ) -> MemberOut:
        body = {"user": user, "role": str(role)}
        return _member(self._client.request("POST", f"projects/{name}/members", json=body))

    def set_member_role(self, name: str, user: str, role: ProjectRole | str) -> MemberOut:
        body = {"role": str(role)}
        path = f"projects/{name}/members/{user}"
        return _member(self._client.request("PATCH", path, json=body))

    def remove_member(self, name: str, user: str) -> None:
        self._client.request("DELETE", f"projects/{name}/members/{user}")

    def energy(self, name: str) -> EnergyOut:
        """GPU energy of the project's jobs in Wh, in total and per user."""
        return self._client.get(f"projects/{name}/energy", EnergyOut)

    def quota(self, name: str) -> QuotaOut:
        return self._client.get(f"projects/{name}/quota", QuotaOut)

    def set_quota(
        self,
        name: str,
        *,
        guaranteed_gpus: int | None = _UNSET,
        max_gpus: int | None = _UNSET,
        max_gpus_per_user: int | None = _UNSET,
        cpus: float | None = _UNSET,
        memory_bytes: int | None = _UNSET,
        storage_bytes: int | None = _UNSET,
    ) -> QuotaOut:
        """Change only the fields you pass; pass None to lift a limit."""
        body = {
            key: value
            for key, value in {
                "guaranteed_gpus": guaranteed_gpus,
                "max_gpus": max_gpus,
                "max_gpus_per_user": max_gpus_per_user,
                "cpus": cpus,
                "memory_bytes": memory_bytes,
                "storage_bytes": storage_bytes,
            }.items()
            if value is not _UNSET
        }
        return QuotaOut.model_validate(
            self._client.request("PATCH", f"projects/{name}/quota", json=body)
        )


class Audit(_Group):
    def list(self, query: AuditQuery | None = None, **filters: Any) -> list[AuditEventOut]:
        """Newest first. Filters as an AuditQuery or as its fields: `actor`, `action` (a
        prefix), `target_type`, `target`, `project`, `result`, `since`, `until`,
        `before_id`, `limit`."""
        query = query or AuditQuery(**filters)
        params = query.model_dump(mode="json", exclude_none=True)
        return self._client.get("audit", list[AuditEventOut], **params)


class Jobs(_Group):
    def submit(self, spec: JobSpec | dict[str, Any]) -> JobDetailOut:
        """Submit a job spec (the same schema as a YAML job file)."""
        body = (
            spec.model_dump(mode="json", exclude_none=True) if isinstance(spec, JobSpec) else spec
        )
        return JobDetailOut.model_validate(self._client.request("POST", "jobs", json=body))

    def list(self, query: JobListQuery | None = None, **filters: Any) -> list[JobOut]:
        """Newest first. Filters: `project`, `user`, `state` (also `active`, `finished`),
        `limit`; page with `before_id` set to the last id received."""
        query = query or JobListQuery(**filters)
        params = query.model_dump(mode="json", exclude_none=True)
        return self._client.get("jobs", list[JobOut], **params)

    def get(self, job_id: int) -> JobDetailOut:
        return self._client.get(f"jobs/{job_id}", JobDetailOut)

    def cancel(self, job_id: int) -> JobDetailOut:
        return JobDetailOut.model_validate(self._client.request("POST", f"jobs/{job_id}/cancel"))

    def resubmit(self, job_id: int) -> JobDetailOut:
        data = self._client.request("POST", f"jobs/{job_id}/resubmit")
        return JobDetailOut.model_validate(data)

    def logs(self, job_id: int, *, offset: int = 0, tail: int | None = None) -> LogChunkOut:
        return self._client.get(f"jobs/{job_id}/logs", LogChunkOut, offset=offset, tail=tail)

    def follow(
        self, job_id: int, *, tail: int | None = None, poll_seconds: float = 0.5
    ) -> Iterator[str]:
        """Yield the job's output as it arrives, until the job has ended."""
        return _follow(self.logs, job_id, tail, poll_seconds)


class DevEnvs(_Group):
    """Dev environments: JupyterLab, a web terminal, VS Code and SSH on the shared GPUs."""

    def create(self, spec: DevEnvSpec | dict[str, Any]) -> DevEnvDetailOut:
        """Create one from a spec (the same schema as a YAML environment file)."""
        body = (
            spec.model_dump(mode="json", exclude_none=True)
            if isinstance(spec, DevEnvSpec)
            else spec
        )
        return DevEnvDetailOut.model_validate(self._client.request("POST", "devenvs", json=body))

    def list(self, query: DevEnvListQuery | None = None, **filters: Any) -> list[DevEnvOut]:
        """Newest first. Filters: `project`, `user`, `state` (`active` or `finished`),
        `limit`."""
        query = query or DevEnvListQuery(**filters)
        params = query.model_dump(mode="json", exclude_none=True)
        return self._client.get("devenvs", list[DevEnvOut], **params)

    def get(self, env_id: int) -> DevEnvDetailOut:
        return self._client.get(f"devenvs/{env_id}", DevEnvDetailOut)

    def stop(self, env_id: int) -> DevEnvDetailOut:
        """Stop it; its files stay, and `restart` starts it again in place."""
        data = self._client.request("POST", f"devenvs/{env_id}/stop")
        return DevEnvDetailOut.model_validate(data)

    def restart(self, env_id: int) -> DevEnvDetailOut:
        data = self._client.request("POST", f"devenvs/{env_id}/restart")
        return DevEnvDetailOut.model_validate(data)

    def remove(self, env_id: int) -> None:
        """Forget a stopped environment; its name is free again."""
        self._client.request("DELETE", f"devenvs/{env_id}")

    def logs(self, env_id: int, *, offset: int = 0, tail: int | None = None) -> LogChunkOut:
        return self._client.get(f"devenvs/{env_id}/logs", LogChunkOut, offset=offset, tail=tail)

    def follow(
        self, env_id: int, *, tail: int | None = None, poll_seconds: float = 0.5
    ) -> Iterator[str]:
        """Yield the environment's log as it arrives, until it has stopped."""
        return _follow(self.logs, env_id, tail, poll_seconds)


class Deployments(_Group):
    """Deployments: a replica template kept running `replicas` times; replicas that end by
    themselves are replaced (after a backoff while they keep failing)."""

    def create(self, spec: DeploymentSpec | dict[str, Any]) -> DeploymentDetailOut:
        """Create one from a spec (the same schema as a YAML deployment file)."""
        body = (
            spec.model_dump(mode="json", exclude_none=True)
            if isinstance(spec, DeploymentSpec)
            else spec
        )
        data = self._client.request("POST", "deployments", json=body)
        return DeploymentDetailOut.model_validate(data)

    def list(self, query: DeploymentListQuery | None = None, **filters: Any) -> list[DeploymentOut]:
        """Newest first. Filters: `project`, `state` (`active` or `stopped`)."""
        query = query or DeploymentListQuery(**filters)
        params = query.model_dump(mode="json", exclude_none=True)
        return self._client.get("deployments", list[DeploymentOut], **params)

    def get(self, deployment_id: int) -> DeploymentDetailOut:
        """With its template and its replicas, newest first."""
        return self._client.get(f"deployments/{deployment_id}", DeploymentDetailOut)

    def scale(self, deployment_id: int, replicas: int) -> DeploymentDetailOut:
        body = {"replicas": replicas}
        data = self._client.request("POST", f"deployments/{deployment_id}/scale", json=body)
        return DeploymentDetailOut.model_validate(data)

    def stop(self, deployment_id: int) -> DeploymentDetailOut:
        """Stop every replica; `start` brings it back with as many as before."""
        data = self._client.request("POST", f"deployments/{deployment_id}/stop")
        return DeploymentDetailOut.model_validate(data)

    def start(self, deployment_id: int) -> DeploymentDetailOut:
        data = self._client.request("POST", f"deployments/{deployment_id}/start")
        return DeploymentDetailOut.model_validate(data)

    def remove(self, deployment_id: int) -> None:
        """Forget a stopped deployment whose replicas have all ended."""
        self._client.request("DELETE", f"deployments/{deployment_id}")

    def logs(
        self, deployment_id: int, replica_id: int, *, offset: int = 0, tail: int | None = None
    ) -> LogChunkOut:
        """A replica's output, as `jobs.logs` gives a job's."""
        path = f"deployments/{deployment_id}/replicas/{replica_id}/logs"
        return self._client.get(path, LogChunkOut, offset=offset, tail=tail)

    def follow(
        self,
        deployment_id: int,
        replica_id: int,
        *,
        tail: int | None = None,
        poll_seconds: float = 0.5,
    ) -> Iterator[str]:
        """Yield a replica's output as it arrives, until the replica has ended."""

        def logs(item_id: int, **given: Any) -> LogChunkOut:
            return self.logs(deployment_id, item_id, **given)

        return _follow(logs, replica_id, tail, poll_seconds)


class SshKeys(_Group):
    """The signed-in user's SSH public keys (they let their holders into one's dev
    environments through the server's SSH gateway)."""

    def list(self) -> list[SshKeyOut]:
        return self._client.get("me/ssh-keys", list[SshKeyOut])

    def add(self, public_key: str, name: str = "") -> SshKeyOut:
        """Add one line of a `.pub` file, e.g. `ssh-ed25519 AAAA… you@laptop`."""
        body = {"public_key": public_key, "name": name}
        return SshKeyOut.model_validate(self._client.request("POST", "me/ssh-keys", json=body))

    def remove(self, key_id: int) -> None:
        self._client.request("DELETE", f"me/ssh-keys/{key_id}")


class Metrics(_Group):
    def query(
        self,
        metric: str,
        *,
        labels: dict[str, str] | None = None,
        range: str | int = "1h",
        step: int | None = None,
    ) -> QueryOut:
        """A metric's series over the last `range` ("1h", "7d" or seconds), averaged per
        `step` seconds, for the series whose labels include `labels`."""
        query = MetricQuery(
            metric=metric,
            label=[f"{k}={v}" for k, v in (labels or {}).items()],
            range=range,
            step=step,
        )
        params = query.model_dump(mode="json", exclude_none=True)
        return self._client.get("metrics/query", QueryOut, **params)


class Alerts(_Group):
    def list(self, *, firing: bool = False, limit: int = 100) -> list[AlertEventOut]:
        """The alert history, newest first; `firing=True` for what fires now."""
        return self._client.get(
            "alerts", list[AlertEventOut], firing=str(firing).lower(), limit=limit
        )

    def rules(self) -> list[RuleOut]:
        return self._client.get("alerts/rules", list[RuleOut])


class Nodes(_Group):
    def list(self) -> list[NodeOut]:
        return self._client.get("nodes", list[NodeOut])

    def drain(self, name: str, reason: str = "") -> NodeOut:
        body = {"schedulable": False, "reason": reason}
        return NodeOut.model_validate(self._client.request("PATCH", f"nodes/{name}", json=body))

    def undrain(self, name: str) -> NodeOut:
        body = {"schedulable": True}
        return NodeOut.model_validate(self._client.request("PATCH", f"nodes/{name}", json=body))

    def update_gpu(
        self,
        uuid: str,
        *,
        schedulable: bool | None = None,
        shared: bool | None = None,
        reason: str = "",
    ) -> GpuOut:
        """Drain/undrain a GPU (schedulable) or make it shared/exclusive (administrators)."""
        body = _given(schedulable=schedulable, shared=shared, reason=reason)
        return GpuOut.model_validate(self._client.request("PATCH", f"gpus/{uuid}", json=body))


def _follow(
    logs: Callable[..., LogChunkOut], item_id: int, tail: int | None, poll_seconds: float
) -> Iterator[str]:
    """A log's text as it arrives, until its job or environment has ended."""
    chunk = logs(item_id, tail=tail)
    while True:
        if chunk.text:
            yield chunk.text
        if chunk.finished and not chunk.text:
            return
        if not chunk.text:
            time.sleep(poll_seconds)
        chunk = logs(item_id, offset=chunk.next_offset)


def _given(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def _project(data: Any) -> ProjectOut:
    return ProjectOut.model_validate(data)


def _member(data: Any) -> MemberOut:
    return MemberOut.model_validate(data)


def _error(response: httpx.Response) -> ApiError:
    try:
        problem = Problem.model_validate(response.json())
    except ValueError:
        problem = Problem(
            type="urn:suanli:problem:http",
            title=response.reason_phrase,
            status=response.status_code,
            detail=response.text[:500],
        )
    return ApiError(response.status_code, problem)
