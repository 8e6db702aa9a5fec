"""One table of every figure of a run, machine and versions first, in Markdown: printed by
`python -m bench` and written into docs/benchmarks.md. Pure, like `report.py`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .dependencies import dependency_rows
from .key_pool import key_pool_rows
from .ledger import ledger_rows
from .report import (
    BASELINE,
    GATEWAY_LABELS,
    Check,
    added_ms,
    checks,
    held_added_p99_ms,
    held_errors,
    held_peak_rss_mb,
    held_unfinished,
    median,
    ratio,
    store_label,
)

HEADER = ("Scenario", "Measurement", "Figure", "Versus", "Target", "Result")
Row = tuple[str, str, str, str, str, str]


def _number(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def ms(value: float) -> str:
    return f"{_number(value)} ms"


def signed_ms(value: float) -> str:
    return f"{'+' if value >= 0 else '−'}{_number(abs(value))} ms"


def seconds(value: float) -> str:
    return f"{value:.3f} s"


def _latencies(run: Mapping[str, Any]) -> str:
    figure = (
        f"p50 {_number(run['p50_ms'])} / p90 {_number(run['p90_ms'])} / "
        f"p99 {_number(run['p99_ms'])} ms · {run['rps']:.0f} req/s"
    )
    cpu = run.get("cpu_ms_per_request")
    if cpu is not None:
        figure += f" · {_number(cpu)} ms CPU/request"
    errors = sum(run["errors"].values())
    return f"{figure} · {errors} errors" if errors else figure


def _check_row(check: Check, figure: str, versus: str = "") -> Row:
    return (f"{check.scenario}", check.name, figure, versus, check.target, check.mark)


def rows(results: Mapping[str, Any]) -> list[Row]:
    """Every figure of the run, machine and versions first, as rows of one table."""
    machine, versions = results["machine"], results["versions"]
    table: list[Row] = [
        (
            "machine",
            "CPU, cores, kernel",
            f"{machine['cpu']}, {machine['cores']} cores, Linux {machine['kernel']}, "
            f"{machine['memory_gb']} GB",
            f"load average at start {' / '.join(map(str, machine['load_average']))}",
            "",
            "",
        ),
        (
            "versions",
            "Python, sfproxy, LiteLLM, wrk",
            f"Python {versions['python']}, sfproxy {versions['sfproxy']} ({versions['git']}), "
            f"LiteLLM {versions['litellm']}, wrk {versions['wrk']}",
            ", ".join(
                f"{name} {versions[name]}"
                for name in ("fastapi", "uvicorn", "aiohttp", "orjson")
                if name in versions
            ),
            "",
            "",
        ),
        (
            "run",
            "date, length, pinning",
            f"{results['date']}, {results['duration_s']:.0f} s",
            _pinning(results.get("pinning", {}))
            + "".join(
                f"; every service with {key}={value}"
                for key, value in results.get("service_overrides", {}).items()
            ),
            "",
            "",
        ),
    ]
    found = {(c.scenario, c.name): c for c in checks(results)}
    scenarios = results.get("scenarios", {})
    if "latency" in scenarios:
        table += _latency_rows(scenarios["latency"], found)
    if "fanout" in scenarios:
        fan = scenarios["fanout"]
        table.append(
            (
                "2",
                "direct call, 1 s upstream (median)",
                seconds(median(fan["direct_single_s"])),
                "",
                "",
                "",
            )
        )
        table.append(
            ("2", "n=1 through the service (median)", seconds(median(fan["single_s"])), "", "", "")
        )
        check = found[("2", "n=4 wall time ÷ n=1")]
        table.append(
            _check_row(
                check, f"{seconds(median(fan['fan_out_s']))} for n=4", f"{check.measured:.2f}× n=1"
            )
        )
    if "streaming" in scenarios:
        stream = scenarios["streaming"]
        first = [run["first_chunk_ms"] for run in stream["runs"]]
        check = found[("3", "time to first chunk (median)")]
        table.append(
            _check_row(
                check,
                f"{ms(median(first))} (max {ms(max(first))}, {len(first)} runs, 3 s upstream)",
            )
        )
        gaps = [gap for run in stream["runs"] for gap in run["keepalive_gaps_s"]]
        check = found[("3", "keepalive gap's largest deviation")]
        spread = f"{min(gaps):.3f}–{max(gaps):.3f} s" if gaps else "none"
        table.append(
            _check_row(
                check, f"{len(gaps)} gaps, {spread}", f"every {stream['keepalive_s']} s configured"
            )
        )
        table.append(
            _check_row(
                found[("3", "keepalives per run (fewest)")],
                f"{found[('3', 'keepalives per run (fewest)')].measured:.0f}",
            )
        )
    if "held" in scenarios:
        table += _held_rows(scenarios["held"], found)
    if "large" in scenarios:
        table += _large_rows(scenarios["large"], found)
    if "deps" in scenarios:
        table += dependency_rows(scenarios["deps"])
    if "key_pool" in scenarios:
        table += key_pool_rows(scenarios["key_pool"])
    if "ledger" in scenarios:
        table += ledger_rows(scenarios["ledger"])
    if "startup" in scenarios:
        start = scenarios["startup"]
        check = found[("6", "start to first /healthz 200 (median)")]
        versus = (
            f"LiteLLM took {start['litellm_seconds']:.1f} s"
            if start.get("litellm_seconds") is not None
            else ""
        )
        table.append(
            _check_row(
                check,
                f"{seconds(check.measured or 0)} ({len(start['seconds'])} starts, "
                f"{min(start['seconds']):.2f}–{max(start['seconds']):.2f} s)",
                versus,
            )
        )
    return table


def _pinning(pinning: Mapping[str, Any]) -> str:
    if not pinning.get("enabled"):
        return "not pinned"
    return (
        f"gateway on CPU {','.join(map(str, pinning['gateway_cpus']))}; fake upstream, wrk and "
        f"harness on CPU {','.join(map(str, pinning['upstream_cpus']))} (taskset)"
    )


def _latency_rows(scenario: Mapping[str, Any], found: Mapping[tuple[str, str], Check]) -> list[Row]:
    table: list[Row] = []
    for level in scenario["levels"]:
        concurrency, runs = level["concurrency"], level["runs"]
        prefix = f"c={concurrency}"
        for name, run in runs.items():
            versus = ""
            target, mark = "", ""
            baseline = BASELINE.get(name)
            if baseline in runs:
                direct = runs[baseline]
                versus = (
                    f"added p50 {signed_ms(added_ms(run, direct, 'p50'))}, "
                    f"p99 {signed_ms(added_ms(run, direct, 'p99'))}; "
                    f"{run['rps'] / direct['rps']:.2f}× direct req/s"
                )
            if name == "service":
                percentile = {1: "p50", 64: "p99"}.get(concurrency)
                check = found.get(("1", f"added {percentile} at c={concurrency}"))
                if check is not None:
                    target, mark = f"added {percentile} {check.target}", check.mark
            table.append(
                ("1", f"{prefix} {GATEWAY_LABELS[name]}", _latencies(run), versus, target, mark)
            )
        if "litellm" in runs:
            for percentile in ("p50", "p99"):
                service_added = added_ms(runs["service"], runs["direct"], percentile)
                litellm_added = added_ms(runs["litellm"], runs["direct_openai"], percentile)
                check = found.get(
                    ("1", f"LiteLLM's added {percentile} ÷ the service's at c={concurrency}")
                )
                table.append(
                    (
                        "1",
                        f"{prefix} LiteLLM's added {percentile} ÷ the service's (store off)",
                        f"{ratio(litellm_added, service_added):.1f}×",
                        f"{signed_ms(litellm_added)} vs {signed_ms(service_added)}",
                        check.target if check else "",
                        check.mark if check else "",
                    )
                )
    return table


def _held_rows(held: Mapping[str, Any], found: Mapping[tuple[str, str], Check]) -> list[Row]:
    direct, service = held["direct"], held["service"]
    connections, latency = held["connections"], held["upstream_latency_s"]
    added = found[("4", "added p99")]
    lower_bound = held_added_p99_ms(held, connections, held["stagger_s"])[1]
    store = _store_settings(held)
    table: list[Row] = [
        (
            "4",
            f"held: direct, {connections} in flight, {latency:g} s upstream, "
            f"starts spread over {held['stagger_s']:g} s",
            _latencies(direct),
            f"upstream peak in flight {direct['upstream_peak_in_flight']}",
            "",
            "",
        ),
        (
            "4",
            f"held: service ({store}), {connections} in flight",
            _latencies(service),
            f"upstream peak in flight {service['upstream_peak_in_flight']}",
            "",
            "",
        ),
        _check_row(
            added,
            ("≥ " if lower_bound else "") + signed_ms(added.measured or 0),
            "a lower bound: over 1% had not finished" if lower_bound else "",
        ),
        _check_row(
            found[("4", "errors through the service")],
            f"{held_errors(service)} in {service['requests']} requests",
            f"direct: {held_errors(direct)}",
        ),
        _check_row(
            found[("4", "peak RSS (VmHWM)")],
            f"{held_peak_rss_mb(held):.0f} MB",
            f"after the held run {held['service_peak_rss_mb']:.0f} MB; "
            f"RSS at the end {held['service_rss_after_mb']:.0f} MB",
        ),
    ]
    own = held.get("service_overhead")
    if own is not None:
        lag = held.get("service_loop_lag_max_ms")
        table.append(
            (
                "4",
                "held: the service's own time per request (its sfproxy_overhead_seconds)",
                f"mean {ms(own['mean_ms'])}; 99% within {ms(own['p99_within_ms'])}",
                f"event-loop lag max {ms(lag)}" if lag is not None else "",
                "",
                "",
            )
        )
    passthrough = held.get("service_off")
    if passthrough is not None:
        off_added = added_ms(passthrough, direct, "p99")
        table.append(
            (
                "4",
                f"held: service (IMAGE_STORE=off), {connections} in flight (no target)",
                _latencies(passthrough),
                f"added p99 {signed_ms(off_added)}; upstream peak in flight "
                f"{passthrough['upstream_peak_in_flight']}",
                "",
                "",
            )
        )
    burst = held.get("burst")
    if burst is not None:
        burst_added, burst_bound = held_added_p99_ms(burst, connections)
        for name in ("direct", "service"):
            unfinished = held_unfinished(burst[name], connections)
            note = f"; {unfinished} unfinished after {burst['seconds']:g} s" if unfinished else ""
            table.append(
                (
                    "4",
                    f"burst: {name}, {connections} started at once (no target)",
                    _latencies(burst[name]) + note,
                    f"upstream peak in flight {burst[name]['upstream_peak_in_flight']}",
                    "",
                    "",
                )
            )
        table.append(
            (
                "4",
                "burst: added p99 (no target)",
                ("≥ " if burst_bound else "") + signed_ms(burst_added),
                "every answer comes back at once: shows the cost per request",
                "",
                "",
            )
        )
    return table


def _store_settings(held: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in held.get("settings", {}).items())


def _large_rows(large: Mapping[str, Any], found: Mapping[tuple[str, str], Check]) -> list[Row]:
    size_mb = large["image_bytes"] / 1e6
    times = large["seconds"]
    table: list[Row] = [
        (
            "5",
            f"direct: generate, then download the {size_mb:g} MB image (median)",
            ms(median(times["direct"]) * 1000),
            f"{len(times['direct'])} runs",
            "",
            "",
        ),
    ]
    for name in ("service_local", "service"):
        if name in times:
            check = found[("5", f"added over the download, {store_label(name)}")]
            table.append(
                _check_row(
                    check,
                    f"b64_json answer in {ms(median(times[name]) * 1000)} (median)",
                    signed_ms(check.measured or 0),
                )
            )
    idle, loaded = large["healthz_idle_ms"], large["healthz_loaded_ms"]
    check = found[("5", "worst /healthz under b64_json load")]
    table.append(
        _check_row(
            check,
            f"{ms(max(loaded))} ({len(loaded)} polls, p99 {ms(_p99(loaded))})",
            f"idle: worst {ms(max(idle))}; load: {_latencies(large['load'])}",
        )
    )
    check = found[("5", "event_loop_lag metric, max")]
    figure = ms(check.measured) if check.measured is not None else "n/a"
    table.append(_check_row(check, figure, large.get("event_loop_lag_metric_source", "")))
    return table


def _p99(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def markdown_table(table: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in table:
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines)
