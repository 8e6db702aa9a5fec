"""The MCP server, driven by the MCP SDK's own client: over Streamable HTTP against the service
on a loopback port, and over stdio against `sfproxy mcp` (forwarding, and in-process)."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import re
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import httpx2
import mcp_types as types
import pytest
from mcp import Client, ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from PIL import Image

from sfproxy.auth import key_label
from sfproxy.fake_upstream import FakeSiliconFlow

from .images import data_uri, image_bytes
from .support.inprocess import Running, eventually, on_loopback, service_settings

KEY = "proxy-key-mcp-0123456789"
LINK = re.compile(r"!\[image \d+\]\(([^)\s]+)\)")


@asynccontextmanager
async def serving(fake: FakeSiliconFlow, tmp_path: Path, **settings: Any) -> AsyncIterator[Running]:
    values: dict[str, Any] = {"allow_client_keys": KEY, **settings}
    async with on_loopback(service_settings(fake, tmp_path, **values)) as running:
        yield running


@asynccontextmanager
async def mcp_session(url: str, key: str | None = KEY) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions in `error`, out of the task groups the SDK raises them through."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def text_of(result: types.CallToolResult) -> str:
    first = result.content[0]
    assert isinstance(first, types.TextContent)
    return first.text


def images_of(result: types.CallToolResult) -> list[types.ImageContent]:
    return [block for block in result.content if isinstance(block, types.ImageContent)]


async def test_tools_are_listed_with_their_schemas(fake: FakeSiliconFlow, tmp_path: Path) -> None:
    async with serving(fake, tmp_path) as running, mcp_session(running.url) as session:
        listed = await session.list_tools()
    tools = {tool.name: tool for tool in listed.tools}
    assert sorted(tools) == [
        "edit_image",
        "generate_image",
        "generate_video",
        "get_video",
        "list_models",
    ]
    generate = tools["generate_image"].input_schema
    assert generate["required"] == ["prompt"]
    assert set(generate["properties"]) == {
        "prompt",
        "model",
        "size",
        "aspect_ratio",
        "n",
        "seed",
        "negative_prompt",
    }
    assert generate["properties"]["n"]["maximum"] == 10
    edit = tools["edit_image"].input_schema
    assert edit["required"] == ["prompt", "images"]
    assert (edit["properties"]["images"]["minItems"], edit["properties"]["images"]["maxItems"]) == (
        1,
        3,
    )
    assert "data:image" in edit["properties"]["images"]["description"]
    assert all(tool.description for tool in listed.tools)
    # Optional fields have one type: some agents' models refuse `anyOf` with null.
    assert generate["properties"]["seed"]["type"] == "integer"
    assert "anyOf" not in str(generate) and "anyOf" not in str(edit)


async def test_an_image_is_generated_and_its_url_serves_it(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    async with serving(fake, tmp_path) as running, mcp_session(running.url) as session:
        result = await session.call_tool(
            "generate_image",
            {"prompt": "a lighthouse at dusk", "n": 2, "seed": 7, "negative_prompt": "fog"},
        )
        assert result.is_error is not True, text_of(result)
        links = LINK.findall(text_of(result))
        assert len(links) == 2
        for link in links:
            assert link.startswith(f"{running.url}/v1/files/images/")
            served = await running.http.get(link)
            assert served.status_code == 200
            assert served.headers["content-type"] == "image/png"
            assert Image.open(io.BytesIO(served.content)).format == "PNG"
        assert running.metric("sfproxy_images_delivered_total", model=fake_model(running)) == 2
    sent = fake.requests[-1].body
    assert sent["prompt"] == "a lighthouse at dusk"
    assert sent["negative_prompt"] == "fog"
    assert fake.requests[0].body["seed"] == 7
    # The default MCP_IMAGE_CONTENT: a JPEG preview per image, no side beyond 512 pixels.
    previews = images_of(result)
    assert [preview.mime_type for preview in previews] == ["image/jpeg", "image/jpeg"]
    preview = Image.open(io.BytesIO(base64.b64decode(previews[0].data)))
    assert preview.format == "JPEG"
    assert max(preview.size) <= 512
    assert result.structured_content is not None
    assert [image["url"] for image in result.structured_content["images"]] == links


async def test_a_partial_failure_is_said_and_only_what_came_is_charged(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    fake.add_fault("status", status=400)
    async with serving(fake, tmp_path) as running, mcp_session(running.url) as session:
        result = await session.call_tool(
            "generate_image", {"prompt": "two boats", "n": 2, "model": "Qwen/Qwen-Image"}
        )
        model = "Qwen/Qwen-Image"
        assert running.metric("sfproxy_images_delivered_total", model=model) == 1
        assert running.metric("sfproxy_images_refunded_total", model=model) == 1
    assert result.is_error is not True
    text = text_of(result)
    assert len(LINK.findall(text)) == 1
    assert "\n\n1 of 2 image requests failed: SiliconFlow rejected the request" in text
    # The ledger (written out at shutdown) has the call under its own endpoint.
    with sqlite3.connect(tmp_path / "sfproxy.db") as ledger:
        rows = ledger.execute(
            "SELECT endpoint, client, images_requested, images_delivered, images_refunded,"
            " status, charged FROM ledger"
        ).fetchall()
    assert rows == [("mcp", key_label(KEY), 2, 1, 1, 200, 0.3)]


def fake_model(running: Running) -> str:
    return running.services.catalogue.default_model


@pytest.mark.parametrize("mode", ["auto", "2026-07-28", "legacy"])
async def test_the_sdk_client_in_each_protocol_era(
    fake: FakeSiliconFlow, tmp_path: Path, mode: str
) -> None:
    """`auto` probes `server/discover` and speaks 2026-07-28 with a server that answers it;
    `legacy` is the initialize handshake desktop clients use today."""
    async with (
        serving(fake, tmp_path) as running,
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as http,
        Client(streamable_http_client(f"{running.url}/mcp", http_client=http), mode=mode) as client,
    ):
        listed = await client.list_tools()
        result = await client.call_tool("generate_image", {"prompt": "a moth", "seed": 5})
        (link,) = LINK.findall(text_of(result))
        assert (await running.http.get(link)).status_code == 200
    assert len(listed.tools) == 5
    assert fake.requests[-1].body["seed"] == 5


async def test_an_image_is_edited_with_its_inputs_passed_on(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    picture = data_uri(image_bytes(color="blue"))
    foreign = "https://images.example/cat.png"
    async with serving(fake, tmp_path) as running, mcp_session(running.url) as session:
        result = await session.call_tool(
            "edit_image",
            {
                "prompt": "make it a watercolour",
                "images": [picture, foreign],
                "model": "Qwen/Qwen-Image-Edit-2509",
            },
        )
        assert result.is_error is not True, text_of(result)
        (link,) = LINK.findall(text_of(result))
        served = await running.http.get(link)
        assert served.status_code == 200
        assert Image.open(io.BytesIO(served.content)).size[0] > 0
    sent = fake.requests[-1].body
    assert sent["model"] == "Qwen/Qwen-Image-Edit-2509"
    assert sent["image"] == picture
    # Passed to SiliconFlow as it is: the service never fetches a client's URL.
    assert sent["image2"] == foreign


async def test_an_edit_of_an_image_this_service_made(fake: FakeSiliconFlow, tmp_path: Path) -> None:
    async with serving(fake, tmp_path) as running, mcp_session(running.url) as session:
        made = await session.call_tool("generate_image", {"prompt": "a red bicycle"})
        (link,) = LINK.findall(text_of(made))
        stored = (await running.http.get(link)).content
        edited = await session.call_tool(
            "edit_image", {"prompt": "paint it green", "images": [link]}
        )
        assert edited.is_error is not True, text_of(edited)
    # A hosted image is read from the image store and sent as a data URI.
    assert fake.requests[-1].body["image"] == data_uri(stored)


async def test_list_models_describes_what_each_model_accepts(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    async with serving(fake, tmp_path) as running, mcp_session(running.url) as session:
        result = await session.call_tool("list_models", {})
        listed = await running.http.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    assert result.structured_content is not None
    described = {card["id"]: card for card in result.structured_content["models"]}
    # The image models: list_models describes what the image tools take.
    cards = {
        card["id"]: card
        for card in listed.json()["data"]
        if "alias_of" not in card and "image-generation" in card["supported_endpoint_types"]
    }
    assert sorted(described) == sorted(cards)
    for model_id, card in described.items():
        assert card["max_images"] == cards[model_id]["max_images"]
    assert '"default_model"' in text_of(result)


async def test_an_invalid_key_is_refused(fake: FakeSiliconFlow, tmp_path: Path) -> None:
    async with serving(fake, tmp_path) as running:
        with pytest.raises(Exception) as refused:
            async with mcp_session(running.url, key="wrong-key"):
                pass
        (error,) = leaves(refused.value)
        assert isinstance(error, MCPError)
        assert error.error.message == "Incorrect API key provided for this proxy."
        raw = await running.http.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Accept": "application/json, text/event-stream"},
        )
    assert raw.status_code == 401
    assert raw.json()["error"]["message"].startswith("Missing API key")
    assert raw.json()["error"]["data"]["type"] == "authentication_error"
    assert not fake.requests


async def test_a_bad_argument_is_a_tool_error_with_our_message(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    async with serving(fake, tmp_path) as running, mcp_session(running.url) as session:
        too_many = await session.call_tool("generate_image", {"prompt": "a cat", "n": 11})
        unknown = await session.call_tool("generate_image", {"prompt": "a cat", "model": "nope/x"})
        no_image = await session.call_tool("edit_image", {"prompt": "bluer", "images": ["ftp://x"]})
        no_prompt = await session.call_tool("generate_image", {"n": 1})
        blank = await session.call_tool("generate_image", {"prompt": "   "})
    assert too_many.is_error is True
    assert "'n'" in text_of(too_many) and "10" in text_of(too_many)
    # An unlisted model is SiliconFlow's to refuse, and its refusal is a tool error too.
    assert unknown.is_error is True
    assert text_of(unknown).startswith("SiliconFlow rejected the request (SiliconFlow code")
    assert no_image.is_error is True
    assert text_of(no_image) == (
        "images[0] must be an uploaded file, a data: URI or an http(s) URL."
    )
    assert no_prompt.is_error is True
    assert text_of(no_prompt) == "Missing required parameter: 'prompt'."
    assert blank.is_error is True
    assert "'prompt'" in text_of(blank)
    assert [request.body["model"] for request in fake.requests] == ["nope/x"]


async def test_the_daily_image_limit_applies_to_tool_calls(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    async with (
        serving(fake, tmp_path, client_images_per_day=1) as running,
        mcp_session(running.url) as session,
    ):
        first = await session.call_tool("generate_image", {"prompt": "one"})
        second = await session.call_tool("generate_image", {"prompt": "two"})
    assert first.is_error is not True
    assert second.is_error is True
    assert "images per day" in text_of(second).lower() or "limit" in text_of(second).lower()
    assert len(fake.requests) == 1


async def test_a_client_that_leaves_mid_generation_is_not_charged(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    fake.configure(latency=30.0)
    async with serving(fake, tmp_path, client_images_per_day=1) as running:
        model = fake_model(running)

        async def call() -> None:
            async with mcp_session(running.url) as session:
                await session.call_tool("generate_image", {"prompt": "slow"})

        leaving = asyncio.ensure_future(call())
        await eventually(lambda: len(fake.requests) == 1, what="the upstream call")
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        refunded = "sfproxy_images_refunded_total"
        await eventually(lambda: running.metric(refunded, model=model) == 1, what="a refund")
        assert running.metric("sfproxy_images_delivered_total", model=model) == 0
        # The image given back is the client's again: its one image a day is still there.
        fake.configure(latency=0.0)
        async with mcp_session(running.url) as session:
            again = await session.call_tool("generate_image", {"prompt": "quick"})
        assert again.is_error is not True, text_of(again)


@pytest.mark.parametrize("setting", ["off", "full", "thumbnail"])
async def test_image_content_follows_the_setting(
    fake: FakeSiliconFlow, tmp_path: Path, setting: str
) -> None:
    async with (
        serving(fake, tmp_path, mcp_image_content=setting, mcp_thumbnail_size=64) as running,
        mcp_session(running.url) as session,
    ):
        result = await session.call_tool("generate_image", {"prompt": "a fox", "size": "16:9"})
        (link,) = LINK.findall(text_of(result))
        stored = (await running.http.get(link)).content
    blocks = images_of(result)
    if setting == "off":
        assert blocks == []
        return
    (block,) = blocks
    data = base64.b64decode(block.data)
    if setting == "full":
        assert block.mime_type == "image/png"
        assert data == stored
    else:
        assert block.mime_type == "image/jpeg"
        width, height = Image.open(io.BytesIO(data)).size
        assert width == 64
        assert height < width


async def test_a_body_over_the_limit_is_refused_before_the_mcp_layer(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    async with serving(fake, tmp_path, max_body_mb=1) as running:
        answer = await running.http.post(
            "/mcp",
            content=b"{" + b" " * (2 * 1024 * 1024) + b"}",
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        )
    assert answer.status_code == 413


def stdio_parameters(*args: str, env: dict[str, str]) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "sfproxy", "mcp", *args], env=env
    )


async def test_stdio_forwards_to_a_running_service(fake: FakeSiliconFlow, tmp_path: Path) -> None:
    async with serving(fake, tmp_path) as running:
        # As the README configures Claude Desktop: the key from the environment.
        parameters = stdio_parameters("--url", f"{running.url}/mcp", env={"SFPROXY_KEY": KEY})
        async with (
            stdio_client(parameters) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            listed = await session.list_tools()
            result = await session.call_tool("generate_image", {"prompt": "a kite"})
            bad = await session.call_tool("generate_image", {"prompt": "a kite", "n": 0})
        assert sorted(tool.name for tool in listed.tools) == [
            "edit_image",
            "generate_image",
            "generate_video",
            "get_video",
            "list_models",
        ]
        (link,) = LINK.findall(text_of(result))
        served = await running.http.get(link)
        assert served.status_code == 200
        assert served.headers["content-type"] == "image/png"
    assert bad.is_error is True
    assert "'n'" in text_of(bad)


async def run_stdio_alone(*args: str, cwd: Path | None = None) -> tuple[int | None, bytes, bytes]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SILICONFLOW_", "SFPROXY_"))
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sfproxy",
        "mcp",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
        cwd=cwd,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode, stdout, stderr


async def test_stdio_with_a_wrong_key_says_so_and_exits(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    async with serving(fake, tmp_path) as running:
        url = f"{running.url}/mcp"
        code, stdout, stderr = await run_stdio_alone("--url", url, "--key", "wrong-key")
    assert (code, stdout) == (1, b"")
    assert stderr.decode() == (
        f"sfproxy mcp: {url} refused: Incorrect API key provided for this proxy.\n"
    )


async def test_stdio_without_a_service_says_so_and_exits() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/mcp"
    code, stdout, stderr = await run_stdio_alone("--url", url, "--key", KEY)
    assert (code, stdout) == (1, b"")
    assert stderr.decode() == f"sfproxy mcp: cannot reach {url}: All connection attempts failed\n"


async def test_stdio_with_neither_a_url_nor_an_upstream_key_names_both(tmp_path: Path) -> None:
    code, stdout, stderr = await run_stdio_alone(cwd=tmp_path)
    assert (code, stdout) == (2, b"")
    message = stderr.decode()
    assert message.startswith("sfproxy: invalid configuration: SILICONFLOW_API_KEY is not set")
    assert message.endswith(
        "Or give `sfproxy mcp` --url, a running service's /mcp, to forward to.\n"
    )


async def test_stdio_runs_the_service_in_process(fake: FakeSiliconFlow, tmp_path: Path) -> None:
    env = {
        "SF_BASE": fake.base_url,
        "SILICONFLOW_API_KEY": fake.config.api_key or "sk-upstream-secret-0123456789",
        "IMAGE_DIR": str(tmp_path / "images"),
        "DATABASE_URL": f"sqlite:///{tmp_path}/sfproxy.db",
        "UPSTREAM_RETRIES": "0",
    }
    parameters = stdio_parameters(env=env)
    async with stdio_client(parameters) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        result = await session.call_tool("generate_image", {"prompt": "a harbour", "seed": 3})
    assert result.is_error is not True, text_of(result)
    (link,) = LINK.findall(text_of(result))
    # No HTTP is served in-process: the link is the stored file.
    assert link.startswith("file://")
    stored = Path(urlsplit(link).path)
    assert stored.is_relative_to(tmp_path / "images")
    with Image.open(stored) as image:
        assert image.format == "PNG"
    assert fake.requests[-1].body["seed"] == 3
    assert len(images_of(result)) == 1


async def test_a_public_api_serves_mcp_without_a_key(fake: FakeSiliconFlow, tmp_path: Path) -> None:
    # On a public API (no ALLOW_CLIENT_KEYS), /mcp answers anyone, as /v1 does.
    async with (
        on_loopback(service_settings(fake, tmp_path)) as running,
        mcp_session(running.url, key=None) as session,
    ):
        result = await session.call_tool("generate_image", {"prompt": "an owl"})
    assert result.is_error is not True
    assert httpx.URL(LINK.findall(text_of(result))[0]).path.startswith("/v1/files/images/")
