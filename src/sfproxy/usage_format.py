"""A usage report as people read it: a table, CSV or JSON (the same figures in each).

Amounts are shown to the currency's minor unit (0.01 for CNY and USD) and further when the
exact amount needs it (SiliconFlow's Z-Image-Turbo costs $0.005 on .com): a figure is never
rounded, so the rows always add up to the total. JSON carries amounts as strings, so that no
client parses them into floats.
"""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from typing import Any, Literal, get_args

from .budgets import BudgetStatus
from .usage import ClientUsage, DailySeries, Totals, UsageReport, iso_utc

Format = Literal["table", "csv", "json"]
FORMATS: tuple[Format, ...] = get_args(Format)

# Decimal places of each currency's minor unit (ISO 4217).
MINOR_UNITS = {"CNY": 2, "USD": 2}

_COUNTS = ("requests", "images_requested", "images_made", "images_delivered", "images_refunded")


def format_money(amount: Decimal, currency: str) -> str:
    places = MINOR_UNITS.get(currency, 2)
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        places = -exponent
    return f"{amount:.{places}f}"


def _amounts(amounts: dict[str, Decimal], currencies: list[str]) -> dict[str, str]:
    return {
        currency: format_money(amounts.get(currency, Decimal(0)), currency)
        for currency in currencies
    }


def _totals(totals: Totals, currencies: list[str]) -> dict[str, Any]:
    return {
        "requests": totals.requests,
        "images_requested": totals.images_requested,
        "images_made": totals.images_made,
        "images_delivered": totals.images_delivered,
        "images_refunded": totals.images_refunded,
        "cost": _amounts(totals.cost, currencies),
        "charged": _amounts(totals.charged, currencies),
        "unknown_price": totals.unknown_price,
    }


def report_document(report: UsageReport) -> dict[str, Any]:
    """The report as JSON-ready data (what `/admin/usage` returns)."""
    query = report.filter
    currencies = report.currencies
    rows = []
    for row in report.rows:
        entry: dict[str, Any] = {query.by: row.group}
        if query.by == "client":
            entry["name"] = row.name
        rows.append({**entry, **_totals(row.totals, currencies)})
    return {
        "since": iso_utc(query.since),
        "until": iso_utc(query.until),
        "by": query.by,
        "client": query.client,
        "model": query.model,
        "currencies": currencies,
        "rows": rows,
        "total": _totals(report.total, currencies),
    }


def report_json(report: UsageReport) -> str:
    return json.dumps(report_document(report), indent=2) + "\n"


def _cells(report: UsageReport) -> tuple[list[str], list[list[str]]]:
    """Header and lines (the rows, then the total) shared by the table and CSV."""
    by = report.filter.by
    currencies = report.currencies
    header = [by] + (["name"] if by == "client" else []) + list(_COUNTS)
    for currency in currencies:
        header += [f"cost_{currency}", f"charged_{currency}"]
    header.append("unknown_price")

    def line(first: list[str], totals: Totals) -> list[str]:
        document = _totals(totals, currencies)
        cells = first + [str(document[name]) for name in _COUNTS]
        for currency in currencies:
            cells += [document["cost"][currency], document["charged"][currency]]
        return cells + [str(totals.unknown_price)]

    lines = []
    for row in report.rows:
        first = [row.group] + ([row.name or ""] if by == "client" else [])
        lines.append(line(first, row.totals))
    lines.append(line(["total"] + ([""] if by == "client" else []), report.total))
    return header, lines


def report_csv(report: UsageReport) -> str:
    header, lines = _cells(report)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(lines)
    return out.getvalue()


def report_table(report: UsageReport) -> str:
    """Columns aligned for a terminal; names left, figures right."""
    header, lines = _cells(report)
    query = report.filter
    numeric_from = 2 if query.by == "client" else 1
    titles = [name.replace("images_", "").replace("_", " ").upper() for name in header]
    widths = [max(len(cell) for cell in column) for column in zip(titles, *lines, strict=True)]

    def render(cells: list[str]) -> str:
        shown = [
            cell.ljust(width) if index < numeric_from else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(shown).rstrip()

    scope = f"Usage {iso_utc(query.since)} to {iso_utc(query.until)}, by {query.by}"
    if query.client is not None:
        scope += f", client {query.client}"
    if query.model is not None:
        scope += f", model {query.model}"
    rule = "-" * len(render(titles))
    body = [render(cells) for cells in lines]
    return "\n".join([scope, render(titles), *body[:-1], rule, body[-1]]) + "\n"


def render_report(report: UsageReport, output: Format) -> str:
    if output == "csv":
        return report_csv(report)
    if output == "json":
        return report_json(report)
    return report_table(report)


def series_document(series: DailySeries) -> dict[str, Any]:
    """`/admin/usage/daily`: every day of the range, and one point per day and client with
    records (days without any have no point)."""
    currencies = series.currencies
    return {
        "since": iso_utc(series.since),
        "until": iso_utc(series.until),
        "days": series.days,
        "currencies": currencies,
        "points": [
            {
                "day": point.day,
                "client": point.client,
                "name": point.name,
                **_totals(point.totals, currencies),
            }
            for point in series.points
        ],
    }


def _period(totals: Totals, since: str, currency: str) -> dict[str, Any]:
    return {
        "since": since,
        "requests": totals.requests,
        "images_delivered": totals.images_delivered,
        "charged": format_money(totals.charged.get(currency, Decimal(0)), currency),
        "unknown_price": totals.unknown_price,
    }


def client_usage_document(
    usage: ClientUsage, budgets: list[BudgetStatus], *, client: str, name: str | None, currency: str
) -> dict[str, Any]:
    """`/v1/usage`: one key's use today and this month (UTC), in the site's currency, and each
    budget it has."""
    return {
        "object": "usage",
        "client": client,
        "name": name,
        "currency": currency,
        "today": _period(usage.today, iso_utc(usage.day_start), currency),
        "month": _period(usage.month, iso_utc(usage.month_start), currency),
        "budgets": [
            {
                "period": status.period,
                "budget": format_money(status.budget, status.currency),
                "spent": format_money(status.spent, status.currency),
                "left": format_money(status.left or Decimal(0), status.currency),
                "currency": status.currency,
                "resets_at": iso_utc(status.resets_at),
            }
            for status in budgets
            if status.budget is not None
        ],
    }
