"""Calls in flight capped per SiliconFlow account and model, and shared through Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sfproxy.fake_upstream import FakeSiliconFlow
from sfproxy.upstream_slots import CallSlots, MemorySlots, RedisSlots
from tests.support.inprocess import Running, eventually, in_process, on_loopback, service_settings
from tests.support.redis import RedisServer

QWEN = "Qwen/Qwen-Image"
A1, B1 = "sk-acct-a-key-one-0001", "sk-acct-b-key-one-0003"


@pytest.fixture
async def upstream() -> AsyncIterator[FakeSiliconFlow]:
    async with FakeSiliconFlow() as fake:
        yield fake


@pytest.fixture(params=["memory", "redis"])
async def slots(request: pytest.FixtureRequest) -> AsyncIterator[CallSlots]:
    if request.param == "memory":
        yield MemorySlots()
        return
    redis: RedisServer = request.getfixturevalue("redis")
    shared = RedisSlots(redis.url)
    yield shared
    await shared.close()


def proxy(fake: FakeSiliconFlow, tmp_path: Path, keys: list[str], **overrides: Any) -> Any:
    settings = service_settings(
        fake,
        tmp_path,
        siliconflow_api_key=None,
        siliconflow_api_keys=", ".join(keys),
        image_store="off",
        **overrides,
    )
    return in_process(settings)


async def generate(running: Running) -> httpx.Response:
    body = {"model": QWEN, "prompt": "a fox", "size": "1024x1024"}
    return await running.http.post("/v1/images/generations", json=body)


def peaks(fake: FakeSiliconFlow) -> dict[str, int]:
    return {account["id"]: account["peak_in_flight"] for account in fake.accounts.to_json()}


async def test_slots_go_to_the_first_account_with_room(slots: CallSlots) -> None:
    first = await slots.take(QWEN, ["a", "b"], 2, 60)
    second = await slots.take(QWEN, ["a", "b"], 2, 60)
    third = await slots.take(QWEN, ["a", "b"], 2, 60)
    assert [s[0] if s else None for s in (first, second, third)] == ["a", "a", "b"]
    assert await slots.counts(QWEN, ["a", "b"]) == {"a": 2, "b": 1}
    # Another model's calls are counted apart.
    assert await slots.counts("Kwai-Kolors/Kolors", ["a", "b"]) == {"a": 0, "b": 0}
    assert await slots.take(QWEN, ["b"], 1, 60) is None
    assert first is not None
    await slots.give_back(QWEN, *first)
    again = await slots.take(QWEN, ["a", "b"], 2, 60)
    assert again is not None and again[0] == "a"
    assert await slots.counts(QWEN, ["a", "b"]) == {"a": 2, "b": 1}


async def test_a_slot_its_holder_never_gave_back_comes_free_when_its_lease_ends(
    redis: RedisServer,
) -> None:
    # The holder died: its process is gone, so only the lease frees the slot.
    dead = RedisSlots(redis.url)
    alive = RedisSlots(redis.url)
    try:
        assert await dead.take(QWEN, ["a"], 1, 0.3) is not None
        assert await alive.take(QWEN, ["a"], 1, 60) is None
        deadline = time.monotonic() + 5
        taken = None
        while taken is None and time.monotonic() < deadline:
            taken = await alive.take(QWEN, ["a"], 1, 60)
            await asyncio.sleep(0.05)
        assert taken is not None and taken[0] == "a"
    finally:
        await dead.close()
        await alive.close()


async def test_redis_down_counts_this_process_calls() -> None:
    slots = RedisSlots("redis://127.0.0.1:9/0")
    try:
        first = await slots.take(QWEN, ["a"], 1, 60)
        assert first == ("a", "local:")
        assert await slots.take(QWEN, ["a"], 1, 60) is None
        await slots.give_back(QWEN, *first)
        assert await slots.counts(QWEN, ["a"]) == {"a": 0}
    finally:
        await slots.close()


async def test_the_cap_is_per_account_so_two_accounts_make_twice_as_many_at_once(
    upstream: FakeSiliconFlow, tmp_path: Path
) -> None:
    upstream.accounts.add("acct-a", keys=[A1])
    upstream.accounts.add("acct-b", keys=[B1])
    upstream.configure(latency=0.3)
    async with proxy(upstream, tmp_path, [A1, B1], upstream_max_in_flight=1) as running:
        statuses = [
            r.status_code for r in await asyncio.gather(*(generate(running) for _ in range(4)))
        ]
    assert statuses == [200] * 4
    assert peaks(upstream) == {"acct-a": 1, "acct-b": 1}
    assert upstream.stats["peak_in_flight"] == 2


@pytest.mark.parametrize("shared", [True, False])
async def test_instances_sharing_redis_share_the_cap(
    upstream: FakeSiliconFlow, tmp_path: Path, redis: RedisServer, shared: bool
) -> None:
    upstream.accounts.add("acct-a", keys=[A1])
    upstream.configure(latency=0.3)
    overrides: dict[str, Any] = {"upstream_max_in_flight": 1}
    if shared:
        overrides["redis_url"] = redis.url
    async with (
        proxy(upstream, tmp_path / "one", [A1], **overrides) as one,
        proxy(upstream, tmp_path / "two", [A1], **overrides) as two,
    ):
        answers = await asyncio.gather(*(generate(i) for i in (one, two, one, two)))
    assert [r.status_code for r in answers] == [200] * 4
    # One account, one call at a time across both instances; without Redis each counts its own.
    assert peaks(upstream) == {"acct-a": 1 if shared else 2}


async def test_a_call_waiting_for_a_slot_past_queue_timeout_is_a_429(
    upstream: FakeSiliconFlow, tmp_path: Path
) -> None:
    upstream.accounts.add("acct-a", keys=[A1])
    upstream.accounts.add("acct-b", keys=[B1])
    upstream.configure(latency=1.0)
    async with proxy(
        upstream, tmp_path, [A1, B1], upstream_max_in_flight=1, queue_timeout=0.3
    ) as running:
        answers = await asyncio.gather(*(generate(running) for _ in range(3)))
        metrics = (await running.http.get("/metrics")).text
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200, 200, 429]
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.json()["error"]["code"] == "upstream_pacing"
    assert refused.json()["error"]["message"] == (
        f"Too many requests queued for {QWEN}: its calls in flight limit (1 per SiliconFlow "
        "account) would hold this one longer than QUEUE_TIMEOUT (0.3 s). Try again in 1 s."
    )
    assert refused.headers["retry-after"] == "1"
    # Only the two calls that got a slot reached SiliconFlow.
    assert len(upstream.requests) == 2
    assert 'sfproxy_rate_limited_total{limit="upstream_pacing"} 1.0' in metrics


async def test_operators_see_the_calls_in_flight_against_the_cap(
    upstream: FakeSiliconFlow, tmp_path: Path, redis: RedisServer
) -> None:
    upstream.accounts.add("acct-a", keys=[A1])
    upstream.configure(latency=1.0)
    admin = {"Authorization": "Bearer admin-key-for-slots-01"}
    async with proxy(
        upstream,
        tmp_path,
        [A1],
        upstream_max_in_flight=2,
        redis_url=redis.url,
        admin_keys="admin-key-for-slots-01",
    ) as running:
        call = asyncio.create_task(generate(running))
        deadline = time.monotonic() + 10
        while upstream.stats["in_flight"] == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        during = (await running.http.get("/admin/upstream", headers=admin)).json()
        assert (await call).status_code == 200
        after = (await running.http.get("/admin/upstream", headers=admin)).json()
    # Every listed model has the cap; only Qwen-Image has a call.
    counts = [snapshot["accounts"][0]["calls_in_flight"] for snapshot in (during, after)]
    assert counts[0][QWEN] == {"limit": 2, "now": 1}
    assert {model for model, count in counts[0].items() if count["now"]} == {QWEN}
    assert all(count == {"limit": 2, "now": 0} for count in counts[1].values())
    assert len(counts[1]) == len(during["models"]["listed"])


async def test_a_call_waiting_for_a_slot_is_dropped_when_its_client_leaves(
    upstream: FakeSiliconFlow, tmp_path: Path
) -> None:
    upstream.accounts.add("acct-a", keys=[A1])
    upstream.configure(latency=1.0)
    settings = service_settings(
        upstream,
        tmp_path,
        siliconflow_api_key=None,
        siliconflow_api_keys=A1,
        image_store="off",
        upstream_max_in_flight=1,
    )
    async with on_loopback(settings) as running:
        pool = running.services.client.keys
        first = asyncio.create_task(generate(running))
        await eventually(lambda: upstream.stats["in_flight"] == 1, what="the first call")
        body = {"model": QWEN, "prompt": "a fox who leaves", "size": "1024x1024"}
        async with httpx.AsyncClient(base_url=running.url) as leaving:
            waiting = asyncio.create_task(leaving.post("/v1/images/generations", json=body))
            await eventually(lambda: pool.waiting(QWEN) == 1, what="the second call to wait")
            waiting.cancel()
        # The service notices the closed connection and gives up the waiting call.
        await eventually(lambda: pool.waiting(QWEN) == 0, what="the wait to end")
        assert (await first).status_code == 200
        # Had it still waited, the call would have gone out before this one.
        assert (await generate(running)).status_code == 200
    assert [r.body["prompt"] for r in upstream.requests] == ["a fox", "a fox"]
