"""Usage reports: `sfproxy usage` and `GET /admin/usage` over known ledger records.

Each test that takes `database_url` runs on SQLite and on PostgreSQL. The records are written
straight into the ledger (the ledger's writer is tested in test_ledger.py); the CLI runs as a
subprocess with DATABASE_URL, and /admin/usage on the service in-process, in front of the
built-in fake SiliconFlow.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sfproxy.db.database import Database
from sfproxy.db.engine import make_engine
from sfproxy.db.tables import client_keys, ledger
from sfproxy.errors import InvalidRequestError
from sfproxy.usage import UsageFilter, client_usage, parse_moment, usage_report
from sfproxy.usage_format import format_money

from .support.inprocess import in_process, service_settings
from .support.proxy import free_port

ADMIN = "admin-key-usage-0123456789"
CLIENT_KEY = "client-key-usage-0123456789"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
ALICE = "ck_alice00000001"
ENV_KEY = "key-0123456789"
RANGE = {"since": "2026-11-01", "until": "2026-11-04"}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def record(
    when: datetime,
    client: str,
    model: str,
    counts: tuple[int, int, int, int],
    cost: str | None,
    charged: str | None,
    currency: str | None,
    status: int = 200,
) -> dict[str, Any]:
    requested, made, delivered, refunded = counts
    return {
        "at": when,
        "request_id": f"req-{client}-{when.isoformat()}",
        "client": client,
        "endpoint": "/v1/images/generations",
        "model_requested": model,
        "model": model,
        "images_requested": requested,
        "images_made": made,
        "images_delivered": delivered,
        "images_refunded": refunded,
        "size": "1024x1024",
        "upstream_account": "acct-0001",
        "upstream_ms": 1200,
        "status": status,
        "cost": None if cost is None else Decimal(cost),
        "charged": None if charged is None else Decimal(charged),
        "currency": currency,
    }


RECORDS = [
    # Before the range, and at its (exclusive) end: in no report below.
    record(at("2026-10-31T23:59:59"), ALICE, "Qwen/Qwen-Image", (1, 1, 1, 0), "0.3", "0.3", "CNY"),
    record(at("2026-11-04T00:00:00"), ALICE, "Qwen/Qwen-Image", (1, 1, 1, 0), "0.3", "0.3", "CNY"),
    record(at("2026-11-01T09:00:00"), ALICE, "Qwen/Qwen-Image", (3, 3, 3, 0), "0.9", "0.9", "CNY"),
    # A partial failure: three made (billed), two delivered (charged), two refunded.
    record(
        at("2026-11-01T23:59:59"), ENV_KEY, "Qwen/Qwen-Image", (4, 3, 2, 2), "0.9", "0.6", "CNY"
    ),
    record(at("2026-11-02T00:00:00"), ALICE, "Kwai-Kolors/Kolors", (1, 1, 1, 0), "0", "0", "CNY"),
    # A model the price table does not know: cost unknown, not zero.
    record(at("2026-11-02T12:00:00"), ENV_KEY, "acme/New-Model", (2, 2, 2, 0), None, None, None),
    # From the .com site, in dollars: $0.005 an image.
    record(
        at("2026-11-03T08:00:00"),
        "anonymous",
        "Tongyi-MAI/Z-Image-Turbo",
        (3, 3, 3, 0),
        "0.015",
        "0.015",
        "USD",
    ),
    record(at("2026-11-03T09:00:00"), ALICE, "Qwen/Qwen-Image", (1, 0, 0, 1), "0", "0", "CNY", 502),
]


async def seed(database_url: str, records: list[dict[str, Any]] = RECORDS) -> None:
    async with Database.open(database_url) as database:
        async with database.engine.begin() as connection:
            now = datetime.now(UTC)
            await connection.execute(
                client_keys.insert(),
                [
                    {
                        "id": ALICE,
                        "name": "alice",
                        "key_hash": "0" * 64,
                        "prefix": "sfp_alic",
                        "created_at": now,
                        "updated_at": now,
                    }
                ],
            )
            await connection.execute(ledger.insert(), records)


def run_cli(database_url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "DATABASE_URL": database_url,
    }
    return subprocess.run(
        [sys.executable, "-m", "sfproxy", "usage", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def figures(
    requests: int,
    counts: tuple[int, int, int, int],
    cost: dict[str, str],
    charged: dict[str, str],
    unknown: int = 0,
) -> dict[str, Any]:
    requested, made, delivered, refunded = counts
    return {
        "requests": requests,
        "images_requested": requested,
        "images_made": made,
        "images_delivered": delivered,
        "images_refunded": refunded,
        "cost": cost,
        "charged": charged,
        "unknown_price": unknown,
    }


def money(cny: str, usd: str) -> dict[str, str]:
    return {"CNY": cny, "USD": usd}


TOTAL = figures(6, (14, 12, 11, 3), money("1.80", "0.015"), money("1.50", "0.015"), unknown=1)
BY_CLIENT = [
    {
        "client": "anonymous",
        "name": None,
        **figures(1, (3, 3, 3, 0), money("0.00", "0.015"), money("0.00", "0.015")),
    },
    {
        "client": ALICE,
        "name": "alice",
        **figures(3, (5, 4, 4, 1), money("0.90", "0.00"), money("0.90", "0.00")),
    },
    {
        "client": ENV_KEY,
        "name": None,
        **figures(2, (6, 5, 4, 2), money("0.90", "0.00"), money("0.60", "0.00"), unknown=1),
    },
]
BY_MODEL = [
    {
        "model": "Kwai-Kolors/Kolors",
        **figures(1, (1, 1, 1, 0), money("0.00", "0.00"), money("0.00", "0.00")),
    },
    {
        "model": "Qwen/Qwen-Image",
        **figures(3, (8, 6, 5, 3), money("1.80", "0.00"), money("1.50", "0.00")),
    },
    {
        "model": "Tongyi-MAI/Z-Image-Turbo",
        **figures(1, (3, 3, 3, 0), money("0.00", "0.015"), money("0.00", "0.015")),
    },
    {
        "model": "acme/New-Model",
        **figures(1, (2, 2, 2, 0), money("0.00", "0.00"), money("0.00", "0.00"), unknown=1),
    },
]
BY_DAY = [
    {
        "day": "2026-11-01",
        **figures(2, (7, 6, 5, 2), money("1.80", "0.00"), money("1.50", "0.00")),
    },
    {
        "day": "2026-11-02",
        **figures(2, (3, 3, 3, 0), money("0.00", "0.00"), money("0.00", "0.00"), unknown=1),
    },
    {
        "day": "2026-11-03",
        **figures(2, (4, 3, 3, 1), money("0.00", "0.015"), money("0.00", "0.015")),
    },
]


def document(by: str, rows: list[dict[str, Any]], total: dict[str, Any] = TOTAL, **filters: Any):
    return {
        "since": "2026-11-01T00:00:00Z",
        "until": "2026-11-04T00:00:00Z",
        "by": by,
        "client": filters.get("client"),
        "model": filters.get("model"),
        "currencies": filters.get("currencies", ["CNY", "USD"]),
        "rows": rows,
        "total": total,
    }


def admin_settings(fake, tmp_path: Path, database_url: str, **overrides: Any):
    return service_settings(
        fake,
        tmp_path,
        database_url=database_url,
        admin_keys=ADMIN,
        allow_client_keys=CLIENT_KEY,
        **overrides,
    )


async def test_admin_usage_reports_each_grouping_exactly(fake, tmp_path, database_url) -> None:
    await seed(database_url)
    async with in_process(admin_settings(fake, tmp_path, database_url)) as running:
        for by, rows in (("client", BY_CLIENT), ("model", BY_MODEL), ("day", BY_DAY)):
            response = await running.http.get(
                "/admin/usage", params={**RANGE, "by": by}, headers=ADMIN_AUTH
            )
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "application/json"
            assert response.json() == document(by, rows)
        # By client is the default grouping.
        default = await running.http.get("/admin/usage", params=RANGE, headers=ADMIN_AUTH)
        assert default.json() == document("client", BY_CLIENT)


async def test_admin_usage_as_csv(fake, tmp_path, database_url) -> None:
    await seed(database_url)
    async with in_process(admin_settings(fake, tmp_path, database_url)) as running:
        response = await running.http.get(
            "/admin/usage", params={**RANGE, "format": "csv"}, headers=ADMIN_AUTH
        )
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert list(csv.reader(io.StringIO(response.text))) == [
        ["client", "name", "requests", "images_requested", "images_made", "images_delivered"]
        + ["images_refunded", "cost_CNY", "charged_CNY", "cost_USD", "charged_USD"]
        + ["unknown_price"],
        ["anonymous", "", "1", "3", "3", "3", "0", "0.00", "0.00", "0.015", "0.015", "0"],
        [ALICE, "alice", "3", "5", "4", "4", "1", "0.90", "0.90", "0.00", "0.00", "0"],
        [ENV_KEY, "", "2", "6", "5", "4", "2", "0.90", "0.60", "0.00", "0.00", "1"],
        ["total", "", "6", "14", "12", "11", "3", "1.80", "1.50", "0.015", "0.015", "1"],
    ]


async def test_cli_and_admin_usage_agree_exactly(fake, tmp_path, database_url) -> None:
    await seed(database_url)
    cases = [
        ("--by", "client", "--format", "json"),
        ("--by", "model", "--format", "json"),
        ("--by", "day", "--format", "csv"),
        ("--by", "model", "--client", "alice", "--format", "csv"),
    ]
    async with in_process(admin_settings(fake, tmp_path, database_url)) as running:
        for case in cases:
            options = dict(zip(case[::2], case[1::2], strict=True))
            params = {
                **RANGE,
                **{name.removeprefix("--"): value for name, value in options.items()},
            }
            cli = run_cli(
                database_url,
                "--since",
                RANGE["since"],
                "--until",
                RANGE["until"],
                *case,
                cwd=tmp_path,
            )
            assert cli.returncode == 0, cli.stderr
            http = await running.http.get("/admin/usage", params=params, headers=ADMIN_AUTH)
            assert http.status_code == 200
            assert cli.stdout == http.text, case
    assert json.loads(
        run_cli(database_url, *_range(), "--format", "json", cwd=tmp_path).stdout
    ) == (document("client", BY_CLIENT))


def _range() -> tuple[str, ...]:
    return ("--since", RANGE["since"], "--until", RANGE["until"])


async def test_cli_prints_a_table(tmp_path, database_url) -> None:
    await seed(database_url)
    result = run_cli(database_url, *_range(), "--by", "model", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Usage 2026-11-01T00:00:00Z to 2026-11-04T00:00:00Z, by model",
        "MODEL                     REQUESTS  REQUESTED  MADE  DELIVERED  REFUNDED  COST CNY  "
        "CHARGED CNY  COST USD  CHARGED USD  UNKNOWN PRICE",
        "Kwai-Kolors/Kolors               1          1     1          1         0      0.00  "
        "       0.00      0.00         0.00              0",
        "Qwen/Qwen-Image                  3          8     6          5         3      1.80  "
        "       1.50      0.00         0.00              0",
        "Tongyi-MAI/Z-Image-Turbo         1          3     3          3         0      0.00  "
        "       0.00     0.015        0.015              0",
        "acme/New-Model                   1          2     2          2         0      0.00  "
        "       0.00      0.00         0.00              1",
        "-" * 133,
        "total                            6         14    12         11         3      1.80  "
        "       1.50     0.015        0.015              1",
    ]


async def test_filters_by_client_name_or_id_and_by_model(fake, tmp_path, database_url) -> None:
    await seed(database_url)
    alice = figures(3, (5, 4, 4, 1), {"CNY": "0.90"}, {"CNY": "0.90"})
    async with in_process(admin_settings(fake, tmp_path, database_url)) as running:

        async def report(**params: str) -> dict[str, Any]:
            response = await running.http.get(
                "/admin/usage", params={**RANGE, **params}, headers=ADMIN_AUTH
            )
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body

        for name in ("alice", ALICE):
            assert await report(client=name) == document(
                "client",
                [{"client": ALICE, "name": "alice", **alice}],
                total=alice,
                client=name,
                currencies=["CNY"],
            )
        qwen_env = figures(1, (4, 3, 2, 2), {"CNY": "0.90"}, {"CNY": "0.60"})
        assert await report(by="day", client=ENV_KEY, model="Qwen/Qwen-Image") == document(
            "day",
            [{"day": "2026-11-01", **qwen_env}],
            total=qwen_env,
            client=ENV_KEY,
            model="Qwen/Qwen-Image",
            currencies=["CNY"],
        )
        nothing = figures(0, (0, 0, 0, 0), {}, {})
        assert await report(model="nobody/uses-this") == document(
            "client", [], total=nothing, model="nobody/uses-this", currencies=[]
        )
        # The day ends at midnight UTC: 23:59:59 is in the first day, 00:00:00 in the next.
        first_day = await report(since="2026-11-01T00:00:00Z", until="2026-11-02T00:00:00Z")
        assert first_day["total"]["requests"] == 2


async def test_since_as_a_duration_counts_back_from_now(tmp_path, database_url) -> None:
    now = datetime.now(UTC)
    await seed(
        database_url,
        [
            record(
                now - timedelta(hours=1),
                ALICE,
                "Qwen/Qwen-Image",
                (1, 1, 1, 0),
                "0.3",
                "0.3",
                "CNY",
            ),
            record(
                now - timedelta(days=8), ALICE, "Qwen/Qwen-Image", (2, 2, 2, 0), "0.6", "0.6", "CNY"
            ),
        ],
    )
    week = json.loads(run_cli(database_url, "--format", "json", cwd=tmp_path).stdout)
    assert week["total"]["images_delivered"] == 1
    assert week["total"]["charged"] == {"CNY": "0.30"}
    nine_days = json.loads(
        run_cli(database_url, "--since", "9d", "--format", "json", cwd=tmp_path).stdout
    )
    assert nine_days["total"]["images_delivered"] == 3
    assert nine_days["total"]["charged"] == {"CNY": "0.90"}


async def test_money_is_summed_exactly(database_url) -> None:
    # 0.1 + 0.2 in floats is 0.30000000000000004; SQLite keeps NUMERIC as REAL.
    amounts = ["0.1", "0.2", "0.005", "0.000001"] * 250
    records = [
        record(
            at("2026-11-01T10:00:00") + timedelta(seconds=index),
            ALICE,
            "m",
            (1, 1, 1, 0),
            amount,
            amount,
            "CNY",
        )
        for index, amount in enumerate(amounts)
    ]
    await seed(database_url, records)
    async with Database.open(database_url) as database:
        report = await usage_report(database.engine, UsageFilter.parse(**RANGE))
        usage = await client_usage(database.engine, ALICE, now=at("2026-11-01T23:00:00"))
    assert report.total.cost == {"CNY": Decimal("76.250250")}
    assert usage.today.charged == {"CNY": Decimal("76.250250")}
    assert usage.month.requests == 1000


async def test_one_clients_day_and_month(database_url) -> None:
    await seed(database_url)
    async with Database.open(database_url) as database:
        usage = await client_usage(database.engine, ALICE, now=at("2026-11-03T12:00:00"))
    assert (usage.day_start, usage.month_start) == (
        at("2026-11-03T00:00:00"),
        at("2026-11-01T00:00:00"),
    )
    assert usage.today.requests == 1
    assert usage.today.images_refunded == 1
    assert usage.today.charged == {"CNY": Decimal("0")}
    # The October record is last month's; the one at 2026-11-04 is after `now`.
    assert usage.month.requests == 3
    assert usage.month.charged == {"CNY": Decimal("0.9")}


BAD_INPUTS = [
    (
        {"since": "yesterday"},
        "since",
        "since must be a duration (7d, 24h, 30m) or an ISO date or time "
        "(2026-12-01, 2026-12-01T09:30Z), not 'yesterday'.",
    ),
    (
        {"until": "2026-13-01"},
        "until",
        "until must be a duration (7d, 24h, 30m) or an ISO date or time "
        "(2026-12-01, 2026-12-01T09:30Z), not '2026-13-01'.",
    ),
    (
        {"since": "2026-11-04", "until": "2026-11-01"},
        "since",
        "since (2026-11-04T00:00:00Z) must be before until (2026-11-01T00:00:00Z).",
    ),
    (
        {"since": "2025-01-01", "until": "2026-11-01"},
        "since",
        "A report covers at most 400 days; ask for a shorter range.",
    ),
    (
        {"since": "99999999999999999999d"},
        "since",
        "since goes back at most 400 days, not 99999999999999999999d.",
    ),
    (
        {"since": "７d"},
        "since",
        "since must be a duration (7d, 24h, 30m) or an ISO date or time "
        "(2026-12-01, 2026-12-01T09:30Z), not '７d'.",
    ),
    (
        {"since": "0001-01-01T00:00+08:00"},
        "since",
        "since must be a duration (7d, 24h, 30m) or an ISO date or time "
        "(2026-12-01, 2026-12-01T09:30Z), not '0001-01-01T00:00+08:00'.",
    ),
    ({"client": "c" * 201}, "client", "client is longer than 200 characters."),
    (
        {"since": "1" * 5000},
        "since",
        "since must be a duration (7d, 24h, 30m) or an ISO date or time "
        f"(2026-12-01, 2026-12-01T09:30Z), not '{'1' * 40}…'.",
    ),
]


@pytest.mark.parametrize(("params", "param", "message"), BAD_INPUTS)
async def test_bad_filters_are_400s_naming_the_parameter(
    fake, tmp_path, params, param, message
) -> None:
    url = f"sqlite:///{tmp_path / 'sfproxy.db'}"
    async with in_process(admin_settings(fake, tmp_path, url)) as running:
        response = await running.http.get("/admin/usage", params=params, headers=ADMIN_AUTH)
    assert response.status_code == 400
    assert response.json() == {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}
    }


async def test_bad_grouping_and_format_are_400s(fake, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'sfproxy.db'}"
    async with in_process(admin_settings(fake, tmp_path, url)) as running:
        by = await running.http.get("/admin/usage", params={"by": "week"}, headers=ADMIN_AUTH)
        output = await running.http.get(
            "/admin/usage", params={"format": "xml"}, headers=ADMIN_AUTH
        )
    assert by.status_code == output.status_code == 400
    assert by.json()["error"] == {
        "message": "by must be one of client, model, day, not 'week'.",
        "type": "invalid_request_error",
        "param": "by",
        "code": None,
    }
    assert output.json()["error"]["message"] == "format must be one of json, csv, table, not 'xml'."
    assert output.json()["error"]["param"] == "format"


def test_cli_bad_inputs_exit_2_with_the_message(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'sfproxy.db'}"
    for params, _param, message in BAD_INPUTS[:4]:
        args = [part for name, value in params.items() for part in (f"--{name}", value)]
        result = run_cli(url, *args, cwd=tmp_path)
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr == f"sfproxy usage: {message}\n"
    by = run_cli(url, "--by", "week", cwd=tmp_path)
    assert by.returncode == 2
    assert (
        "argument --by: invalid choice: 'week' (choose from 'client', 'model', 'day')" in by.stderr
    )
    database = run_cli("mysql://u@127.0.0.1/x", cwd=tmp_path)
    assert database.returncode == 2
    assert database.stderr == (
        "sfproxy usage: DATABASE_URL must be sqlite:///PATH or postgresql://…, not mysql://\n"
    )


def test_durations_and_dates_parse_to_utc() -> None:
    now = at("2026-12-01T12:00:00")
    assert parse_moment("7d", now=now, param="since") == at("2026-11-24T12:00:00")
    assert parse_moment("24H", now=now, param="since") == at("2026-11-30T12:00:00")
    assert parse_moment(" 30m ", now=now, param="since") == at("2026-12-01T11:30:00")
    assert parse_moment("2026-11-05", now=now, param="since") == at("2026-11-05T00:00:00")
    assert parse_moment("2026-11-05T10:00+08:00", now=now, param="since") == at(
        "2026-11-05T02:00:00"
    )
    with pytest.raises(InvalidRequestError) as caught:
        parse_moment("-5d", now=now, param="until")
    assert caught.value.param == "until"
    assert UsageFilter.parse(now=now).since == at("2026-11-24T12:00:00")


def test_money_is_shown_to_the_cent_or_finer_when_exact_needs_it() -> None:
    assert format_money(Decimal("0.900000"), "CNY") == "0.90"
    assert format_money(Decimal("0"), "USD") == "0.00"
    assert format_money(Decimal("0.005000"), "USD") == "0.005"
    assert format_money(Decimal("12.000001"), "CNY") == "12.000001"
    assert format_money(Decimal("1E+2"), "CNY") == "100.00"


async def test_admin_guard(fake, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'sfproxy.db'}"
    async with in_process(admin_settings(fake, tmp_path, url)) as running:
        client = await running.http.get(
            "/admin/usage", headers={"Authorization": f"Bearer {CLIENT_KEY}"}
        )
        anonymous = await running.http.get("/admin/usage")
    for response in (client, anonymous):
        assert response.status_code == 401
        assert (
            response.json()["error"]["message"]
            == "/admin needs one of ADMIN_KEYS as a Bearer token."
        )
    async with in_process(service_settings(fake, tmp_path, database_url=url)) as running:
        hidden = await running.http.get("/admin/usage", headers=ADMIN_AUTH)
    assert hidden.status_code == 404
    assert hidden.json()["error"]["message"] == "Invalid URL (GET /admin/usage)."


async def test_an_unreachable_database_is_a_503(fake, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'sfproxy.db'}"
    async with in_process(admin_settings(fake, tmp_path, url)) as running:
        # The database goes away under a running service: nothing listens on this port.
        gone = make_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/gone")
        running.services.database.engine = gone
        try:
            response = await running.http.get("/admin/usage", headers=ADMIN_AUTH)
        finally:
            await gone.dispose()
    assert response.status_code == 503
    assert response.json()["error"] == {
        "message": "The database did not answer; try again.",
        "type": "server_error",
        "param": None,
        "code": "database_unavailable",
    }
