"""The upstream client's pieces that need no server: proxies from the environment."""

from __future__ import annotations

import pytest

from sfproxy.upstream_transport import EnvironmentProxies


def test_proxies_come_from_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    proxies = EnvironmentProxies()
    assert proxies.proxy_for("https://api.siliconflow.cn/v1/images/generations") == (
        "http://proxy.example:3128"
    )
    assert proxies.proxy_for("http://127.0.0.1:8000/v1/images/generations") is None
    assert proxies.proxy_for("http://other.example/x") is None


def test_no_proxy_variables_means_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert EnvironmentProxies().proxy_for("https://api.siliconflow.cn/v1") is None
