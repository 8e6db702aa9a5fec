"""Commands `sfproxy keys …` (client keys in the database) and `sfproxy db …` (migrations, and
copying the database to another one). Both use DATABASE_URL, or the default SQLite file, and
bring the database to the newest revision first, as the service does at start."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from pydantic import ValidationError

from .db.copy import copy_database
from .db.database import Database
from .db.keys import KeyChange, KeyRecord, KeyStore, NewKey
from .errors import ProxyError
from .settings import load_settings

EXIT_FAILED = 1
EXIT_USAGE = 2
# The word that clears an option in `keys update` (back to CLIENT_LIMITS and the defaults).
CLEAR = "none"

Command = Callable[[argparse.Namespace, Database], Coroutine[Any, Any, int]]


def register(commands: Any) -> None:
    """Add `keys` and `db` to the parser's subcommands."""
    keys = commands.add_parser("keys", help="manage client keys kept in the database")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = actions.add_parser("create", help="create a key and print it (shown only once)")
    create.add_argument("name", help="a name for people: letters, digits and . _ @ -")
    _limit_options(create, clearable=False)
    create.add_argument("--json", action="store_true", help="print JSON")
    create.set_defaults(handler=_run(_create))

    listing = actions.add_parser("list", help="list the keys (never the keys themselves)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_run(_list))

    show = actions.add_parser("show", help="show one key")
    show.add_argument("key", metavar="ID|NAME")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=_run(_show))

    update = actions.add_parser(
        "update", help=f"change a key's limits ('{CLEAR}' clears one), name or expiry"
    )
    update.add_argument("key", metavar="ID|NAME")
    update.add_argument("--name", help="a new name")
    _limit_options(update, clearable=True)
    update.add_argument("--json", action="store_true", help="print JSON")
    update.set_defaults(handler=_run(_update))

    revoke = actions.add_parser("revoke", help="revoke a key for good, on every instance")
    revoke.add_argument("key", metavar="ID|NAME")
    revoke.add_argument("--json", action="store_true", help="print JSON")
    revoke.set_defaults(handler=_run(_revoke))

    db = commands.add_parser("db", help="the database: migrations, and copying it elsewhere")
    db_actions = db.add_subparsers(dest="action", required=True, metavar="ACTION")
    upgrade = db_actions.add_parser("upgrade", help="apply the migrations (the service does too)")
    upgrade.set_defaults(handler=_run(_upgrade))
    current = db_actions.add_parser("current", help="print the database's revision")
    current.set_defaults(handler=_run(_current, upgrade=False))
    copy = db_actions.add_parser(
        "copy", help="copy client keys and the ledger into another (empty) database"
    )
    copy.add_argument("--to", required=True, metavar="URL", help="sqlite:///PATH or postgresql://…")
    copy.set_defaults(handler=_run(_copy))


def _limit_options(parser: argparse.ArgumentParser, *, clearable: bool) -> None:
    clear = f"; '{CLEAR}' clears it" if clearable else ""
    parser.add_argument("--rpm", help=f"requests per minute (0: no limit){clear}")
    parser.add_argument("--images-per-day", help=f"images per 24 hours (0: no limit){clear}")
    parser.add_argument("--daily-budget", metavar="AMOUNT", help=f"spend per UTC day{clear}")
    parser.add_argument("--monthly-budget", metavar="AMOUNT", help=f"spend per UTC month{clear}")
    parser.add_argument("--models", metavar="A,B", help=f"the only models it may use{clear}")
    parser.add_argument(
        "--expires", metavar="DATE", help=f"ISO 8601 date (midnight UTC) or datetime{clear}"
    )


_OPTIONS = {
    "rpm": "rpm",
    "images_per_day": "images_per_day",
    "daily_budget": "daily_budget",
    "monthly_budget": "monthly_budget",
    "models": "models",
    "expires": "expires_at",
}


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    """The options given, as KeyLimits fields; `none` is None (which clears it)."""
    fields: dict[str, Any] = {}
    for option, field in _OPTIONS.items():
        value = getattr(args, option)
        if value is None:
            continue
        if value.strip().lower() == CLEAR:
            fields[field] = None
        elif field == "models":
            fields[field] = [model.strip() for model in value.split(",") if model.strip()]
        else:
            fields[field] = value.strip()
    return fields


def _run(command: Command, *, upgrade: bool = True) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        settings = load_settings()

        async def run() -> int:
            async with Database.open(settings.database_target, upgrade=upgrade) as database:
                return await command(args, database)

        try:
            return asyncio.run(run())
        except ValidationError as exc:
            # One line per option: a date that is not one fails as both a datetime and a date.
            shown: set[str] = set()
            for error in exc.errors():
                where = _option(str(error["loc"][0]) if error["loc"] else "value")
                if where not in shown:
                    shown.add(where)
                    print(f"sfproxy: {where}: {error['msg']}", file=sys.stderr)
            return EXIT_USAGE
        except ProxyError as exc:
            print(f"sfproxy: {exc.message}", file=sys.stderr)
            return EXIT_FAILED

    return handler


def _option(field: str) -> str:
    if field == "name":
        return "name"
    option = {value: key for key, value in _OPTIONS.items()}.get(field, field)
    return "--" + option.replace("_", "-")


async def _create(args: argparse.Namespace, database: Database) -> int:
    new = NewKey.model_validate({"name": args.name, **_fields(args)})
    record, key = await KeyStore(database.engine).create(new)
    if args.json:
        print(json.dumps({**record.to_json(), "key": key}, indent=2))
    else:
        print(f"Created {record.id} ({record.name}). The key, shown only this once:\n{key}")
    return 0


async def _list(args: argparse.Namespace, database: Database) -> int:
    records = await KeyStore(database.engine).list()
    if args.json:
        print(json.dumps([record.to_json() for record in records], indent=2))
    else:
        print(key_table(records))
    return 0


async def _show(args: argparse.Namespace, database: Database) -> int:
    _print_one(await KeyStore(database.engine).get(args.key), args.json)
    return 0


async def _update(args: argparse.Namespace, database: Database) -> int:
    fields = _fields(args)
    if args.name is not None:
        fields["name"] = args.name
    change = KeyChange.model_validate(fields)
    _print_one(await KeyStore(database.engine).update(args.key, change), args.json)
    return 0


async def _revoke(args: argparse.Namespace, database: Database) -> int:
    _print_one(await KeyStore(database.engine).revoke(args.key), args.json)
    return 0


async def _upgrade(args: argparse.Namespace, database: Database) -> int:
    from .db import migrate

    print(f"database at revision {await migrate.current(database.engine)}")
    return 0


async def _current(args: argparse.Namespace, database: Database) -> int:
    from .db import migrate

    revision = await migrate.current(database.engine)
    head = migrate.head()
    state = "up to date" if revision == head else f"behind {head}: run `sfproxy db upgrade`"
    print(f"{revision or 'none (never migrated)'} ({state})")
    return 0


async def _copy(args: argparse.Namespace, database: Database) -> int:
    async with Database.open(args.to) as target:
        copied = await copy_database(database.engine, target.engine)
    print(", ".join(f"{rows} {table} row(s)" for table, rows in copied.items()) + " copied")
    return 0


def _print_one(record: KeyRecord, as_json: bool) -> None:
    if as_json:
        print(json.dumps(record.to_json(), indent=2))
        return
    width = max(len(name) for name in record.to_json())
    for name, value in record.to_json().items():
        shown = "-" if value is None else ",".join(value) if isinstance(value, list) else value
        print(f"{name:<{width}}  {shown}")


def key_table(records: list[KeyRecord]) -> str:
    columns = [
        *("id", "name", "prefix", "state", "rpm", "images_per_day"),
        *("daily_budget", "monthly_budget", "models", "expires_at"),
    ]
    rows = [[_cell(record.to_json()[name]) for name in columns] for record in records]
    widths = [max([len(name)] + [len(row[i]) for row in rows]) for i, name in enumerate(columns)]
    lines = ["  ".join(name.ljust(width) for name, width in zip(columns, widths, strict=True))]
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    if not rows:
        lines.append("(no keys: create one with `sfproxy keys create NAME`)")
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(value)
    return str(value)
