"""Issue 11's key pool in the report: what choosing among several upstream keys costs.

The service with 4 keys in 2 accounts (`SILICONFLOW_API_KEYS`) is loaded beside the same service
with one key, and beside the direct call; the cost of key choice is the pool's percentile minus
the single key's, same concurrency, same run. Pure like `report.py`.
It also has its own section of docs/benchmarks.md, between markers, so that
`python -m bench --scenarios key_pool --write-docs` replaces it alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .machine import REPO
from .report import (
    KEY_CHOICE_CPU_US,
    KEY_CHOICE_P50_C1_MS,
    KEY_CHOICE_P99_C64_MS,
    Check,
    added_ms,
    key_choice_added_ms,
    key_pool_checks,
)
from .sections import replace_marked

SCENARIO = "key_pool"
RESULTS = REPO / "bench" / "results" / "key-pool.json"
START = "<!-- bench.key_pool: start -->"
END = "<!-- bench.key_pool: end -->"
LABELS = {
    "direct": "direct to the fake",
    "service": "service, one key",
    "service_pool": "service, 4 keys in 2 accounts",
}
Row = tuple[str, str, str, str, str, str]


def _figure(run: Mapping[str, Any]) -> str:
    figure = f"p50 {run['p50_ms']:.2f} / p99 {run['p99_ms']:.2f} ms · {run['rps']:.0f} req/s"
    cpu = run.get("cpu_ms_per_request")
    if cpu is not None:
        figure += f" · {cpu:.2f} ms CPU/request"
    errors = sum(run["errors"].values())
    return f"{figure} · {errors} errors" if errors else figure


def _signed(value: float) -> str:
    return f"{'+' if value >= 0 else '−'}{abs(value):.2f} ms"


def _measured(check: Check) -> str:
    if check.unit == " µs":
        return f"{check.measured or 0.0:.2f} µs"
    return _signed(check.measured or 0.0)


def _request_cpu_ms(scenario: Mapping[str, Any]) -> float:
    """The one-key service's CPU per request at c=1, for scale."""
    for level in scenario["levels"]:
        if level["concurrency"] == 1:
            return float(level["runs"]["service"].get("cpu_ms_per_request") or 0.0)
    return 0.0


def key_pool_rows(scenario: Mapping[str, Any]) -> list[Row]:
    """A row per gateway and level (the first round's figures), then one per target; the pool's
    row says how far it lies from the single key's over every round."""
    checks = {check.name: check for check in key_pool_checks(scenario)}
    table: list[Row] = []
    for level in scenario["levels"]:
        concurrency, runs = level["concurrency"], level["runs"]
        for name, run in runs.items():
            versus = ""
            if name == "service_pool":
                turns = level.get("rounds") or [runs]
                each = " / ".join(
                    _signed(added_ms(turn["service_pool"], turn["service"], "p99"))
                    for turn in turns
                )
                versus = (
                    f"over one key, median of {len(turns)} alternating rounds: "
                    f"p50 {_signed(key_choice_added_ms(level, 'p50'))}, "
                    f"p99 {_signed(key_choice_added_ms(level, 'p99'))} (p99 by round: {each})"
                )
            elif name == "service":
                # Its own spread over the rounds: the noise any pool difference is read against.
                p99s = [turn["service"]["p99_ms"] for turn in level.get("rounds") or [runs]]
                versus = (
                    f"over direct: p50 {_signed(added_ms(run, runs['direct'], 'p50'))}, "
                    f"p99 {_signed(added_ms(run, runs['direct'], 'p99'))}; its own p99 over the "
                    f"rounds {min(p99s):.2f}–{max(p99s):.2f} ms"
                )
            table.append(
                ("11", f"c={concurrency} {LABELS.get(name, name)}", _figure(run), versus, "", "")
            )
    seen = scenario.get("requests_per_key", {})
    if seen:
        table.append(
            (
                "11",
                "requests per pool key (1 s at c=8)",
                ", ".join(f"{key[-2:]} {count}" for key, count in seen.items()),
                f"{len(seen)} of {scenario['pool_keys']} keys used",
                "",
                "",
            )
        )
    choice = scenario.get("choice_us")
    if choice:
        table.append(
            (
                "11",
                "CPU per choose + release, in-process (µs)",
                f"one key {choice['one_key']:.2f} · pool {choice['pool']:.2f} · "
                f"pool with a cap on calls in flight {choice['pool_capped']:.2f}",
                f"median of 5 × 20 000 calls; a request costs ~"
                f"{_request_cpu_ms(scenario):.2f} ms CPU",
                "",
                "",
            )
        )
    for check in checks.values():
        versus = "measured directly" if check.unit == " µs" else "pool − one key"
        table.append(("11", check.name, _measured(check), versus, check.target, check.mark))
    return table


def section(results: Mapping[str, Any], table: str) -> str:
    """The page's key-pool section for a run, between markers so that it can be replaced alone."""
    machine = results["machine"]
    scenario = results["scenarios"][SCENARIO]
    checks = key_pool_checks(scenario)
    verdict = "; ".join(f"{c.name} {_measured(c)} ({c.mark})" for c in checks)
    return "\n".join(
        [
            START,
            "## Key pool (issue 11)",
            "",
            "What choosing among several upstream keys costs. The fake SiliconFlow gets 2 "
            "accounts of 2 keys each (no limits, balances high) through `/_fake/accounts`; the "
            "benchmark's single key joins the first account, since once accounts exist the fake "
            "takes only their keys. Two services run with `IMAGE_STORE=off`: one with that single "
            "key (`SILICONFLOW_API_KEY`), one with the 4 pool keys (`SILICONFLOW_API_KEYS`), each "
            "checked to answer with images (and the fake to take every pool key) before it is "
            "measured. wrk loads the direct call, then each service, at concurrency 1 and 64, "
            f"{scenario['seconds_per_run']:g} s each after a 1 s warm-up; the two services take "
            f"{scenario.get('rounds', 1)} turns each, in alternating order, so that other tenants' "
            "drifting load is not charged to one of them. *Key choice's added* latency is the "
            "pool's percentile minus the single key's, the median over the rounds. Targets: key "
            f"choice adds ≤ {KEY_CHOICE_P50_C1_MS:g} ms p50 at c=1; at c=64 its added p99 stays "
            "within the single key's own p99 spread over the same rounds (max − min, at least "
            f"{KEY_CHOICE_P99_C64_MS:g} ms): a difference smaller than the run-to-run noise of "
            "one service is not measurable. The choice's CPU is also measured directly, "
            "`KeyPool.choose` + `release` in-process (`bench/key_choice.py`), against "
            f"≤ {KEY_CHOICE_CPU_US:g} µs per call.",
            "",
            f"From a real run on {results['date']}: `{results['command']}` on "
            f"{machine['cpu']} ({machine['cores']} cores, Linux {machine['kernel']}, load "
            f"average {' / '.join(map(str, machine['load_average']))} at the start, from other "
            f"tenants){', quick mode' if results.get('quick') else ''}.",
            "",
            f"**{verdict}.**",
            "",
            table,
            "",
            "The p99 at c=64 with an instant upstream is a queue (64 in flight over the "
            "throughput, see above), so it moves by milliseconds between runs on a shared "
            "machine: read it against the single key's own p99 over the rounds (in its row), "
            "and compare CPU per request too. Run it alone: "
            "`python -m bench --scenarios key_pool --no-litellm --write-docs` (about two and "
            "a half minutes); it replaces only this section and keeps its figures in "
            "`bench/results/key-pool.json`.",
            END,
        ]
    )


def replace_section(page: str, new_section: str) -> str:
    """The page with its key-pool section replaced, or the section appended if it has none."""
    return replace_marked(page, new_section, START, END)
