"""The database a running service holds: its engine, migrated at start.

Nothing here is on a request's path except through the key store's cache and the ledger's
background writer; a database that stops answering slows neither (see keys.py, ledger.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from . import migrate
from .engine import make_engine

logger = logging.getLogger(__name__)

# A readiness probe must answer within its few seconds, whatever the database does.
PING_TIMEOUT = 2.0


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @property
    def dialect(self) -> str:
        """ "sqlite" or "postgresql"."""
        return self.engine.dialect.name

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, *, upgrade: bool = True) -> AsyncIterator[Database]:
        """The database at `url`, brought to the newest revision first (unless told not to)."""
        engine = make_engine(url)
        try:
            if upgrade:
                await migrate.upgrade(engine)
            yield cls(engine)
        finally:
            await engine.dispose()

    async def ping(self) -> None:
        """Raise when the database does not answer a trivial query within PING_TIMEOUT."""
        async with asyncio.timeout(PING_TIMEOUT):
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
