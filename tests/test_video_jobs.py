"""Video jobs end to end against the fake SiliconFlow over HTTP: submit, poll, download, settle.

The service runs in-process; its job service (`services.videos`) is driven directly, as every
entry point drives it. Money is checked to the fen in the ledger, the budgets and the fake's
own billing.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sfproxy.errors import (
    BudgetExceededError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
)
from sfproxy.fake_upstream import FakeSiliconFlow
from sfproxy.upstream_accounts import account_label, key_label
from tests.support.inprocess import UPSTREAM_KEY, Running, in_process, service_settings
from tests.support.videos import (
    ADMIN,
    ALICE,
    BOB,
    FAST,
    PRICE,
    T2V,
    finished,
    job_rows,
    ledger_rows,
    mp4_facts,
    note,
    video,
)

BUDGET: dict[str, Any] = {"client_daily_budget": "10", "client_images_per_day": 5}


@pytest.fixture
async def fake() -> AsyncIterator[FakeSiliconFlow]:
    async with FakeSiliconFlow(api_key=UPSTREAM_KEY) as upstream:
        yield upstream


def service(fake: FakeSiliconFlow, tmp_path: Path, **overrides: Any) -> Any:
    return in_process(service_settings(fake, tmp_path, **(FAST | BUDGET | overrides)))


async def spent_today(running: Running) -> Decimal:
    daily = (await running.services.budgets.status(ALICE))[0]
    assert daily.period == "daily"
    return daily.spent


async def written(running: Running, count: int = 1) -> list[dict[str, Any]]:
    """The ledger's rows once `count` are written (the writer flushes every second)."""
    engine = running.services.database.engine
    deadline = time.monotonic() + 10
    while len(rows := await ledger_rows(engine)) < count:
        assert time.monotonic() < deadline, f"{count} ledger row(s) not written in 10 s"
        await asyncio.sleep(0.05)
    return rows


async def test_a_video_completes_with_its_mp4_and_poster_and_is_charged_once(
    fake: FakeSiliconFlow, tmp_path: Path, database_url: str
) -> None:
    async with service(fake, tmp_path, database_url=database_url) as running:
        videos = running.services.videos
        job = await videos.submit(ALICE, video(), note(), endpoint="videos")
        assert (job.status, job.progress, job.owner) == ("queued", 0, ALICE.label)
        assert job.id.startswith("video_") and len(job.id) == len("video_") + 32
        assert videos.poll_after_ms(job) == 100
        done = await finished(videos, ALICE, job.id)
        assert (done.status, done.progress, done.error) == ("completed", 100, None)
        assert done.completed_at is not None and done.completed_at >= done.created_at
        assert (done.size, done.seconds, done.prompt) == ("1280x720", "5", "a red fox in the snow")
        mp4 = await videos.content(ALICE, job.id, "video")
        poster = await videos.content(ALICE, job.id, "thumbnail")
        assert mp4.media_type == "video/mp4" and mp4.name.endswith(".mp4")
        # The fake draws 1280x720 at an eighth of the size.
        assert mp4_facts(mp4.data) == ("h264", 160, 90)
        assert poster.media_type == "image/jpeg"
        assert Image.open(io.BytesIO(poster.data)).size == (160, 90)
        # The store serves the MP4 by its name, like any image.
        served = await running.http.get(f"/v1/files/images/{mp4.name}")
        assert (served.status_code, served.headers["content-type"]) == (200, "video/mp4")
        assert served.content == mp4.data
        assert await spent_today(running) == PRICE
        assert await running.services.limits.images_today(ALICE) == 1
        rows = await ledger_rows(running.services.database.engine)
        (upstream_job,) = fake.videos.jobs()
    assert upstream_job.downloads == 1 and upstream_job.image_size == "1280x720"
    assert fake.billing.total() == PRICE
    (row,) = rows
    assert {k: row[k] for k in ("client", "endpoint", "model", "size", "status")} == {
        "client": ALICE.label,
        "endpoint": "videos",
        "model": T2V,
        "size": "1280x720",
        "status": 200,
    }
    counts = (row["images_requested"], row["images_made"], row["images_delivered"])
    assert counts == (1, 1, 1) and row["images_refunded"] == 0
    assert (row["cost"], row["charged"], row["currency"]) == (PRICE, PRICE, "CNY")
    assert row["upstream_account"] is not None


async def test_a_failed_video_gives_everything_back(
    fake: FakeSiliconFlow, tmp_path: Path, database_url: str
) -> None:
    fake.videos.fail_next(reason="content moderation refused the prompt")
    async with service(fake, tmp_path, database_url=database_url) as running:
        videos = running.services.videos
        job = await videos.submit(ALICE, video(), note(), endpoint="chat")
        assert await spent_today(running) == PRICE
        done = await finished(videos, ALICE, job.id)
        assert done.status == "failed" and done.error is not None
        assert done.error.code == "video_generation_failed"
        assert done.error.message == (
            "SiliconFlow could not make the video: content moderation refused the prompt."
        )
        with pytest.raises(NotFoundError, match=f"Video {job.id} is failed"):
            await videos.content(ALICE, job.id, "video")
        assert await spent_today(running) == 0
        assert await running.services.limits.images_today(ALICE) == 0
        (row,) = await ledger_rows(running.services.database.engine)
    assert fake.billing.total() == 0
    assert (row["endpoint"], row["images_made"], row["images_delivered"]) == ("chat", 0, 0)
    assert (row["images_refunded"], row["charged"], row["cost"]) == (1, 0, 0)


async def test_an_expired_result_url_fails_the_job_and_the_operator_pays(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    # The result's URL expires the moment the job succeeds: before any poller can download it.
    fake.configure(video_url_ttl_seconds=0.0)
    async with service(fake, tmp_path) as running:
        videos = running.services.videos
        job = await videos.submit(ALICE, video(), note(), endpoint="videos")
        done = await finished(videos, ALICE, job.id)
        assert done.status == "failed" and done.error is not None
        assert done.error.code == "video_url_expired"
        assert done.error.message.startswith(
            "The result's URL expired before it could be downloaded"
        )
        assert await spent_today(running) == 0
        assert await running.services.limits.images_today(ALICE) == 0
        (row,) = await ledger_rows(running.services.database.engine)
    (upstream_job,) = fake.videos.jobs()
    assert upstream_job.status == "Succeed" and upstream_job.downloads == 0
    # SiliconFlow billed what it made; the client was charged nothing.
    assert fake.billing.total() == PRICE
    assert (row["images_made"], row["images_delivered"], row["images_refunded"]) == (1, 0, 1)
    assert (row["cost"], row["charged"]) == (PRICE, 0)


async def test_a_job_past_the_video_timeout_fails_and_is_refunded(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    fake.videos.hold()
    async with service(fake, tmp_path, video_timeout_seconds=0.5) as running:
        videos = running.services.videos
        job = await videos.submit(ALICE, video(), note(), endpoint="videos")
        done = await finished(videos, ALICE, job.id)
        assert done.status == "failed" and done.error is not None
        assert done.error.code == "video_timeout"
        assert done.error.message == (
            "The video was not finished within VIDEO_TIMEOUT_SECONDS (0.5 s); nothing is charged."
        )
        assert await spent_today(running) == 0
        (row,) = await ledger_rows(running.services.database.engine)
    assert (row["status"], row["images_delivered"], row["images_refunded"]) == (504, 0, 1)


async def test_only_the_owner_and_admin_keys_see_a_job(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    fake.videos.hold()
    async with service(fake, tmp_path) as running:
        videos = running.services.videos
        mine = await videos.submit(ALICE, video("one"), note(), endpoint="videos")
        theirs = await videos.submit(BOB, video("two"), note(), endpoint="videos")
        for call in (
            videos.get(BOB, mine.id),
            videos.content(BOB, mine.id, "video"),
            videos.delete(BOB, mine.id),
        ):
            with pytest.raises(NotFoundError, match=f"No video with id '{mine.id}'"):
                await call
        with pytest.raises(NotFoundError, match=f"Video {mine.id} is (queued|in_progress)"):
            await videos.content(ALICE, mine.id, "video")
        # SiliconFlow cannot cancel a video, and bills it: an unfinished one stays.
        with pytest.raises(ConflictError, match="it can be deleted once it has finished"):
            await videos.delete(ALICE, mine.id)
        assert (await videos.get(ADMIN, mine.id)).owner == ALICE.label
        own, more = await videos.page(ALICE, after=None, limit=10, order="desc")
        assert ([job.id for job in own], more) == ([mine.id], False)
        every, _ = await videos.page(ADMIN, after=None, limit=10, order="asc")
        assert [job.id for job in every] == [mine.id, theirs.id]
        fake.videos.release()
        await finished(videos, ALICE, mine.id)
        deleted = await videos.delete(ALICE, mine.id)
        assert deleted.id == mine.id and deleted.video is not None
        assert await running.services.store.get(deleted.video) is None
        with pytest.raises(NotFoundError):
            await videos.get(ALICE, mine.id)


async def test_pages_follow_creation_time_by_cursor(
    fake: FakeSiliconFlow, tmp_path: Path, database_url: str
) -> None:
    fake.videos.hold()
    async with service(fake, tmp_path, database_url=database_url) as running:
        videos = running.services.videos
        ids = [
            (await videos.submit(ALICE, video(f"clip {n}"), note(), endpoint="videos")).id
            for n in range(5)
        ]
        first, more = await videos.page(ALICE, after=None, limit=2, order="asc")
        assert ([job.id for job in first], more) == (ids[:2], True)
        rest, more = await videos.page(ALICE, after=ids[1], limit=10, order="asc")
        assert ([job.id for job in rest], more) == (ids[2:], False)
        newest, more = await videos.page(ALICE, after=ids[3], limit=2, order="desc")
        assert ([job.id for job in newest], more) == ([ids[2], ids[1]], True)
        with pytest.raises(InvalidRequestError, match="after: no video with id") as refused:
            await videos.page(BOB, after=ids[0], limit=2, order="asc")
        assert (refused.value.param, refused.value.code) == ("after", "invalid_cursor")


async def test_a_rate_limited_key_passes_the_submit_to_another_account(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    fake.accounts.add("acct-a", keys=["sk-video-a-000001"])
    fake.accounts.add("acct-b", keys=["sk-video-b-000002"])
    fake.add_fault("status", target="video_submit", status=429, retry_after=30)
    settings = {"siliconflow_api_key": None}
    settings["siliconflow_api_keys"] = "sk-video-a-000001, sk-video-b-000002"
    async with service(fake, tmp_path, **settings) as running:
        videos = running.services.videos
        job = await videos.submit(ALICE, video(), note(), endpoint="videos")
        done = await finished(videos, ALICE, job.id)
        assert done.status == "completed"
        (row,) = await job_rows(running.services.database.engine)
    submits = [r for r in fake.requests if r.path.endswith("/video/submit")]
    assert [r.status for r in submits] == [429, 200]
    assert submits[0].authorization != submits[1].authorization
    (upstream_job,) = fake.videos.jobs()
    # The job is recorded (and polled) with the key of the account that took it.
    taker = submits[1].authorization
    assert taker is not None
    assert row["upstream_key"] == key_label(taker.removeprefix("Bearer "))
    assert row["upstream_account"] == account_label(upstream_job.account)
    assert upstream_job.status == "Succeed" and upstream_job.downloads == 1


async def test_a_429_with_one_key_is_the_clients_429_with_nothing_held(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    fake.add_fault("status", target="video_submit", status=429, retry_after=3)
    async with service(fake, tmp_path) as running:
        with pytest.raises(UpstreamRateLimitError):
            await running.services.videos.submit(ALICE, video(), note(), endpoint="videos")
        assert await spent_today(running) == 0
        assert await running.services.limits.images_today(ALICE) == 0
        assert await job_rows(running.services.database.engine) == []


async def test_a_submit_that_hangs_is_never_sent_again(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    fake.add_fault("hang", target="video_submit", seconds=5)
    async with service(fake, tmp_path, upstream_timeout=0.5, upstream_retries=3) as running:
        with pytest.raises(UpstreamTimeoutError, match="did not answer within 0.5 s"):
            await running.services.videos.submit(ALICE, video(), note(), endpoint="videos")
        assert await spent_today(running) == 0
        assert await running.services.limits.images_today(ALICE) == 0
        assert await job_rows(running.services.database.engine) == []
        rows = await written(running)
    (row,) = rows
    submits = [r for r in fake.requests if r.path.endswith("/video/submit")]
    assert len(submits) == 1
    assert (row["status"], row["images_delivered"], row["images_refunded"]) == (504, 0, 1)


async def test_without_an_image_store_a_video_is_refused_before_anything_is_held(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    async with service(fake, tmp_path, image_store="off") as running:
        with pytest.raises(InvalidRequestError, match=r"IMAGE_STORE=off") as refused:
            await running.services.videos.submit(ALICE, video(), note(), endpoint="videos")
        assert refused.value.code == "videos_need_an_image_store"
        assert await spent_today(running) == 0
    assert fake.videos.jobs() == []


async def test_status_errors_and_a_dropped_download_are_tried_again(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    fake.add_fault("status", target="video_status", status=500, count=2)
    fake.add_fault("status", target="video_status", status=429, retry_after=1)
    fake.add_fault("drop", target="video_download")
    async with service(fake, tmp_path) as running:
        videos = running.services.videos
        job = await videos.submit(ALICE, video(), note(), endpoint="videos")
        done = await finished(videos, ALICE, job.id)
        assert done.status == "completed"
        assert running.metric("sfproxy_video_status_polls_total", outcome="error") == 3
        assert running.metric("sfproxy_video_status_polls_total", outcome="Succeed") == 1
    (upstream_job,) = fake.videos.jobs()
    # The faults answered the first three; by the fourth (0.65 s in at the earliest) the job
    # was done: one status call reached it, and one download, after the dropped one.
    assert len(upstream_job.status_calls) == 1 and upstream_job.downloads == 1
    assert fake.billing.total() == PRICE


async def test_progress_is_estimated_while_in_progress_and_says_when_to_poll(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    fake.videos.hold()
    async with service(fake, tmp_path, video_poll_seconds=1.5, video_poll_max_seconds=3) as running:
        videos = running.services.videos
        job = await videos.submit(ALICE, video(), note(), endpoint="videos")
        assert 1400 <= videos.poll_after_ms(job) <= 1500
        moved = await videos.wait(ALICE, job.id, timeout=10)
        assert moved.status == "in_progress" and 1 <= moved.progress <= 99
        # The next poll backs off: half again as long as the first wait.
        assert 2000 <= videos.poll_after_ms(moved) <= 2250
        assert running.metric("sfproxy_video_jobs_in_flight") == 1


async def test_a_video_over_the_budget_is_refused_before_siliconflow_sees_it(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    fake.videos.hold()
    async with service(fake, tmp_path, client_daily_budget="3") as running:
        videos = running.services.videos
        await videos.submit(ALICE, video(), note(), endpoint="videos")
        with pytest.raises(BudgetExceededError, match="this request would cost 2.00 CNY"):
            await videos.submit(ALICE, video(), note(), endpoint="videos")
        assert await spent_today(running) == PRICE
    assert len(fake.videos.jobs()) == 1


async def test_with_retention_the_files_expire_and_the_job_says_when(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    async with service(fake, tmp_path, image_retention_days=2) as running:
        videos = running.services.videos
        job = await videos.submit(ALICE, video(), note(), endpoint="videos")
        done = await finished(videos, ALICE, job.id)
        finished_ok = running.metric(
            "sfproxy_video_jobs_finished_total", model=T2V, status="completed"
        )
    assert done.completed_at is not None
    assert done.expires_at == done.completed_at + 2 * 86400
    assert finished_ok == 1


async def test_a_made_video_that_cannot_be_downloaded_in_time_fails_and_is_refunded(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    fake.add_fault("status", target="video_download", status=500, count=1000)
    async with service(fake, tmp_path, video_timeout_seconds=1.0) as running:
        videos = running.services.videos
        job = await videos.submit(ALICE, video(), note(), endpoint="videos")
        done = await finished(videos, ALICE, job.id)
        assert done.status == "failed" and done.error is not None
        assert done.error.code == "video_timeout"
        assert await spent_today(running) == 0
        (row,) = await ledger_rows(running.services.database.engine)
    # SiliconFlow made it (and billed it): the record says what the operator paid.
    assert fake.billing.total() == PRICE
    assert (row["images_made"], row["cost"], row["charged"]) == (1, PRICE, 0)
