"""`sfproxy mcp`: the MCP tools over stdio, for desktop clients that start a command.

With `--url` it forwards every call to a running service's `/mcp`, with `--key` (or
SFPROXY_KEY) as its client key, so that service's limits, budgets, ledger and image store apply.
Without it, it runs the corridor itself in this process, from the environment's settings
(SILICONFLOW_API_KEY and the rest), as `sfproxy serve` would. Either way stdout carries the
protocol and nothing else: logs go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import anyio
import httpx2
import mcp_types as types
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from . import __version__
from .auth import Client
from .generate import GeneratedImage
from .mcp_server import INSTRUCTIONS, SERVER_NAME, Caller, ImageTools, build_server, tool_error
from .observability import RequestNote, configure_logging
from .setting_values import ConfigError
from .settings import Settings, load_settings
from .store import ImageStore
from .store.local import LocalImageStore

logger = logging.getLogger(__name__)
STDIO_CLIENT = "mcp-stdio"


def add_parser(commands: Any) -> None:
    """`commands`: the `sfproxy` parser's subparsers."""
    parser = commands.add_parser(
        "mcp",
        help="an MCP server on stdin/stdout: forwards to --url, or runs the service in-process",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("SFPROXY_MCP_URL"),
        help="a running service's MCP endpoint, e.g. http://HOST:8000/mcp (SFPROXY_MCP_URL); "
        "absent: run in-process with SILICONFLOW_API_KEY",
    )
    parser.add_argument(
        "--key",
        default=os.environ.get("SFPROXY_KEY"),
        help="the service's client key, sent as Authorization: Bearer (SFPROXY_KEY)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.url:
        logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
        try:
            return anyio.run(forward, args.url, args.key)
        except Exception as exc:
            unreachable = _transport_error(exc)
            if unreachable is None:
                raise
            print(f"sfproxy mcp: cannot reach {args.url}: {unreachable}", file=sys.stderr)
            return 1
    settings = load_settings()
    try:
        settings.require_upstream_key()
    except ConfigError as exc:
        raise ConfigError(
            f"{exc} Or give `sfproxy mcp` --url, a running service's /mcp, to forward to."
        ) from None
    configure_logging(settings.log_level, settings.log_format)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            # stdout is the protocol's: a log line there would corrupt it.
            handler.setStream(sys.stderr)
    anyio.run(in_process, settings)
    return 0


def _transport_error(error: BaseException) -> httpx2.TransportError | None:
    """The connection failure in `error`, which the SDK raises through its task groups."""
    if isinstance(error, httpx2.TransportError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _transport_error(inner)
            if found is not None:
                return found
    return None


async def forward(url: str, key: str | None) -> int:
    """Serve stdio, each call made on the service at `url` through the MCP SDK's client."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    # Read timeout beyond any generation's: the service answers with its own 504 first.
    timeout = httpx2.Timeout(30.0, read=900.0)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as remote,
    ):
        try:
            await remote.initialize()
        except MCPError as exc:
            print(f"sfproxy mcp: {url} refused: {exc.error.message}", file=sys.stderr)
            return 1

        async def list_tools(
            ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
        ) -> types.ListToolsResult:
            return await remote.list_tools()

        async def call_tool(
            ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
        ) -> types.CallToolResult:
            try:
                return await remote.call_tool(params.name, params.arguments)
            except MCPError as exc:
                # Refused before the tools ran (a key revoked, the rpm limit): said as a
                # tool error, as the service says every other failure.
                return tool_error(exc.error.message)

        server = Server(
            SERVER_NAME,
            version=__version__,
            instructions=INSTRUCTIONS,
            on_list_tools=list_tools,
            on_call_tool=call_tool,
        )
        await serve_stdio(server)
    return 0


async def in_process(settings: Settings) -> None:
    from .services import Services

    async with Services.running(settings) as services:
        tools = ImageTools(
            services,
            image_content=settings.mcp_image_content,
            thumbnail_size=settings.mcp_thumbnail_size,
        )
        client = Client(label=STDIO_CLIENT)
        link_for = local_links(services.generator.url_for, services.store, settings)

        def caller_of(ctx: ServerRequestContext[Any]) -> Caller:
            note = RequestNote(request_id=f"mcp-{ctx.request_id}", client=client.label)
            return Caller(client=client, note=note, link_for=link_for)

        await serve_stdio(build_server(lambda: tools, caller_of))


def local_links(
    url_for: Callable[[GeneratedImage, str], str], store: ImageStore, settings: Settings
) -> Callable[[GeneratedImage], str]:
    """Links for images made in this process, which serves no HTTP.

    With PUBLIC_BASE_URL (a service sharing this image store), links to it; with the local
    store and none, the file itself; else the store's own public URL (S3) or SiliconFlow's.
    """
    base = settings.public_base_url

    def link_for(image: GeneratedImage) -> str:
        if base is None and image.name is not None and isinstance(store, LocalImageStore):
            return store.path_of(image.name).resolve().as_uri()
        return url_for(image, base or "")

    return link_for


async def serve_stdio(server: Server[Any]) -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())
