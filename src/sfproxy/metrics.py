"""Prometheus metrics: what the service is doing, for operators.

Each app owns its registry, so tests can run several apps in one process. With several worker
processes (`serve --workers N`) the figures of all workers are merged through
prometheus-client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, which `serve` sets up).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

# Image generations take seconds to minutes; the service's own work takes milliseconds.
SLOW_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
FAST_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}
        self.requests = Counter(
            "sfproxy_requests_total",
            "HTTP requests answered, by route and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "sfproxy_request_duration_seconds",
            "Time to answer a request (to the last byte for streams).",
            ["route"],
            buckets=SLOW_BUCKETS,
            registry=registry,
        )
        self.overhead_seconds = Histogram(
            "sfproxy_overhead_seconds",
            "Time the service itself added to a request: total minus upstream and queue time.",
            ["route"],
            buckets=FAST_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "sfproxy_requests_in_flight",
            "Requests being answered now.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.upstream_calls = Counter(
            "sfproxy_upstream_calls_total",
            "Attempts at SiliconFlow calls (generations and image downloads), by outcome.",
            ["kind", "model", "outcome"],
            registry=registry,
        )
        self.upstream_seconds = Histogram(
            "sfproxy_upstream_call_duration_seconds",
            "Duration of each attempt at a SiliconFlow call.",
            ["kind", "model"],
            buckets=SLOW_BUCKETS,
            registry=registry,
        )
        self.upstream_retries = Counter(
            "sfproxy_upstream_retries_total",
            "SiliconFlow calls retried, by the failure that caused the retry.",
            ["kind", "model", "reason"],
            registry=registry,
        )
        self.images = Counter(
            "sfproxy_images_generated_total",
            "Images SiliconFlow made and this service kept (delivered or not).",
            ["model"],
            registry=registry,
        )
        self.images_delivered = Counter(
            "sfproxy_images_delivered_total",
            "Images sent to clients, and so charged to their daily limits.",
            ["model"],
            registry=registry,
        )
        self.images_refunded = Counter(
            "sfproxy_images_refunded_total",
            "Images reserved against a client's daily limit and given back undelivered.",
            ["model"],
            registry=registry,
        )
        self.video_jobs_submitted = Counter(
            "sfproxy_video_jobs_submitted_total",
            "Video jobs SiliconFlow accepted, by model.",
            ["model"],
            registry=registry,
        )
        self.video_jobs_finished = Counter(
            "sfproxy_video_jobs_finished_total",
            "Video jobs finished by this instance's poller, by model and final status.",
            ["model", "status"],
            registry=registry,
        )
        self.video_jobs_in_flight = Gauge(
            "sfproxy_video_jobs_in_flight",
            "Video jobs not yet finished, across all instances (as the database holds them).",
            multiprocess_mode="max",
            registry=registry,
        )
        self.video_status_polls = Counter(
            "sfproxy_video_status_polls_total",
            "SiliconFlow video status calls, by the status read (or error, refused).",
            ["outcome"],
            registry=registry,
        )
        self.handovers = Counter(
            "sfproxy_handovers_total",
            "Requests that took over the generation of an identical request whose client left.",
            ["model"],
            registry=registry,
        )
        self.chat_tasks = Counter(
            "sfproxy_chat_tasks_answered_total",
            "Chat clients' background tasks (titles, tags, ...) answered without an image.",
            ["task"],
            registry=registry,
        )
        self.queue_seconds = Histogram(
            "sfproxy_queue_wait_seconds",
            "Time upstream calls waited for the model's pacing limits.",
            ["model"],
            buckets=SLOW_BUCKETS,
            registry=registry,
        )
        self.store_errors = Counter(
            "sfproxy_store_errors_total",
            "Image store operations that failed.",
            ["operation"],
            registry=registry,
        )
        self.limited = Counter(
            "sfproxy_rate_limited_total",
            "Requests refused with 429 by this service, by the limit that refused them.",
            ["limit"],
            registry=registry,
        )
        self.slow_connections = Counter(
            "sfproxy_slow_connections_closed_total",
            "Connections closed for sending a request too slowly, by the part that was late.",
            ["phase"],
            registry=registry,
        )
        self.connections_refused = Counter(
            "sfproxy_connections_refused_total",
            "Requests answered 503 without reaching the app: MAX_CONNECTIONS were open.",
            registry=registry,
        )
        self.loop_lag = Histogram(
            "sfproxy_event_loop_lag_seconds",
            "How late the event loop ran a timer: a blocked loop delays every request.",
            buckets=FAST_BUCKETS,
            registry=registry,
        )
        self.upstream_balance = Gauge(
            "sfproxy_upstream_balance",
            "A SiliconFlow account's total balance from /user/info, by account label.",
            ["account"],
            multiprocess_mode="mostrecent",
            registry=registry,
        )
        self.upstream_cost = Counter(
            "sfproxy_upstream_cost_total",
            "What SiliconFlow billed for the images made, from the price table (PRICES_JSON).",
            ["model", "currency"],
            registry=registry,
        )
        self.charged = Counter(
            "sfproxy_charged_total",
            "What clients were charged for the images delivered to them.",
            ["model", "currency"],
            registry=registry,
        )
        self.ledger_buffered = Gauge(
            "sfproxy_ledger_buffered_records",
            "Ledger records waiting in memory to be written to the database.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.ledger_written = Counter(
            "sfproxy_ledger_records_written_total",
            "Ledger records written to the database.",
            registry=registry,
        )
        self.ledger_dropped = Counter(
            "sfproxy_ledger_records_dropped_total",
            "Ledger records lost: the buffer was full (database unreachable), or shutdown "
            "could not write them in time.",
            registry=registry,
        )
        self.loop_lag_max = Gauge(
            "sfproxy_event_loop_lag_max_seconds",
            "The worst event-loop lag seen since the process started.",
            multiprocess_mode="max",
            registry=registry,
        )

    def request_finished(
        self, route: str, method: str, status: int, seconds: float, overhead: float | None
    ) -> None:
        """Count one answered request (labelled children cached: this runs on every one)."""
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.requests.labels(route, method, str(status)),
                self.request_seconds.labels(route),
                self.overhead_seconds.labels(route),
            )
        counted, timed, overhead_timed = children
        counted.inc()
        timed.observe(seconds)
        if overhead is not None:
            overhead_timed.observe(overhead)

    # The upstream client's observer interface.

    def attempt(self, kind: str, model: str, outcome: str, seconds: float) -> None:
        self.upstream_calls.labels(kind, model, outcome).inc()
        self.upstream_seconds.labels(kind, model).observe(seconds)

    def retry(self, kind: str, model: str, reason: str) -> None:
        self.upstream_retries.labels(kind, model, reason).inc()

    def render(self) -> bytes:
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            merged = CollectorRegistry()
            MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)

    async def watch_event_loop(self, interval: float = 0.05) -> None:
        """Measure how late the loop wakes from short sleeps, until cancelled."""
        loop = asyncio.get_running_loop()
        worst = 0.0
        while True:
            expected = loop.time() + interval
            await asyncio.sleep(interval)
            lag = max(0.0, loop.time() - expected)
            self.loop_lag.observe(lag)
            if lag > worst:
                worst = lag
                self.loop_lag_max.set(worst)
