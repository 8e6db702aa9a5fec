"""`docs/benchmarks.md`, written from a run's JSON so that no figure in it is typed by hand."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .report import summary
from .table import markdown_table, rows

_INTRO = """\
# Benchmarks

A gateway is judged by what it adds. `make bench` (or `python -m bench`) measures what this
service adds on top of SiliconFlow, beside the direct call to the upstream (the limit) and beside
[LiteLLM's proxy](https://docs.litellm.ai/docs/simple_proxy) (the gateway most users would pick
instead), in one run on one machine. The machines are shared and noisy, so every figure is read
beside the direct call taken in the same run, as a difference or a ratio.

## How it is measured

- **Upstream**: the built-in fake SiliconFlow (`sfproxy fake-upstream`) on loopback, with a set
  latency; images are drawn at most 64 px a side and rendered once per seed, so the fake's own
  cost stays small. The fake also answers OpenAI's `POST /openai/v1/images/generations`, which
  is what LiteLLM is pointed at: both gateways wait on the same process, latency and image store.
- **Gateways**: this service (`sfproxy serve`, `LOG_LEVEL=warning`) with `IMAGE_STORE=off`, which
  passes SiliconFlow's URLs through as LiteLLM does (equal work: the headline comparison), and
  with the default `IMAGE_STORE=local`, which also downloads and stores every image; LiteLLM's
  proxy (pinned release, installed by the harness into `bench/.litellm-venv`) with a master key,
  no database and minimal logging, checked to answer 200 with images before it is measured.
- **Load**: [`wrk`](https://github.com/wg/wrk), a compiled load generator, with a Lua script that
  posts the JSON body and prints its latency percentiles. A Python client would saturate before
  the gateways do and measure itself. Python (aiohttp) only times single requests one at a time
  (fan-out, streaming, large images, start-up).
- **Direct baselines**: the fake's SiliconFlow endpoint with exactly the body the service sends
  it (for the service), and its OpenAI endpoint with exactly the body LiteLLM sends (for
  LiteLLM). *Added latency* is the gateway's percentile minus the direct call's, same concurrency,
  same run.
- **CPU pinning**: on two or more cores, the gateway under test runs alone on one core
  (`taskset`), while the fake upstream, wrk and the harness share the rest; so the load generator
  never steals the gateway's CPU. Each gateway is single-process, as deployed by default.

The scenarios (numbered as in issue 5):

1. **Added latency**: instant upstream; wrk at each concurrency against each gateway and each
   direct baseline in turn, each after a 1 s warm-up at the same concurrency.
2. **Fan-out**: `n=4` against `n=1` through the service with a 1 s upstream, median of runs.
3. **Streaming chat**: `stream: true` with a 3 s upstream and `STREAM_KEEPALIVE_SECONDS=0.5`:
   time to the first SSE chunk, and the gaps between keepalives.
4. **Held load**: 2,000 wrk connections on a 5 s upstream, direct then through a fresh service;
   its peak RSS is `VmHWM` from `/proc/PID/status`; the fake counts its peak in-flight calls.
5. **Large images**: `b64_json` of a 2 MB upstream image against the direct generate, then
   download; `GET /healthz` polled every 5 ms, idle and under b64_json load, shows event-loop
   stalls from outside; the service's own `event_loop_lag` metric is read if `/metrics` has one.
6. **Start-up**: process start to the first 200 from `/healthz`, over several fresh starts.

Reading the figures: wrk is a closed loop, each connection sending its next request as soon as
the last is answered. At concurrency 1 the added latency is the gateway's own time per request.
At higher concurrency with an instant upstream, a gateway that cannot keep up holds requests in
its queue, so its latency becomes the number in flight divided by its throughput: there, the
added latency mostly measures CPU time per request, which the table also gives (the gateway's
own CPU time during the run, from `/proc/PID/stat`, divided by the requests it answered); unlike
latency, it barely moves when other tenants load the machine.

Run it:

```
make bench                              # installs the bench extra, wrk if missing, then runs
python -m bench --quick                 # shorter runs, fewer concurrencies
python -m bench --scenarios latency,held
python -m bench --write-docs            # run, then rewrite this page from the results
python -m bench --from-json bench/results/latest.json --write-docs   # rewrite only
```

Results go to `bench/results/latest.json` (every raw figure) and
`bench/results/added-latency.png`.
"""


def render(results: Mapping[str, Any], plot_relative: str | None) -> str:
    machine = results["machine"]
    parts = [
        _INTRO,
        "## Results\n",
        f"From a real run on {results['date']}: `{results['command']}` on "
        f"{machine['cpu']} ({machine['cores']} cores, Linux {machine['kernel']}), "
        f"{'quick mode, ' if results.get('quick') else ''}{results['duration_s']:.0f} s in all.\n",
        f"**{summary(results)}.**\n",
        markdown_table(rows(results)),
        "",
    ]
    if plot_relative:
        parts += [
            "Added latency against concurrency (log scales; values at or below zero, i.e. "
            "within noise of the direct call, are drawn at the floor):\n",
            f"![Added latency against concurrency]({plot_relative})",
            "",
        ]
    return "\n".join(parts)


def write_docs(results: Mapping[str, Any], path: Path, plot: Path | None) -> Path:
    relative = None
    if plot is not None and plot.exists():
        relative = _relative(plot, path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(results, relative))
    return path


def _relative(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target.resolve(), start.resolve())).as_posix()
