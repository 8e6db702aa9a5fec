"""The fake SiliconFlow's video API, driven over real HTTP on loopback: each job's life, the
checks on a submit, the controls, expiring result URLs, billing, faults, and the MP4 itself
(opened with PyAV, and played by Chromium)."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import av
import httpx
import orjson
import pytest
from PIL import Image, ImageStat

from sfproxy.fake_upstream import FakeSiliconFlow
from sfproxy.fake_upstream.video_jobs import MAX_INPUT_IMAGE_BYTES

from .images import data_uri, image_bytes
from .support.browser import system_chromium
from .support.inprocess import eventually

KEY = "sk-fake-upstream"
AUTH = {"Authorization": f"Bearer {KEY}"}
T2V = "Wan-AI/Wan2.2-T2V-A14B"
I2V = "Wan-AI/Wan2.2-I2V-A14B"
WIDE = "1280x720"


RED = data_uri(image_bytes("PNG", (160, 90), "red"))


@pytest.fixture
async def upstream() -> AsyncIterator[FakeSiliconFlow]:
    async with FakeSiliconFlow() as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: Any,
    headers: dict[str, str] | None = None,
    timeout: float | None = None,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    async with http.post(
        url,
        # A stream, since aiohttp warns of large bodies given as bytes.
        data=io.BytesIO(raw),
        headers={**(AUTH if headers is None else headers), "Content-Type": "application/json"},
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as response:
        text = await response.text()
        try:
            data: Any = await response.json(content_type=None)
        except ValueError:
            data = text
        return response.status, data, response


async def submit(
    http: aiohttp.ClientSession,
    fake: FakeSiliconFlow,
    key: str = KEY,
    **fields: Any,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """Submit a text-to-video by default; a `None` field is left out."""
    body = {"model": T2V, "prompt": "a fox in the snow", "image_size": WIDE, **fields}
    body = {name: value for name, value in body.items() if value is not None}
    return await post(
        http, f"{fake.base_url}/video/submit", body, {"Authorization": f"Bearer {key}"}
    )


async def submitted(http: aiohttp.ClientSession, fake: FakeSiliconFlow, **fields: Any) -> str:
    status, data, _ = await submit(http, fake, **fields)
    assert status == 200, data
    assert set(data) == {"requestId"}
    request_id: str = data["requestId"]
    return request_id


async def status_of(
    http: aiohttp.ClientSession, fake: FakeSiliconFlow, request_id: str, key: str = KEY
) -> tuple[int, Any]:
    status, data, _ = await post(
        http,
        f"{fake.base_url}/video/status",
        {"requestId": request_id},
        {"Authorization": f"Bearer {key}"},
    )
    return status, data


async def finished(
    http: aiohttp.ClientSession, fake: FakeSiliconFlow, request_id: str, key: str = KEY
) -> dict[str, Any]:
    """Poll until the job is Succeed or Failed; its last status answer."""
    deadline = time.monotonic() + 10
    while True:
        status, data = await status_of(http, fake, request_id, key)
        assert status == 200, data
        if data["status"] in ("Succeed", "Failed"):
            return dict(data)
        assert time.monotonic() < deadline, f"{request_id} is still {data['status']}"
        await asyncio.sleep(0.02)


async def video_url(http: aiohttp.ClientSession, fake: FakeSiliconFlow, **fields: Any) -> str:
    answer = await finished(http, fake, await submitted(http, fake, **fields))
    assert answer["status"] == "Succeed", answer
    url: str = answer["results"]["videos"][0]["url"]
    return url


async def download(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes, str]:
    async with http.get(url) as response:
        return response.status, await response.read(), response.content_type


async def mp4(http: aiohttp.ClientSession, fake: FakeSiliconFlow, **fields: Any) -> bytes:
    status, content, content_type = await download(http, await video_url(http, fake, **fields))
    assert (status, content_type) == (200, "video/mp4")
    return content


def frames(content: bytes) -> tuple[str, int, int, list[Image.Image]]:
    """The codec, width and height of the clip's one video stream, and its decoded frames."""
    with av.open(io.BytesIO(content)) as container:
        [stream] = container.streams.video
        pictures = [frame.to_image() for frame in container.decode(stream)]
        return stream.codec_context.name, stream.width, stream.height, pictures


def job(fake: FakeSiliconFlow, request_id: str) -> Any:
    [record] = [record for record in fake.videos.jobs() if record.request_id == request_id]
    return record


async def test_a_job_queues_with_its_position_then_progresses_then_succeeds(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.configure(video_queue_seconds=0.5, video_progress_seconds=0.5)
    first = await submitted(http, upstream)
    second = await submitted(http, upstream, seed=1234)

    assert await status_of(http, upstream, first) == (
        200,
        {"status": "InQueue", "reason": "", "position": 1, "results": None},
    )
    assert (await status_of(http, upstream, second))[1]["position"] == 2

    async def status_is(wanted: str) -> None:
        deadline = time.monotonic() + 5
        while (await status_of(http, upstream, second))[1]["status"] != wanted:
            assert time.monotonic() < deadline, f"never {wanted}"
            await asyncio.sleep(0.02)

    await status_is("InProgress")
    assert (await status_of(http, upstream, second))[1] == {
        "status": "InProgress",
        "reason": "",
        "results": None,
    }
    answer = await finished(http, upstream, second)
    assert set(answer) == {"status", "reason", "results"}
    assert (answer["status"], answer["reason"]) == ("Succeed", "")
    results = answer["results"]
    assert set(results) == {"videos", "timings", "seed"}
    assert results["seed"] == 1234
    assert 0.45 <= results["timings"]["inference"] <= 0.55
    [video] = results["videos"]
    assert video["url"].startswith(f"{upstream.origin}/videos/")
    expires = int(video["url"].split("Expires=")[1].split("&")[0])
    assert 590 < expires - time.time() <= 600

    record = job(upstream, second)
    assert (record.model, record.prompt, record.image_size, record.seed) == (
        T2V,
        "a fox in the snow",
        WIDE,
        1234,
    )
    assert (record.account, record.has_image, record.status) == ("fake-account", False, "Succeed")
    assert len(record.status_calls) >= 4
    assert list(record.status_calls) == sorted(record.status_calls)
    assert upstream.requests[1].body["seed"] == 1234
    assert upstream.stats["video_submits"] == 2


@pytest.mark.parametrize(
    ("fields", "code", "message"),
    [
        ({"model": None}, 20015, "Invalid parameter model: model is required"),
        ({"model": "Qwen/Qwen-Image"}, 20012, "Model does not exist. Please check it carefully."),
        ({"model": "Wan-AI/Wan9"}, 20012, "Model does not exist. Please check it carefully."),
        ({"prompt": "  "}, 20015, "Invalid parameter prompt: prompt is required"),
        ({"negative_prompt": 3}, 20015, "Invalid parameter negative_prompt: must be a string"),
        ({"image_size": None}, 20015, "Invalid parameter image_size: must be one of 1280x720"),
        ({"image_size": "1024x1024"}, 20015, "Invalid parameter image_size: must be one of"),
        ({"seed": -1}, 20015, "Invalid parameter seed: must be an integer in [0, 9999999999]"),
        ({"seed": True}, 20015, "Invalid parameter seed"),
        ({"image": RED}, 20015, f"Invalid parameter image: {T2V} does not take an image"),
        ({"model": I2V}, 20015, f"Invalid parameter image: {I2V} requires an input image"),
        ({"model": I2V, "image": 7}, 20015, "Invalid parameter image: must be a data URI"),
        (
            {"model": I2V, "image": "ftp://x/y.png"},
            20015,
            "Invalid parameter image: must be a data:image/...;base64, URI",
        ),
        (
            {"model": I2V, "image": "data:image/png;base64,@@@@"},
            20015,
            "Invalid parameter image: the data URI is not a valid image",
        ),
        (
            {"model": I2V, "image": "data:image/png;base64," + base64.b64encode(b"no").decode()},
            20015,
            "Invalid parameter image: the data URI is not a valid image",
        ),
        (
            # Refused on its length: never decoded.
            {"model": I2V, "image": "data:image/png;base64," + "A" * 2 * MAX_INPUT_IMAGE_BYTES},
            20015,
            "Invalid parameter image: larger than 10 MB",
        ),
    ],
)
async def test_a_submit_is_checked_as_siliconflow_does(
    upstream: FakeSiliconFlow,
    http: aiohttp.ClientSession,
    fields: dict[str, Any],
    code: int,
    message: str,
) -> None:
    status, data, _ = await submit(http, upstream, **fields)
    assert status == 400
    assert (data["code"], data["data"]) == (code, None)
    assert data["message"].startswith(message), data["message"]
    assert upstream.videos.jobs() == []


async def test_a_submit_needs_a_known_key_and_a_json_body(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    assert (await submit(http, upstream, key="sk-wrong"))[:2] == (401, "Invalid token")
    status, data, _ = await post(http, f"{upstream.base_url}/video/submit", b"{not json")
    assert (status, data["message"]) == (400, "Invalid request body: not valid JSON")
    status, data, _ = await post(http, f"{upstream.base_url}/video/status", {"request": "x"})
    assert (status, data["message"]) == (400, "Invalid parameter requestId: requestId is required")
    assert upstream.videos.jobs() == []


async def test_image_to_video_takes_a_data_uri_or_a_url_it_does_not_fetch(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    from_uri = await submitted(http, upstream, model=I2V, image=RED)
    from_url = await submitted(http, upstream, model=I2V, image="https://example.com/cat.png")
    assert [job(upstream, from_uri).has_image, job(upstream, from_url).has_image] == [True, True]
    for request_id in (from_uri, from_url):
        assert (await finished(http, upstream, request_id))["status"] == "Succeed"
    assert [d.path for d in upstream.downloads] == []


async def test_fail_next_fails_that_many_jobs_with_the_reason_and_bills_none(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.videos.fail_next(reason="The prompt was flagged by moderation", count=2)
    failed = [await submitted(http, upstream) for _ in range(2)]
    succeeded = await submitted(http, upstream)
    for request_id in failed:
        assert await finished(http, upstream, request_id) == {
            "status": "Failed",
            "reason": "The prompt was flagged by moderation",
            "results": None,
        }
        assert job(upstream, request_id).reason == "The prompt was flagged by moderation"
    assert (await finished(http, upstream, succeeded))["status"] == "Succeed"
    assert upstream.billing.images(T2V) == 1
    assert upstream.billing.billed(T2V) == Decimal("2")


async def test_hold_keeps_jobs_in_progress_until_release_finishes_them_at_once(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    # Due the moment it is submitted, so only the hold keeps it running.
    upstream.configure(video_progress_seconds=0.0)
    upstream.videos.hold()
    request_id = await submitted(http, upstream)
    for _ in range(3):
        assert (await status_of(http, upstream, request_id))[1]["status"] == "InProgress"
    assert upstream.billing.images(T2V) == 0

    upstream.configure(video_progress_seconds=60.0)
    slow = await submitted(http, upstream)
    upstream.videos.release()
    for each in (request_id, slow):
        status, data = await status_of(http, upstream, each)
        assert (status, data["status"]) == (200, "Succeed")
    assert upstream.billing.images(T2V) == 2
    assert not upstream.videos.held


async def test_a_job_nobody_polls_still_succeeds_and_is_billed_on_time(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.configure(video_progress_seconds=0.1)
    await submitted(http, upstream)
    await eventually(lambda: upstream.billing.images(T2V) == 1, what="the video billed")


async def test_result_urls_expire_after_their_ttl_or_on_demand_and_downloads_are_counted(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    first = await submitted(http, upstream)
    second = await submitted(http, upstream)
    urls = {}
    for request_id in (first, second):
        urls[request_id] = (await finished(http, upstream, request_id))["results"]["videos"][0][
            "url"
        ]
    for _ in range(2):
        assert (await download(http, urls[first]))[0] == 200
    assert [job(upstream, first).downloads, job(upstream, second).downloads] == [2, 0]

    assert upstream.videos.expire(first) == 1
    status, body, content_type = await download(http, urls[first])
    assert (status, content_type) == (403, "application/xml")
    assert b"<Code>AccessDenied</Code>" in body and b"Request has expired." in body
    assert job(upstream, first).downloads == 2
    assert (await download(http, urls[second]))[0] == 200
    assert (await download(http, f"{upstream.origin}/videos/nothing.mp4"))[0] == 404

    upstream.configure(video_url_ttl_seconds=0.3)
    short = await video_url(http, upstream)
    assert (await download(http, short))[0] == 200
    deadline = time.monotonic() + 5
    while (await download(http, short))[0] == 200:
        assert time.monotonic() < deadline, "the URL never expired"
        await asyncio.sleep(0.05)
    assert (await download(http, short))[0] == 403

    # Expired before it succeeded: the URL it hands out never works.
    upstream.configure(video_url_ttl_seconds=600.0)
    upstream.videos.hold()
    late = await submitted(http, upstream)
    upstream.videos.expire(late)
    upstream.videos.release()
    url = (await finished(http, upstream, late))["results"]["videos"][0]["url"]
    assert (await download(http, url))[0] == 403
    with pytest.raises(ValueError, match="unknown requestId"):
        upstream.videos.expire("no-such-job")


async def test_only_the_submitting_account_sees_a_job(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.accounts.add("acct-a", keys=["sk-a1", "sk-a2"])
    upstream.accounts.add("acct-b", keys=["sk-b"])
    request_id = await submitted(http, upstream, key="sk-a1")

    not_found = (
        400,
        {
            "code": 20015,
            "message": "Invalid parameter requestId: the request does not exist",
            "data": None,
        },
    )
    assert await status_of(http, upstream, request_id, key="sk-b") == not_found
    assert await status_of(http, upstream, "no-such-request", key="sk-b") == not_found
    assert (await status_of(http, upstream, request_id, key="sk-fake-upstream"))[0] == 401
    # Another key of the same account does see it.
    assert (await finished(http, upstream, request_id, key="sk-a2"))["status"] == "Succeed"
    record = job(upstream, request_id)
    assert record.account == "acct-a"
    assert upstream.billing.totals()["accounts"] == {"acct-a": {"images": 1, "amount": "2"}}
    assert upstream.billing.billed_account("acct-b") == Decimal(0)


async def test_a_submit_counts_against_the_account_as_a_generation_does(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.accounts.add("acct-a", keys=["sk-a"], images_per_minute=1)
    upstream.accounts.add("acct-poor", keys=["sk-poor"], balance=0)
    await submitted(http, upstream, key="sk-a")
    status, data, response = await submit(http, upstream, key="sk-a")
    assert (status, data["data"]) == (429, "Rate limit exceeded: IPM")
    assert int(response.headers["Retry-After"]) >= 1
    status, data, _ = await submit(http, upstream, key="sk-poor")
    assert (status, data["code"]) == (403, 30001)
    assert len(upstream.videos.jobs()) == 1


async def test_billed_at_the_price_when_the_job_succeeds_and_not_before(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    upstream.billing.set_prices({I2V: "2.5"})
    upstream.videos.hold()
    request_id = await submitted(http, upstream, model=I2V, image=RED)
    assert upstream.billing.totals()["total"] == "0"
    upstream.videos.release()
    assert (await finished(http, upstream, request_id))["status"] == "Succeed"
    totals = upstream.billing.totals()
    assert (totals["currency"], totals["total"]) == ("CNY", "2.5")
    assert totals["models"] == {I2V: {"images": 1, "amount": "2.5"}}


@pytest.mark.parametrize("target", ["video_submit", "video_status"])
async def test_status_faults_answer_as_siliconflow_with_retry_after(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession, target: str
) -> None:
    request_id = await submitted(http, upstream)
    upstream.add_fault("status", target=target, status=429, retry_after=3)
    upstream.add_fault("status", target=target, status=503)
    call = (
        (lambda: submit(http, upstream))
        if target == "video_submit"
        else (lambda: post(http, f"{upstream.base_url}/video/status", {"requestId": request_id}))
    )
    status, data, response = await call()
    assert (status, response.headers["Retry-After"]) == (429, "3")
    assert data["data"] == "Rate limit exceeded: IPM limit reached"
    status, data, _ = await call()
    assert (status, data["code"]) == (503, 50505)
    # The faults are used up; the other target never saw them.
    assert (await call())[0] == 200
    assert len(upstream.videos.jobs()) == (2 if target == "video_submit" else 1)
    assert upstream.stats["faults_applied"] == 2


@pytest.mark.parametrize("target", ["video_submit", "video_status"])
async def test_drop_hang_and_malformed_faults(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession, target: str
) -> None:
    request_id = await submitted(http, upstream)
    url = f"{upstream.base_url}/video/{'submit' if target == 'video_submit' else 'status'}"
    body = (
        {"model": T2V, "prompt": "a fox", "image_size": WIDE}
        if target == "video_submit"
        else {"requestId": request_id}
    )
    upstream.add_fault("drop", target=target)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(http, url, body)
    upstream.add_fault("malformed", target=target)
    status, data, _ = await post(http, url, body)
    assert status == 200 and isinstance(data, str) and data.startswith('{"requestId": ')
    upstream.add_fault("hang", target=target, seconds=0.5)
    with pytest.raises(asyncio.TimeoutError):
        await post(http, url, body, timeout=0.2)
    if target == "video_submit":
        # The client gave up, but the submit went on and made its job: SiliconFlow's case of
        # a submit that timed out and may yet be billed. Drops and malformed answers made none.
        await eventually(lambda: len(upstream.videos.jobs()) == 2, what="the hung submit ran")
    upstream.add_fault("hang", target=target, seconds=0.2)
    started = time.monotonic()
    status, data, _ = await post(http, url, body)
    assert status == 200 and time.monotonic() - started >= 0.2
    assert len(upstream.videos.jobs()) == (3 if target == "video_submit" else 1)


async def test_video_download_faults(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    url = await video_url(http, upstream)
    upstream.add_fault("status", target="video_download", status=503)
    upstream.add_fault("malformed", target="video_download")
    assert (await download(http, url))[0] == 503
    status, content, _ = await download(http, url)
    whole = (await download(http, url))[1]
    assert status == 200 and content == whole[: len(whole) // 2]
    assert job(upstream, upstream.videos.jobs()[0].request_id).downloads == 1


async def test_the_clip_is_h264_at_the_scaled_size_with_fps_times_seconds_frames(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    for image_size, size in (
        ("1280x720", (160, 90)),
        ("720x1280", (90, 160)),
        ("960x960", (120, 120)),
    ):
        codec, width, height, pictures = frames(await mp4(http, upstream, image_size=image_size))
        assert (codec, (width, height), len(pictures)) == ("h264", size, 16)
    first, last = pictures[0], pictures[-1]
    # Not one colour, and moving.
    assert len(first.getcolors(maxcolors=100_000) or []) > 50
    assert first.tobytes() != last.tobytes()

    upstream.configure(video_fps=4, video_seconds=1.5, video_scale=4)
    codec, width, height, pictures = frames(await mp4(http, upstream, prompt="a slower fox"))
    assert (codec, width, height, len(pictures)) == ("h264", 320, 180, 6)


async def test_two_prompts_make_different_clips_and_the_same_prompt_the_same(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    fox = frames(await mp4(http, upstream, prompt="a fox"))[3]
    owl = frames(await mp4(http, upstream, prompt="an owl at night"))[3]
    again = frames(await mp4(http, upstream, prompt="a fox"))[3]
    assert fox[0].tobytes() != owl[0].tobytes()
    assert fox[0].tobytes() == again[0].tobytes()
    assert upstream.stats["clip_cache_hits"] == 1


async def test_image_to_video_frames_show_the_input_image(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    _, _, _, pictures = frames(await mp4(http, upstream, model=I2V, image=RED))
    red, green, blue = ImageStat.Stat(pictures[0]).median
    assert red > 200 and green < 60 and blue < 60


async def test_the_video_controls_over_http(
    upstream: FakeSiliconFlow, http: aiohttp.ClientSession
) -> None:
    control = f"{upstream.origin}/_fake/videos"
    assert (await post(http, f"{control}/hold", b""))[:2] == (200, {"held": True})
    request_id = await submitted(http, upstream)
    status, data, _ = await post(http, f"{control}/fail_next", {"reason": "no", "count": 0})
    assert (status, data) == (400, {"error": "count must be an integer >= 1"})
    assert (await post(http, f"{control}/fail_next", {"reason": "nope"}))[0] == 201
    failing = await submitted(http, upstream)
    assert (await post(http, f"{control}/expire", {"request_id": request_id}))[1] == {"expired": 1}
    assert (await post(http, f"{control}/release", b""))[1] == {"held": False}

    async with http.get(control) as response:
        listed = await response.json()
    assert [(j["request_id"], j["status"], j["reason"]) for j in listed] == [
        (request_id, "Succeed", ""),
        (failing, "Failed", "nope"),
    ]
    assert set(listed[0]) == {
        "request_id",
        "account",
        "model",
        "prompt",
        "negative_prompt",
        "image_size",
        "has_image",
        "seed",
        "status",
        "reason",
        "status_calls",
        "downloads",
    }
    url = (await finished(http, upstream, request_id))["results"]["videos"][0]["url"]
    assert (await download(http, url))[0] == 403
    async with http.delete(control) as response:
        assert await response.json() == []
    assert upstream.videos.jobs() == []
    async with http.put(f"{upstream.origin}/_fake/config", json={"video_fps": 0}) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "video_fps must be an integer in [1, 30]"


def test_video_config_is_checked() -> None:
    fake = FakeSiliconFlow()
    for field, value in (
        ("video_seconds", 0),
        ("video_seconds", 11),
        ("video_scale", 0),
        ("video_fps", 1.5),
        ("video_queue_seconds", -1),
    ):
        with pytest.raises(ValueError, match=field):
            fake.configure(**{field: value})
    fake.configure(video_seconds=1, video_queue_seconds=2)
    assert (fake.config.video_seconds, fake.config.video_queue_seconds) == (1.0, 2.0)


@pytest.mark.browser
def test_chromium_plays_the_clip() -> None:
    with FakeSiliconFlow(video_progress_seconds=0.0) as fake, httpx.Client(headers=AUTH) as client:
        submitted = client.post(
            f"{fake.base_url}/video/submit",
            json={"model": T2V, "prompt": "a fox", "image_size": WIDE},
        ).json()
        answer: dict[str, Any] = {}
        deadline = time.monotonic() + 10
        while answer.get("status") != "Succeed":
            assert time.monotonic() < deadline, answer
            answer = client.post(f"{fake.base_url}/video/status", json=submitted).json()
        url = answer["results"]["videos"][0]["url"]
        with system_chromium() as browser:
            page = browser.new_page()
            # The page comes from the fake itself, so the video is same-origin.
            page.goto(f"{fake.origin}/_fake/stats")
            page.set_content(f'<video src="{url}" muted preload="auto"></video>')
            page.wait_for_function(
                "() => document.querySelector('video').readyState >= 2", timeout=15_000
            )
            duration, width, height = page.eval_on_selector(
                "video", "v => [v.duration, v.videoWidth, v.videoHeight]"
            )
            played = page.evaluate(
                """() => new Promise((resolve, reject) => {
                    const video = document.querySelector('video');
                    video.onended = () => resolve(video.currentTime);
                    video.onerror = () => reject(String(video.error && video.error.message));
                    video.play().catch(reject);
                })"""
            )
    assert abs(duration - 2.0) <= 1 / 8
    assert (width, height) == (160, 90)
    assert abs(played - 2.0) <= 1 / 8
