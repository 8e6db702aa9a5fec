"""The corridor in-process: validation errors, retry policy, cool-down, SSE writer, seams."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time

import aiohttp
import pytest

from sfproxy.errors import (
    ProxyError,
    UpstreamConnectionError,
    UpstreamRateLimitError,
    UpstreamServerError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from sfproxy.protocol_responses import ImageRef
from sfproxy.render.chat import ChatAnswer, ChatStream
from sfproxy.retries import RetryPolicy, retry_after_seconds

from .support.inprocess import eventually, in_process, service_settings


async def post_image(running, **body):
    return await running.http.post("/v1/images/generations", json={"prompt": "p", **body})


@pytest.mark.parametrize("spelled", ["aspect_ratio", "sf_aspect_ratio"])
async def test_validation_errors_name_the_parameter_as_sent(fake, tmp_path, spelled):
    async with in_process(service_settings(fake, tmp_path)) as running:
        response = await post_image(running, **{spelled: "1024x1024"})
        error = response.json()["error"]
        assert response.status_code == 400
        assert error["param"] == spelled
        assert error["message"] == f"Invalid '{spelled}': '1024x1024' is not a ratio such as 16:9."
        assert error["code"] == "invalid_aspect_ratio"


async def test_inline_options_are_named_as_typed(fake, tmp_path):
    async with in_process(service_settings(fake, tmp_path)) as running:
        body = {"messages": [{"role": "user", "content": "a cat --ar 1024x1024"}]}
        response = await running.http.post("/v1/chat/completions", json=body)
        error = response.json()["error"]
        assert response.status_code == 400
        assert error["param"] == "messages"
        assert error["message"] == (
            "Invalid '--ar': '1024x1024' is not a ratio such as 16:9. Example: --ar 16:9"
        )


async def test_form_fields_are_named_as_sent(fake, tmp_path):
    async with in_process(service_settings(fake, tmp_path)) as running:
        response = await running.http.post(
            "/v1/images/edits",
            data={"prompt": "edit", "n": "eleven", "model": "Qwen/Qwen-Image-Edit"},
            files={"image": ("a.png", b"\x89PNG", "image/png")},
        )
        error = response.json()["error"]
        assert response.status_code == 400
        assert error["param"] == "n"
        assert (
            error["message"]
            == "Invalid 'n': input should be a valid integer, unable to parse string as an integer."
        )
        assert error["code"] == "int_parsing"


async def test_missing_fields_are_missing_required_parameter(fake, tmp_path):
    async with in_process(service_settings(fake, tmp_path)) as running:
        response = await running.http.post("/v1/images/generations", json={"n": 1})
        assert response.json()["error"] == {
            "message": "Missing required parameter: 'prompt'.",
            "type": "invalid_request_error",
            "param": "prompt",
            "code": "missing_required_parameter",
        }


def test_the_retry_policy_retries_only_what_cannot_have_been_billed():
    policy = RetryPolicy(retries=2)
    not_billed = [
        UpstreamRateLimitError("429", maybe_billed=False),
        UpstreamUnavailableError("503", maybe_billed=False),
        UpstreamConnectionError("refused", maybe_billed=False),
    ]
    unsure = [
        UpstreamTimeoutError("read timeout"),
        UpstreamConnectionError("dropped after sending"),
        UpstreamServerError("500"),
        UpstreamUnavailableError("504"),
    ]
    assert [policy.allows(error, 0) for error in not_billed] == [True, True, True]
    assert [policy.allows(error, 0) for error in unsure] == [False, False, False, False]
    assert [policy.allows(error, 2) for error in not_billed] == [False, False, False]
    # Downloads cost nothing: every retryable failure is tried again.
    assert [policy.allows(error, 0, paid=False) for error in unsure] == [True] * 4
    bold = RetryPolicy(retries=2, retry_unsure=True)
    assert [bold.allows(error, 0) for error in unsure] == [True] * 4


async def test_connection_refused_is_retried_as_nothing_was_sent(tmp_path, fake):
    # A port nothing listens on: refused before any request was sent.
    options = service_settings(fake, tmp_path, sf_base="http://127.0.0.1:9/v1", upstream_retries=1)
    async with in_process(options) as running:
        response = await post_image(running)
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "upstream_connection_failed"
        labels = {
            "kind": "generate",
            "model": "Qwen/Qwen-Image",
            "reason": "upstream_connection_failed",
        }
        assert running.metric("sfproxy_upstream_retries_total", **labels) == 1


def test_retry_after_is_read_as_seconds_or_as_an_http_date():
    assert retry_after_seconds({"Retry-After": "7"}) == 7.0
    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28.0 <= (retry_after_seconds({"Retry-After": soon}) or 0) <= 30.0
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert retry_after_seconds({"Retry-After": past}) == 0.0
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({}) is None


async def test_an_overloaded_model_cools_down_for_clients_that_retry_anyway(fake, tmp_path):
    options = service_settings(fake, tmp_path, upstream_retries=2, upstream_cooldown_seconds=0.5)
    async with in_process(options) as running:
        fake.add_fault("status", status=503, count=3)
        statuses = []
        # As the Vercel AI SDK does: three tries, whatever x-should-retry says.
        for _ in range(3):
            statuses.append((await post_image(running)).status_code)
        assert statuses == [503, 503, 503]
        assert len(fake.requests) == 3
        cooling = await post_image(running)
        assert cooling.json()["error"]["code"] == "upstream_cooldown"
        assert int(cooling.headers["Retry-After"]) >= 1
        assert len(fake.requests) == 3
        await asyncio.sleep(0.5)  # the cool-down itself is what is tested here
        assert (await post_image(running)).status_code == 200
        assert len(fake.requests) == 4


async def test_trace_ids_reach_the_request_log_and_error_messages(fake, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="sfproxy.access")
    async with in_process(service_settings(fake, tmp_path)) as running:
        fake.add_fault("status", status=400, message="bad prompt")
        failed = await post_image(running)
        trace = fake.requests[-1]
        assert failed.status_code == 400
        ok = await post_image(running)
        assert ok.status_code == 200
    records = [r for r in caplog.records if r.name == "sfproxy.access"]
    traced = [getattr(r, "fields", {}).get("trace_ids") for r in records]
    assert all(ids and len(ids) == 1 for ids in traced)
    assert traced[0][0] in failed.json()["error"]["message"]
    assert trace.status == 400


async def test_the_upstream_session_is_injectable(fake, tmp_path):
    started: list[str] = []

    async def on_start(session, context, params) -> None:
        started.append(str(params.url))

    def session_factory(timeout: aiohttp.ClientTimeout) -> aiohttp.ClientSession:
        tracing = aiohttp.TraceConfig()
        tracing.on_request_start.append(on_start)
        return aiohttp.ClientSession(timeout=timeout, trace_configs=[tracing])

    options = service_settings(fake, tmp_path)
    async with in_process(options, upstream_session=session_factory) as running:
        assert (await post_image(running)).status_code == 200
    # First the account's model list (discovery, at start), then the generation and the
    # download of its image.
    assert started[0] == fake.base_url + "/models?type=image"
    assert started[1] == fake.base_url + "/images/generations"
    assert len(started) == 3


async def _answer_after(event: asyncio.Event) -> ChatAnswer:
    await event.wait()
    return ChatAnswer(content="![image](u)", images=[ImageRef(image_url={"url": "u"})])


async def test_the_sse_writer_keeps_alive_then_answers_and_marks_delivery():
    stream = ChatStream(completion_id="c", model="m", provider="p", include_usage=True)
    ready = asyncio.Event()
    delivered: list[int] = []
    events = stream.events(_answer_after(ready), keepalive=0.01, delivered=delivered.append)
    first = await anext(events)
    assert first.startswith(b'data: {"id":"c"') and b'"role":"assistant"' in first
    assert await anext(events) == b": keepalive\n\n"
    ready.set()
    rest = [chunk async for chunk in events]
    assert b'"content":"![image](u)"' in rest[0]
    assert b'"finish_reason":"stop"' in rest[1]
    assert b'"usage":{"prompt_tokens":0' in rest[2]
    assert rest[3] == b"data: [DONE]\n\n"
    assert delivered == [1]


async def test_the_sse_writer_sends_errors_as_data_lines():
    stream = ChatStream(completion_id="c", model="m", provider="p", include_usage=False)

    async def failing() -> ChatAnswer:
        raise UpstreamServerError("SiliconFlow failed (500)", maybe_billed=True)

    chunks = [
        chunk
        async for chunk in stream.events(failing(), keepalive=1.0, delivered=lambda images: None)
    ]
    assert chunks[1].startswith(b'data: {"error":{"message":"SiliconFlow failed (500)"')
    assert chunks[2:] == [b"data: [DONE]\n\n"]


async def test_a_flight_left_by_its_stream_is_abandoned_for_the_next_request(fake, tmp_path):
    fake.configure(latency=0.5)
    async with in_process(service_settings(fake, tmp_path, request_timeout_seconds=0.1)) as running:
        assert (await post_image(running)).status_code == 504
        flights = running.services.corridor.flights
        assert flights.kept == 1
        await eventually(lambda: flights.running == 0)
        assert (await post_image(running)).status_code == 200
        assert flights.kept == 0
        assert len(fake.requests) == 1


def test_proxy_errors_keep_their_envelope():
    error = ProxyError("boom")
    assert error.envelope() == {
        "error": {"message": "boom", "type": "server_error", "param": None, "code": None}
    }
