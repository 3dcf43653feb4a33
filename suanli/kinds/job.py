"""A job: a command or a script that runs to completion (retried as its spec says)."""

from pathlib import Path

from suanli.kinds.base import Kind, Launch, Start, data_inputs
from suanli.schemas.jobs import JobSpec
from suanli.services import workfolders


class JobKind(Kind):
    name = "job"
    spec_model = JobSpec

    def launch(self, start: Start) -> Launch:
        spec = start.spec
        if spec.script is not None:
            script = workfolders.write(start.folder, "script.sh", spec.script, start.account)
            argv: tuple[str, ...] = ("/bin/bash", str(script))
        else:
            argv = tuple(spec.command or ())
        workdir = Path(spec.workdir) if spec.workdir else start.folder
        mounts, env = data_inputs(start)
        return Launch(
            argv=argv,
            workdir=workdir,
            env={**start.env, **env},
            launcher=spec.launcher,
            mounts=mounts,
        )


KIND = JobKind()
