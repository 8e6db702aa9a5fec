"""Budgets: what a client key may spend per UTC day and per UTC month, in the site's currency.

A request's expected cost (the model's price times the images planned) is reserved against each
budget the key has before any upstream work, and settled when the request ends to the price of
the images delivered: the corridor does both, exactly as for the images-per-day limit.

Spend is counted per key and calendar period (the day from 00:00 UTC, the month from the 1st)
in millionths of the currency, as integers, so that no amount is lost to floats. Counters live
in memory, or in Redis with `REDIS_URL` so that every instance agrees (`spend_counters.py`). A
period's counter that is missing (a restart without Redis, a flushed Redis) is seeded from the
ledger: the sum of what the key was charged in that period, and the price of its video jobs
submitted in it and not settled yet (they are in no ledger record until they finish).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal, Protocol

from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from .auth import Client
from .db.tables import ledger, video_jobs
from .errors import BudgetExceededError, InvalidRequestError
from .metrics import Metrics
from .prices import Prices
from .setting_values import ClientQuota
from .spend_counters import SpendCounter

logger = logging.getLogger(__name__)

Period = Literal["daily", "monthly"]
MICROS = 1_000_000
# Counters outlive their period by this much, so that a request reserved just before the reset
# still finds its counter when it settles after it.
KEEP_AFTER_PERIOD = timedelta(hours=2)
# Seeding reads the ledger on a request's path: a database that hangs must not hold it longer.
SEED_TIMEOUT = 2.0


def to_micros(amount: Decimal) -> int:
    return int((amount * MICROS).to_integral_value(ROUND_HALF_UP))


def from_micros(micros: int) -> Decimal:
    return Decimal(micros) / MICROS


def money(micros: int) -> str:
    """An amount as people write it: two decimals, more only where they matter (0.005)."""
    amount = from_micros(micros)
    cents = amount.quantize(Decimal("0.01"))
    return f"{cents:f}" if cents == amount else f"{amount.normalize():f}"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Window:
    """One calendar period in UTC: `name` tells its counters apart ("2026-12-01", "2026-12")."""

    period: Period
    name: str
    start: datetime
    end: datetime


def windows(now: datetime) -> tuple[Window, Window]:
    """The day and the month `now` (aware) falls in, in UTC."""
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    next_month = (month + timedelta(days=32)).replace(day=1)
    return (
        Window("daily", day.strftime("%Y-%m-%d"), day, day + timedelta(days=1)),
        Window("monthly", month.strftime("%Y-%m"), month, next_month),
    )


class Spend(Protocol):
    """A request's expected cost, held against its budgets until it settles."""

    async def settle(self, delivered: int) -> None:
        """Keep the price of `delivered` images counted, give back the rest."""
        ...


class NoSpend:
    """Nothing held: no budget, a free model, or counters that were unreachable."""

    async def settle(self, delivered: int) -> None:
        pass


NO_SPEND = NoSpend()


class HeldSpend:
    def __init__(self, counter: SpendCounter, keys: list[str], *, price: int, images: int) -> None:
        self.counter = counter
        self.keys = keys
        self.price = price
        self.images = images
        self._settled = False

    async def settle(self, delivered: int) -> None:
        if self._settled:
            return
        self._settled = True
        kept = min(max(delivered, 0), self.images)
        if kept == self.images:
            return
        for key in self.keys:
            try:
                await self.counter.add(key, (kept - self.images) * self.price)
            except (RedisError, OSError) as exc:
                logger.warning("could not give back an undelivered image's price: %s", exc)


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One period of a key's spend: `budget` and `left` are None when it has no budget."""

    period: Period
    budget: Decimal | None
    spent: Decimal
    left: Decimal | None
    currency: str
    resets_at: datetime


class Budgets:
    """Daily and monthly spend per client key: reserved before any work, settled after it."""

    def __init__(
        self,
        counter: SpendCounter,
        engine: AsyncEngine,
        prices: Prices,
        *,
        daily: Decimal | None = None,
        monthly: Decimal | None = None,
        overrides: Mapping[str, ClientQuota] | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.counter = counter
        self.engine = engine
        self.prices = prices
        self._defaults: dict[Period, Decimal | None] = {"daily": daily, "monthly": monthly}
        self._overrides = overrides or {}
        self._metrics = metrics
        self._clock = clock

    def budgets(self, client: Client) -> dict[Period, Decimal]:
        """A database key's own budgets, else its CLIENT_LIMITS entry's, else the defaults."""
        override = self._overrides.get(client.label) or (
            self._overrides.get(client.key) if client.key else None
        )
        chosen: dict[Period, Decimal | None] = {
            "daily": client.daily_budget,
            "monthly": client.monthly_budget,
        }
        found: dict[Period, Decimal] = {}
        for period, own in chosen.items():
            if own is None and override is not None:
                own = override.daily_budget if period == "daily" else override.monthly_budget
            if own is None:
                own = self._defaults[period]
            if own is not None:
                found[period] = own
        return found

    async def reserve(self, client: Client, model: str, images: int) -> Spend:
        """Hold the price of `images` of `model` against each of the client's budgets."""
        budgets = self.budgets(client)
        if not budgets:
            return NO_SPEND
        price = self.prices.of(model)
        if price is None:
            raise InvalidRequestError(
                f"Model {model} has no known price on this site, and this key has a spending "
                "budget: its cost could not be counted. The operator can set the price per "
                f'image in PRICES_JSON, e.g. {{"{model}": "0.1"}}.',
                param="model",
                code="price_unknown",
            )
        each = to_micros(price.amount)
        if each == 0:
            # Free models cost no budget, even a spent one.
            return NO_SPEND
        cost = each * images
        held: list[str] = []
        now = self._clock()
        for window in windows(now):
            budget = budgets.get(window.period)
            if budget is None:
                continue
            key = _key(client, window)
            try:
                taken = await self._take(client, window, key, cost, to_micros(budget), now)
            except (RedisError, OSError, SQLAlchemyError, TimeoutError) as exc:
                # Fail open, as the other client limits do: an outage must not stop every key.
                logger.warning("budgets unavailable, %s spend not counted: %s", window.period, exc)
                continue
            if taken is None:
                continue
            admitted, spent = taken
            if not admitted:
                await HeldSpend(self.counter, held, price=each, images=images).settle(0)
                raise self._refused(window, budget, spent, cost, now, images, model, each)
            held.append(key)
        return HeldSpend(self.counter, held, price=each, images=images) if held else NO_SPEND

    async def status(self, client: Client) -> list[BudgetStatus]:
        """The client's spend this UTC day and month, and what is left (for usage reports).

        A period with a budget reads its counter (reserved spend included); one without reads
        the ledger. Raises SQLAlchemyError when the ledger is needed and does not answer.
        """
        budgets = self.budgets(client)
        now = self._clock()
        found = []
        for window in windows(now):
            budget = budgets.get(window.period)
            spent: int | None = None
            if budget is not None:
                try:
                    spent = await self._counted(client, window, now)
                except (RedisError, OSError) as exc:
                    logger.warning("budget counters unavailable, reading the ledger: %s", exc)
            if spent is None:
                spent = await self._ledger_spent(client, window)
            left = None if budget is None else max(Decimal(0), budget - from_micros(spent))
            found.append(
                BudgetStatus(
                    period=window.period,
                    budget=budget,
                    spent=from_micros(spent),
                    left=left,
                    currency=self.prices.currency,
                    resets_at=window.end,
                )
            )
        return found

    async def _take(
        self, client: Client, window: Window, key: str, cost: int, limit: int, now: datetime
    ) -> tuple[bool, int] | None:
        taken = await self.counter.take(key, cost, limit)
        if taken is None:
            await self._seed(client, window, key, now)
            taken = await self.counter.take(key, cost, limit)
        return taken

    async def _counted(self, client: Client, window: Window, now: datetime) -> int | None:
        key = _key(client, window)
        spent = await self.counter.spent(key)
        if spent is None:
            await self._seed(client, window, key, now)
            spent = await self.counter.spent(key)
        return spent

    async def _seed(self, client: Client, window: Window, key: str, now: datetime) -> None:
        spent = await self._ledger_spent(client, window)
        ttl = (window.end + KEEP_AFTER_PERIOD - now).total_seconds()
        await self.counter.seed(key, spent, ttl)

    async def _ledger_spent(self, client: Client, window: Window) -> int:
        """What the ledger says the client was charged in the period, in millionths."""
        query = select(func.sum(ledger.c.charged)).where(
            ledger.c.client == client.label,
            ledger.c.currency == self.prices.currency,
            ledger.c.at >= window.start,
            ledger.c.at < window.end,
        )
        # A video job's record is written when it settles, dated when it was submitted (so it
        # lands in this same period); until then its reserved price is counted from its row.
        pending = select(func.sum(video_jobs.c.price_micros)).where(
            video_jobs.c.owner == client.label,
            video_jobs.c.currency == self.prices.currency,
            video_jobs.c.settled.is_(False),
            video_jobs.c.created_at >= window.start,
            video_jobs.c.created_at < window.end,
        )
        async with asyncio.timeout(SEED_TIMEOUT):
            async with self.engine.connect() as connection:
                total = (await connection.execute(query)).scalar_one()
                held = (await connection.execute(pending)).scalar_one()
        # SQLite sums NUMERIC as a float: rounding to millionths gives back the exact sum.
        charged = 0 if total is None else to_micros(Decimal(str(total)))
        return charged + int(held or 0)

    def _refused(
        self,
        window: Window,
        budget: Decimal,
        spent: int,
        cost: int,
        now: datetime,
        images: int,
        model: str,
        each: int,
    ) -> BudgetExceededError:
        if self._metrics is not None:
            self._metrics.limited.labels(f"client_{window.period}_budget").inc()
        currency = self.prices.currency
        left = max(0, to_micros(budget) - spent)
        resets = window.end.strftime("%Y-%m-%dT%H:%M:%SZ")
        plural = "image" if images == 1 else "images"
        fit = left // each
        fits = f" {fit} image(s) would fit." if 0 < fit < images else ""
        return BudgetExceededError(
            f"The {window.period} budget of this key is spent: {money(left)} {currency} left "
            f"of {money(to_micros(budget))} {currency}, and this request would cost "
            f"{money(cost)} {currency} ({images} {plural} of {model} at {money(each)} "
            f"{currency}).{fits} The {window.period} budget resets at {resets} (UTC).",
            retry_after=(window.end - now).total_seconds(),
        )


def _key(client: Client, window: Window) -> str:
    return f"{client.label}:{window.name}"
