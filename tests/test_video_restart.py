"""Video jobs outlive their process, and several instances share them: each job is polled by
one instance at a time, downloaded once, and settled once, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from sfproxy.db.database import Database
from sfproxy.fake_upstream import FakeSiliconFlow
from sfproxy.jobs.repository import JobRepository
from sfproxy.settings import Settings
from tests.support.inprocess import UPSTREAM_KEY, Running, in_process, service_settings
from tests.support.videos import (
    ALICE,
    FAST,
    PRICE,
    finished,
    job_row,
    job_rows,
    ledger_rows,
    note,
    video,
)

BUDGETED: dict[str, Any] = {"client_daily_budget": "10"}


@pytest.fixture
def fake() -> Iterator[FakeSiliconFlow]:
    # On a thread of its own: a service in a subprocess reaches it too.
    with FakeSiliconFlow(api_key=UPSTREAM_KEY) as upstream:
        yield upstream


def settings_for(
    fake: FakeSiliconFlow, tmp_path: Path, database_url: str, **overrides: Any
) -> Settings:
    return service_settings(
        fake, tmp_path, database_url=database_url, **(FAST | BUDGETED | overrides)
    )


async def spent_today(running: Running) -> Any:
    return (await running.services.budgets.status(ALICE))[0].spent


async def polled(fake: FakeSiliconFlow, times: int = 1) -> None:
    """Until every job has had `times` status calls (or fail after 10 s)."""
    for _ in range(500):
        jobs = fake.videos.jobs()
        if jobs and all(len(job.status_calls) >= times for job in jobs):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"jobs were not polled {times} time(s) within 10 s")


async def test_a_job_submitted_before_a_restart_completes_after_it(
    fake: FakeSiliconFlow, tmp_path: Path, database_url: str
) -> None:
    fake.videos.hold()
    settings = settings_for(fake, tmp_path, database_url)
    async with in_process(settings) as running:
        job = await running.services.videos.submit(ALICE, video(), note(), endpoint="videos")
        await polled(fake)
    fake.videos.release()
    async with in_process(settings) as again:
        # Seeded from the ledger and the job not yet settled: counted once, not forgotten.
        assert await spent_today(again) == PRICE
        done = await finished(again.services.videos, ALICE, job.id)
        assert done.status == "completed"
        content = await again.services.videos.content(ALICE, job.id, "video")
        assert content.media_type == "video/mp4"
        assert await spent_today(again) == PRICE
        rows = await ledger_rows(again.services.database.engine)
    (upstream_job,) = fake.videos.jobs()
    assert upstream_job.downloads == 1
    assert [(row["images_delivered"], row["charged"]) for row in rows] == [(1, PRICE)]


async def test_a_job_failed_after_a_restart_gives_back_what_was_held_before_it(
    fake: FakeSiliconFlow, tmp_path: Path, database_url: str
) -> None:
    fake.videos.hold()
    fake.videos.fail_next(reason="out of GPUs")
    settings = settings_for(fake, tmp_path, database_url)
    async with in_process(settings) as running:
        job = await running.services.videos.submit(ALICE, video(), note(), endpoint="videos")
        await polled(fake)
    fake.videos.release()
    async with in_process(settings) as again:
        assert await spent_today(again) == PRICE
        done = await finished(again.services.videos, ALICE, job.id)
        assert done.status == "failed"
        assert await spent_today(again) == 0
        (row,) = await ledger_rows(again.services.database.engine)
    assert (row["images_refunded"], row["charged"]) == (1, 0)


async def test_a_killed_instance_leaves_its_job_to_the_next(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'jobs.db'}"
    settings = settings_for(fake, tmp_path, database_url)
    fake.videos.hold()
    env = {
        "PATH": os.environ["PATH"],
        "SF_BASE": fake.base_url,
        "SILICONFLOW_API_KEY": UPSTREAM_KEY,
        "DATABASE_URL": database_url,
        "IMAGE_DIR": str(settings.image_dir),
        "VIDEO_POLL_SECONDS": "0.1",
        "VIDEO_POLL_MAX_SECONDS": "0.2",
        "VIDEO_LEASE_SECONDS": "3",
        "CLIENT_DAILY_BUDGET": "10",
    }
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.support.video_worker"],
        env=env,
        cwd=Path(__file__).parent.parent,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    try:
        assert worker.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(worker.stdout.readline), 30)
        video_id = line.decode().strip()
        assert video_id.startswith("video_"), line
        await polled(fake, times=2)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        if worker.stdout is not None:
            worker.stdout.close()
        log.close()
    assert worker.returncode == -signal.SIGKILL
    fake.videos.release()
    async with in_process(settings) as again:
        done = await finished(again.services.videos, ALICE, video_id)
        assert done.status == "completed"
        rows = await ledger_rows(again.services.database.engine)
    (upstream_job,) = fake.videos.jobs()
    assert upstream_job.downloads == 1
    assert [(row["endpoint"], row["charged"]) for row in rows] == [("mcp", PRICE)]


async def test_a_job_whose_key_is_gone_after_a_restart_fails_and_says_so(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'jobs.db'}"
    fake.videos.hold()
    async with in_process(settings_for(fake, tmp_path, database_url)) as running:
        job = await running.services.videos.submit(ALICE, video(), note(), endpoint="videos")
        (row,) = await job_rows(running.services.database.engine)
    other = settings_for(fake, tmp_path, database_url, siliconflow_api_key="sk-another-key-9999")
    async with in_process(other) as again:
        done = await finished(again.services.videos, ALICE, job.id)
        assert await spent_today(again) == 0
    assert done.status == "failed" and done.error is not None
    assert done.error.code == "upstream_key_removed"
    assert done.error.message == (
        f"The SiliconFlow key that submitted this video ({row['upstream_key']}) is no longer "
        "configured, so its status cannot be read; nothing is charged."
    )
    assert UPSTREAM_KEY not in done.error.message


async def test_two_instances_poll_each_job_once_and_settle_it_once(
    fake: FakeSiliconFlow, tmp_path: Path, database_url: str
) -> None:
    fake.videos.hold()
    settings = settings_for(fake, tmp_path, database_url)
    async with in_process(settings) as one, in_process(settings) as two:
        ids = []
        for n in range(6):
            running = one if n % 2 else two
            job = await running.services.videos.submit(
                ALICE, video(f"clip {n}"), note(), endpoint="videos"
            )
            ids.append(job.id)
        await polled(fake, times=3)
        fake.videos.release()
        for n, video_id in enumerate(ids):
            done = await finished((two if n % 2 else one).services.videos, ALICE, video_id)
            assert done.status == "completed", done.error
        rows = await ledger_rows(one.services.database.engine)
    jobs = fake.videos.jobs()
    assert [job.downloads for job in jobs] == [1] * 6
    assert sorted(row["request_id"] for row in rows) == sorted({row["request_id"] for row in rows})
    assert len(rows) == 6 and all(row["charged"] == PRICE for row in rows)
    poll = FAST["video_poll_seconds"]
    for job in jobs:
        gaps = [later - earlier for earlier, later in pairwise(job.status_calls)]
        # A job's next poll is set after each one: none comes sooner, whichever instance polls.
        assert min(gaps) >= poll - 0.005, (job.request_id, gaps)


async def test_a_lease_keeps_a_job_to_one_poller_until_it_runs_out(database_url: str) -> None:
    async with Database.open(database_url) as database:
        jobs = JobRepository(database.engine)
        await jobs.insert(job_row("video_lease"))
        (claimed,) = await jobs.claim_due("poller-a", 0.5, 10)
        assert (claimed["id"], claimed["lease_owner"]) == ("video_lease", "poller-a")
        assert await jobs.claim_due("poller-b", 0.5, 10) == []
        assert await jobs.renew("video_lease", "poller-a", 0.5)
        # Poller a stops renewing (it died): b takes the job once the lease has run out.
        deadline = time.monotonic() + 5
        while not (taken := await jobs.claim_due("poller-b", 30, 10)):
            assert time.monotonic() < deadline, "the lease did not run out within 5 s"
            await asyncio.sleep(0.05)
        assert [row["lease_owner"] for row in taken] == ["poller-b"]
        # What a does now changes nothing: the job is b's.
        assert not await jobs.update("video_lease", "poller-a", {"progress": 50})
        assert await jobs.update("video_lease", "poller-b", {"progress": 40})
        assert (await jobs.get("video_lease") or {})["progress"] == 40
