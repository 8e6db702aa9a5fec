"""Client limits (per key) and upstream pacing (per model), in memory and shared through Redis."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from sfproxy.auth import key_label

from .conftest import CLIENT_KEYS


def generate(proxy, key: str | None = None, **body) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(
        proxy.api_base + "/images/generations",
        json={"prompt": "limited", **body},
        headers=headers,
        timeout=60,
    )


def keys_env(**settings: str) -> dict[str, str]:
    return {"ALLOW_CLIENT_KEYS": ",".join(CLIENT_KEYS), **settings}


def test_requests_per_minute_per_key(start):
    proxy = start(**keys_env(CLIENT_RPM="3"))
    for _ in range(3):
        assert generate(proxy, CLIENT_KEYS[0]).status_code == 200
    refused = generate(proxy, CLIENT_KEYS[0])
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert error["code"] == "client_requests_per_minute"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # Another key has its own budget.
    assert generate(proxy, CLIENT_KEYS[1]).status_code == 200
    metrics = httpx.get(proxy.url + "/metrics").text
    assert 'sfproxy_rate_limited_total{limit="client_requests_per_minute"} 1.0' in metrics
    with openai.OpenAI(base_url=proxy.api_base, api_key=CLIENT_KEYS[0], max_retries=0) as sdk:
        with pytest.raises(openai.RateLimitError):
            sdk.models.list()


def test_images_per_day_counts_images_and_refunds_failures(start, fake):
    proxy = start(**keys_env(CLIENT_IMAGES_PER_DAY="4"))
    key = CLIENT_KEYS[0]
    assert generate(proxy, key, n=2).status_code == 200
    fake.add_fault("status", status=400)
    assert generate(proxy, key, n=1).status_code == 400  # failed: not counted
    assert generate(proxy, key, n=2).status_code == 200
    refused = generate(proxy, key, n=1)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "client_images_per_day"
    metrics = httpx.get(proxy.url + "/metrics").text
    assert 'sfproxy_rate_limited_total{limit="client_images_per_day"} 1.0' in metrics
    assert int(refused.headers["retry-after"]) > 3600
    too_many = generate(proxy, CLIENT_KEYS[1], n=5)
    assert too_many.status_code == 429
    assert too_many.json()["error"]["param"] == "n"


def test_per_key_limits_by_key_or_label(start):
    limits = {CLIENT_KEYS[0]: {"rpm": 1}, key_label(CLIENT_KEYS[1]): {"rpm": 2}}
    proxy = start(**keys_env(CLIENT_RPM="100", CLIENT_LIMITS=json.dumps(limits)))
    assert generate(proxy, CLIENT_KEYS[0]).status_code == 200
    assert generate(proxy, CLIENT_KEYS[0]).status_code == 429
    assert [generate(proxy, CLIENT_KEYS[1]).status_code for _ in range(3)] == [200, 200, 429]


def test_chat_streams_are_refused_before_they_start(start):
    proxy = start(**keys_env(CLIENT_IMAGES_PER_DAY="1"))
    body = {
        "model": "Qwen/Qwen-Image",
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    headers = {"Authorization": f"Bearer {CLIENT_KEYS[0]}"}
    first = httpx.post(proxy.api_base + "/chat/completions", json=body, headers=headers, timeout=30)
    assert first.status_code == 200
    second = httpx.post(
        proxy.api_base + "/chat/completions", json=body, headers=headers, timeout=30
    )
    assert second.status_code == 429
    assert second.headers["content-type"].startswith("application/json")


def test_public_api_limits_apply_per_address(start):
    proxy = start(CLIENT_RPM="2")
    assert [generate(proxy).status_code for _ in range(3)] == [200, 200, 429]


def test_limits_are_shared_by_two_instances_through_redis(start, redis):
    env = keys_env(CLIENT_RPM="3", REDIS_URL=redis.url)
    first = start(**env, LOG_LEVEL="info")
    second = start(**env, LOG_LEVEL="warning")
    assert first.url != second.url
    key = CLIENT_KEYS[0]
    assert generate(first, key).status_code == 200
    assert generate(second, key).status_code == 200
    assert generate(first, key).status_code == 200
    assert generate(second, key).status_code == 429
    assert generate(first, key).status_code == 429


def test_redis_outage_fails_open_and_readyz_says_so(start):
    proxy = start(**keys_env(CLIENT_RPM="1", REDIS_URL="redis://:hunter2pw@127.0.0.1:9/0"))
    assert generate(proxy, CLIENT_KEYS[0]).status_code == 200
    assert generate(proxy, CLIENT_KEYS[0]).status_code == 200
    ready = httpx.get(proxy.url + "/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"] != "ok"
    assert "hunter2pw" not in ready.text
    assert "hunter2pw" not in proxy.log()


def test_upstream_in_flight_cap_queues_calls(start, fake):
    proxy = start(UPSTREAM_MAX_IN_FLIGHT="1")
    fake.configure(latency=0.3)
    fake.reset_stats()
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(generate(proxy, n=2).status_code))
        for _ in range(2)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200, 200]
    assert fake.stats["peak_in_flight"] == 1
    assert time.monotonic() - started >= 1.2  # four 0.3 s calls, one at a time


def test_per_model_limits_and_queue_timeout(start, fake):
    limits = {"Kwai-Kolors/Kolors": {"max_in_flight": 1}}
    proxy = start(MODEL_LIMITS=json.dumps(limits), QUEUE_TIMEOUT="0.3")
    fake.configure(latency=1.0)
    outcome: dict[str, httpx.Response] = {}
    slow = threading.Thread(
        target=lambda: outcome.setdefault("first", generate(proxy, model="Kwai-Kolors/Kolors"))
    )
    slow.start()
    # The first call holds Kolors' one slot once the fake is working on it.
    deadline = time.monotonic() + 10
    while fake.stats["in_flight"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.stats["in_flight"] == 1
    queued = generate(proxy, model="Kwai-Kolors/Kolors")
    other_model = generate(proxy, model="Qwen/Qwen-Image")
    slow.join()
    assert outcome["first"].status_code == 200
    assert queued.status_code == 429
    assert queued.json()["error"]["code"] == "upstream_pacing"
    assert "retry-after" in queued.headers
    assert other_model.status_code == 200


def test_images_per_minute_budget(start, fake):
    proxy = start(UPSTREAM_IMAGES_PER_MINUTE="2", QUEUE_TIMEOUT="0.5")
    response = generate(proxy, n=3)
    # Two images fit this minute's budget; the third would wait past QUEUE_TIMEOUT.
    assert response.status_code == 200
    assert len(response.json()["data"]) == 2
    assert response.headers["x-partial-failure"].startswith("1 of 3")
    assert len(fake.requests) == 2
    refused = generate(proxy)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
