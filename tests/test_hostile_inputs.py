"""Hostile inputs are harmless: each is a clear 400 (or an answer), fast, in bounded memory.

In-process tests drive `create_app(settings)` through `httpx.ASGITransport`, with the fake
SiliconFlow started in the same loop. What needs a real server process (the event loop's
latency seen from outside, the process's peak memory) runs against `sfproxy serve`.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import struct
import threading
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from PIL import Image

from sfproxy.app import create_app
from sfproxy.chat import inline_options, previous_image
from sfproxy.errors import UpstreamBadResponseError
from sfproxy.fake_upstream import FakeSiliconFlow
from sfproxy.observability import JsonFormatter, TextFormatter
from sfproxy.protocol import ChatMessage
from sfproxy.render.chat import markdown_data_uri
from sfproxy.settings import Settings

from .conftest import UPSTREAM_KEY
from .images import data_uri, decoded, image_bytes
from .support.inprocess import service_settings, serving

EDIT_MODEL = "Qwen/Qwen-Image-Edit"


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` x `height` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def gif_bytes(size: tuple[int, int], colours: tuple[str, ...] = ("red",)) -> bytes:
    """A GIF of one frame per colour (large solid frames compress to almost nothing)."""
    frames = [Image.new("P", size, 0) for _ in colours]
    for frame, colour in zip(frames, colours, strict=True):
        frame.putpalette(list(Image.new("RGB", (1, 1), colour).getpixel((0, 0))) + [0] * 765)
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=len(frames) > 1, append_images=frames[1:])
    return out.getvalue()


PNG_BOMB = png_claiming(100_000, 100_000)
GIF_BOMB = gif_bytes((12_000, 12_000))


@pytest.fixture
async def upstream() -> AsyncIterator[FakeSiliconFlow]:
    fake = FakeSiliconFlow(api_key=UPSTREAM_KEY)
    await fake.start_async()
    yield fake
    await fake.stop_async()


async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(settings)) as client:
        yield client


@pytest.fixture
async def api(upstream: FakeSiliconFlow, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for client in app_client(service_settings(upstream, tmp_path)):
        yield client


def chat_body(messages: list[dict], model: str = EDIT_MODEL) -> dict:
    return {"model": model, "messages": messages}


def image_message(text: str, url: str) -> dict:
    parts = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]
    return {"role": "user", "content": parts}


def error_of(response: httpx.Response) -> dict:
    error: dict = response.json()["error"]
    return error


# The regular expressions: linear over any text.


def test_markdown_image_search_is_linear_over_a_hostile_history():
    # 40 KB of this froze the service for 14 s with the backtracking regex; this is 50 times more.
    messages = [
        ChatMessage(role="assistant", content="![a](" * 400_000),
        ChatMessage(role="user", content="now make it blue"),
    ]
    started = time.perf_counter()
    assert previous_image(messages) is None
    assert time.perf_counter() - started < 0.5


def test_markdown_image_search_still_finds_images():
    messages = [
        ChatMessage(role="assistant", content='![a](x y) ![a](<http://h/1.png> "title") ![b](z)'),
        ChatMessage(role="user", content="again"),
    ]
    assert previous_image(messages) == "http://h/1.png"
    hostile_then_real = "![a](" * 1000 + "x y ![image](http://h/2.png)"
    assert previous_image([ChatMessage(role="assistant", content=hostile_then_real)]) == (
        "http://h/2.png"
    )


@pytest.mark.parametrize(
    "prompt",
    ['--neg "' * 5000, "--n " * 8000, "--ar" + " " * 31_000 + "x", '--neg "a" ' * 3000],
)
def test_inline_options_are_linear_over_hostile_prompts(prompt):
    started = time.perf_counter()
    try:
        inline_options(prompt)
    except Exception as exc:  # a 400 for a missing value is a fine answer
        assert "needs a value" in str(exc)
    assert time.perf_counter() - started < 0.1


async def test_adversarial_history_is_a_quick_answer(api):
    body = chat_body(
        [{"role": "assistant", "content": "![a](" * 8000}, {"role": "user", "content": "blue"}]
    )
    started = time.perf_counter()
    response = await api.post("/v1/chat/completions", json=body)
    assert time.perf_counter() - started < 1.0
    assert response.status_code == 400
    assert "input image" in error_of(response)["message"]


async def test_data_uri_without_a_comma_is_refused_at_once(api):
    uri = "data:image/png;" + "a;" * 3_000_000
    started = time.perf_counter()
    response = await api.post(
        "/v1/images/edits", json={"model": EDIT_MODEL, "prompt": "p", "image": uri}
    )
    assert time.perf_counter() - started < 1.0
    assert response.status_code == 400
    assert error_of(response)["param"] == "image"
    assert "not a base64 data URI" in error_of(response)["message"]


# Prompt length, message count and body shape.


async def test_chat_prompt_has_the_images_api_length_limit(api, upstream):
    long = await api.post(
        "/v1/chat/completions",
        json=chat_body([{"role": "user", "content": "a" * 32_001}], "Qwen/Qwen-Image"),
    )
    assert long.status_code == 400
    assert error_of(long)["param"] == "messages"
    assert "32,000" in error_of(long)["message"]
    assert upstream.requests == []
    exact = await api.post(
        "/v1/chat/completions",
        json=chat_body([{"role": "user", "content": "a" * 32_000}], "Qwen/Qwen-Image"),
    )
    assert exact.status_code == 200
    assert upstream.requests[-1].body["prompt"] == "a" * 32_000


async def test_message_count_is_capped_by_a_setting(upstream, tmp_path):
    async for api in app_client(service_settings(upstream, tmp_path, max_chat_messages=3)):
        messages = [{"role": "user", "content": f"turn {i}"} for i in range(4)]
        response = await api.post(
            "/v1/chat/completions", json=chat_body(messages, "Qwen/Qwen-Image")
        )
        assert response.status_code == 400
        assert error_of(response)["param"] == "messages"
        assert "MAX_CHAT_MESSAGES" in error_of(response)["message"]
        fine = await api.post(
            "/v1/chat/completions", json=chat_body(messages[:3], "Qwen/Qwen-Image")
        )
        assert fine.status_code == 200
        assert upstream.requests[-1].body["prompt"] == "turn 2"


async def test_half_a_million_tiny_messages_are_refused_before_parsing(api, upstream):
    body = orjson.dumps(chat_body([{"role": "user", "content": "a"}] * 500_000))
    started = time.perf_counter()
    response = await api.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert time.perf_counter() - started < 2.0
    assert response.status_code == 400
    assert "100,000 JSON items" in error_of(response)["message"]
    assert upstream.requests == []


async def test_large_chat_body_with_escapes_and_images_is_parsed_exactly(api, upstream):
    png = image_bytes("PNG", (32, 32), "green")
    history = [
        {"role": "user", "content": 'line one\nline "two" \\ ' * 20_000},
        {"role": "assistant", "content": "![image](" + data_uri(png) + ")"},
        {"role": "user", "content": [{"type": "text", "text": "make it \u00e9 blue \U0001f600"}]},
    ]
    # A big history forces the strings to be parsed apart from the rest of the document.
    history = [{"role": "user", "content": "x" * 1_000_000}] * 3 + history
    response = await api.post("/v1/chat/completions", json=chat_body(history))
    assert response.status_code == 200, response.text
    sent = upstream.requests[-1].body
    assert sent["prompt"] == "make it \u00e9 blue \U0001f600"
    assert decoded(sent["image"]) == png


@pytest.mark.parametrize(
    "body, expected",
    [
        (b'{"model": "m", "messages": [', "not valid JSON"),
        (b'{"messages": "x" "y"}', "not valid JSON"),
        (b'["messages"]', "must be a JSON object"),
        (b'{"model": "m"}', "Missing required parameter: 'messages'"),
        (b'{"messages": [{"content": "x"}]}', "messages.0.role"),
        (b'{"messages": [{"role": "user", "content": "\xff"}]}', "not valid JSON"),
    ],
)
async def test_malformed_chat_bodies_are_400(api, body, expected):
    response = await api.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert expected in error_of(response)["message"]


# Lone surrogates.


SURROGATE_PROMPT = b'"a\\ud800"'


async def test_lone_surrogate_in_chat_is_400(api, upstream):
    body = b'{"model": "Qwen/Qwen-Image", "messages": [{"role": "user", "content": ' + (
        SURROGATE_PROMPT + b"}]}"
    )
    response = await api.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "surrogate" in error_of(response)["message"]
    assert upstream.requests == []


@pytest.mark.parametrize("path", ["/v1/images/generations", "/v1/images/edits"])
async def test_lone_surrogate_in_image_json_is_400(api, upstream, path):
    image = orjson.dumps(data_uri(image_bytes()))
    body = b'{"model": "' + EDIT_MODEL.encode() + b'", "prompt": ' + SURROGATE_PROMPT
    body += (b', "image": ' + image if path.endswith("edits") else b"") + b"}"
    if path.endswith("generations"):
        body = body.replace(EDIT_MODEL.encode(), b"Qwen/Qwen-Image")
    response = await api.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert error_of(response)["param"] in ("prompt", None)
    assert upstream.requests == []


# Images: the pixel limit before any decode.


async def test_png_bomb_upload_is_400_naming_the_image(api, upstream):
    response = await api.post(
        "/v1/images/edits",
        data={"model": EDIT_MODEL, "prompt": "p"},
        files={"image": ("bomb.png", PNG_BOMB, "image/png")},
    )
    assert response.status_code == 400
    assert error_of(response)["param"] == "image"
    assert "MAX_INPUT_PIXELS" in error_of(response)["message"]
    assert upstream.requests == []


async def test_png_bomb_in_edit_json_and_chat_is_400(api, upstream):
    edit = await api.post(
        "/v1/images/edits",
        json={
            "model": EDIT_MODEL,
            "prompt": "p",
            "image": [data_uri(image_bytes()), data_uri(PNG_BOMB)],
        },
    )
    assert edit.status_code == 400
    assert error_of(edit)["param"] == "image[1]"
    chat = await api.post(
        "/v1/chat/completions", json=chat_body([image_message("edit", data_uri(PNG_BOMB))])
    )
    assert chat.status_code == 400
    assert error_of(chat)["param"] == "messages"
    assert "MAX_INPUT_PIXELS" in error_of(chat)["message"]
    assert upstream.requests == []


async def test_gif_bomb_is_400_before_decoding(api, upstream):
    response = await api.post(
        "/v1/chat/completions",
        json=chat_body([image_message("edit", data_uri(GIF_BOMB, "image/gif"))]),
    )
    assert response.status_code == 400
    assert error_of(response)["param"] == "messages"
    assert "MAX_INPUT_PIXELS" in error_of(response)["message"]
    assert upstream.requests == []


async def test_pixel_limit_is_a_setting(upstream, tmp_path):
    async for api in app_client(service_settings(upstream, tmp_path, max_input_pixels=64 * 48 - 1)):
        response = await api.post(
            "/v1/images/edits",
            data={"model": EDIT_MODEL, "prompt": "p"},
            files={"image": ("a.png", image_bytes("PNG", (64, 48)), "image/png")},
        )
        assert response.status_code == 400
        assert "64x48" in error_of(response)["message"]


async def test_animated_gif_is_converted_from_its_first_frame_only(api, upstream):
    gif = gif_bytes((40, 30), ("red", "blue", "lime"))
    response = await api.post(
        "/v1/chat/completions", json=chat_body([image_message("edit", data_uri(gif, "image/gif"))])
    )
    assert response.status_code == 200
    sent = Image.open(io.BytesIO(decoded(upstream.requests[-1].body["image"])))
    assert sent.format == "PNG"
    assert (sent.size, getattr(sent, "n_frames", 1)) == ((40, 30), 1)
    assert sent.convert("RGB").getpixel((0, 0)) == (255, 0, 0)


async def test_damaged_image_is_400_not_500(api, upstream):
    damaged = image_bytes("PNG", (64, 64))[:60]
    response = await api.post(
        "/v1/images/edits",
        data={"model": EDIT_MODEL, "prompt": "p"},
        files={"image": ("a.gif", gif_bytes((64, 64))[:40], "image/gif")},
    )
    assert response.status_code == 400
    assert error_of(response)["param"] == "image"
    response = await api.post(
        "/v1/images/edits", json={"model": EDIT_MODEL, "prompt": "p", "image": data_uri(damaged)}
    )
    assert response.status_code == 400
    assert upstream.requests == []


async def test_bomb_read_back_from_the_store_is_400(upstream, tmp_path):
    settings = service_settings(upstream, tmp_path)
    name = "0123456789abcdef0123456789abcdef.png"
    (tmp_path / "images" / name[:2]).mkdir(parents=True)
    (tmp_path / "images" / name[:2] / name).write_bytes(PNG_BOMB)
    async for api in app_client(settings):
        url = f"http://proxy.test/v1/files/images/{name}"
        response = await api.post(
            "/v1/chat/completions",
            json=chat_body(
                [
                    {"role": "assistant", "content": f"![image]({url})"},
                    {"role": "user", "content": "blue"},
                ]
            ),
        )
        assert response.status_code == 400
        assert error_of(response)["param"] == "messages"
        assert "MAX_INPUT_PIXELS" in error_of(response)["message"]
        assert upstream.requests == []


async def test_generated_image_conversion_is_bounded_too():
    with pytest.raises(UpstreamBadResponseError, match="MAX_INPUT_PIXELS"):
        await markdown_data_uri(GIF_BOMB, "image/gif")
    small = await markdown_data_uri(gif_bytes((8, 8)), "image/gif")
    assert Image.open(io.BytesIO(decoded(small))).format == "PNG"


# Logs: one line per record, whatever the record holds.


def log_record(message: str, *args: object, fields: dict | None = None) -> logging.LogRecord:
    record = logging.LogRecord("sfproxy.access", logging.INFO, __file__, 1, message, args, None)
    record.fields = fields or {}
    try:
        raise ValueError("first line\nsecond line")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    return record


HOSTILE_TEXT = 'cat\n2026-01-01 INFO sfproxy.access: request status=200\r\u2028\x1b[31m "x" \ud800'


def test_text_log_lines_cannot_be_broken_or_forged():
    formatter = TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    line = formatter.format(
        log_record("failed on %s", "/v1/x\nforged", fields={"prompt": HOSTILE_TEXT, "status": 400})
    )
    assert len(line.splitlines()) == 1
    line.encode("utf-8")
    assert "failed on /v1/x\\nforged\\nTraceback" in line and "first line\\nsecond line" in line
    assert " status=400" in line
    assert line.count("status=") == 2  # the forged one sits inside the quoted prompt
    assert 'prompt="cat\\n2026-01-01 INFO sfproxy.access: request status=200\\r\\u2028' in line
    assert '\\x1b[31m \\"x\\" \\ud800"' in line


def test_json_log_lines_stay_one_valid_object():
    line = JsonFormatter().format(log_record("m %s", HOSTILE_TEXT, fields={"prompt": HOSTILE_TEXT}))
    assert len(line.splitlines()) == 1
    line.encode("utf-8")
    entry = json.loads(line)
    assert entry["prompt"] == HOSTILE_TEXT.replace("\ud800", "\ufffd")
    assert entry["exception"].endswith("ValueError: first line\nsecond line")


# Against a real server process: the event loop keeps answering, memory stays bounded.


class HealthzProbe:
    """Polls /healthz on its own connection from a thread, recording each answer's latency."""

    def __init__(self, url: str) -> None:
        self.url = url + "/healthz"
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                response = client.get(self.url)
                self.latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    self.failures.append(response.text)
                self._stop.wait(0.005)  # pacing between polls, not synchronisation

    def __enter__(self) -> HealthzProbe:
        self._thread.start()
        deadline = time.monotonic() + 10
        while len(self.latencies) < 3:
            assert time.monotonic() < deadline, "the probe got no answer from /healthz"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def hostile_bodies() -> dict[str, tuple[bytes, str]]:
    """Each hostile chat body, with a part of the 400 it must get."""
    assistant = {"role": "assistant", "content": "![a](" * 2_600_000}  # 13 MB, under the limit
    blue = {"role": "user", "content": "blue"}
    surrogate = (
        b'{"model": "Qwen/Qwen-Image", "messages": [{"role": "user", "content": "a\\ud800"}]}'
    )
    return {
        "adversarial history": (orjson.dumps(chat_body([assistant, blue])), "input image"),
        "32 MB adversarial string": (
            orjson.dumps(chat_body([{"role": "assistant", "content": "![a](" * 6_500_000}, blue])),
            "input image",
        ),
        "tiny messages": (
            orjson.dumps(chat_body([{"role": "user", "content": "a"}] * 1_100_000)),
            "JSON items",
        ),
        "png bomb": (
            orjson.dumps(chat_body([image_message("e", data_uri(PNG_BOMB))])),
            "MAX_INPUT_PIXELS",
        ),
        "surrogate": (surrogate, "surrogate"),
    }


@pytest.mark.slow
def test_hostile_bodies_leave_healthz_answering(start):
    proxy = start(LOG_LEVEL="warning")
    bodies = hostile_bodies()
    assert len(bodies["tiny messages"][0]) > 30 * 1024 * 1024
    with httpx.Client(base_url=proxy.api_base, timeout=60) as client:
        for name, (body, expected) in bodies.items():
            with HealthzProbe(proxy.url) as probe:
                response = client.post(
                    "/chat/completions", content=body, headers={"content-type": "application/json"}
                )
            assert response.status_code == 400, (name, response.text)
            assert expected in error_of(response)["message"], name
            assert probe.failures == []
            assert max(probe.latencies) < 0.1, (name, max(probe.latencies))


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/images/generations", "/images/edits"])
def test_hostile_image_bodies_leave_healthz_answering(start, path):
    # Clients spread every UI field into image bodies: a huge one is read in bounded steps too.
    proxy = start(LOG_LEVEL="warning")
    body = orjson.dumps({"prompt": "x", "image": "https://a/b.png", "extra": [1] * 8_000_000})
    assert len(body) > 15 * 1024 * 1024
    with httpx.Client(base_url=proxy.api_base, timeout=60) as client:
        with HealthzProbe(proxy.url) as probe:
            response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert "JSON items" in error_of(response)["message"]
    assert probe.failures == []
    assert max(probe.latencies) < 0.1, max(probe.latencies)


@pytest.mark.slow
async def test_eight_gif_bombs_at_once_leave_healthz_answering(start):
    proxy = start(LOG_LEVEL="warning")
    body = chat_body([image_message("edit", data_uri(GIF_BOMB, "image/gif"))])
    with HealthzProbe(proxy.url) as probe:
        async with httpx.AsyncClient(base_url=proxy.api_base, timeout=60) as client:
            answers = await asyncio.gather(
                *(client.post("/chat/completions", json=body) for _ in range(8))
            )
    assert [answer.status_code for answer in answers] == [400] * 8
    assert all("MAX_INPUT_PIXELS" in error_of(answer)["message"] for answer in answers)
    assert max(probe.latencies) < 0.1, max(probe.latencies)


def memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["tiny messages", "large strings"])
def test_a_32_mb_chat_body_costs_less_than_three_times_its_size(start, shape):
    # A process of its own, so no earlier request has raised its peak.
    proxy = start(LOG_LEVEL="warning", MAX_CHAT_MESSAGES=f"{1000 + len(shape)}")
    if shape == "tiny messages":
        body = orjson.dumps(chat_body([{"role": "user", "content": "a"}] * 1_100_000))
    else:
        history = [{"role": "assistant", "content": "a, b: " * 1_800_000}] * 3
        body = orjson.dumps(
            chat_body([*history, {"role": "user", "content": "a cat"}], "Qwen/Qwen-Image")
        )
    assert len(body) > 30 * 1024 * 1024
    pid = proxy.process.pid
    with httpx.Client(base_url=proxy.api_base, timeout=60) as client:
        assert client.get("/models").status_code == 200
        before = memory_kb(pid)["VmRSS"]
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        response = client.post(
            "/chat/completions", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == (400 if shape == "tiny messages" else 200), response.text
    peak = memory_kb(pid)["VmHWM"]
    assert (peak - before) * 1024 < 3 * len(body), (before, peak)
