"""The fake's OpenAI-format images endpoint, which the benchmarks put LiteLLM in front of."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from PIL import Image

from sfproxy.fake_upstream import OPENAI_GENERATIONS_PATH, FakeSiliconFlow

KEY = "sk-fake-upstream"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
async def upstream() -> AsyncIterator[FakeSiliconFlow]:
    async with FakeSiliconFlow(max_render_side=128) as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession,
    fake: FakeSiliconFlow,
    body: Any,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else None
    async with http.post(
        fake.origin + OPENAI_GENERATIONS_PATH,
        json=None if data is not None else body,
        data=data,
        headers=AUTH if headers is None else headers,
    ) as response:
        return response.status, await response.json(content_type=None)


async def test_the_openai_sdk_gets_urls_to_real_images(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    sdk = openai.AsyncOpenAI(
        base_url=upstream.origin + OPENAI_GENERATIONS_PATH.removesuffix("/images/generations"),
        api_key=KEY,
        max_retries=0,
    )
    async with sdk:
        answer = await sdk.images.generate(
            model="Qwen/Qwen-Image", prompt="a red fox", n=2, size="256x128"
        )

    assert abs(answer.created - time.time()) < 60
    assert answer.data is not None and len(answer.data) == 2
    urls = [image.url or "" for image in answer.data]
    assert all(url.startswith(f"{upstream.origin}/files/") for url in urls)
    for url in urls:
        async with http.get(url) as response:
            assert response.status == 200
            picture = Image.open(io.BytesIO(await response.read()))
        # The request's size, shrunk by the fake's rendering limit as on the SiliconFlow side.
        assert (picture.format, picture.size) == ("PNG", (128, 64))
    assert upstream.stats["images_generated"] == 2
    assert upstream.requests[0].path == OPENAI_GENERATIONS_PATH


async def test_b64_json_carries_the_image_padded_as_configured(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.configure(image_min_bytes=200_000)
    status, data = await post(
        http, upstream, {"prompt": "a red fox", "response_format": "b64_json", "size": "64x64"}
    )
    assert status == 200
    assert set(data) == {"created", "data"}
    [item] = data["data"]
    assert set(item) == {"b64_json"}
    content = base64.b64decode(item["b64_json"])
    assert len(content) >= 200_000
    assert Image.open(io.BytesIO(content)).size == (64, 64)


async def test_latency_applies_as_on_the_siliconflow_endpoint(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.configure(latency=0.3)
    started = time.perf_counter()
    status, _ = await post(http, upstream, {"prompt": "slow", "size": "64x64"})
    assert status == 200
    assert time.perf_counter() - started >= 0.3


async def test_identical_prompts_render_once(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    for _ in range(3):
        status, _ = await post(http, upstream, {"prompt": "same", "size": "64x64"})
        assert status == 200
    stats = upstream.stats
    assert (stats["generate_ok"], stats["renders"], stats["render_cache_hits"]) == (3, 1, 2)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m"}, "prompt"),
        ({"prompt": "  "}, "prompt"),
        ({"prompt": "x", "n": 0}, "n"),
        ({"prompt": "x", "n": 11}, "n"),
        ({"prompt": "x", "size": "big"}, "size"),
        ({"prompt": "x", "size": "32x32"}, "size"),
        ({"prompt": "x", "response_format": "png"}, "response_format"),
        ({"prompt": "x", "seed": -1}, "seed"),
        ({"prompt": "x", "model": ""}, "model"),
        ([{"prompt": "x"}], None),
        (b"{not json", None),
    ],
)
async def test_bad_requests_get_openai_error_envelopes(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession, body: Any, param: str | None
) -> None:
    status, data = await post(http, upstream, body)
    assert status == 400
    error = data["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert error["message"]
    assert upstream.stats["generate_errors"] == 1


async def test_wrong_key_is_401_in_openai_shape(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    status, data = await post(http, upstream, {"prompt": "x"}, headers={})
    assert status == 401
    assert data["error"]["code"] == "invalid_api_key"


async def test_faults_stay_queued_for_the_siliconflow_endpoint(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.add_fault("status", status=503)
    status, _ = await post(http, upstream, {"prompt": "x", "size": "64x64"})
    assert status == 200
    assert len(upstream.pending_faults) == 1
