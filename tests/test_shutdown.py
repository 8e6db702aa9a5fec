"""Graceful shutdown: on SIGTERM, stop accepting, let requests in flight finish, then exit; what
is still running when the grace period ends is answered (503, or an error event), not cut off."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from .support.proxy import start_proxy

# uvicorn re-raises SIGTERM once it has shut down gracefully, as process managers expect.
CLEAN_EXITS = (0, -signal.SIGTERM)
CHAT = {
    "model": "Qwen/Qwen-Image",
    "stream": True,
    "messages": [{"role": "user", "content": "s"}],
}


def run_in_thread(call) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["response"] = call()
        except Exception as exc:  # reported through `outcome`
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.02)


def refuses_connections(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.TransportError:
        return True
    return False


@pytest.fixture
def env(fake) -> dict[str, str]:
    return {"SF_BASE": fake.base_url, "SILICONFLOW_API_KEY": fake.config.api_key or "x"}


def test_requests_in_flight_finish_after_sigterm(env, fake, tmp_path):
    fake.configure(latency=1.5)
    proxy = start_proxy({**env, "SHUTDOWN_GRACE_SECONDS": "10"}, tmp_path)
    thread, outcome = run_in_thread(
        lambda: httpx.post(proxy.api_base + "/images/generations", json={"prompt": "x"}, timeout=30)
    )
    wait_until(lambda: fake.stats["in_flight"] == 1)
    proxy.process.send_signal(signal.SIGTERM)
    wait_until(lambda: refuses_connections(proxy.url + "/healthz"))
    thread.join(10)
    assert outcome["response"].status_code == 200
    assert proxy.process.wait(10) in CLEAN_EXITS
    assert "Traceback" not in proxy.log()


def test_streams_in_flight_finish_too(env, fake, tmp_path):
    fake.configure(latency=1.0)
    proxy = start_proxy({**env, "SHUTDOWN_GRACE_SECONDS": "10"}, tmp_path)

    def stream() -> list[str]:
        with httpx.stream("POST", proxy.api_base + "/chat/completions", json=CHAT, timeout=30) as r:
            return [line for line in r.iter_lines() if line]

    thread, outcome = run_in_thread(stream)
    wait_until(lambda: fake.stats["in_flight"] == 1)
    proxy.process.send_signal(signal.SIGTERM)
    thread.join(10)
    lines = outcome["response"]
    assert lines[-1] == "data: [DONE]"
    assert "![image](" in lines[-3]
    assert proxy.process.wait(10) in CLEAN_EXITS


def test_requests_left_at_the_end_of_the_grace_period_get_503(env, fake, tmp_path):
    fake.configure(latency=20)
    proxy = start_proxy({**env, "SHUTDOWN_GRACE_SECONDS": "1"}, tmp_path)
    thread, outcome = run_in_thread(
        lambda: httpx.post(proxy.api_base + "/images/generations", json={"prompt": "x"}, timeout=30)
    )
    wait_until(lambda: fake.stats["in_flight"] == 1)
    stopped = time.monotonic()
    proxy.process.send_signal(signal.SIGTERM)
    thread.join(10)
    answered = time.monotonic() - stopped
    response = outcome["response"]
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "server_shutting_down"
    assert "x-should-retry" not in response.headers
    # Answered a quarter of the grace period before it ends, not when uvicorn cancels.
    assert 0.6 < answered < 1.0
    assert proxy.process.wait(10) in CLEAN_EXITS
    assert time.monotonic() - stopped < 3
    log = proxy.log()
    assert "Traceback" not in log
    assert "Cancel" not in log  # uvicorn found nothing left to cancel
    assert "1 requests not yet answered get 503; 0 answers under way go on" in log


def test_streams_open_at_the_end_of_the_grace_period_end_with_an_error(env, fake, tmp_path):
    fake.configure(latency=30)
    proxy = start_proxy(
        {**env, "SHUTDOWN_GRACE_SECONDS": "2", "STREAM_KEEPALIVE_SECONDS": "0.5"}, tmp_path
    )
    started = threading.Event()
    timings: dict[str, float] = {}

    def stream() -> list[str]:
        lines = []
        with httpx.stream("POST", proxy.api_base + "/chat/completions", json=CHAT, timeout=30) as r:
            for line in r.iter_lines():
                if line:
                    lines.append(line)
                    started.set()
        timings["ended"] = time.monotonic()
        return lines

    thread, outcome = run_in_thread(stream)
    assert started.wait(10)
    # Its generation reached the fake. Counted by this test's recorded requests, not by the
    # fake's in-flight gauge, which may still hold the previous test's 20 s generation.
    wait_until(lambda: len(fake.requests) == 1)
    stopped = time.monotonic()
    proxy.process.send_signal(signal.SIGTERM)
    thread.join(10)
    lines = outcome["response"]
    assert lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2].removeprefix("data: "))["error"]
    assert error["code"] == "server_shutting_down"
    assert error["type"] == "server_error"
    assert error["message"].startswith("The server is shutting down")
    # The role chunk, keepalives while waiting, the error, [DONE]: never an answer.
    assert not any("![image]" in line for line in lines)
    assert 1.3 < timings["ended"] - stopped < 2.0
    assert proxy.process.wait(10) in CLEAN_EXITS
    log = proxy.log()
    assert "Traceback" not in log
    assert "0 requests not yet answered get 503; 1 answers under way go on" in log
