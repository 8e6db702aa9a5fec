"""`POST /v1/responses` through the clients that use it: openai-python, LangChain, the AI SDK."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import shutil
import subprocess

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from PIL import Image
from pydantic import TypeAdapter

from sfproxy.auth import Client, key_label
from sfproxy.catalogue import ModelSpec
from sfproxy.generate import GeneratedImage, Generation
from sfproxy.plan import ImageJob, Plan
from sfproxy.render.responses import ResponseShape, ResponseStream

from .images import data_uri, image_bytes
from .support.inprocess import eventually, in_process, on_loopback, service_settings
from .test_ai_sdk import NODE_DIR

MARKDOWN_IMAGE = re.compile(r"!\[image\]\(([^)]+)\)")
KOLORS = "Kwai-Kolors/Kolors"
EDIT_MODEL = "Qwen/Qwen-Image-Edit"
EVENT = TypeAdapter(ResponseStreamEvent)


def opened(result: str | None) -> Image.Image:
    assert result is not None
    return Image.open(io.BytesIO(base64.b64decode(result)))


def image_calls(response: Response) -> list:
    return [item for item in response.output if item.type == "image_generation_call"]


def test_a_string_input_makes_an_image_and_a_markdown_message(client, fake):
    response = client.responses.create(model=KOLORS, input="a paper kite")
    # Parsed again, strictly, by the SDK's own type.
    Response.model_validate(response.model_dump())
    assert response.object == "response"
    assert response.status == "completed"
    assert response.model == KOLORS
    (call,) = image_calls(response)
    assert call.status == "completed"
    assert call.revised_prompt == "a paper kite"
    assert call.output_format == "png"
    assert call.size == "1024x1024"
    picture = opened(call.result)
    assert (picture.format, picture.size) == ("PNG", (1024, 1024))
    message = response.output[-1]
    assert message.type == "message" and message.role == "assistant"
    (url,) = MARKDOWN_IMAGE.findall(response.output_text)
    served = httpx.get(url)
    assert served.content == base64.b64decode(call.result)
    assert response.usage is not None and response.usage.total_tokens == 0
    assert fake.requests[-1].body["prompt"] == "a paper kite"


def test_the_image_generation_tool_sets_size_format_and_our_fields(client, fake):
    response = client.responses.create(
        model=KOLORS,
        instructions="You are a helpful assistant.",
        input=[
            {"role": "user", "content": "an old prompt"},
            {"role": "assistant", "content": "done"},
            {"role": "user", "content": [{"type": "input_text", "text": "a lighthouse"}]},
        ],
        tools=[
            {
                "type": "image_generation",
                "size": "768x1024",
                "output_format": "jpeg",
                "output_compression": 60,
                "quality": "high",
                "partial_images": 2,
                "sf_seed": 42,
            }
        ],
        extra_body={"size": "1024x1024", "n": 2},
    )
    calls = image_calls(response)
    assert len(calls) == 2
    assert all(opened(call.result).format == "JPEG" for call in calls)
    assert {call.output_format for call in calls} == {"jpeg"}
    assert calls[0].quality == "high"
    sent = fake.requests[-1].body
    # The instructions are not the prompt; the tool's size wins over the body's.
    assert sent["prompt"] == "a lighthouse"
    assert sent["seed"] == 42
    assert sent["image_size"] == "768x1024"
    assert sent["batch_size"] == 2
    assert len(MARKDOWN_IMAGE.findall(response.output_text)) == 2


def test_an_input_image_is_edited(client, fake):
    photo = data_uri(image_bytes("PNG", (80, 60), "teal"))
    response = client.responses.create(
        model=EDIT_MODEL,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "make it orange"},
                    {"type": "input_image", "image_url": photo},
                ],
            }
        ],
        tools=[{"type": "image_generation", "action": "edit"}],
    )
    (call,) = image_calls(response)
    assert opened(call.result).size == (80, 60)
    assert call.action == "edit"
    sent = fake.requests[-1].body
    assert sent["model"] == EDIT_MODEL
    assert sent["prompt"] == "make it orange"
    assert sent["image"] == photo


def test_an_earlier_image_generation_call_is_what_an_edit_model_works_on(client, fake):
    first = client.responses.create(model=KOLORS, input="a red cube")
    (call,) = image_calls(first)
    follow_up = client.responses.create(
        model=EDIT_MODEL,
        input=[
            {"role": "user", "content": "a red cube"},
            *[item.model_dump(exclude_none=True) for item in first.output],
            {"role": "user", "content": "now make it blue"},
        ],
    )
    assert image_calls(follow_up)[0].status == "completed"
    sent = fake.requests[-1].body
    assert sent["prompt"] == "now make it blue"
    assert sent["image"] == f"data:image/png;base64,{call.result}"


def test_a_hosted_image_by_its_file_id_is_read_from_the_store(client, fake):
    first = client.responses.create(model=KOLORS, input="a green cone")
    (url,) = MARKDOWN_IMAGE.findall(first.output_text)
    name = url.rsplit("/", 1)[1]
    client.responses.create(
        model=EDIT_MODEL,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "add snow"},
                    {"type": "input_image", "file_id": name},
                ],
            }
        ],
    )
    assert (
        fake.requests[-1].body["image"] == f"data:image/png;base64,{image_calls(first)[0].result}"
    )


def test_a_previous_response_id_is_refused_with_advice(client, fake):
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model=KOLORS, input="again", previous_response_id="resp_123")
    error = raised.value.body
    assert error["param"] == "previous_response_id"
    assert "send the conversation in input" in error["message"].lower()
    assert fake.requests == []


@pytest.mark.parametrize(
    ("request_body", "param"),
    [
        ({"input": "x", "tools": [{"type": "image_generation", "size": "7x7"}]}, "tools.0.size"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input.0.role"),
        ({"input": [{"role": "assistant", "content": "only me"}]}, "input"),
        ({"input": 5}, "input"),
        ({"input": "x", "tools": [{"type": "image_generation", "action": "edit"}]}, "tools"),
    ],
)
def test_bad_input_is_a_clear_400(proxy, fake, request_body, param):
    answer = httpx.post(f"{proxy.api_base}/responses", json={"model": KOLORS, **request_body})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == param
    assert fake.requests == []


def test_unknown_fields_tools_and_items_are_accepted(client, fake):
    response = client.responses.create(
        model=KOLORS,
        input=[
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call_output", "call_id": "c1", "output": "{}"},
            {"type": "item_reference", "id": "msg_1"},
            {"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]},
            {"type": "message", "role": "user", "content": "a snail"},
        ],
        tools=[{"type": "function", "name": "f", "parameters": {}}],
        store=True,
        metadata={"who": "test"},
        extra_body={"reasoning": {"effort": "low"}, "max_output_tokens": 100},
    )
    assert response.metadata == {"who": "test"}
    assert fake.requests[-1].body["prompt"] == "a snail"


def test_a_streamed_response_sends_the_documented_events(client, fake):
    events = list(
        client.responses.create(
            model=KOLORS,
            input="a lantern",
            tools=[{"type": "image_generation"}],
            stream=True,
            extra_body={"n": 2},
        )
    )
    for event in events:
        EVENT.validate_python(event.model_dump())
    assert [event.sequence_number for event in events] == list(range(len(events)))
    per_image_start = [
        "response.output_item.added",
        "response.image_generation_call.in_progress",
        "response.image_generation_call.generating",
    ]
    per_image_end = ["response.image_generation_call.completed", "response.output_item.done"]
    text = [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    assert [event.type for event in events] == [
        "response.created",
        "response.in_progress",
        *per_image_start,
        *per_image_start,
        *per_image_end,
        *per_image_end,
        *text,
        "response.completed",
    ]
    done = [event.item for event in events if event.type == "response.output_item.done"]
    assert [item.type for item in done] == ["image_generation_call"] * 2 + ["message"]
    assert all(opened(item.result).size == (1024, 1024) for item in done[:2])
    # Each announced item is the one completed.
    added = [event.item.id for event in events if event.type == "response.output_item.added"]
    assert added == [item.id for item in done]
    final = events[-1].response
    assert final.status == "completed"
    assert [item.id for item in final.output] == added
    assert len(MARKDOWN_IMAGE.findall(final.output_text)) == 2


def test_the_sdk_stream_helper_gives_the_final_response(client, fake):
    with client.responses.stream(model=KOLORS, input="a bridge") as stream:
        final = stream.get_final_response()
    (call,) = image_calls(final)
    assert opened(call.result).format == "PNG"


def test_keepalives_are_sent_while_siliconflow_works(start, fake):
    proxy = start(STREAM_KEEPALIVE_SECONDS="0.05")
    fake.configure(latency=0.4)
    body = {"model": KOLORS, "input": "slow", "stream": True}
    with httpx.stream("POST", f"{proxy.api_base}/responses", json=body, timeout=10) as answer:
        lines = [line for line in answer.iter_lines() if line]
    generating = lines.index(next(line for line in lines if ".generating" in line))
    completed = lines.index(next(line for line in lines if "call.completed" in line))
    assert ": keepalive" in lines[generating + 1 : completed]
    events = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data:")]
    assert events[-1]["type"] == "response.completed"


def test_an_upstream_failure_mid_stream_is_an_error_and_a_failed_response(client, fake):
    fake.add_fault("status", status=400, message="the prompt was refused upstream")
    stream = client.responses.create(model=KOLORS, input="refused", stream=True)
    assert stream.response.status_code == 200
    events = list(stream)
    for event in events:
        EVENT.validate_python(event.model_dump())
    assert [event.type for event in events[-2:]] == ["error", "response.failed"]
    error, failed = events[-2], events[-1]
    assert "the prompt was refused upstream" in error.message
    assert failed.response.status == "failed"
    assert failed.response.error.code == "invalid_prompt"
    assert "the prompt was refused upstream" in failed.response.error.message


def test_a_partial_failure_marks_the_missing_image_failed(client, fake):
    fake.add_fault("status", status=400, message="one call refused")
    # Qwen-Image makes one image a call, so one of the two calls fails.
    events = list(
        client.responses.create(
            model="Qwen/Qwen-Image", input="two, one fails", stream=True, extra_body={"n": 2}
        )
    )
    for event in events:
        EVENT.validate_python(event.model_dump())
    done = [event.item for event in events if event.type == "response.output_item.done"]
    assert [item.status for item in done] == ["completed", "failed", "completed"]
    assert "one call refused" in done[1].error.message
    assert "1 of 2 image requests failed" in done[2].content[0].text
    assert events[-1].type == "response.completed"


def test_langchain_chat_openai_on_the_responses_api_gets_the_image(proxy, fake):
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(
        model=KOLORS,
        base_url=proxy.api_base,
        api_key="unused",
        use_responses_api=True,
        max_retries=0,
    )
    message = model.invoke("a watercolour fox")
    images = [block for block in message.content_blocks if block["type"] == "image"]
    assert len(images) == 1
    assert opened(images[0]["base64"]).size == (1024, 1024)
    assert MARKDOWN_IMAGE.search(message.text) is not None
    assert fake.requests[-1].body["prompt"] == "a watercolour fox"


def test_langchain_streams_the_image_too(proxy, fake):
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(
        model=KOLORS, base_url=proxy.api_base, api_key="unused", use_responses_api=True
    )
    chunks = list(model.stream("a streamed owl"))
    message = chunks[0]
    for chunk in chunks[1:]:
        message += chunk
    images = [block for block in message.content_blocks if block["type"] == "image"]
    assert len(images) == 1
    assert opened(images[0]["base64"]).format == "PNG"


def generate_text(proxy, request: dict) -> dict:
    """The AI SDK's `generateText` on `createOpenAI({baseURL})(model)`, in Node."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: the AI SDK cannot run")
    result = subprocess.run(
        [node, str(NODE_DIR / "ai_sdk_responses.mjs"), proxy.api_base, json.dumps(request)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # The SDK's warnings (an option a model ignores, say) come as lines before the answer.
    answer: dict = json.loads(result.stdout.splitlines()[-1])
    assert "thrown" not in answer, answer
    return answer


def test_the_ai_sdk_default_provider_gets_the_image_with_generate_text(proxy, fake):
    answer = generate_text(proxy, {"model": KOLORS, "prompt": "a neon sign"})
    (file,) = answer["files"]
    assert opened(file["base64"]).size == (1024, 1024)
    # @ai-sdk/openai hands image_generation_call items over as tool results, not as files.
    assert answer["sdkFiles"] == 0
    assert len(MARKDOWN_IMAGE.findall(answer["text"])) == 1
    assert answer["finishReason"] == "stop"
    assert fake.requests[-1].body["prompt"] == "a neon sign"


def test_the_ai_sdk_stream_text_gets_the_image_from_the_events(proxy, fake):
    answer = generate_text(proxy, {"model": KOLORS, "prompt": "a streamed kite", "stream": True})
    (file,) = answer["files"]
    assert opened(file["base64"]).format == "PNG"
    assert len(MARKDOWN_IMAGE.findall(answer["text"])) == 1
    assert answer["finishReason"] == "stop"


def test_an_ai_sdk_follow_up_without_store_edits_the_last_image(proxy, fake):
    answer = generate_text(
        proxy,
        {
            "model": KOLORS,
            "prompt": "a red cube",
            "followUp": {"model": EDIT_MODEL, "prompt": "now make it blue"},
        },
    )
    (file,) = answer["files"]
    assert opened(file["base64"]).format == "PNG"
    first, second = fake.requests[-2].body, fake.requests[-1].body
    assert (first["prompt"], second["prompt"]) == ("a red cube", "now make it blue")
    # The SDK sends no tool results without store: the image is the first answer's hosted
    # link in its text, read back from the image store.
    assert second["model"] == EDIT_MODEL
    assert second["image"] == f"data:image/png;base64,{answer['earlier'][0]}"


def test_the_ai_sdk_image_generation_tool_and_an_attached_image(proxy, fake):
    photo = image_bytes("PNG", (80, 60), "teal")
    answer = generate_text(
        proxy,
        {
            "model": EDIT_MODEL,
            "prompt": "make it orange",
            "edit": base64.b64encode(photo).decode(),
            "tool": {"outputFormat": "webp", "outputCompression": 70},
        },
    )
    (file,) = answer["files"]
    picture = opened(file["base64"])
    assert (picture.format, picture.size) == ("WEBP", (80, 60))
    sent = fake.requests[-1].body
    assert sent["model"] == EDIT_MODEL
    assert sent["image"] == data_uri(photo)


# Money, in the test's loop: what the client is charged is read from its daily count.

MONEY_KEY = "proxy-key-responses-0123456789"
MONEY_AUTH = {"Authorization": f"Bearer {MONEY_KEY}"}


def money_settings(fake, tmp_path, **overrides):
    return service_settings(
        fake, tmp_path, allow_client_keys=MONEY_KEY, client_images_per_day=100, **overrides
    )


async def charged(running) -> int:
    return await running.services.limits.images_today(Client(key_label(MONEY_KEY), MONEY_KEY))


async def test_a_streamed_response_charges_the_images_sent(fake, tmp_path):
    fake.add_fault("status", status=400, message="one call refused")
    async with in_process(money_settings(fake, tmp_path)) as running:
        body = {"model": "Qwen/Qwen-Image", "input": "three", "n": 3, "stream": True}
        async with running.http.stream(
            "POST", "/v1/responses", json=body, headers=MONEY_AUTH
        ) as answer:
            lines = [line async for line in answer.aiter_lines() if line.startswith("data:")]
        assert json.loads(lines[-1].removeprefix("data: "))["type"] == "response.completed"
        assert await charged(running) == 2
        model = {"model": "Qwen/Qwen-Image"}
        assert running.metric("sfproxy_images_refunded_total", **model) == 1


async def test_a_stream_left_before_its_images_is_refunded(fake, tmp_path):
    fake.configure(latency=1.0)
    async with on_loopback(money_settings(fake, tmp_path)) as running:
        body = {"model": "Qwen/Qwen-Image", "input": "gone", "stream": True}
        async with running.http.stream(
            "POST", "/v1/responses", json=body, headers=MONEY_AUTH
        ) as answer:
            assert answer.status_code == 200
        refunded = "sfproxy_images_refunded_total"
        await eventually(
            lambda: running.metric(refunded, model="Qwen/Qwen-Image") == 1, what="the refund"
        )
        assert await charged(running) == 0


async def test_a_whole_response_charges_its_images_and_a_400_nothing(fake, tmp_path):
    async with in_process(money_settings(fake, tmp_path)) as running:
        body = {"model": KOLORS, "input": "two", "n": 2}
        answer = await running.http.post("/v1/responses", json=body, headers=MONEY_AUTH)
        assert answer.status_code == 200, answer.text
        Response.model_validate(answer.json())
        assert await charged(running) == 2
        refused = await running.http.post(
            "/v1/responses", json={**body, "size": "7x7"}, headers=MONEY_AUTH
        )
        assert refused.status_code == 400
        assert await charged(running) == 2


async def test_too_many_input_items_are_a_400_before_anything_is_reserved(fake, tmp_path):
    async with in_process(money_settings(fake, tmp_path, max_chat_messages=3)) as running:
        items = [{"role": "user", "content": "x"}] * 4
        answer = await running.http.post(
            "/v1/responses", json={"model": KOLORS, "input": items}, headers=MONEY_AUTH
        )
        assert answer.status_code == 400
        assert answer.json()["error"]["param"] == "input"
        assert "MAX_CHAT_MESSAGES" in answer.json()["error"]["message"]
        assert fake.requests == []


# The stream writer on its own.


def stream_for(n: int) -> ResponseStream:
    job = ImageJob(model="m", prompt="p", n=n)
    plan = Plan(job=job, spec=ModelSpec(id="m"), payload={}, size=None, batches=(n,))
    return ResponseStream(ResponseShape(plan=plan, url_for=lambda image: "http://x/y.png"))


def decoded_events(lines: list[bytes]) -> list[dict]:
    return [json.loads(line.removeprefix(b"data: ")) for line in lines if line.startswith(b"data")]


async def test_a_stream_open_when_the_server_closes_ends_with_a_failed_response():
    closing = asyncio.Event()
    delivered: list[int] = []
    never = asyncio.get_running_loop().create_future()

    async def work() -> Generation:
        return await never

    events = stream_for(1).events(work, keepalive=5, delivered=delivered.append, closing=closing)
    closing.set()
    sent = decoded_events([line async for line in events])
    assert [event["type"] for event in sent[-2:]] == ["error", "response.failed"]
    assert sent[-2]["code"] == "server_shutting_down"
    assert sent[-1]["response"]["error"]["code"] == "server_error"
    assert delivered == []


async def test_each_image_is_counted_delivered_once_its_item_is_sent():
    image = GeneratedImage(seed=1, media_type="image/png", data=image_bytes(), width=64, height=48)
    generation = Generation(model="m", size=None, images=[image, image], requested=2, calls=1)

    async def work() -> Generation:
        return generation

    delivered: list[int] = []
    events = stream_for(2).events(work, keepalive=5, delivered=delivered.append)
    async for line in events:
        event = json.loads(line.removeprefix(b"data: "))
        if event["type"] == "response.output_item.done" and event["item"]["type"] != "message":
            count = len(delivered)
            # Resumed after this item was handed on: only then is it counted.
            await anext(events)
            assert len(delivered) == count + 1
            assert event["item"]["size"] == "64x48"
    assert delivered == [1, 1]
