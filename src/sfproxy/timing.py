"""Wall time of concurrent spans: how long at least one upstream call (or wait) was running."""

from __future__ import annotations

import time


class Span:
    """`with clock.measure():` around an await; a plain class, as it runs on every call."""

    __slots__ = ("_spans", "_started")

    def __init__(self, spans: list[tuple[float, float]]) -> None:
        self._spans = spans
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(self, *exc_info: object) -> None:
        self._spans.append((self._started, time.perf_counter()))


class Clock:
    """Wall time during which at least one of the measured (concurrent) spans was running."""

    def __init__(self) -> None:
        self._spans: list[tuple[float, float]] = []

    def measure(self) -> Span:
        return Span(self._spans)

    def add(self, seconds: float) -> None:
        """A span of `seconds` that ends now."""
        if seconds > 0:
            now = time.perf_counter()
            self._spans.append((now - seconds, now))

    def total(self) -> float:
        total, reached = 0.0, float("-inf")
        for start, end in sorted(self._spans):
            if end > reached:
                total += end - max(start, reached)
                reached = end
        return total
