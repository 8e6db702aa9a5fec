"""Calls in flight per SiliconFlow account and model, capped: in memory, or in Redis for all.

`UPSTREAM_MAX_IN_FLIGHT` (and `max_in_flight` in MODEL_LIMITS) caps the calls one account has
in flight for a model. With `REDIS_URL` the count is every instance's and worker's: each call
holds a lease in a sorted set per account and model, scored by when the lease ends, so the
slot of a call whose process died comes free by itself once `lease_seconds` pass (longer than
any call can last: the upstream timeout, and then some).

Redis failing must not stop the service: while it does not answer, this process counts its
own calls, as the images-per-minute budget fails open.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Sequence
from typing import Protocol, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .limits import REDIS_BACKOFF, REDIS_TIMEOUT

logger = logging.getLogger(__name__)

# Token of a slot counted in this process only (memory, or Redis was down when it was taken).
_LOCAL = "local:"


class CallSlots(Protocol):
    async def take(
        self, model: str, accounts: Sequence[str], cap: int, lease_seconds: float
    ) -> tuple[str, str] | None:
        """A slot of the first of `accounts` (in order) with fewer than `cap` calls of
        `model` in flight: (account, token); None when all are full."""
        ...

    async def give_back(self, model: str, account: str, token: str) -> None: ...

    async def counts(self, model: str, accounts: Sequence[str]) -> dict[str, int]:
        """Calls of `model` in flight per account, as counted now."""
        ...

    async def close(self) -> None: ...


class MemorySlots:
    """This process's calls in flight."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], int] = {}

    async def take(
        self, model: str, accounts: Sequence[str], cap: int, lease_seconds: float
    ) -> tuple[str, str] | None:
        for account in accounts:
            held = self._held.get((account, model), 0)
            if held < cap:
                self._held[account, model] = held + 1
                return account, _LOCAL
        return None

    async def give_back(self, model: str, account: str, token: str) -> None:
        held = self._held.get((account, model), 0)
        if held <= 1:
            self._held.pop((account, model), None)
        else:
            self._held[account, model] = held - 1

    async def counts(self, model: str, accounts: Sequence[str]) -> dict[str, int]:
        return {account: self._held.get((account, model), 0) for account in accounts}

    async def close(self) -> None:
        pass


# KEYS: one sorted set per account, in order of preference. ARGV: now, cap, the lease's end,
# the token, the key's TTL in ms. Expired leases are dropped first; the first set with room gets
# the token. Returns the set's index (1-based), or 0 when every one is full.
_TAKE = """
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
  if redis.call('ZCARD', key) < tonumber(ARGV[2]) then
    redis.call('ZADD', key, ARGV[3], ARGV[4])
    redis.call('PEXPIRE', key, ARGV[5])
    return i
  end
end
return 0
"""


class RedisSlots:
    def __init__(self, url: str, *, prefix: str = "sfproxy:pool:calls:") -> None:
        self._redis = aioredis.from_url(
            url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
        )
        self._take = self._redis.register_script(_TAKE)
        self._prefix = prefix
        self._local = MemorySlots()
        self._down_until = 0.0

    def _key(self, account: str, model: str) -> str:
        return f"{self._prefix}{account}:{model}"

    def _failed(self, exc: Exception) -> None:
        self._down_until = time.monotonic() + REDIS_BACKOFF
        logger.warning("calls in flight unavailable in Redis, counting this process's: %s", exc)

    async def take(
        self, model: str, accounts: Sequence[str], cap: int, lease_seconds: float
    ) -> tuple[str, str] | None:
        if time.monotonic() >= self._down_until:
            token = secrets.token_hex(8)
            now = time.time()
            try:
                index = await self._take(
                    keys=[self._key(account, model) for account in accounts],
                    args=[now, cap, now + lease_seconds, token, int(lease_seconds * 1000)],
                )
            except (RedisError, OSError) as exc:
                self._failed(exc)
            else:
                return (accounts[int(index) - 1], token) if index else None
        return await self._local.take(model, accounts, cap, lease_seconds)

    async def give_back(self, model: str, account: str, token: str) -> None:
        if token == _LOCAL:
            await self._local.give_back(model, account, token)
            return
        try:
            await self._redis.zrem(self._key(account, model), token)
        except (RedisError, OSError) as exc:
            # Its lease ends by itself; until then the account has one call less to give.
            self._failed(exc)

    async def counts(self, model: str, accounts: Sequence[str]) -> dict[str, int]:
        local = await self._local.counts(model, accounts)
        if time.monotonic() < self._down_until:
            return local
        now = time.time()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for account in accounts:
                    pipe.zcount(self._key(account, model), now, "+inf")
                shared = cast(list[int], await pipe.execute())
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return local
        return {
            account: int(count) + local[account]
            for account, count in zip(accounts, shared, strict=True)
        }

    async def close(self) -> None:
        await self._redis.aclose()
