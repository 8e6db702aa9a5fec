"""`POST /v1/chat/completions`, non-streamed and streamed, through the openai SDK."""

from __future__ import annotations

import base64
import re
import time

import httpx
import openai
import orjson
import pytest

MARKDOWN_IMAGE = re.compile(r"!\[image\]\(([^)]+)\)")


def test_prompt_is_the_latest_user_message(client, fake):
    answer = client.chat.completions.create(
        model="Qwen/Qwen-Image",
        messages=[
            {"role": "system", "content": "You are a helpful AI."},
            {"role": "user", "content": "an old prompt"},
            {"role": "assistant", "content": "![image](https://example.com/old.png)"},
            {"role": "user", "content": "画两张蓝色机器人，木质桌面，冷色调"},
        ],
    )
    assert fake.requests[-1].body["prompt"] == "画两张蓝色机器人，木质桌面，冷色调"
    message = answer.choices[0].message
    assert answer.object == "chat.completion"
    assert answer.choices[0].finish_reason == "stop"
    assert message.role == "assistant"
    assert answer.model == "Qwen/Qwen-Image"
    assert answer.model_extra["provider"] == "SiliconFlow"
    assert answer.usage is not None and answer.usage.total_tokens == 0
    urls = MARKDOWN_IMAGE.findall(message.content)
    assert len(urls) == 1
    assert httpx.get(urls[0]).headers["content-type"] == "image/png"


def test_text_parts_are_joined(client, fake):
    client.chat.completions.create(
        model="Qwen/Qwen-Image",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "a blue robot"},
                    {"type": "text", "text": "on a wooden desk"},
                ],
            }
        ],
    )
    assert fake.requests[-1].body["prompt"] == "a blue robot\non a wooden desk"


def test_n_size_and_extra_parameters_come_from_the_body(client, fake):
    answer = client.chat.completions.create(
        model="Qwen/Qwen-Image",
        messages=[{"role": "user", "content": "two robots"}],
        extra_body={"n": 2, "size": "1792x1024", "sf_seed": 5, "sf_cfg": 4.0},
    )
    content = answer.choices[0].message.content
    assert len(MARKDOWN_IMAGE.findall(content)) == 2
    # Images are separated by a blank line.
    assert "\n\n" in content
    bodies = sorted((request.body for request in fake.requests), key=lambda body: body["seed"])
    assert [body["seed"] for body in bodies] == [5, 6]
    assert all(body["image_size"] == "1664x928" and body["cfg"] == 4.0 for body in bodies)


def test_b64_json_gives_data_uris_with_the_real_media_type(client, fake):
    fake.configure(image_format="jpeg")
    answer = client.chat.completions.create(
        model="Qwen/Qwen-Image",
        messages=[{"role": "user", "content": "inline"}],
        extra_body={"response_format": "b64_json"},
    )
    (link,) = MARKDOWN_IMAGE.findall(answer.choices[0].message.content)
    assert link.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(link.split(",", 1)[1]).startswith(b"\xff\xd8\xff")


def test_provider_label_is_configurable(start):
    proxy = start(PROVIDER_LABEL="My Gateway")
    with openai.OpenAI(base_url=proxy.api_base, api_key="x", max_retries=0) as sdk:
        answer = sdk.chat.completions.create(
            model="Qwen/Qwen-Image", messages=[{"role": "user", "content": "label"}]
        )
    assert answer.model_extra["provider"] == "My Gateway"


def test_streamed_answer_through_the_sdk_iterator(client, fake):
    stream = client.chat.completions.create(
        model="Qwen/Qwen-Image",
        messages=[{"role": "user", "content": "streamed robot"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert len({chunk.id for chunk in chunks}) == 1
    assert len({chunk.created for chunk in chunks}) == 1
    assert {chunk.model for chunk in chunks} == {"Qwen/Qwen-Image"}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    content = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert len(MARKDOWN_IMAGE.findall(content)) == 1
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert all(chunk.usage is None for chunk in chunks[:-1])


def raw_stream(proxy, body: dict, **headers: str) -> tuple[httpx.Response, list[tuple[float, str]]]:
    """The raw SSE lines with the time each arrived, as a client sees them."""
    lines: list[tuple[float, str]] = []
    started = time.monotonic()
    with httpx.stream(
        "POST", proxy.api_base + "/chat/completions", json=body, headers=headers, timeout=30
    ) as response:
        for line in response.iter_lines():
            if line:
                lines.append((time.monotonic() - started, line))
    return response, lines


def test_stream_wire_format_keepalives_and_first_chunk_at_once(start, fake):
    proxy = start(STREAM_KEEPALIVE_SECONDS="0.2")
    fake.configure(latency=1.0)
    response, lines = raw_stream(
        proxy,
        {
            "model": "Qwen/Qwen-Image",
            "stream": True,
            "messages": [{"role": "user", "content": "slow"}],
        },
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    first_at, first = lines[0]
    assert first.startswith("data: ")
    # The role chunk does not wait for the 1 s generation.
    assert first_at < 0.5
    assert orjson.loads(first[6:])["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    keepalives = [at for at, line in lines if line == ": keepalive"]
    assert len(keepalives) >= 3
    assert not any(line.startswith("event:") for _, line in lines)
    assert lines[-1][1] == "data: [DONE]"
    payloads = [orjson.loads(line[6:]) for _, line in lines if line.startswith("data: {")]
    # Without include_usage, no chunk carries a usage key.
    assert all("usage" not in payload for payload in payloads)
    assert payloads[-1]["choices"][0]["finish_reason"] == "stop"


def test_error_after_the_stream_began_is_an_error_event(client, fake):
    fake.add_fault("status", status=400)
    stream = client.chat.completions.create(
        model="Qwen/Qwen-Image",
        messages=[{"role": "user", "content": "will fail"}],
        stream=True,
    )
    with pytest.raises(openai.APIError) as caught:
        list(stream)
    assert "SiliconFlow rejected" in str(caught.value)


def test_error_event_on_the_wire(proxy, fake):
    fake.add_fault("status", status=503)
    _, lines = raw_stream(
        proxy,
        {
            "model": "Qwen/Qwen-Image",
            "stream": True,
            "messages": [{"role": "user", "content": "x"}],
        },
    )
    data = [line for _, line in lines if line.startswith("data: ")]
    error = orjson.loads(data[-2][6:])
    assert error["error"]["type"] == "upstream_error"
    assert data[-1] == "data: [DONE]"


def test_multi_turn_with_image_parts_uses_the_latest_user_text(client, fake):
    client.chat.completions.create(
        model="Qwen/Qwen-Image",
        messages=[
            {"role": "user", "content": "first"},
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "![image](data:image/png;base64,AAAA)"}],
            },
            {"role": "user", "content": [{"type": "text", "text": "second"}]},
        ],
    )
    assert fake.requests[-1].body["prompt"] == "second"
