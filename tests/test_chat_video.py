"""Chat with a video model, against the service in-process and the fake SiliconFlow over HTTP:
the job named at once, progress or keepalives, then the MP4 link and the poster; failures
answered and refunded; housekeeping prompts answered without a video."""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from PIL import Image

from sfproxy.fake_upstream import FakeSiliconFlow

from .images import data_uri, image_bytes
from .support.inprocess import (
    ASGI_URL,
    UPSTREAM_KEY,
    Running,
    in_process,
    on_loopback,
    service_settings,
)
from .support.videos import FAST, I2V, PRICE, T2V, job_rows, ledger_rows, mp4_facts
from .test_chat_tasks import OPEN_WEBUI_TITLE, open_webui_task

KEY = "chat-video-key-0123456789"
MP4_LINK = re.compile(
    r"^\[Download the video \(MP4\)\]\((http://proxy\.test/v1/files/images/[0-9a-f]{32}\.mp4)\)$"
)
POSTER = re.compile(r"^!\[poster\]\((http://proxy\.test/v1/files/images/[0-9a-f]{32}\.jpg)\)$")


@pytest.fixture
async def fake() -> AsyncIterator[FakeSiliconFlow]:
    async with FakeSiliconFlow(api_key=UPSTREAM_KEY) as upstream:
        # Long enough in each state for the poller (every 0.1 to 0.2 s) to see it.
        upstream.configure(video_queue_seconds=0.4, video_progress_seconds=0.6)
        yield upstream


def service(fake: FakeSiliconFlow, tmp_path: Path, **overrides: Any) -> Any:
    values = {"allow_client_keys": KEY, **FAST, **overrides}
    return in_process(service_settings(fake, tmp_path, **values))


def sdk(running: Running) -> openai.AsyncOpenAI:
    # Not closed by the tests: it would close the running service's client.
    return openai.AsyncOpenAI(
        base_url=ASGI_URL + "/v1", api_key=KEY, http_client=running.http, max_retries=0
    )


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def heading(job_id: str, model: str = T2V) -> str:
    return f"Video `{job_id}` ({model}, 1280x720, 5 s): kept for you at `GET /v1/videos/{job_id}`."


async def downloaded(
    running: Running, paragraphs: list[str], size: tuple[int, int] = (160, 90)
) -> tuple[bytes, bytes]:
    """The MP4 and the poster the answer's last two paragraphs link to, checked as files."""
    (video_url,) = MP4_LINK.findall(paragraphs[-2])
    (poster_url,) = POSTER.findall(paragraphs[-1])
    video = await running.http.get(video_url)
    poster = await running.http.get(poster_url)
    assert (video.status_code, video.headers["content-type"]) == (200, "video/mp4")
    assert (poster.status_code, poster.headers["content-type"]) == (200, "image/jpeg")
    # The fake draws 1280x720 at an eighth of the size, with H.264.
    assert mp4_facts(video.content) == ("h264", *size)
    assert Image.open(io.BytesIO(poster.content)).size == size
    return video.content, poster.content


async def ledger_written(running: Running, count: int = 1) -> list[dict[str, Any]]:
    """The ledger's rows once `count` are there (its writer flushes about every second)."""
    engine = running.services.database.engine
    deadline = time.monotonic() + 10
    while len(rows := await ledger_rows(engine)) < count:
        assert time.monotonic() < deadline, f"{count} ledger row(s) not written in 10 s"
        await asyncio.sleep(0.05)
    return rows


async def test_a_streamed_chat_reports_progress_as_reasoning_then_links_the_video(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    async with service(fake, tmp_path, chat_progress="reasoning") as running:
        stream = await sdk(running).chat.completions.create(
            model=T2V,
            messages=[user("a cat surfing a wave --ar 9:16 --seconds 5 --seed 7")],
            stream=True,
        )
        chunks = [chunk async for chunk in stream]
        deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
        reasoning = [(d.model_extra or {}).get("reasoning_content") for d in deltas]
        lines = "".join(line for line in reasoning if line).splitlines()
        job_id = lines[0].split()[1]
        contents = [delta.content for delta in deltas if delta.content]
        (answer,) = contents
        paragraphs = answer.split("\n\n")
        # Portrait: 720x1280, drawn at an eighth of the size.
        await downloaded(running, paragraphs, (90, 160))
        (row,) = await job_rows(running.services.database.engine)
        (upstream,) = fake.videos.jobs()
    assert {chunk.model for chunk in chunks} == {T2V}
    assert lines == [
        f"video {job_id} submitted: {T2V}, 720x1280, 5 s",
        "queued at SiliconFlow…",
        "in progress: 1 %",
        "completed",
    ]
    # Every progress line comes before the answer, which starts with the job.
    last_reasoning = max(i for i, line in enumerate(reasoning) if line)
    first_content = next(i for i, delta in enumerate(deltas) if delta.content)
    assert last_reasoning < first_content
    assert paragraphs[0] == heading(job_id).replace("1280x720", "720x1280")
    assert len(paragraphs) == 3
    poster_url = POSTER.findall(paragraphs[-1])[0]
    assert (deltas[first_content].model_extra or {})["images"] == [
        {"type": "image_url", "image_url": {"url": poster_url}}
    ]
    assert deltas[-1].content is None and chunks[-1].choices[0].finish_reason == "stop"
    assert (row["id"], row["endpoint"], row["status"]) == (job_id, "chat", "completed")
    # The options went where they belong, not into the prompt.
    assert (upstream.prompt, upstream.image_size, upstream.seed) == (
        "a cat surfing a wave",
        "720x1280",
        7,
    )
    assert upstream.has_image is False


async def test_without_progress_the_job_comes_first_and_keepalives_fill_the_wait(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    body = {"model": T2V, "stream": True, "messages": [user("a lighthouse at night")]}
    # The job is held until three keepalives came, so the count does not hang on the clock; on
    # a real connection, since the ASGI transport hands over a body only once it is complete.
    fake.videos.hold()
    settings = service_settings(
        fake, tmp_path, allow_client_keys=KEY, stream_keepalive_seconds=0.05, **FAST
    )
    async with on_loopback(settings) as running, asyncio.timeout(30):
        headers = {"Authorization": f"Bearer {KEY}"}
        lines: list[str] = []
        async with running.http.stream(
            "POST", "/v1/chat/completions", json=body, headers=headers
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line:
                    lines.append(line)
                if lines.count(": keepalive") == 3:
                    fake.videos.release()
        payloads = [orjson.loads(line[6:]) for line in lines if line.startswith("data: {")]
        deltas = [payload["choices"][0]["delta"] for payload in payloads if payload["choices"]]
        contents = [delta["content"] for delta in deltas if delta.get("content")]
        (row,) = await job_rows(running.services.database.engine)
    assert not any("reasoning_content" in delta for delta in deltas)
    # The heading, with the job's id, before anything was waited for; then the links.
    assert contents[0] == heading(row["id"]) + "\n\n"
    assert lines.index(f"data: {orjson.dumps(payloads[1]).decode()}") < lines.index(": keepalive")
    assert lines.count(": keepalive") >= 3
    assert "[Download the video (MP4)](" in contents[1]
    assert lines[-1] == "data: [DONE]"
    answered = next(index for index, line in enumerate(lines) if "Download the video" in line)
    assert ": keepalive" not in lines[answered:]


async def test_a_chat_not_streamed_answers_once_the_video_is_made_and_is_charged(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    async with service(fake, tmp_path) as running:
        answer = await sdk(running).chat.completions.create(
            model=T2V, messages=[user("a red kite over a beach")]
        )
        content = answer.choices[0].message.content or ""
        paragraphs = content.split("\n\n")
        (row,) = await job_rows(running.services.database.engine)
        await downloaded(running, paragraphs)
        (ledger,) = await ledger_written(running)
    assert answer.model == T2V
    assert paragraphs[0] == heading(row["id"])
    assert len(paragraphs) == 3
    images = (answer.choices[0].message.model_extra or {})["images"]
    assert images == [{"type": "image_url", "image_url": {"url": POSTER.findall(paragraphs[2])[0]}}]
    assert (ledger["endpoint"], ledger["model"], ledger["status"]) == ("chat", T2V, 200)
    assert (ledger["images_delivered"], ledger["charged"]) == (1, PRICE)
    assert fake.billing.total() == PRICE


async def test_a_chat_not_streamed_stops_waiting_and_the_video_is_still_kept_and_charged(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    # In progress at once, and kept so: the chat's wait ends first.
    fake.configure(video_queue_seconds=0.0)
    fake.videos.hold()
    async with service(fake, tmp_path, request_timeout_seconds=1.0) as running:
        answer = await sdk(running).chat.completions.create(
            model=T2V, messages=[user("a slow sunrise")]
        )
        content = answer.choices[0].message.content or ""
        (row,) = await job_rows(running.services.database.engine)
        fake.videos.release()
        (ledger,) = await ledger_written(running)
        (done,) = await job_rows(running.services.database.engine)
    assert content.split("\n\n") == [
        heading(row["id"]),
        "The video is still being made (in progress, 1 %). It is kept when it completes: "
        f"`GET /v1/videos/{row['id']}` shows it, and it is charged then.",
    ]
    # Completed after the chat had its answer: kept for its owner, and charged.
    assert done["status"] == "completed" and done["video"] is not None
    assert (ledger["endpoint"], ledger["images_delivered"], ledger["charged"]) == ("chat", 1, PRICE)


async def test_an_attached_image_makes_the_video_from_it_with_the_image_to_video_model(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    picture = data_uri(image_bytes("PNG", (160, 90), "blue"))
    message = user(
        [
            {"type": "text", "text": "make the sea move"},
            {"type": "image_url", "image_url": {"url": picture}},
        ]
    )
    async with service(fake, tmp_path) as running:
        answer = await sdk(running).chat.completions.create(model=T2V, messages=[message])
        (row,) = await job_rows(running.services.database.engine)
        (upstream,) = fake.videos.jobs()
    # The text-to-video model given an image: its image-to-video sibling.
    assert answer.model == I2V
    assert (answer.choices[0].message.content or "").startswith(heading(row["id"], I2V))
    assert (upstream.model, upstream.has_image, upstream.prompt) == (I2V, True, "make the sea move")


async def test_the_image_to_video_model_animates_the_conversations_latest_image(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    picture = data_uri(image_bytes("PNG", (160, 90), "green"))
    messages = [
        user("a green field"),
        {"role": "assistant", "content": f"![image]({picture})"},
        user("now let the grass sway"),
    ]
    async with service(fake, tmp_path) as running:
        answer = await sdk(running).chat.completions.create(model=I2V, messages=messages)
        refused = await running.http.post(
            "/v1/chat/completions",
            json={"model": I2V, "messages": [user("no image anywhere")]},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        (upstream,) = fake.videos.jobs()
    assert answer.model == I2V
    assert (upstream.has_image, upstream.prompt) == (True, "now let the grass sway")
    assert refused.status_code == 400
    assert refused.json()["error"] == {
        "message": f"The model {I2V} makes video from an image: send one in 'messages', "
        f"or use {T2V} for video from text.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "image_required",
    }


async def test_a_failed_video_is_answered_with_its_error_and_refunded(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    fake.videos.fail_next(reason="the prompt was refused", count=2)
    async with service(fake, tmp_path) as running:
        stream = await sdk(running).chat.completions.create(
            model=T2V, messages=[user("something refused")], stream=True
        )
        with pytest.raises(openai.APIError) as streamed:
            _ = [chunk async for chunk in stream]
        plain = await running.http.post(
            "/v1/chat/completions",
            json={"model": T2V, "messages": [user("refused again")]},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        rows = await ledger_written(running, 2)
        jobs = {
            row["prompt"]: row["id"] for row in await job_rows(running.services.database.engine)
        }
    reason = "SiliconFlow could not make the video: the prompt was refused."
    assert streamed.value.message == f"The video {jobs['something refused']} failed: {reason}"
    assert streamed.value.body == {
        "message": streamed.value.message,
        "type": "upstream_error",
        "param": None,
        "code": "video_generation_failed",
    }
    assert plain.status_code == 502
    assert plain.headers["x-should-retry"] == "false"
    assert plain.json()["error"]["message"] == f"The video {jobs['refused again']} failed: {reason}"
    for row in rows:
        assert (row["endpoint"], row["images_delivered"], row["images_refunded"]) == ("chat", 0, 1)
        assert row["charged"] == 0
    assert fake.billing.total() == 0


async def test_housekeeping_prompts_to_a_video_model_start_no_video(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    task = open_webui_task(OPEN_WEBUI_TITLE) | {"model": T2V}
    async with service(fake, tmp_path) as running:
        answer = await sdk(running).chat.completions.create(**task)
        streamed = await sdk(running).chat.completions.create(**(task | {"stream": True}))
        text = "".join([c.choices[0].delta.content or "" async for c in streamed if c.choices])
        rows = await job_rows(running.services.database.engine)
    assert orjson.loads(answer.choices[0].message.content or "") == {"title": "🎨 A red fox in the"}
    assert orjson.loads(text) == {"title": "🎨 A red fox in the"}
    assert rows == [] and fake.videos.jobs() == [] and fake.requests == []


@pytest.mark.parametrize(
    ("prompt", "param", "code", "message"),
    [
        (
            "a cat --n 2",
            "messages",
            None,
            "Inline option --n is for images; a video takes --size or --ar, --seconds, --seed, "
            "--neg and --model.",
        ),
        (
            "a cat --seconds 4",
            "seconds",
            "invalid_seconds",
            f"Invalid 'seconds': {T2V} makes videos of '5' seconds, not '4'; send '5' or "
            "leave it out.",
        ),
        (
            "a cat --seed many",
            "messages",
            "int_parsing",
            "Invalid '--seed': input should be a valid integer, unable to parse string as an "
            "integer. Example: --seed 42",
        ),
        (
            "--ar 16:9",
            "messages",
            None,
            "The latest user message has no text to use as the video prompt.",
        ),
    ],
)
async def test_a_bad_video_chat_is_a_400_before_anything_is_submitted(
    fake: FakeSiliconFlow, tmp_path: Path, prompt: str, param: str, code: str | None, message: str
) -> None:
    async with service(fake, tmp_path) as running:
        response = await running.http.post(
            "/v1/chat/completions",
            json={"model": T2V, "messages": [user(prompt)]},
            headers={"Authorization": f"Bearer {KEY}"},
        )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": message,
        "type": "invalid_request_error",
        "param": param,
        "code": code,
    }
    assert fake.videos.jobs() == []


async def test_a_shutdown_ends_video_chats_with_an_answer_not_an_error_and_the_job_goes_on(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    # Neither a 503 nor an error event: a client's retry of either would be a second video.
    fake.videos.hold()
    headers = {"Authorization": f"Bearer {KEY}"}
    settings = service_settings(
        fake, tmp_path, allow_client_keys=KEY, stream_keepalive_seconds=0.05, **FAST
    )
    # On a real connection: ASGITransport hands a response over only once it has ended.
    async with on_loopback(settings) as running, asyncio.timeout(30):
        body = {"model": T2V, "stream": True, "messages": [user("a streamed harbour")]}
        async with running.http.stream(
            "POST", "/v1/chat/completions", json=body, headers=headers
        ) as response:
            lines = response.aiter_lines()
            # Under way: the heading was sent and keepalives follow.
            while await anext(lines) != ": keepalive":
                pass
            plain = asyncio.ensure_future(
                running.http.post(
                    "/v1/chat/completions",
                    json={"model": T2V, "messages": [user("a plain harbour")]},
                    headers=headers,
                )
            )
            # Both recorded: the plain chat is waiting for its job.
            while len(await job_rows(running.services.database.engine)) < 2:
                await asyncio.sleep(0.02)
            running.app.state.drain.close()
            rest = [line async for line in lines if line and line != ": keepalive"]
        answered = await plain
        jobs = {row["prompt"]: row for row in await job_rows(running.services.database.engine)}
    payloads = [orjson.loads(line[6:]) for line in rest if line.startswith("data: {")]
    streamed = jobs["a streamed harbour"]
    assert [p["choices"][0]["delta"].get("content") for p in payloads if p["choices"]] == [
        "The server is restarting while the video is being made; it is kept when it "
        f"completes: `GET /v1/videos/{streamed['id']}` shows it.",
        None,
    ]
    assert payloads[-1]["choices"][0]["finish_reason"] == "stop"
    assert rest[-1] == "data: [DONE]"
    assert answered.status_code == 200, answered.text
    content = answered.json()["choices"][0]["message"]["content"]
    assert content.startswith(heading(jobs["a plain harbour"]["id"]) + "\n\nThe video is still")
    # Both jobs are still there to be followed (after a restart, by the next process).
    assert {row["status"] for row in jobs.values()} <= {"queued", "in_progress"}


async def test_openai_video_names_in_chat_make_videos_with_the_default_models(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    picture = data_uri(image_bytes("PNG", (96, 96), "white"))
    with_image = user(
        [
            {"type": "text", "text": "snow falls"},
            {"type": "image_url", "image_url": {"url": picture}},
        ]
    )
    async with service(fake, tmp_path) as running:
        text = await sdk(running).chat.completions.create(
            model="sora-2", messages=[user("rain falls --size 1024x1024")]
        )
        image = await sdk(running).chat.completions.create(
            model="sora-2-pro-2025-10-06", messages=[with_image]
        )
        jobs = fake.videos.jobs()
    assert (text.model, image.model) == (T2V, I2V)
    assert [(job.model, job.image_size, job.has_image) for job in jobs] == [
        (T2V, "960x960", False),
        (I2V, "1280x720", True),
    ]
