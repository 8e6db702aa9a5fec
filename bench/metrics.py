"""The service's own event-loop lag, when its `/metrics` exposes one.

The metric's shape is another engineer's choice, so any Prometheus sample whose name holds
`event_loop_lag` is read: a `..._max...` gauge directly, else a histogram's smallest bucket that
holds every observation (an upper bound on the maximum), else a plain gauge's last value.
"""

from __future__ import annotations

import math
import re

import aiohttp

_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)"
)
_LE = re.compile(r'le="(?P<le>[^"]+)"')


def _to_ms(name: str, value: float) -> float:
    if "millisecond" in name or name.endswith("_ms") or "_ms_" in name:
        return value
    # Prometheus names carry their unit; seconds is the convention.
    return value * 1000


def lag_max_from_prometheus(text: str) -> tuple[float | None, str]:
    """(max lag in ms or None, how it was read) from Prometheus text exposition."""
    maxima: list[tuple[str, float]] = []
    buckets: dict[str, list[tuple[float, float]]] = {}
    gauges: list[tuple[str, float]] = []
    for line in text.splitlines():
        if line.startswith("#") or "event_loop_lag" not in line:
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels = match["name"], match["labels"] or ""
        try:
            value = float(match["value"])
        except ValueError:
            continue
        if name.endswith("_bucket"):
            le = _LE.search(labels)
            if le is not None:
                buckets.setdefault(name, []).append((float(le["le"]), value))
        elif "max" in name:
            maxima.append((name, value))
        elif not name.endswith(("_count", "_sum", "_created")):
            gauges.append((name, value))
    if maxima:
        name, value = max(maxima, key=lambda item: item[1])
        return _to_ms(name, value), f"{name} (gauge)"
    for name, points in buckets.items():
        points.sort()
        total = points[-1][1]
        for bound, count in points:
            if count >= total and not math.isinf(bound):
                return _to_ms(name, bound), f"{name} (histogram: every observation <= bound)"
        if total > 0:
            return math.inf, f"{name} (histogram: some observation above the last bucket)"
    if gauges:
        name, value = gauges[0]
        return _to_ms(name, value), f"{name} (last value, not a maximum)"
    return None, "n/a"


async def event_loop_lag_max_ms(
    session: aiohttp.ClientSession, base_url: str
) -> tuple[float | None, str]:
    try:
        async with session.get(
            base_url + "/metrics", timeout=aiohttp.ClientTimeout(total=5)
        ) as response:
            if response.status != 200:
                return None, f"n/a (/metrics answered {response.status})"
            text = await response.text()
    except aiohttp.ClientError as error:
        return None, f"n/a ({error.__class__.__name__})"
    return lag_max_from_prometheus(text)


def overhead_from_prometheus(text: str, route: str) -> dict[str, float] | None:
    """The service's own account of its time per request on `route` (its
    `sfproxy_overhead_seconds`: total minus upstream and queue time), in ms: the mean, and the
    bucket bound 99% of requests fall within."""
    total = count = 0.0
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if not line.startswith("sfproxy_overhead_seconds") or f'route="{route}"' not in line:
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, value = match["name"], float(match["value"])
        if name.endswith("_sum"):
            total = value
        elif name.endswith("_count"):
            count = value
        elif name.endswith("_bucket"):
            le = _LE.search(match["labels"] or "")
            if le is not None:
                buckets.append((float(le["le"]), value))
    if not count:
        return None
    buckets.sort()
    p99_bound = next((bound for bound, seen in buckets if seen >= 0.99 * count), math.inf)
    return {"mean_ms": total / count * 1000, "p99_within_ms": p99_bound * 1000}


async def metrics_text(session: aiohttp.ClientSession, base_url: str) -> str | None:
    try:
        async with session.get(
            base_url + "/metrics", timeout=aiohttp.ClientTimeout(total=5)
        ) as response:
            return await response.text() if response.status == 200 else None
    except aiohttp.ClientError:
        return None
