"""Sliding-window counters, and the client limits built on them.

One primitive serves both client limits (requests per minute, images per day per key) and the
upstream pacing budget (images per minute per model): `acquire` admits an amount if the window
has room, else says how long until it will. Counters live in memory (one process) or, with
`REDIS_URL`, in Redis, so that every instance and worker shares them.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from .auth import Client
from .errors import RateLimitError
from .metrics import Metrics
from .setting_values import ClientQuota

logger = logging.getLogger(__name__)

T = TypeVar("T")
MINUTE = 60.0
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Admission:
    """Admitted when `token` is set (keep it to refund); else retry after `retry_after` s."""

    token: str | None
    retry_after: float = 0.0

    @property
    def admitted(self) -> bool:
        return self.token is not None


class WindowCounter(Protocol):
    async def acquire(self, key: str, amount: int, limit: int, window: float) -> Admission: ...

    async def refund(self, key: str, token: str) -> None: ...

    async def adjust(self, key: str, token: str, amount: int) -> str:
        """Change an admitted entry's amount, keeping its place in the window; the new token."""
        ...

    async def used(self, key: str, window: float) -> int:
        """How much of the window is taken now."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class MemoryWindows:
    """Counters of this process only."""

    def __init__(self) -> None:
        self._entries: dict[str, deque[tuple[float, int, str]]] = {}

    async def acquire(self, key: str, amount: int, limit: int, window: float) -> Admission:
        now = time.monotonic()
        entries = self._entries.setdefault(key, deque())
        while entries and entries[0][0] <= now - window:
            entries.popleft()
        used = sum(entry[1] for entry in entries)
        if used + amount <= limit:
            token = secrets.token_hex(8)
            entries.append((now, amount, token))
            return Admission(token)
        return Admission(None, _wait(entries, used + amount - limit, window, now))

    async def refund(self, key: str, token: str) -> None:
        entries = self._entries.get(key)
        if entries:
            self._entries[key] = deque(entry for entry in entries if entry[2] != token)

    async def adjust(self, key: str, token: str, amount: int) -> str:
        entries = self._entries.get(key)
        if entries:
            self._entries[key] = deque(
                (stamp, amount, own) if own == token else (stamp, held, own)
                for stamp, held, own in entries
            )
        return token

    async def used(self, key: str, window: float) -> int:
        now = time.monotonic()
        return sum(
            amount for stamp, amount, _ in self._entries.get(key, ()) if stamp > now - window
        )

    async def ping(self) -> None:
        pass

    async def close(self) -> None:
        pass


def _wait(entries: Any, excess: int, window: float, now: float) -> float:
    """Seconds until the oldest entries have freed `excess` of the window."""
    freed = 0
    for stamp, amount, *_ in entries:
        freed += amount
        if freed >= excess:
            return max(0.0, float(stamp) + window - now)
    return window


# Atomic in Redis: prune the window, sum it, then admit or say when. Time is Redis's own, so
# instances with skewed clocks agree. Members are "token:amount".
_ACQUIRE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local amount = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local used = 0
for i = 1, #entries, 2 do
  used = used + tonumber(string.match(entries[i], ':(%d+)$'))
end
if used + amount <= limit then
  redis.call('ZADD', KEYS[1], now, ARGV[4] .. ':' .. ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
  return {1, '0'}
end
local excess = used + amount - limit
local freed = 0
for i = 1, #entries, 2 do
  freed = freed + tonumber(string.match(entries[i], ':(%d+)$'))
  if freed >= excess then
    return {0, tostring(tonumber(entries[i + 1]) + window - now)}
  end
end
return {0, tostring(window)}
"""


# Replace member "token:old" by "token:new" at the same score, if it is still in the window.
_ADJUST = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], score, ARGV[2])
return 1
"""

_USED = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local entries = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - tonumber(ARGV[1])), '+inf')
local used = 0
for i = 1, #entries do
  used = used + tonumber(string.match(entries[i], ':(%d+)$'))
end
return used
"""

# Redis answers in well under a millisecond: a call that waits this long is a hung server.
REDIS_TIMEOUT = 2.0
# After a failure, calls fail at once for this long (limits fail open), so that a request
# meets at most one timeout of a hung Redis, not one per counter it uses.
REDIS_BACKOFF = 5.0


def counter_redis(url: str) -> aioredis.Redis:
    """A client for counters that requests wait on: short timeouts, and after a Redis restart
    one more try on a new connection, instead of failing (and letting through uncounted) that
    request. Timeouts are not retried, so a hung Redis costs a request one timeout at most."""
    return aioredis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
        health_check_interval=30,
        retry=Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,)),
    )


class FailFast:
    """Awaits Redis calls; after one fails, the next ones fail at once for REDIS_BACKOFF."""

    def __init__(self) -> None:
        self._down_until = 0.0

    async def __call__(self, call: Awaitable[T]) -> T:
        if time.monotonic() < self._down_until:
            if isinstance(call, Coroutine):
                call.close()
            raise RedisConnectionError("Redis failed a moment ago; not asked again yet")
        try:
            return await call
        except (RedisError, OSError):
            self._down_until = time.monotonic() + REDIS_BACKOFF
            raise


class RedisWindows:
    """Counters shared by every instance that uses the same Redis."""

    def __init__(self, url: str, *, prefix: str = "sfproxy:") -> None:
        self._redis = counter_redis(url)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._adjust = self._redis.register_script(_ADJUST)
        self._used = self._redis.register_script(_USED)
        self._prefix = prefix
        self._guarded = FailFast()

    async def acquire(self, key: str, amount: int, limit: int, window: float) -> Admission:
        token = secrets.token_hex(8)
        admitted, wait = await self._guarded(
            self._acquire(keys=[self._prefix + key], args=[window, limit, amount, token])
        )
        if int(admitted):
            return Admission(f"{token}:{amount}")
        return Admission(None, max(0.0, float(wait)))

    async def refund(self, key: str, token: str) -> None:
        await self._guarded(self._redis.zrem(self._prefix + key, token))

    async def adjust(self, key: str, token: str, amount: int) -> str:
        adjusted = f"{token.rsplit(':', 1)[0]}:{amount}"
        await self._guarded(self._adjust(keys=[self._prefix + key], args=[token, adjusted]))
        return adjusted

    async def used(self, key: str, window: float) -> int:
        return int(await self._guarded(self._used(keys=[self._prefix + key], args=[window])))

    async def ping(self) -> None:
        # Not guarded: readiness probes are how a recovered Redis is noticed.
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()


class ClientLimits:
    """Requests per minute and images per day, per client key."""

    def __init__(
        self,
        counter: WindowCounter,
        *,
        rpm: int,
        images_per_day: int,
        overrides: dict[str, ClientQuota],
        metrics: Metrics | None = None,
    ) -> None:
        self.counter = counter
        self._metrics = metrics
        self._default = ClientQuota(rpm=rpm, images_per_day=images_per_day)
        self._overrides = overrides

    def quota(self, client: Client) -> ClientQuota:
        """CLIENT_LIMITS entries name a key or its label; unset fields fall back to defaults.
        A database key's own limits come first (an empty CLIENT_LIMITS entry stands in)."""
        override = self._overrides.get(client.label) or (
            self._overrides.get(client.key) if client.key else None
        )
        if client.rpm is not None or client.images_per_day is not None:
            override = (override or ClientQuota()).model_copy(
                update={
                    name: value
                    for name, value in (
                        ("rpm", client.rpm),
                        ("images_per_day", client.images_per_day),
                    )
                    if value is not None
                }
            )
        if override is None:
            return self._default
        return ClientQuota(
            rpm=override.rpm if override.rpm is not None else self._default.rpm,
            images_per_day=override.images_per_day
            if override.images_per_day is not None
            else self._default.images_per_day,
        )

    async def admit_request(self, client: Client) -> None:
        limit = self.quota(client).rpm
        if not limit:
            return
        try:
            admission = await self.counter.acquire(f"rpm:{client.label}", 1, limit, MINUTE)
        except (RedisError, OSError) as exc:
            # Fail open: a Redis outage must not take image generation down with it.
            logger.warning("client limits unavailable, request admitted: %s", exc)
            return
        if not admission.admitted:
            raise self._refused(
                f"Rate limit reached for this key: {limit} requests per minute. "
                f"Try again in {admission.retry_after:.0f} s.",
                retry_after=admission.retry_after,
                code="client_requests_per_minute",
            )

    async def images_today(self, client: Client) -> int:
        """Images charged to the client in the last 24 hours (reserved ones included)."""
        return await self.counter.used(f"ipd:{client.label}", DAY)

    async def reserve_images(self, client: Client, count: int) -> Reservation:
        limit = self.quota(client).images_per_day
        key = f"ipd:{client.label}"
        if not limit:
            return NO_RESERVATION
        if count > limit:
            raise self._refused(
                f"This key may generate {limit} images per day; {count} were asked for at once.",
                param="n",
                code="client_images_per_day",
            )
        try:
            admission = await self.counter.acquire(key, count, limit, DAY)
        except (RedisError, OSError) as exc:
            logger.warning("client limits unavailable, images not counted: %s", exc)
            return NO_RESERVATION
        if not admission.admitted:
            raise self._refused(
                f"Daily image limit reached for this key: {limit} images per 24 hours. "
                f"Try again in {admission.retry_after / 60:.0f} min.",
                retry_after=admission.retry_after,
                code="client_images_per_day",
            )
        assert admission.token is not None
        return CountedReservation(self.counter, key, admission.token, count)

    def _refused(
        self, message: str, *, code: str, retry_after: float | None = None, param: str | None = None
    ) -> RateLimitError:
        if self._metrics is not None:
            self._metrics.limited.labels(code).inc()
        return RateLimitError(message, code=code, retry_after=retry_after, param=param)


class Reservation(Protocol):
    """Images counted against a client's daily limit before any work, settled after it."""

    async def settle(self, delivered: int) -> int:
        """Keep `delivered` images counted and give back the rest; the number given back."""
        ...


class NoReservation:
    """Nothing was counted: no daily limit, or the counter (Redis) was unreachable."""

    async def settle(self, delivered: int) -> int:
        return 0


NO_RESERVATION = NoReservation()


class CountedReservation:
    def __init__(self, counter: WindowCounter, key: str, token: str, reserved: int) -> None:
        self.counter = counter
        self.key = key
        self.token = token
        self.reserved = reserved
        self._settled = False

    async def settle(self, delivered: int) -> int:
        if self._settled:
            return 0
        self._settled = True
        kept = min(max(delivered, 0), self.reserved)
        if kept == self.reserved:
            return 0
        try:
            if kept == 0:
                await self.counter.refund(self.key, self.token)
            else:
                await self.counter.adjust(self.key, self.token, kept)
        except (RedisError, OSError) as exc:
            logger.warning(
                "could not give back %d undelivered image(s): %s", self.reserved - kept, exc
            )
            return 0
        return self.reserved - kept


def make_counter(redis_url: str | None) -> WindowCounter:
    return RedisWindows(redis_url) if redis_url else MemoryWindows()
