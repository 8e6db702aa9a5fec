"""`docs/benchmarks.md`, written from a run's JSON so that no figure in it is typed by hand."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from . import key_pool, ledger
from .formats import saved_section
from .report import Check, checks, summary
from .sections import saved_run
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
latency, it barely moves when other tenants load the machine. The figures judged on a single
worst case (the worst `/healthz` poll, the event-loop lag maximum, the held load's p99) move
the most between runs on a shared machine: a target near its limit can pass in one run and
fail in the next, so compare runs, not single figures.

Run it:

```
make bench                              # installs the bench extra, wrk if missing, then runs
python -m bench --quick                 # shorter runs, fewer concurrencies
python -m bench --scenarios latency,held
python -m bench --write-docs            # run, then rewrite this page from the results
python -m bench --from-json bench/results/latest.json --write-docs   # rewrite only
python -m bench.formats --write-docs    # only the output-format figures (seconds, no servers)
python -m bench --scenarios key_pool --no-litellm --write-docs   # only the key pool's section
python -m bench --scenarios ledger --no-litellm --write-docs     # only the ledger's section
```

Results go to `bench/results/latest.json` (every raw figure) and
`bench/results/added-latency.png`.
"""


_CHANGES = """## Before and after the optimisations

The first full run of this harness (kept as `bench/results/baseline-before-optimisation.json`)
met 9 of its 16 targets. Its profiles (py-spy) pointed at these causes, each fixed in the
service and re-measured:

- **aiohttp's `trust_env`** looked up proxies and `~/.netrc` in a thread pool on every upstream
  call: the environment's proxies are now read once.
- **A plain `def` FastAPI dependency** ran in a worker thread on every request: it is `async`.
- **The connection pool to SiliconFlow** was capped at 1,000, queueing the held load's other
  1,000 generations inside aiohttp for a whole upstream latency: no cap by default now
  (`UPSTREAM_MAX_CONNECTIONS=0`; pacing bounds what reaches SiliconFlow), and `serve` lifts the
  open-file limit.
- **Image writes in a thread** fought the event loop for the GIL: images up to 256 KB are
  written from the loop (a page-cache write of microseconds), larger ones still in a thread
  (megabyte writes in bursts can meet the kernel's dirty-page throttling, which showed as loop
  stalls in the large-image scenario); names come from one `os.urandom` draw per 256 images.
- **Base64 and JSON of `b64_json` answers** (3 ms and 2 ms per 2 MB image on the loop, in one
  block): pybase64 and an orjson fragment, so the base64 is never a Python str.
- **The cyclic garbage collector** stopped the loop for up to half a second at a time under the
  held load (full collections over millions of live objects, collecting nothing): start-up
  objects are frozen out of collections and young collections run every 50,000 allocations.
- Smaller: no task or generator per call when nothing needs one (a single upstream call, no
  pacing), cached metric children, request ids from a counter.

Each target, in the first run and in the run above (same harness, same machine kind):
"""

_MISSED = """### Targets this machine does not let the service meet

- **Added p99 at concurrency 64 with an instant upstream.** wrk keeps 64 requests in flight
  and the upstream answers at once, so the latency is 64 divided by the gateway's throughput:
  5 ms added would need about 13,000 requests per second from one Python process on one core,
  i.e. well under 0.1 ms of CPU per request, where this service spends the CPU per request shown
  in the table (parsing the client's HTTP, validating, calling and parsing SiliconFlow, logging,
  metrics, answering). The direct call does a small fraction of that work. What closes it:
  more cores with `serve --workers N` (the figure is per process), or a compiled gateway.
  LiteLLM, the alternative, is an order of magnitude further off at every concurrency.
- **Added p99 under the held load** (when marked FAIL above): successive runs of this harness
  on this machine landed on both sides of the target. The service's own account of the same run
  (the row "the service's own time per request") shows that its work per request stays small;
  the tail is the event loop stalling now and then (the same row's lag maximum), and requests
  that were due meanwhile wait. With two thousand requests in flight, millions of objects are
  alive, and CPython 3.11's garbage collector pauses the loop while it scans them: logging each
  collection (a `sitecustomize` with `gc.callbacks`) showed the full collections gone after the
  tuning above, and the remaining stalls to be young collections, stretched at times when the
  kernel's loopback networking for all those connections runs on the same core. What would
  close it: fewer requests in flight per process (`serve --workers N` on more cores), or a
  Python with an incremental collector. With `IMAGE_STORE=local` every generation also
  downloads its image from the fake upstream, which shares a core with wrk and the harness;
  with real SiliconFlow that download is not on the gateway's machine.
"""


def _key_figures(results: Mapping[str, Any]) -> dict[tuple[str, str], Check]:
    return {(check.scenario, check.name): check for check in checks(results)}


def _format(check: Check | None) -> str:
    if check is None or check.measured is None:
        return "—"
    unit = check.unit.strip()
    value = check.measured
    number = f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}"
    return f"{number}{' ' + unit if unit and unit != '×' else unit} ({check.mark})"


def before_after(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    before, after = _key_figures(baseline), _key_figures(current)
    lines = [
        "| Scenario | Measurement | Before | After | Target |",
        "|---|---|---|---|---|",
    ]
    for key, check in after.items():
        lines.append(
            f"| {key[0]} | {key[1]} | {_format(before.get(key))} | {_format(check)} "
            f"| {check.target} |"
        )
    lines.append("")
    lines.append(
        f"Before: {baseline['date']}, `{baseline['command']}`. After: {current['date']}, "
        f"`{current['command']}`."
    )
    return "\n".join(lines)


def render(
    results: Mapping[str, Any],
    plot_relative: str | None,
    baseline: Mapping[str, Any] | None = None,
    formats: str | None = None,
    saved_pool: Mapping[str, Any] | None = None,
    saved_ledger: Mapping[str, Any] | None = None,
) -> str:
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
    if baseline is not None:
        parts += [_CHANGES, before_after(baseline, results), "", _MISSED]
    if formats is not None:
        # `python -m bench.formats` measures this part on its own; its last run is kept.
        parts += [formats, ""]
    # After the formats section: where `--scenarios key_pool --write-docs` appends it.
    pool = key_pool_section(results, saved_pool)
    if pool is not None:
        parts += [pool, ""]
    # Then the ledger's, where `--scenarios ledger --write-docs` appends it.
    records = ledger_section(results, saved_ledger)
    if records is not None:
        parts += [records, ""]
    return "\n".join(parts)


def own_section(
    part: ModuleType, results: Mapping[str, Any], saved: Mapping[str, Any] | None = None
) -> str | None:
    """The section of a scenario that has its own (`key_pool`, `ledger`): from this run when it
    measured the scenario, else from `saved`, the last run that did (`python -m bench
    --scenarios NAME` keeps it apart from latest.json, in `part.RESULTS`)."""
    if part.SCENARIO not in results.get("scenarios", {}):
        if saved is None:
            return None
        results = saved
    alone = {**results, "scenarios": {part.SCENARIO: results["scenarios"][part.SCENARIO]}}
    section: str = part.section(alone, markdown_table(rows(alone)))
    return section


def write_own_section(part: ModuleType, results: Mapping[str, Any], path: Path) -> Path:
    """Only that scenario's section replaced; the rest of the page stays byte for byte."""
    section = own_section(part, results)
    if section is None:
        raise ValueError(f"the run has no {part.SCENARIO} scenario")
    page = path.read_text() if path.exists() else ""
    path.write_text(part.replace_section(page, section))
    return path


def key_pool_section(
    results: Mapping[str, Any], saved: Mapping[str, Any] | None = None
) -> str | None:
    """Issue 11's section."""
    return own_section(key_pool, results, saved)


def ledger_section(
    results: Mapping[str, Any], saved: Mapping[str, Any] | None = None
) -> str | None:
    """Issue 12's section."""
    return own_section(ledger, results, saved)


def write_key_pool_section(results: Mapping[str, Any], path: Path) -> Path:
    return write_own_section(key_pool, results, path)


def write_ledger_section(results: Mapping[str, Any], path: Path) -> Path:
    return write_own_section(ledger, results, path)


def write_docs(
    results: Mapping[str, Any],
    path: Path,
    plot: Path | None,
    baseline: Mapping[str, Any] | None = None,
) -> Path:
    relative = None
    if plot is not None and plot.exists():
        relative = _relative(plot, path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        render(
            results,
            relative,
            baseline,
            saved_section(),
            saved_run(key_pool.RESULTS),
            saved_run(ledger.RESULTS),
        )
    )
    return path


def _relative(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target.resolve(), start.resolve())).as_posix()
