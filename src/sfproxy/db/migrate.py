"""Alembic migrations, applied at start (and by `sfproxy db upgrade`).

Several instances (or workers) may start at once against one database: the upgrade holds a lock
(an advisory lock on PostgreSQL, the write lock on SQLite), so one migrates and the others
wait, then find nothing to do.
"""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

# Any constant: the lock only serialises this service's migrations.
_MIGRATION_LOCK = 0x5F1D_0001


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("sfproxy.db") / "migrations"))
    config.attributes["connection"] = connection
    return config


def head() -> str | None:
    """The newest revision this version of the service knows."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK})
    else:
        # SQLite's driver begins transactions lazily, so two processes could both find the
        # database empty; IMMEDIATE takes the write lock now (busy_timeout makes others wait).
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    command.upgrade(_config(connection), "head")


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the database to the newest revision (a no-op when it is there)."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


async def current(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    async with engine.connect() as connection:
        return await connection.run_sync(_current)
