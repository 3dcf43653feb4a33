"""What every kind provides, and what it is given to launch one attempt."""

import pwd
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from suanli.backends.base import Capabilities, Mount
from suanli.config import Settings
from suanli.controllers.loop import Ticking
from suanli.data import links
from suanli.data.store import BlobStore
from suanli.db.engine import Database
from suanli.db.models import Job
from suanli.schemas.jobs import STORED


class Unreadable(Exception):
    """A stored spec or scheduler request that cannot be read (any more): the workload is
    failed with this reason, and everything else goes on."""


class Unsupported(Exception):
    """A launch this backend cannot give (read-only mounts where it cannot mount): the
    attempt fails as a launch error, saying so."""


@dataclass(frozen=True)
class Start:
    """One attempt about to launch, as the controller prepared it."""

    settings: Settings
    job: Job
    spec: Any  # the kind's spec, loaded from the row
    folder: Path  # the workload's own folder, owned by its account
    account: pwd.struct_passwd | None  # None: the server's own user
    env: dict[str, str]  # the spec's variables and the platform's
    fresh: bool  # a new attempt (False: the same one again, re-adopted after a restart)
    capabilities: Capabilities

    @property
    def home(self) -> Path:
        return Path(self.account.pw_dir) if self.account else Path.home()


@dataclass(frozen=True)
class Launch:
    """What a kind runs: the backend gets this with the resources and the placement."""

    argv: tuple[str, ...]
    workdir: Path
    env: dict[str, str]
    launcher: str = "none"  # see suanli.backends.launchers
    ports: tuple[str, ...] = ()
    mounts: tuple[Mount, ...] = field(default_factory=tuple)


def data_inputs(start: Start) -> tuple[tuple[Mount, ...], dict[str, str]]:
    """The datasets and models the workload reads (resolved at submit, `Job.inputs`): each
    version's tree at <folder>/datasets/<name> or <folder>/models/<name>, and SUANLI_DATASETS
    / SUANLI_MODELS naming those two folders. Bound read-only where the backend can mount
    (the local backend as root); else made there as links to the stored files
    (suanli.data.links: Slurm, a server that is not root) on a new attempt: one re-adopted
    after a restart has them already (they were made before it was marked starting)."""
    store = BlobStore(start.settings.data_dir / "data")
    wanted = [
        (store.tree_of(int(item["version_id"])), f"{item['kind']}s", str(item["name"]))
        for item in start.job.inputs or []
    ]
    if not wanted:
        return (), {}
    env = {
        "SUANLI_DATASETS": str(start.folder / "datasets"),
        "SUANLI_MODELS": str(start.folder / "models"),
    }
    if start.capabilities.mounts:
        mounts = tuple(
            Mount(source=tree, target=start.folder / group / name) for tree, group, name in wanted
        )
        return mounts, env
    if start.fresh:
        for tree, group, name in wanted:
            links.place(start.folder, group, name, tree)
    return (), env


class Kind:
    """A kind of workload. Subclasses set `name` (the `kind` column), `spec_model` and
    `launch`; the rest has defaults that suit a kind with nothing special."""

    name: ClassVar[str]
    spec_model: ClassVar[type[BaseModel]]
    # The version of the spec as this code stores it; `upgrade` brings older rows to it.
    version: ClassVar[int] = 1
    # Reasons to stop it of its own (besides `cancelled` and `preempted`), each with the
    # history's event: it then ends cancelled with that reason as its exit reason.
    stops: ClassVar[Mapping[str, str]] = {}
    # Its replicas serve only once a health check says so (Job.ready_at): a rolling update
    # waits for that, not for `running`.
    probed: ClassVar[bool] = False

    def load(self, data: Mapping[str, Any], version: int = 1) -> Any:
        """A stored spec, tolerantly: brought up to this version, keys the code no longer
        knows dropped, rules added since it was accepted skipped (STORED). Unreadable when it
        still does not fit."""
        if not isinstance(data, Mapping):
            raise Unreadable("the stored spec is not an object")
        if version > self.version:
            raise Unreadable(f"spec version {version} is newer than this server's {self.version}")
        data = self.upgrade(dict(data), version)
        known = {key: value for key, value in data.items() if key in self.spec_model.model_fields}
        try:
            return self.spec_model.model_validate(known, context=STORED)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "spec"
            raise Unreadable(f"{where}: {first['msg']}") from None

    def upgrade(self, data: dict[str, Any], version: int) -> dict[str, Any]:
        """Older stored versions to this one; none exist yet."""
        return data

    def launch(self, start: Start) -> Launch:
        raise NotImplementedError

    def controllers(
        self, settings: Settings, database: Database, wake: Callable[[], None]
    ) -> list[Ticking]:
        """Loops this kind needs beside the workload controller (a dev environment's idle
        culler)."""
        return []
