"""Pacing upstream calls per model, so requests queue here instead of meeting SiliconFlow's 429s.

SiliconFlow limits image models per account by images per minute (IPM). Two optional caps per
model hold calls back: an images-per-minute budget, here (shared through Redis when
configured), and the number of calls in flight per account, which the key pool holds
(upstream_keys.py), since only it knows which account a call goes to. A call that would wait
longer than `QUEUE_TIMEOUT` is refused at once with 429 and the time to retry.

A model that SiliconFlow answered 503 (overloaded) `OVERLOADED_STRIKES` times in a row cools
down for `UPSTREAM_COOLDOWN_SECONDS` (or SiliconFlow's `Retry-After`): calls for it are answered
503 at once, without reaching SiliconFlow. Clients that retry whatever `x-should-retry` says
(the Vercel AI SDK retries twice) then cost one request's retries, not three times as many.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from redis.exceptions import RedisError

from .errors import RateLimitError, UpstreamUnavailableError
from .generate import NO_WAIT
from .limits import MINUTE, WindowCounter
from .metrics import Metrics
from .setting_values import ModelPacing

logger = logging.getLogger(__name__)

# Consecutive 503 answers for a model that start its cool-down: one request's worth with the
# default UPSTREAM_RETRIES=2, so a lone 503 never turns a model away for everyone.
OVERLOADED_STRIKES = 3


class ModelPacer:
    def __init__(
        self,
        counter: WindowCounter,
        *,
        max_in_flight: int,
        images_per_minute: int,
        per_model: dict[str, ModelPacing],
        queue_timeout: float,
        cooldown_seconds: float = 0.0,
        metrics: Metrics | None = None,
        accounts: Callable[[str], int] | None = None,
    ) -> None:
        self.counter = counter
        self._default = ModelPacing(
            max_in_flight=max_in_flight, images_per_minute=images_per_minute
        )
        self._per_model = per_model
        self.queue_timeout = queue_timeout
        self._metrics = metrics
        # The images-per-minute budget is SiliconFlow's per account: with several accounts
        # the model can take that many times as much (upstream_keys.py spreads the calls).
        self._accounts = accounts
        self.cooldown_seconds = cooldown_seconds
        # Model -> monotonic time until which it is left alone; 503s in a row per model.
        self._cooling: dict[str, float] = {}
        self._strikes: dict[str, int] = {}

    def limits(self, model: str) -> tuple[int, int]:
        own = self._per_model.get(model)
        in_flight = own.max_in_flight if own and own.max_in_flight is not None else None
        budget = own.images_per_minute if own and own.images_per_minute is not None else None
        return (
            in_flight if in_flight is not None else self._default.max_in_flight or 0,
            budget if budget is not None else self._default.images_per_minute or 0,
        )

    def answered(self, model: str, overloaded: bool, retry_after: float | None = None) -> None:
        """SiliconFlow answered a call for the model: overloaded (503), or not."""
        if not overloaded:
            if self._strikes:
                self._strikes.pop(model, None)
            return
        strikes = self._strikes[model] = self._strikes.get(model, 0) + 1
        seconds = retry_after if retry_after is not None else self.cooldown_seconds
        if strikes >= OVERLOADED_STRIKES and self.cooldown_seconds and seconds > 0:
            del self._strikes[model]
            self._cooling[model] = time.monotonic() + seconds
            logger.warning(
                "%s is overloaded at SiliconFlow (%d answers in a row): cooling down for %.0f s",
                model,
                strikes,
                seconds,
            )

    def slot(self, model: str, images: int) -> AbstractAsyncContextManager[float]:
        """Wait until the model's budget lets a call of `images` images go; give the wait."""
        if self._cooling:
            self._check_cooling(model)
        per_minute = self.limits(model)[1]
        if not per_minute:
            return NO_WAIT
        if self._accounts is not None:
            per_minute *= self._accounts(model)
        return self._paced(model, images, per_minute)

    @asynccontextmanager
    async def _paced(self, model: str, images: int, per_minute: int) -> AsyncIterator[float]:
        started = time.monotonic()
        await self._spend_budget(
            model, min(images, per_minute), per_minute, started + self.queue_timeout
        )
        yield time.monotonic() - started

    def _check_cooling(self, model: str) -> None:
        until = self._cooling.get(model)
        if until is None:
            return
        remaining = until - time.monotonic()
        if remaining <= 0:
            del self._cooling[model]
            return
        if self._metrics is not None:
            self._metrics.limited.labels("upstream_cooldown").inc()
        error = UpstreamUnavailableError(
            f"{model} is overloaded at SiliconFlow; this service is leaving it alone for "
            f"{remaining:.0f} s more. Try again then.",
            retry_after=remaining,
            maybe_billed=False,
            code="upstream_cooldown",
        )
        error.retries_exhausted = True
        raise error

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
