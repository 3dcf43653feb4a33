"""The job wrapper: `python -m suanli.backends.local.wrapper <state_dir>`.

One wrapper runs per job, in a session of its own, so it outlives a server that is killed.
It reads the plan the backend wrote (`job.json`), then:

1. takes the job's cgroups, made and limited by the backend at launch (what could not be
   applied is in the plan's warnings, said in plain words; the job runs anyway);
2. forks the job's process, which makes itself a process group leader and waits until the
   wrapper has moved it into the cgroups; only then does it redirect its output to the log
   (appending), make the plan's read-only mounts in a mount namespace of its own (as root,
   see `suanli.backends.local.mounts`), switch to the job's Unix user, enter the working
   directory and exec the command: nothing the job ever starts is outside the cgroups;
3. waits for the job (a pidfd, no polling), ending it at its maximum duration (SIGTERM to its
   process group, a grace period, SIGKILL; reason `timeout`), and on SIGTERM from the
   backend ends it the same way with the reason and grace read from `stop.json`;
4. when the job's process has ended, kills whatever it left behind (process group and
   cgroups), tells an OOM kill from the cgroup's counter, writes `status.json` atomically and
   removes the cgroups.

Exit codes for a job that could not start: 125 (the wrapper could not set it up: unknown user,
working directory, a mount, ...), 126 (the command cannot be executed), 127 (command not
found); the status's `detail` says which, and so does a line in the job's log.
"""

import contextlib
import errno
import json
import os
import pwd
import selectors
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from suanli.backends.local import mounts, state
from suanli.backends.local.cgroups import Hierarchies, JobCgroups

DEFAULT_GRACE = 10.0
_PASSED_THROUGH = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")


def _seconds(value: float) -> str:
    return f"{value:g} s" if value < 120 else f"{value / 60:g} min"


class SetupError(Exception):
    def __init__(self, detail: str, code: int = 125) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code


class Wrapper:
    def __init__(self, state_dir: Path, plan: dict[str, Any]) -> None:
        self.state_dir = state_dir
        self.plan = plan
        self.job_id = plan["job_id"]
        self.limits: dict[str, Any] = plan.get("limits") or {}
        self.warnings: list[str] = list(plan.get("warnings") or [])
        self.log_fd = -1
        self.term_requested = False
        self.cgroups: JobCgroups | None = None
        self.pid = 0
        self.started_at = time.time()

    # -- files ---------------------------------------------------------------------------
    def _path(self, name: str) -> Path:
        return self.state_dir / name

    def _log_line(self, text: str) -> None:
        if self.log_fd >= 0:
            with contextlib.suppress(OSError):
                os.write(self.log_fd, f"[suanli] {text}\n".encode())

    def _finish(self, status: dict[str, Any]) -> int:
        status.setdefault("code", None)
        status.setdefault("signal", None)
        status.setdefault("detail", "")
        status["started_at"] = self.started_at
        status["ended_at"] = time.time()
        state.write_json(self._path(state.STATUS), status)
        if self.cgroups is not None:
            left = self.cgroups.remove()
            if left:
                print(f"cgroups not removed: {', '.join(left)}", file=sys.stderr)
        return 0

    def _refuse(self, error: SetupError) -> int:
        self._log_line(f"the job did not start: {error.detail}")
        return self._finish({"reason": "exit_code", "code": error.code, "detail": error.detail})

    # -- signals -------------------------------------------------------------------------
    def _on_term(self, _signum: int, _frame: Any) -> None:
        self.term_requested = True

    def _stop_request(self) -> tuple[str, str, float]:
        request = state.read_json(self._path(state.STOP)) or {}
        reason = str(request.get("reason") or "cancelled")
        detail = str(request.get("detail") or "")
        grace = float(request.get("grace_seconds", DEFAULT_GRACE))
        return reason, detail, max(0.0, grace)

    # -- identity ------------------------------------------------------------------------
    def _identity(self) -> tuple[pwd.struct_passwd | None, list[int] | None]:
        run_as = self.plan.get("run_as")
        if not run_as:
            try:
                return pwd.getpwuid(os.getuid()), None
            except KeyError:
                return None, None
        try:
            user = pwd.getpwnam(run_as)
        except KeyError:
            raise SetupError(f"the Unix user {run_as!r} does not exist") from None
        if os.geteuid() != 0 and user.pw_uid != os.geteuid():
            raise SetupError(
                f"cannot run as the Unix user {run_as!r}: the server does not run as root"
            )
        return user, os.getgrouplist(user.pw_name, user.pw_gid)

    def _check_mounts(self) -> None:
        """Mounts need root: said before the job's process exists, not as a bare EPERM."""
        if self.plan.get("mounts") and os.geteuid() != 0:
            raise SetupError("cannot mount paths into the job: the server does not run as root")

    def _environment(self, user: pwd.struct_passwd | None) -> dict[str, str]:
        env = {k: os.environ[k] for k in _PASSED_THROUGH if k in os.environ}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        if user is not None:
            env.update(
                HOME=user.pw_dir,
                USER=user.pw_name,
                LOGNAME=user.pw_name,
                SHELL=user.pw_shell or "/bin/sh",
            )
        env.update({str(k): str(v) for k, v in (self.plan.get("env") or {}).items()})
        return env

    # -- the job's process ---------------------------------------------------------------
    def _child(
        self,
        user: pwd.struct_passwd | None,
        groups: list[int] | None,
        env: dict[str, str],
        go_r: int,
        err_w: int,
    ) -> None:
        """In the forked child: never returns."""
        stage = "prepare"
        try:
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
                signal.signal(signum, signal.SIG_DFL)
            if hasattr(signal, "SIGXFSZ"):
                signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            with contextlib.suppress(OSError):
                os.setpgid(0, 0)
            # Wait until the wrapper has put this process into the job's cgroups.
            if os.read(go_r, 1) != b"g":
                os._exit(125)
            os.close(go_r)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(self.log_fd, 1)
            os.dup2(self.log_fd, 2)
            stage = "mount"
            mounts.apply(self.plan.get("mounts") or [])
            if groups is not None and user is not None:
                stage = "user"
                os.setgroups(groups)
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)
            stage = "workdir"
            os.chdir(self.plan["workdir"])
            os.closerange(3, err_w)
            os.closerange(err_w + 1, 1 << 16)
            stage = "exec"
            argv = list(self.plan["argv"])
            os.execvpe(argv[0], argv, env)  # noqa: S606 - an argument vector, no shell
        except OSError as error:
            code = 125
            if stage == "exec":
                code = 127 if error.errno == errno.ENOENT else 126
            message = json.dumps({"stage": stage, "error": error.strerror or str(error)})
            with contextlib.suppress(OSError):
                os.write(err_w, message.encode())
            os._exit(code)
        except mounts.MountError as error:
            with contextlib.suppress(OSError):
                os.write(err_w, json.dumps({"stage": stage, "error": str(error)}).encode())
            os._exit(125)
        except BaseException:
            os._exit(125)

    def _start_failure(self, message: dict[str, str]) -> str:
        argv0 = self.plan["argv"][0]
        why = message.get("error", "")
        stage = message.get("stage")
        if stage == "exec":
            return f"cannot execute {argv0!r}: {why}"
        if stage == "workdir":
            return f"cannot enter the working directory {self.plan['workdir']}: {why}"
        if stage == "mount":  # a whole sentence already
            return why
        if stage == "user":
            return f"cannot switch to the Unix user {self.plan.get('run_as')!r}: {why}"
        return f"the job could not be prepared: {why}"

    def _killpg(self, signum: int) -> None:
        if self.pid > 0:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)

    # -- the whole run -------------------------------------------------------------------
    def run(self) -> int:
        # The backend made the cgroups and wrote the limits (so their warnings are known when
        # launch returns); the wrapper moves the job in, and removes them however it ends.
        cgroup_plan = self.plan.get("cgroups") or {}
        hierarchies = Hierarchies.from_json(cgroup_plan.get("hierarchies") or {})
        self.cgroups = JobCgroups.existing(hierarchies, cgroup_plan.get("dirs") or [])
        sig_r, sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(sig_w)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_term)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        # From here on a SIGTERM is understood; before, `stop` only writes stop.json, which
        # is read just below (see LocalBackend.stop for why this closes the race).
        self._path(state.READY).touch()
        self.log_fd = state.open_log(self.plan["log_path"])

        if self.term_requested or self._path(state.STOP).exists():
            reason, detail, _ = self._stop_request()
            return self._finish({"reason": reason, "detail": detail or "stopped before it started"})
        try:
            user, groups = self._identity()
            self._check_mounts()
        except SetupError as error:
            return self._refuse(error)
        if groups is not None and user is not None:  # the job's user may read its own log
            with contextlib.suppress(OSError):
                os.fchown(self.log_fd, user.pw_uid, user.pw_gid)
        env = self._environment(user)

        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        self.pid = os.fork()
        if self.pid == 0:
            os.close(go_w)
            os.close(err_r)
            self._child(user, groups, env, go_r, err_w)
        os.close(go_r)
        os.close(err_w)
        with contextlib.suppress(OSError):  # the child does it too; whoever is first
            os.setpgid(self.pid, self.pid)
        pidfd = -1
        with contextlib.suppress(OSError, AttributeError):
            pidfd = os.pidfd_open(self.pid)
        self.warnings += self.cgroups.join(self.pid, self.limits)
        state.write_json(
            self._path(state.PROCESS),
            {
                "pgid": self.pid,
                "start_time": state.start_time(self.pid),
                "cgroups": self.cgroups.to_json(),
                "hierarchies": hierarchies.to_json(),
            },
        )
        state.write_json(self._path(state.WARNINGS), self.warnings)
        os.write(go_w, b"g")
        os.close(go_w)
        failure = b""
        while chunk := os.read(err_r, 4096):
            failure += chunk
        os.close(err_r)
        self.started_at = time.time()
        if failure:
            _, wait_status = os.waitpid(self.pid, 0)
            detail = self._start_failure(json.loads(failure))
            self._log_line(f"the job did not start: {detail}")
            self.cgroups.kill_all()
            return self._finish(
                {
                    "reason": "exit_code",
                    "code": os.waitstatus_to_exitcode(wait_status),
                    "detail": detail,
                }
            )
        return self._supervise(pidfd, sig_r)

    def _supervise(self, pidfd: int, sig_r: int) -> int:
        if self.cgroups is None:  # run() sets them before starting the job
            raise RuntimeError("no cgroups")
        max_duration = self.plan.get("max_duration")
        timeout_grace = float(self.plan.get("timeout_grace", DEFAULT_GRACE))
        started = time.monotonic()
        deadline = started + float(max_duration) if max_duration else None
        kill_at: float | None = None
        stop: tuple[str, str] | None = None
        selector = selectors.DefaultSelector()
        selector.register(sig_r, selectors.EVENT_READ)
        if pidfd >= 0:
            selector.register(pidfd, selectors.EVENT_READ)

        while True:
            now = time.monotonic()
            moments = [t for t in (kill_at, deadline if stop is None else None) if t]
            wait = max(0.0, min(moments) - now) if moments else None
            if pidfd < 0:  # no pidfd (very old kernel): look every 50 ms
                wait = 0.05 if wait is None else min(wait, 0.05)
            selector.select(wait)
            with contextlib.suppress(BlockingIOError):
                while os.read(sig_r, 512):
                    pass
            pid, wait_status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                break
            now = time.monotonic()
            if self.term_requested:
                self.term_requested = False
                reason, detail, grace = self._stop_request()
                if stop is None:
                    stop = (reason, detail)
                    self._killpg(signal.SIGTERM)
                    kill_at = now + grace
                elif kill_at is not None:
                    kill_at = min(kill_at, now + grace)
            if stop is None and deadline is not None and now >= deadline:
                stop = (
                    "timeout",
                    f"ran longer than its maximum duration of {_seconds(max_duration)}",
                )
                self._killpg(signal.SIGTERM)
                kill_at = now + timeout_grace
            if kill_at is not None and now >= kill_at:
                self._killpg(signal.SIGKILL)
                self.cgroups.kill_all()
                kill_at = None

        # The job's first process has ended: nothing of the job may outlive it.
        self._killpg(signal.SIGKILL)
        self.cgroups.kill_all()
        code = signum = None
        if os.WIFSIGNALED(wait_status):
            signum = os.WTERMSIG(wait_status)
        else:
            code = os.WEXITSTATUS(wait_status)
        status: dict[str, Any] = {
            "code": code,
            "signal": signum,
            "usage": {
                "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
                "max_rss_bytes": usage.ru_maxrss * 1024,
                "memory_peak_bytes": self.cgroups.memory_peak(),
                "wall_seconds": round(time.monotonic() - started, 3),
            },
        }
        oom_kills = self.cgroups.oom_kills()
        if stop is not None:
            status["reason"], status["detail"] = stop
            if not status["detail"]:
                status["detail"] = f"stopped ({stop[0]})"
        elif oom_kills and (signum is not None or code != 0):
            memory = self.limits.get("memory_bytes")
            limit = f" of {memory / 2**20:.0f} MiB" if memory else ""
            status["reason"] = "oom"
            status["detail"] = (
                f"out of memory: the job exceeded its memory limit{limit} and the kernel "
                f"killed {oom_kills} of its processes"
            )
        elif signum is not None:
            status["reason"] = "signal"
            status["detail"] = f"killed by signal {signal.Signals(signum).name}"
        else:
            status["reason"] = "exit_code"
            status["detail"] = f"exited with code {code}"
        if status["reason"] in ("timeout", "oom"):
            self._log_line(status["detail"])
        return self._finish(status)

    def fail(self, error: BaseException) -> int:
        """Last resort: the wrapper itself broke. End the job and say so."""
        self._killpg(signal.SIGKILL)
        if self.cgroups is not None:
            self.cgroups.kill_all()
        return self._finish({"reason": "lost", "detail": f"the job's wrapper failed: {error}"})


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m suanli.backends.local.wrapper STATE_DIR", file=sys.stderr)
        return 2
    state_dir = Path(args[0])
    plan = state.read_json(state_dir / state.JOB)
    if not isinstance(plan, dict):
        print(f"no readable {state.JOB} in {state_dir}", file=sys.stderr)
        return 2
    wrapper = Wrapper(state_dir, plan)
    try:
        return wrapper.run()
    except Exception as error:
        traceback.print_exc()
        return wrapper.fail(error)


if __name__ == "__main__":
    sys.exit(main())
