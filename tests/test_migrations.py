"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from suanli.db import migrate
from suanli.db.engine import Database
from suanli.db.models import Base


def test_migrations_match_models(database_url: str) -> None:
    database = Database(database_url)
    try:
        migrate.upgrade(database.engine)
        assert migrate.is_current(database.engine)
        with database.engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == []
        migrate.upgrade(database.engine)  # a second start changes nothing
        assert migrate.current_revision(database.engine) == migrate.head_revision(database.engine)
    finally:
        database.dispose()
