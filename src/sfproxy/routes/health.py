"""`/healthz` (the process is alive), `/readyz` (it can do its work) and `/metrics`.

Health needs no key; so that probing costs little, `/readyz` answers from a check at most
`READY_CACHE_SECONDS` old. `/metrics` is open unless `METRICS_TOKEN` is set; then it wants
that token as a Bearer token (it is not a client key, and client keys do not open it).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import JSONResponse, Response

from ..errors import AuthenticationError, ProxyError
from ..links import link_warning
from .common import ServicesDep

if TYPE_CHECKING:
    from ..services import Services

router = APIRouter(tags=["health"])

# Orchestrators give probes a few seconds; an answer must come sooner than that.
CHECK_TIMEOUT = 2.5
# /readyz needs no key and its image store check writes and deletes a file or an object: an
# answer is reused this long, so a flood of probes costs one check per interval. Shorter than
# Kubernetes' default probe period (10 s), so each probe still sees a recent check.
READY_CACHE_SECONDS = 5.0
MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    checks: dict[str, Any]
    checked_at: float


class ReadinessCache:
    """The last readiness answer, and one check at a time to replace it when it is stale."""

    def __init__(
        self,
        max_age: float = READY_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_age = max_age
        self._clock = clock
        self._last: Readiness | None = None
        self._lock = asyncio.Lock()

    def _fresh(self) -> Readiness | None:
        last = self._last
        if last is not None and self._clock() - last.checked_at < self.max_age:
            return last
        return None

    async def get(self, services: Services) -> Readiness:
        fresh = self._fresh()
        if fresh is not None:
            return fresh
        async with self._lock:
            # Probes that queued behind the check take its answer.
            fresh = self._fresh()
            if fresh is None:
                started = self._clock()
                ready, checks = await check_readiness(services)
                fresh = self._last = Readiness(ready, checks, checked_at=started)
            return fresh


async def check_readiness(services: Services) -> tuple[bool, dict[str, Any]]:
    checks: dict[str, Any] = {"configuration": "ok"}
    ready, keys_line = services.client.keys.readiness()
    if keys_line is not None:
        checks["upstream_keys"] = keys_line
    min_free_bytes = int(services.settings.min_free_disk_mb * MB)
    probes: dict[str, Callable[[], Awaitable[None]]] = {
        "image_store": lambda: services.store.check(min_free_bytes=min_free_bytes)
    }
    if services.settings.redis_url is not None:
        probes["redis"] = services.counter.ping
    else:
        checks["redis"] = "not configured"
    # A warning, not a failure: the links work for clients that reach the service directly.
    warning = link_warning(services.settings)
    if warning is not None:
        checks["public_base_url"] = warning
    # Informational: a failed discovery leaves the built-in list serving, still ready.
    checks["models"] = services.models.status
    # Informational too: while the database is unreachable requests are still served, and
    # their records wait in the ledger's buffer.
    checks["ledger"] = services.ledger.writer.status
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
    return ready, checks


@router.api_route("/healthz", methods=["GET", "HEAD"], summary="Liveness: the process is serving")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    summary="Readiness: configuration loaded, image store writable with room left, Redis reachable",
    responses={503: {"description": "Not ready; `checks` says what failed"}},
)
async def readyz(request: Request, services: ServicesDep) -> JSONResponse:
    state = request.app.state
    cache: ReadinessCache | None = getattr(state, "readiness", None)
    if cache is None:
        cache = state.readiness = ReadinessCache()
    readiness = await cache.get(services)
    return JSONResponse(
        {"status": "ready" if readiness.ready else "not ready", "checks": readiness.checks},
        status_code=200 if readiness.ready else 503,
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
