"""The service in the test's own event loop: through ASGI, or on a loopback port.

`in_process(...)` runs `create_app(settings)` with its lifespan and an httpx client over
`ASGITransport`: no sockets, for fine-grained tests. `on_loopback(...)` serves the same app with
uvicorn on 127.0.0.1, for what needs a real connection (a client that disconnects, an SDK's
timeouts). Either way the test can reach the running `Services` directly.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from sfproxy.app import create_app
from sfproxy.fake_upstream import FakeSiliconFlow
from sfproxy.services import Services
from sfproxy.settings import Settings, load_settings

UPSTREAM_KEY = "sk-upstream-secret-0123456789"
ASGI_URL = "http://proxy.test"


def service_settings(
    fake: FakeSiliconFlow, tmp_path: Path | None = None, **overrides: Any
) -> Settings:
    """Settings for a service in front of `fake`, its images under `tmp_path` (or `image_dir`)."""
    values: dict[str, Any] = {
        "sf_base": fake.base_url,
        "siliconflow_api_key": fake.config.api_key or UPSTREAM_KEY,
        "upstream_retries": 0,
        # Tests inject 503s; a cool-down would carry them into the next request.
        "upstream_cooldown_seconds": 0,
    }
    if tmp_path is not None:
        values["image_dir"] = tmp_path / "images"
    values.update(overrides)
    if "image_dir" not in values and "database_url" not in values:
        # Never the checkout's data/sfproxy.db: each such service gets a database of its own.
        values["database_url"] = f"sqlite:///{tempfile.mkdtemp(prefix='sfproxy-db-')}/sfproxy.db"
    # No .env file: the test says everything the service is configured with.
    return load_settings(_env_file=None, **values)


@dataclass
class Running:
    app: FastAPI
    http: httpx.AsyncClient
    url: str

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    def metric(self, name: str, **labels: str) -> float:
        value = self.services.metrics.registry.get_sample_value(name, labels or None)
        return float(value or 0.0)


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client for `app` (from `create_app`), between its lifespan's start and end."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=ASGI_URL, timeout=30) as http:
            yield http


@asynccontextmanager
async def in_process(settings: Settings, **app_options: Any) -> AsyncIterator[Running]:
    app = create_app(settings, **app_options)
    async with serving(app) as http:
        yield Running(app=app, http=http, url=ASGI_URL)


@asynccontextmanager
async def on_loopback(settings: Settings, **app_options: Any) -> AsyncIterator[Running]:
    app = create_app(settings, **app_options)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_config=None,
        access_log=False,
        lifespan="on",
        # As `sfproxy serve` runs it: the app reads forwarding headers itself (links.py).
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        if serving.done() or time.monotonic() > deadline:
            serving.result()
            raise RuntimeError("the service did not start")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            yield Running(app=app, http=http, url=url)
    finally:
        server.should_exit = True
        await serving


async def eventually(condition: Any, *, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `condition()` until it is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        await asyncio.sleep(0.02)
