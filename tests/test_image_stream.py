"""Streamed images (`stream: true`) through the SDKs' own stream iterators, and variations.

openai-python (sync and async) and openai-node parse the answer as Server-Sent Events whenever
they asked for a stream; these tests read what their iterators yield, not our bytes.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
import subprocess
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image

from sfproxy.auth import Client, key_label
from sfproxy.generate import GeneratedImage, Generation
from sfproxy.plan import ImageJob
from sfproxy.render.image_stream import ImageStream

from .images import image_bytes
from .support.inprocess import eventually, on_loopback, service_settings

PNG = image_bytes("PNG", (80, 60), "red")
NODE_DIR = Path(__file__).parent / "node"
KEY = "proxy-key-stream-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
KOLORS = {"model": "Kwai-Kolors/Kolors", "size": "1024x1024"}


def opened(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def assert_generation_event(event, size=(1024, 1024)) -> None:
    assert event.type == "image_generation.completed"
    picture = opened(event.b64_json)
    assert picture.format == "PNG"
    assert picture.size == size
    assert event.size == f"{size[0]}x{size[1]}"
    assert event.output_format == "png"
    assert event.quality == "auto"
    assert event.background == "auto"
    assert event.usage.total_tokens == 0
    assert event.usage.input_tokens_details.text_tokens == 0


@pytest.mark.parametrize("n", [1, 2])
def test_the_sync_sdk_iterates_one_completed_event_per_image(client, fake, n):
    stream = client.images.generate(
        prompt="a lighthouse", stream=True, partial_images=1, n=n, **KOLORS
    )
    events = list(stream)
    assert len(events) == n
    for event in events:
        assert_generation_event(event)
    # No partial images: SiliconFlow makes none, and it made the n images asked for.
    assert sum(int(request.body.get("batch_size", 1)) for request in fake.requests) == n


async def test_the_async_sdk_iterates_them_too(proxy, fake):
    async with openai.AsyncOpenAI(base_url=proxy.api_base, api_key="unused", max_retries=0) as sdk:
        stream = await sdk.images.generate(
            prompt="two harbours", stream=True, partial_images=2, n=2, **KOLORS
        )
        events = [event async for event in stream]
    assert [event.type for event in events] == ["image_generation.completed"] * 2
    for event in events:
        assert_generation_event(event)


def test_a_stream_reports_the_requested_quality_and_background(client, fake):
    events = list(
        client.images.generate(
            prompt="opaque", stream=True, quality="high", background="opaque", **KOLORS
        )
    )
    assert [(event.quality, event.background) for event in events] == [("high", "opaque")]


def test_a_stream_carries_base64_whatever_response_format_says(client, fake):
    events = list(
        client.images.generate(prompt="as url?", stream=True, response_format="url", **KOLORS)
    )
    assert len(events) == 1
    assert_generation_event(events[0])


def test_an_edit_streams_image_edit_completed(client, fake):
    stream = client.images.edit(
        image=("photo.png", PNG, "image/png"),
        prompt="make it blue",
        model="Qwen/Qwen-Image-Edit",
        stream=True,
    )
    events = list(stream)
    assert [event.type for event in events] == ["image_edit.completed"]
    picture = opened(events[0].b64_json)
    # The edit model sizes from its input; the event says the size of what came back.
    assert picture.size == (80, 60)
    assert events[0].size == "80x60"
    assert fake.requests[-1].body["prompt"] == "make it blue"


def test_an_upstream_failure_after_the_stream_began_raises_api_error(client, fake):
    fake.add_fault("status", status=400, message="the prompt was refused upstream")
    stream = client.images.generate(prompt="refused", stream=True, **KOLORS)
    # The stream began: the status was 200 and the SDK handed back its iterator.
    assert stream.response.status_code == 200
    with pytest.raises(openai.APIError) as raised:
        list(stream)
    assert "the prompt was refused upstream" in raised.value.message
    assert raised.value.body["type"] == "invalid_request_error"


def test_a_partial_failure_sends_the_images_then_an_error(client, fake):
    fake.add_fault("status", status=400, message="one call refused")
    # Qwen-Image makes one image a call, so one of the two calls fails.
    stream = client.images.generate(
        prompt="two, one fails", stream=True, n=2, model="Qwen/Qwen-Image"
    )
    events = []
    with pytest.raises(openai.APIError) as raised:
        for event in stream:
            events.append(event)
    assert len(events) == 1
    assert_generation_event(events[0], size=(1328, 1328))
    assert raised.value.message.startswith("1 of 2 image requests failed, and 1 of 2 images")
    assert "one call refused" in raised.value.message


def test_an_error_before_the_stream_is_an_ordinary_json_error(client, fake):
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(prompt="x", stream=True, size="7x7", **{"model": KOLORS["model"]})
    assert raised.value.status_code == 400
    assert raised.value.response.headers["content-type"] == "application/json"
    assert fake.requests == []


def test_keepalive_comments_come_while_siliconflow_works(start, fake):
    proxy = start(STREAM_KEEPALIVE_SECONDS="0.1")
    fake.configure(latency=0.6)
    body = {"prompt": "slow", "stream": True, **KOLORS}
    with httpx.stream("POST", proxy.api_base + "/images/generations", json=body, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-accel-buffering"] == "no"
        lines = [line for line in r.iter_lines() if line]
    assert lines[0] == ": keepalive"
    assert lines[-1].startswith("data: ")
    assert set(lines[:-1]) == {": keepalive"}
    assert json.loads(lines[-1].removeprefix("data: "))["type"] == "image_generation.completed"


async def test_a_client_that_leaves_before_its_image_is_refunded(fake, tmp_path):
    options = service_settings(fake, tmp_path, allow_client_keys=KEY, client_images_per_day=1)
    client = Client(label=key_label(KEY), key=KEY)
    body = {"prompt": "one a day", "stream": True, **KOLORS}
    async with on_loopback(options) as running:
        limits = running.services.limits
        fake.configure(latency=1.0)
        async with running.http.stream(
            "POST", "/v1/images/generations", json=body, headers=AUTH
        ) as response:
            assert response.status_code == 200
        refunded = "sfproxy_images_refunded_total"
        await eventually(
            lambda: running.metric(refunded, model=KOLORS["model"]) == 1, what="the refund"
        )
        assert await limits.images_today(client) == 0

        # The day's one image is still there: this stream gets it, and leaves once it has.
        fake.configure(latency=0.0)
        async with running.http.stream(
            "POST", "/v1/images/generations", json=body, headers=AUTH
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    assert json.loads(line[6:])["type"] == "image_generation.completed"
                    break
        delivered = "sfproxy_images_delivered_total"
        await eventually(
            lambda: running.metric(delivered, model=KOLORS["model"]) == 1, what="the charge"
        )
        assert await limits.images_today(client) == 1

        # Over the limit: refused before any stream began, as a JSON error.
        refused = await running.http.post("/v1/images/generations", json=body, headers=AUTH)
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/json"
        assert refused.json()["error"]["type"] == "rate_limit_error"


async def test_a_stream_open_when_the_server_closes_ends_with_an_error():
    stream = ImageStream("image_generation.completed", ImageJob(model="m", prompt="p"))
    closing = asyncio.Event()
    delivered: list[int] = []
    never = asyncio.get_running_loop().create_future()

    async def work() -> Generation:
        return await never

    events = stream.events(work, keepalive=5, delivered=delivered.append, closing=closing)
    closing.set()
    lines = [line async for line in events]
    assert len(lines) == 1
    error = json.loads(lines[0].removeprefix(b"data: "))["error"]
    assert error["code"] == "server_shutting_down"
    assert delivered == []


async def test_each_image_is_counted_delivered_once_its_line_is_sent():
    job = ImageJob(model="m", prompt="p", output_format="webp")
    stream = ImageStream("image_edit.completed", job)
    # Its size as generate.py reads it from the header when the image is kept.
    image = GeneratedImage(seed=1, media_type="image/png", data=PNG, width=80, height=60)
    images = [image] * 2
    generation = Generation(model="m", size=None, images=images, requested=2, calls=2)

    async def work() -> Generation:
        return generation

    delivered: list[int] = []
    events = stream.events(work, keepalive=5, delivered=delivered.append)
    first = await anext(events)
    assert delivered == []
    event = json.loads(first.removeprefix(b"data: "))
    assert event["type"] == "image_edit.completed"
    # The format is the bytes' own, whatever was asked: PNG here.
    assert (event["output_format"], event["size"]) == ("png", "80x60")
    await anext(events)
    assert delivered == [1]
    assert [line async for line in events] == []
    assert delivered == [1, 1]


def node_events(proxy, request: dict) -> list[dict]:
    node = shutil.which("node")
    assert node is not None, "Node.js is needed: make install / .ci/run install it"
    assert (NODE_DIR / "node_modules" / "openai").is_dir(), "run `make install` (npm ci)"
    result = subprocess.run(
        [node, str(NODE_DIR / "stream_images.mjs"), proxy.api_base, json.dumps(request)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_openai_node_iterates_the_events(proxy, fake):
    events = node_events(proxy, {"prompt": "from node", "n": 2, "partial_images": 1, **KOLORS})
    assert [event["type"] for event in events] == ["image_generation.completed"] * 2
    for event in events:
        assert opened(event["b64_json"]).size == (1024, 1024)
        assert event["size"] == "1024x1024"
        assert event["output_format"] == "png"
        assert event["usage"]["input_tokens_details"] == {"image_tokens": 0, "text_tokens": 0}


def test_openai_node_throws_an_error_sent_mid_stream(proxy, fake):
    fake.add_fault("status", status=400, message="refused for node")
    events = node_events(proxy, {"prompt": "refused", **KOLORS})
    assert len(events) == 1
    assert events[0]["thrown"] == "APIError"
    assert "refused for node" in events[0]["message"]


# openai-python marks create_variation deprecated (dall-e-2 only), but clients still call it.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_variations_answer_a_400_naming_the_edits_endpoint(client, fake):
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.create_variation(image=("photo.png", PNG, "image/png"), n=1)
    error = raised.value
    assert error.code == "variations_not_supported"
    assert error.param == "image"
    message = error.body["message"]
    assert "SiliconFlow has no variations endpoint" in message
    assert "POST /v1/images/edits" in message
    assert message.endswith("Edit models: Qwen/Qwen-Image-Edit, Qwen/Qwen-Image-Edit-2509.")
    assert fake.requests == []
