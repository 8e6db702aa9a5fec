"""Graceful shutdown: on SIGTERM, stop accepting, let requests in flight finish, then exit."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest

from .support.proxy import start_proxy

# uvicorn re-raises SIGTERM once it has shut down gracefully, as process managers expect.
CLEAN_EXITS = (0, -signal.SIGTERM)


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


@pytest.fixture
def env(fake) -> dict[str, str]:
    return {"SF_BASE": fake.base_url, "SILICONFLOW_API_KEY": fake.config.api_key or "x"}


def test_requests_in_flight_finish_after_sigterm(env, fake, tmp_path):
    fake.configure(latency=1.5)
    proxy = start_proxy({**env, "SHUTDOWN_GRACE_SECONDS": "10"}, tmp_path)
    thread, outcome = run_in_thread(
        lambda: httpx.post(proxy.api_base + "/images/generations", json={"prompt": "x"}, timeout=30)
    )
    time.sleep(0.5)
    proxy.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(httpx.TransportError):
        httpx.get(proxy.url + "/healthz", timeout=2)
    thread.join(10)
    assert outcome["response"].status_code == 200
    assert proxy.process.wait(10) in CLEAN_EXITS


def test_streams_in_flight_finish_too(env, fake, tmp_path):
    fake.configure(latency=1.0)
    proxy = start_proxy({**env, "SHUTDOWN_GRACE_SECONDS": "10"}, tmp_path)
    body = {
        "model": "Qwen/Qwen-Image",
        "stream": True,
        "messages": [{"role": "user", "content": "s"}],
    }

    def stream() -> list[str]:
        with httpx.stream("POST", proxy.api_base + "/chat/completions", json=body, timeout=30) as r:
            return [line for line in r.iter_lines() if line]

    thread, outcome = run_in_thread(stream)
    time.sleep(0.4)
    proxy.process.send_signal(signal.SIGTERM)
    thread.join(10)
    assert outcome["response"][-1] == "data: [DONE]"
    assert proxy.process.wait(10) in CLEAN_EXITS


def test_the_grace_period_bounds_the_wait(env, fake, tmp_path):
    fake.configure(latency=20)
    proxy = start_proxy({**env, "SHUTDOWN_GRACE_SECONDS": "0.5"}, tmp_path)
    thread, outcome = run_in_thread(
        lambda: httpx.post(proxy.api_base + "/images/generations", json={"prompt": "x"}, timeout=30)
    )
    time.sleep(0.3)
    stopped = time.monotonic()
    proxy.process.send_signal(signal.SIGTERM)
    proxy.process.wait(10)
    assert time.monotonic() - stopped < 5
    thread.join(10)
    assert "error" in outcome or outcome["response"].status_code >= 500
