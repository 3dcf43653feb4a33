"""The `finetune-watch` loop: follows fine-tuning runs through their trainer_log.jsonl.

Each tick it keeps every running run's progress on its row (the list and the page show it
without reading files), stops a run whose loss stopped being a number (`diverged`: training
on would only spend GPU hours), and, once a run has ended, reads its last progress, says in
plain words when it failed because the disk was full, registers the result of a run that
succeeded as a model version, and reads the answers of a finished comparison.
"""

import json
import logging
from collections.abc import Callable

from sqlalchemy import select

from suanli.config import Settings
from suanli.core.errors import SuanliError
from suanli.core.states import TERMINAL, State
from suanli.data import harvest
from suanli.data.store import BlobStore
from suanli.db.engine import Database
from suanli.db.models import Finetune, Job
from suanli.services import finetuning, jobs

log = logging.getLogger(__name__)
DISK_FULL = (b"No space left on device", b"Errno 28")
LOG_TAIL = 8 * 1024  # the failed attempt's last words: its traceback


class FinetuneWatch:
    name = "finetune-watch"

    def __init__(self, settings: Settings, database: Database, wake: Callable[[], None]):
        self.settings = settings
        self.database = database
        self.wake = wake
        self.interval = settings.finetune_watch_interval_seconds
        self.store = BlobStore(settings.data_dir / "data")

    def tick(self) -> None:
        stopped = False
        with self.database.writing() as session:
            rows = session.execute(
                select(Job, Finetune)
                .join(Finetune, Finetune.job_id == Job.id)
                .where(
                    Job.kind == finetuning.KIND,
                    (Job.state == State.running)
                    | (Finetune.registration == "none")
                    | (Finetune.compare_state == "running"),
                )
            ).all()
            for job, row in rows:
                stopped = self._follow(job, row) or stopped
                if row.compare_state == "running":
                    compare = session.get(Job, row.compare_job_id) if row.compare_job_id else None
                    finetuning.settle_compare(self.settings, row, compare)
            session.commit()
        for job_id in self._to_register():
            self._register(job_id)
        if stopped:
            self.wake()

    def _follow(self, job: Job, row: Finetune) -> bool:
        """Progress and divergence of a running run; the last look at one that ended."""
        if job.state == State.running or (job.state in TERMINAL and row.registration == "none"):
            found = finetuning.read_progress(self.settings, job, limit=finetuning.WATCH_BYTES)
            row.progress = found.summary()
            if found.diverged and job.state == State.running and not job.stop_reason:
                job.stop_reason = "diverged"
                jobs.note(job, "event.diverged", step=found.current_steps)
                return True
        if job.state in TERMINAL and row.registration == "none" and job.state != State.succeeded:
            row.registration = "skipped"
            if (
                job.state == State.failed
                and job.exit_reason == "exit_code"
                and self._disk_full(job)
            ):
                jobs.note(job, "event.finetune_disk_full")
                job.exit_detail = "disk full while saving a checkpoint"
        return False

    def _disk_full(self, job: Job) -> bool:
        path = jobs.log_path(self.settings, job.id)
        try:
            with path.open("rb") as handle:
                size = path.stat().st_size
                handle.seek(max(0, size - LOG_TAIL))
                tail = handle.read(LOG_TAIL)
        except OSError:
            return False
        return any(sign in tail for sign in DISK_FULL)

    def _to_register(self) -> list[int]:
        with self.database.reading() as session:
            return list(
                session.scalars(
                    select(Job.id)
                    .join(Finetune, Finetune.job_id == Job.id)
                    .where(Job.state == State.succeeded, Finetune.registration == "none")
                )
            )

    def _register(self, job_id: int) -> None:
        """One run's result, in a transaction of its own: a run that cannot be registered
        says why and does not hold up the others."""
        with self.database.writing() as session:
            job = session.get_one(Job, job_id)
            row = session.get_one(Finetune, job_id)
            try:
                finetuning.register(session, self.settings, self.store, job, row)
                session.commit()
                return
            except (harvest.HarvestError, SuanliError) as error:  # a link, no room left, ...
                problem = {"key": error.key, "params": error.params}
            except Exception:
                log.exception("fine-tuning run %s: registering its result failed", job_id)
                problem = {"key": "error.finetune_register_failed", "params": {}}
            session.rollback()
            row = session.get_one(Finetune, job_id)
            row.registration = "failed"
            row.register_problem = json.loads(json.dumps(problem, default=str))
            session.commit()
