"""Work the fake renders (images, clips) made off the event loop, once per key at a time, and
the recent results remembered: a benchmark or a test fires many identical requests together."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class RenderCache(Generic[K, V]):
    """`get(key, make)`: a remembered result, the one being made, or `make()` in a worker.

    `count` is told `made` for each `make` started and `hit` for each remembered result (and,
    with `joins_hit`, for each request that joins one being made).
    """

    def __init__(
        self,
        count: Callable[[str], None],
        *,
        made: str,
        hit: str,
        joins_hit: bool,
        cache_size: int,
        workers: int,
        thread_name: str,
    ) -> None:
        self._count = count
        self._made, self._hit, self._joins_hit = made, hit, joins_hit
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix=thread_name)
        self._cache: OrderedDict[K, V] = OrderedDict()
        self._cache_size = cache_size
        self._making: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K, make: Callable[[], V]) -> V:
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            self._count(self._hit)
            return cached
        future = self._making.get(key)
        if future is None:
            self._count(self._made)
            future = asyncio.get_running_loop().run_in_executor(self._executor, make)
            self._making[key] = future
            future.add_done_callback(lambda done: self._finished(key, done))
        elif self._joins_hit:
            self._count(self._hit)
        # Shielded: one waiter giving up must not cancel the work the others wait for.
        return await asyncio.shield(future)

    def _finished(self, key: K, future: asyncio.Future[V]) -> None:
        del self._making[key]
        if future.cancelled() or future.exception() is not None:
            return
        self._cache[key] = future.result()
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
