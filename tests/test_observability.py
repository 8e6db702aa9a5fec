"""Request ids, JSON request logs, the overhead header, /metrics and /readyz."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from sfproxy.auth import key_label

from .conftest import CLIENT_KEYS


def log_lines(proxy) -> list[dict]:
    lines = []
    for line in proxy.log().splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return lines


def wait_for_log(proxy, request_id: str) -> dict:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for entry in log_lines(proxy):
            if entry.get("request_id") == request_id:
                return entry
        time.sleep(0.05)
    raise AssertionError(f"no log line for {request_id}:\n{proxy.log()[-2000:]}")


def test_request_id_is_echoed_or_made(proxy):
    given = httpx.get(proxy.api_base + "/models", headers={"X-Request-ID": "trace-abc.123"})
    assert given.headers["x-request-id"] == "trace-abc.123"
    made = httpx.get(proxy.api_base + "/models")
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    hostile = httpx.get(proxy.api_base + "/models", headers={"X-Request-ID": 'bad id" with spaces'})
    assert hostile.headers["x-request-id"] != 'bad id" with spaces'


def test_one_json_log_line_per_request_without_secrets_or_blobs(start):
    proxy = start(ALLOW_CLIENT_KEYS=CLIENT_KEYS[0], LOG_PROMPT_CHARS="12")
    prompt = "a very long prompt that must be cut in the log"
    response = httpx.post(
        proxy.api_base + "/images/generations",
        json={"prompt": prompt, "n": 2, "response_format": "b64_json"},
        headers={"Authorization": f"Bearer {CLIENT_KEYS[0]}", "X-Request-ID": "log-check-1"},
        timeout=30,
    )
    assert response.status_code == 200
    entry = wait_for_log(proxy, "log-check-1")
    assert entry["message"] == "request"
    assert entry["route"] == "/v1/images/generations"
    assert entry["status"] == 200
    assert entry["model"] == "Qwen/Qwen-Image"
    assert entry["images"] == 2
    assert entry["duration_ms"] >= entry["upstream_ms"] >= 0
    assert entry["client"] == key_label(CLIENT_KEYS[0])
    assert entry["prompt"] == prompt[:12] + "…"
    log = proxy.log()
    assert CLIENT_KEYS[0] not in log
    b64 = response.json()["data"][0]["b64_json"]
    assert b64[:40] not in log
    assert prompt not in log


def test_failed_requests_are_logged_with_their_status(proxy, fake):
    fake.add_fault("status", status=503)
    httpx.post(
        proxy.api_base + "/images/generations",
        json={"prompt": "fails"},
        headers={"X-Request-ID": "log-fail-1"},
        timeout=30,
    )
    entry = wait_for_log(proxy, "log-fail-1")
    assert entry["status"] == 503
    assert entry["error"] == "upstream_unavailable"
    httpx.post(
        proxy.api_base + "/images/generations",
        json={"prompt": "x", "n": 99},
        headers={"X-Request-ID": "log-fail-2"},
        timeout=30,
    )
    invalid = wait_for_log(proxy, "log-fail-2")
    assert (invalid["status"], invalid["error"]) == (400, "invalid n")


def test_overhead_header_is_total_minus_upstream(proxy, fake):
    fake.configure(latency=0.3)
    started = time.monotonic()
    response = httpx.post(
        proxy.api_base + "/images/generations", json={"prompt": "timed"}, timeout=30
    )
    total_ms = (time.monotonic() - started) * 1000
    overhead = float(response.headers["x-overhead-ms"])
    timing = dict(
        part.strip().split(";dur=") for part in response.headers["server-timing"].split(",")
    )
    assert float(timing["upstream"]) >= 300
    assert float(timing["overhead"]) == pytest.approx(overhead, abs=0.01)
    assert 0 <= overhead < total_ms - 300


def metric(text: str, name: str, *, missing: float | None = None, **labels: str) -> float:
    """The sum of the samples of `name` with these labels; `missing` if there are none."""
    total = 0.0
    found = False
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    if not found and missing is not None:
        return missing
    assert found, f"{name}{labels} not in metrics"
    return total


def buckets(text: str, name: str) -> list[tuple[float, float]]:
    """A histogram's cumulative buckets as (upper bound, count), in order."""
    found = []
    for line in text.splitlines():
        if line.startswith(name + '_bucket{le="'):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            found.append((float(bound), float(line.rsplit(" ", 1)[1])))
    return found


def test_metrics_show_the_figures(start, fake):
    # Settings no other test uses: this proxy's figures move with this test's requests only.
    proxy = start(UPSTREAM_RETRIES="1", LOG_PROMPT_CHARS="41")
    before = httpx.get(proxy.url + "/metrics").text
    fake.add_fault("status", status=503)
    ok = httpx.post(
        proxy.api_base + "/images/generations", json={"prompt": "m", "n": 2}, timeout=30
    )
    assert ok.status_code == 200
    refused = httpx.post(proxy.api_base + "/images/generations", json={}, timeout=30)
    assert refused.status_code == 400
    after = httpx.get(proxy.url + "/metrics").text

    def grew(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, missing=0.0, **labels)

    route = "/v1/images/generations"
    assert grew("sfproxy_requests_total", route=route, status="200") == 1
    assert grew("sfproxy_requests_total", route=route, status="400") == 1
    assert grew("sfproxy_request_duration_seconds_count", route=route) == 2
    # n=2 is two calls; the 503 hit one of them, which was retried once.
    assert grew("sfproxy_upstream_calls_total", kind="generate", outcome="ok") == 2
    outcome = "upstream_unavailable"
    assert grew("sfproxy_upstream_calls_total", kind="generate", outcome=outcome) == 1
    assert grew("sfproxy_upstream_retries_total", reason=outcome) == 1
    assert grew("sfproxy_images_generated_total", model="Qwen/Qwen-Image") == 2
    assert metric(after, "sfproxy_requests_in_flight") == 1  # this scrape itself
    # No image failed to be stored: the counter has no labelled sample at all.
    assert "sfproxy_store_errors_total{" not in after
    # The worst lag lies in the histogram's highest occupied bucket.
    worst = metric(after, "sfproxy_event_loop_lag_max_seconds")
    lags = buckets(after, "sfproxy_event_loop_lag_seconds")
    total = metric(after, "sfproxy_event_loop_lag_seconds_count")
    assert total > 0
    index = next(i for i, (_, count) in enumerate(lags) if count == total)
    floor = lags[index - 1][0] if index > 0 else 0.0
    assert floor < worst <= lags[index][0] or (index == 0 and worst == 0.0)


def test_queue_wait_and_store_errors_are_counted(start, fake, tmp_path):
    image_dir = tmp_path / "store"
    proxy = start(UPSTREAM_MAX_IN_FLIGHT="1", IMAGE_DIR=str(image_dir))
    assert (
        httpx.post(proxy.api_base + "/images/generations", json={"prompt": "q"}).status_code == 200
    )
    image_dir.rename(tmp_path / "moved")
    image_dir.write_text("not a directory")
    assert (
        httpx.post(proxy.api_base + "/images/generations", json={"prompt": "s"}).status_code == 503
    )
    text = httpx.get(proxy.url + "/metrics").text
    # One wait per upstream call, the failed request's too; one image failed to be stored.
    assert metric(text, "sfproxy_queue_wait_seconds_count", model="Qwen/Qwen-Image") == 2
    assert metric(text, "sfproxy_store_errors_total", operation="put") == 1
    ready = httpx.get(proxy.url + "/readyz")
    assert ready.status_code == 503
    assert "IMAGE_DIR" in ready.json()["checks"]["image_store"]


def test_metrics_token(start):
    proxy = start(METRICS_TOKEN="metrics-secret-1")
    assert httpx.get(proxy.url + "/metrics").status_code == 401
    assert (
        httpx.get(proxy.url + "/metrics", headers={"Authorization": "Bearer nope"}).status_code
        == 401
    )
    allowed = httpx.get(
        proxy.url + "/metrics", headers={"Authorization": "Bearer metrics-secret-1"}
    )
    assert allowed.status_code == 200
    assert allowed.headers["content-type"].startswith("text/plain")


def test_readyz(proxy):
    response = httpx.get(proxy.url + "/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {
            "configuration": "ok",
            "image_store": "ok",
            "redis": "not configured",
            # The fake account's .cn models, read at start.
            "models": "discovered: 7 image models",
            "ledger": "ok",
        },
    }


def test_readyz_with_redis(start, redis):
    proxy = start(REDIS_URL=redis.url)
    assert httpx.get(proxy.url + "/readyz").json()["checks"]["redis"] == "ok"


def test_metrics_are_merged_across_workers(tmp_path, fake):
    from .support.proxy import start_proxy

    proxy = start_proxy(
        {"SF_BASE": fake.base_url, "SILICONFLOW_API_KEY": fake.config.api_key or "x"},
        tmp_path,
        args=("--workers", "2"),
    )
    try:
        for _ in range(6):
            assert (
                httpx.post(proxy.api_base + "/images/generations", json={"prompt": "w"}).status_code
                == 200
            )
        text = httpx.get(proxy.url + "/metrics").text
        assert metric(text, "sfproxy_images_generated_total", model="Qwen/Qwen-Image") == 6
    finally:
        proxy.stop()
