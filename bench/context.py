"""What every scenario shares: the running servers, the load generator, single-request timings.

Python clients here only orchestrate and time single requests one at a time; every figure taken
under load comes from wrk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from . import litellm
from .processes import (
    UPSTREAM_KEY,
    FakeControl,
    Pinning,
    Server,
    start_service,
)
from .wrk import Wrk, WrkResult

GENERATIONS = "/v1/images/generations"
OPENAI_GENERATIONS = "/openai/v1/images/generations"
UPSTREAM_AUTH = {"Authorization": f"Bearer {UPSTREAM_KEY}"}
MODEL = litellm.MODEL
PROMPT = "a lighthouse at dusk"
# A fixed seed makes the fake render each picture once and serve it from its cache after.
SEED = 42
# Long enough for any single request in any scenario, short enough to fail a hung run.
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60)
# Stores: "off" passes SiliconFlow's URLs through (what LiteLLM does, so equal work); "local",
# the default, downloads and keeps every image.
STORE_OFF = {"IMAGE_STORE": "off"}
STORE_LOCAL = {"IMAGE_STORE": "local"}


@dataclass(frozen=True, slots=True)
class Target:
    """One endpoint as wrk hits it: URL, body and headers."""

    url: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Context:
    workdir: Path
    pinning: Pinning
    wrk: Wrk
    session: aiohttp.ClientSession
    fake: Server
    quick: bool
    with_litellm: bool
    servers: dict[str, Server] = field(default_factory=dict)
    litellm_key: str = ""
    litellm_ready_s: float | None = None
    scoped: list[str] = field(default_factory=list)
    # Settings given with --service-env, over each scenario's own: to measure a change.
    service_overrides: dict[str, str] = field(default_factory=dict)

    @property
    def control(self) -> FakeControl:
        return FakeControl(self.session, self.fake)

    async def service(self, name: str, **settings: str) -> Server:
        """The service started once per name with these settings, pinned to the gateway CPU."""
        server = self.servers.get(name)
        if server is None or server.process.poll() is not None:
            server = await start_service(
                name,
                self.fake,
                self.workdir,
                self.pinning.proxy,
                **{**settings, **self.service_overrides},
            )
            self.servers[name] = server
        return server

    async def litellm(self) -> Server:
        server = self.servers.get("litellm")
        if server is None:
            server, self.litellm_key = await litellm.start_litellm(
                self.fake, self.workdir, self.pinning.proxy
            )
            self.servers["litellm"] = server
            self.litellm_ready_s = server.ready_seconds
        return server

    @property
    def litellm_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.litellm_key}"}

    async def fresh_service(self, name: str, **settings: str) -> Server:
        """A service process of the current scenario's own, stopped when it ends: its VmHWM
        and its event-loop lag maximum then describe that scenario alone."""
        self.scoped.append(name)
        return await self.service(name, **settings)

    def stop_scoped(self) -> None:
        for name in self.scoped:
            server = self.servers.pop(name, None)
            if server is not None:
                server.stop()
        self.scoped.clear()

    def stop_all(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.servers.clear()

    async def load(
        self,
        target: Target,
        *,
        concurrency: int,
        seconds: float,
        timeout_s: float = 30.0,
        stagger_s: float | None = None,
    ) -> WrkResult:
        return await self.wrk.run(
            target.url,
            target.body,
            concurrency=concurrency,
            seconds=seconds,
            headers=target.headers,
            timeout_s=timeout_s,
            stagger_s=stagger_s,
        )

    async def post(self, target: Target) -> tuple[float, dict[str, Any]]:
        """One request: its wall time in seconds and its JSON answer, which must be 200."""
        started = time.perf_counter()
        async with self.session.post(
            target.url, json=target.body, headers=target.headers, timeout=REQUEST_TIMEOUT
        ) as response:
            raw = await response.read()
            elapsed = time.perf_counter() - started
            if response.status != 200:
                raise RuntimeError(
                    f"{target.url} answered {response.status}: {raw[:500].decode(errors='replace')}"
                )
        answer: dict[str, Any] = orjson.loads(raw)
        return elapsed, answer

    async def get_bytes(self, url: str) -> tuple[float, bytes]:
        started = time.perf_counter()
        async with self.session.get(url, timeout=REQUEST_TIMEOUT) as response:
            data = await response.read()
            if response.status != 200:
                raise RuntimeError(f"{url} answered {response.status}")
        return time.perf_counter() - started, data

    async def check_images(self, target: Target, count: int = 1) -> dict[str, Any]:
        """Refuse to measure an endpoint that does not really answer with images."""
        _, answer = await self.post(target)
        images = image_items(answer)
        if len(images) != count or not all(
            isinstance(item, Mapping) and (item.get("url") or item.get("b64_json"))
            for item in images
        ):
            raise RuntimeError(f"{target.url} did not answer with {count} image(s): {answer}")
        return answer


def image_items(answer: Mapping[str, Any]) -> list[Any]:
    """OpenAI's `data` or SiliconFlow's `images`."""
    items = answer.get("data", answer.get("images"))
    return list(items) if isinstance(items, list) else []


async def poll_healthz(
    session: aiohttp.ClientSession, url: str, stop: asyncio.Event, interval: float = 0.005
) -> list[float]:
    """Latencies (seconds) of `GET /healthz` every `interval` until `stop`: a blocked event
    loop in the service shows up as a slow answer, seen from outside the process."""
    latencies: list[float] = []
    while not stop.is_set():
        started = time.perf_counter()
        async with session.get(url, timeout=REQUEST_TIMEOUT) as response:
            await response.read()
        elapsed = time.perf_counter() - started
        latencies.append(elapsed)
        await asyncio.sleep(max(0.0, interval - elapsed))
    return latencies


def service_body(**extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "prompt": PROMPT,
        "n": 1,
        "response_format": "url",
        "seed": SEED,
        **extra,
    }


async def direct_target(ctx: Context, through: Target) -> Target:
    """The fake called directly with exactly the body the service sent it for `through`."""
    await ctx.check_images(through)
    body = await ctx.control.last_request_body(GENERATIONS)
    return Target(ctx.fake.url + GENERATIONS, body, UPSTREAM_AUTH)


def per_request_ms(cpu_seconds: float, result: WrkResult) -> float | None:
    return cpu_seconds * 1000 / result.requests if result.requests else None


def brief(run: dict[str, Any]) -> str:
    cpu = run.get("cpu_ms_per_request")
    return (
        f"p50 {run['p50_ms']:.2f} ms  p99 {run['p99_ms']:.2f} ms  {run['rps']:.0f} req/s"
        f"  errors {sum(run['errors'].values())}"
        + (f"  {cpu:.2f} ms CPU/request" if cpu is not None else "")
    )


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
