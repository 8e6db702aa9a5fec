"""The load generator: `wrk`, a compiled client, driven by a Lua script that posts a JSON body
and prints its summary as one JSON line.

A Python client saturates long before the service does, and would then measure itself; wrk
spends microseconds per request, so what it reports is the server's latency.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# The marker lets the JSON line be found among wrk's own human-readable output.
RESULT_MARKER = "WRK_JSON "

_LUA_TEMPLATE = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
{headers}
{delay}
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{marker}{{"requests":%d,"duration_us":%d,"bytes":%d,'
    .. '"errors":{{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}},'
    .. '"latency_us":{{"min":%d,"max":%d,"mean":%.3f,"stdev":%.3f,'
    .. '"p50":%d,"p90":%d,"p99":%d,"p999":%d}}}}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.max, latency.mean, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
"""


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run; latencies in milliseconds."""

    requests: int
    duration_s: float
    rps: float
    errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    concurrency: int = 0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WrkResult:
        return cls(**data)


# wrk calls delay() before every request of every connection; with one thread all connections
# share this Lua state, and every first request is sent long before any answer comes back, so the
# first `connections` calls are the connections' first requests.
_STAGGER = """\
math.randomseed(1)
local staggered = 0
function delay()
  if staggered < {connections} then
    staggered = staggered + 1
    return math.random(0, {spread_ms})
  end
  return 0
end"""


def lua_script(
    body: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
    *,
    stagger: tuple[int, int] | None = None,
) -> str:
    """A wrk script that POSTs `body` as JSON with `headers`, and prints its summary.

    `stagger=(connections, spread_ms)` spreads each connection's first request uniformly over
    the spread, then sends back to back: a steady number of requests in flight rather than one
    synchronised burst. wrk starts each latency after the delay.
    """
    text = json.dumps(body, separators=(",", ":"))
    if "]==]" in text:
        raise ValueError("the body cannot contain the Lua long-string terminator ]==]")
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    header_lines = "\n".join(
        f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}"
        for name, value in all_headers.items()
    )
    delay = ""
    if stagger is not None:
        connections, spread_ms = stagger
        delay = _STAGGER.format(connections=connections, spread_ms=spread_ms)
    return _LUA_TEMPLATE.format(body=text, headers=header_lines, delay=delay, marker=RESULT_MARKER)


def parse_output(output: str, concurrency: int = 0) -> WrkResult:
    """The result from wrk's stdout; raises ValueError when the script printed none."""
    for line in output.splitlines():
        if line.startswith(RESULT_MARKER):
            data = json.loads(line[len(RESULT_MARKER) :])
            break
    else:
        raise ValueError(f"no {RESULT_MARKER.strip()} line in wrk's output:\n{output[-2000:]}")
    latency = data["latency_us"]
    duration_s = data["duration_us"] / 1e6
    requests = int(data["requests"])
    return WrkResult(
        requests=requests,
        duration_s=duration_s,
        rps=requests / duration_s if duration_s > 0 else 0.0,
        errors={name: int(count) for name, count in data["errors"].items()},
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        p999_ms=latency["p999"] / 1000,
        mean_ms=latency["mean"] / 1000,
        max_ms=latency["max"] / 1000,
        concurrency=concurrency,
    )


def wrk_version() -> str:
    if shutil.which("wrk") is None:
        return "missing"
    # wrk has no --version: its usage text names the version and exits non-zero.
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else ""
    return first.split()[1] if first.startswith("wrk ") else first


@dataclass(frozen=True, slots=True)
class Wrk:
    """Runs wrk with a given CPU pinning prefix (e.g. `taskset -c 1`) and script directory."""

    script_dir: Path
    pin: Sequence[str] = ()
    threads: int = 1

    async def run(
        self,
        url: str,
        body: Mapping[str, Any],
        *,
        concurrency: int,
        seconds: float,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 30.0,
        stagger_s: float | None = None,
    ) -> WrkResult:
        stagger = (concurrency, round(stagger_s * 1000)) if stagger_s else None
        script = self.script_dir / f"wrk-{abs(hash((url, json.dumps(body), stagger))):x}.lua"
        script.write_text(lua_script(body, headers, stagger=stagger))
        # The stagger counts first requests in one Lua state, so it needs a single thread.
        threads = 1 if stagger else max(1, min(self.threads, concurrency))
        command = [
            *self.pin,
            "wrk",
            f"-t{threads}",
            f"-c{concurrency}",
            # wrk takes whole seconds only.
            f"-d{max(1, round(seconds))}s",
            f"--timeout={max(1, round(timeout_s))}s",
            "-s",
            str(script),
            url,
        ]
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        stdout, stderr = await process.communicate()
        output = stdout.decode(errors="replace")
        if process.returncode != 0:
            raise RuntimeError(
                f"wrk failed ({process.returncode}): {stderr.decode(errors='replace')}{output}"
            )
        return parse_output(output, concurrency)
