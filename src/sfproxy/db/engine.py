"""The database engine for `DATABASE_URL`: SQLite through aiosqlite, PostgreSQL through asyncpg.

Users write the URLs they know (`sqlite:///data/sfproxy.db`, `postgresql://user:pw@host/db`);
the async drivers are chosen here, so nobody has to know SQLAlchemy's `+aiosqlite` spelling.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def async_url(url: str) -> URL:
    """The URL with the async driver this service uses; ValueError for any other database."""
    parsed = make_url(url)
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(
            f"DATABASE_URL must be sqlite:///PATH or postgresql://…, not {parsed.drivername}://"
        )
    return parsed.set(drivername=driver)


def make_engine(url: str) -> AsyncEngine:
    parsed = async_url(url)
    if parsed.drivername.startswith("sqlite"):
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(parsed)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # pool_pre_ping: a PostgreSQL restarted under the service is noticed at the next checkout,
    # not as a failed write.
    return create_async_engine(parsed, pool_size=5, max_overflow=5, pool_pre_ping=True)


def _sqlite_pragmas(connection: object, _record: object) -> None:
    # busy_timeout first: it makes a connection wait for another process's write instead of
    # failing at once. WAL lets readers (reports, key lookups) run beside the ledger's writer.
    cursor = connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA busy_timeout=5000")
    _enable_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _enable_wal(cursor: Any) -> None:
    """Switch a new database to WAL. The switch needs the database to itself, and SQLite does
    not wait for that: when instances start together, the others try again until one made it
    (then the file is in WAL mode, and asking again takes no lock)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
