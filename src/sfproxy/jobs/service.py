"""`VideoJobs`: the `VideoService` every video entry point uses (the Videos API, chat, MCP).

A submit goes the corridor's way (corridor.py): the key's right to the model, the video's price
against its budgets and one image against its images-per-day limit, then one submit to
SiliconFlow through the key pool, paced as a generation is. A submit SiliconFlow refused
before accepting it (429, a bad key, a 400, 503) may go again as the generation retry policy
allows; one that timed out or dropped after it was sent is never tried again, since SiliconFlow
may have accepted and will bill it: the client gets the error and its reservation back.
The accepted job is recorded with what settling it needs, and the poller (poller.py) follows
it from there.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from ..auth import Client
from ..budgets import HeldSpend, Spend, to_micros
from ..corridor import Corridor, Endpoint
from ..errors import (
    ConflictError,
    DatabaseUnavailableError,
    InvalidRequestError,
    NotFoundError,
    UpstreamError,
)
from ..ledger import LedgerRecord, ledger_client
from ..limits import CountedReservation, Reservation
from ..observability import RequestNote
from ..pacing import ModelPacer
from ..retries import MAX_RETRY_WAIT
from ..settings import Settings
from ..settling import status_of
from ..store import ImageStore, StoredImage
from ..upstream_video import Submitted, VideoUpstream
from . import ADMIN_LABEL, JobError, Order, Variant, VideoJob, VideoRequest, VideoStatus
from .repository import JobRepository, Row, aware, now_ms

logger = logging.getLogger(__name__)


class VideoJobs:
    def __init__(
        self,
        repository: JobRepository,
        upstream: VideoUpstream,
        corridor: Corridor,
        pacer: ModelPacer,
        store: ImageStore,
        settings: Settings,
    ) -> None:
        self.repository = repository
        self.upstream = upstream
        self.corridor = corridor
        self.pacer = pacer
        self.store = store
        self.settings = settings
        self._retention = (
            settings.image_retention_days * 86400 if settings.image_retention_days else None
        )
        # Set when this instance's poller changed a job: `wait` wakes at once for those.
        self._changed: dict[str, asyncio.Event] = {}
        # Set when a job is submitted here, so the poller looks for due jobs sooner.
        self.submitted = asyncio.Event()

    async def submit(
        self, client: Client, request: VideoRequest, note: RequestNote, *, endpoint: Endpoint
    ) -> VideoJob:
        note.model = request.model
        note.model_requested = request.requested_model
        note.prompt = request.prompt
        if not self.store.keeps_images:
            # SiliconFlow's URL expires within the hour: without a store, nobody gets the video.
            raise InvalidRequestError(
                "This service keeps no files (IMAGE_STORE=off), and SiliconFlow's video URLs "
                "expire: videos need IMAGE_STORE=local or s3://…. The operator can set it.",
                param="model",
                code="videos_need_an_image_store",
            )
        spend, reservation = await self.corridor.reserve(
            client, request.model, request.requested_model, 1
        )
        work = asyncio.ensure_future(
            self._submit_and_record(client, request, note, endpoint, spend, reservation)
        )
        # Its outcome is read here, or (the caller gone) only logged: never left unretrieved.
        work.add_done_callback(_retrieved)
        # A caller that leaves (a client disconnecting) does not stop a submit under way:
        # SiliconFlow may already have the video, and bills it, so it is recorded, followed and
        # settled like any other, and its owner finds it in its list.
        return await asyncio.shield(work)

    async def _submit_and_record(
        self,
        client: Client,
        request: VideoRequest,
        note: RequestNote,
        endpoint: Endpoint,
        spend: Spend,
        reservation: Reservation,
    ) -> VideoJob:
        try:
            submitted = await self._submit(request)
        except BaseException as exc:
            await reservation.settle(0)
            await spend.settle(0)
            note.delivered, note.refunded = 0, 1
            self._record_refused(client, request, note, endpoint, status_of(exc))
            raise
        row = self._row(client, request, note, endpoint, submitted, spend, reservation)
        try:
            await self.repository.insert(row)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            # Accepted by SiliconFlow (and billed when it finishes), but nobody could follow it:
            # the client is not charged, and the operator learns which job it was.
            logger.error(
                "video job %s (SiliconFlow requestId %s) could not be recorded: %s",
                row["id"],
                submitted.request_id,
                exc.__class__.__name__,
            )
            await reservation.settle(0)
            await spend.settle(0)
            note.delivered, note.refunded = 0, 1
            self._record_refused(client, request, note, endpoint, 503)
            lost = DatabaseUnavailableError(
                "The video was submitted to SiliconFlow but could not be recorded (the database "
                "did not answer), so it cannot be followed; nothing is charged. Sending the "
                "request again would make a second video."
            )
            # A 503 invites an SDK to retry, and here a retry pays for a second video.
            lost.retries_exhausted = True
            raise lost from None
        self.corridor.metrics.video_jobs_submitted.labels(request.model).inc()
        self.submitted.set()
        return self.job_of(row)

    async def _submit(self, request: VideoRequest) -> Submitted:
        payload: dict[str, Any] = {
            "model": request.model,
            "prompt": request.prompt,
            "image_size": request.size,
        }
        if request.negative_prompt:
            payload["negative_prompt"] = request.negative_prompt
        if request.image is not None:
            payload["image"] = request.image
        if request.seed is not None:
            payload["seed"] = request.seed
        policy = self.upstream.client.retry
        deadline = time.monotonic() + self.settings.request_timeout_seconds
        attempt = 0
        while True:
            queued_at = time.monotonic()
            async with self.pacer.slot(request.model, 1):
                try:
                    submitted = await self.upstream.submit(payload, queued_at=queued_at)
                except UpstreamError as exc:
                    failure = exc
                    self.pacer.answered(request.model, exc.upstream_status == 503, exc.retry_after)
                else:
                    self.pacer.answered(request.model, False)
                    return submitted
            wait = policy.delay(attempt, failure.retry_after)
            # Only a submit SiliconFlow said it did not take; never one that may be billed.
            if (
                failure.maybe_billed
                or not policy.allows(failure, attempt, paid=False)
                or wait > min(MAX_RETRY_WAIT, deadline - time.monotonic())
            ):
                raise failure.given_up()
            attempt += 1
            self.upstream.client.note_retry("video_submit", request.model, failure, attempt, wait)
            await asyncio.sleep(wait)

    def _row(
        self,
        client: Client,
        request: VideoRequest,
        note: RequestNote,
        endpoint: Endpoint,
        submitted: Submitted,
        spend: Spend,
        reservation: Reservation,
    ) -> dict[str, Any]:
        price = self.settings.prices.of(request.model)
        now = now_ms()
        return {
            "id": "video_" + secrets.token_hex(16),
            "owner": client.label,
            "client": ledger_client(client),
            "request_id": note.request_id,
            "endpoint": endpoint,
            "model": request.model,
            "model_requested": request.requested_model,
            "prompt": request.prompt,
            "size": request.size,
            "seconds": request.seconds,
            "has_image": request.image is not None,
            "status": "queued",
            "progress": 0,
            "upstream_id": submitted.request_id,
            "upstream_account": submitted.account,
            "upstream_key": submitted.key,
            "error_code": None,
            "error_message": None,
            "video": None,
            "poster": None,
            "created_at": datetime.fromtimestamp(now / 1000, UTC),
            "started_at": None,
            "completed_at": None,
            "next_poll_ms": now + int(self.settings.video_poll_seconds * 1000),
            "polls": 0,
            "lease_owner": None,
            "lease_until_ms": 0,
            "price_micros": to_micros(price.amount) if price is not None else None,
            "currency": price.currency if price is not None else None,
            "budget_keys": list(spend.keys) if isinstance(spend, HeldSpend) else [],
            "ipd_key": reservation.key if isinstance(reservation, CountedReservation) else None,
            "ipd_token": reservation.token if isinstance(reservation, CountedReservation) else None,
            "settled": False,
        }

    def _record_refused(
        self,
        client: Client,
        request: VideoRequest,
        note: RequestNote,
        endpoint: Endpoint,
        status: int,
    ) -> None:
        """A submit that failed is a request that reached the corridor: one refunded record."""
        if self.corridor.ledger is None:
            return
        record = LedgerRecord(
            at=datetime.now(UTC),
            request_id=note.request_id,
            client=ledger_client(client),
            endpoint=endpoint,
            model_requested=request.requested_model,
            model=request.model,
            images_requested=1,
            images_delivered=0,
            images_refunded=1,
            size=request.size,
            status=status,
        )
        self.corridor.ledger.settled(record, None, None)

    async def get(self, client: Client, video_id: str) -> VideoJob:
        return self.job_of(await self._visible(client, video_id))

    async def page(
        self, client: Client, *, after: str | None, limit: int, order: Order
    ) -> tuple[list[VideoJob], bool]:
        mark = None
        if after is not None:
            try:
                mark = await self._visible(client, after)
            except NotFoundError:
                # The list exists; only its cursor is wrong (another key's, or a deleted job).
                raise InvalidRequestError(
                    f"after: no video with id {after!r} to continue the list from.",
                    param="after",
                    code="invalid_cursor",
                ) from None
        owner = None if client.label == ADMIN_LABEL else client.label
        rows = await self._read(
            self.repository.page(owner, mark, limit + 1, descending=order == "desc")
        )
        return [self.job_of(row) for row in rows[:limit]], len(rows) > limit

    async def delete(self, client: Client, video_id: str) -> VideoJob:
        row = await self._visible(client, video_id)
        job = self.job_of(row)
        if not row["settled"]:
            raise ConflictError(
                f"Video {video_id} is {job.status}: it can be deleted once it has finished "
                "(SiliconFlow cannot cancel a video, and bills it when it is made).",
                code="video_not_finished",
            )
        for name in (row["video"], row["poster"]):
            if name:
                await self.store.delete(name)
        await self._read(self.repository.delete(video_id))
        return job

    async def content(self, client: Client, video_id: str, variant: Variant) -> StoredImage:
        row = await self._visible(client, video_id)
        if row["status"] != "completed":
            raise NotFoundError(
                f"Video {video_id} is {row['status']}: its content exists once it is completed.",
                code="video_not_ready",
            )
        name = row["video"] if variant == "video" else row["poster"]
        stored = await self.store.get(name) if name else None
        if stored is None:
            raise NotFoundError(
                f"The {variant} of video {video_id} is no longer kept (IMAGE_RETENTION_DAYS).",
                code="video_content_removed",
            )
        return stored

    def poll_after_ms(self, job: VideoJob) -> int:
        floor = min(1000, int(self.settings.video_poll_seconds * 1000))
        if job.poll_at is None:
            return floor
        return max(floor, int((job.poll_at - time.time()) * 1000))

    async def wait(self, client: Client, video_id: str, *, timeout: float) -> VideoJob:
        job = await self.get(client, video_id)
        deadline = time.monotonic() + timeout
        while not job.finished:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            changed = self._changed.setdefault(video_id, asyncio.Event())
            try:
                # Woken by this instance's poller; another instance's changes are read anew
                # about every second.
                await asyncio.wait_for(changed.wait(), min(1.0, remaining))
            except TimeoutError:
                pass
            latest = await self.get(client, video_id)
            if (latest.status, latest.progress) != (job.status, job.progress):
                return latest
        return job

    def changed(self, video_id: str) -> None:
        """This instance's poller changed the job: wake whoever waits for it."""
        event = self._changed.pop(video_id, None)
        if event is not None:
            event.set()

    async def _visible(self, client: Client, video_id: str) -> Row:
        row: Row | None = await self._read(self.repository.get(video_id)) if video_id else None
        if row is None or (client.label != ADMIN_LABEL and row["owner"] != client.label):
            # Another key's job is answered as one that does not exist: ids are not disclosed.
            raise NotFoundError(f"No video with id {video_id!r}.", code="video_not_found")
        return row

    @staticmethod
    async def _read(query: Any) -> Any:
        try:
            return await query
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise DatabaseUnavailableError(
                f"The video jobs' database did not answer ({exc.__class__.__name__}); try again."
            ) from None

    def job_of(self, row: Row | dict[str, Any]) -> VideoJob:
        created = aware(row["created_at"])
        completed = aware(row["completed_at"])
        assert created is not None
        status: VideoStatus = row["status"]
        error = (
            JobError(code=row["error_code"] or "video_failed", message=row["error_message"] or "")
            if status == "failed"
            else None
        )
        expires = None
        if self._retention is not None and completed is not None and status == "completed":
            expires = int(completed.timestamp() + self._retention)
        return VideoJob(
            id=row["id"],
            owner=row["owner"],
            model=row["model"],
            status=status,
            progress=row["progress"],
            created_at=int(created.timestamp()),
            completed_at=int(completed.timestamp()) if completed is not None else None,
            size=row["size"],
            seconds=row["seconds"],
            prompt=row["prompt"],
            error=error,
            video=row["video"],
            poster=row["poster"],
            expires_at=expires,
            poll_at=None if row["settled"] else row["next_poll_ms"] / 1000,
        )


def _retrieved(work: asyncio.Future[VideoJob]) -> None:
    if not work.cancelled() and work.exception() is not None:
        logger.debug("video submit ended with %s", work.exception().__class__.__name__)
