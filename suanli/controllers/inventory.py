"""Keeps the nodes and GPUs in the database matching what the backend finds."""

from suanli.backends.base import Backend
from suanli.db.engine import Database
from suanli.services.nodes import record_inventory


class InventoryController:
    name = "inventory"

    def __init__(self, database: Database, backend: Backend, interval: float = 60.0):
        self.database = database
        self.backend = backend
        self.interval = interval

    def tick(self) -> None:
        hosts = self.backend.inventory()
        with self.database.writing() as session:
            record_inventory(session, self.backend.name, hosts)
