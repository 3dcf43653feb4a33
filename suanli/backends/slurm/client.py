"""Reaching Slurm: slurmrestd over HTTP or a unix socket (preferred), or Slurm's own
command-line tools. Both return the same JSON objects (slurmrestd's v0.0.38 schema, which
`squeue --json` and `sinfo --json` print too), so the backend does not care which runs.

Identity: reads, signals and cancels go as the service user (an operator identity that sees
every job, Slurm's SlurmUser or root); a submission goes as the job's own Unix user: with a
JWT for that user from `scontrol token`, or `sbatch --uid` on the command line. Every command
is an argument vector; nothing goes through a shell.
"""

import json
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import httpx

from suanli.backends.slurm.translate import sbatch_arguments

COMMAND_TIMEOUT = 30.0


class SlurmError(Exception):
    """Slurm refused a request or could not be reached; the message says which, in Slurm's
    own words where it gave some."""


class SlurmClient(Protocol):
    def nodes(self) -> list[dict[str, Any]]: ...

    def jobs(self) -> list[dict[str, Any]]:
        """Every job slurmctld still knows (finished ones for MinJobAge seconds)."""
        ...

    def submit(self, user: str, script: str, job: Mapping[str, Any]) -> int: ...

    def signal(self, job_id: int, signal: str) -> None:
        """Send `signal` (e.g. "TERM") to the batch script and every step of the job."""
        ...

    def cancel(self, job_id: int) -> None: ...


def run(argv: Sequence[str], env: Mapping[str, str], stdin: str | None = None) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - an argument vector of Slurm's tools
            list(argv),
            input=stdin,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SlurmError(f"{argv[0]}: {error}") from error
    if done.returncode != 0:
        message = done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}"
        raise SlurmError(f"{argv[0]}: {message}")
    return done.stdout


class Tokens:
    """Per-user JWTs from `scontrol token` (run as root or SlurmUser), kept until a fifth of
    their life is left."""

    def __init__(self, env: Mapping[str, str], lifespan: int = 3600):
        self.env = env
        self.lifespan = lifespan
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def of(self, user: str) -> str:
        with self._lock:
            token, renew_at = self._tokens.get(user, ("", 0.0))
            if time.monotonic() < renew_at:
                return token
            out = run(
                ["scontrol", "token", f"username={user}", f"lifespan={self.lifespan}"], self.env
            )
            token = out.strip().removeprefix("SLURM_JWT=")
            if not token or "\n" in token:
                raise SlurmError(f"scontrol token printed no token for {user}")
            self._tokens[user] = (token, time.monotonic() + self.lifespan * 0.8)
            return token


class RestClient:
    """slurmrestd: `url` is http(s)://host:port or unix:/path/to/socket."""

    def __init__(
        self, url: str, tokens: Tokens, service_user: str, api: str = "v0.0.38", timeout=10.0
    ):
        self.tokens = tokens
        self.service_user = service_user
        if url.startswith("unix:"):
            transport = httpx.HTTPTransport(uds=url.removeprefix("unix:"))
            base = "http://slurmrestd"
        else:
            transport, base = httpx.HTTPTransport(), url.rstrip("/")
        self.http = httpx.Client(
            base_url=f"{base}/slurm/{api}", transport=transport, timeout=timeout
        )

    def _call(self, method: str, path: str, user: str | None = None, **kwargs: Any) -> Any:
        user = user or self.service_user
        headers = {"X-SLURM-USER-NAME": user, "X-SLURM-USER-TOKEN": self.tokens.of(user)}
        try:
            response = self.http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as error:
            raise SlurmError(f"slurmrestd: {error}") from error
        try:
            body = response.json()
        except ValueError:
            body = {}
        errors = [e for e in body.get("errors") or () if e.get("error_number")]
        if response.status_code >= 400 or errors:
            said = (
                "; ".join(str(e.get("description") or e.get("error") or e) for e in errors)
                or response.text[:300]
            )
            raise SlurmError(f"slurmrestd ({response.status_code}): {said}")
        return body

    def nodes(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/nodes").get("nodes") or [])

    def jobs(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/jobs").get("jobs") or [])

    def submit(self, user: str, script: str, job: Mapping[str, Any]) -> int:
        body = self._call("POST", "/job/submit", user, json={"script": script, "job": dict(job)})
        return int(body["job_id"])

    def signal(self, job_id: int, signal: str) -> None:
        self._call("DELETE", f"/job/{job_id}", params={"signal": f"SIG{signal}"})

    def cancel(self, job_id: int) -> None:
        self._call("DELETE", f"/job/{job_id}")


class CommandClient:
    """Slurm's command-line tools, for sites without slurmrestd. The server must run as root
    (or SlurmUser) to submit as other users (`sbatch --uid`)."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env

    def _json(self, *argv: str) -> dict[str, Any]:
        try:
            return json.loads(run(argv, self.env))
        except ValueError as error:
            raise SlurmError(f"{argv[0]} --json printed no JSON: {error}") from error

    def nodes(self) -> list[dict[str, Any]]:
        return list(self._json("sinfo", "--json").get("nodes") or [])

    def jobs(self) -> list[dict[str, Any]]:
        return list(self._json("squeue", "--json", "--states=all").get("jobs") or [])

    def submit(self, user: str, script: str, job: Mapping[str, Any]) -> int:
        out = run(
            ["sbatch", "--parsable", f"--uid={user}", "--export=NONE", *sbatch_arguments(job)],
            {**self.env, **job.get("environment", {})},
            stdin=script,
        )
        try:
            return int(out.strip().split(";")[0])
        except ValueError as error:
            raise SlurmError(f"sbatch printed no job id: {out.strip()[:200]}") from error

    def signal(self, job_id: int, signal: str) -> None:
        run(["scancel", "--full", f"--signal={signal}", str(job_id)], self.env)

    def cancel(self, job_id: int) -> None:
        run(["scancel", str(job_id)], self.env)
