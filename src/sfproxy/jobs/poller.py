"""The poller: one background task per process that follows every unfinished video job.

It claims due jobs with a short lease (repository.py), so that with several instances each job
is polled by one of them at a time, and a dead instance's jobs are taken over when its lease
ends. While it works on a job it renews the lease. Each claim is one status call with the key
of the account that submitted the job; polls back off from VIDEO_POLL_SECONDS to
VIDEO_POLL_MAX_SECONDS, and failed status calls (429, 5xx, timeouts) are simply polled again.

On `Succeed` the MP4 is downloaded at once (SiliconFlow's URL expires), checked, its poster
frame taken, both kept in the image store, and the job completed and charged. Any failure
(SiliconFlow's, an expired URL, a file that is not a video, VIDEO_TIMEOUT_SECONDS) fails the job
and gives the client everything back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from ..errors import (
    ImageStoreError,
    ResultGoneError,
    UpstreamAuthError,
    UpstreamBadResponseError,
    UpstreamError,
    UpstreamRejectedError,
)
from ..metrics import Metrics
from ..settings import Settings
from ..store import MP4, ImageStore
from ..upstream_video import VideoStatus, VideoUpstream
from .media import POSTER_TYPE, VideoFileError, poster_of
from .money import COMPLETED, JobMoney, Outcome
from .repository import JobRepository, Row, aware, now_ms
from .service import VideoJobs

logger = logging.getLogger(__name__)

# Jobs one process works on at once; the rest wait for the next claim.
CONCURRENT_JOBS = 16
# A Wan video takes minutes: progress is estimated against this, and never reaches 100.
EXPECTED_SECONDS = 180.0
# A download that failed in passing (a dropped connection) is tried this often per poll.
DOWNLOAD_ATTEMPTS = 3
# At shutdown, jobs being settled are given this long to finish settling.
SETTLE_TIMEOUT = 10.0


class JobFailed(Exception):
    """The job ends failed: `code` and `message` are what its owner sees."""

    def __init__(self, code: str, message: str, *, made: int = 0, status: int = 502) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.outcome = Outcome(delivered=0, made=made, status=status)


class VideoPoller:
    def __init__(
        self,
        repository: JobRepository,
        upstream: VideoUpstream,
        store: ImageStore,
        money: JobMoney,
        service: VideoJobs,
        settings: Settings,
        metrics: Metrics,
    ) -> None:
        self.repository = repository
        self.upstream = upstream
        self.store = store
        self.money = money
        self.service = service
        self.settings = settings
        self.metrics = metrics
        # Who holds a lease: this process, told apart from every other instance and restart.
        self.owner = f"poller-{secrets.token_hex(8)}"
        self._working: set[asyncio.Task[None]] = set()
        self._settling: set[asyncio.Future[None]] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop claiming; jobs being worked on are left to their lease (another instance, or
        this one after a restart, takes them over)."""
        tasks = [task for task in (self._task, *self._working) if task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._settling:
            await asyncio.wait(self._settling, timeout=SETTLE_TIMEOUT)

    async def _run(self) -> None:
        tick = min(1.0, self.settings.video_poll_seconds)
        failing = False
        while True:
            try:
                await self._claim()
            except Exception as exc:  # noqa: BLE001 - a database outage: try again next tick
                if not failing:
                    logger.warning(
                        "video jobs: the database did not answer (%s); polling resumes when it "
                        "does",
                        exc.__class__.__name__,
                    )
                failing = True
            else:
                if failing:
                    logger.info("video jobs: the database answers again")
                failing = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.service.submitted.wait(), tick)
            self.service.submitted.clear()

    async def _claim(self) -> None:
        room = CONCURRENT_JOBS - len(self._working)
        if room <= 0:
            return
        rows = await self.repository.claim_due(self.owner, self.settings.video_lease_seconds, room)
        for row in rows:
            task = asyncio.create_task(self._follow(row))
            self._working.add(task)
            task.add_done_callback(self._working.discard)
        self.metrics.video_jobs_in_flight.set(await self.repository.unfinished())

    async def _follow(self, row: Row) -> None:
        """One turn of a job: poll it, and finish it or schedule its next poll."""
        current = asyncio.current_task()
        assert current is not None
        renewing = asyncio.create_task(self._renew(row["id"], current))
        try:
            try:
                await self._turn(row)
            except JobFailed as failed:
                await self._finish(row, failed.outcome, error=(failed.code, failed.message))
        except asyncio.CancelledError:
            raise
        except Exception:
            # Unforeseen, or the database failed: the job is polled again later (at the latest
            # when this lease ends), not lost.
            logger.exception("video job %s: polling failed", row["id"])
            with contextlib.suppress(Exception):
                await self._again(row, {})
        finally:
            renewing.cancel()
        self.service.changed(row["id"])

    async def _renew(self, job_id: str, turn: asyncio.Task[Any]) -> None:
        lease = self.settings.video_lease_seconds
        while True:
            await asyncio.sleep(lease / 3)
            try:
                if not await self.repository.renew(job_id, self.owner, lease):
                    row = await self.repository.get(job_id)
                    if row is not None and row["lease_owner"] not in (None, self.owner):
                        # Too slow to renew: another instance has the job now, and this
                        # turn's work (a download, say) would only be done twice.
                        logger.warning("video job %s: lease lost to another instance", job_id)
                        turn.cancel()
                    # Else this turn just finished the job, or let it go.
                    return
            except Exception as exc:  # noqa: BLE001 - the next renewal may work
                logger.warning("video job %s: lease not renewed: %s", job_id, exc)

    async def _turn(self, row: Row) -> None:
        created = aware(row["created_at"])
        assert created is not None
        age = time.time() - created.timestamp()
        key = self.upstream.key_by_label(row["upstream_key"])
        if key is None:
            raise JobFailed(
                "upstream_key_removed",
                f"The SiliconFlow key that submitted this video ({row['upstream_key']}) is no "
                "longer configured, so its status cannot be read; nothing is charged.",
            )
        try:
            status = await self.upstream.status(key, row["upstream_id"])
        except (UpstreamRejectedError, UpstreamAuthError) as exc:
            self.metrics.video_status_polls.labels("refused").inc()
            raise JobFailed(
                "upstream_status_refused",
                f"SiliconFlow refused to say how this video is going: {exc.message}",
            ) from None
        except UpstreamError as exc:
            # Reading a status costs nothing: it is read again at the next poll.
            self.metrics.video_status_polls.labels("error").inc()
            logger.info("video job %s: status not read (%s)", row["id"], exc.message)
            self._check_age(age)
            await self._again(row, {})
            return
        self.metrics.video_status_polls.labels(status.status).inc()
        if status.status == "Failed":
            raise JobFailed(
                "video_generation_failed",
                f"SiliconFlow could not make the video: {status.reason or 'no reason given'}.",
            )
        if status.status == "Succeed":
            # Even past the timeout: it is made (and billed), so it is worth delivering.
            await self._complete(row, status, age)
            return
        self._check_age(age)
        await self._again(row, self._progress(row, status))

    def _check_age(self, age: float, *, made: int = 0) -> None:
        if age > self.settings.video_timeout_seconds:
            raise JobFailed(
                "video_timeout",
                f"The video was not finished within VIDEO_TIMEOUT_SECONDS "
                f"({self.settings.video_timeout_seconds:g} s); nothing is charged.",
                made=made,
                status=504,
            )

    def _progress(self, row: Row, status: VideoStatus) -> dict[str, Any]:
        if status.status == "InQueue":
            return {"status": "queued", "progress": 0}
        started = aware(row["started_at"]) or datetime.now(UTC)
        elapsed = time.time() - started.timestamp()
        estimate = 99 * (1 - math.exp(-elapsed / EXPECTED_SECONDS))
        return {
            "status": "in_progress",
            "started_at": started,
            "progress": max(row["progress"], 1, min(99, int(estimate))),
        }

    async def _again(self, row: Row, values: dict[str, Any]) -> None:
        """Schedule the next poll (backing off) and give the lease up."""
        polls = row["polls"] + 1
        interval = min(
            self.settings.video_poll_max_seconds,
            self.settings.video_poll_seconds * 1.5 ** min(polls, 32),
        )
        values |= {
            "polls": polls,
            "next_poll_ms": now_ms() + int(interval * 1000),
            "lease_owner": None,
            "lease_until_ms": 0,
        }
        await self.repository.update(row["id"], self.owner, values)

    async def _complete(self, row: Row, status: VideoStatus, age: float) -> None:
        assert status.url is not None
        data = await self._download(status.url, row)
        if data is None:
            # Made, and billed, but not downloadable yet: tried again, within the timeout.
            self._check_age(age, made=1)
            await self._again(row, {})
            return
        try:
            poster = await poster_of(data)
        except VideoFileError as exc:
            raise JobFailed("video_unreadable", exc.message, made=1) from None
        video_name: str | None = None
        try:
            video_name = await self.store.put(data, MP4)
            poster_name = await self.store.put(poster, POSTER_TYPE)
        except ImageStoreError as exc:
            logger.warning("video job %s: not stored yet (%s)", row["id"], exc.message)
            if video_name is not None:
                with contextlib.suppress(ImageStoreError):
                    await self.store.delete(video_name)
            await self._again(row, {})
            return
        done = {
            "status": "completed",
            "progress": 100,
            "video": video_name,
            "poster": poster_name,
        }
        await self._finish(row, COMPLETED, values=done)

    async def _download(self, url: str, row: Row) -> bytes | None:
        """The MP4, or None when it could not be had this time (tried again next poll)."""
        for attempt in range(DOWNLOAD_ATTEMPTS):
            try:
                return await self.upstream.download(url)
            except ResultGoneError:
                raise JobFailed(
                    "video_url_expired",
                    "The result's URL expired before it could be downloaded: SiliconFlow made "
                    "(and billed) the video, but it is lost; nothing is charged.",
                    made=1,
                ) from None
            except UpstreamBadResponseError as exc:
                raise JobFailed("video_download_failed", exc.message, made=1) from None
            except UpstreamError as exc:
                logger.info("video job %s: download failed (%s)", row["id"], exc.message)
                if attempt + 1 < DOWNLOAD_ATTEMPTS:
                    await asyncio.sleep(0.5 * 2**attempt)
        return None

    async def _finish(
        self,
        row: Row,
        outcome: Outcome,
        *,
        values: dict[str, Any] | None = None,
        error: tuple[str, str] | None = None,
    ) -> None:
        values = dict(values or {})
        values["completed_at"] = datetime.now(UTC)
        if error is not None:
            values |= {"status": "failed", "error_code": error[0], "error_message": error[1]}
        # Not cancelled midway (a shutdown): the job's row, its record and its counters are
        # settled together, or the job is left to be finished by the next lease.
        settling = asyncio.ensure_future(self._settle(row, outcome, values))
        self._settling.add(settling)
        settling.add_done_callback(self._settling.discard)
        await asyncio.shield(settling)

    async def _settle(self, row: Row, outcome: Outcome, values: dict[str, Any]) -> None:
        finished = dict(row) | values
        record = self.money.record(finished, outcome)
        if not await self.repository.finish(row["id"], self.owner, values, record):
            # Another instance holds the job now (this one's lease ran out): it finishes it.
            for name in (values.get("video"), values.get("poster")):
                if name:
                    await self.store.delete(name)
            return
        await self.money.settle(finished, outcome)
        self.metrics.video_jobs_finished.labels(row["model"], values["status"]).inc()
        logger.info("video job %s %s: %s", row["id"], values["status"], values.get("error_message"))
