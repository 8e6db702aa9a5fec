"""Video jobs for tests: requests, clients, and waiting for a job to end (with a deadline)."""

from __future__ import annotations

import io
import secrets
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import av
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from sfproxy.auth import Client
from sfproxy.db.tables import ledger, video_jobs
from sfproxy.jobs import ADMIN_LABEL, VideoJob, VideoRequest
from sfproxy.jobs.repository import now_ms
from sfproxy.jobs.service import VideoJobs
from sfproxy.observability import RequestNote

T2V = "Wan-AI/Wan2.2-T2V-A14B"
I2V = "Wan-AI/Wan2.2-I2V-A14B"
PRICE = Decimal("2")
ALICE = Client(label="key-alice00001")
BOB = Client(label="key-bob0000002")
ADMIN = Client(label=ADMIN_LABEL)
# Polls fast, so that a job the fake finishes in 0.3 s is seen soon after.
FAST: dict[str, Any] = {
    "video_poll_seconds": 0.1,
    "video_poll_max_seconds": 0.2,
    "video_lease_seconds": 3,
}


def video(prompt: str = "a red fox in the snow", **fields: Any) -> VideoRequest:
    values: dict[str, Any] = {
        "model": T2V,
        "requested_model": None,
        "prompt": prompt,
        "size": "1280x720",
        "seconds": "5",
    }
    values.update(fields)
    return VideoRequest(**values)


def note() -> RequestNote:
    return RequestNote(request_id="req-" + secrets.token_hex(6))


async def finished(
    videos: VideoJobs, client: Client, video_id: str, *, timeout: float = 20.0
) -> VideoJob:
    """The job once it has completed or failed; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    job = await videos.get(client, video_id)
    while not job.finished:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"video {video_id} still {job.status} after {timeout} s")
        job = await videos.wait(client, video_id, timeout=min(1.0, remaining))
    return job


async def ledger_rows(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as connection:
        result = await connection.execute(select(ledger).order_by(ledger.c.id))
        return [dict(row) for row in result.mappings()]


async def job_rows(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as connection:
        result = await connection.execute(select(video_jobs))
        return [dict(row) for row in result.mappings()]


def mp4_facts(data: bytes) -> tuple[str, int, int]:
    """The codec, width and height of an MP4's video stream (PyAV)."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.name, stream.codec_context.width, stream.codec_context.height


def job_row(job_id: str) -> dict[str, Any]:
    """A queued job's row, due now, as the service writes one."""
    return {
        "id": job_id,
        "owner": ALICE.label,
        "client": ALICE.label,
        "request_id": "req-1",
        "endpoint": "videos",
        "model": "Wan-AI/Wan2.2-T2V-A14B",
        "model_requested": None,
        "prompt": "a lease",
        "size": "1280x720",
        "seconds": "5",
        "has_image": False,
        "status": "queued",
        "progress": 0,
        "upstream_id": "sf-1",
        "upstream_account": None,
        "upstream_key": "key-0123456789",
        "created_at": datetime.now(UTC),
        "next_poll_ms": now_ms(),
        "polls": 0,
        "lease_until_ms": 0,
        "budget_keys": [],
        "settled": False,
    }
