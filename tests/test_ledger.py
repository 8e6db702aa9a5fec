"""The usage ledger, on SQLite and PostgreSQL: its totals equal what the fake SiliconFlow billed,
it survives SIGTERM and restarts, and a database that stops answering stops no request."""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from sfproxy.auth import key_label
from sfproxy.db.database import Database
from sfproxy.db.tables import ledger
from sfproxy.fake_upstream import FakeSiliconFlow
from sfproxy.ledger import LedgerRecord, LedgerWriter, delete_older_than
from sfproxy.metrics import Metrics
from sfproxy.upstream_accounts import account_label
from sfproxy.upstream_accounts import key_label as upstream_key_label

from .conftest import CLIENT_KEYS, UPSTREAM_KEY, StartProxy
from .support.postgres import PostgresServer
from .support.proxy import ProxyProcess, free_port, start_proxy

QWEN = "Qwen/Qwen-Image"
KOLORS = "Kwai-Kolors/Kolors"
# Given no price (PRICES_JSON), so its cost is unknown; the fake still bills it.
UNPRICED = "Tongyi-MAI/Z-Image"
KEY = CLIENT_KEYS[0]


def rows(database_url: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        async with Database.open(database_url, upgrade=False) as database:
            async with database.engine.connect() as connection:
                result = await connection.execute(select(ledger).order_by(ledger.c.id))
                return [dict(row._mapping) for row in result]

    return asyncio.run(read())


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll `check` until it gives something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s (last: {result!r})")
        time.sleep(0.05)


def wait_for_rows(database_url: str, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    def enough() -> list[dict[str, Any]] | None:
        found = rows(database_url)
        assert len(found) <= count, found
        return found if len(found) == count else None

    return wait_for(f"{count} ledger rows", enough, timeout)


def by_id(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["request_id"]: row for row in found}


def metric(proxy: ProxyProcess, line_start: str) -> float:
    text = httpx.get(proxy.url + "/metrics").text
    values = [line.split()[-1] for line in text.splitlines() if line.startswith(line_start + " ")]
    assert len(values) == 1, (line_start, values)
    return float(values[0])


def generate(sdk: openai.OpenAI, request_id: str, **params: Any) -> int:
    """Images answered for one request with our own request id."""
    params.setdefault("model", QWEN)
    params.setdefault("prompt", f"a lighthouse for {request_id}")
    result = sdk.images.generate(
        response_format="b64_json", extra_headers={"X-Request-ID": request_id}, **params
    )
    return len(result.data or [])


def test_the_ledger_adds_up_to_what_siliconflow_billed(
    start: StartProxy, fake: FakeSiliconFlow, database_url: str
) -> None:
    fake.billing.reset()
    proxy = start(
        DATABASE_URL=database_url,
        ALLOW_CLIENT_KEYS=KEY,
        UPSTREAM_RETRIES="1",
        PRICES_JSON=f'{{"{UNPRICED}": null}}',
    )
    with openai.OpenAI(base_url=proxy.api_base, api_key=KEY, max_retries=0) as sdk:
        assert generate(sdk, "plain") == 1
        # n=2 is two calls to Qwen-Image; one fails (a 500 may have been billed: not retried).
        fake.add_fault("status", status=500)
        assert generate(sdk, "partial", n=2) == 1
        # A 503 proves nothing was made: retried once, then made.
        fake.add_fault("status", status=503)
        assert generate(sdk, "retried") == 1
        # The client leaves mid-generation; its image is made (and billed) all the same...
        fake.configure(latency=1.5)
        with pytest.raises(openai.APITimeoutError):
            generate(sdk.with_options(timeout=0.5), "left", prompt="a patient lighthouse")
        wait_for("the proxy to see the client leave", lambda: '"left"' in proxy.log())
        fake.configure(latency=0.0)
        # ...and its retry takes that generation over instead of paying again.
        assert generate(sdk, "came-back", prompt="a patient lighthouse") == 1
        assert generate(sdk, "free", model=KOLORS, n=2) == 2
        assert generate(sdk, "unpriced", model=UNPRICED) == 1

    found = wait_for_rows(database_url, 7)
    ledger_rows = by_id(found)
    made: dict[str, int] = {}
    cost: dict[str, Decimal] = {}
    for row in found:
        made[row["model"]] = made.get(row["model"], 0) + row["images_made"]
        if row["cost"] is not None:
            cost[row["model"]] = cost.get(row["model"], Decimal(0)) + row["cost"]
    billed = fake.billing
    assert made == {QWEN: 4, KOLORS: 2, UNPRICED: 1}
    assert {model: billed.images(model) for model in made} == made
    assert cost == {QWEN: Decimal("1.2"), KOLORS: Decimal(0)}
    assert billed.billed(QWEN) == Decimal("1.2") and billed.billed(KOLORS) == Decimal(0)

    def summary(request_id: str) -> tuple[Any, ...]:
        row = ledger_rows[request_id]
        return tuple(
            row[name]
            for name in (
                "model",
                "images_requested",
                "images_made",
                "images_delivered",
                "images_refunded",
                "status",
                "cost",
                "charged",
                "currency",
            )
        )

    point3 = Decimal("0.3")
    assert summary("plain") == (QWEN, 1, 1, 1, 0, 200, point3, point3, "CNY")
    assert summary("partial") == (QWEN, 2, 1, 1, 1, 200, point3, point3, "CNY")
    assert summary("retried") == (QWEN, 1, 1, 1, 0, 200, point3, point3, "CNY")
    # Made (and billed) for the request that left; charged to the one that received it.
    assert summary("left") == (QWEN, 1, 1, 0, 1, 499, point3, Decimal(0), "CNY")
    assert summary("came-back") == (QWEN, 1, 0, 1, 0, 200, Decimal(0), point3, "CNY")
    assert summary("free") == (KOLORS, 2, 2, 2, 0, 200, Decimal(0), Decimal(0), "CNY")
    # Unknown is not zero.
    assert summary("unpriced") == (UNPRICED, 1, 1, 1, 0, 200, None, None, None)

    # A single key that /user/info was not asked about is an account of its own.
    account = account_label(upstream_key_label(UPSTREAM_KEY))
    for row in found:
        assert row["client"] == key_label(KEY)
        assert row["endpoint"] == "images"
        assert row["model_requested"] == row["model"]
        assert row["upstream_account"] == (account if row["images_made"] else None)
        # No key of either side is ever in a record.
        assert KEY not in repr(row) and UPSTREAM_KEY not in repr(row)
    assert ledger_rows["plain"]["size"] == "1328x1328"
    assert ledger_rows["left"]["upstream_ms"] >= 1500

    prefix = '{currency="CNY",model="Qwen/Qwen-Image"}'
    assert metric(proxy, "sfproxy_upstream_cost_total" + prefix) == pytest.approx(1.2)
    assert metric(proxy, "sfproxy_charged_total" + prefix) == pytest.approx(1.2)
    assert metric(proxy, "sfproxy_ledger_records_written_total") == 7


def test_chat_edits_and_responses_are_recorded_under_their_endpoints(
    start: StartProxy, fake: FakeSiliconFlow, database_url: str
) -> None:
    proxy = start(DATABASE_URL=database_url)
    with openai.OpenAI(base_url=proxy.api_base, api_key="unused", max_retries=0) as sdk:
        sdk.chat.completions.create(
            model=QWEN,
            messages=[{"role": "user", "content": "draw a heron"}],
            extra_headers={"X-Request-ID": "chat-1"},
        )
        stream = sdk.chat.completions.create(
            model=QWEN,
            messages=[{"role": "user", "content": "draw a crane"}],
            stream=True,
            extra_headers={"X-Request-ID": "chat-2"},
        )
        assert [chunk for chunk in stream]
        picture = generate_png()
        sdk.images.edit(
            model="Qwen/Qwen-Image-Edit",
            image=("in.png", picture, "image/png"),
            prompt="paint it blue",
            extra_headers={"X-Request-ID": "edit-1"},
        )
        sdk.responses.create(
            model=QWEN, input="draw an egret", extra_headers={"X-Request-ID": "responses-1"}
        )
    found = by_id(wait_for_rows(database_url, 4))
    assert {
        rid: (row["endpoint"], row["client"], row["images_delivered"], row["status"])
        for rid, row in found.items()
    } == {
        "chat-1": ("chat", "anonymous", 1, 200),
        "chat-2": ("chat", "anonymous", 1, 200),
        "edit-1": ("edits", "anonymous", 1, 200),
        "responses-1": ("responses", "anonymous", 1, 200),
    }


def generate_png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(out, format="PNG")
    return out.getvalue()


def launch(fake: FakeSiliconFlow, workdir: Path, **settings: str) -> ProxyProcess:
    env = {
        "SF_BASE": fake.base_url,
        "SILICONFLOW_API_KEY": UPSTREAM_KEY,
        "UPSTREAM_RETRIES": "0",
        "IMAGE_DIR": str(workdir / "images"),
        "LOG_LEVEL": "info",
        **settings,
    }
    return start_proxy(env, workdir)


def post(proxy: ProxyProcess, request_id: str, answers: dict[str, int]) -> None:
    response = httpx.post(
        proxy.api_base + "/images/generations",
        json={"model": QWEN, "prompt": f"load {request_id}", "response_format": "b64_json"},
        headers={"X-Request-ID": request_id},
        timeout=60,
    )
    answers[request_id] = response.status_code


def test_records_survive_sigterm_under_load_and_a_restart(
    fake: FakeSiliconFlow, database_url: str, tmp_path: Path
) -> None:
    proxy = launch(fake, tmp_path / "first", DATABASE_URL=database_url)
    fake.configure(latency=1.0)
    answers: dict[str, int] = {}
    ids = [f"load-{i}" for i in range(6)]
    threads = [threading.Thread(target=post, args=(proxy, rid, answers)) for rid in ids]
    try:
        for thread in threads:
            thread.start()
        wait_for("six generations at the fake", lambda: fake.stats["in_flight"] == 6)
        proxy.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(60)
        # uvicorn re-raises SIGTERM once it has shut down gracefully.
        assert proxy.process.wait(30) == -signal.SIGTERM
        assert "not written" not in proxy.log()
    finally:
        proxy.stop()
    assert answers == dict.fromkeys(ids, 200)
    # Written at shutdown, within the second the writer would otherwise have waited.
    found = rows(database_url)
    assert sorted(row["request_id"] for row in found) == ids
    assert {(row["images_delivered"], row["status"]) for row in found} == {(1, 200)}

    fake.configure(latency=0.0)
    again = launch(fake, tmp_path / "second", DATABASE_URL=database_url)
    try:
        post(again, "after-restart", answers)
        assert answers["after-restart"] == 200
        after = wait_for_rows(database_url, 7)
    finally:
        again.stop()
    assert after[:6] == found
    assert after[6]["request_id"] == "after-restart"


@contextmanager
def database_stopped(database_url: str, server: PostgresServer | None) -> Iterator[None]:
    """The database refuses the service's writes: SQLite locked by another writer, PostgreSQL
    refusing connections to the database (its open ones ended)."""
    if server is None:
        path = make_url(database_url).database
        assert path is not None
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            holder.execute("COMMIT")
            holder.close()
        return
    name = make_url(database_url).database
    server.psql(server.url(), f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    server.psql(
        server.url(),
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
    )
    try:
        yield
    finally:
        server.psql(server.url(), f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def test_requests_are_served_while_the_database_is_down_and_recorded_after(
    fake: FakeSiliconFlow, database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue("postgres_server") if "postgresql" in database_url else None
    proxy = launch(fake, tmp_path, DATABASE_URL=database_url)

    def ledger_check() -> tuple[int, str, str]:
        response = httpx.get(proxy.url + "/readyz")
        body = response.json()
        return response.status_code, body["status"], body["checks"]["ledger"]

    try:
        with database_stopped(database_url, server):
            answers: dict[str, int] = {}
            post(proxy, "while-down-1", answers)
            post(proxy, "while-down-2", answers)
            assert answers == {"while-down-1": 200, "while-down-2": 200}
            status, word, line = wait_for(
                "/readyz to show the ledger waiting",
                lambda: (check := ledger_check())[2] != "ok" and check,
            )
            # Still ready: requests are served, and their records wait.
            assert (status, word) == (200, "ready")
            assert line.startswith("database unreachable since ")
            assert " 2 record(s) waiting (" in line
            assert metric(proxy, "sfproxy_ledger_buffered_records") == 2
            if server is None:
                # SQLite still reads while locked (WAL); PostgreSQL lets nobody in.
                assert sqlite_rows(database_url) == 0
        found = wait_for_rows(database_url, 2)
        assert [row["request_id"] for row in found] == ["while-down-1", "while-down-2"]
        wait_for("/readyz to say ok again", lambda: ledger_check() == (200, "ready", "ok"))
        assert metric(proxy, "sfproxy_ledger_buffered_records") == 0
        assert metric(proxy, "sfproxy_ledger_records_dropped_total") == 0
    finally:
        proxy.stop()


def sqlite_rows(database_url: str) -> int:
    path = make_url(database_url).database
    assert path is not None
    with sqlite3.connect(path) as reader:
        return int(reader.execute("SELECT count(*) FROM ledger").fetchone()[0])


def record(request_id: str, at: datetime | None = None) -> LedgerRecord:
    return LedgerRecord(
        at=at or datetime.now(UTC),
        request_id=request_id,
        client="anonymous",
        endpoint="images",
        model_requested=None,
        model=QWEN,
        images_requested=1,
        images_delivered=1,
        images_refunded=0,
        size="1328x1328",
        status=200,
        images_made=1,
        cost=Decimal("0.3"),
        charged=Decimal("0.3"),
        currency="CNY",
    )


async def test_a_full_buffer_drops_new_records_and_counts_them(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    metrics = Metrics()
    async with (
        Database.open(database_url) as database,
        Database.open(unreachable, upgrade=False) as gone,
    ):
        writer = LedgerWriter(gone.engine, capacity=3, metrics=metrics, flush_seconds=0.05)
        writer.start()
        for n in range(5):
            writer.add(record(f"r{n}"))
        assert (writer.waiting, writer.dropped) == (3, 2)
        assert "ledger buffer full (LEDGER_BUFFER=3)" in caplog.text
        deadline = time.monotonic() + 10
        while writer.failure is None:
            assert time.monotonic() < deadline, "the writer never tried"
            await asyncio.sleep(0.02)
        assert writer.status.endswith(f"3 record(s) waiting, 2 dropped ({writer.failure})")
        # The database comes back (here: the writer is pointed at one that answers).
        writer.engine = database.engine
        while writer.waiting:
            assert time.monotonic() < deadline, writer.status
            await asyncio.sleep(0.02)
        assert writer.status == "ok"
        await writer.stop()
        async with database.engine.connect() as connection:
            written = (await connection.execute(select(ledger.c.request_id))).scalars().all()
    assert sorted(written) == ["r0", "r1", "r2"]
    assert metrics.registry.get_sample_value("sfproxy_ledger_records_dropped_total") == 2
    assert metrics.registry.get_sample_value("sfproxy_ledger_records_written_total") == 3


async def test_shutdown_logs_what_it_could_not_write(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, "sfproxy.ledger")
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    metrics = Metrics()
    async with Database.open(unreachable, upgrade=False) as gone:
        writer = LedgerWriter(gone.engine, capacity=10, metrics=metrics, flush_seconds=0.05)
        writer.start()
        writer.add(record("kept-in-the-log"))
        await writer.stop(timeout=0.5)
    lost = [r.getMessage() for r in caplog.records if "not written" in r.getMessage()]
    assert len(lost) == 1
    assert '"request_id":"kept-in-the-log"' in lost[0]
    assert metrics.registry.get_sample_value("sfproxy_ledger_records_dropped_total") == 1


async def test_retention_deletes_only_older_records(database_url: str) -> None:
    now = datetime.now(UTC)
    metrics = Metrics()
    async with Database.open(database_url) as database:
        writer = LedgerWriter(database.engine, capacity=10, metrics=metrics)
        writer.start()
        writer.add(record("old", now - timedelta(days=40)))
        writer.add(record("recent", now - timedelta(days=20)))
        await writer.stop()
        assert await delete_older_than(database.engine, now - timedelta(days=30)) == 1
        async with database.engine.connect() as connection:
            left = (await connection.execute(select(ledger.c.request_id))).scalars().all()
    assert left == ["recent"]


def test_the_fake_bills_each_model_at_its_price_over_http(fake: FakeSiliconFlow) -> None:
    control = fake.origin + "/_fake"
    assert httpx.delete(control + "/billing").json()["total"] == "0"
    try:
        prices = httpx.put(control + "/billing/prices", json={QWEN: "0.5", KOLORS: None})
        assert prices.json()["prices"][QWEN] == "0.5"
        assert httpx.put(control + "/billing/prices", json={QWEN: "-1"}).status_code == 400
        auth = {"Authorization": f"Bearer {UPSTREAM_KEY}"}
        for body in (
            {"model": QWEN, "prompt": "one"},
            {"model": KOLORS, "prompt": "two", "batch_size": 2},
        ):
            made = httpx.post(fake.base_url + "/images/generations", json=body, headers=auth)
            assert made.status_code == 200
        billing = httpx.get(control + "/billing").json()
    finally:
        fake.billing.clear_prices()
        fake.billing.reset()
    assert (billing["currency"], billing["total"]) == ("CNY", "0.5")
    assert billing["models"] == {QWEN: {"images": 1, "amount": "0.5"}}
    assert billing["unpriced"] == {KOLORS: 2}


def test_ledger_off_writes_no_record_and_still_counts_the_spend(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'sfproxy.db'}"
    proxy = launch(fake, tmp_path, DATABASE_URL=database_url, LEDGER="off")
    try:
        with openai.OpenAI(base_url=proxy.api_base, api_key="unused", max_retries=0) as sdk:
            assert generate(sdk, "off-1") == 1
            assert generate(sdk, "off-2", n=2) == 2
        prefix = '{currency="CNY",model="Qwen/Qwen-Image"}'
        assert metric(proxy, "sfproxy_charged_total" + prefix) == pytest.approx(0.9)
        assert httpx.get(proxy.url + "/readyz").json()["checks"]["ledger"] == "off"
    finally:
        # A writer that was on writes everything it holds at SIGTERM: after it, none can follow.
        proxy.stop()
    assert sqlite_rows(database_url) == 0
