"""The service in the test's own event loop: `create_app(settings)` behind `httpx.ASGITransport`.

The lifespan runs as it does under uvicorn, so the services are the real ones; only the socket
between client and server is left out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from sfproxy.fake_upstream import FakeSiliconFlow
from sfproxy.settings import Settings, load_settings


def settings_for(fake: FakeSiliconFlow, **overrides: Any) -> Settings:
    """Settings for a service in front of `fake`, with no `.env` read."""
    values: dict[str, Any] = {
        "sf_base": fake.base_url,
        "siliconflow_api_key": fake.config.api_key or "sk-any",
        "upstream_retries": 0,
        "_env_file": None,
    }
    values.update(overrides)
    return load_settings(**values)


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client for `app` (from `create_app`), between its lifespan's start and end."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
