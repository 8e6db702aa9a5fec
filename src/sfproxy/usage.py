"""Usage reports over the ledger: requests, images and money, grouped by client, model or day.

One query per report, grouped in SQL, so a report costs the same whether the ledger holds a
thousand records or a hundred million; the range is capped (`MAX_RANGE_DAYS`) so that even a
report by day has a bounded number of rows. Money is summed exactly (Decimal), per currency: a
deployment that moved from siliconflow.cn to .com has both. A record whose price was unknown
(NULL cost) is counted apart, never as zero.

`usage_report` serves `sfproxy usage` and `/admin/usage`; `client_usage` is one client's totals
for today and this month (UTC), for `/v1/usage`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal, get_args

from sqlalchemy import Date, Integer, and_, case, func, or_, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from .db.tables import client_keys, ledger
from .errors import InvalidRequestError

Grouping = Literal["client", "model", "day"]
GROUPINGS: tuple[Grouping, ...] = get_args(Grouping)

DEFAULT_SINCE = "7d"
# A report by day has at most this many rows (per currency); a longer history is read in
# several reports.
MAX_RANGE_DAYS = 400
# Longer than any date, duration, model id or key name; checked before anything is parsed.
MAX_INPUT_CHARS = 200
_UNITS = {"d": 86400, "h": 3600, "m": 60}

# SQLite keeps NUMERIC as REAL: sums are taken in integer millionths there (the ledger's
# precision), so they are exact however many records are added up.
_MICROS = 1_000_000


@dataclass(frozen=True, slots=True)
class UsageFilter:
    """Which records a report covers: `since` <= at < `until`, optionally one client or model."""

    since: datetime
    until: datetime
    by: Grouping = "client"
    client: str | None = None
    model: str | None = None

    @classmethod
    def parse(
        cls,
        *,
        since: str | None = None,
        until: str | None = None,
        by: str | None = None,
        client: str | None = None,
        model: str | None = None,
        now: datetime | None = None,
    ) -> UsageFilter:
        """The filter as a user typed it (CLI options, query parameters); InvalidRequestError
        naming the parameter for anything that does not parse."""
        now = now or datetime.now(UTC)
        start = parse_moment(DEFAULT_SINCE if since is None else since, now=now, param="since")
        end = now if until is None else parse_moment(until, now=now, param="until")
        if start >= end:
            raise InvalidRequestError(
                f"since ({iso_utc(start)}) must be before until ({iso_utc(end)}).", param="since"
            )
        if end - start > timedelta(days=MAX_RANGE_DAYS):
            raise InvalidRequestError(
                f"A report covers at most {MAX_RANGE_DAYS} days; ask for a shorter range.",
                param="since",
            )
        grouping = "client" if by is None else by
        if grouping not in GROUPINGS:
            raise InvalidRequestError(
                f"by must be one of {', '.join(GROUPINGS)}, not {_shown(grouping)}.", param="by"
            )
        return cls(
            since=start,
            until=end,
            by=grouping,
            client=_name(client, "client"),
            model=_name(model, "model"),
        )


def parse_moment(text: str, *, now: datetime, param: str) -> datetime:
    """A duration back from `now` (`7d`, `24h`, `30m`) or an ISO date or datetime (UTC unless it
    says otherwise). Checked by hand, so no input can make a pattern backtrack."""
    value = text.strip()
    if not value or len(value) > MAX_INPUT_CHARS:
        raise _bad_moment(param, text)
    number, unit = value[:-1], value[-1:].lower()
    if unit in _UNITS and number.isascii() and number.isdigit():
        seconds = int(number) * _UNITS[unit]
        # Refused here, before a huge count overflows timedelta or datetime.
        if seconds > MAX_RANGE_DAYS * 86400:
            raise InvalidRequestError(
                f"{param} goes back at most {MAX_RANGE_DAYS} days, not {value}.", param=param
            )
        return now - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(value)
        # Year 1 at +08:00 (or 9999 at -08:00) is no moment a datetime can hold in UTC.
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise _bad_moment(param, text) from None


def _bad_moment(param: str, text: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"{param} must be a duration (7d, 24h, 30m) or an ISO date or time "
        f"(2026-12-01, 2026-12-01T09:30Z), not {_shown(text)}.",
        param=param,
    )


def _name(value: str | None, param: str) -> str | None:
    if value is None or not value.strip():
        return None
    if len(value) > MAX_INPUT_CHARS:
        raise InvalidRequestError(
            f"{param} is longer than {MAX_INPUT_CHARS} characters.", param=param
        )
    return value.strip()


def _shown(text: str) -> str:
    """Client text quoted in a message, cut short."""
    return repr(text if len(text) <= 40 else text[:40] + "…")


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(slots=True)
class Totals:
    """What a set of ledger records adds up to. `cost` is what SiliconFlow billed for the images
    made, `charged` what clients were charged for the images delivered, each by currency, over
    the records whose price was known; `unknown_price` counts the others."""

    requests: int = 0
    images_requested: int = 0
    images_made: int = 0
    images_delivered: int = 0
    images_refunded: int = 0
    cost: dict[str, Decimal] = field(default_factory=dict)
    charged: dict[str, Decimal] = field(default_factory=dict)
    unknown_price: int = 0

    def add(self, other: Totals) -> None:
        self.requests += other.requests
        self.images_requested += other.images_requested
        self.images_made += other.images_made
        self.images_delivered += other.images_delivered
        self.images_refunded += other.images_refunded
        self.unknown_price += other.unknown_price
        for mine, theirs in ((self.cost, other.cost), (self.charged, other.charged)):
            for currency, amount in theirs.items():
                mine[currency] = mine.get(currency, Decimal(0)) + amount


@dataclass(slots=True)
class UsageRow:
    """One group: a client (its id or label, and a database key's name), a model, or a UTC day
    (YYYY-MM-DD)."""

    group: str
    name: str | None
    totals: Totals


@dataclass(slots=True)
class UsageReport:
    filter: UsageFilter
    rows: list[UsageRow]
    total: Totals

    @property
    def currencies(self) -> list[str]:
        """Every currency some record of the report was priced in."""
        return sorted(set(self.total.cost) | set(self.total.charged))


def _money_sum(column: Any, dialect: str) -> ColumnElement[Any]:
    if dialect == "sqlite":
        return func.sum(sql_cast(func.round(column * _MICROS), Integer))
    return func.sum(column)


def _money(value: Any, dialect: str) -> Decimal:
    if value is None:
        return Decimal(0)
    if dialect == "sqlite":
        return Decimal(int(value)).scaleb(-6)
    return Decimal(value)


def _utc_day(dialect: str) -> ColumnElement[Any]:
    if dialect == "sqlite":
        # SQLite holds the UTC time as text, "YYYY-MM-DD HH:MM:SS…".
        return func.substr(ledger.c.at, 1, 10)
    # On PostgreSQL the day is taken in UTC whatever the session's time zone.
    return sql_cast(func.timezone("UTC", ledger.c.at), Date)


def _bounds(engine: AsyncEngine, since: datetime, until: datetime) -> list[ColumnElement[bool]]:
    if engine.dialect.name == "sqlite":
        # Compared as the text SQLite stores: naive UTC.
        since, until = since.replace(tzinfo=None), until.replace(tzinfo=None)
    return [ledger.c.at >= since, ledger.c.at < until]


async def _grouped(
    engine: AsyncEngine,
    conditions: list[ColumnElement[bool]],
    group: list[ColumnElement[Any]],
    *,
    join_keys: bool,
) -> list[tuple[tuple[Any, ...], str | None, Totals]]:
    """(group values, currency, totals) for each group and currency, summed by the database."""
    dialect = engine.dialect.name
    source = ledger.outerjoin(client_keys, client_keys.c.id == ledger.c.client)
    query = (
        select(
            *group,
            ledger.c.currency,
            func.count(),
            func.sum(ledger.c.images_requested),
            func.sum(ledger.c.images_made),
            func.sum(ledger.c.images_delivered),
            func.sum(ledger.c.images_refunded),
            _money_sum(ledger.c.cost, dialect),
            _money_sum(ledger.c.charged, dialect),
            func.sum(case((ledger.c.cost.is_(None), 1), else_=0)),
        )
        .select_from(source if join_keys else ledger)
        .where(and_(*conditions))
        .group_by(*group, ledger.c.currency)
    )
    async with engine.connect() as connection:
        result = await connection.execute(query)
        rows = result.all()
    width = len(group)
    found = []
    for row in rows:
        values = tuple(row[:width])
        currency, count, requested, made, delivered, refunded, cost, charged, unknown = row[width:]
        totals = Totals(
            requests=int(count),
            images_requested=int(requested or 0),
            images_made=int(made or 0),
            images_delivered=int(delivered or 0),
            images_refunded=int(refunded or 0),
            unknown_price=int(unknown or 0),
        )
        # Records priced in no currency (an unknown price) add nothing to any currency's sums.
        if currency is not None:
            totals.cost[currency] = _money(cost, dialect)
            totals.charged[currency] = _money(charged, dialect)
        found.append((values, currency, totals))
    return found


async def usage_report(engine: AsyncEngine, query: UsageFilter) -> UsageReport:
    """The report `query` asks for: one row per group (in order of client, model or day), and
    the total of all of them."""
    conditions = _bounds(engine, query.since, query.until)
    if query.client is not None:
        # A database key is found by its id or its name; other keys by their label.
        conditions.append(or_(ledger.c.client == query.client, client_keys.c.name == query.client))
    if query.model is not None:
        conditions.append(ledger.c.model == query.model)
    group: list[ColumnElement[Any]]
    if query.by == "client":
        group = [ledger.c.client, client_keys.c.name]
    elif query.by == "model":
        group = [ledger.c.model]
    else:
        group = [_utc_day(engine.dialect.name)]
    join_keys = query.by == "client" or query.client is not None
    groups: dict[str, UsageRow] = {}
    for values, _currency, totals in await _grouped(engine, conditions, group, join_keys=join_keys):
        key = values[0].isoformat() if isinstance(values[0], date) else str(values[0])
        name = values[1] if query.by == "client" else None
        row = groups.setdefault(key, UsageRow(group=key, name=name, totals=Totals()))
        row.totals.add(totals)
    rows = [groups[key] for key in sorted(groups)]
    total = Totals()
    for row in rows:
        total.add(row.totals)
    return UsageReport(filter=query, rows=rows, total=total)


@dataclass(slots=True)
class ClientUsage:
    """One client's use today and this month (UTC days and months)."""

    today: Totals
    month: Totals
    day_start: datetime
    month_start: datetime


async def client_usage(
    engine: AsyncEngine, client: str, *, now: datetime | None = None
) -> ClientUsage:
    """`client`'s totals (its ledger id or label) for the UTC day and month containing `now`."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    day_start = datetime.combine(now.date(), time(), tzinfo=UTC)
    month_start = day_start.replace(day=1)
    periods = []
    for start in (day_start, month_start):
        conditions = [*_bounds(engine, start, now + timedelta(microseconds=1))]
        conditions.append(ledger.c.client == client)
        totals = Totals()
        for _values, _currency, part in await _grouped(
            engine, conditions, [ledger.c.client], join_keys=False
        ):
            totals.add(part)
        periods.append(totals)
    return ClientUsage(
        today=periods[0], month=periods[1], day_start=day_start, month_start=month_start
    )


# The admin chart's series: a day by client, over at least a day and at most MAX_RANGE_DAYS.
DEFAULT_SERIES_DAYS = 30


@dataclass(slots=True)
class SeriesPoint:
    """One client's totals on one UTC day."""

    day: str
    client: str
    name: str | None
    totals: Totals


@dataclass(slots=True)
class DailySeries:
    """Every UTC day of the range (`days`, oldest first, today last) and a point for each day
    and client that has records."""

    days: list[str]
    points: list[SeriesPoint]
    since: datetime
    until: datetime

    @property
    def currencies(self) -> list[str]:
        found: set[str] = set()
        for point in self.points:
            found |= set(point.totals.cost) | set(point.totals.charged)
        return sorted(found)


def parse_series_days(text: str | None) -> int:
    """`days` as a client sent it: a whole number from 1 to MAX_RANGE_DAYS."""
    if text is None or not text.strip():
        return DEFAULT_SERIES_DAYS
    value = text.strip()
    if not (len(value) <= 3 and value.isascii() and value.isdigit()) or not (
        1 <= int(value) <= MAX_RANGE_DAYS
    ):
        raise InvalidRequestError(
            f"days must be a whole number from 1 to {MAX_RANGE_DAYS}, not {_shown(text)}.",
            param="days",
        )
    return int(value)


async def daily_series(
    engine: AsyncEngine, days: int, *, now: datetime | None = None
) -> DailySeries:
    """Each client's totals per UTC day over the last `days` days, today included."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    first = now.date() - timedelta(days=days - 1)
    since = datetime.combine(first, time(), tzinfo=UTC)
    until = now + timedelta(microseconds=1)
    group = [_utc_day(engine.dialect.name), ledger.c.client, client_keys.c.name]
    points: dict[tuple[str, str], SeriesPoint] = {}
    for values, _currency, totals in await _grouped(
        engine, _bounds(engine, since, until), group, join_keys=True
    ):
        day = values[0].isoformat() if isinstance(values[0], date) else str(values[0])
        point = points.setdefault(
            (day, values[1]),
            SeriesPoint(day=day, client=values[1], name=values[2], totals=Totals()),
        )
        point.totals.add(totals)
    return DailySeries(
        days=[(first + timedelta(days=offset)).isoformat() for offset in range(days)],
        points=[points[key] for key in sorted(points)],
        since=since,
        until=now,
    )
