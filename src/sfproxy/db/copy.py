"""`sfproxy db copy --to URL`: client keys, the ledger and video jobs, moved to another database.

For moving from the default SQLite file to PostgreSQL (or back). Rows are read and written in
batches, in id order, so a large ledger never sits in memory whole. The target must have no
rows in these tables: copying twice would double every total.
"""

from __future__ import annotations

from sqlalchemy import Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..errors import ConflictError
from .tables import client_keys, ledger, video_jobs

BATCH_ROWS = 1000
# Video jobs too: an unfinished one is followed, and settled, from the database it is in.
COPIED = (client_keys, ledger, video_jobs)


async def copy_database(source: AsyncEngine, target: AsyncEngine) -> dict[str, int]:
    """Rows copied per table; the target's tables must exist (migrated) and be empty."""
    async with target.begin() as writing:
        for table in COPIED:
            rows = (await writing.execute(select(func.count()).select_from(table))).scalar()
            if rows:
                raise ConflictError(
                    f"The target database already has {rows} row(s) in {table.name}: "
                    "copy only into an empty one."
                )
        copied = {}
        async with source.connect() as reading:
            for table in COPIED:
                copied[table.name] = await _copy_table(table, reading, writing)
        if writing.dialect.name == "postgresql":
            # Ids were copied as they were: the ledger's sequence continues after the last.
            await writing.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence('ledger', 'id'), "
                    "COALESCE((SELECT MAX(id) FROM ledger), 0) + 1, false)"
                )
            )
    return copied


async def _copy_table(table: Table, reading: AsyncConnection, writing: AsyncConnection) -> int:
    key = table.c.id
    last = None
    total = 0
    while True:
        query = select(table).order_by(key).limit(BATCH_ROWS)
        if last is not None:
            query = query.where(key > last)
        rows = [dict(row) for row in (await reading.execute(query)).mappings()]
        if not rows:
            return total
        await writing.execute(table.insert(), rows)
        total += len(rows)
        last = rows[-1]["id"]
