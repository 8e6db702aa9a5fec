"""A real PostgreSQL on a free loopback port (`postgres_server.py`), and a fresh database per
test; `database_url` runs a test once on SQLite and once on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .postgres_server import PostgresServer, start_postgres

__all__ = ["PostgresServer", "database_url", "postgres_server"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sfproxy.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()
