"""`/mcp`: the MCP tools over Streamable HTTP, for the same client keys as the API.

Every request is authenticated (and counted against the key's requests per minute) before the
MCP layer sees it; a refusal is a JSON-RPC error in the HTTP status's body, which MCP clients
show as they show any server error. The SDK runs statelessly: no session lives between
requests, so any worker or instance can answer any of them, as with the rest of the API.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.context import ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types import INVALID_REQUEST, ErrorData, JSONRPCError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..errors import ProxyError
from ..mcp_server import Caller, ImageTools, build_server
from ..observability import note_of
from ..services import Services
from ..settings import Settings
from .common import authenticate, url_maker

CALLER_STATE_KEY = "mcp_caller"


class McpEndpoint:
    """The ASGI app at `/mcp`; `running()` belongs in the service's lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._tools: ImageTools | None = None
        self.server = build_server(self._current_tools, _caller_of)
        self.manager = StreamableHTTPSessionManager(
            app=self.server,
            stateless=True,
            # The same bound as every other route (MAX_BODY_MB); the SDK's default is 4 MiB,
            # less than an edit's three data URIs may need.
            max_request_body_size=settings.max_body_bytes,
            # No Host/Origin allow-list: a key guards /mcp as it guards /v1, and deployments
            # behind proxies have host names the service cannot know.
            security_settings=None,
        )

    @asynccontextmanager
    async def running(self, services: Services) -> AsyncIterator[None]:
        settings = self.settings
        self._tools = ImageTools(
            services,
            image_content=settings.mcp_image_content,
            thumbnail_size=settings.mcp_thumbnail_size,
        )
        # The SDK's manager holds an anyio task group, which must be left in the task that
        # entered it; a lifespan may end in another task than it began (Starlette's TestClient,
        # test fixtures), so one task of its own runs the manager from start to stop.
        started, stopping = asyncio.Event(), asyncio.Event()

        async def run_manager() -> None:
            async with self.manager.run():
                started.set()
                await stopping.wait()

        manager = asyncio.create_task(run_manager())
        ready = asyncio.ensure_future(started.wait())
        await asyncio.wait({manager, ready}, return_when=asyncio.FIRST_COMPLETED)
        if not started.is_set():
            ready.cancel()
            manager.result()  # raises what stopped it
            raise RuntimeError("the MCP session manager stopped as it started")
        try:
            yield
        finally:
            stopping.set()
            await manager

    def _current_tools(self) -> ImageTools:
        assert self._tools is not None, "McpEndpoint.running() is entered in the lifespan"
        return self._tools

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        services: Services = request.app.state.services
        try:
            client = await authenticate(request, services)
        except ProxyError as exc:
            note_of(request).error = exc.code or exc.error_type
            await refusal(exc)(scope, receive, send)
            return
        scope["state"][CALLER_STATE_KEY] = Caller(
            client=client, note=note_of(request), link_for=url_maker(request, services)
        )
        await self.manager.handle_request(scope, receive, send)


def _caller_of(ctx: ServerRequestContext[Any]) -> Caller:
    request = ctx.request
    assert isinstance(request, Request), "every /mcp message arrives with its HTTP request"
    caller: Caller = request.scope["state"][CALLER_STATE_KEY]
    return caller


def refusal(error: ProxyError) -> Response:
    """Our error as a JSON-RPC error: the MCP SDKs read its message from a non-2xx body."""
    body = JSONRPCError(
        jsonrpc="2.0",
        id=None,
        error=ErrorData(
            code=INVALID_REQUEST, message=error.message, data=error.envelope()["error"]
        ),
    )
    return Response(
        body.model_dump_json(by_alias=True, exclude_unset=True),
        status_code=error.status_code,
        media_type="application/json",
        headers=error.headers(),
    )
