"""The database: migrated at start on both engines, once, and the same as the tables say."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from sfproxy.db import migrate
from sfproxy.db.database import Database
from sfproxy.db.engine import async_url
from sfproxy.db.tables import metadata


def test_urls_get_the_async_drivers() -> None:
    assert async_url("sqlite:///data/x.db").drivername == "sqlite+aiosqlite"
    assert async_url("postgresql://u@h/db").drivername == "postgresql+asyncpg"
    assert async_url("postgres://u@h/db").drivername == "postgresql+asyncpg"


def test_other_databases_are_refused() -> None:
    try:
        async_url("mysql://u@h/db")
    except ValueError as exc:
        assert str(exc) == "DATABASE_URL must be sqlite:///PATH or postgresql://…, not mysql://"
    else:
        raise AssertionError("mysql was accepted")


async def test_start_migrates_to_the_tables_and_again_is_a_no_op(database_url: str) -> None:
    async with Database.open(database_url) as database:
        assert await migrate.current(database.engine) == migrate.head() == "0002"
        await database.ping()
        async with database.engine.connect() as connection:
            differences = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
            )
        assert differences == []
    async with Database.open(database_url) as again:
        assert await migrate.current(again.engine) == "0002"


async def test_instances_starting_together_migrate_once(database_url: str) -> None:
    async def start() -> str | None:
        async with Database.open(database_url) as database:
            return await migrate.current(database.engine)

    assert await asyncio.gather(*(start() for _ in range(4))) == ["0002"] * 4
