"""Generations in flight, and abandoned ones kept for the retry that comes after them.

A client that times out (openai-python's `timeout=2`, a proxy's 60 s) closes its connection
and, a moment later, sends the same request again. By then SiliconFlow is making, and billing,
the first one's images. So each generation runs as a `Flight` of its own, apart from the
request that started it: when every request waiting for it has left, it is *abandoned*. Calls
not yet sent are cancelled; calls at SiliconFlow finish and their images are kept. An identical
request (same client, same job) that arrives while it runs, or up to `HANDOVER_SECONDS` after
it finished, takes it over instead of paying for new images. A generation whose images were
delivered is gone from here, so a deliberate "regenerate" makes new ones.

This is per process: with several instances, a retry that lands on another one starts anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any

import orjson

from .generate import Abandoned, Calls, Generation
from .plan import ImageJob

# Finished, abandoned generations hold their images in memory until taken over or expired.
MAX_KEPT = 64


def job_key(client_label: str, job: ImageJob) -> bytes:
    """What makes two requests identical: the same client asking for the same job."""
    digest = hashlib.sha256(client_label.encode())
    digest.update(b"\0")
    digest.update(orjson.dumps(job))
    return digest.digest()


class Flight:
    """One generation in progress, shared by the requests waiting for it."""

    def __init__(
        self,
        key: bytes,
        calls: Calls,
        work: Coroutine[Any, Any, Generation],
        *,
        origin: str,
        flights: Flights,
    ) -> None:
        self.key = key
        self.calls = calls
        self.origin = origin
        self.waiting = 0
        self.claimed = False
        self.finished_at: float | None = None
        self._flights = flights
        self.task: asyncio.Task[Generation] = asyncio.ensure_future(work)
        self.task.add_done_callback(self._finished)

    def join(self) -> None:
        self.waiting += 1
        self.calls.resume()

    def leave(self) -> None:
        """A waiting request left without the result (its client went, or its deadline)."""
        self.waiting -= 1
        if self.waiting == 0 and not self.task.done():
            self.calls.abandon()
            self._flights.note_abandoned(self)

    def delivers(self) -> bool:
        """Whether it ended with images or an error to pass on (not with its calls cancelled)."""
        task = self.task
        return task.done() and not task.cancelled() and not isinstance(task.exception(), Abandoned)

    def claim(self) -> Generation:
        """The result, for the request that will deliver it: nobody else takes it over."""
        self.claimed = True
        self._flights.forget(self)
        return self.task.result()

    def _finished(self, task: asyncio.Task[Generation]) -> None:
        self.finished_at = time.monotonic()
        self._flights.finished(self)
        if task.cancelled() or task.exception() is not None:
            # Nothing to hand over (a failure, or cancelled calls): a retry starts anew.
            self._flights.forget(self)
        elif self.waiting == 0 and not self.claimed:
            self._flights.note_abandoned(self)


class Flights:
    def __init__(self, keep_seconds: float) -> None:
        self.keep_seconds = keep_seconds
        # Strong references: the event loop keeps only weak ones to tasks.
        self._running: set[Flight] = set()
        # Abandoned flights an identical request may take over, oldest first.
        self._abandoned: OrderedDict[bytes, Flight] = OrderedDict()

    def take_over(self, key: bytes) -> Flight | None:
        """An abandoned flight for this key, running or finished recently, if there is one."""
        self._expire()
        flight = self._abandoned.pop(key, None)
        if flight is None or (flight.task.done() and not flight.delivers()):
            return None
        flight.join()
        return flight

    def start(
        self,
        key: bytes,
        calls: Calls,
        work: Coroutine[Any, Any, Generation],
        *,
        origin: str,
    ) -> Flight:
        flight = Flight(key, calls, work, origin=origin, flights=self)
        flight.join()
        self._running.add(flight)
        return flight

    def note_abandoned(self, flight: Flight) -> None:
        if not self.keep_seconds:
            return
        self._abandoned[flight.key] = flight
        self._abandoned.move_to_end(flight.key)
        while len(self._abandoned) > MAX_KEPT:
            self._abandoned.popitem(last=False)

    def finished(self, flight: Flight) -> None:
        self._running.discard(flight)

    def forget(self, flight: Flight) -> None:
        if self._abandoned.get(flight.key) is flight:
            del self._abandoned[flight.key]

    def _expire(self) -> None:
        now = time.monotonic()
        while self._abandoned:
            key, oldest = next(iter(self._abandoned.items()))
            if oldest.finished_at is None or now - oldest.finished_at <= self.keep_seconds:
                # Kept in order of abandonment: a running or fresh one ends the sweep.
                break
            del self._abandoned[key]

    @property
    def kept(self) -> int:
        """Abandoned generations an identical request could take over now."""
        return len(self._abandoned)

    @property
    def running(self) -> int:
        return len(self._running)

    async def close(self) -> None:
        """At shutdown: stop every generation still running."""
        tasks = [flight.task for flight in self._running]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
