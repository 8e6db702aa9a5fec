"""Response bodies shaped the way SiliconFlow and its object storage send them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

INVALID_TOKEN = "Invalid token"
_ERROR_BODIES: dict[int, dict[str, Any]] = {
    400: {
        "code": 20012,
        "message": "Model does not exist. Please check it carefully.",
        "data": None,
    },
    403: {
        "code": 30001,
        "message": "Sorry, you don't have enough permissions to access this model. "
        "Please complete real-name verification first.",
        "data": None,
    },
    429: {
        "message": "Request was rejected due to rate limiting. "
        "If you want more, please contact contact@siliconflow.cn",
        "data": "Rate limit exceeded: IPM limit reached",
    },
    500: {"code": 50500, "message": "Internal error", "data": None},
    503: {
        "code": 50505,
        "message": "Model service overloaded. Please try again later.",
        "data": "model service overloaded",
    },
}
# Gateway timeouts come from the load balancer in front of SiliconFlow, so they are not JSON.
_GATEWAY_TIMEOUT = "<html><body><h1>504 Gateway Time-out</h1></body></html>"


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def bad_request(message: str, code: int = 20015) -> web.Response:
    return json_response({"code": code, "message": message, "data": None}, status=400)


def unauthorized() -> web.Response:
    return web.Response(status=401, text=INVALID_TOKEN)


def api_error(
    status: int,
    *,
    message: str | None = None,
    body: str | None = None,
    retry_after: float | str | None = None,
) -> web.Response:
    """SiliconFlow's answer for a status; `message` replaces the usual message, `body` the body."""
    headers = {"Retry-After": _retry_after(retry_after)} if retry_after is not None else None
    if body is not None:
        content_type = "application/json" if body.lstrip().startswith(("{", "[")) else "text/plain"
        return web.Response(status=status, text=body, content_type=content_type, headers=headers)
    if status == 401:
        return web.Response(status=status, text=message or INVALID_TOKEN, headers=headers)
    if status == 504 and message is None:
        return web.Response(
            status=status, text=_GATEWAY_TIMEOUT, content_type="text/html", headers=headers
        )
    default = _ERROR_BODIES.get(status, {"code": 50000 + status, "message": "Error", "data": None})
    data = dict(default)
    if message is not None:
        data["message"] = message
    response = json_response(data, status=status)
    if headers:
        response.headers.update(headers)
    return response


def storage_error(status: int, *, body: str | None = None) -> web.Response:
    """An object-storage style error for image downloads."""
    if body is not None:
        return web.Response(status=status, text=body)
    code = {403: "AccessDenied", 404: "NoSuchKey", 503: "SlowDown"}.get(status, "InternalError")
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{code}</Message></Error>"
    )
    return web.Response(status=status, text=xml, content_type="application/xml")


def _retry_after(value: float | str) -> str:
    # A string goes out verbatim so tests can send the HTTP-date form or garbage.
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


def drop_connection(request: web.Request) -> web.StreamResponse:
    """Close the connection without an answer (the `drop` fault)."""
    # Closing the transport first means nothing of the returned response is ever sent.
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=499)


async def oversized_answer(
    request: web.Request, size: int, count: Callable[[str], None]
) -> web.StreamResponse:
    """A 200 JSON answer with `size` bytes of padding, sent chunked, without a Content-Length
    (the `oversized` fault). Read whole, it is valid JSON with no images; a client that hangs
    up first is counted as `oversized_cut_off`."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    padding = b" " * 65536
    try:
        await response.write(b'{"images": [], "status": "InQueue", "data": [], "padding": "')
        sent = 0
        while sent < size:
            part = padding[: size - sent]
            await response.write(part)
            sent += len(part)
        await response.write(b'"}')
        await response.write_eof()
    except ConnectionError:  # reset, or lost while waiting to write
        count("oversized_cut_off")
    return response
