"""The dependencies chosen for speed, measured beside the ones they replaced.

- HTTP client to SiliconFlow: aiohttp against httpx, both calling the fake upstream with 64
  calls in flight; the figure is the client's own CPU time per call (this process does nothing
  else meanwhile), so it does not depend on how fast the fake answers.
- base64 of a 2 MB image: pybase64 against the standard library.
- The JSON of a `b64_json` answer: orjson with the base64 as a pre-encoded fragment, against
  pydantic serialising the same answer holding a Python str.
"""

from __future__ import annotations

import asyncio
import base64
import os
import resource
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import httpx
import orjson
import pybase64
import pydantic_core

from .context import GENERATIONS, UPSTREAM_AUTH, Context

IMAGE_BYTES = 2_000_000
CONCURRENCY = 64


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _cpu_per_call(calls: int, one: Callable[[], Awaitable[None]]) -> float:
    """Milliseconds of this process's CPU per call, `CONCURRENCY` calls in flight."""
    limit = asyncio.Semaphore(CONCURRENCY)

    async def limited() -> None:
        async with limit:
            await one()

    before = _cpu_seconds()
    await asyncio.gather(*(limited() for _ in range(calls)))
    return (_cpu_seconds() - before) / calls * 1000


async def _clients(ctx: Context) -> dict[str, float]:
    url = ctx.fake.url + GENERATIONS
    body = {"model": "Qwen/Qwen-Image", "prompt": "client cost", "seed": 7}
    calls = 1000 if ctx.quick else 3000
    results: dict[str, list[float]] = {"aiohttp": [], "httpx": []}
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        httpx.AsyncClient(limits=limits) as client,
    ):

        async def with_aiohttp() -> None:
            async with session.post(url, json=body, headers=UPSTREAM_AUTH) as response:
                await response.read()

        async def with_httpx() -> None:
            (await client.post(url, json=body, headers=UPSTREAM_AUTH)).read()

        await _cpu_per_call(CONCURRENCY, with_aiohttp)  # warm both pools
        await _cpu_per_call(CONCURRENCY, with_httpx)
        # Alternated rounds, so a noisy neighbour weighs on both alike.
        for _ in range(2):
            results["aiohttp"].append(await _cpu_per_call(calls, with_aiohttp))
            results["httpx"].append(await _cpu_per_call(calls, with_httpx))
    return {name: statistics.median(values) for name, values in results.items()}


def _median_ms(action: Callable[[], object], repeat: int = 15) -> float:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


def _encoders() -> dict[str, float]:
    image = os.urandom(IMAGE_BYTES)
    encoded = pybase64.b64encode(image)
    as_str = encoded.decode("ascii")
    answer = {"created": 0, "data": [{"b64_json": as_str, "seed": 1}]}
    return {
        "base64_stdlib_ms": _median_ms(lambda: base64.b64encode(image)),
        "base64_pybase64_ms": _median_ms(lambda: pybase64.b64encode(image)),
        "json_pydantic_ms": _median_ms(
            lambda: pydantic_core.to_json({**answer, "data": [{"b64_json": as_str}]})
        ),
        "json_orjson_fragment_ms": _median_ms(
            lambda: orjson.dumps(
                {**answer, "data": [{"b64_json": orjson.Fragment(b'"' + encoded + b'"')}]}
            )
        ),
    }


async def dependencies(ctx: Context) -> dict[str, Any]:
    clients = await _clients(ctx)
    return {
        "concurrency": CONCURRENCY,
        "image_bytes": IMAGE_BYTES,
        "client_cpu_ms_per_call": clients,
        **_encoders(),
    }


Row = tuple[str, str, str, str, str, str]


def dependency_rows(scenario: Mapping[str, Any]) -> list[Row]:
    clients = scenario["client_cpu_ms_per_call"]
    megabytes = scenario["image_bytes"] / 1_000_000

    def versus(chosen: float, other: float, name: str) -> str:
        return f"{name} {other:.2f} ms: {other / chosen:.1f}× the cost"

    return [
        (
            "deps",
            f"HTTP client, CPU per call, {scenario['concurrency']} in flight",
            f"aiohttp {clients['aiohttp']:.3f} ms",
            versus(clients["aiohttp"], clients["httpx"], "httpx"),
            "",
            "chosen: aiohttp",
        ),
        (
            "deps",
            f"base64 of a {megabytes:g} MB image",
            f"pybase64 {scenario['base64_pybase64_ms']:.2f} ms",
            versus(scenario["base64_pybase64_ms"], scenario["base64_stdlib_ms"], "stdlib"),
            "",
            "chosen: pybase64",
        ),
        (
            "deps",
            "JSON of that b64_json answer",
            f"orjson + fragment {scenario['json_orjson_fragment_ms']:.2f} ms",
            versus(scenario["json_orjson_fragment_ms"], scenario["json_pydantic_ms"], "pydantic"),
            "",
            "chosen: orjson",
        ),
    ]
