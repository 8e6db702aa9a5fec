"""Issue 12's ledger under load: the service with `LEDGER=off`, with the ledger on SQLite and on
PostgreSQL, and on SQLite with a database client key, in rotating rounds; then each ledger's
rows counted against the requests its service answered. `ledger.py` (and `report.py`) judge it.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from tests.support.postgres_server import PostgresServer, start_postgres

from sfproxy.ledger import BATCH_RECORDS

from .context import (
    GENERATIONS,
    STORE_OFF,
    Context,
    Target,
    bearer,
    brief,
    direct_target,
    per_request_ms,
    service_body,
)
from .ledger_insert import REPEATS, insert_cost_us
from .processes import Pinning, Server

SERVICES = ("service_off", "service_sqlite", "service_postgresql", "service_sqlite_key")
ROUNDS = 4
# The writer inserts once a second; this leaves it several tries after the last request.
RECORDS_DEADLINE_S = 20.0


def _create_key(database_url: str) -> str:
    """A database client key, made as an operator would (`sfproxy keys create`)."""
    done = subprocess.run(
        [sys.executable, "-m", "sfproxy", "keys", "create", "bench-client"],
        env={"DATABASE_URL": database_url, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # The key is the last line; the first names its id.
    return done.stdout.strip().splitlines()[-1].strip()


_BY_STATUS = "SELECT status, count(*) FROM ledger GROUP BY status ORDER BY status"


def _sqlite_rows(database_url: str) -> dict[str, int]:
    with sqlite3.connect(database_url.removeprefix("sqlite:///")) as reader:
        return {str(status): int(n) for status, n in reader.execute(_BY_STATUS)}


def _counter(postgres: PostgresServer, database_url: str) -> Callable[[], dict[str, int]]:
    """Ledger rows by status, read from the database itself."""
    if database_url.startswith("sqlite:///"):
        return lambda: _sqlite_rows(database_url)

    def postgres_rows() -> dict[str, int]:
        lines = postgres.psql(database_url, _BY_STATUS).splitlines()
        return {status: int(n) for status, n in (line.split("\t") for line in lines)}

    return postgres_rows


async def _answered(session: aiohttp.ClientSession, server: Server) -> dict[str, int]:
    """Generations the service answered, by status, by its own count (sfproxy_requests_total)."""
    async with session.get(server.url + "/metrics") as response:
        text = await response.text()
    found: dict[str, int] = {}
    for line in text.splitlines():
        if (
            line.startswith("sfproxy_requests_total{")
            and f'route="{GENERATIONS}"' in line
            and 'method="POST"' in line
        ):
            status = line.split('status="', 1)[1].split('"', 1)[0]
            found[status] = found.get(status, 0) + int(float(line.rsplit(" ", 1)[1]))
    return dict(sorted(found.items()))


async def _records(
    ctx: Context, server: Server, count_rows: Callable[[], dict[str, int]], wrk_answered: int
) -> dict[str, Any]:
    """The ledger's rows once they match the service's count of answers, or at the deadline:
    wrk stops with requests in flight, which the service still answers (and records)."""
    deadline = time.monotonic() + RECORDS_DEADLINE_S
    while True:
        # Answers first: a record is queued when its request settles, just before it is answered.
        answered = await _answered(ctx.session, server)
        rows = await asyncio.to_thread(count_rows)
        if rows == answered or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    return {
        "rows": sum(rows.values()),
        "answered": sum(answered.values()),
        "rows_by_status": rows,
        "answered_by_status": answered,
        "wrk_answered": wrk_answered,
    }


async def ledger(ctx: Context) -> dict[str, Any]:
    """Issue 12: what the ledger costs, on SQLite and PostgreSQL, beside LEDGER=off."""
    await ctx.control.configure(latency=0.0, download_latency=0.0, image_min_bytes=0)
    postgres = await asyncio.to_thread(start_postgres, Pinning.prefix(ctx.pinning.upstream))
    try:
        databases: dict[str, str] = {}
        for name in ("service_off", "service_sqlite", "service_sqlite_key"):
            (ctx.workdir / name).mkdir(parents=True, exist_ok=True)
            databases[name] = f"sqlite:///{ctx.workdir / name / 'sfproxy.db'}"
        databases["service_postgresql"] = postgres.create_database()
        key = await asyncio.to_thread(_create_key, databases["service_sqlite_key"])
        servers: dict[str, Server] = {"direct": ctx.fake}
        for name in SERVICES:
            extra = {"LEDGER": "off"} if name == "service_off" else {}
            servers[name] = await ctx.fresh_service(
                f"ledger_{name}", **STORE_OFF, DATABASE_URL=databases[name], **extra
            )
        targets = {
            name: Target(
                servers[name].url + GENERATIONS,
                service_body(),
                bearer(key) if name == "service_sqlite_key" else {},
            )
            for name in SERVICES
        }
        targets = {"direct": await direct_target(ctx, targets["service_off"]), **targets}
        # Every answer wrk or the harness got from each service, to set beside the ledger.
        seen = {name: 1 if name == "service_off" else 0 for name in targets}
        for name, target in targets.items():
            await ctx.check_images(target)
            seen[name] += 1
        seconds = 2.0 if ctx.quick else 5.0
        rounds = 1 if ctx.quick else ROUNDS
        levels = []
        for concurrency in (1, 64):
            measured: list[dict[str, Any]] = []
            for index in range(rounds + 1):
                # Round 0 is the direct call; then each service takes every place in turn.
                shift = (index - 1) % len(SERVICES)
                order = ["direct"] if index == 0 else [*SERVICES[shift:], *SERVICES[:shift]]
                runs: dict[str, Any] = {}
                for name in order:
                    warm = await ctx.load(targets[name], concurrency=concurrency, seconds=1)
                    cpu_before = servers[name].cpu_seconds()
                    result = await ctx.load(targets[name], concurrency=concurrency, seconds=seconds)
                    cpu = servers[name].cpu_seconds() - cpu_before
                    seen[name] += warm.requests + result.requests
                    runs[name] = {
                        **result.to_json(),
                        "cpu_ms_per_request": per_request_ms(cpu, result),
                    }
                    print(f"bench:   c={concurrency:<4} {name:<20} {brief(runs[name])}", flush=True)
                measured.append(runs)
            direct, *turns = measured
            levels.append(
                {"concurrency": concurrency, "runs": {**direct, **turns[0]}, "rounds": turns}
            )
        records = {
            name: await _records(
                ctx, servers[name], _counter(postgres, databases[name]), seen[name]
            )
            for name in SERVICES
            if name != "service_off"
        }
        # Measured directly too, after the load: the service's figures spread it over requests.
        insert_us = {
            "batch": BATCH_RECORDS,
            "repeats": REPEATS,
            "engines": {
                "SQLite": await insert_cost_us(f"sqlite:///{ctx.workdir / 'ledger_insert.db'}"),
                "PostgreSQL": await insert_cost_us(postgres.create_database()),
            },
        }
        version = subprocess.run(
            [str(postgres.bin_dir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    finally:
        ctx.stop_scoped()
        await asyncio.to_thread(postgres.stop)
    return {
        "seconds_per_run": seconds,
        "rounds": rounds,
        "postgresql": version,
        "records": records,
        "insert_cpu_us": insert_us,
        "levels": levels,
    }
