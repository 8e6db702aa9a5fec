"""The usage ledger: one record per request that reached the corridor, written off the hot path.

`Ledger.settled` is called once a request settles (`Ticket.close` in corridor.py). It prices
the record (`prices.py`: `cost` for the images SiliconFlow made, `charged` for the images the
client received; both NULL when the model's price is unknown) and hands it to the
`LedgerWriter`, which keeps it in a bounded in-memory buffer. Nothing on a request's path
awaits the database.

The writer inserts the buffer in batches (one transaction each) every `FLUSH_SECONDS`, or
sooner when a batch fills, so a `kill -9` loses at most about that second of records. At
shutdown (SIGTERM) it writes everything left, for at most `SHUTDOWN_FLUSH_SECONDS`, and logs
each record it could not write. While the database is unreachable, records wait and are
retried with back-off; when `LEDGER_BUFFER` records wait, new ones are dropped (counted, and
logged), so the ledger stays complete up to the moment the buffer filled rather than gaining
holes here and there.

A request whose generation a client abandoned is recorded when that generation ends, not when
the client left: only then is it known how many images SiliconFlow made, and billed, for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import islice
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from .auth import ANONYMOUS, Client
from .db.tables import ledger
from .generate import Calls, Generation
from .metrics import Metrics
from .prices import Price, Prices

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0
# Rows per transaction: a few of them a second at most, and a failed one is retried whole.
BATCH_RECORDS = 500
# A write that takes longer is treated as failed; longer than SQLite's busy_timeout (engine.py),
# so that a database locked by another writer fails as locked, not as timed out.
WRITE_TIMEOUT = 10.0
MAX_BACKOFF = 30.0
SHUTDOWN_FLUSH_SECONDS = 10.0


@dataclass(slots=True)
class LedgerRecord:
    """One request's row in the `ledger` table (see db/tables.py for what each column means)."""

    at: datetime
    request_id: str
    client: str
    endpoint: str
    model_requested: str | None
    model: str
    images_requested: int
    images_delivered: int
    images_refunded: int
    size: str | None
    status: int
    # Filled in by `Ledger.settled`, from the request's own upstream calls and the price table.
    images_made: int = 0
    upstream_account: str | None = None
    upstream_ms: int | None = None
    cost: Decimal | None = None
    charged: Decimal | None = None
    currency: str | None = None

    def row(self) -> dict[str, Any]:
        return asdict(self)

    def priced(self, price: Price | None) -> None:
        """`cost` is what SiliconFlow billed (the images made), `charged` what the client pays
        (the images delivered); an unknown price leaves both NULL, never 0."""
        if price is not None:
            self.currency = price.currency
            self.cost = price.of(self.images_made)
            self.charged = price.of(self.images_delivered)


def count_spend(metrics: Metrics, record: LedgerRecord) -> None:
    """A priced record's cost and charge, in `sfproxy_upstream_cost_total` and
    `sfproxy_charged_total`."""
    if record.currency is None:
        return
    if record.cost:
        metrics.upstream_cost.labels(record.model, record.currency).inc(float(record.cost))
    if record.charged:
        metrics.charged.labels(record.model, record.currency).inc(float(record.charged))


def ledger_client(client: Client) -> str:
    """Who a record names: the key's label or id; a keyless client, which a public API limits
    per address ("ip-…", routes/common.py), is "anonymous": the ledger keeps no addresses."""
    return ANONYMOUS if client.label.startswith("ip-") else client.label


class Ledger:
    """Turns settled requests into priced records, counts the spend, and queues the records."""

    def __init__(self, writer: LedgerWriter | LedgerOff, prices: Prices, metrics: Metrics) -> None:
        self.writer = writer
        self.prices = prices
        self.metrics = metrics

    def settled(
        self, record: LedgerRecord, calls: Calls | None, work: asyncio.Future[Any] | None
    ) -> None:
        """Record a settled request; `calls` (and their `work`) are its own upstream calls.

        While they still run (the client left, and calls already at SiliconFlow finish), the
        record waits for them: their images are billed whether anyone receives them or not.
        """
        if work is not None and not work.done():
            work.add_done_callback(lambda done: self._complete(record, calls, done))
        else:
            self._complete(record, calls, work)

    def _complete(
        self, record: LedgerRecord, calls: Calls | None, work: asyncio.Future[Any] | None
    ) -> None:
        if calls is not None:
            made = calls.made
            record.images_made = sum(made.values())
            # The account that made most of them; a request's calls rarely span accounts.
            accounts = [(n, label) for label, n in made.items() if label is not None and n]
            record.upstream_account = max(accounts)[1] if accounts else None
            record.upstream_ms = round(calls.upstream.total() * 1000)
            if record.size is None and work is not None and _finished_well(work):
                generation = work.result()
                if isinstance(generation, Generation):
                    record.size = generation.size
        record.priced(self.prices.of(record.model))
        count_spend(self.metrics, record)
        self.writer.add(record)


def _finished_well(work: asyncio.Future[Any]) -> bool:
    return work.done() and not work.cancelled() and work.exception() is None


class LedgerOff:
    """The writer with `LEDGER=off`: records are priced and counted in the spend metrics as
    usual, then dropped; nothing touches the database."""

    status = "off"
    waiting = 0

    def add(self, record: LedgerRecord) -> None:
        pass

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class LedgerWriter:
    """A bounded buffer of records, written to the database in batches by one background task."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        capacity: int,
        metrics: Metrics,
        flush_seconds: float = FLUSH_SECONDS,
        batch: int = BATCH_RECORDS,
    ) -> None:
        self.engine = engine
        self.capacity = capacity
        self.metrics = metrics
        self.flush_seconds = flush_seconds
        self.batch = batch
        self._buffer: deque[LedgerRecord] = deque()
        # Set when a batch fills, and at shutdown.
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        # The last write's failure, and since when writes fail (None while they succeed).
        self.failure: str | None = None
        self.failing_since: datetime | None = None
        self.dropped = 0
        self._dropped_in_outage = 0

    @property
    def waiting(self) -> int:
        return len(self._buffer)

    @property
    def status(self) -> str:
        """For /readyz: "ok", or why records are waiting and how many."""
        if self.failure is None:
            return "ok"
        assert self.failing_since is not None
        dropped = f", {self._dropped_in_outage} dropped" if self._dropped_in_outage else ""
        return (
            f"database unreachable since {self.failing_since:%Y-%m-%dT%H:%M:%SZ}: "
            f"{self.waiting} record(s) waiting{dropped} ({self.failure})"
        )

    def add(self, record: LedgerRecord) -> None:
        """Queue a record (never blocks): dropped, and counted, when the buffer is full."""
        if len(self._buffer) >= self.capacity:
            self.dropped += 1
            self._dropped_in_outage += 1
            self.metrics.ledger_dropped.inc()
            if self._dropped_in_outage == 1:
                logger.error(
                    "ledger buffer full (LEDGER_BUFFER=%d): new records are dropped until the "
                    "database takes writes again; first dropped: request %s",
                    self.capacity,
                    record.request_id,
                )
            return
        self._buffer.append(record)
        self.metrics.ledger_buffered.set(len(self._buffer))
        if len(self._buffer) >= self.batch:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self, timeout: float = SHUTDOWN_FLUSH_SECONDS) -> None:
        """Write what is left (for at most `timeout` seconds), then log what could not be."""
        deadline = time.monotonic() + timeout
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            # The task ends after the write it is doing: cancelling a commit midway would
            # leave it unknown whether its rows were written.
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
        while self._buffer and time.monotonic() < deadline:
            if not await self._write_all():
                await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        if self._buffer:
            logger.error(
                "ledger: %d record(s) could not be written before shutdown (%s); they follow",
                len(self._buffer),
                self.failure,
            )
            for record in self._buffer:
                logger.error("ledger record not written: %s", _as_json(record))
            self.metrics.ledger_dropped.inc(len(self._buffer))
            self._buffer.clear()

    async def _run(self) -> None:
        backoff = 0.0
        while not self._stopping:
            await self._pause(backoff or self.flush_seconds, failing=backoff > 0)
            if self._stopping:
                return
            if await self._write_all():
                backoff = 0.0
            else:
                backoff = min(MAX_BACKOFF, max(self.flush_seconds, backoff * 2))

    async def _pause(self, seconds: float, *, failing: bool) -> None:
        """Until `seconds` pass, or shutdown; or a batch fills, unless writes are failing."""
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while not self._stopping:
            remaining = until - loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return
            self._wake.clear()
            if not failing:
                return

    async def _write_all(self) -> bool:
        """Write the buffer, batch by batch; False when a write failed (the rest stay)."""
        while self._buffer:
            # Only this task removes records, so the first `batch` stay those written.
            batch = list(islice(self._buffer, self.batch))
            try:
                async with asyncio.timeout(WRITE_TIMEOUT):
                    async with self.engine.begin() as connection:
                        # One cached statement, executed for many rows (the driver's
                        # executemany): a multi-row `.values([...])` is compiled afresh for
                        # every batch, about 6× the CPU per record (docs/benchmarks.md, the
                        # ledger's section).
                        await connection.execute(ledger.insert(), [r.row() for r in batch])
            except Exception as exc:
                self._failed(exc)
                return False
            for _ in batch:
                self._buffer.popleft()
            self.metrics.ledger_written.inc(len(batch))
            self.metrics.ledger_buffered.set(len(self._buffer))
        if self.failure is not None:
            logger.warning(
                "ledger: the database takes writes again (%d record(s) were dropped meanwhile)",
                self._dropped_in_outage,
            )
            self.failure = self.failing_since = None
            self._dropped_in_outage = 0
        return True

    def _failed(self, exc: Exception) -> None:
        # The driver's own error says why (refused, locked); SQLAlchemy's wrapper adds the SQL.
        cause = getattr(exc, "orig", None) or exc
        reason = f"{cause.__class__.__name__}: {str(cause)[:200]}".rstrip(": ")
        if self.failure is None:
            self.failing_since = datetime.now(UTC)
            logger.warning(
                "ledger: cannot write to the database (%s); %d record(s) wait and are retried",
                reason,
                len(self._buffer),
            )
        self.failure = reason


async def remove_old_records(engine: AsyncEngine, retention_days: int) -> None:
    """Delete ledger records older than the retention, now and then hourly, until cancelled."""
    while True:
        try:
            removed = await delete_older_than(engine, datetime.now(UTC) - timedelta(retention_days))
        except Exception as exc:
            logger.warning("ledger retention sweep failed: %s", exc.__class__.__name__)
        else:
            if removed:
                logger.info("ledger retention: removed %d record(s)", removed)
        await asyncio.sleep(3600)


async def delete_older_than(engine: AsyncEngine, cutoff: datetime) -> int:
    async with asyncio.timeout(WRITE_TIMEOUT * 6):
        async with engine.begin() as connection:
            result = await connection.execute(ledger.delete().where(ledger.c.at < cutoff))
    return result.rowcount


def _as_json(record: LedgerRecord) -> str:
    return json.dumps(record.row(), default=str, separators=(",", ":"))
