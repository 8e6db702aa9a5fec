"""The fake's video jobs: what a submit must hold, and each job's life from queue to result.

A job is `InQueue` for `video_queue_seconds`, `InProgress` for `video_progress_seconds` (both
read when it is submitted), then `Succeed`, or `Failed` if `fail_next` marked it. Its state is
worked out from the clock whenever anyone looks, and also by a timer when it is due, so that a
job nobody polls still succeeds (and is billed) on time. Tests steer and inspect it from their
own thread (`fake.videos`):

    fake.videos.hold()          # jobs stay InProgress...
    fake.videos.release()       # ...until this: every unfinished job finishes at once
    fake.videos.fail_next(reason="content moderation", count=1)
    fake.videos.expire()        # every result URL answers 403 from now on
    fake.videos.jobs()          # one VideoJobRecord per job
"""

from __future__ import annotations

import binascii
import dataclasses
import io
import random
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image

from .billing import FakeBilling
from .clips import MAX_INPUT_PIXELS, ClipSpec, clip_spec
from .config import FakeConfig
from .validation import MAX_SEED, UNKNOWN_MODEL_CODE, InvalidRequest

JobStatus = Literal["InQueue", "InProgress", "Succeed", "Failed"]
VIDEO_SIZES = ("1280x720", "720x1280", "960x960")
# Checked on the base64 text, before anything is decoded.
MAX_INPUT_IMAGE_BYTES = 10 * 1024 * 1024
_MAX_BASE64_CHARS = (MAX_INPUT_IMAGE_BYTES + 2) // 3 * 4
# Anchored, and no two quantifiers compete for the same characters: linear in the input.
_DATA_URI = re.compile(r"data:image/[\w.+-]{1,32};base64,", re.IGNORECASE)
# The fake keeps the most recent jobs only; each holds its input image until its clip is made.
MAX_JOBS = 2000


@dataclass(frozen=True, slots=True)
class VideoSubmission:
    """A submit that passed the checks."""

    model: str
    prompt: str
    negative_prompt: str | None
    image_size: str
    image: bytes | None  # the decoded data URI
    image_url: str | None  # an http(s) URL, which the fake never fetches
    seed: int | None


def check_submission(body: Any, video_models: Collection[str]) -> VideoSubmission:
    if not isinstance(body, dict):
        raise InvalidRequest("Invalid request body: expected a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("Invalid parameter model: model is required")
    if model not in video_models:
        raise InvalidRequest(
            "Model does not exist. Please check it carefully.", code=UNKNOWN_MODEL_CODE
        )
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest("Invalid parameter prompt: prompt is required and must not be empty")
    negative_prompt = body.get("negative_prompt")
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise InvalidRequest("Invalid parameter negative_prompt: must be a string")
    image_size = body.get("image_size")
    if image_size not in VIDEO_SIZES:
        raise InvalidRequest(
            f"Invalid parameter image_size: must be one of {', '.join(VIDEO_SIZES)}"
        )
    seed = body.get("seed")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED
    ):
        raise InvalidRequest(f"Invalid parameter seed: must be an integer in [0, {MAX_SEED}]")
    image, image_url = _input_image(model, body.get("image"))
    return VideoSubmission(model, prompt, negative_prompt, image_size, image, image_url, seed)


def _input_image(model: str, value: Any) -> tuple[bytes | None, str | None]:
    # Wan's image-to-video models say so in their names; the others refuse an input image.
    if "I2V" not in model:
        if value is not None:
            raise InvalidRequest(f"Invalid parameter image: {model} does not take an image")
        return None, None
    if value is None:
        raise InvalidRequest(f"Invalid parameter image: {model} requires an input image")
    if not isinstance(value, str):
        raise InvalidRequest("Invalid parameter image: must be a data URI or an http(s) URL")
    if value.startswith(("http://", "https://")):
        return None, value
    prefix = _DATA_URI.match(value)
    if prefix is None:
        raise InvalidRequest(
            "Invalid parameter image: must be a data:image/...;base64, URI or an http(s) URL"
        )
    if len(value) - prefix.end() > _MAX_BASE64_CHARS:
        raise InvalidRequest(
            f"Invalid parameter image: larger than {MAX_INPUT_IMAGE_BYTES // (1024 * 1024)} MB"
        )
    try:
        raw = binascii.a2b_base64(value[prefix.end() :], strict_mode=True)
        # Only the header is read here; the pixels are decoded when the clip is made.
        with Image.open(io.BytesIO(raw)) as picture:
            width, height = picture.size
    except (binascii.Error, ValueError, OSError, Image.DecompressionBombError):
        raise InvalidRequest("Invalid parameter image: the data URI is not a valid image") from None
    if width * height > MAX_INPUT_PIXELS:
        raise InvalidRequest("Invalid parameter image: the image has too many pixels")
    return raw, None


@dataclass(frozen=True, slots=True)
class VideoJobRecord:
    """One job as a test sees it. `status_calls` are `time.monotonic()` readings of the owner's
    status calls; `downloads` counts the result's successful downloads."""

    request_id: str
    account: str
    model: str
    prompt: str
    negative_prompt: str | None
    image_size: str
    has_image: bool
    seed: int
    status: JobStatus
    reason: str
    status_calls: tuple[float, ...]
    downloads: int

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(slots=True)
class _Job:
    submission: VideoSubmission
    request_id: str
    account: str
    seed: int
    submitted_at: float
    queue_seconds: float
    progress_seconds: float
    file_name: str
    fail_reason: str | None
    spec: ClipSpec
    finished_at: float | None = None
    # The monotonic time the result URL expires; set when the job succeeds.
    url_expires_at: float | None = None
    expired: bool = False
    clip: bytes | None = None
    status_calls: list[float] = field(default_factory=list)
    downloads: int = 0

    @property
    def due(self) -> float:
        return self.submitted_at + self.queue_seconds + self.progress_seconds

    def status(self, now: float) -> JobStatus:
        if self.finished_at is not None:
            return "Failed" if self.fail_reason is not None else "Succeed"
        return "InQueue" if now < self.submitted_at + self.queue_seconds else "InProgress"


@dataclass(frozen=True, slots=True)
class SubmittedJob:
    """What the route needs of a new job: its id, and when and how to make its clip."""

    request_id: str
    due_in: float  # seconds until it finishes, unless held
    spec: ClipSpec | None  # None: the job will fail, so no clip is made


@dataclass(frozen=True, slots=True)
class VideoFile:
    """A result URL's file as a download finds it: `clip` is None until it is encoded."""

    request_id: str
    spec: ClipSpec
    clip: bytes | None
    expired: bool


class FakeVideos:
    """Thread-safe: the server works on its loop while tests steer from their own thread."""

    def __init__(self, config: Callable[[], FakeConfig], billing: FakeBilling) -> None:
        self._config = config
        self._billing = billing
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._by_file: dict[str, str] = {}
        self._held = False
        self._failures: list[list[Any]] = []  # [reason, jobs left]

    def submit(self, account: str, submission: VideoSubmission) -> SubmittedJob:
        config = self._config()
        spec = clip_spec(
            _size(submission.image_size),
            config.video_scale,
            config.video_fps,
            config.video_seconds,
            submission.prompt,
            submission.image,
        )
        seed = submission.seed if submission.seed is not None else random.randint(0, MAX_SEED)
        with self._lock:
            job = _Job(
                submission,
                request_id=str(uuid.uuid4()),
                account=account,
                seed=seed,
                submitted_at=time.monotonic(),
                queue_seconds=config.video_queue_seconds,
                progress_seconds=config.video_progress_seconds,
                file_name=f"{secrets.token_hex(16)}.mp4",
                fail_reason=self._take_failure(),
                spec=spec,
            )
            self._jobs[job.request_id] = job
            self._by_file[job.file_name] = job.request_id
            while len(self._jobs) > MAX_JOBS:
                oldest = next(iter(self._jobs.values()))
                del self._jobs[oldest.request_id], self._by_file[oldest.file_name]
            clip = spec if job.fail_reason is None else None
            return SubmittedJob(job.request_id, job.due - job.submitted_at, clip)

    def _take_failure(self) -> str | None:
        if not self._failures:
            return None
        reason, left = self._failures[0]
        if left <= 1:
            self._failures.pop(0)
        else:
            self._failures[0][1] = left - 1
        return str(reason)

    def status(self, request_id: str, account: str, origin: str) -> dict[str, Any] | None:
        """SiliconFlow's status answer; None for a job that does not exist or is another
        account's (the caller answers both alike, so a key learns nothing of other accounts)."""
        now = time.monotonic()
        self.settle(now)
        with self._lock:
            job = self._jobs.get(request_id)
            if job is None or job.account != account:
                return None
            job.status_calls.append(now)
            status = job.status(now)
            answer: dict[str, Any] = {"status": status, "reason": "", "results": None}
            if status == "InQueue":
                answer["position"] = 1 + sum(
                    1
                    for other in self._jobs.values()
                    if other.submitted_at < job.submitted_at and other.status(now) == "InQueue"
                )
            elif status == "Failed":
                answer["reason"] = job.fail_reason
            elif status == "Succeed":
                answer["results"] = self._results(job, origin, now)
            return answer

    def _results(self, job: _Job, origin: str, now: float) -> dict[str, Any]:
        assert job.finished_at is not None and job.url_expires_at is not None
        expires = int(time.time() + job.url_expires_at - now)
        url = (
            f"{origin}/videos/{job.file_name}?Expires={expires}&OSSAccessKeyId=fake&Signature=fake"
        )
        started = job.submitted_at + job.queue_seconds
        inference = round(max(0.0, job.finished_at - started), 3)
        return {"videos": [{"url": url}], "timings": {"inference": inference}, "seed": job.seed}

    def settle(self, now: float | None = None) -> None:
        """Finish (and bill) the jobs that are due, unless jobs are held."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._held:
                return
            for job in self._jobs.values():
                if job.finished_at is None and job.due <= now:
                    self._finish(job, job.due)

    def _finish(self, job: _Job, at: float) -> None:
        job.finished_at = at
        if job.fail_reason is None:
            job.url_expires_at = at + self._config().video_url_ttl_seconds
            # SiliconFlow bills a video when it is made; a failed job costs nothing.
            self._billing.bill(job.submission.model, 1, job.account)

    def file(self, name: str) -> VideoFile | None:
        """The job behind a result URL; None if no succeeded job has that file."""
        now = time.monotonic()
        self.settle(now)
        with self._lock:
            request_id = self._by_file.get(name)
            job = self._jobs.get(request_id) if request_id is not None else None
            if job is None or job.url_expires_at is None:
                return None
            expired = job.expired or now >= job.url_expires_at
            return VideoFile(job.request_id, job.spec, job.clip, expired)

    def attach_clip(self, request_id: str, clip: bytes) -> None:
        """Keep the encoded clip with its job, and let go of the input image."""
        with self._lock:
            job = self._jobs.get(request_id)
            if job is not None and job.clip is None:
                job.clip = clip
                job.spec = dataclasses.replace(job.spec, image=None)

    def count_download(self, request_id: str) -> None:
        with self._lock:
            job = self._jobs.get(request_id)
            if job is not None:
                job.downloads += 1

    def hold(self) -> None:
        """Keep every job from finishing (a due one stays InProgress) until `release`."""
        self.settle()
        with self._lock:
            self._held = True

    def release(self) -> None:
        """Stop holding, and finish every unfinished job now."""
        now = time.monotonic()
        with self._lock:
            self._held = False
            for job in self._jobs.values():
                if job.finished_at is None:
                    self._finish(job, now)

    @property
    def held(self) -> bool:
        with self._lock:
            return self._held

    def fail_next(self, reason: str = "Video generation failed", count: int = 1) -> None:
        """Make the next `count` submitted jobs end `Failed` with `reason`."""
        if not isinstance(reason, str) or not reason:
            raise ValueError("reason must be a non-empty string")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError("count must be an integer >= 1")
        with self._lock:
            self._failures.append([reason, count])

    def expire(self, request_id: str | None = None) -> int:
        """Make the result URLs of one job, or of all, expire now (a job not yet finished
        gets an expired URL when it succeeds); the number of jobs affected."""
        with self._lock:
            if request_id is not None and request_id not in self._jobs:
                raise ValueError(f"unknown requestId {request_id!r}")
            jobs = [self._jobs[request_id]] if request_id is not None else self._jobs.values()
            for job in jobs:
                job.expired = True
            return len(jobs)

    def jobs(self) -> list[VideoJobRecord]:
        now = time.monotonic()
        self.settle(now)
        with self._lock:
            return [_record(job, now) for job in self._jobs.values()]

    def reset(self) -> None:
        """No jobs, nothing held, no failures queued."""
        with self._lock:
            self._jobs.clear()
            self._by_file.clear()
            self._held = False
            self._failures.clear()


def _record(job: _Job, now: float) -> VideoJobRecord:
    submission = job.submission
    return VideoJobRecord(
        request_id=job.request_id,
        account=job.account,
        model=submission.model,
        prompt=submission.prompt,
        negative_prompt=submission.negative_prompt,
        image_size=submission.image_size,
        has_image=submission.image is not None or submission.image_url is not None,
        seed=job.seed,
        status=job.status(now),
        reason=(job.fail_reason or "") if job.finished_at is not None else "",
        status_calls=tuple(job.status_calls),
        downloads=job.downloads,
    )


def _size(image_size: str) -> tuple[int, int]:
    width, _, height = image_size.partition("x")
    return int(width), int(height)
