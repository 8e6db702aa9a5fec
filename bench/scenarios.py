"""The six scenarios of issue 5, issue 11's key pool, and (from `ledger_scenario.py`) issue 12's
ledger. Each returns plain JSON data; `report.py` judges it.

Every gateway figure is taken beside the direct call to the same fake in the same run, since the
machines are shared and noisy: what counts is the difference and the ratio, not the absolute.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from .context import (
    GENERATIONS,
    MODEL,
    OPENAI_GENERATIONS,
    PROMPT,
    SEED,
    STORE_LOCAL,
    STORE_OFF,
    UPSTREAM_AUTH,
    Context,
    Target,
    bearer,
    brief,
    direct_target,
    image_items,
    per_request_ms,
    poll_healthz,
    service_body,
)
from .dependencies import dependencies
from .key_choice import choice_cost_us
from .ledger_scenario import ledger
from .metrics import (
    event_loop_lag_max_ms,
    lag_max_from_prometheus,
    metrics_text,
    overhead_from_prometheus,
)
from .processes import (
    UPSTREAM_KEY,
    free_port,
    service_command,
    service_env,
    spawn,
    wait_ready,
)

Scenario = Callable[[Context], Awaitable[dict[str, Any]]]


async def added_latency(ctx: Context) -> dict[str, Any]:
    """Scenario 1: an instant upstream, wrk at several concurrencies, every gateway in turn."""
    await ctx.control.configure(latency=0.0, download_latency=0.0, image_min_bytes=0)
    off = await ctx.service("service", **STORE_OFF)
    local = await ctx.service("service_local", **STORE_LOCAL)
    targets: dict[str, Target] = {}
    # Whose CPU time each run is charged to.
    servers = {"direct": ctx.fake, "service": off, "service_local": local}
    service = Target(off.url + GENERATIONS, service_body())
    targets["direct"] = await direct_target(ctx, service)
    targets["service"] = service
    targets["service_local"] = Target(local.url + GENERATIONS, service_body())
    if ctx.with_litellm:
        gateway = await ctx.litellm()
        through_litellm = Target(
            gateway.url + GENERATIONS,
            {"model": MODEL, "prompt": PROMPT, "n": 1, "response_format": "url"},
            ctx.litellm_auth,
        )
        await ctx.check_images(through_litellm)
        sent = await ctx.control.last_request_body(OPENAI_GENERATIONS)
        targets["direct_openai"] = Target(ctx.fake.url + OPENAI_GENERATIONS, sent, UPSTREAM_AUTH)
        targets["litellm"] = through_litellm
        servers.update(direct_openai=ctx.fake, litellm=gateway)
    for target in targets.values():
        await ctx.check_images(target)

    concurrencies = [1, 64] if ctx.quick else [1, 8, 64, 256]
    seconds = 2.0 if ctx.quick else 5.0
    levels = []
    for concurrency in concurrencies:
        runs: dict[str, Any] = {}
        for name, target in targets.items():
            # A short warm-up at the same concurrency opens the gateway's upstream connections.
            await ctx.load(target, concurrency=concurrency, seconds=1)
            cpu_before = servers[name].cpu_seconds()
            result = await ctx.load(target, concurrency=concurrency, seconds=seconds)
            cpu = servers[name].cpu_seconds() - cpu_before
            runs[name] = {**result.to_json(), "cpu_ms_per_request": per_request_ms(cpu, result)}
            print(f"bench:   c={concurrency:<4} {name:<14} {brief(runs[name])}", flush=True)
        levels.append({"concurrency": concurrency, "runs": runs})
    if "litellm" in ctx.servers:
        # Idle, it would still share the gateway CPU with the service in later scenarios.
        ctx.servers.pop("litellm").stop()
    return {
        "upstream_latency_s": 0.0,
        "seconds_per_run": seconds,
        "bodies": {name: target.body for name, target in targets.items()},
        "levels": levels,
    }


async def fan_out(ctx: Context) -> dict[str, Any]:
    """Scenario 2: n=4 against n=1 through the service, with a 1 s upstream."""
    service = await ctx.service("service_local", **STORE_LOCAL)
    single = Target(service.url + GENERATIONS, service_body(seed=7))
    four = Target(service.url + GENERATIONS, service_body(seed=7, n=4))
    # Warm with an instant upstream: renders and connections are then ready, at no wall time.
    await ctx.control.configure(latency=0.0)
    direct = await direct_target(ctx, single)
    await ctx.check_images(four, count=4)
    await ctx.control.configure(latency=1.0)
    runs = 2 if ctx.quick else 3
    single_s, fan_out_s, direct_s = [], [], []
    for _ in range(runs):
        direct_s.append((await ctx.post(direct))[0])
        single_s.append((await ctx.post(single))[0])
        elapsed, answer = await ctx.post(four)
        if len(image_items(answer)) != 4:
            raise RuntimeError(f"n=4 returned {len(image_items(answer))} images")
        fan_out_s.append(elapsed)
    await ctx.control.configure(latency=0.0)
    return {
        "upstream_latency_s": 1.0,
        "n": 4,
        "direct_single_s": direct_s,
        "single_s": single_s,
        "fan_out_s": fan_out_s,
    }


async def streaming(ctx: Context) -> dict[str, Any]:
    """Scenario 3: first chunk and keepalives of a streamed chat answer, 3 s upstream."""
    keepalive = 0.5
    service = await ctx.service(
        "service_stream", STREAM_KEEPALIVE_SECONDS=str(keepalive), **STORE_LOCAL
    )
    url = service.url + "/v1/chat/completions"
    body = {
        "model": MODEL,
        "stream": True,
        "seed": SEED,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    await ctx.control.configure(latency=0.0)
    await _stream_once(ctx.session, url, body)
    await ctx.control.configure(latency=3.0)
    runs = []
    for _ in range(2 if ctx.quick else 3):
        runs.append(await _stream_once(ctx.session, url, body))
    await ctx.control.configure(latency=0.0)
    return {"upstream_latency_s": 3.0, "keepalive_s": keepalive, "runs": runs}


async def _stream_once(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> dict[str, Any]:
    """Times (seconds from sending) of the headers, each event, and the gaps between the first
    chunk and each keepalive that followed it."""
    started = time.perf_counter()
    events: list[tuple[float, str]] = []
    async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=60)) as response:
        headers_s = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"streamed chat answered {response.status}: {await response.text()}")
        async for line in response.content:
            now = time.perf_counter() - started
            if line.startswith(b":"):
                events.append((now, "keepalive"))
            elif line.startswith(b"data: [DONE]"):
                events.append((now, "done"))
            elif line.startswith(b"data: "):
                events.append((now, "error" if b'"error"' in line[:40] else "data"))
    kinds = [kind for _, kind in events]
    if not events or kinds[0] != "data" or kinds[-1] != "done" or "error" in kinds:
        raise RuntimeError(f"unexpected stream: {kinds}")
    ticks = [events[0][0]] + [at for at, kind in events if kind == "keepalive"]
    return {
        "headers_ms": headers_s * 1000,
        "first_chunk_ms": events[0][0] * 1000,
        "keepalive_gaps_s": [later - earlier for earlier, later in itertools.pairwise(ticks)],
        "answer_s": next(at for at, kind in events[1:] if kind == "data"),
    }


async def held_load(ctx: Context) -> dict[str, Any]:
    """Scenario 4: 2,000 generations held in flight on a 5 s upstream, direct and through a
    fresh service (so that its VmHWM is this scenario's peak alone).

    Held: each connection's first request starts at a random moment within one upstream
    latency, then each sends back to back, so 2,000 stay in flight, arriving and finishing
    spread out as real clients' do. Burst (full runs only, no target): all 2,000 start at
    once and, with a fixed upstream latency, all answers come back at once too.
    """
    connections, latency = 2000, 5.0
    service = await ctx.fresh_service("service_held", **STORE_LOCAL)
    through = Target(service.url + GENERATIONS, service_body())
    await ctx.control.configure(latency=0.0)
    direct = await direct_target(ctx, through)
    await ctx.control.configure(latency=latency)
    held_seconds = 12.0 if ctx.quick else 15.0
    result: dict[str, Any] = {
        "connections": connections,
        "upstream_latency_s": latency,
        "seconds": held_seconds,
        "stagger_s": latency,
        "settings": {**STORE_LOCAL},
    }
    for name, target in (("direct", direct), ("service", through)):
        result[name] = await _held_run(ctx, name, target, connections, held_seconds, latency)
    result["service_peak_rss_mb"] = service.peak_rss_mb()
    # The service's own account of the held run: its time per request and its loop's stalls.
    text = await metrics_text(ctx.session, service.url)
    if text is not None:
        result["service_overhead"] = overhead_from_prometheus(text, GENERATIONS)
        result["service_loop_lag_max_ms"] = lag_max_from_prometheus(text)[0]
    if not ctx.quick:
        # Without the download and the write of each image (no target: the default keeps them).
        passthrough = await ctx.fresh_service("service_held_off", **STORE_OFF)
        target = Target(passthrough.url + GENERATIONS, service_body())
        result["service_off"] = await _held_run(
            ctx, "service off", target, connections, held_seconds, latency
        )
        passthrough.stop()
        # Under two upstream latencies no connection can finish a second request, so each of
        # the 2,000 is measured once; any still running at the end is counted as unfinished.
        burst_seconds = 2 * latency - 1
        result["burst"] = {"seconds": burst_seconds}
        for name, target in (("direct", direct), ("service", through)):
            result["burst"][name] = await _held_run(
                ctx, f"burst {name}", target, connections, burst_seconds, None
            )
    result["service_peak_rss_after_burst_mb"] = service.peak_rss_mb()
    result["service_rss_after_mb"] = service.rss_mb()
    await ctx.control.configure(latency=0.0)
    return result


async def _held_run(
    ctx: Context,
    label: str,
    target: Target,
    connections: int,
    seconds: float,
    stagger_s: float | None,
) -> dict[str, Any]:
    await ctx.control.wait_idle()
    await ctx.control.reset_stats()
    run = await ctx.load(
        target, concurrency=connections, seconds=seconds, timeout_s=60, stagger_s=stagger_s
    )
    stats = await ctx.control.stats()
    measured = {**run.to_json(), "upstream_peak_in_flight": stats["peak_in_flight"]}
    print(f"bench:   held {label:<14} {brief(measured)}", flush=True)
    return measured


async def large_images(ctx: Context) -> dict[str, Any]:
    """Scenario 5: b64_json of a 2 MB image, and the service's event loop meanwhile."""
    image_bytes = 2_000_000
    await ctx.control.configure(latency=0.0, image_min_bytes=image_bytes)
    services = {
        "service_local": await ctx.fresh_service("service_large_local", **STORE_LOCAL),
        "service": await ctx.fresh_service("service_large", **STORE_OFF),
    }
    targets = {
        name: Target(server.url + GENERATIONS, service_body(response_format="b64_json", seed=11))
        for name, server in services.items()
    }
    generate = await direct_target(ctx, targets["service_local"])
    for target in targets.values():
        answer = await ctx.check_images(target)
        if len(base64.b64decode(image_items(answer)[0]["b64_json"])) < image_bytes:
            raise RuntimeError("the b64_json image is smaller than the fake's padding")

    async def direct_once() -> float:
        generate_s, answer = await ctx.post(generate)
        download_s, _ = await ctx.get_bytes(image_items(answer)[0]["url"])
        return generate_s + download_s

    timings: dict[str, list[float]] = {"direct": [], **{name: [] for name in targets}}
    for _ in range(5 if ctx.quick else 10):
        timings["direct"].append(await direct_once())
        for name, target in targets.items():
            timings[name].append((await ctx.post(target))[0])

    lag = await _loop_lag_under_load(ctx, services["service_local"].url, targets["service_local"])
    await ctx.control.configure(image_min_bytes=0)
    return {
        "image_bytes": image_bytes,
        "seconds": {name: values for name, values in timings.items()},
        **lag,
    }


async def _loop_lag_under_load(ctx: Context, base_url: str, target: Target) -> dict[str, Any]:
    """Worst `/healthz` latency idle, then while wrk keeps b64_json requests in flight."""
    healthz = base_url + "/healthz"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as poller:
        idle_stop = asyncio.Event()
        idle = asyncio.create_task(poll_healthz(poller, healthz, idle_stop))
        await asyncio.sleep(1.0)
        idle_stop.set()
        idle_polls = await idle

        loaded_stop = asyncio.Event()
        loaded = asyncio.create_task(poll_healthz(poller, healthz, loaded_stop))
        run = await ctx.load(target, concurrency=4, seconds=2 if ctx.quick else 4)
        loaded_stop.set()
        loaded_polls = await loaded
    lag_ms, lag_source = await event_loop_lag_max_ms(ctx.session, base_url)
    return {
        "healthz_idle_ms": [value * 1000 for value in idle_polls],
        "healthz_loaded_ms": [value * 1000 for value in loaded_polls],
        "load": run.to_json(),
        "event_loop_lag_metric_max_ms": lag_ms,
        "event_loop_lag_metric_source": lag_source,
    }


async def startup(ctx: Context) -> dict[str, Any]:
    """Scenario 6: process start to the first 200 from /healthz, several fresh starts."""
    seconds = []
    for attempt in range(3 if ctx.quick else 5):
        name = f"startup-{attempt}"
        directory = ctx.workdir / name
        port = free_port()
        server = spawn(
            name,
            service_command(port),
            url=f"http://127.0.0.1:{port}",
            env=service_env(ctx.fake, directory, **ctx.service_overrides),
            workdir=directory,
            pin=ctx.pinning.proxy,
        )
        try:
            await wait_ready(server, "/healthz")
            seconds.append(server.ready_seconds)
        finally:
            server.stop()
    return {"seconds": seconds, "litellm_seconds": ctx.litellm_ready_s}


# Issue 11's pool: two accounts of two keys each, unlimited and well funded, so only the choice
# of key differs from the single-key service.
POOL_ACCOUNTS = {
    "bench-acct-a": ["sk-bench-pool-a1", "sk-bench-pool-a2"],
    "bench-acct-b": ["sk-bench-pool-b1", "sk-bench-pool-b2"],
}


async def key_pool(ctx: Context) -> dict[str, Any]:
    """Issue 11: the service with a pool of 4 keys in 2 accounts against it with one key."""
    await ctx.control.configure(latency=0.0, download_latency=0.0, image_min_bytes=0)
    accounts = await ctx.control.set_accounts(POOL_ACCOUNTS, also=UPSTREAM_KEY)
    pool_keys = [key for keys in POOL_ACCOUNTS.values() for key in keys]
    try:
        for key in pool_keys:
            # The fake must take every pool key on the path measured, or the pool would be
            # measured answering errors.
            probe = Target(ctx.fake.url + GENERATIONS, service_body(), bearer(key))
            await ctx.check_images(probe)
        single = await ctx.fresh_service("key_single", **STORE_OFF)
        pool = await ctx.fresh_service(
            "key_pool",
            **STORE_OFF,
            SILICONFLOW_API_KEY="",
            SILICONFLOW_API_KEYS=",".join(pool_keys),
        )
        servers = {"direct": ctx.fake, "service": single, "service_pool": pool}
        targets = {
            "direct": await direct_target(ctx, Target(single.url + GENERATIONS, service_body())),
            "service": Target(single.url + GENERATIONS, service_body()),
            "service_pool": Target(pool.url + GENERATIONS, service_body()),
        }
        for target in targets.values():
            await ctx.check_images(target)
        seconds = 2.0 if ctx.quick else 5.0
        # The two services take turns (one key first, then the pool first, ...): other
        # tenants' load drifts, and a fixed order would charge the drift to one of them.
        rounds = 1 if ctx.quick else 5
        levels = []
        for concurrency in (1, 64):
            measured: list[dict[str, Any]] = []
            for index in range(rounds + 1):
                names = ["service", "service_pool"] if index % 2 else ["service_pool", "service"]
                runs: dict[str, Any] = {}
                for name in ["direct"] if index == 0 else names:
                    await ctx.load(targets[name], concurrency=concurrency, seconds=1)
                    cpu_before = servers[name].cpu_seconds()
                    result = await ctx.load(targets[name], concurrency=concurrency, seconds=seconds)
                    cpu = servers[name].cpu_seconds() - cpu_before
                    runs[name] = {
                        **result.to_json(),
                        "cpu_ms_per_request": per_request_ms(cpu, result),
                    }
                    print(f"bench:   c={concurrency:<4} {name:<14} {brief(runs[name])}", flush=True)
                measured.append(runs)
            direct, *turns = measured
            levels.append(
                {"concurrency": concurrency, "runs": {**direct, **turns[0]}, "rounds": turns}
            )
        # Which keys a short load through the pool's service reached, as the fake saw them.
        await ctx.control.clear_requests()
        await ctx.load(targets["service_pool"], concurrency=8, seconds=1)
        used = await ctx.control.keys_seen(GENERATIONS)
    finally:
        await ctx.control.clear_accounts()
    return {
        "seconds_per_run": seconds,
        "rounds": rounds,
        "choice_us": await choice_cost_us(POOL_ACCOUNTS),
        "accounts": accounts,
        "pool_keys": len(pool_keys),
        "requests_per_key": used,
        "levels": levels,
    }


SCENARIOS: dict[str, Scenario] = {
    "latency": added_latency,
    "fanout": fan_out,
    "streaming": streaming,
    "held": held_load,
    "large": large_images,
    "startup": startup,
    "deps": dependencies,
    "key_pool": key_pool,
    "ledger": ledger,
}
