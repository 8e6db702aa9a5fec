"""Counters of spend per client key and period, for budgets.py: in memory, or shared in Redis.

Amounts are integers, in millionths of the currency, so that nothing is lost to floats. A
counter that does not exist is the caller's to seed (from the ledger) before it takes from it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol, TypeVar

from .limits import FailFast, counter_redis

T = TypeVar("T")


class SpendCounter(Protocol):
    async def take(self, key: str, amount: int, limit: int) -> tuple[bool, int] | None:
        """Add `amount` if the total stays within `limit`: (admitted, spent before); None when
        the counter does not exist (seed it first)."""
        ...

    async def seed(self, key: str, spent: int, ttl: float) -> None:
        """Create the counter at `spent`, unless another request just did."""
        ...

    async def add(self, key: str, amount: int) -> None:
        """Add (or, negative, give back) an amount, if the counter still exists."""
        ...

    async def spent(self, key: str) -> int | None: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class _Counter:
    spent: int
    expires: float


class MemorySpend:
    """Counters of this process only."""

    def __init__(self) -> None:
        self._counters: dict[str, _Counter] = {}

    async def take(self, key: str, amount: int, limit: int) -> tuple[bool, int] | None:
        counter = self._live(key)
        if counter is None:
            return None
        spent = counter.spent
        if spent + amount > limit:
            return False, spent
        counter.spent = spent + amount
        return True, spent

    async def seed(self, key: str, spent: int, ttl: float) -> None:
        now = time.time()
        # Periods end: forget the counters of those that did, so memory holds one per period.
        for old in [name for name, counter in self._counters.items() if counter.expires <= now]:
            del self._counters[old]
        self._counters.setdefault(key, _Counter(spent, now + ttl))

    async def add(self, key: str, amount: int) -> None:
        counter = self._live(key)
        if counter is not None:
            counter.spent += amount

    async def spent(self, key: str) -> int | None:
        counter = self._live(key)
        return None if counter is None else counter.spent

    def _live(self, key: str) -> _Counter | None:
        counter = self._counters.get(key)
        return counter if counter is not None and counter.expires > time.time() else None

    async def close(self) -> None:
        pass


# Atomic in Redis: admit the amount only if the total stays within the limit. Amounts are
# integers (millionths), exact in Lua's doubles up to 2^53.
_TAKE = """
local spent = redis.call('GET', KEYS[1])
if not spent then
  return {-1, 0}
end
spent = tonumber(spent)
if spent + tonumber(ARGV[1]) <= tonumber(ARGV[2]) then
  redis.call('INCRBY', KEYS[1], ARGV[1])
  return {1, spent}
end
return {0, spent}
"""

# A counter that expired is not brought back without its expiry (nor below its seed).
_ADD = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('INCRBY', KEYS[1], ARGV[1])
end
return false
"""


class RedisSpend:
    """Counters shared by every instance that uses the same Redis (as limits.py's are)."""

    def __init__(self, url: str, *, prefix: str = "sfproxy:budget:") -> None:
        self._redis = counter_redis(url)
        self._take = self._redis.register_script(_TAKE)
        self._add = self._redis.register_script(_ADD)
        self._prefix = prefix
        # As limits.py's counters: after a failure, fail at once for a while, not once per call.
        self._guarded = FailFast()

    async def take(self, key: str, amount: int, limit: int) -> tuple[bool, int] | None:
        admitted, spent = await self._guarded(
            self._take(keys=[self._prefix + key], args=[amount, limit])
        )
        if int(admitted) < 0:
            return None
        return bool(int(admitted)), int(spent)

    async def seed(self, key: str, spent: int, ttl: float) -> None:
        await self._guarded(
            self._redis.set(self._prefix + key, spent, nx=True, px=max(1, int(ttl * 1000)))
        )

    async def add(self, key: str, amount: int) -> None:
        await self._guarded(self._add(keys=[self._prefix + key], args=[amount]))

    async def spent(self, key: str) -> int | None:
        value = await self._guarded(self._redis.get(self._prefix + key))
        return None if value is None else int(value)

    async def close(self) -> None:
        await self._redis.aclose()


def make_spend_counter(redis_url: str | None) -> SpendCounter:
    return RedisSpend(redis_url) if redis_url else MemorySpend()
