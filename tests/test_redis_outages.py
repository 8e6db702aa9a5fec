"""Client limits in Redis through a restart and a hang: counted when possible, never stuck."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sfproxy.auth import Client, key_label

from .support.inprocess import Running, in_process, service_settings
from .support.redis import RedisServer, start_redis

KEY = "proxy-key-redis-0123456789"
CLIENT = Client(label=key_label(KEY), key=KEY)
AUTH = {"Authorization": f"Bearer {KEY}"}


def settings(fake, tmp_path, redis):
    return service_settings(
        fake,
        tmp_path,
        allow_client_keys=KEY,
        client_images_per_day=10,
        client_rpm=100,
        redis_url=redis.url,
    )


async def generate(running, **body):
    return await running.http.post(
        "/v1/images/generations", json={"prompt": "counted", **body}, headers=AUTH
    )


async def test_a_restarted_redis_still_counts_the_next_request(fake, tmp_path):
    redis = start_redis(tmp_path / "before")
    try:
        async with in_process(settings(fake, tmp_path, redis)) as running:
            assert (await generate(running)).status_code == 200
            assert await running.services.limits.images_today(CLIENT) == 1
            # The pooled connection now points at a server that is gone.
            redis.stop()
            redis = start_redis(tmp_path / "after", port=redis.port)
            assert (await generate(running)).status_code == 200
            # Retried once on a fresh connection: counted in the new server, not let through.
            assert await running.services.limits.images_today(CLIENT) == 1
    finally:
        redis.stop()


@asynccontextmanager
async def with_redis(fake, tmp_path) -> AsyncIterator[tuple[Running, RedisServer]]:
    redis = start_redis(tmp_path / "redis")
    try:
        async with in_process(settings(fake, tmp_path, redis)) as running:
            yield running, redis
    finally:
        redis.stop()


async def test_partial_refunds_are_kept_exactly_in_redis(fake, tmp_path):
    async with with_redis(fake, tmp_path) as (running, _):
        fake.add_fault("status", status=400, count=1)
        response = await generate(running, model="Qwen/Qwen-Image", n=3)
        assert len(response.json()["data"]) == 2
        assert await running.services.limits.images_today(CLIENT) == 2


async def test_a_hung_redis_costs_a_request_one_timeout_at_most(fake, tmp_path):
    async with with_redis(fake, tmp_path) as (running, redis):
        assert (await generate(running)).status_code == 200
        os.kill(redis.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            # Limits fail open: served, uncounted, after one Redis timeout (2 s), not three.
            assert (await generate(running)).status_code == 200
            assert time.monotonic() - started < 3.5
            started = time.monotonic()
            assert (await generate(running)).status_code == 200
            assert time.monotonic() - started < 1.0
            ready = await running.http.get("/readyz")
            assert ready.status_code == 503
        finally:
            os.kill(redis.process.pid, signal.SIGCONT)
