"""Pacing upstream calls per model, so requests queue here instead of meeting SiliconFlow's 429s.

SiliconFlow limits image models per account by images per minute (IPM). Two optional caps per
model hold calls back: the number in flight (per process), and an images-per-minute budget
(shared through Redis when configured). A call that would wait longer than `QUEUE_TIMEOUT`
is refused at once with 429 and the time to retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from redis.exceptions import RedisError

from .errors import RateLimitError
from .generate import NO_WAIT
from .limits import MINUTE, WindowCounter
from .metrics import Metrics
from .settings import ModelPacing

logger = logging.getLogger(__name__)


class ModelPacer:
    def __init__(
        self,
        counter: WindowCounter,
        *,
        max_in_flight: int,
        images_per_minute: int,
        per_model: dict[str, ModelPacing],
        queue_timeout: float,
        metrics: Metrics | None = None,
    ) -> None:
        self.counter = counter
        self._default = ModelPacing(
            max_in_flight=max_in_flight, images_per_minute=images_per_minute
        )
        self._per_model = per_model
        self.queue_timeout = queue_timeout
        self._metrics = metrics
        self._slots: dict[str, asyncio.Semaphore] = {}

    def limits(self, model: str) -> tuple[int, int]:
        own = self._per_model.get(model)
        in_flight = own.max_in_flight if own and own.max_in_flight is not None else None
        budget = own.images_per_minute if own and own.images_per_minute is not None else None
        return (
            in_flight if in_flight is not None else self._default.max_in_flight or 0,
            budget if budget is not None else self._default.images_per_minute or 0,
        )

    def slot(self, model: str, images: int) -> AbstractAsyncContextManager[float]:
        """Wait until the model's limits let a call of `images` images go; give the wait."""
        max_in_flight, per_minute = self.limits(model)
        if not max_in_flight and not per_minute:
            return NO_WAIT
        return self._paced(model, images, max_in_flight, per_minute)

    @asynccontextmanager
    async def _paced(
        self, model: str, images: int, max_in_flight: int, per_minute: int
    ) -> AsyncIterator[float]:
        started = time.monotonic()
        deadline = started + self.queue_timeout
        semaphore = self._semaphore(model, max_in_flight) if max_in_flight else None
        if semaphore is not None:
            try:
                await asyncio.wait_for(semaphore.acquire(), timeout=self.queue_timeout)
            except TimeoutError:
                raise self._queue_full(model, "calls in flight", self.queue_timeout) from None
        try:
            if per_minute:
                await self._spend_budget(model, min(images, per_minute), per_minute, deadline)
            waited = time.monotonic() - started
            if self._metrics is not None:
                self._metrics.queue_seconds.labels(model).observe(waited)
            yield waited
        finally:
            if semaphore is not None:
                semaphore.release()

    def _semaphore(self, model: str, size: int) -> asyncio.Semaphore:
        semaphore = self._slots.get(model)
        if semaphore is None:
            semaphore = self._slots[model] = asyncio.Semaphore(size)
        return semaphore

    async def _spend_budget(
        self, model: str, images: int, per_minute: int, deadline: float
    ) -> None:
        while True:
            try:
                admission = await self.counter.acquire(f"ipm:{model}", images, per_minute, MINUTE)
            except (RedisError, OSError) as exc:
                logger.warning("pacing budget unavailable, call let through: %s", exc)
                return
            if admission.admitted:
                return
            remaining = deadline - time.monotonic()
            if admission.retry_after > remaining:
                raise self._queue_full(model, "images per minute", admission.retry_after)
            # A little past the moment room frees up, so the retry finds it free.
            await asyncio.sleep(admission.retry_after + 0.01)

    def _queue_full(self, model: str, limit: str, retry_after: float) -> RateLimitError:
        if self._metrics is not None:
            self._metrics.limited.labels("upstream_pacing").inc()
        return RateLimitError(
            f"Too many requests queued for {model}: its {limit} limit would hold this one "
            f"longer than QUEUE_TIMEOUT ({self.queue_timeout:g} s). Try again in "
            f"{retry_after:.0f} s.",
            retry_after=retry_after,
            code="upstream_pacing",
        )
