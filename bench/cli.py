"""`python -m bench`: start everything, run the scenarios, print one table, write the results."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from . import key_pool, ledger, litellm
from .context import Context
from .docs import write_docs, write_key_pool_section, write_ledger_section
from .machine import REPO, machine, versions
from .plot import plot_added_latency
from .processes import Pinning, raise_open_file_limit, start_fake
from .report import summary
from .scenarios import SCENARIOS
from .table import markdown_table, rows
from .wrk import Wrk

RESULTS = REPO / "bench" / "results"
DOCS = REPO / "docs" / "benchmarks.md"
BASELINE = RESULTS / "baseline-before-optimisation.json"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure what the service adds over the upstream, beside LiteLLM's proxy.",
    )
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer concurrencies")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of: {', '.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument(
        "--no-litellm", action="store_true", help="skip LiteLLM (no install, no comparison)"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for every service process, over the scenarios' own (repeatable)",
    )
    parser.add_argument(
        "--write-docs", action="store_true", help=f"rewrite {DOCS.relative_to(REPO)} from the run"
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="PATH",
        help="run nothing: print the table (and --write-docs) from a saved run",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=BASELINE,
        metavar="PATH",
        help="an earlier run to compare with in the docs (default: the run before optimising)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    parser.add_argument(
        "--keep", action="store_true", help="keep the working directory with the servers' logs"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.from_json is not None:
        results = json.loads(args.from_json.read_text())
        plot = args.from_json.parent / "added-latency.png"
        alone = list(results["scenarios"])
        if len(alone) == 1 and alone[0] in _ALONE:
            return _alone(results, alone[0], args.write_docs)
    else:
        if any("=" not in item for item in args.service_env):
            print("bench: --service-env takes NAME=VALUE", file=sys.stderr)
            return 2
        names = [name.strip() for name in args.scenarios.split(",") if name.strip()]
        unknown = sorted(set(names) - set(SCENARIOS))
        if unknown:
            print(f"bench: unknown scenario(s): {', '.join(unknown)}", file=sys.stderr)
            return 2
        if shutil.which("wrk") is None:
            print("bench: wrk is missing: `apt-get install wrk` (or `make bench`)", file=sys.stderr)
            return 2
        command = "python -m bench" + (f" {shlex.join(argv)}" if argv else _argv_suffix())
        results = asyncio.run(run(names, args, command))
        args.out.mkdir(parents=True, exist_ok=True)
        for name, (saved, _) in _ALONE.items():
            if name in names:
                (args.out / saved.name).write_text(json.dumps(results, indent=2) + "\n")
        if len(names) == 1 and names[0] in _ALONE:
            return _alone(results, names[0], args.write_docs)
        (args.out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
        plot = plot_added_latency(results, args.out / "added-latency.png") or (
            args.out / "added-latency.png"
        )
    print()
    print(markdown_table(rows(results)))
    print()
    print(summary(results))
    if args.write_docs:
        baseline = json.loads(args.baseline.read_text()) if args.baseline.exists() else None
        print(f"bench: wrote {write_docs(results, DOCS, plot, baseline)}")
    return 0


# Scenarios with a results file and a section of their own: measured alone, each keeps them,
# and the full run's latest.json and the rest of the page are left as they are.
_ALONE: dict[str, tuple[Path, Callable[[dict[str, Any], Path], Path]]] = {
    key_pool.SCENARIO: (key_pool.RESULTS, write_key_pool_section),
    ledger.SCENARIO: (ledger.RESULTS, write_ledger_section),
}


def _alone(results: dict[str, Any], name: str, write: bool) -> int:
    print()
    print(markdown_table(rows(results)))
    print()
    print(summary(results))
    if write:
        print(f"bench: wrote {_ALONE[name][1](results, DOCS)}")
    return 0


def _argv_suffix() -> str:
    return (" " + shlex.join(sys.argv[1:])) if sys.argv[1:] else ""


async def run(names: Sequence[str], args: argparse.Namespace, command: str) -> dict[str, Any]:
    started = time.perf_counter()
    open_files = raise_open_file_limit()
    pinning = Pinning.for_this_machine(enabled=not args.no_pin)
    if pinning.load:
        # The harness times requests and polls /healthz: it too stays off the gateway's CPU.
        os.sched_setaffinity(0, pinning.load)
    with_litellm = not args.no_litellm and "latency" in names
    install_s = litellm.ensure_installed() if with_litellm else 0.0
    overrides = dict(item.split("=", 1) for item in args.service_env)
    results: dict[str, Any] = {
        "schema": 1,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "quick": args.quick,
        "machine": machine(),
        "versions": versions(),
        "pinning": pinning.describe(),
        "open_file_limit": open_files,
        "litellm_install_s": install_s,
        "service_overrides": overrides,
        "scenarios": {},
    }
    workdir = Path(tempfile.mkdtemp(prefix="sfproxy-bench-"))
    failed = False
    fake = await start_fake(workdir, pinning.upstream)
    try:
        async with aiohttp.ClientSession() as session:
            ctx = Context(
                workdir=workdir,
                pinning=pinning,
                wrk=Wrk(workdir, pin=Pinning.prefix(pinning.load)),
                session=session,
                fake=fake,
                quick=args.quick,
                with_litellm=with_litellm,
                service_overrides=overrides,
            )
            try:
                for name in names:
                    print(f"bench: {name} ...", flush=True)
                    await ctx.control.wait_idle()
                    begun = time.perf_counter()
                    results["scenarios"][name] = await SCENARIOS[name](ctx)
                    print(f"bench: {name} done in {time.perf_counter() - begun:.0f} s", flush=True)
                    ctx.stop_scoped()
            finally:
                ctx.stop_all()
    except BaseException:
        failed = True
        raise
    finally:
        fake.stop()
        if failed or args.keep:
            print(f"bench: servers' logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results["duration_s"] = time.perf_counter() - started - install_s
    return results
