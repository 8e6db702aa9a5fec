"""The playground's usage panel and admin view, in headless Chromium against `sfproxy serve`.

Each test starts its own service (its own SQLite database) in front of the built-in fake, on
the .cn site: Qwen/Qwen-Image costs ¥0.3 an image and Kwai-Kolors/Kolors is free.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ViewportSize, expect

from sfproxy.db.database import Database
from sfproxy.db.tables import client_keys, ledger

from .conftest import StartProxy
from .support.browser import OpenPage, WatchedPage, system_chromium
from .support.proxy import ProxyProcess
from .test_playground_browser import generate, screenshot
from .test_usage import record

pytestmark = pytest.mark.browser

DESKTOP = ViewportSize(width=1360, height=1000)
QWEN = "Qwen/Qwen-Image"
KOLORS = "Kwai-Kolors/Kolors"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with system_chromium() as chromium:
        yield chromium


@pytest.fixture
def open_page(browser: Browser) -> Iterator[OpenPage]:
    contexts = []

    def open_at(server: ProxyProcess) -> WatchedPage:
        context = browser.new_context(viewport=DESKTOP)
        context.set_default_timeout(15_000)
        contexts.append(context)
        watched = WatchedPage(context.new_page(), origin=server.url)
        watched.watch()
        watched.page.goto(server.url + "/")
        expect(watched.page.locator("#connection")).not_to_have_attribute("data-state", "loading")
        return watched

    yield open_at
    for context in contexts:
        context.close()


def admin_auth(admin: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin}"}


def create_key(server: ProxyProcess, admin: str, **fields: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/admin/keys", json=fields, headers=admin_auth(admin), timeout=10
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def image_status(server: ProxyProcess, key: str, model: str = QWEN) -> int:
    response = httpx.post(
        f"{server.api_base}/images/generations",
        json={"model": model, "prompt": "a key from the admin view"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    return response.status_code


def test_the_keys_usage_and_budget_left_follow_each_generation(
    open_page: OpenPage, start: StartProxy
) -> None:
    admin = "admin-key-playground-usage-0123"
    server = start(ADMIN_KEYS=admin)
    alice = create_key(server, admin, name="alice", daily_budget="0.9")
    view = open_page(server)
    page = view.page
    page.fill("#key", alice["key"])
    expect(page.locator("#connection")).to_have_attribute("data-state", "ok")
    usage = page.locator("#usage")
    daily = page.locator(".budget[data-period=daily]")
    expect(usage).to_be_visible()
    expect(page.locator("#usage-name")).to_have_text("alice")
    expect(page.locator("#usage-today")).to_have_text("0 requests · 0 images · 0.00 CNY")
    expect(daily.locator(".budget-left")).to_have_text("0.90 CNY left of 0.90")
    expect(page.locator(".budget")).to_have_count(1)

    generate(page, "one priced picture", model=QWEN)
    expect(daily.locator(".budget-left")).to_have_text("0.60 CNY left of 0.90")
    expect(page.locator("#usage-today")).to_have_text("1 request · 1 image · 0.30 CNY")
    expect(page.locator("#usage-month")).to_have_text("1 request · 1 image · 0.30 CNY")

    # Kolors is free: it adds a request and an image, and costs nothing.
    generate(page, "a free picture", model=KOLORS)
    expect(page.locator("#usage-today")).to_have_text("2 requests · 2 images · 0.30 CNY")
    expect(daily.locator(".budget-left")).to_have_text("0.60 CNY left of 0.90")

    generate(page, "two more priced pictures", model=QWEN, n="2")
    expect(page.locator("#usage-today")).to_have_text("3 requests · 4 images · 0.90 CNY")
    expect(daily.locator(".budget-left")).to_have_text("0.00 CNY left of 0.90")
    expect(daily.locator(".meter")).to_have_attribute("data-spent", "0.90")
    screenshot(page, "playground-usage.png")

    # The next priced image is refused by the budget, and the panel says the same.
    page.select_option("#model", QWEN)
    page.fill("#n", "1")
    page.fill("#prompt", "one too many")
    page.click("#generate")
    expect(page.locator("#error-title")).to_have_text("Too many requests")
    expect(page.locator("#error-message")).to_contain_text("The daily budget of this key is spent")
    expect(page.locator("#usage-today")).to_have_text("3 requests · 4 images · 0.90 CNY")
    assert view.foreign_requests() == []
    # Chromium logs the answers that were refusals: the first visit's, without a key, and the
    # budget's.
    assert view.console_errors == [
        "Failed to load resource: the server responded with a status of 401 (Unauthorized)",
        "Failed to load resource: the server responded with a status of 429 (Too Many Requests)",
    ]


def test_a_public_service_shows_no_usage(open_page: OpenPage, proxy: ProxyProcess) -> None:
    view = open_page(proxy)
    expect(view.page.locator("#connection")).to_have_attribute("data-state", "ok")
    generate(view.page, "nobody's picture")
    expect(view.page.locator("#usage")).to_be_hidden()
    # Without a key the page does not ask: /v1/usage would only answer 404.
    assert not [url for url in view.requests if url.endswith("/v1/usage")]
    assert view.console_errors == []


def seed(database_url: str, records: list[dict[str, Any]]) -> None:
    """Write a key and ledger records, in a thread of their own: Playwright's sync API holds
    an event loop in this one."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(_seed(database_url, records))
        except BaseException as exc:  # noqa: BLE001 - raised again in the test's thread
            failures.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "seeding the database did not finish"
    if failures:
        raise failures[0]


async def _seed(database_url: str, records: list[dict[str, Any]]) -> None:
    now = datetime.now(UTC)
    async with Database.open(database_url) as database:
        async with database.engine.begin() as connection:
            await connection.execute(
                client_keys.insert(),
                [
                    {
                        "id": "ck_alice00000001",
                        "name": "alice <b>bold</b>",
                        "key_hash": "0" * 64,
                        "prefix": "sfp_alic",
                        "daily_budget": None,
                        "created_at": now,
                        "updated_at": now,
                    }
                ],
            )
            await connection.execute(ledger.insert(), records)


def wait_for_ledger(server: ProxyProcess, admin: str, client: str, requests: int) -> None:
    """Until /admin/usage counts `requests` of `client` today (the ledger writes in batches)."""
    deadline = time.monotonic() + 10
    while True:
        report = httpx.get(
            f"{server.url}/admin/usage",
            params={"since": "1d", "client": client},
            headers=admin_auth(admin),
            timeout=10,
        ).json()
        if report["total"]["requests"] == requests:
            return
        assert time.monotonic() < deadline, report
        time.sleep(0.05)


def test_admin_view_lists_creates_and_revokes_keys_and_charts_spend(
    open_page: OpenPage, start: StartProxy, tmp_path: Path
) -> None:
    admin = "admin-key-playground-admin-0123"
    alice, other = "ck_alice00000001", "key-0123456789"
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    day = lambda back: (today - timedelta(days=back)).date().isoformat()  # noqa: E731
    database_url = f"sqlite:///{tmp_path / 'admin.db'}"
    seed(
        database_url,
        [
            record(today - timedelta(days=29), alice, QWEN, (1, 1, 1, 0), "0.3", "0.3", "CNY"),
            record(today - timedelta(days=2), alice, QWEN, (2, 2, 2, 0), "0.6", "0.6", "CNY"),
            record(
                today - timedelta(days=2, seconds=-60),
                other,
                QWEN,
                (1, 1, 1, 0),
                "0.3",
                "0.3",
                "CNY",
            ),
            # Free images: a record, but no spend to draw.
            record(today - timedelta(days=1), other, KOLORS, (1, 1, 1, 0), "0", "0", "CNY"),
            # Before the 30 days.
            record(today - timedelta(days=31), alice, QWEN, (9, 9, 9, 0), "2.7", "2.7", "CNY"),
        ],
    )
    server = start(ADMIN_KEYS=admin, DATABASE_URL=database_url)
    view = open_page(server)
    page = view.page
    page.click("#admin > summary")
    page.fill("#admin-key", "not-the-admin-key")
    page.click("#admin-open")
    expect(page.locator("#admin-status")).to_have_text("That admin key was not accepted.")
    expect(page.locator("#admin-view")).to_be_hidden()

    page.fill("#admin-key", admin)
    page.click("#admin-open")
    expect(page.locator("#admin-view")).to_be_visible()
    rows = page.locator("#keys-body tr")
    expect(rows).to_have_count(1)
    # Text from operators is shown as text, never taken as markup.
    expect(rows.first.locator(".key-name")).to_have_text("alice <b>bold</b>")
    assert page.locator("#admin-view b").count() == 0

    page.fill("#new-key-name", "bob.page")
    page.fill("#new-key-daily", "1")
    page.click("#new-key-create")
    expect(page.locator("#new-key")).to_be_visible()
    expect(page.locator("#new-key-for")).to_have_text("bob.page")
    expect(rows).to_have_count(2)
    new_key = page.locator("#new-key-value").text_content()
    assert new_key and new_key.startswith("sk-sfp-")
    bob = page.locator("#keys-body tr", has_text="bob.page")
    bob_id = bob.get_attribute("data-id")
    assert bob_id and bob_id.startswith("ck_")
    expect(bob.locator(".key-state")).to_have_text("active")
    expect(bob.locator("td").nth(3)).to_have_text("1 a day")

    # The key shown works at once, against the API.
    assert image_status(server, new_key) == 200
    wait_for_ledger(server, admin, bob_id, 1)
    page.click("#chart-refresh")
    chart = page.locator(".chart[data-currency=CNY] svg")
    bars = chart.locator("g.bar")
    expect(bars).to_have_count(3)
    drawn = [
        (
            bars.nth(i).get_attribute("data-day"),
            bars.nth(i).get_attribute("data-total"),
            [
                (rect.get_attribute("data-client"), rect.get_attribute("data-amount"))
                for rect in bars.nth(i).locator("rect").all()
            ],
        )
        for i in range(3)
    ]
    assert drawn == [
        (day(29), "0.30", [(alice, "0.30")]),
        (day(2), "0.90", [(alice, "0.60"), (other, "0.30")]),
        (day(0), "0.30", [(bob_id, "0.30")]),
    ]
    expect(chart).to_have_attribute("data-total", "1.50")
    legend = page.locator(".chart[data-currency=CNY] .legend li")
    # One entry per client, in the order of their ids.
    shown = {bob_id: f"bob.page ({bob_id})", alice: f"alice <b>bold</b> ({alice})", other: other}
    expect(legend).to_have_text([shown[client] for client in sorted(shown)])
    # Axes: the money axis's unit, and a label every fourth day counted back from today's.
    labels = chart.locator("text.day-label").all_text_contents()
    assert labels == [day(back)[5:] for back in range(28, -1, -4)]
    expect(chart.locator(".axis text", has_text="CNY")).to_have_count(1)
    screenshot(page, "playground-admin.png", full_page=True)

    # Revoked from the page: refused at once.
    bob.get_by_role("button", name="Revoke").click()
    bob.get_by_role("button", name="Confirm revoke").click()
    expect(bob.locator(".key-state")).to_have_text("revoked")
    expect(page.locator("#admin-status")).to_have_text("Revoked bob.page.")
    assert image_status(server, new_key) == 401
    assert view.foreign_requests() == []
    # The refusals Chromium logs: the models without a client key, and the wrong admin key.
    unauthorized = (
        "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
    )
    assert view.console_errors == [unauthorized, unauthorized]
