"""Added latency against concurrency, for the service and for LiteLLM, from a run's JSON."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .report import ADDED_FLOOR_MS, BASELINE, GATEWAY_LABELS, added_ms

STYLES = {"service": "o-", "service_local": "s--", "litellm": "^-"}


def added_latency_series(
    scenario: Mapping[str, Any], percentile: str
) -> dict[str, tuple[list[int], list[float]]]:
    """Per gateway: concurrencies and the added latency there, floored so a log axis can show
    the (noise-level) values at or below zero."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for level in scenario["levels"]:
        runs = level["runs"]
        for name, baseline in BASELINE.items():
            if name in runs and baseline in runs:
                xs, ys = series.setdefault(name, ([], []))
                xs.append(level["concurrency"])
                ys.append(max(added_ms(runs[name], runs[baseline], percentile), ADDED_FLOOR_MS))
    return series


def plot_added_latency(results: Mapping[str, Any], path: Path) -> Path | None:
    scenario = results.get("scenarios", {}).get("latency")
    if scenario is None:
        return None
    import matplotlib

    # No display on the benchmark machines.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for axis, percentile in zip(axes, ("p50", "p99"), strict=True):
        for name, (xs, ys) in added_latency_series(scenario, percentile).items():
            axis.plot(xs, ys, STYLES.get(name, "o-"), label=GATEWAY_LABELS[name])
        axis.set_xscale("log", base=2)
        concurrencies = [level["concurrency"] for level in scenario["levels"]]
        axis.set_xticks(concurrencies, [str(c) for c in concurrencies])
        axis.minorticks_off()
        axis.set_yscale("log")
        axis.set_xlabel("concurrent connections (wrk)")
        axis.set_title(f"added latency, {percentile}")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("gateway latency − direct latency (ms)")
    axes[0].legend()
    machine = results["machine"]
    figure.suptitle(
        f"Instant fake upstream; {machine['cpu']}, {machine['cores']} cores; {results['date']}",
        fontsize=10,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
