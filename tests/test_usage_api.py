"""`GET /v1/usage` (a key's own usage and budgets) and `/admin/usage/daily` (the chart's series).

The service runs in the test's loop (ASGI) in front of the built-in fake SiliconFlow, on the
.cn site: Qwen/Qwen-Image costs ¥0.3 an image, Kwai-Kolors/Kolors is free. Tests that take
`database_url` run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from sfproxy.auth import key_label
from sfproxy.db.database import Database
from sfproxy.db.engine import make_engine
from sfproxy.db.tables import client_keys, ledger
from sfproxy.routes.usage import KeyUsage

from .support.inprocess import eventually, in_process, service_settings
from .support.proxy import free_port
from .test_usage import record

ADMIN = "admin-key-usage-api-0123456789"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
ENV_KEY = "client-key-usage-api-0123456789"
QWEN = "Qwen/Qwen-Image"
KOLORS = "Kwai-Kolors/Kolors"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def periods() -> tuple[datetime, datetime, datetime, datetime]:
    """Today's and this month's starts (UTC), and when each resets."""
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    return day, month, day + timedelta(days=1), (month + timedelta(days=32)).replace(day=1)


async def generate(running: Any, key: str, model: str, n: int = 1) -> httpx.Response:
    return await running.http.post(
        "/v1/images/generations",
        json={"model": model, "prompt": "counted", "n": n},
        headers={"Authorization": f"Bearer {key}"},
    )


async def test_a_key_sees_its_own_usage_and_budgets_left(fake, tmp_path, database_url) -> None:
    settings = service_settings(
        fake, tmp_path, database_url=database_url, admin_keys=ADMIN, allow_client_keys=ENV_KEY
    )
    async with in_process(settings) as running:
        created = await running.http.post(
            "/admin/keys",
            json={"name": "alice", "daily_budget": "0.9", "monthly_budget": "5"},
            headers=ADMIN_AUTH,
        )
        assert created.status_code == 201
        alice = created.json()
        assert (await generate(running, alice["key"], QWEN, n=2)).status_code == 200
        assert (await generate(running, alice["key"], KOLORS)).status_code == 200
        # Another key's spend is not alice's.
        assert (await generate(running, ENV_KEY, QWEN)).status_code == 200
        await eventually(
            lambda: running.metric("sfproxy_ledger_records_written_total") == 3,
            what="the ledger's writes",
        )
        response = await running.http.get(
            "/v1/usage", headers={"Authorization": f"Bearer {alice['key']}"}
        )
        other = await running.http.get("/v1/usage", headers={"x-api-key": ENV_KEY})
    day, month, next_day, next_month = periods()
    assert response.status_code == 200
    assert response.json() == {
        "object": "usage",
        "client": alice["id"],
        "name": "alice",
        "currency": "CNY",
        "today": {
            "since": iso(day),
            "requests": 2,
            "images_delivered": 3,
            "charged": "0.60",
            "unknown_price": 0,
        },
        "month": {
            "since": iso(month),
            "requests": 2,
            "images_delivered": 3,
            "charged": "0.60",
            "unknown_price": 0,
        },
        "budgets": [
            {
                "period": "daily",
                "budget": "0.90",
                "spent": "0.60",
                "left": "0.30",
                "currency": "CNY",
                "resets_at": iso(next_day),
            },
            {
                "period": "monthly",
                "budget": "5.00",
                "spent": "0.60",
                "left": "4.40",
                "currency": "CNY",
                "resets_at": iso(next_month),
            },
        ],
    }
    # What the OpenAPI document says it answers.
    for answer in (response, other):
        KeyUsage.model_validate(answer.json())
    # A key without budgets: its usage, and no budget.
    assert other.status_code == 200
    assert other.json()["client"] == key_label(ENV_KEY)
    assert other.json()["name"] is None
    assert other.json()["today"]["charged"] == "0.30"
    assert other.json()["budgets"] == []


async def test_usage_needs_a_key_and_a_public_service_has_none(fake, tmp_path) -> None:
    async with in_process(service_settings(fake, tmp_path, allow_client_keys=ENV_KEY)) as running:
        missing = await running.http.get("/v1/usage")
        wrong = await running.http.get("/v1/usage", headers={"x-api-key": "not-a-key"})
    assert missing.status_code == wrong.status_code == 401
    assert wrong.json()["error"]["message"] == "Incorrect API key provided for this proxy."
    async with in_process(service_settings(fake, tmp_path)) as running:
        public = await running.http.get("/v1/usage")
    assert public.status_code == 404
    assert public.json()["error"] == {
        "message": "This service has no client keys, so there is no usage of a key to show "
        "(GET /v1/usage).",
        "type": "invalid_request_error",
        "param": None,
        "code": "not_found",
    }


async def test_an_unreachable_database_is_a_503_in_the_envelope(fake, tmp_path) -> None:
    async with in_process(service_settings(fake, tmp_path, allow_client_keys=ENV_KEY)) as running:
        # The database goes away under a running service: nothing listens on this port.
        gone = make_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/gone")
        running.services.database.engine = gone
        running.services.budgets.engine = gone
        try:
            response = await running.http.get("/v1/usage", headers={"x-api-key": ENV_KEY})
        finally:
            await gone.dispose()
    assert response.status_code == 503
    assert response.json()["error"] == {
        "message": "The database did not answer; try again.",
        "type": "server_error",
        "param": None,
        "code": "database_unavailable",
    }


def point(day: str, client: str, name: str | None, requests: int, delivered: int, cny: str):
    return {
        "day": day,
        "client": client,
        "name": name,
        "requests": requests,
        "images_requested": delivered,
        "images_made": delivered,
        "images_delivered": delivered,
        "images_refunded": 0,
        "cost": {"CNY": cny},
        "charged": {"CNY": cny},
        "unknown_price": 0,
    }


async def test_the_daily_series_has_a_point_per_day_and_client(
    fake, tmp_path, database_url
) -> None:
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    alice, bob = "ck_alice00000001", "key-0123456789"
    records = [
        record(today, alice, QWEN, (2, 2, 2, 0), "0.6", "0.6", "CNY"),
        record(today + timedelta(seconds=1), alice, QWEN, (1, 1, 1, 0), "0.3", "0.3", "CNY"),
        record(today, bob, KOLORS, (1, 1, 1, 0), "0", "0", "CNY"),
        record(today - timedelta(days=1), bob, QWEN, (1, 1, 1, 0), "0.3", "0.3", "CNY"),
        # The first day of the 30, and the day before it (left out).
        record(today - timedelta(days=29), alice, QWEN, (1, 1, 1, 0), "0.3", "0.3", "CNY"),
        record(
            today - timedelta(seconds=29 * 86400 + 1), bob, QWEN, (4, 4, 4, 0), "1.2", "1.2", "CNY"
        ),
    ]
    async with Database.open(database_url) as database:
        async with database.engine.begin() as connection:
            await connection.execute(
                client_keys.insert(),
                [
                    {
                        "id": alice,
                        "name": "alice <b>",
                        "key_hash": "0" * 64,
                        "prefix": "sfp_alic",
                        "created_at": now,
                        "updated_at": now,
                    }
                ],
            )
            await connection.execute(ledger.insert(), records)
    settings = service_settings(fake, tmp_path, database_url=database_url, admin_keys=ADMIN)
    async with in_process(settings) as running:
        response = await running.http.get("/admin/usage/daily", headers=ADMIN_AUTH)
        longest = await running.http.get(
            "/admin/usage/daily", params={"days": "400"}, headers=ADMIN_AUTH
        )
        refused = [
            await running.http.get("/admin/usage/daily", params={"days": days}, headers=ADMIN_AUTH)
            for days in ("0", "401", "-3", "7d", "1" * 500)
        ]
        anonymous = await running.http.get("/admin/usage/daily")
    days = [(today - timedelta(days=offset)).date().isoformat() for offset in range(29, -1, -1)]
    assert response.status_code == 200
    body = response.json()
    assert body["since"] == iso(today - timedelta(days=29))
    assert body["days"] == days
    assert body["currencies"] == ["CNY"]
    assert body["points"] == [
        point(days[0], alice, "alice <b>", 1, 1, "0.30"),
        point(days[28], bob, None, 1, 1, "0.30"),
        point(days[29], alice, "alice <b>", 2, 3, "0.90"),
        point(days[29], bob, None, 1, 1, "0.00"),
    ]
    assert longest.status_code == 200
    assert len(longest.json()["days"]) == 400
    assert [point["day"] for point in longest.json()["points"]][:2] == [
        (today - timedelta(days=30)).date().isoformat(),
        days[0],
    ]
    for answer in refused:
        assert answer.status_code == 400
        assert answer.json()["error"]["param"] == "days"
    assert refused[0].json()["error"]["message"] == (
        "days must be a whole number from 1 to 400, not '0'."
    )
    assert anonymous.status_code == 401


@pytest.mark.parametrize("days", ["1", "30"])
async def test_a_series_without_records_still_lists_its_days(fake, tmp_path, days) -> None:
    settings = service_settings(fake, tmp_path, admin_keys=ADMIN)
    async with in_process(settings) as running:
        response = await running.http.get(
            "/admin/usage/daily", params={"days": days}, headers=ADMIN_AUTH
        )
    body = response.json()
    assert (len(body["days"]), body["points"], body["currencies"]) == (int(days), [], [])
    assert body["days"][-1] == datetime.now(UTC).date().isoformat()


async def test_reading_usage_does_not_use_up_the_requests_per_minute(fake, tmp_path) -> None:
    settings = service_settings(fake, tmp_path, allow_client_keys=ENV_KEY, client_rpm=1)
    async with in_process(settings) as running:
        looks = [
            (await running.http.get("/v1/usage", headers={"x-api-key": ENV_KEY})).status_code
            for _ in range(3)
        ]
        first = await generate(running, ENV_KEY, KOLORS)
        second = await generate(running, ENV_KEY, KOLORS)
    assert looks == [200, 200, 200]
    assert (first.status_code, second.status_code) == (200, 429)
