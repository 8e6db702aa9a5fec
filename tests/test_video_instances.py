"""Video jobs across `sfproxy serve` processes, through openai-python: a job made before a
`kill -9` completes on the next start, and two instances on one database (PostgreSQL, or one
SQLite file) poll and download each job once."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import openai
import pytest
from openai.types import Video

from sfproxy.fake_upstream import FakeSiliconFlow

from .conftest import CLIENT_KEYS, UPSTREAM_KEY
from .support.postgres import PostgresServer
from .support.proxy import ProxyProcess, start_proxy

POLL_SECONDS = 0.1
# The Sora API's shutdown is announced on every method; these tests call them on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def env_for(fake: FakeSiliconFlow, database_url: str, images: Path) -> dict[str, str]:
    return {
        "SF_BASE": fake.base_url,
        "SILICONFLOW_API_KEY": UPSTREAM_KEY,
        "ALLOW_CLIENT_KEYS": ",".join(CLIENT_KEYS),
        "DATABASE_URL": database_url,
        "IMAGE_DIR": str(images),
        "UPSTREAM_RETRIES": "0",
        "VIDEO_POLL_SECONDS": str(POLL_SECONDS),
        "VIDEO_POLL_MAX_SECONDS": "0.3",
        "VIDEO_LEASE_SECONDS": "2",
        "LOG_LEVEL": "info",
    }


def sdk(proxy: ProxyProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.api_base, api_key=CLIENT_KEYS[0], max_retries=0)


def polled(fake: FakeSiliconFlow, count: int, times: int, timeout: float = 15.0) -> None:
    """Until `count` jobs exist and each had `times` status calls."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = fake.videos.jobs()
        if len(jobs) == count and all(len(job.status_calls) >= times for job in jobs):
            return
        assert time.monotonic() < deadline, f"jobs not polled {times} time(s) in {timeout} s"
        time.sleep(0.05)


def finished(client: openai.OpenAI, video_id: str, timeout: float = 30.0) -> Video:
    deadline = time.monotonic() + timeout
    while (video := client.videos.retrieve(video_id)).status not in ("completed", "failed"):
        assert time.monotonic() < deadline, f"{video_id} still {video.status} after {timeout} s"
        time.sleep(0.1)
    return video


@pytest.fixture
def instances() -> Iterator[list[ProxyProcess]]:
    started: list[ProxyProcess] = []
    yield started
    for proxy in started:
        proxy.stop()


def test_a_video_made_before_a_kill_9_completes_after_the_restart(
    fake: FakeSiliconFlow, tmp_path: Path, instances: list[ProxyProcess]
) -> None:
    env = env_for(fake, f"sqlite:///{tmp_path / 'jobs.db'}", tmp_path / "images")
    fake.videos.hold()
    first = start_proxy(env, tmp_path / "first")
    instances.append(first)
    with sdk(first) as client:
        video = client.videos.create(prompt="a kite over the dunes")
    polled(fake, 1, 2)
    first.process.kill()
    first.process.wait()
    fake.videos.release()
    second = start_proxy(env, tmp_path / "second")
    instances.append(second)
    with sdk(second) as client:
        done = finished(client, video.id)
        content = client.videos.download_content(video.id)
    assert (done.status, done.progress, done.error) == ("completed", 100, None)
    assert content.content[4:8] == b"ftyp"
    (job,) = fake.videos.jobs()
    assert job.downloads == 1


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_two_instances_on_one_database_poll_and_download_each_video_once(
    fake: FakeSiliconFlow,
    tmp_path: Path,
    instances: list[ProxyProcess],
    request: pytest.FixtureRequest,
    engine: str,
) -> None:
    server: PostgresServer | None = None
    if engine == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        server = request.getfixturevalue("postgres_server")
        database_url = server.create_database()
    env = env_for(fake, database_url, tmp_path / "images")
    fake.videos.hold()
    one = start_proxy(env, tmp_path / "one")
    instances.append(one)
    two = start_proxy(env, tmp_path / "two")
    instances.append(two)
    with sdk(one) as first, sdk(two) as second:
        ids = [(first if n % 2 else second).videos.create(prompt=f"clip {n}").id for n in range(6)]
        polled(fake, 6, 3)
        fake.videos.release()
        # Each instance answers for every job, whichever polled it.
        done = [finished(second if n % 2 else first, video_id) for n, video_id in enumerate(ids)]
    assert [video.status for video in done] == ["completed"] * 6
    jobs = fake.videos.jobs()
    assert [job.downloads for job in jobs] == [1] * 6
    for job in jobs:
        gaps = [later - earlier for earlier, later in pairwise(job.status_calls)]
        # Each poll sets the next: no instance polls a job sooner, whichever it is.
        assert min(gaps) >= POLL_SECONDS - 0.005, (job.request_id, gaps)
    # One ledger record per video, charged once, whichever instance finished it.
    query = "SELECT request_id, images_delivered, charged FROM ledger WHERE endpoint = 'videos'"
    if server is not None:
        rows = [tuple(line.split("\t")) for line in server.psql(database_url, query).splitlines()]
    else:
        with sqlite3.connect(tmp_path / "jobs.db") as connection:
            rows = [tuple(str(v) for v in row) for row in connection.execute(query)]
    assert len({row[0] for row in rows}) == len(rows) == 6
    assert {(row[1], str(Decimal(row[2]).normalize())) for row in rows} == {("1", "2")}
