"""Money: a client is charged for the images it received, and SiliconFlow is asked for no more.

The service runs in the test's loop (on a loopback port where a real connection matters), in
front of the built-in fake SiliconFlow, so the tests read the client's daily count, the
corridor's flights and the fake's own tally of what it made (and would have billed).
"""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from sfproxy.auth import Client, key_label

from .support.inprocess import eventually, in_process, on_loopback, service_settings

KEY = "proxy-key-money-0123456789"
OTHER_KEY = "proxy-key-other-9876543210"
CLIENT = Client(label=key_label(KEY), key=KEY)
OTHER = Client(label=key_label(OTHER_KEY), key=OTHER_KEY)
AUTH = {"Authorization": f"Bearer {KEY}"}


def settings(fake, tmp_path, **overrides):
    return service_settings(
        fake,
        tmp_path,
        allow_client_keys=f"{KEY},{OTHER_KEY}",
        client_images_per_day=100,
        **overrides,
    )


def made(fake) -> int:
    """Images the fake SiliconFlow made for this test: what the operator is billed for."""
    return sum(
        int(request.body.get("batch_size", 1)) for request in fake.requests if request.status == 200
    )


async def charged(running, client=CLIENT) -> int:
    return await running.services.limits.images_today(client)


async def test_a_partial_failure_charges_only_the_images_delivered(fake, tmp_path):
    async with in_process(settings(fake, tmp_path)) as running:
        fake.add_fault("status", status=400, count=2)
        response = await running.http.post(
            "/v1/images/generations",
            json={"model": "Qwen/Qwen-Image", "prompt": "four, two fail", "n": 4},
            headers=AUTH,
        )
        assert response.status_code == 200, response.text
        assert len(response.json()["data"]) == 2
        assert response.headers["X-Images-Returned"] == "2"
        assert await charged(running) == 2
        model = {"model": "Qwen/Qwen-Image"}
        assert running.metric("sfproxy_images_delivered_total", **model) == 2
        assert running.metric("sfproxy_images_refunded_total", **model) == 2


async def test_a_failure_charges_nothing(fake, tmp_path):
    async with in_process(settings(fake, tmp_path)) as running:
        fake.add_fault("status", status=400)
        response = await running.http.post(
            "/v1/images/generations", json={"prompt": "refused"}, headers=AUTH
        )
        assert response.status_code == 400
        assert await charged(running) == 0


async def test_a_client_that_leaves_stops_the_calls_not_yet_sent(fake, tmp_path):
    fake.configure(latency=1.0)
    options = settings(fake, tmp_path, parallel_calls=1)
    async with on_loopback(options) as running:
        with pytest.raises(httpx.ReadTimeout):
            await running.http.post(
                "/v1/images/generations",
                json={"model": "Qwen/Qwen-Image", "prompt": "three, one at a time", "n": 3},
                headers=AUTH,
                timeout=0.3,
            )
        flights = running.services.corridor.flights
        await eventually(lambda: flights.running == 0, what="the first call's end")
        # Calls two and three waited for PARALLEL_CALLS: they never reached SiliconFlow.
        assert len(fake.requests) == 1
        assert made(fake) == 1
        assert await charged(running) == 0
        # The image that was made is kept for the client's retry.
        assert flights.kept == 1


async def test_a_stream_left_before_its_answer_is_refunded(fake, tmp_path):
    fake.configure(latency=1.0)
    async with on_loopback(settings(fake, tmp_path)) as running:
        body = {"messages": [{"role": "user", "content": "gone"}], "stream": True}
        async with running.http.stream(
            "POST", "/v1/chat/completions", json=body, headers=AUTH
        ) as response:
            assert response.status_code == 200
        refunded = "sfproxy_images_refunded_total"
        await eventually(
            lambda: running.metric(refunded, model="Qwen/Qwen-Image") == 1, what="the refund"
        )
        assert await charged(running) == 0


async def test_sdk_timeouts_and_retries_pay_for_one_generation(fake, tmp_path):
    fake.configure(latency=6.0)
    async with on_loopback(settings(fake, tmp_path)) as running:
        async with openai.AsyncOpenAI(
            base_url=running.url + "/v1", api_key=KEY, timeout=2.0
        ) as sdk:
            answer = await sdk.images.generate(prompt="slow, and an impatient SDK")
        assert answer.data is not None and len(answer.data) == 1
        # Three attempts (the SDK's default max_retries=2), one generation, one image charged.
        assert len(fake.requests) == 1
        assert made(fake) == 1
        assert await charged(running) == 1
        assert running.metric("sfproxy_handovers_total", model="Qwen/Qwen-Image") == 2
        image = await running.http.get(answer.data[0].url.removeprefix(running.url))
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")


async def test_the_deadline_answers_504_and_the_retry_takes_the_image(fake, tmp_path):
    fake.configure(latency=1.5)
    options = settings(fake, tmp_path, request_timeout_seconds=0.5)
    async with in_process(options) as running:
        body = {"prompt": "past the deadline"}
        started = time.monotonic()
        late = await running.http.post("/v1/images/generations", json=body, headers=AUTH)
        assert late.status_code == 504
        assert time.monotonic() - started < 1.4
        assert late.json()["error"]["code"] == "deadline_exceeded"
        assert late.headers["x-should-retry"] == "false"
        assert await charged(running) == 0
        await eventually(lambda: running.services.corridor.flights.running == 0)
        retry = await running.http.post("/v1/images/generations", json=body, headers=AUTH)
        assert retry.status_code == 200, retry.text
        assert len(retry.json()["data"]) == 1
        assert len(fake.requests) == 1
        assert await charged(running) == 1


async def test_a_delivered_answer_is_not_handed_over_again(fake, tmp_path):
    async with in_process(settings(fake, tmp_path)) as running:
        body = {"prompt": "regenerate me"}
        for _ in range(2):
            response = await running.http.post("/v1/images/generations", json=body, headers=AUTH)
            assert response.status_code == 200
        # The second request is a deliberate "regenerate": new images, paid again.
        assert len(fake.requests) == 2
        assert await charged(running) == 2


async def test_only_the_same_client_takes_an_abandoned_generation_over(fake, tmp_path):
    fake.configure(latency=1.0)
    options = settings(fake, tmp_path, request_timeout_seconds=0.3)
    async with in_process(options) as running:
        body = {"prompt": "whose is it"}
        late = await running.http.post("/v1/images/generations", json=body, headers=AUTH)
        assert late.status_code == 504
        other = await running.http.post(
            "/v1/images/generations", json=body, headers={"Authorization": f"Bearer {OTHER_KEY}"}
        )
        # Another key, same body: not the same client's retry, so not its images.
        assert other.status_code == 504
        assert len(fake.requests) == 2
        assert await charged(running, OTHER) == 0


async def test_handover_can_be_turned_off(fake, tmp_path):
    fake.configure(latency=0.8)
    options = settings(fake, tmp_path, request_timeout_seconds=0.3, handover_seconds=0)
    async with in_process(options) as running:
        body = {"prompt": "no handover"}
        assert (
            await running.http.post("/v1/images/generations", json=body, headers=AUTH)
        ).status_code == 504
        await eventually(lambda: running.services.corridor.flights.running == 0)
        fake.configure(latency=0.0)
        response = await running.http.post("/v1/images/generations", json=body, headers=AUTH)
        assert response.status_code == 200
        assert len(fake.requests) == 2


async def test_a_retryable_failure_is_retried_within_the_deadline_only(fake, tmp_path):
    # SiliconFlow asks for 5 s; the request has 1 s left: give up at once instead of waiting.
    options = settings(fake, tmp_path, upstream_retries=2, request_timeout_seconds=1.0)
    async with in_process(options) as running:
        fake.add_fault("status", status=429, retry_after=5)
        started = time.monotonic()
        response = await running.http.post(
            "/v1/images/generations", json={"prompt": "busy"}, headers=AUTH
        )
        assert response.status_code == 429
        assert time.monotonic() - started < 0.9
        assert response.headers["x-should-retry"] == "false"
        assert len(fake.requests) == 1
        assert await charged(running) == 0


async def test_a_streamed_answer_is_charged_once_delivered(fake, tmp_path):
    async with in_process(settings(fake, tmp_path)) as running:
        body = {"messages": [{"role": "user", "content": "streamed"}], "stream": True, "n": 2}
        response = await running.http.post("/v1/chat/completions", json=body, headers=AUTH)
        assert response.status_code == 200
        assert response.text.endswith("data: [DONE]\n\n")
        assert response.text.count("![image](") == 2
        assert await charged(running) == 2


async def test_concurrent_identical_requests_are_separate_requests(fake, tmp_path):
    fake.configure(latency=0.3)
    async with in_process(settings(fake, tmp_path)) as running:
        body = {"prompt": "two tabs"}
        answers = await asyncio.gather(
            *(
                running.http.post("/v1/images/generations", json=body, headers=AUTH)
                for _ in range(2)
            )
        )
        assert [answer.status_code for answer in answers] == [200, 200]
        assert len(fake.requests) == 2
        assert await charged(running) == 2
