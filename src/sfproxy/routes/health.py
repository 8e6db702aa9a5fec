"""`/healthz` (the process is alive), `/readyz` (it can do its work) and `/metrics`.

Health needs no key. `/metrics` is open unless `METRICS_TOKEN` is set; then it wants that token
as a Bearer token (it is not a client key, and client keys do not open it).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import JSONResponse, Response

from ..errors import AuthenticationError, ProxyError
from .common import ServicesDep

router = APIRouter(tags=["health"])

# Orchestrators give probes a few seconds; an answer must come sooner than that.
CHECK_TIMEOUT = 2.5


@router.api_route("/healthz", methods=["GET", "HEAD"], summary="Liveness: the process is serving")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    summary="Readiness: configuration loaded, image store writable, Redis reachable",
    responses={503: {"description": "Not ready; `checks` says what failed"}},
)
async def readyz(services: ServicesDep) -> JSONResponse:
    checks: dict[str, Any] = {"configuration": "ok"}
    ready = True
    probes: dict[str, Callable[[], Awaitable[None]]] = {"image_store": services.store.check}
    if services.settings.redis_url is not None:
        probes["redis"] = services.counter.ping
    else:
        checks["redis"] = "not configured"
    for name, probe in probes.items():
        try:
            await asyncio.wait_for(probe(), CHECK_TIMEOUT)
            checks[name] = "ok"
        except TimeoutError:
            ready, checks[name] = False, f"no answer within {CHECK_TIMEOUT} s"
        except ProxyError as exc:
            ready, checks[name] = False, exc.message
        except Exception as exc:
            ready, checks[name] = False, exc.__class__.__name__
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}, 401: {"description": "METRICS_TOKEN"}},
)
async def metrics(request: Request, services: ServicesDep) -> Response:
    token = services.settings.metrics_token
    if token is not None:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.encode(), expected):
            raise AuthenticationError("/metrics needs METRICS_TOKEN as a Bearer token.")
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
