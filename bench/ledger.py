"""Issue 12's ledger in the report: what writing one record per request costs.

The service with the ledger on SQLite, and on PostgreSQL, is loaded beside the same service with
`LEDGER=off` and beside the direct call; a fourth service, on SQLite, takes a database client
key. The cost is each one's figure minus its comparison's (`report.LEDGER_OVER`), same
concurrency, median over rounds in rotating order (each service takes every place in turn).
Pure like `report.py`; its own section of docs/benchmarks.md lies
between markers, so that `python -m bench --scenarios ledger --write-docs` replaces it alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .key_pool import Row
from .machine import REPO
from .report import (
    LEDGER_ENGINES,
    LEDGER_OVER,
    LEDGER_P50_C1_MS,
    LEDGER_THROUGHPUT_C64_PERCENT,
    Check,
    added_ms,
    ledger_added_ms,
    ledger_checks,
    ledger_cpu_added_ms,
    ledger_throughput_percent,
    median,
)
from .sections import replace_marked

SCENARIO = "ledger"
RESULTS = REPO / "bench" / "results" / "ledger.json"
START = "<!-- bench.ledger: start -->"
END = "<!-- bench.ledger: end -->"
LABELS = {
    "direct": "direct to the fake",
    "service_off": "service, LEDGER=off",
    "service_sqlite": "service, ledger on SQLite",
    "service_postgresql": "service, ledger on PostgreSQL",
    "service_sqlite_key": "service, ledger on SQLite, database client key",
}


def _signed(value: float, unit: str = " ms") -> str:
    return f"{'+' if value >= 0 else '−'}{abs(value):.2f}{unit}"


def _figure(run: Mapping[str, Any]) -> str:
    figure = f"p50 {run['p50_ms']:.2f} / p99 {run['p99_ms']:.2f} ms · {run['rps']:.0f} req/s"
    cpu = run.get("cpu_ms_per_request")
    if cpu is not None:
        figure += f" · {cpu:.2f} ms CPU/request"
    errors = sum(run["errors"].values())
    return f"{figure} · {errors} errors" if errors else figure


def _versus(level: Mapping[str, Any], name: str) -> str:
    """How far `name` lies from what it is compared with, over every round."""
    rounds = level.get("rounds") or [level["runs"]]
    over = LEDGER_OVER[name]
    by_round = " / ".join(_signed(added_ms(turn[name], turn[over], "p50")) for turn in rounds)
    cpu = ledger_cpu_added_ms(level, name)
    cpu_text = f", CPU {_signed(cpu, ' ms')}/request" if cpu is not None else ""
    return (
        f"over {LABELS[over].removeprefix('service, ')}, median of {len(rounds)} rotating "
        f"rounds: p50 {_signed(ledger_added_ms(level, name, 'p50'))}, "
        f"p99 {_signed(ledger_added_ms(level, name, 'p99'))}, "
        f"throughput {ledger_throughput_percent(level, name):.1f} %{cpu_text} "
        f"(p50 by round: {by_round})"
    )


def _measured(check: Check) -> str:
    value = check.measured or 0.0
    if check.unit == " ms":
        return _signed(value)
    if check.unit == " %":
        return f"{value:.1f} %"
    return f"{value:g}"


def _request_cpu_ms(scenario: Mapping[str, Any]) -> float:
    """LEDGER=off's CPU per request at c=1, for scale."""
    for level in scenario["levels"]:
        if level["concurrency"] == 1:
            return float(level["runs"]["service_off"].get("cpu_ms_per_request") or 0.0)
    return 0.0


def ledger_rows(scenario: Mapping[str, Any]) -> list[Row]:
    """A row per service and level (the first round's figures, and its distance from its
    comparison over every round), the records counted, then one per target."""
    table: list[Row] = []
    for level in scenario["levels"]:
        concurrency, runs = level["concurrency"], level["runs"]
        for name, run in runs.items():
            if name in LEDGER_OVER:
                versus = _versus(level, name)
            elif name == "service_off":
                # Its own spread over the rounds: the noise a ledger difference is read against.
                p50s = [turn[name]["p50_ms"] for turn in level.get("rounds") or [runs]]
                versus = (
                    f"over direct: p50 {_signed(added_ms(run, runs['direct'], 'p50'))}, "
                    f"p99 {_signed(added_ms(run, runs['direct'], 'p99'))}; its own p50 over the "
                    f"rounds {min(p50s):.2f}–{max(p50s):.2f} ms"
                )
            else:
                versus = ""
            table.append(
                ("12", f"c={concurrency} {LABELS.get(name, name)}", _figure(run), versus, "", "")
            )
    for name, records in scenario.get("records", {}).items():
        table.append(
            (
                "12",
                f"records in the ledger, {LABELS[name].removeprefix('service, ledger on ')}",
                f"{records['rows']} rows",
                f"{records['answered']} requests answered (the service's "
                f"sfproxy_requests_total); wrk counted {records['wrk_answered']} (it stops with "
                "requests in flight)",
                "",
                "",
            )
        )
    insert = scenario.get("insert_cpu_us")
    if insert:
        table.append(
            (
                "12",
                "CPU per ledger record written, in-process (µs)",
                " · ".join(
                    f"{engine}: writer {cost['writer']:.0f}, multi-row VALUES "
                    f"{cost['multi_row_values']:.0f}"
                    for engine, cost in insert["engines"].items()
                ),
                f"median of {insert['repeats']} batches of {insert['batch']}; the service's own "
                "CPU, not "
                f"the database server's; a request costs ~{_request_cpu_ms(scenario):.2f} ms CPU",
                "",
                "",
            )
        )
    for check in ledger_checks(scenario):
        versus = "rows − answered" if check.unit == "" else "ledger on − LEDGER=off"
        table.append(("12", check.name, _measured(check), versus, check.target, check.mark))
    return table


def _cpu_sentence(scenario: Mapping[str, Any]) -> str:
    """The ledger's CPU per request at c=64, where it shows best, and the writer's per record."""
    level = next(level for level in scenario["levels"] if level["concurrency"] == 64)
    off = median_cpu_ms(level, "service_off")
    added = []
    for name, engine in LEDGER_ENGINES.items():
        cpu = ledger_cpu_added_ms(level, name)
        if cpu is not None:
            added.append(f"{engine} {_signed(cpu)}")
    text = (
        f"CPU per request at c=64 over `LEDGER=off` ({off:.2f} ms): {', '.join(added)}, "
        "median of the rounds."
    )
    insert = scenario.get("insert_cpu_us")
    if insert:
        writer = ", ".join(
            f"{engine} {cost['writer']:.0f} µs" for engine, cost in insert["engines"].items()
        )
        text += f" The writer's own CPU per record, measured in-process: {writer}."
    return text


def median_cpu_ms(level: Mapping[str, Any], name: str) -> float:
    rounds = level.get("rounds") or [level["runs"]]
    return median([float(turn[name].get("cpu_ms_per_request") or 0.0) for turn in rounds])


def section(results: Mapping[str, Any], table: str) -> str:
    """The page's ledger section for a run, between markers so that it can be replaced alone."""
    machine = results["machine"]
    scenario = results["scenarios"][SCENARIO]
    checks = ledger_checks(scenario)
    verdict = "; ".join(f"{c.name} {_measured(c)} ({c.mark})" for c in checks)
    engines = " and ".join(LEDGER_ENGINES.values())
    return "\n".join(
        [
            START,
            "## Usage ledger (issue 12)",
            "",
            "What writing one ledger record per request costs. Four services run with "
            "`IMAGE_STORE=off`, each on a database of its own: `LEDGER=off` (no records; its "
            "client keys still live in SQLite), the ledger on SQLite (the default file), the "
            f"ledger on PostgreSQL ({scenario.get('postgresql', 'a throwaway server')}, started "
            "by the harness on loopback as the tests start theirs, pinned beside the fake "
            "upstream: a database runs on its own machine in production, so its CPU is not the "
            "gateway's), and the ledger on SQLite with a database client key (created with "
            "`sfproxy keys create`, checked through the key store's cache on every request; the "
            "others are public). Each is checked to answer with images before it is measured. "
            "wrk loads the direct call, then each service, at concurrency 1 and 64, "
            f"{scenario['seconds_per_run']:g} s each after a 1 s warm-up; the services take "
            f"{scenario.get('rounds', 1)} turns each, their order rotated every round, so that "
            "other tenants' drifting load falls on all alike. *Added* is a service's percentile "
            "minus its comparison's (`LEDGER=off` for the engines; the ledger on SQLite without "
            "a key for the database key), the median over the rounds; throughput likewise, as a "
            f"percentage. Targets, for {engines}: ≤ {LEDGER_P50_C1_MS:g} ms added p50 at c=1, "
            f"≥ {LEDGER_THROUGHPUT_C64_PERCENT:g} % of `LEDGER=off`'s throughput at c=64. "
            "Afterwards the harness counts each ledger's rows (once the writer's last batch is "
            "in) against the requests the service answered, so that the figures are those of a "
            "working ledger.",
            "",
            f"From a real run on {results['date']}: `{results['command']}` on "
            f"{machine['cpu']} ({machine['cores']} cores, Linux {machine['kernel']}, load "
            f"average {' / '.join(map(str, machine['load_average']))} at the start, from other "
            f"tenants){', quick mode' if results.get('quick') else ''}.",
            "",
            f"**{verdict}.**",
            "",
            _cpu_sentence(scenario),
            "",
            table,
            "",
            "Reading it: the records leave the request's path (a deque append when the request "
            "settles); a background task inserts them in batches of up to 500 once a second, so "
            "what the ledger adds is mostly that batch's CPU shared out over the requests, "
            "which the CPU per request shows better than latency does on a shared machine. "
            "With `LEDGER=off` the service still prices each request for the spend metrics, so "
            "the difference is the buffer and the writes alone. Run it alone: "
            "`python -m bench --scenarios ledger --no-litellm --write-docs` (about four "
            "minutes); it replaces only this section and keeps its figures in "
            "`bench/results/ledger.json`.",
            END,
        ]
    )


def replace_section(page: str, new_section: str) -> str:
    """The page with its ledger section replaced, or the section appended if it has none."""
    return replace_marked(page, new_section, START, END)
