"""The built-in fake SiliconFlow, driven over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import base64
import io
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image

from sfproxy.fake_upstream import TRACE_ID_HEADER, FakeSiliconFlow, ModelRule

KEY = "sk-fake-upstream"
AUTH = {"Authorization": f"Bearer {KEY}"}
QWEN = "Qwen/Qwen-Image"
KOLORS = "Kwai-Kolors/Kolors"
EDIT = "Qwen/Qwen-Image-Edit"
EDIT_2509 = "Qwen/Qwen-Image-Edit-2509"
SMALL = "128x96"


def data_uri(width: int = 80, height: int = 60, image_format: str = "PNG") -> str:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, image_format)
    mime = "jpeg" if image_format == "JPEG" else image_format.lower()
    return f"data:image/{mime};base64,{base64.b64encode(out.getvalue()).decode()}"


# Not named `fake`: conftest's session-wide fake serves the proxy tests; these need a fresh one.
@pytest.fixture
async def upstream() -> AsyncIterator[FakeSiliconFlow]:
    async with FakeSiliconFlow() as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def generate(
    http: aiohttp.ClientSession,
    fake: FakeSiliconFlow,
    headers: dict[str, str] | None = None,
    timeout: float | None = None,
    **body: Any,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """POST a generation; `None` values leave a field out, even `model` and `prompt`."""
    body = {"model": QWEN, "prompt": "a red fox", **body}
    async with http.post(
        f"{fake.base_url}/images/generations",
        json={name: value for name, value in body.items() if value is not None},
        headers=AUTH if headers is None else headers,
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as response:
        text = await response.text()
        try:
            data: Any = await response.json(content_type=None)
        except ValueError:
            data = text
        return response.status, data, response


async def download(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes, str]:
    async with http.get(url) as response:
        return response.status, await response.read(), response.content_type


async def generate_image(
    http: aiohttp.ClientSession, fake: FakeSiliconFlow, **body: Any
) -> tuple[Image.Image, bytes, dict[str, Any]]:
    status, data, _ = await generate(http, fake, **body)
    assert status == 200, data
    status, content, _ = await download(http, data["images"][0]["url"])
    assert status == 200
    picture = Image.open(io.BytesIO(content))
    picture.load()
    return picture, content, data


async def test_success_has_siliconflow_shape_and_a_real_image(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    status, data, response = await generate(http, upstream, image_size="512x384", seed=42)

    assert status == 200
    assert set(data) == {"images", "timings", "seed"}
    assert data["seed"] == 42
    assert isinstance(data["timings"]["inference"], float)
    assert len(response.headers[TRACE_ID_HEADER]) == 32
    [image] = data["images"]
    url = image["url"]
    assert url.startswith(f"{upstream.origin}/files/") and ".png?Expires=" in url
    assert url.endswith("&Signature=fake")
    expires = int(url.split("Expires=")[1].split("&")[0])
    assert 3500 < expires - time.time() <= 3600

    status, content, content_type = await download(http, url)
    assert (status, content_type) == (200, "image/png")
    picture = Image.open(io.BytesIO(content))
    assert (picture.format, picture.size) == ("PNG", (512, 384))


@pytest.mark.parametrize(("model", "size"), [(QWEN, (1328, 1328)), (KOLORS, (1024, 1024))])
async def test_default_size_per_model(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession, model: str, size: tuple[int, int]
) -> None:
    picture, _, _ = await generate_image(http, upstream, model=model)
    assert picture.size == size


@pytest.mark.parametrize(
    ("image_format", "pil_format", "content_type", "extension"),
    [("jpeg", "JPEG", "image/jpeg", ".jpg"), ("webp", "WEBP", "image/webp", ".webp")],
)
async def test_other_image_formats(
    upstream: FakeSiliconFlow,
    http: aiohttp.ClientSession,
    image_format: str,
    pil_format: str,
    content_type: str,
    extension: str,
) -> None:
    upstream.configure(image_format=image_format)
    _, data, _ = await generate(http, upstream, image_size=SMALL)
    url = data["images"][0]["url"]
    assert f"{extension}?Expires=" in url
    status, content, served_type = await download(http, url)
    assert (status, served_type) == (200, content_type)
    assert Image.open(io.BytesIO(content)).format == pil_format


async def test_seed_reproduces_the_image(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    _, first, _ = await generate_image(http, upstream, image_size=SMALL, seed=7)
    _, again, _ = await generate_image(http, upstream, image_size=SMALL, seed=7)
    _, other, _ = await generate_image(http, upstream, image_size=SMALL, seed=8)
    assert first == again
    assert first != other


async def test_random_seed_when_none_given(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    _, data, _ = await generate(http, upstream, image_size=SMALL)
    assert isinstance(data["seed"], int) and 0 <= data["seed"] <= 9_999_999_999


async def test_only_kolors_honours_batch_size(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    _, kolors, _ = await generate(http, upstream, model=KOLORS, image_size=SMALL, batch_size=3)
    _, qwen, _ = await generate(http, upstream, model=QWEN, image_size=SMALL, batch_size=3)
    assert len(kolors["images"]) == 3
    assert len(qwen["images"]) == 1
    contents = {(await download(http, image["url"]))[1] for image in kolors["images"]}
    assert len(contents) == 3


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": KEY}],
    ids=["missing", "wrong-key", "no-bearer"],
)
async def test_bad_key_is_401_plain_text(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    status, data, response = await generate(http, upstream, headers=headers, image_size=SMALL)
    assert (status, data) == (401, "Invalid token")
    assert response.content_type == "text/plain"
    assert TRACE_ID_HEADER in response.headers


async def test_api_key_none_accepts_any_key(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.configure(api_key=None)
    status, _, _ = await generate(http, upstream, headers={}, image_size=SMALL)
    assert status == 200


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"'])
async def test_body_must_be_a_json_object(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession, raw: bytes
) -> None:
    async with http.post(f"{upstream.base_url}/images/generations", data=raw, headers=AUTH) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert body["code"] == 20015 and body["data"] is None


async def test_unknown_model(upstream: FakeSiliconFlow, http: aiohttp.ClientSession) -> None:
    status, data, _ = await generate(http, upstream, model="acme/dreamer")
    assert status == 400
    assert data == {
        "code": 20012,
        "message": "Model does not exist. Please check it carefully.",
        "data": None,
    }


def _not_an_image_uri() -> str:
    return "data:image/png;base64," + base64.b64encode(b"certainly not a png").decode()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"prompt": None}, "prompt"),
        ({"prompt": "  "}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 5}, "batch_size"),
        ({"batch_size": "2"}, "batch_size"),
        ({"seed": -1}, "seed"),
        ({"seed": 10_000_000_000}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"num_inference_steps": 101}, "num_inference_steps"),
        ({"guidance_scale": 20.5}, "guidance_scale"),
        ({"guidance_scale": -1}, "guidance_scale"),
        ({"cfg": 0.05}, "cfg"),
        ({"cfg": 21}, "cfg"),
        ({"image_size": "1024*1024"}, "image_size"),
        ({"image_size": "32x1024"}, "image_size"),
        ({"image_size": "1024x5000"}, "image_size"),
        ({"image_size": [1024, 1024]}, "image_size"),
        ({"negative_prompt": 3}, "negative_prompt"),
        ({"image": data_uri()}, "image"),
        ({"model": KOLORS, "image2": data_uri()}, "image2"),
        ({"model": KOLORS, "image": _not_an_image_uri()}, "image"),
        ({"model": KOLORS, "image": "data:image/png;base64,@@@"}, "image"),
        ({"model": KOLORS, "image": "ftp://example.com/a.png"}, "image"),
        ({"model": KOLORS, "image": 12}, "image"),
        ({"model": EDIT}, "image"),
        ({"model": EDIT, "image": data_uri(), "image2": data_uri()}, "image2"),
        ({"model": EDIT, "image": data_uri(), "image_size": "512x512"}, "image_size"),
        ({"model": EDIT_2509}, "image"),
        ({"model": EDIT_2509, "image2": data_uri()}, "image"),
        ({"model": EDIT_2509, "image": data_uri(), "image3": _not_an_image_uri()}, "image3"),
        ({"model": EDIT_2509, "image": data_uri(), "image_size": "512x512"}, "image_size"),
    ],
)
async def test_per_model_checks(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession, changes: dict[str, Any], field: str
) -> None:
    status, data, _ = await generate(http, upstream, **changes)
    assert status == 400
    assert data["code"] == 20015 and data["data"] is None
    assert field in data["message"]
    assert upstream.stats["renders"] == 0


async def test_accepted_parameters_at_their_limits(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    status, data, _ = await generate(
        http,
        upstream,
        model=KOLORS,
        image_size="64x64",
        batch_size=1,
        seed=9_999_999_999,
        num_inference_steps=100,
        guidance_scale=20,
        negative_prompt="blurry",
    )
    assert status == 200, data
    status, data, _ = await generate(
        http, upstream, image_size="4096x64", seed=0, num_inference_steps=1, cfg=0.1
    )
    assert status == 200, data


async def test_kolors_image_to_image(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    picture, _, _ = await generate_image(
        http, upstream, model=KOLORS, image=data_uri(image_format="JPEG"), image_size=SMALL
    )
    assert picture.size == (128, 96)


async def test_edit_sizes_from_the_input_image(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    picture, _, _ = await generate_image(http, upstream, model=EDIT, image=data_uri(300, 200))
    assert picture.size == (300, 200)


async def test_edit_from_a_url_uses_the_fallback_size(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.configure(max_render_side=64)
    picture, _, _ = await generate_image(
        http, upstream, model=EDIT, image="https://example.com/a.png"
    )
    assert picture.size == (64, 64)


async def test_edit_2509_takes_up_to_three_images(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    picture, _, data = await generate_image(
        http,
        upstream,
        model=EDIT_2509,
        image=data_uri(120, 90),
        image2=data_uri(10, 10),
        image3="http://example.com/b.webp",
    )
    assert picture.size == (120, 90)
    assert len(data["images"]) == 1


async def test_extra_models(http: aiohttp.ClientSession) -> None:
    extra = {"acme/copy": QWEN, "acme/edit": {"image_fields": ["image"], "min_images": 1}}
    async with FakeSiliconFlow(extra_models=extra) as fake:
        assert fake.config.extra_models["acme/edit"] == ModelRule(("image",), min_images=1)
        status, _, _ = await generate(http, fake, model="acme/copy", image_size=SMALL)
        assert status == 200
        status, data, _ = await generate(http, fake, model="acme/edit", image_size=SMALL)
        assert status == 400 and "image" in data["message"]


async def test_render_limits_shrink_the_drawn_image(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.configure(max_render_side=64)
    picture, _, _ = await generate_image(http, upstream, image_size="1024x512")
    assert picture.size == (64, 32)
    upstream.configure(max_render_side=None, render_scale=0.125)
    picture, _, _ = await generate_image(http, upstream, image_size="1024x512")
    assert picture.size == (128, 64)


@pytest.mark.parametrize("image_format", ["png", "jpeg", "webp"])
async def test_image_min_bytes_pads_a_valid_image(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession, image_format: str
) -> None:
    upstream.configure(image_format=image_format, image_min_bytes=300_000)
    picture, content, data = await generate_image(http, upstream, image_size=SMALL)
    assert 300_000 <= len(content) < 300_020
    assert picture.size == (128, 96)
    async with http.head(data["images"][0]["url"]) as response:
        assert response.status == 200
        assert response.content_length == len(content)
    # The HEAD answer sent no body, so the kept-alive connection still works.
    assert (await download(http, data["images"][0]["url"]))[1] == content


async def test_requests_are_recorded(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    await generate(http, upstream, image_size=SMALL, seed=3)
    await generate(http, upstream, headers={}, prompt="no key")

    first, second = upstream.requests
    assert (first.method, first.path, first.status) == ("POST", "/v1/images/generations", 200)
    assert first.authorization == f"Bearer {KEY}"
    assert first.body == {"model": QWEN, "prompt": "a red fox", "image_size": SMALL, "seed": 3}
    assert (second.status, second.authorization) == (401, None)
    assert upstream.stats["generate_requests"] == 2
    assert upstream.stats["generate_ok"] == upstream.stats["generate_errors"] == 1
    assert upstream.clear_requests() == 2
    assert upstream.requests == []


async def test_latency(upstream: FakeSiliconFlow, http: aiohttp.ClientSession) -> None:
    upstream.configure(latency=0.3, download_latency=0.2)
    started = time.perf_counter()
    _, data, _ = await generate(http, upstream, image_size=SMALL)
    assert time.perf_counter() - started >= 0.3
    assert data["timings"]["inference"] >= 0.3
    started = time.perf_counter()
    await download(http, data["images"][0]["url"])
    assert time.perf_counter() - started >= 0.2


async def test_concurrent_generations_are_counted(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.configure(latency=0.2)
    requests = (generate(http, upstream, image_size=SMALL, seed=1) for _ in range(5))
    results = await asyncio.gather(*requests)
    assert [status for status, _, _ in results] == [200] * 5
    stats = upstream.stats
    assert (stats["peak_in_flight"], stats["in_flight"]) == (5, 0)
    # Identical requests render once.
    assert (stats["renders"], stats["render_cache_hits"]) == (1, 4)


async def test_expire_images(upstream: FakeSiliconFlow, http: aiohttp.ClientSession) -> None:
    _, data, _ = await generate(http, upstream, image_size=SMALL)
    url = data["images"][0]["url"]
    assert upstream.expire_images() == 1
    status, body, content_type = await download(http, url)
    assert status == 404 and b"NoSuchKey" in body
    assert content_type == "application/xml"


async def test_links_expire_after_the_ttl(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.configure(url_ttl=0.2)
    _, data, _ = await generate(http, upstream, image_size=SMALL)
    await asyncio.sleep(0.25)
    assert (await download(http, data["images"][0]["url"]))[0] == 404


async def test_unknown_file_is_404(upstream: FakeSiliconFlow, http: aiohttp.ClientSession) -> None:
    assert (await download(http, f"{upstream.origin}/files/nothing.png"))[0] == 404


@pytest.mark.parametrize(
    ("status", "code"), [(400, 20012), (403, 30001), (500, 50500), (503, 50505)]
)
async def test_status_fault_json_bodies(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession, status: int, code: int
) -> None:
    upstream.add_fault("status", status=status)
    got, data, response = await generate(http, upstream)
    assert got == status
    assert data["code"] == code and data["message"]
    assert TRACE_ID_HEADER in response.headers
    assert upstream.requests[0].fault == "status"


async def test_status_fault_401_is_plain_text(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.add_fault("status", status=401)
    assert (await generate(http, upstream))[:2] == (401, "Invalid token")


async def test_status_fault_429_carries_retry_after(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.add_fault("status", status=429, retry_after=2)
    status, data, response = await generate(http, upstream)
    assert status == 429
    assert data["message"].startswith("Request was rejected due to rate limiting")
    assert response.headers["Retry-After"] == "2"


async def test_status_fault_504_is_not_json(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.add_fault("status", status=504)
    status, data, response = await generate(http, upstream)
    assert status == 504 and isinstance(data, str)
    assert response.content_type == "text/html"


async def test_status_fault_custom_message_and_body(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.add_fault("status", status=400, message="Invalid image_size")
    upstream.add_fault("status", status=503, body="upstream connect error")
    assert (await generate(http, upstream))[1]["message"] == "Invalid image_size"
    assert (await generate(http, upstream))[:2] == (503, "upstream connect error")


async def test_faults_apply_in_order_and_count(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.add_fault("status", count=2, status=503)
    upstream.add_fault("status", target="download", status=500)
    upstream.add_fault("status", status=500)
    statuses = [(await generate(http, upstream, image_size=SMALL))[0] for _ in range(4)]
    assert statuses == [503, 503, 500, 200]
    assert [fault.target for fault in upstream.pending_faults] == ["download"]
    assert upstream.clear_faults() == 1


async def test_drop_closes_the_connection(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.add_fault("drop")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await generate(http, upstream)
    assert upstream.requests[0].status is None
    assert upstream.stats["generate_dropped"] == 1
    assert (await generate(http, upstream, image_size=SMALL))[0] == 200


async def test_hang_outlasts_the_client_timeout(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.add_fault("hang")
    with pytest.raises(asyncio.TimeoutError):
        await generate(http, upstream, timeout=0.2)


async def test_short_hang_then_answers(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.add_fault("hang", seconds=0.2)
    started = time.perf_counter()
    status, _, _ = await generate(http, upstream, image_size=SMALL)
    assert status == 200 and time.perf_counter() - started >= 0.2


async def test_malformed_json(upstream: FakeSiliconFlow, http: aiohttp.ClientSession) -> None:
    upstream.add_fault("malformed")
    status, data, response = await generate(http, upstream)
    assert (status, data) == (200, '{"images": [')
    assert response.content_type == "application/json"


async def test_no_images(upstream: FakeSiliconFlow, http: aiohttp.ClientSession) -> None:
    upstream.add_fault("no_images")
    status, data, _ = await generate(http, upstream)
    assert status == 200 and data["images"] == []


async def test_expired_images_fault(upstream: FakeSiliconFlow, http: aiohttp.ClientSession) -> None:
    upstream.add_fault("expired_images")
    status, data, _ = await generate(http, upstream, image_size=SMALL)
    assert status == 200
    assert (await download(http, data["images"][0]["url"]))[0] == 404


async def test_download_faults(upstream: FakeSiliconFlow, http: aiohttp.ClientSession) -> None:
    _, data, _ = await generate(http, upstream, image_size=SMALL)
    url = data["images"][0]["url"]
    upstream.add_fault("status", target="download", status=503)
    # aiohttp's client silently retries a GET once when the server disconnects.
    upstream.add_fault("drop", count=2, target="download")
    upstream.add_fault("malformed", target="download")
    upstream.add_fault("hang", target="download")

    assert (await download(http, url))[0] == 503
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await download(http, url)
    status, truncated, _ = await download(http, url)
    assert status == 200
    with pytest.raises(OSError):
        Image.open(io.BytesIO(truncated)).load()
    with pytest.raises(asyncio.TimeoutError):
        await http.get(url, timeout=aiohttp.ClientTimeout(total=0.2))
    assert (await download(http, url))[0] == 200
    downloads = upstream.downloads
    assert len(downloads) == 6
    assert [(d.fault, d.status) for d in downloads[:4]] == [
        ("status", 503),
        ("drop", None),
        ("drop", None),
        ("malformed", 200),
    ]
    assert downloads[0].authorization is None
    assert upstream.stats["downloads_dropped"] == 2
    assert upstream.requests[0].fault is None


@pytest.mark.parametrize(
    ("kind", "target", "params"),
    [
        ("explode", "generate", {}),
        ("no_images", "download", {}),
        ("status", "generate", {}),
        ("status", "generate", {"status": 200}),
        ("hang", "generate", {"seconds": -1}),
        ("drop", "generate", {"seconds": 1}),
        ("drop", "upload", {}),
    ],
)
def test_invalid_faults_are_refused(kind: str, target: str, params: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FakeSiliconFlow().add_fault(kind, target=target, **params)


def test_invalid_config_is_refused() -> None:
    with pytest.raises(ValueError):
        FakeSiliconFlow(image_format="gif")
    fake = FakeSiliconFlow()
    with pytest.raises(ValueError):
        fake.configure(latency=0.5, colour="blue")
    assert fake.config.latency == 0.0


async def test_http_control_surface(upstream: FakeSiliconFlow, http: aiohttp.ClientSession) -> None:
    control = f"{upstream.origin}/_fake"
    fault = {"kind": "status", "count": 2, "params": {"status": 429, "retry_after": 1}}
    async with http.post(f"{control}/faults", json=fault) as response:
        assert response.status == 201
        assert await response.json() == {**fault, "target": "generate"}
    async with http.post(f"{control}/faults", json={"kind": "drop", "target": "download"}) as resp:
        assert resp.status == 201
    async with http.post(f"{control}/faults", json={"kind": "nope"}) as response:
        assert response.status == 400
        assert "kind" in (await response.json())["error"]
    async with http.get(f"{control}/faults") as response:
        assert [f["kind"] for f in await response.json()] == ["status", "drop"]
    assert (await generate(http, upstream))[0] == 429
    async with http.delete(f"{control}/faults") as response:
        assert await response.json() == {"cleared": 2}

    async with http.put(f"{control}/config", json={"image_format": "jpeg"}) as response:
        assert (await response.json())["image_format"] == "jpeg"
    async with http.put(f"{control}/config", json={"latency": -1}) as response:
        assert response.status == 400
    _, data, _ = await generate(http, upstream, image_size=SMALL)
    url = data["images"][0]["url"]
    assert (await download(http, url))[2] == "image/jpeg"

    async with http.get(f"{control}/requests") as response:
        recorded = await response.json()
    assert [r["status"] for r in recorded] == [429, 200]
    assert recorded[1]["headers"]["authorization"] == f"Bearer {KEY}"
    assert recorded[1]["body"]["image_size"] == SMALL
    async with http.get(f"{control}/stats") as response:
        stats = await response.json()
    assert stats["generate_requests"] == 2 and stats["downloads_ok"] == 1
    async with http.post(f"{control}/expire") as response:
        assert await response.json() == {"expired": 1}
    assert (await download(http, url))[0] == 404
    async with http.delete(f"{control}/requests") as response:
        assert await response.json() == {"cleared": 2}
    assert upstream.requests == []


async def test_runs_on_its_own_thread(http: aiohttp.ClientSession) -> None:
    with FakeSiliconFlow(api_key="sk-other") as fake:
        assert fake.base_url.startswith("http://127.0.0.1:") and fake.base_url.endswith("/v1")
        fake.add_fault("status", status=503)
        status, _, _ = await generate(http, fake, headers={"Authorization": "Bearer sk-other"})
        assert status == 503
        status, _, _ = await generate(
            http, fake, headers={"Authorization": "Bearer sk-other"}, image_size=SMALL
        )
        assert status == 200
    with pytest.raises(RuntimeError):
        _ = fake.base_url


async def test_stop_does_not_wait_for_hanging_requests(http: aiohttp.ClientSession) -> None:
    fake = FakeSiliconFlow()
    await fake.start_async()
    fake.add_fault("hang")
    request = asyncio.ensure_future(generate(http, fake))
    while fake.stats["in_flight"] == 0:
        await asyncio.sleep(0.01)
    started = time.perf_counter()
    await fake.stop_async()
    assert time.perf_counter() - started < 1
    with pytest.raises(aiohttp.ClientConnectionError):
        await request


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::"])
async def test_binds_loopback_only(host: str) -> None:
    fake = FakeSiliconFlow()
    with pytest.raises(ValueError, match="loopback"):
        fake.start(host=host)
    with pytest.raises(ValueError, match="loopback"):
        await fake.start_async(host=host)


def test_run_fake_upstream_prints_its_url_and_stops_on_sigterm() -> None:
    code = "from sfproxy.fake_upstream import run_fake_upstream; run_fake_upstream(latency=0.01)"
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
    assert (process.returncode, stdout, stderr) == (0, "", "")
