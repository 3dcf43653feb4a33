"""The store's upkeep: checksums read again a slice at a time (the scrub), unfinished uploads
expired, and content nobody uses any more removed.

A blob found corrupt or missing is marked so (suanli.services.verification); the metrics
loop turns it into the `data.corrupt` alert event.
"""

from suanli.config import Settings
from suanli.data.store import BlobStore
from suanli.db.engine import Database
from suanli.db.models import utcnow
from suanli.services import data, uploads, verification


class ScrubController:
    name = "scrub"

    def __init__(self, settings: Settings, database: Database, store: BlobStore) -> None:
        self.database = database
        self.store = store
        self.interval = settings.scrub_interval_seconds
        self.budget = settings.scrub_bytes_per_round

    def tick(self) -> None:
        with self.database.writing() as session:
            uploads.expire(session, self.store)
            data.collect_garbage(session, self.store, utcnow() - uploads.LIFETIME)
        with self.database.writing() as session:
            verification.scrub(session, self.store, self.budget)
