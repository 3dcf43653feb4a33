"""Model services from the SDK: deploy, follow a rollout, call through the gateway; API keys,
usage and prompt templates.

A service is named by its project and name (the model name callers give the gateway is
`project/name`); the API addresses it by id, so `find` looks the id up. `watch` yields the
service as it changes, and `progress` says of each snapshot whether a deploy or an update has
landed, is still on its way, or failed (a replica ended by itself: the engine exits at start).
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import httpx

from suanli.client.client import ApiError, _error, _given, _Group
from suanli.client.data import _local
from suanli.schemas.services import (
    EngineOut,
    PromptOut,
    ServiceDetailOut,
    ServiceKeyCreated,
    ServiceKeyOut,
    ServiceOut,
    ServiceSpec,
    ServiceUpdate,
    SizingOut,
    SweepOut,
    SweepSpec,
    UsageRow,
)
from suanli.schemas.system import LogChunkOut, Problem

if TYPE_CHECKING:
    from suanli.client.client import Client

Progress = Literal["ready", "waiting", "failed"]
# A replica in one of these states may still become ready; the others have ended.
LIVE_STATES = frozenset({"pending", "admitted", "starting", "running", "stopping"})


@dataclass(frozen=True)
class Reply:
    """A gateway chat call's outcome: the text, the token counts the gateway reported (None
    when the engine gave none), and the times measured on this side, in seconds."""

    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    latency: float
    first_token: float | None


class Services(_Group):
    """Model services: an engine serving a model version (or a command listening on $PORT),
    kept running as N replicas or autoscaled in a range, reached through the gateway."""

    def deploy(self, spec: ServiceSpec | dict[str, Any]) -> ServiceDetailOut:
        """Deploy from a spec (the same schema as a YAML service file)."""
        body = _body(spec, ServiceSpec)
        return ServiceDetailOut.model_validate(self._client.request("POST", "services", json=body))

    def list(self, project: str | None = None) -> list[ServiceOut]:
        """Newest first, from the projects you belong to."""
        return self._client.get("services", list[ServiceOut], project=project)

    def get(self, service_id: int) -> ServiceDetailOut:
        """With its template, scaling, replicas (newest first) and endpoint."""
        return self._client.get(f"services/{service_id}", ServiceDetailOut)

    def find(self, project: str, name: str) -> ServiceDetailOut:
        """A service by its name in a project (404 as the server says it when there is none)."""
        for service in self.list(project):
            if service.name == name:
                return self.get(service.id)
        raise _local(
            self._client,
            404,
            "not-found",
            "error.service_name_not_found",
            "name",
            project=project,
            name=name,
        )

    def update(self, service_id: int, change: ServiceUpdate | dict[str, Any]) -> ServiceDetailOut:
        """A new model version, arguments, environment or resources roll out one replica at
        a time; replicas and scaling apply at once."""
        body = _body(change, ServiceUpdate, exclude_unset=True)
        data = self._client.request("PATCH", f"services/{service_id}", json=body)
        return ServiceDetailOut.model_validate(data)

    def scale(self, service_id: int, replicas: int | str) -> ServiceDetailOut:
        """A number of replicas, or a range "min..max" to autoscale in."""
        return self.update(service_id, {"replicas": str(replicas)})

    def stop(self, service_id: int) -> ServiceDetailOut:
        """Stop every replica; `start` brings it back with as many as before."""
        data = self._client.request("POST", f"services/{service_id}/stop")
        return ServiceDetailOut.model_validate(data)

    def start(self, service_id: int) -> ServiceDetailOut:
        data = self._client.request("POST", f"services/{service_id}/start")
        return ServiceDetailOut.model_validate(data)

    def remove(self, service_id: int) -> None:
        """Forget a stopped service whose replicas have all ended (its usage stays)."""
        self._client.request("DELETE", f"services/{service_id}")

    def sweep(self, service_id: int, spec: SweepSpec | dict[str, Any] | None = None) -> SweepOut:
        """Start a load sweep (capacity planning): vLLM's serving benchmark through the
        gateway at concurrency 1, 2, 4, … up to `max_concurrency`, as a job."""
        body = _body(spec or {}, SweepSpec)
        data = self._client.request("POST", f"services/{service_id}/sweeps", json=body)
        return SweepOut.model_validate(data)

    def sweeps(self, service_id: int) -> list[SweepOut]:
        """Newest first; a sweep whose job ended has its curves."""
        data = self._client.request("GET", f"services/{service_id}/sweeps")
        return [SweepOut.model_validate(item) for item in data]

    def size(
        self, service_id: int, rps: float, ttft_p95_ms: float, sweep: int | None = None
    ) -> SizingOut:
        """How many replicas serve `rps` requests/s with a TTFT p95 of at most
        `ttft_p95_ms`, from the newest sweep that succeeded (or `sweep`)."""
        params: dict[str, Any] = {"rps": rps, "ttft_p95_ms": ttft_p95_ms}
        if sweep is not None:
            params["sweep"] = sweep
        data = self._client.request("GET", f"services/{service_id}/sizing", params=params)
        return SizingOut.model_validate(data)

    def logs(
        self, service_id: int, replica_id: int, *, offset: int = 0, tail: int | None = None
    ) -> LogChunkOut:
        """A replica's output: the engine's log, why it failed to start."""
        path = f"services/{service_id}/replicas/{replica_id}/logs"
        return self._client.get(path, LogChunkOut, offset=offset, tail=tail)

    def follow(
        self, service_id: int, replica_id: int, *, tail: int | None = None, poll: float = 0.5
    ) -> Iterator[str]:
        """A replica's output as it arrives, until the replica has ended."""
        chunk = self.logs(service_id, replica_id, tail=tail)
        while True:
            if chunk.text:
                yield chunk.text
            elif chunk.finished:
                return
            else:
                time.sleep(poll)
            chunk = self.logs(service_id, replica_id, offset=chunk.next_offset)

    def engines(self) -> list[EngineOut]:
        """The engines the administrator registered."""
        return self._client.get("engines", list[EngineOut])

    def watch(self, service_id: int, *, poll: float = 0.5) -> Iterator[ServiceDetailOut]:
        """The service now, then again every `poll` seconds, for as long as one reads."""
        while True:
            yield self.get(service_id)
            time.sleep(poll)

    def chat(
        self,
        project: str,
        name: str,
        messages: list[dict[str, str]],
        **parameters: Any,
    ) -> Iterator[str | Reply]:
        """Call a service through the gateway's /v1/chat/completions with your own token,
        streamed: yields the text as it arrives, then one Reply. Gateway errors raise
        ApiError with the gateway's code as the title."""
        body = {
            "model": f"{project}/{name}",
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            **parameters,
        }
        started = time.monotonic()
        first: float | None = None
        usage: dict[str, Any] = {}
        parts: list[str] = []
        with self._client._http.stream(
            "POST",
            _gateway(self._client, "chat/completions"),
            json=body,
            headers=_auth(self._client),
        ) as response:
            if not response.is_success:
                response.read()
                raise _gateway_error(response)
            for data in _events(response.iter_lines()):
                usage = data.get("usage") or usage
                for choice in data.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content") or ""
                    if piece:
                        first = first if first is not None else time.monotonic() - started
                        parts.append(piece)
                        yield piece
        yield Reply(
            text="".join(parts),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            latency=time.monotonic() - started,
            first_token=first,
        )


def progress(service: ServiceDetailOut, old: Collection[int] = ()) -> Progress:
    """Whether a deploy or update has landed: `failed` once a replica ended by itself (the
    failures count restarts at every update), `ready` once the wanted replicas answer their
    health check and none of `old` (the replicas of the template replaced) still lives."""
    if service.failures:
        return "failed"
    if service.state == "stopped":
        return "failed"
    if any(r.id in old and r.state in LIVE_STATES for r in service.replicas_list):
        return "waiting"
    return "ready" if service.ready >= service.replicas else "waiting"


def live_replicas(service: ServiceDetailOut) -> set[int]:
    """The ids of the replicas that run or are on their way (an update replaces these)."""
    return {r.id for r in service.replicas_list if r.state in LIVE_STATES}


def last_failed(service: ServiceDetailOut) -> int | None:
    """The newest replica that ended by itself: its log says why."""
    for replica in service.replicas_list:
        if replica.exit is not None and replica.exit.reason != "cancelled":
            return replica.id
    return None


class ServiceKeys(_Group):
    """API keys for the gateway (`sk-suanli-…`): one project's services, with limits."""

    def create(
        self,
        project: str,
        name: str,
        *,
        models: list[str] | None = None,
        expires_in: int | str | None = None,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        token_budget: int | None = None,
        budget_period: str = "month",
    ) -> ServiceKeyCreated:
        """The key is in the answer only (it is stored hashed): keep it."""
        body = {
            "project": project,
            "name": name,
            "budget_period": budget_period,
            **_given(
                models=models,
                expires_in=expires_in,
                requests_per_minute=requests_per_minute,
                tokens_per_minute=tokens_per_minute,
                token_budget=token_budget,
            ),
        }
        data = self._client.request("POST", "service-keys", json=body)
        return ServiceKeyCreated.model_validate(data)

    def list(self, project: str) -> list[ServiceKeyOut]:
        """Your keys of the project (owners: everyone's), with the tokens spent this period."""
        return self._client.get("service-keys", list[ServiceKeyOut], project=project)

    def revoke(self, key_id: int) -> ServiceKeyOut:
        """The gateway refuses the key from now on."""
        data = self._client.request("DELETE", f"service-keys/{key_id}")
        return ServiceKeyOut.model_validate(data)


class ServiceUsage(_Group):
    """Requests and tokens per hour or day, model, user and key."""

    def query(
        self,
        project: str,
        *,
        service: str | None = None,
        group: str = "hour",
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[UsageRow]:
        params = _usage_params(project, service, group, since, until)
        return self._client.get("service-usage", list[UsageRow], **params)

    def csv(
        self,
        project: str,
        *,
        service: str | None = None,
        group: str = "hour",
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> str:
        """The same rows as CSV, with a header line."""
        params = _usage_params(project, service, group, since, until)
        params = {key: value for key, value in params.items() if value is not None}
        response = self._client._http.get(
            "service-usage.csv", params=params, headers=_auth(self._client)
        )
        if not response.is_success:
            raise _error(response)
        return response.text


class Prompts(_Group):
    """A project's prompt templates, each a list of versions (variables are {name})."""

    def list(self, project: str) -> list[PromptOut]:
        """The newest version of each."""
        return self._client.get(f"projects/{project}/prompts", list[PromptOut])

    def save(
        self,
        project: str,
        name: str,
        template: str,
        *,
        system: str = "",
        parameters: dict[str, float | int] | None = None,
    ) -> PromptOut:
        """A new version (the first one creates the prompt)."""
        body = {"template": template, "system": system, "parameters": parameters or {}}
        data = self._client.request("POST", f"projects/{project}/prompts/{name}", json=body)
        return PromptOut.model_validate(data)

    def versions(self, project: str, name: str) -> list[PromptOut]:
        """Newest first."""
        return self._client.get(f"projects/{project}/prompts/{name}", list[PromptOut])


def _body(value: Any, model: type, *, exclude_unset: bool = False) -> Any:
    if isinstance(value, model):
        return value.model_dump(mode="json", exclude_none=True, exclude_unset=exclude_unset)
    return value


def _usage_params(
    project: str,
    service: str | None,
    group: str,
    since: datetime | None,
    until: datetime | None,
) -> dict[str, Any]:
    return {
        "project": project,
        "service": service,
        "group": group,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
    }


def _auth(client: Client) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.token}"} if client.token else {}


def _gateway(client: Client, path: str) -> httpx.URL:
    """The gateway's URL beside the API's (/v1 next to /api/v1, under any path prefix)."""
    return client._http.base_url.join(f"../../v1/{path}")


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The JSON objects of a server-sent event stream, up to `[DONE]`."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            yield json.loads(data)
        except ValueError:
            continue


def _gateway_error(response: httpx.Response) -> ApiError:
    """The gateway's OpenAI-shaped error ({"error": {message, type, code}}) as an ApiError
    whose title is its code (invalid_api_key, model_not_found, no_replica…)."""
    try:
        error = response.json()["error"]
        code, message = str(error.get("code") or error.get("type")), str(error["message"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return _error(response)
    problem = Problem(
        type=f"urn:suanli:gateway:{code}",
        title=code,
        status=response.status_code,
        detail=message,
    )
    return ApiError(response.status_code, problem)
