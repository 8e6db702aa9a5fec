"""What a video costs its client: reserved at submit, charged when it completes, given back when
it fails, and recorded in the ledger once, by whichever instance finishes the job.

Everything settling needs is in the job's row (the price, the budget counters and the
images-per-day entry), so an instance that never saw the submit, after any restart, settles it
exactly as the one that did would have.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..budgets import NO_SPEND, HeldSpend, Spend, from_micros
from ..ledger import Ledger, LedgerOff, LedgerRecord, count_spend
from ..limits import NO_RESERVATION, ClientLimits, CountedReservation, Reservation
from ..metrics import Metrics
from ..prices import Price
from .repository import Row, aware

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a job ended, for its money: `delivered` 1 (completed) or 0, `made` 1 when
    SiliconFlow made (and billed) the video, and the HTTP status its record carries."""

    delivered: int
    made: int
    status: int


COMPLETED = Outcome(delivered=1, made=1, status=200)


class JobMoney:
    def __init__(
        self, spend: Any, limits: ClientLimits, ledger: Ledger | None, metrics: Metrics
    ) -> None:
        # The budgets' spend counter (budgets.Budgets.counter) and the client limits' counter.
        self.spend = spend
        self.limits = limits
        self.ledger = ledger
        self.metrics = metrics

    def held(self, row: Row) -> tuple[Spend, Reservation]:
        """The job's reservation, rebuilt from its row."""
        keys = list(row["budget_keys"] or [])
        price = row["price_micros"]
        spend: Spend = (
            HeldSpend(self.spend, keys, price=price, images=1) if keys and price else NO_SPEND
        )
        reservation: Reservation = (
            CountedReservation(self.limits.counter, row["ipd_key"], row["ipd_token"], 1)
            if row["ipd_key"] and row["ipd_token"]
            else NO_RESERVATION
        )
        return spend, reservation

    def record(self, row: Row, outcome: Outcome) -> dict[str, Any] | None:
        """The job's ledger row (None with LEDGER=off)."""
        if self.ledger is None or isinstance(self.ledger.writer, LedgerOff):
            return None
        return record_of(row, outcome).row()

    async def settle(self, row: Row, outcome: Outcome) -> None:
        """Keep the price and the image counted (completed), or give both back (failed); count
        the spend metrics, as the corridor's settling does."""
        spend, reservation = self.held(row)
        await reservation.settle(outcome.delivered)
        await spend.settle(outcome.delivered)
        model = row["model"]
        if outcome.delivered:
            self.metrics.images_delivered.labels(model).inc()
        else:
            self.metrics.images_refunded.labels(model).inc()
        count_spend(self.metrics, record_of(row, outcome))


def record_of(row: Row, outcome: Outcome) -> LedgerRecord:
    """The job's record, dated when it was submitted, so that it counts in the budget period
    its price was reserved in, and priced at what was reserved then."""
    created = aware(row["created_at"])
    assert created is not None  # the column is NOT NULL
    record = LedgerRecord(
        at=created,
        request_id=row["request_id"],
        client=row["client"],
        endpoint=row["endpoint"],
        model_requested=row["model_requested"],
        model=row["model"],
        images_requested=1,
        images_made=outcome.made,
        images_delivered=outcome.delivered,
        images_refunded=1 - outcome.delivered,
        size=row["size"],
        upstream_account=row["upstream_account"],
        status=outcome.status,
    )
    if row["price_micros"] is not None:
        record.priced(Price(from_micros(row["price_micros"]), row["currency"]))
    return record
