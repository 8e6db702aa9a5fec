"""Where the key pool keeps cooldowns and removals: in memory, or in Redis for every instance.

With `REDIS_URL`, an account one instance saw rate limited, or a key it found invalid, is left
alone by all of them. Redis failing must not stop the service: every change is also kept in
memory, and while Redis does not answer the pool reads what this process knows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Protocol, TypeVar, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .limits import REDIS_BACKOFF, REDIS_TIMEOUT

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Removals have no natural end (a probe ends them); this bounds what a forgotten pool leaves.
_REMOVAL_TTL_SECONDS = 7 * 86400


class PoolState(Protocol):
    """Cooldowns per account and removals per key label."""

    async def cool_down(self, account: str, seconds: float) -> None: ...

    async def cooling(self) -> dict[str, float]:
        """Account -> seconds until it is free again."""
        ...

    async def take_out(self, label: str, reason: str) -> None: ...

    async def put_back(self, label: str, reasons: Sequence[str]) -> None: ...

    async def removals(self) -> dict[str, frozenset[str]]:
        """Key label -> why it is out."""
        ...

    async def close(self) -> None: ...


class MemoryPoolState:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cooling: dict[str, float] = {}
        self._removals: dict[str, set[str]] = {}

    async def cool_down(self, account: str, seconds: float) -> None:
        until = self._clock() + seconds
        self._cooling[account] = max(until, self._cooling.get(account, 0.0))

    async def cooling(self) -> dict[str, float]:
        now = self._clock()
        for account in [a for a, until in self._cooling.items() if until <= now]:
            del self._cooling[account]
        return {account: until - now for account, until in self._cooling.items()}

    async def take_out(self, label: str, reason: str) -> None:
        self._removals.setdefault(label, set()).add(reason)

    async def put_back(self, label: str, reasons: Sequence[str]) -> None:
        held = self._removals.get(label)
        if held is None:
            return
        held.difference_update(reasons)
        if not held:
            del self._removals[label]

    async def removals(self) -> dict[str, frozenset[str]]:
        return {label: frozenset(reasons) for label, reasons in self._removals.items()}

    async def close(self) -> None:
        pass


class RedisPoolState:
    """Cooldowns as a sorted set (account scored by the wall-clock time it is free again),
    removals as a hash of `label|reason` fields: one round trip to read either."""

    def __init__(self, url: str, *, prefix: str = "sfproxy:pool:") -> None:
        self._redis = aioredis.from_url(
            url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
        )
        self._cooling_key = prefix + "cooling"
        self._removals_key = prefix + "removals"
        self._local = MemoryPoolState()
        self._down_until = 0.0

    async def _guarded(self, call: Awaitable[T]) -> T | None:
        """The call's answer, or None when Redis failed (now, or a moment ago)."""
        if time.monotonic() < self._down_until:
            if isinstance(call, Coroutine):
                call.close()
            return None
        try:
            return await call
        except (RedisError, OSError) as exc:
            self._down_until = time.monotonic() + REDIS_BACKOFF
            logger.warning("key pool state unavailable in Redis, using this process's: %s", exc)
            return None

    async def cool_down(self, account: str, seconds: float) -> None:
        await self._local.cool_down(account, seconds)
        # GT: a shorter cooldown seen later never shortens a longer one.
        await self._guarded(
            self._redis.zadd(self._cooling_key, {account: time.time() + seconds}, gt=True)
        )

    async def cooling(self) -> dict[str, float]:
        now = time.time()
        entries = await self._guarded(
            self._redis.zrangebyscore(self._cooling_key, now, "+inf", withscores=True)
        )
        if entries is None:
            return await self._local.cooling()
        pairs = cast(list[tuple[bytes, float]], entries)
        return {_text(account): float(until) - now for account, until in pairs}

    async def take_out(self, label: str, reason: str) -> None:
        await self._local.take_out(label, reason)
        field = f"{label}|{reason}"
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(self._removals_key, field, "1")
            pipe.expire(self._removals_key, _REMOVAL_TTL_SECONDS)
            await self._guarded(pipe.execute())

    async def put_back(self, label: str, reasons: Sequence[str]) -> None:
        await self._local.put_back(label, reasons)
        if reasons:
            await self._guarded(
                self._redis.hdel(self._removals_key, *(f"{label}|{r}" for r in reasons))
            )

    async def removals(self) -> dict[str, frozenset[str]]:
        fields = await self._guarded(self._redis.hkeys(self._removals_key))
        if fields is None:
            return await self._local.removals()
        removals: dict[str, set[str]] = {}
        for field in fields:
            label, _, reason = _text(field).partition("|")
            removals.setdefault(label, set()).add(reason)
        return {label: frozenset(reasons) for label, reasons in removals.items()}

    async def close(self) -> None:
        await self._redis.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
