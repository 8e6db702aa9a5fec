"""The fake's accounts: keys, `/v1/user/info`, per-account limits and balances, over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from sfproxy.fake_upstream import FakeSiliconFlow

QWEN = "Qwen/Qwen-Image"
KOLORS = "Kwai-Kolors/Kolors"
SMALL = "128x96"


@pytest.fixture
async def upstream() -> AsyncIterator[FakeSiliconFlow]:
    async with FakeSiliconFlow() as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def generate(
    http: aiohttp.ClientSession, fake: FakeSiliconFlow, key: str, model: str = QWEN
) -> tuple[int, Any, str | None]:
    body = {"model": model, "prompt": "a fox", "image_size": SMALL}
    async with http.post(
        f"{fake.base_url}/images/generations",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
    ) as response:
        text = await response.text()
        data = await response.json() if response.content_type == "application/json" else text
        return response.status, data, response.headers.get("Retry-After")


async def user_info(
    http: aiohttp.ClientSession, fake: FakeSiliconFlow, key: str
) -> tuple[int, Any]:
    async with http.get(
        f"{fake.base_url}/user/info", headers={"Authorization": f"Bearer {key}"}
    ) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


async def test_without_accounts_the_configured_key_has_a_default_account(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    status, info = await user_info(http, upstream, "sk-fake-upstream")
    assert status == 200
    assert (info["code"], info["status"], info["data"]["id"]) == (20000, True, "fake-account")
    assert await user_info(http, upstream, "sk-other") == (401, "Invalid token")


async def test_user_info_in_siliconflows_shape_with_string_balances(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.accounts.add("acct-a", keys=["sk-a1", "sk-a2"], balance=12.5, name="team")
    for key in ("sk-a1", "sk-a2"):
        status, info = await user_info(http, upstream, key)
        assert status == 200
        data = info["data"]
        assert (data["id"], data["name"], data["balance"], data["totalBalance"]) == (
            "acct-a",
            "team",
            "12.5000",
            "12.5000",
        )
        assert data["chargeBalance"] == "0.0000"
    # Once accounts exist, the default key is no longer accepted.
    assert (await generate(http, upstream, "sk-fake-upstream"))[:2] == (401, "Invalid token")


async def test_keys_of_one_account_share_its_images_per_minute(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.accounts.add("acct-a", keys=["sk-a1", "sk-a2"], images_per_minute=2)
    upstream.accounts.add("acct-b", keys=["sk-b1"], images_per_minute=2)
    assert (await generate(http, upstream, "sk-a1"))[0] == 200
    assert (await generate(http, upstream, "sk-a2"))[0] == 200
    status, body, retry_after = await generate(http, upstream, "sk-a1")
    assert status == 429
    assert body["message"].startswith("Request was rejected due to rate limiting")
    assert retry_after is not None and 1 <= int(retry_after) <= 61
    assert (await generate(http, upstream, "sk-b1"))[0] == 200
    upstream.accounts.reset_counters("acct-a")
    assert (await generate(http, upstream, "sk-a2"))[0] == 200


async def test_per_model_limit_wins_over_the_accounts(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.accounts.add(
        "acct-a", keys=["sk-a"], images_per_minute=5, model_limits={QWEN: {"ipd": 1}}
    )
    assert (await generate(http, upstream, "sk-a"))[0] == 200
    assert (await generate(http, upstream, "sk-a"))[0] == 429
    assert (await generate(http, upstream, "sk-a", KOLORS))[0] == 200


async def test_empty_balance_refuses_paid_models_but_not_kolors(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.accounts.add("acct-a", keys=["sk-a"], balance=0.3, image_price=0.3)
    assert (await generate(http, upstream, "sk-a"))[0] == 200
    status, body, _ = await generate(http, upstream, "sk-a")
    assert (status, body["code"]) == (403, 30001)
    assert "insufficient" in body["message"]
    assert (await generate(http, upstream, "sk-a", KOLORS))[0] == 200
    upstream.accounts.set_balance("acct-a", 5)
    assert (await generate(http, upstream, "sk-a"))[0] == 200


async def test_revoked_key_is_401_until_restored(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.accounts.add("acct-a", keys=["sk-a1", "sk-a2"])
    upstream.accounts.revoke("sk-a1")
    assert (await generate(http, upstream, "sk-a1"))[:2] == (401, "Invalid token")
    assert (await user_info(http, upstream, "sk-a1")) == (401, "Invalid token")
    assert (await generate(http, upstream, "sk-a2"))[0] == 200
    upstream.accounts.restore("sk-a1")
    assert (await generate(http, upstream, "sk-a1"))[0] == 200


async def test_refused_model_is_403(upstream: FakeSiliconFlow, http: aiohttp.ClientSession) -> None:
    upstream.accounts.add("acct-a", keys=["sk-a"], refused_models=[QWEN])
    status, body, _ = await generate(http, upstream, "sk-a")
    assert (status, body["code"]) == (403, 30001)
    assert "real-name verification" in body["message"]
    assert (await generate(http, upstream, "sk-a", KOLORS))[0] == 200


async def test_control_api_changes_accounts_while_running(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    control = f"{upstream.origin}/_fake"
    async with http.post(
        f"{control}/accounts", json={"id": "acct-a", "keys": ["sk-a"], "images_per_minute": 1}
    ) as response:
        assert response.status == 201
    async with http.post(f"{control}/keys", json={"key": "sk-a2", "account": "acct-a"}) as response:
        assert response.status == 201
    assert (await generate(http, upstream, "sk-a2"))[0] == 200
    assert (await generate(http, upstream, "sk-a"))[0] == 429
    async with http.delete(f"{control}/accounts/acct-a/counters") as response:
        assert response.status == 200
    async with http.patch(f"{control}/accounts/acct-a", json={"balance": 0}) as response:
        assert (response.status, (await response.json())["balance"]) == (200, 0.0)
    assert (await generate(http, upstream, "sk-a"))[0] == 403
    async with http.post(f"{control}/keys/revoke", json={"key": "sk-a"}) as response:
        assert response.status == 200
    assert (await generate(http, upstream, "sk-a"))[0] == 401
    async with http.patch(f"{control}/accounts/acct-a", json={"colour": "red"}) as response:
        assert response.status == 400
    async with http.get(f"{control}/accounts") as response:
        listed = await response.json()
    assert [(a["id"], a["keys"], a["revoked"]) for a in listed] == [
        ("acct-a", ["sk-a", "sk-a2"], ["sk-a"])
    ]
    async with http.delete(f"{control}/accounts") as response:
        assert response.status == 200
    assert (await generate(http, upstream, "sk-fake-upstream"))[0] == 200
