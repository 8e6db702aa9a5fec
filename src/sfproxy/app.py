"""`create_app(settings)`: wiring only (lifespan, routers, error handlers, middleware)."""

from __future__ import annotations

import gc
import logging
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import __version__
from .errors import (
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    ProxyError,
    RequestTimeoutError,
)
from .lifecycle import DRAIN_STATE_KEY, Drain, DrainMiddleware
from .links import ForwardedHeaders, link_warning
from .metrics import Metrics
from .middleware import (
    BodyLimitMiddleware,
    CatchAllMiddleware,
    PreflightCORSMiddleware,
    error_response,
)
from .observability import RequestLogMiddleware, configure_logging, note_of
from .routes import (
    admin,
    admin_keys,
    chat,
    edits,
    files,
    health,
    images,
    models,
    playground,
    usage,
    variations,
    videos,
)
from .routes import responses as responses_route
from .routes.admin_usage import router as admin_usage_router
from .routes.mcp import McpEndpoint
from .server import GUARD_STATE_KEY, TIMED_OUT_STATE_KEY, ConnectionGuard, connection_limit
from .services import Services
from .settings import Settings, load_settings
from .siliconflow import SessionFactory
from .validation import invalid_request

logger = logging.getLogger("sfproxy")


def create_app(settings: Settings, *, upstream_session: SessionFactory | None = None) -> FastAPI:
    """The service; `upstream_session` builds the SiliconFlow client's session (for tests)."""
    metrics = Metrics()
    mcp = McpEndpoint(settings)
    drain = Drain(settings.shutdown_grace_seconds)
    guard = ConnectionGuard(
        header_timeout=settings.header_timeout_seconds,
        body_min_rate=settings.body_min_bytes_per_second,
        max_connections=connection_limit(settings.max_connections),
        metrics=metrics,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with (
            Services.running(settings, metrics, upstream_session=upstream_session) as services,
            mcp.running(services),
        ):
            app.state.services = services
            app.state.drain = drain
            tune_garbage_collector()
            if not services.keys.required:
                logger.warning(
                    "no client keys are set (ALLOW_CLIENT_KEYS, or `sfproxy keys create`): the "
                    "API is public and anyone who can reach it spends your SiliconFlow credit"
                )
            if (warning := link_warning(settings)) is not None:
                logger.warning(warning)
            # The lifespan state is what uvicorn hands the server's protocol (`server.py`).
            yield {GUARD_STATE_KEY: guard, DRAIN_STATE_KEY: drain}

    app = FastAPI(
        title="siliconflow-img-proxy",
        version=__version__,
        summary="SiliconFlow image models behind an OpenAI-compatible API.",
        lifespan=lifespan,
        # Off by default: Swagger UI's page loads its scripts from a CDN, and on this origin
        # the playground keeps the client's key where any of those scripts could read it.
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url=None,
    )
    for module in (
        images,
        edits,
        variations,
        chat,
        models,
        files,
        health,
        playground,
        admin,
        admin_keys,
        usage,
        videos,
    ):
        app.include_router(module.router)
    app.include_router(admin_usage_router)
    app.include_router(responses_route.router)
    app.mount("/static", playground.static_files(), name="static")
    # A route, not a mount: clients POST to /mcp itself, which a mount would redirect.
    app.router.routes.append(Route("/mcp", endpoint=mcp, include_in_schema=False))

    app.add_exception_handler(ProxyError, _proxy_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_left)

    # Added innermost first: CORS wraps everything, so even 413s and 500s carry its headers,
    # and the request log wraps CORS, so it sees (and times) every answer.
    app.add_middleware(CatchAllMiddleware)
    # Inside CORS and the request log, so its 503s carry CORS headers and are logged.
    app.add_middleware(DrainMiddleware, drain=drain)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(PreflightCORSMiddleware, origins=settings.cors_origins)
    app.add_middleware(
        RequestLogMiddleware, metrics=metrics, prompt_chars=settings.log_prompt_chars
    )
    # Outermost: every layer inside sees the client's address, as a trusted proxy gave it.
    app.add_middleware(ForwardedHeaders, trusted=settings.forwarded_allow_ips)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    return app


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with the 400 this service answers in place of FastAPI's 422."""
    if app.openapi_schema is None:
        with warnings.catch_warnings():
            # FastAPI gives a GET+HEAD route one operation id for both; fixed below.
            warnings.filterwarnings("ignore", "Duplicate Operation ID", UserWarning)
            document = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
        for route, path in document.get("paths", {}).items():
            # HEAD is GET without the body wherever GET is allowed; it needs no operation of
            # its own, whose id would repeat the GET's (ids must be unique in a document).
            if path.pop("head", None) is not None and "get" in path:
                operation_id = path["get"]["operationId"]
                base = operation_id.removesuffix("_head").removesuffix("_get")
                path["get"]["operationId"] = base + "_get"
            for operation in path.values():
                responses = operation.get("responses", {})
                responses.pop("422", None)
                if route.startswith("/v1/") and not route.startswith("/v1/files/"):
                    operation["security"] = [{"bearer": []}, {"apiKey": []}]
        components = document.setdefault("components", {})
        # Declared here rather than as FastAPI dependencies, which would run on every request.
        components["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "One of this proxy's keys (ALLOW_CLIENT_KEYS).",
            },
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
        }
        schemas = components.get("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        app.openapi_schema = document
    return app.openapi_schema


def tune_garbage_collector() -> None:
    """Keep the cyclic garbage collector's pauses out of request latencies.

    Thousands of generations in flight keep millions of objects alive for seconds: with the
    default thresholds, full collections ran every few seconds and each stopped the event loop
    for up to half a second (measured under the benchmark's held load). Objects made at start-up
    are frozen out of every scan, and young collections run after 50,000 allocations instead of
    700, so objects are promoted, and full collections triggered, far less often. Reference
    counting still frees nearly everything at once; only cycles wait longer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def app_factory() -> FastAPI:
    """For `uvicorn --factory` and `--workers N`: each worker reads the environment itself."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)


async def _proxy_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProxyError)
    if exc.status_code >= 500:
        logger.warning("%s %s failed: %s", request.method, request.url.path, exc.message)
    # A 400 is logged by the parameter it names, as a validation error is.
    named = isinstance(exc, InvalidRequestError) and exc.param
    note_of(request).error = f"invalid {exc.param}" if named else exc.code or exc.error_type
    return error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    error = invalid_request(exc.errors())
    note_of(request).error = f"invalid {error.param or 'body'}"
    return error_response(error)


async def _client_left(request: Request, exc: Exception) -> Response:
    """The client went (or was closed as too slow) while its body was read: nobody reads an
    answer, and it is no server error; the request log names it."""
    if request.scope.get("state", {}).get(TIMED_OUT_STATE_KEY):
        # The guard has answered it 408 (server.py): logged and counted as that.
        note_of(request).error = "request_timeout"
        return error_response(RequestTimeoutError("The request body arrived too slowly."))
    note_of(request).error = "client_disconnected"
    return error_response(
        InvalidRequestError("The request body did not arrive whole.", code="incomplete_body")
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error: ProxyError
    if exc.status_code == 404:
        error = NotFoundError(f"Invalid URL ({request.method} {request.url.path}).")
    elif exc.status_code == 413:
        error = PayloadTooLargeError(str(exc.detail))
    elif exc.status_code == 405:
        error = MethodNotAllowedError(
            f"Method {request.method} is not allowed for {request.url.path}."
        )
    else:
        error = InvalidRequestError(str(exc.detail))
        return JSONResponse(error.envelope(), status_code=exc.status_code, headers=exc.headers)
    response = error_response(error)
    # Starlette's own headers: the 405's `Allow` names the methods the path does take.
    response.headers.update(exc.headers or {})
    return response
