"""When a failed upstream call may be tried again, and after how long.

A generation whose outcome is unknown may have been made and billed, so money decides: see
`RetryPolicy.allows`. Waits grow exponentially with full jitter and honour `Retry-After`.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from .errors import UpstreamError

# A Retry-After longer than this is not waited out inside a client's request.
MAX_RETRY_WAIT = 60.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often, and after which failures, a call is tried again.

    A generation whose outcome is unknown (`maybe_billed`: a timeout, a connection lost after
    the request was sent, a 500/502/504) may have been made and billed; it is tried again only
    when `retry_unsure` is set (UPSTREAM_RETRY_UNSURE). Downloads are always retried.
    """

    retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 20.0
    retry_unsure: bool = False

    def allows(self, exc: UpstreamError, attempt: int, *, paid: bool = True) -> bool:
        """Whether a call that failed with `exc` on attempt `attempt` (0-based) may go again."""
        if not exc.retryable or attempt >= self.retries:
            return False
        return not (paid and exc.maybe_billed and not self.retry_unsure)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = min(self.max_delay, self.base_delay * 2**attempt)
        # Full jitter spreads the retries of many requests that failed together.
        jittered = random.uniform(backoff / 2, backoff)
        return max(jittered, retry_after) if retry_after is not None else jittered


def retry_after_seconds(headers: Any) -> float | None:
    """`Retry-After` in seconds, given as a number or as an HTTP date (RFC 9110)."""
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())
