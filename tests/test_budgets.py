"""Budgets: what a key may spend per UTC day and month, reserved before any upstream work.

The service runs as a process (the openai SDK as its client) or in the test's loop (ASGI, or a
loopback port where a real disconnect matters), in front of the built-in fake SiliconFlow, on
the .cn site: Qwen/Qwen-Image costs ¥0.3 an image and Kwai-Kolors/Kolors is free.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import httpx
import openai
import pytest
from redis import Redis

from sfproxy.auth import Client, key_label
from sfproxy.budgets import Budgets, windows
from sfproxy.db.database import Database
from sfproxy.db.tables import ledger
from sfproxy.errors import BudgetExceededError, InvalidRequestError
from sfproxy.prices import Prices
from sfproxy.setting_values import ConfigError
from sfproxy.settings import load_settings
from sfproxy.spend_counters import MemorySpend

from .conftest import CLIENT_KEYS
from .support.inprocess import ASGI_URL, eventually, in_process, on_loopback, service_settings

KEY = "proxy-key-budget-0123456789"
LABEL = key_label(KEY)
AUTH = {"Authorization": f"Bearer {KEY}"}
QWEN = "Qwen/Qwen-Image"
KOLORS = "Kwai-Kolors/Kolors"


def settings(fake, tmp_path, limits: dict[str, object], **overrides):
    return service_settings(
        fake,
        tmp_path,
        allow_client_keys=KEY,
        client_limits=json.dumps({KEY: limits}),
        **overrides,
    )


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def next_day() -> datetime:
    now = datetime.now(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)


def next_month() -> datetime:
    now = datetime.now(UTC)
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first + timedelta(days=32)).replace(day=1)


def assert_retry_after(response: httpx.Response, reset: datetime) -> None:
    expected = (reset - datetime.now(UTC)).total_seconds()
    assert abs(int(response.headers["retry-after"]) - expected) <= 5


async def generate(running, model: str = QWEN, n: int = 1) -> httpx.Response:
    return await running.http.post(
        "/v1/images/generations",
        json={"model": model, "prompt": "a budgeted picture", "n": n},
        headers=AUTH,
    )


async def spent(running, period: str, client: Client | None = None) -> Decimal:
    statuses = await running.services.budgets.status(client or Client(label=LABEL, key=KEY))
    return next(status.spent for status in statuses if status.period == period)


def test_a_daily_budget_of_0_9_allows_three_qwen_images_and_free_kolors(start, fake):
    key = CLIENT_KEYS[0]
    proxy = start(
        ALLOW_CLIENT_KEYS=",".join(CLIENT_KEYS),
        CLIENT_LIMITS=json.dumps({key: {"daily_budget": "0.9"}}),
    )
    with openai.OpenAI(base_url=proxy.api_base, api_key=key, max_retries=0) as sdk:
        for _ in range(3):
            answer = sdk.images.generate(model=QWEN, prompt="one of three")
            assert answer.data is not None and len(answer.data) == 1
        calls = len(fake.requests)
        with pytest.raises(openai.RateLimitError) as refused:
            sdk.images.generate(model=QWEN, prompt="the fourth")
        # Refused before any upstream work.
        assert len(fake.requests) == calls
        response = refused.value.response
        assert response.status_code == 429
        assert response.json() == {
            "error": {
                "message": "The daily budget of this key is spent: 0.00 CNY left of 0.90 CNY, "
                "and this request would cost 0.30 CNY (1 image of Qwen/Qwen-Image at 0.30 CNY)."
                f" The daily budget resets at {stamp(next_day())} (UTC).",
                "type": "insufficient_quota",
                "param": None,
                "code": "budget_exceeded",
            }
        }
        assert_retry_after(response, next_day())
        assert response.headers["x-should-retry"] == "false"
        free = sdk.images.generate(model=KOLORS, prompt="free, whatever the budget")
        assert free.data is not None and len(free.data) == 1
    # Another key has no budget.
    with openai.OpenAI(base_url=proxy.api_base, api_key=CLIENT_KEYS[1], max_retries=0) as sdk:
        assert len(sdk.images.generate(model=QWEN, prompt="unlimited").data or []) == 1
    metrics = httpx.get(proxy.url + "/metrics").text
    assert 'sfproxy_rate_limited_total{limit="client_daily_budget"} 1.0' in metrics


async def test_n_2_with_one_image_left_is_refused_before_any_upstream_call(fake, tmp_path):
    async with in_process(settings(fake, tmp_path, {"daily_budget": "0.9"})) as running:
        assert (await generate(running, n=2)).status_code == 200
        calls = len(fake.requests)
        refused = await generate(running, n=2)
        assert refused.status_code == 429
        assert refused.json()["error"]["message"] == (
            "The daily budget of this key is spent: 0.30 CNY left of 0.90 CNY, and this request "
            "would cost 0.60 CNY (2 images of Qwen/Qwen-Image at 0.30 CNY). 1 image(s) would "
            f"fit. The daily budget resets at {stamp(next_day())} (UTC)."
        )
        assert len(fake.requests) == calls
        # What was reserved for the refused request is not counted.
        assert await spent(running, "daily") == Decimal("0.6")
        assert (await generate(running, n=1)).status_code == 200
        assert await spent(running, "daily") == Decimal("0.9")


async def test_a_partial_failure_charges_only_the_images_delivered(fake, tmp_path):
    async with in_process(settings(fake, tmp_path, {"daily_budget": "1.5"})) as running:
        fake.add_fault("status", status=400, count=2)
        response = await generate(running, n=4)
        assert response.status_code == 200, response.text
        assert response.headers["X-Images-Returned"] == "2"
        assert await spent(running, "daily") == Decimal("0.6")
        # A failure charges nothing.
        fake.add_fault("status", status=400)
        assert (await generate(running)).status_code == 400
        assert await spent(running, "daily") == Decimal("0.6")
        # What the failures gave back is there to spend: 0.9 of 1.5 left, three images.
        assert (await generate(running, n=3)).status_code == 200
        assert await spent(running, "daily") == Decimal("1.5")
        assert (await generate(running)).status_code == 429


async def test_a_refusal_by_the_image_limit_gives_the_budget_back(fake, tmp_path):
    options = settings(
        fake, tmp_path, {"daily_budget": "3", "monthly_budget": "10", "images_per_day": 2}
    )
    async with in_process(options) as running:
        assert (await generate(running, n=2)).status_code == 200
        refused = await generate(running)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "client_images_per_day"
        assert await spent(running, "daily") == Decimal("0.6")
        assert await spent(running, "monthly") == Decimal("0.6")


async def test_a_client_that_leaves_is_charged_nothing(fake, tmp_path):
    fake.configure(latency=1.0)
    async with on_loopback(settings(fake, tmp_path, {"daily_budget": "0.3"})) as running:
        with pytest.raises(httpx.ReadTimeout):
            await running.http.post(
                "/v1/images/generations",
                json={"model": QWEN, "prompt": "gone before it is made"},
                headers=AUTH,
                timeout=0.3,
            )
        refunded = "sfproxy_images_refunded_total"
        await eventually(lambda: running.metric(refunded, model=QWEN) == 1, what="the refund")
        assert await spent(running, "daily") == Decimal("0")
        fake.configure(latency=0.0)
        # The whole budget is left: a new prompt (not the abandoned one) gets its image.
        again = await running.http.post(
            "/v1/images/generations", json={"model": QWEN, "prompt": "stayed"}, headers=AUTH
        )
        assert again.status_code == 200
        assert await spent(running, "daily") == Decimal("0.3")


async def test_a_monthly_budget_refuses_with_the_month_and_its_reset(fake, tmp_path):
    async with in_process(settings(fake, tmp_path, {"monthly_budget": "0.6"})) as running:
        async with openai.AsyncOpenAI(
            base_url=ASGI_URL + "/v1", api_key=KEY, max_retries=0, http_client=running.http
        ) as sdk:
            await sdk.images.generate(model=QWEN, prompt="one")
            await sdk.images.generate(model=QWEN, prompt="two")
            with pytest.raises(openai.RateLimitError) as refused:
                await sdk.images.generate(model=QWEN, prompt="three")
        response = refused.value.response
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("insufficient_quota", "budget_exceeded")
        assert error["message"] == (
            "The monthly budget of this key is spent: 0.00 CNY left of 0.60 CNY, and this request "
            "would cost 0.30 CNY (1 image of Qwen/Qwen-Image at 0.30 CNY). The monthly budget "
            f"resets at {stamp(next_month())} (UTC)."
        )
        assert_retry_after(response, next_month())
        statuses = await running.services.budgets.status(Client(label=LABEL, key=KEY))
        monthly = next(status for status in statuses if status.period == "monthly")
        assert (monthly.budget, monthly.spent, monthly.left) == (
            Decimal("0.6"),
            Decimal("0.6"),
            Decimal("0"),
        )
        assert (monthly.currency, monthly.resets_at) == ("CNY", next_month())
        daily = next(status for status in statuses if status.period == "daily")
        assert (daily.budget, daily.left, daily.resets_at) == (None, None, next_day())
        assert running.metric("sfproxy_rate_limited_total", limit="client_monthly_budget") == 1


async def test_a_model_without_a_price_is_refused_to_a_key_with_a_budget(fake, tmp_path):
    options = settings(fake, tmp_path, {"daily_budget": "5"}, prices_json=json.dumps({QWEN: None}))
    async with in_process(options) as running:
        refused = await generate(running)
        assert refused.status_code == 400
        assert refused.json()["error"] == {
            "message": "Model Qwen/Qwen-Image has no known price on this site, and this key has "
            "a spending budget: its cost could not be counted. The operator can set the price "
            'per image in PRICES_JSON, e.g. {"Qwen/Qwen-Image": "0.1"}.',
            "type": "invalid_request_error",
            "param": "model",
            "code": "price_unknown",
        }
        assert fake.requests == []
        assert (await generate(running, model=KOLORS)).status_code == 200


async def test_a_zero_budget_allows_only_free_models(fake, tmp_path):
    async with in_process(settings(fake, tmp_path, {"daily_budget": "0"})) as running:
        assert (await generate(running, model=KOLORS, n=2)).status_code == 200
        refused = await generate(running)
        assert refused.status_code == 429
        assert "0.00 CNY left of 0.00 CNY" in refused.json()["error"]["message"]
        assert fake.requests[-1].body["model"] == KOLORS
        # Chat is refused the same way, before a stream starts.
        chat = await running.http.post(
            "/v1/chat/completions",
            json={"model": QWEN, "stream": True, "messages": [{"role": "user", "content": "x"}]},
            headers=AUTH,
        )
        assert chat.status_code == 429
        assert chat.headers["content-type"].startswith("application/json")
        assert chat.json()["error"]["code"] == "budget_exceeded"
        assert len(fake.requests) == 1


async def test_budgets_fail_open_when_redis_is_unreachable(fake, tmp_path, caplog):
    options = settings(fake, tmp_path, {"daily_budget": "0"}, redis_url="redis://127.0.0.1:9/0")
    async with in_process(options) as running:
        # Like the other client limits: an outage must not stop image generation.
        assert (await generate(running)).status_code == 200
        assert "budgets unavailable, daily spend not counted" in caplog.text


async def test_a_keys_own_budgets_win_over_client_limits_and_the_defaults(fake, tmp_path):
    options = settings(
        fake,
        tmp_path,
        {"daily_budget": "2"},
        client_daily_budget="7",
        client_monthly_budget="9",
    )
    async with in_process(options) as running:
        budgets = running.services.budgets
        database_key = Client(label="ck_own", daily_budget=Decimal("0.3"))
        assert budgets.budgets(database_key) == {"daily": Decimal("0.3"), "monthly": Decimal("9")}
        assert budgets.budgets(Client(label=LABEL, key=KEY)) == {
            "daily": Decimal("2"),
            "monthly": Decimal("9"),
        }
        assert budgets.budgets(Client(label="ip-127.0.0.1")) == {
            "daily": Decimal("7"),
            "monthly": Decimal("9"),
        }
        held = await budgets.reserve(database_key, QWEN, 1)
        with pytest.raises(BudgetExceededError):
            await budgets.reserve(database_key, QWEN, 1)
        # Settled undelivered: the price is given back to both periods.
        await held.settle(0)
        assert await spent(running, "daily", database_key) == Decimal("0")
        assert await spent(running, "monthly", database_key) == Decimal("0")
        held = await budgets.reserve(database_key, "Tongyi-MAI/Z-Image-Turbo", 3)
        await held.settle(2)
        await held.settle(0)  # a second settle changes nothing
        assert await spent(running, "daily", database_key) == Decimal("0.2")
        with pytest.raises(InvalidRequestError):
            await budgets.reserve(database_key, "some/unpriced-model", 1)


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        ({"daily_budget": -1}, "at daily_budget: Input should be greater than or equal to 0"),
        (
            {"monthly_budget": "0.0000001"},
            "at monthly_budget: Decimal input should have no more than 6 decimal places",
        ),
        ({"daily_budget": "lots"}, "at daily_budget: Input should be a valid decimal"),
    ],
)
def test_bad_budgets_stop_the_start_without_echoing_the_key(limits, reason):
    with pytest.raises(ConfigError) as refused:
        load_settings(_env_file=None, client_limits=json.dumps({KEY: limits}))
    assert str(refused.value) == f"CLIENT_LIMITS is invalid {reason}"
    assert KEY not in str(refused.value)
    exact = load_settings(_env_file=None, client_daily_budget="0.000001")
    assert exact.client_daily_budget == Decimal("0.000001")


def test_periods_are_calendar_days_and_months_in_utc():
    day, month = windows(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC))
    assert (day.name, day.start, day.end) == (
        "2026-12-31",
        datetime(2026, 12, 31, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert (month.name, month.start, month.end) == (
        "2026-12",
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    # 01:30 in UTC+8 is still the day before in UTC.
    east = datetime(2027, 3, 1, 1, 30, tzinfo=timezone(timedelta(hours=8)))
    day, month = windows(east)
    assert (day.name, month.name, month.end) == (
        "2027-02-28",
        "2027-02",
        datetime(2027, 3, 1, tzinfo=UTC),
    )


async def test_a_refusal_says_when_the_month_resets_and_retry_after_counts_to_it(tmp_path):
    now = datetime(2026, 12, 31, 23, 0, tzinfo=UTC)
    async with Database.open(f"sqlite:///{tmp_path / 'clock.db'}") as database:
        budgets = Budgets(
            MemorySpend(),
            database.engine,
            Prices("com"),
            monthly=Decimal("0.01"),
            clock=lambda: now,
        )
        client = Client(label="ck_clock")
        with pytest.raises(BudgetExceededError) as refused:
            await budgets.reserve(client, "black-forest-labs/FLUX.2-pro", 1)
    assert refused.value.message == (
        "The monthly budget of this key is spent: 0.01 USD left of 0.01 USD, and this request "
        "would cost 0.03 USD (1 image of black-forest-labs/FLUX.2-pro at 0.03 USD). The "
        "monthly budget resets at 2027-01-01T00:00:00Z (UTC)."
    )
    assert refused.value.retry_after == 3600
    assert refused.value.headers() == {"Retry-After": "3600", "x-should-retry": "false"}


def test_two_instances_sharing_redis_share_one_budget(start, redis, fake):
    key = CLIENT_KEYS[0]
    env = {
        "ALLOW_CLIENT_KEYS": ",".join(CLIENT_KEYS),
        "CLIENT_LIMITS": json.dumps({key: {"daily_budget": "0.9", "monthly_budget": "5"}}),
        "REDIS_URL": redis.url,
    }
    first = start(**env, LOG_LEVEL="info")
    second = start(**env, LOG_LEVEL="warning")
    assert first.url != second.url

    def generate_on(proxy, n: int = 1) -> httpx.Response:
        return httpx.post(
            proxy.api_base + "/images/generations",
            json={"model": QWEN, "prompt": "shared", "n": n},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )

    assert generate_on(first).status_code == 200
    assert generate_on(second, n=2).status_code == 200
    refused = generate_on(first)
    assert refused.status_code == 429
    assert "0.00 CNY left of 0.90 CNY" in refused.json()["error"]["message"]
    assert generate_on(second).status_code == 429
    # The counters are Redis's, in millionths, one per period.
    day, month = windows(datetime.now(UTC))
    label = key_label(key)
    with Redis.from_url(redis.url) as direct:
        assert direct.get(f"sfproxy:budget:{label}:{day.name}") == b"900000"
        assert direct.get(f"sfproxy:budget:{label}:{month.name}") == b"900000"
        ttl = direct.ttl(f"sfproxy:budget:{label}:{day.name}")
    until_reset = (day.end - datetime.now(UTC)).total_seconds()
    assert until_reset < ttl <= until_reset + 2 * 3600 + 5


async def test_without_redis_a_restart_seeds_the_periods_from_the_ledger(
    fake, tmp_path, database_url
):
    now = datetime.now(UTC)
    day, month = windows(now)
    options = settings(
        fake,
        tmp_path,
        {"daily_budget": "0.9", "monthly_budget": "1.2"},
        database_url=database_url,
    )
    async with in_process(options) as running:
        rows = [
            # Charged today: counts for the day and the month.
            row(LABEL, day.start, "0.6"),
            # The last second of last month, another client, another currency, unknown price.
            row(LABEL, month.start - timedelta(seconds=1), "50"),
            row("key-someoneelse", day.start, "50"),
            row(LABEL, day.start, "50", currency="USD"),
            row(LABEL, day.start, None),
        ]
        async with running.services.database.engine.begin() as connection:
            await connection.execute(ledger.insert(), rows)
        assert (await generate(running)).status_code == 200
        refused = await generate(running)
        assert refused.status_code == 429
        assert refused.json()["error"]["message"].startswith(
            "The daily budget of this key is spent: 0.00 CNY left of 0.90 CNY,"
        )
        statuses = await running.services.budgets.status(Client(label=LABEL, key=KEY))
        assert [(s.period, s.spent, s.left) for s in statuses] == [
            ("daily", Decimal("0.9"), Decimal("0")),
            ("monthly", Decimal("0.9"), Decimal("0.3")),
        ]


def row(client: str, at: datetime, charged: str | None, *, currency: str = "CNY") -> dict:
    return {
        "at": at,
        "request_id": f"req-{time.monotonic_ns()}",
        "client": client,
        "endpoint": "/v1/images/generations",
        "model_requested": QWEN,
        "model": QWEN,
        "images_requested": 2,
        "images_made": 2,
        "images_delivered": 2,
        "images_refunded": 0,
        "size": "1024x1024",
        "upstream_account": None,
        "upstream_ms": 900,
        "status": 200,
        "cost": None if charged is None else Decimal(charged),
        "charged": None if charged is None else Decimal(charged),
        "currency": currency,
    }


async def test_a_flushed_redis_is_seeded_again_from_the_ledger(fake, tmp_path, redis):
    options = settings(fake, tmp_path, {"daily_budget": "0.9"}, redis_url=redis.url)
    async with in_process(options) as running:
        engine = running.services.database.engine
        day, _ = windows(datetime.now(UTC))
        async with engine.begin() as connection:
            await connection.execute(ledger.insert(), [row(LABEL, day.start, "0.6")])
        assert await spent(running, "daily") == Decimal("0.6")
        async with engine.begin() as connection:
            await connection.execute(ledger.insert(), [row(LABEL, day.start, "0.3")])
        # Redis is the live truth while it holds the counter...
        assert await spent(running, "daily") == Decimal("0.6")
        redis.command("FLUSHALL")
        # ...and the ledger is, once it lost it.
        assert await spent(running, "daily") == Decimal("0.9")
        refused = await generate(running)
        assert refused.status_code == 429
        assert "0.00 CNY left of 0.90 CNY" in refused.json()["error"]["message"]
        assert fake.requests == []
