"""The one way every request for images goes: prepare, reserve, run, settle.

Every entry point (images, edits, chat streamed or not) hands the corridor an `ImageJob` and a
way to render the result. The corridor

1. **prepares** the job once: checked against the model's catalogue entry, its upstream body
   built and its calls planned (`Plan`);
2. **reserves** the planned images against the client's daily limit, and their expected cost
   against the client's budgets (429 if over either);
3. **runs** the plan as a `Flight` (see `handover.py`), or takes over an identical one whose
   client left, until it is done, the client leaves, or `REQUEST_TIMEOUT_SECONDS` pass (504);
4. **settles**: the client is charged for the images that were sent to it (and their price),
   and every other reserved image (and its price) is given back, whatever happened: partial
   failure, error, disconnect, cancellation or deadline; and the request's record goes to the
   ledger (`ledger.py`). A request refused before a ticket is opened (invalid, over a limit or
   a budget) has no record.

"What does a client pay for this?" is answered here and nowhere else: `Ticket.settle`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic_core import PydanticCustomError
from starlette.requests import Request
from starlette.responses import Response

from .auth import Client
from .budgets import NO_SPEND, Budgets, Spend
from .catalogue import plan_batches
from .errors import DeadlineError, InvalidRequestError
from .generate import Generation, ImageGenerator, Progress
from .handover import Flight, Flights, job_key
from .ledger import Ledger, LedgerRecord, ledger_client
from .limits import ClientLimits, Reservation
from .metrics import Metrics
from .observability import RequestNote, note_of
from .plan import INPUT_IMAGE_FIELDS, ImageJob, Plan
from .settling import CLIENT_LEFT, ClientWatch, SettlingResponse, status_of
from .validation import invalid_param

Render = Callable[[Generation], Awaitable[Response]]
# The entry point a ticket was opened for, as the ledger names it.
Endpoint = Literal["images", "edits", "chat", "responses", "mcp", "videos"]


class Corridor:
    def __init__(
        self,
        generator: ImageGenerator,
        limits: ClientLimits,
        *,
        budgets: Budgets,
        request_timeout: float,
        handover_seconds: float,
        metrics: Metrics,
        ledger: Ledger | None = None,
    ) -> None:
        self.generator = generator
        self.limits = limits
        self.budgets = budgets
        self.request_timeout = request_timeout
        self.flights = Flights(handover_seconds)
        self.metrics = metrics
        self.ledger = ledger

    def prepare(self, job: ImageJob) -> Plan:
        """Refuse, before any upstream work, what the model cannot do; plan what it can."""
        catalogue = self.generator.catalogue
        spec = catalogue.spec(job.model)
        count = len(job.images)
        if count and not spec.takes_images:
            takers = ", ".join(catalogue.image_models()) or "none are listed"
            raise InvalidRequestError(
                f"Model {job.model} does not take input images. Models that do: {takers}.",
                param="image",
                code="images_not_supported",
            )
        if count < spec.min_images:
            raise InvalidRequestError(
                f"Model {job.model} edits images: send {spec.min_images} to "
                f"{spec.max_images} input image(s) (POST /v1/images/edits, or attach one in chat).",
                param="image",
                code="image_required",
            )
        limit = min(spec.max_images or len(INPUT_IMAGE_FIELDS), len(INPUT_IMAGE_FIELDS))
        if count > limit:
            raise InvalidRequestError(
                f"Model {job.model} takes at most {limit} input image(s); {count} were sent.",
                param="image",
                code="too_many_images",
            )
        try:
            payload, size = self.generator.payload_for(job, spec)
        except PydanticCustomError as exc:
            raise invalid_param("size", exc) from None
        batches = tuple(plan_batches(spec, job.n, job.batch_size))
        return Plan(job=job, spec=spec, payload=payload, size=size, batches=batches)

    async def open(
        self, plan: Plan, client: Client, note: RequestNote, *, endpoint: Endpoint
    ) -> Ticket:
        """Reserve the plan's images and their cost: the ticket now owns that money."""
        spend, reservation = await self.reserve(
            client, plan.job.model, plan.job.requested_model, plan.requested
        )
        note.model = plan.job.model
        note.model_requested = plan.job.requested_model
        note.prompt = plan.job.prompt
        return Ticket(
            corridor=self,
            plan=plan,
            key=job_key(client.label, plan.job),
            client=ledger_client(client),
            endpoint=endpoint,
            reservation=reservation,
            spend=spend,
            note=note,
            deadline=time.monotonic() + self.request_timeout,
        )

    async def reserve(
        self, client: Client, model: str, requested_model: str | None, images: int
    ) -> tuple[Spend, Reservation]:
        """What every request (images, or a video job) holds before any upstream work: the
        key's right to the model, `images` at the model's price against its budgets, and
        against its images-per-day limit (429 if over either)."""
        # Here, because every entry point comes here with the model resolved, before any work.
        client.require_model(model, requested_model)
        spend = await self.budgets.reserve(client, model, images)
        try:
            reservation = await self.limits.reserve_images(client, images)
        except BaseException:
            await spend.settle(0)
            raise
        return spend, reservation

    async def answer(
        self, request: Request, client: Client, plan: Plan, render: Render, *, endpoint: Endpoint
    ) -> Response:
        """A whole (non-streamed) answer: generated, rendered, sent, then settled."""
        ticket = await self.open(plan, client, note_of(request), endpoint=endpoint)
        watch = ClientWatch(request)
        try:
            generation = await ticket.generation()
            response = await render(generation)
        except asyncio.CancelledError:
            if not watch.left:
                await ticket.close()
                raise
            # The client left: nobody reads an answer, and nothing is charged.
            watch.absorb_cancellation()
            await ticket.close(CLIENT_LEFT)
            return Response(status_code=CLIENT_LEFT)
        except BaseException as exc:
            watch.stop()
            await ticket.close(status_of(exc))
            raise
        return SettlingResponse(response, ticket, watch, len(generation.images))

    @staticmethod
    def stream(ticket: Ticket, response: Response) -> Response:
        """A streamed answer whose ticket is settled when the stream ends, however it ends.

        The stream's writer calls `ticket.deliver` once the images have gone out; Starlette
        cancels it when the client disconnects.
        """
        return SettlingResponse(response, ticket, None, 0)


@dataclass(slots=True)
class Ticket:
    """One request's way through the corridor, and the money it holds."""

    corridor: Corridor
    plan: Plan
    key: bytes
    client: str
    endpoint: Endpoint
    reservation: Reservation
    note: RequestNote
    deadline: float
    spend: Spend = NO_SPEND
    delivered: int = 0
    size: str | None = None
    _flight: Flight | None = None
    # The flight this ticket started: its calls' images are this request's to pay for.
    _own: Flight | None = None
    _waiting: bool = False
    _closed: bool = False

    @property
    def model(self) -> str:
        return self.plan.job.model

    async def generation(self, progress: Progress | None = None) -> Generation:
        """The images, from a new flight or one taken over; 504 at the deadline."""
        flight = self._take_over(progress)
        if flight is not None:
            await self._wait(flight)
            if flight.delivers():
                return self._claim(flight)
            # Taken over just as its last calls were cancelled: nothing in it to deliver.
            self.note.joined = None
        await self._wait(self._start(progress))
        assert self._flight is not None
        return self._claim(self._flight)

    def _take_over(self, progress: Progress | None) -> Flight | None:
        flight = self.corridor.flights.take_over(self.key)
        if flight is not None:
            self.note.joined = flight.origin
            self.corridor.metrics.handovers.labels(self.model).inc()
            if progress is not None:
                progress("taking over this request's earlier generation, already under way…")
        return flight

    def _start(self, progress: Progress | None) -> Flight:
        generator = self.corridor.generator
        calls = generator.calls_for(self.plan, self.deadline, progress)
        self._own = self.corridor.flights.start(
            self.key, calls, generator.run(calls), origin=self.note.request_id
        )
        return self._own

    async def _wait(self, flight: Flight) -> None:
        self._flight, self._waiting = flight, True
        try:
            remaining = self.deadline - time.monotonic()
            done, _ = await asyncio.wait({flight.task}, timeout=max(0.0, remaining))
        except BaseException:
            self._leave()
            raise
        if not self._waiting:
            # The ticket was closed while this waited (its stream ended): take nothing.
            raise asyncio.CancelledError
        if not done:
            self._leave()
            raise DeadlineError(
                f"The images were not ready within REQUEST_TIMEOUT_SECONDS "
                f"({self.corridor.request_timeout:g} s). Any image still being made is kept: "
                "sending the same request again takes it over instead of paying twice."
            )
        self._waiting = False

    def _claim(self, flight: Flight) -> Generation:
        generation = flight.claim()
        self._note(generation)
        return generation

    def deliver(self, images: int) -> None:
        """`images` were sent to the client: they are what it is charged for."""
        self.delivered += images

    async def close(self, status: int = 200) -> None:
        """Settle: charge what was delivered, give back the rest, record it (with the answer's
        HTTP `status`). Safe to call twice."""
        self._leave()
        if self._closed:
            return
        self._closed = True
        refunded = await self.reservation.settle(self.delivered)
        await self.spend.settle(self.delivered)
        undelivered = self.plan.requested - self.delivered
        note = self.note
        note.delivered = self.delivered
        note.refunded = refunded
        if self._flight is not None:
            note.trace_ids = self._flight.calls.trace_ids
        metrics = self.corridor.metrics
        if self.delivered:
            metrics.images_delivered.labels(self.model).inc(self.delivered)
        if undelivered > 0:
            metrics.images_refunded.labels(self.model).inc(undelivered)
        if self.corridor.ledger is not None:
            own = self._own
            self.corridor.ledger.settled(
                self._record(status, max(undelivered, 0)),
                own.calls if own is not None else None,
                own.task if own is not None else None,
            )

    def _record(self, status: int, refunded: int) -> LedgerRecord:
        job = self.plan.job
        return LedgerRecord(
            at=datetime.now(UTC),
            request_id=self.note.request_id,
            client=self.client,
            endpoint=self.endpoint,
            model_requested=job.requested_model,
            model=job.model,
            images_requested=self.plan.requested,
            images_delivered=self.delivered,
            images_refunded=refunded,
            size=self.size or self.plan.size,
            status=status,
        )

    def _leave(self) -> None:
        if self._waiting and self._flight is not None:
            self._waiting = False
            self._flight.leave()

    def _note(self, generation: Generation) -> None:
        self.size = generation.size
        note = self.note
        note.images = len(generation.images)
        note.upstream_seconds = generation.upstream_seconds
        note.queue_seconds = generation.queue_seconds
        note.failed_calls = generation.failed_calls
