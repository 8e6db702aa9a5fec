"""Links a client's users can open: PUBLIC_BASE_URL, trusted forwarding headers, and the warning."""

from __future__ import annotations

import logging

import pytest

from sfproxy.links import link_warning
from sfproxy.settings import load_settings

from .support.inprocess import in_process, service_settings
from .test_cli import run

BODY = {"model": "Qwen/Qwen-Image", "prompt": "a link", "response_format": "url"}
FORWARDED = {
    "Host": "sfproxy:8000",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "images.example.org",
    "X-Forwarded-Prefix": "/gateway",
}


async def _first_url(settings, headers):
    async with in_process(settings) as running:
        response = await running.http.post("/v1/images/generations", json=BODY, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()["data"][0]["url"]


async def test_a_trusted_proxy_names_the_public_address(fake, tmp_path):
    # httpx's ASGI transport connects from 127.0.0.1, which FORWARDED_ALLOW_IPS trusts by default.
    url = await _first_url(service_settings(fake, tmp_path), FORWARDED)
    assert url.startswith("https://images.example.org/gateway/v1/files/images/")


async def test_anyone_else_s_forwarding_headers_are_ignored(fake, tmp_path):
    settings = service_settings(fake, tmp_path, forwarded_allow_ips="10.0.0.0/8")
    url = await _first_url(settings, FORWARDED)
    assert url.startswith("http://sfproxy:8000/v1/files/images/")


async def test_public_base_url_wins_over_every_header(fake, tmp_path):
    settings = service_settings(fake, tmp_path, public_base_url="https://gw.example.net/img/")
    url = await _first_url(settings, FORWARDED)
    assert url.startswith("https://gw.example.net/img/v1/files/images/")


def _settings(**values):
    return load_settings(_env_file=None, siliconflow_api_key="sk-x", **values)


@pytest.mark.parametrize(
    ("values", "warns"),
    [
        ({"host": "0.0.0.0"}, True),
        ({"host": "::"}, True),
        ({"host": "10.1.2.3"}, True),
        ({"host": "127.0.0.1"}, False),
        ({"host": "::1"}, False),
        ({"host": "localhost"}, False),
        ({"host": "0.0.0.0", "public_base_url": "https://img.example.org"}, False),
        ({"host": "0.0.0.0", "image_store": "off"}, False),
        ({"host": "0.0.0.0", "image_public_base_url": "https://cdn.example.org"}, False),
    ],
)
def test_the_warning_is_given_exactly_when_links_may_not_open(values, warns):
    warning = link_warning(_settings(**values))
    assert (warning is not None) is warns
    if warns:
        assert "PUBLIC_BASE_URL is not set" in warning
        assert f"listens on {values['host']}" in warning


def test_check_config_warns_beyond_loopback(tmp_path):
    env = {"SILICONFLOW_API_KEY": "sk-test-0123456789abcdef", "HOST": "0.0.0.0"}
    result = run("check-config", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warning: PUBLIC_BASE_URL is not set and the service listens on 0.0.0.0" in (
        result.stdout
    )
    quiet = run("check-config", env={**env, "HOST": "127.0.0.1"}, cwd=tmp_path)
    assert quiet.returncode == 0
    assert "PUBLIC_BASE_URL is not set" not in quiet.stdout


async def test_start_up_log_and_readyz_warn_beyond_loopback(fake, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="sfproxy")
    async with in_process(service_settings(fake, tmp_path, host="0.0.0.0")) as running:
        ready = await running.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["public_base_url"].startswith(
        "PUBLIC_BASE_URL is not set and the service listens on 0.0.0.0"
    )
    assert any("PUBLIC_BASE_URL is not set" in record.getMessage() for record in caplog.records)


async def test_no_warning_on_loopback(fake, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="sfproxy")
    async with in_process(service_settings(fake, tmp_path, host="127.0.0.1")) as running:
        ready = await running.http.get("/readyz")
    assert ready.status_code == 200
    assert "public_base_url" not in ready.json()["checks"]
    assert not any("PUBLIC_BASE_URL" in record.getMessage() for record in caplog.records)
