"""`sfproxy usage`: the usage report from the ledger, in a terminal, as CSV or as JSON.

It reads the database the service writes (DATABASE_URL, else the SQLite file beside IMAGE_DIR)
and brings it to the newest revision first, as the service does at start, so it works on a
database no service has opened yet. It needs no SiliconFlow key.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, cast

from sqlalchemy.exc import SQLAlchemyError

from .db.database import Database
from .errors import InvalidRequestError
from .settings import load_settings
from .usage import DEFAULT_SINCE, GROUPINGS, UsageFilter, usage_report
from .usage_format import FORMATS, Format, render_report

EXIT_USAGE = 2


def add_usage_command(commands: Any) -> None:
    """Register `usage` on the CLI's subcommands."""
    usage = commands.add_parser("usage", help="report requests, images and spend from the ledger")
    usage.add_argument(
        "--since",
        default=DEFAULT_SINCE,
        help=f"start: a duration back (7d, 24h, 30m) or an ISO date/time ({DEFAULT_SINCE})",
    )
    usage.add_argument("--until", default=None, help="end, as --since (now)")
    usage.add_argument("--by", choices=GROUPINGS, default="client", help="grouping (client)")
    usage.add_argument("--client", default=None, help="one client: key id, key name or label")
    usage.add_argument("--model", default=None, help="one model (as used upstream)")
    usage.add_argument("--format", choices=FORMATS, default="table", help="output (table)")
    usage.set_defaults(handler=run_usage)


def run_usage(args: argparse.Namespace) -> int:
    try:
        query = UsageFilter.parse(
            since=args.since, until=args.until, by=args.by, client=args.client, model=args.model
        )
    except InvalidRequestError as exc:
        print(f"sfproxy usage: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    settings = load_settings()
    try:
        output = asyncio.run(_report(settings.database_target, query, cast(Format, args.format)))
    except ValueError as exc:
        # An unusable DATABASE_URL (engine.async_url says which).
        print(f"sfproxy usage: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, SQLAlchemyError) as exc:
        print(f"sfproxy usage: the database is unreachable: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(output)
    return 0


async def _report(url: str, query: UsageFilter, output: Format) -> str:
    async with Database.open(url) as database:
        report = await usage_report(database.engine, query)
    return render_report(report, output)
