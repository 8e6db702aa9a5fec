"""The MCP video tools through the SDK's client over HTTP, against the fake SiliconFlow:
generate_video returns the job at once, get_video follows it to its links and poster."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp import ClientSession
from PIL import Image

from sfproxy.fake_upstream import FakeSiliconFlow

from .images import data_uri, image_bytes
from .support.inprocess import UPSTREAM_KEY, Running
from .support.videos import FAST, I2V, PRICE, T2V, ledger_rows, mp4_facts
from .test_mcp import KEY, images_of, mcp_session, serving, text_of

OTHER_KEY = "proxy-key-mcp-other-0123456"
LINKS = re.compile(
    r"\[Download the video \(MP4\)\]\((http://127\.0\.0\.1:\d+/v1/files/images/[0-9a-f]{32}\.mp4)\)"
    r"\n\n!\[poster\]\((http://127\.0\.0\.1:\d+/v1/files/images/[0-9a-f]{32}\.jpg)\)$"
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeSiliconFlow]:
    async with FakeSiliconFlow(api_key=UPSTREAM_KEY) as upstream:
        upstream.configure(video_queue_seconds=0.2, video_progress_seconds=0.4)
        yield upstream


def video_service(fake: FakeSiliconFlow, tmp_path: Path, **settings: Any) -> Any:
    return serving(
        fake, tmp_path, **{"allow_client_keys": f"{KEY},{OTHER_KEY}", **FAST, **settings}
    )


async def completed(session: ClientSession, video_id: str) -> types.CallToolResult:
    """get_video's answer once the job is completed (polled, with a deadline)."""
    deadline = time.monotonic() + 20
    while True:
        result = await session.call_tool("get_video", {"video_id": video_id})
        assert not result.is_error, text_of(result)
        assert result.structured_content is not None
        if result.structured_content["status"] == "completed":
            return result
        assert time.monotonic() < deadline, f"{video_id} not completed in 20 s"
        await asyncio.sleep(0.05)


async def test_generate_video_returns_the_job_and_get_video_follows_it_to_its_links(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    async with video_service(fake, tmp_path) as running, mcp_session(running.url) as session:
        started = await session.call_tool(
            "generate_video", {"prompt": "a paper boat on a river", "size": "16:9"}
        )
        job = started.structured_content
        assert job is not None
        video_id = job["id"]
        pending = await session.call_tool("get_video", {"video_id": video_id})
        done = await completed(session, video_id)
        video_url, poster_url = LINKS.findall(text_of(done))[0]
        video = await running.http.get(video_url)
        poster = await running.http.get(poster_url)
        rows = await ledger_written(running)
    assert not started.is_error
    assert job == {
        "id": video_id,
        "object": "video",
        "model": T2V,
        "status": "queued",
        "progress": 0,
        "created_at": job["created_at"],
        "completed_at": None,
        "expires_at": None,
        "size": "1280x720",
        "seconds": "5",
        "prompt": "a paper boat on a river",
        "error": None,
        "remixed_from_video_id": None,
    }
    assert text_of(started) == (
        f"Video {video_id} is queued ({T2V}, 1280x720, 5 s). It takes a few minutes: call "
        f"get_video with video_id {video_id} to follow it."
    )
    assert pending.structured_content is not None
    assert pending.structured_content["status"] in ("queued", "in_progress")
    assert "Call get_video again in about" in text_of(pending)
    final = done.structured_content
    assert final is not None
    assert (final["status"], final["progress"], final["error"]) == ("completed", 100, None)
    assert final["completed_at"] >= final["created_at"]
    assert text_of(done).startswith(f"Video {video_id} is completed ({T2V}, 1280x720, 5 s).\n\n")
    assert (video.status_code, mp4_facts(video.content)) == (200, ("h264", 160, 90))
    assert poster.status_code == 200
    # MCP_IMAGE_CONTENT=thumbnail (the default): the poster as a JPEG preview.
    (block,) = images_of(done)
    assert block.mime_type == "image/jpeg"
    assert Image.open(io.BytesIO(base64.b64decode(block.data))).size == (160, 90)
    (row,) = rows
    assert (row["endpoint"], row["model"], row["images_delivered"], row["charged"]) == (
        "mcp",
        T2V,
        1,
        PRICE,
    )


async def test_an_image_makes_an_image_to_video_job(fake: FakeSiliconFlow, tmp_path: Path) -> None:
    picture = data_uri(image_bytes("PNG", (160, 90), "orange"))
    async with (
        video_service(fake, tmp_path, mcp_image_content="off") as running,
        mcp_session(running.url) as session,
    ):
        started = await session.call_tool(
            "generate_video", {"prompt": "the sun sets", "image": picture, "seconds": 5}
        )
        assert started.structured_content is not None
        done = await completed(session, started.structured_content["id"])
        (upstream,) = fake.videos.jobs()
    assert started.structured_content["model"] == I2V
    assert (upstream.model, upstream.has_image, upstream.prompt) == (I2V, True, "the sun sets")
    # MCP_IMAGE_CONTENT=off: the links only.
    assert images_of(done) == [] and LINKS.findall(text_of(done))


async def test_a_failed_video_is_reported_by_get_video(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    fake.videos.fail_next(reason="no boats allowed")
    async with video_service(fake, tmp_path) as running, mcp_session(running.url) as session:
        started = await session.call_tool("generate_video", {"prompt": "a boat"})
        assert started.structured_content is not None
        video_id = started.structured_content["id"]
        deadline = time.monotonic() + 20
        while (
            result := await session.call_tool("get_video", {"video_id": video_id})
        ).structured_content["status"] != "failed":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        (row,) = await ledger_written(running)
    reason = "SiliconFlow could not make the video: no boats allowed."
    assert not result.is_error
    assert text_of(result) == f"Video {video_id} failed ({T2V}, 1280x720, 5 s). {reason}"
    assert result.structured_content["error"] == {
        "code": "video_generation_failed",
        "message": reason,
    }
    assert (row["images_refunded"], row["charged"]) == (1, 0)


async def test_bad_arguments_and_other_keys_jobs_are_tool_errors(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    async with video_service(fake, tmp_path) as running:
        async with mcp_session(running.url) as session:
            seconds = await session.call_tool("generate_video", {"prompt": "x", "seconds": "8"})
            model = await session.call_tool(
                "generate_video", {"prompt": "x", "model": "Qwen/Qwen-Image"}
            )
            needs = await session.call_tool("generate_video", {"prompt": "x", "model": I2V})
            empty = await session.call_tool("generate_video", {"prompt": " "})
            mine = await session.call_tool("generate_video", {"prompt": "mine"})
            assert mine.structured_content is not None
        async with mcp_session(running.url, OTHER_KEY) as other:
            theirs = await other.call_tool("get_video", {"video_id": mine.structured_content["id"]})
            unknown = await other.call_tool("get_video", {"video_id": "video_nope"})
    for result in (seconds, model, needs, empty, theirs, unknown):
        assert result.is_error
    assert text_of(seconds) == (
        f"Invalid 'seconds': {T2V} makes videos of '5' seconds, not '8'; send '5' or leave it out."
    )
    assert text_of(model) == (
        "The model 'Qwen/Qwen-Image' is not a video model of this proxy. "
        f"Video models: {T2V}, {I2V}."
    )
    assert text_of(needs) == (
        f"The model {I2V} makes video from an image: send one in 'image', or use {T2V} for "
        "video from text."
    )
    assert text_of(empty) == "Invalid 'prompt': string should have at least 1 character."
    # Another key's job is answered as one that does not exist.
    assert text_of(theirs) == f"No video with id {mine.structured_content['id']!r}."
    assert text_of(unknown) == "No video with id 'video_nope'."
    assert len(fake.videos.jobs()) == 1


async def test_list_models_describes_the_video_models(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    async with video_service(fake, tmp_path) as running, mcp_session(running.url) as session:
        result = await session.call_tool("list_models", {})
        listed = await running.http.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    described = result.structured_content
    assert described is not None
    assert (described["default_video_model"], described["default_image_to_video_model"]) == (
        T2V,
        I2V,
    )
    cards = [card for card in listed.json()["data"] if card["id"] in (T2V, I2V)]
    assert described["video_models"] == cards


async def ledger_written(running: Running, count: int = 1) -> list[dict[str, Any]]:
    engine = running.services.database.engine
    deadline = time.monotonic() + 10
    while len(rows := await ledger_rows(engine)) < count:
        assert time.monotonic() < deadline, f"{count} ledger row(s) not written in 10 s"
        await asyncio.sleep(0.05)
    return rows
