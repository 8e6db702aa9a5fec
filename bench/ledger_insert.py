"""What writing a ledger record costs the service's CPU, measured directly: the `LedgerWriter`
writing a full batch, in this process, beside the multi-row `insert().values([...])` it once
used (compiled afresh for every batch).

The load runs beside it measure the whole service, where the writer's share is spread over the
requests of each second; this says what one record costs. Only this process's CPU is counted
(the driver's threads included): a PostgreSQL server's own work is not.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from decimal import Decimal
from statistics import median

from sfproxy.db.database import Database
from sfproxy.db.tables import ledger
from sfproxy.ledger import BATCH_RECORDS, LedgerRecord, LedgerWriter
from sfproxy.metrics import Metrics

REPEATS = 5


def _record(index: int) -> LedgerRecord:
    """A record as a Qwen-Image generation leaves it."""
    return LedgerRecord(
        at=datetime.now(UTC),
        request_id=f"bench-{index:08d}",
        client="anonymous",
        endpoint="images",
        model_requested="Qwen/Qwen-Image",
        model="Qwen/Qwen-Image",
        images_requested=1,
        images_delivered=1,
        images_refunded=0,
        size="1328x1328",
        status=200,
        images_made=1,
        upstream_account="acct-0123abcd",
        upstream_ms=3,
        cost=Decimal("0.3"),
        charged=Decimal("0.3"),
        currency="CNY",
    )


async def insert_cost_us(database_url: str) -> dict[str, float]:
    """CPU microseconds per record: the writer (`add`, then `stop` writes the batch), and the
    multi-row VALUES form; the median of `REPEATS` batches of `BATCH_RECORDS` each."""
    metrics = Metrics()
    timings: dict[str, list[float]] = {"writer": [], "multi_row_values": []}
    async with Database.open(database_url) as database:
        # The first batch of each form opens connections and fills caches: not timed.
        for repeat in range(REPEATS + 1):
            batch = [_record(repeat * BATCH_RECORDS + i) for i in range(BATCH_RECORDS)]
            writer = LedgerWriter(database.engine, capacity=BATCH_RECORDS, metrics=metrics)
            started = time.process_time()
            for record in batch:
                writer.add(record)
            await writer.stop()
            writer_s = time.process_time() - started
            started = time.process_time()
            async with database.engine.begin() as connection:
                await connection.execute(ledger.insert().values([r.row() for r in batch]))
            values_s = time.process_time() - started
            if repeat:
                timings["writer"].append(writer_s / BATCH_RECORDS * 1e6)
                timings["multi_row_values"].append(values_s / BATCH_RECORDS * 1e6)
    return {name: round(median(values), 1) for name, values in timings.items()}


if __name__ == "__main__":
    import sys
    import tempfile

    url = sys.argv[1] if len(sys.argv) > 1 else f"sqlite:///{tempfile.mkdtemp()}/ledger.db"
    print(asyncio.run(insert_cost_us(url)))
