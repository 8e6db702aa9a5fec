"""Issue 12 end to end, as an operator lives it: a key with a budget made with the CLI, spent
through a running service, recorded in the ledger, and reported alike by `sfproxy usage` and
`/admin/usage` — on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import openai
import pytest

from sfproxy.fake_upstream import FakeSiliconFlow

from .conftest import StartProxy
from .test_client_keys import ADMIN, cli_create, sfproxy
from .test_ledger import wait_for_rows

QWEN = "Qwen/Qwen-Image"
KOLORS = "Kwai-Kolors/Kolors"


def test_a_cli_budget_of_0_9_yuan_buys_three_qwen_images_and_the_reports_agree(
    start: StartProxy, fake: FakeSiliconFlow, database_url: str
) -> None:
    alice = cli_create(database_url, "alice", "--daily-budget", "0.9")
    proxy = start(DATABASE_URL=database_url, ADMIN_KEYS=ADMIN)
    fake.billing.reset()
    with openai.OpenAI(base_url=proxy.api_base, api_key=alice["key"], max_retries=0) as sdk:
        for _ in range(3):
            assert len(sdk.images.generate(model=QWEN, prompt="a harbour").data) == 1
        with pytest.raises(openai.RateLimitError) as refused:
            sdk.images.generate(model=QWEN, prompt="a fourth harbour")
        # Free: the spent budget does not stop Kolors.
        assert len(sdk.images.generate(model=KOLORS, prompt="a free harbour").data) == 1
    error = refused.value.body
    assert isinstance(error, dict)
    assert (error["type"], error["code"]) == ("insufficient_quota", "budget_exceeded")
    assert "daily budget" in error["message"]
    # The fourth never reached SiliconFlow: it billed three Qwen images and one free one.
    assert fake.billing.total() == Decimal("0.9")

    rows = wait_for_rows(database_url, 4)
    assert sorted((r["model"], r["client"], str(r["charged"])) for r in rows) == sorted(
        [(QWEN, alice["id"], "0.300000")] * 3 + [(KOLORS, alice["id"], "0.000000")]
    )

    # Absolute times, so that both read the very same range.
    now = datetime.now(UTC)
    since, until = (now - timedelta(days=1)).isoformat(), (now + timedelta(minutes=1)).isoformat()
    cli = sfproxy(database_url, "usage", "--since", since, "--until", until, "--format", "json")
    assert cli.returncode == 0, cli.stderr
    endpoint = httpx.get(
        proxy.url + "/admin/usage",
        params={"since": since, "until": until, "by": "client", "format": "json"},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert endpoint.status_code == 200
    report = json.loads(cli.stdout)
    assert report == endpoint.json()
    (row,) = report["rows"]
    assert (row["requests"], row["images_delivered"]) == (4, 4)
    assert row["charged"] == {"CNY": "0.90"}
