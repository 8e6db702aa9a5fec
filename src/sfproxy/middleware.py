"""Pure ASGI middleware (no per-request task or body copy, unlike BaseHTTPMiddleware)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import PayloadTooLargeError, ProxyError

logger = logging.getLogger(__name__)

# Headers a browser client may read from our answers.
EXPOSED_HEADERS = (
    "Retry-After",
    "X-Request-ID",
    "X-Partial-Failure",
    "X-Images-Requested",
    "X-Images-Returned",
    "x-should-retry",
    "Server-Timing",
)


def error_response(error: ProxyError) -> JSONResponse:
    return JSONResponse(error.envelope(), status_code=error.status_code, headers=error.headers())


class BodyLimitMiddleware:
    """Refuse bodies over the limit with 413, whether announced by Content-Length or not."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"Request body is larger than the {self.max_bytes / (1024 * 1024):g} MB limit "
            "(MAX_BODY_MB)."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(self._error())(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI turns any other exception raised while it reads a body into
                    # "400 error parsing the body"; an HTTPException it lets through.
                    raise HTTPException(413, detail=self._error().message)
            return message

        await self.app(scope, counting_receive, send)


class CatchAllMiddleware:
    """Any unexpected exception becomes OpenAI's 500 envelope, never a stack trace.

    Starlette hands handlers for `Exception` to its outermost middleware, where CORS headers
    are not added; catching here, inside CORS, keeps browser clients able to read the error.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ProxyError as error:
            # Raised outside the routes (e.g. by the body limit while a body is read).
            if started:
                raise
            await error_response(error)(scope, receive, send)
        except Exception:
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            internal = ProxyError("The server had an error while processing your request.")
            await error_response(internal)(scope, receive, send)


class PreflightCORSMiddleware(CORSMiddleware):
    """Starlette's CORS handling, answering allowed preflights with 204 No Content."""

    def __init__(self, app: ASGIApp, origins: Sequence[str]) -> None:
        super().__init__(
            app,
            allow_origins=list(origins),
            allow_methods=["*"],
            # "*" makes Starlette echo whatever the browser asks for: authorization,
            # x-api-key and the openai SDK's x-stainless-* headers among them.
            allow_headers=["*"],
            expose_headers=list(EXPOSED_HEADERS),
            max_age=86400,
        )

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 200:
            return response
        headers = {
            key: value
            for key, value in response.headers.items()
            if key not in ("content-length", "content-type")
        }
        return Response(status_code=204, headers=headers)
