"""The poller's two paths that only trouble cause: losing a job's lease to another instance in
the middle of a turn, and the database going away under it. The service runs in-process in
front of the fake SiliconFlow over HTTP; the "other instance" and the outage are real changes
to the database (a lease taken over in the row; PostgreSQL refusing and cutting connections).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from sfproxy.db.tables import video_jobs
from sfproxy.fake_upstream import FakeSiliconFlow
from sfproxy.jobs.repository import now_ms
from tests.support.inprocess import UPSTREAM_KEY, eventually, in_process, service_settings
from tests.support.postgres import PostgresServer
from tests.support.videos import ALICE, FAST, finished, job_rows, ledger_rows, note, video


@pytest.fixture
async def fake() -> AsyncIterator[FakeSiliconFlow]:
    async with FakeSiliconFlow(api_key=UPSTREAM_KEY) as upstream:
        yield upstream


def service(fake: FakeSiliconFlow, tmp_path: Path, **overrides: Any) -> Any:
    return in_process(service_settings(fake, tmp_path, **(FAST | overrides)))


async def set_lease(engine: AsyncEngine, job_id: str, **values: Any) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            update(video_jobs).where(video_jobs.c.id == job_id).values(**values)
        )


def stored(tmp_path: Path) -> list[str]:
    return sorted(path.suffix for path in (tmp_path / "images").rglob("*") if path.is_file())


async def test_a_turn_whose_lease_another_instance_took_is_dropped_and_finished_once(
    fake: FakeSiliconFlow, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "sfproxy.jobs.poller")
    caplog.set_level(logging.INFO, "sfproxy.upstream_video")
    # The first download hangs: the turn is mid-download when its lease is taken.
    fake.add_fault("hang", target="video_download", seconds=1.5)
    async with service(fake, tmp_path, video_lease_seconds=1) as running:
        videos, engine = running.services.videos, running.services.database.engine
        job = await videos.submit(ALICE, video(), note(), endpoint="videos")
        await eventually(lambda: fake.stats["faults_applied"] == 1, what="the hung download")

        # Another instance holds the job now, as if this one had been too slow to renew.
        await set_lease(
            engine, job.id, lease_owner="poller-other", lease_until_ms=now_ms() + 60_000
        )
        await eventually(
            lambda: "lease lost to another instance" in caplog.text, what="the lease lost"
        )
        (row,) = await job_rows(engine)
        assert (row["status"], row["settled"], row["lease_owner"]) == (
            "in_progress",
            False,
            "poller-other",
        )
        # The fake answers the hung download in the end; the turn was stopped, and took none of it.
        await eventually(lambda: fake.videos.jobs()[0].downloads == 1, what="the hang's end")
        assert stored(tmp_path) == []

        # The other instance goes away; its lease ends and this one takes the job back.
        await set_lease(engine, job.id, lease_owner=None, lease_until_ms=0, next_poll_ms=0)
        done = await finished(videos, ALICE, job.id)
        assert done.status == "completed"
        rows = await ledger_rows(engine)
    (upstream_job,) = fake.videos.jobs()
    assert upstream_job.downloads == 2
    # Read once: by the turn that held the lease.
    assert caplog.text.count("video downloaded:") == 1
    assert stored(tmp_path) == [".jpg", ".mp4"]
    (record,) = rows
    assert (record["status"], record["images_delivered"], record["images_refunded"]) == (200, 1, 0)


async def test_the_poller_waits_out_a_database_outage_and_finishes_the_job(
    fake: FakeSiliconFlow,
    tmp_path: Path,
    postgres_server: PostgresServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "sfproxy.jobs.poller")
    database_url = postgres_server.create_database()
    name = database_url.rsplit("/", 1)[1]
    fake.videos.hold()
    async with service(fake, tmp_path, database_url=database_url) as running:
        videos = running.services.videos
        job = await videos.submit(ALICE, video(), note(), endpoint="videos")
        await eventually(lambda: fake.stats["video_status_calls"] >= 1, what="a first poll")

        # The outage: no new connections to the database, and the open ones cut.
        postgres_server.psql(
            postgres_server.url(), f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false"
        )
        postgres_server.psql(
            postgres_server.url(),
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
        )
        await eventually(
            lambda: "video jobs: the database did not answer" in caplog.text,
            what="the outage noticed",
        )
        # SiliconFlow finishes the video while the database is away.
        fake.videos.release()
        postgres_server.psql(
            postgres_server.url(), f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true"
        )
        done = await finished(videos, ALICE, job.id, timeout=30)
        assert done.status == "completed"
        rows = await ledger_rows(running.services.database.engine)
    assert "video jobs: the database answers again" in caplog.text
    # Said once for the outage, however many ticks it lasted.
    assert caplog.text.count("video jobs: the database did not answer") == 1
    (upstream_job,) = fake.videos.jobs()
    assert upstream_job.downloads == 1
    (record,) = rows
    assert (record["status"], record["images_delivered"]) == (200, 1)
