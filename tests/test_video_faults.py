"""Video jobs when things go wrong: a job's lease lost to another instance in the middle of a
turn, and the database going away under the poller or between a submit and its row. The
service runs in front of the fake SiliconFlow over HTTP; the "other instance" and the outages
are real changes to the database (a lease taken over in the row; PostgreSQL refusing and
cutting the connections to the job database).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from sfproxy.db.tables import video_jobs
from sfproxy.fake_upstream import FakeSiliconFlow
from sfproxy.jobs.repository import now_ms
from tests.support.inprocess import (
    UPSTREAM_KEY,
    eventually,
    in_process,
    on_loopback,
    service_settings,
)
from tests.support.postgres import PostgresServer
from tests.support.videos import ALICE, FAST, T2V, finished, job_rows, ledger_rows, note, video


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


class Outage:
    """A job database of its own, and its outage: refusing connections, and the open ones
    cut, from `begin()` to `end()`."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.url = server.create_database()
        self.name = self.url.rsplit("/", 1)[1]

    def begin(self) -> None:
        self._allow("false")
        self.server.psql(
            self.server.url(),
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{self.name}'",
        )

    def end(self) -> None:
        self._allow("true")

    def _allow(self, allowed: str) -> None:
        self.server.psql(
            self.server.url(), f"ALTER DATABASE {self.name} WITH ALLOW_CONNECTIONS {allowed}"
        )


@pytest.fixture
def outage(postgres_server: PostgresServer) -> Outage:
    return Outage(postgres_server)


def submits(fake: FakeSiliconFlow) -> int:
    return len([r for r in fake.requests if r.path.endswith("/video/submit")])


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
    outage: Outage,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "sfproxy.jobs.poller")
    fake.videos.hold()
    async with service(fake, tmp_path, database_url=outage.url) as running:
        videos = running.services.videos
        job = await videos.submit(ALICE, video(), note(), endpoint="videos")
        await eventually(lambda: fake.stats["video_status_calls"] >= 1, what="a first poll")

        outage.begin()
        await eventually(
            lambda: "video jobs: the database did not answer" in caplog.text,
            what="the outage noticed",
        )
        # SiliconFlow finishes the video while the database is away.
        fake.videos.release()
        outage.end()
        done = await finished(videos, ALICE, job.id, timeout=30)
        assert done.status == "completed"
        rows = await ledger_rows(running.services.database.engine)
        # At the first tick whose every query worked (one may still meet a dead connection).
        await eventually(
            lambda: "video jobs: the database answers again" in caplog.text, what="the recovery"
        )
    # Said once for the outage, however many ticks it lasted.
    assert caplog.text.count("video jobs: the database did not answer") == 1
    (upstream_job,) = fake.videos.jobs()
    assert upstream_job.downloads == 1
    (record,) = rows
    assert (record["status"], record["images_delivered"]) == (200, 1)


async def test_a_row_not_written_at_once_is_written_when_the_database_is_back(
    fake: FakeSiliconFlow,
    tmp_path: Path,
    outage: Outage,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "sfproxy.jobs.repository")
    # The submit is at SiliconFlow when the database goes away.
    fake.add_fault("hang", target="video_submit", seconds=1)
    async with service(fake, tmp_path, database_url=outage.url) as running:
        videos = running.services.videos
        submitting = asyncio.ensure_future(videos.submit(ALICE, video(), note(), endpoint="videos"))
        await eventually(lambda: fake.stats["faults_applied"] == 1, what="the submit sent")
        outage.begin()
        await eventually(lambda: "not recorded yet" in caplog.text, what="a failed insert")
        outage.end()
        job = await submitting
        done = await finished(videos, ALICE, job.id)
        assert done.status == "completed"
        rows = await ledger_rows(running.services.database.engine)
    assert submits(fake) == 1
    (record,) = rows
    assert (record["status"], record["images_delivered"]) == (200, 1)


# The Sora API's shutdown is announced on every videos method; this test calls one on purpose.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_a_submit_whose_row_cannot_be_written_tells_the_sdk_not_to_retry(
    fake: FakeSiliconFlow, tmp_path: Path, outage: Outage
) -> None:
    fake.add_fault("hang", target="video_submit", seconds=1)
    settings = service_settings(fake, tmp_path, **(FAST | {"database_url": outage.url}))
    async with on_loopback(settings) as running:
        async with openai.AsyncOpenAI(
            base_url=running.url + "/v1", api_key="x", max_retries=2
        ) as sdk:
            creating = asyncio.ensure_future(sdk.videos.create(prompt="a lost video", model=T2V))
            await eventually(lambda: fake.stats["faults_applied"] == 1, what="the submit sent")
            outage.begin()
            try:
                with pytest.raises(openai.InternalServerError) as failed:
                    await creating
            finally:
                outage.end()
        spent = await running.services.budgets.status(ALICE)
    assert failed.value.status_code == 503
    assert failed.value.response.headers["x-should-retry"] == "false"
    assert "Sending the request again would make a second video" in failed.value.message
    # One video at SiliconFlow, and none for the SDK's retries.
    assert submits(fake) == 1
    assert spent[0].spent == 0
