"""Defects found in review, each pinned by the answer the service now gives.

Most run the app in-process (`create_app` behind `httpx.ASGITransport`) against the fake
SiliconFlow started in the same event loop; the trusted-proxy tests need a real socket, whose
peer address is what uvicorn checks.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sfproxy.app import create_app
from sfproxy.catalogue import MAX_SIDE, MIN_SIDE
from sfproxy.fake_upstream import FakeSiliconFlow
from sfproxy.protocol import IMAGE_SIZE_PATTERN
from sfproxy.routes.health import READY_CACHE_SECONDS, ReadinessCache
from sfproxy.setting_values import MASK_SHOWN_MAX, ConfigError, mask
from sfproxy.settings import load_settings

from .conftest import StartProxy
from .support.inprocess import service_settings, serving
from .support.nginx import nginx_binary, start_nginx
from .support.proxy import start_proxy

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@pytest.fixture
async def upstream() -> AsyncIterator[FakeSiliconFlow]:
    async with FakeSiliconFlow() as fake:
        yield fake


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def free_mb(directory: Path) -> float:
    usage = os.statvfs(directory)
    return usage.f_bavail * usage.f_frsize / (1024 * 1024)


# /readyz


async def test_readyz_reuses_its_answer_until_it_is_stale(upstream, tmp_path):
    image_dir = tmp_path / "images"
    app = create_app(service_settings(upstream, image_dir=image_dir))
    clock = ManualClock()
    app.state.readiness = ReadinessCache(clock=clock)
    async with serving(app) as client:
        assert (await client.get("/readyz")).status_code == 200
        # The store breaks; an answer younger than READY_CACHE_SECONDS still stands.
        image_dir.rename(tmp_path / "moved")
        image_dir.write_text("not a directory")
        clock.now += READY_CACHE_SECONDS - 0.1
        assert (await client.get("/readyz")).status_code == 200
        clock.now += 0.2
        stale = await client.get("/readyz")
    assert stale.status_code == 503
    assert stale.json()["checks"]["image_store"] == "IMAGE_DIR is not writable (File exists)."
    # The path is the operator's business, not that of whoever asks an open endpoint.
    assert str(tmp_path) not in stale.text


async def test_concurrent_probes_share_one_check(upstream, tmp_path):
    app = create_app(service_settings(upstream, image_dir=tmp_path / "images"))
    async with serving(app) as client:
        store = app.state.services.store
        checks = 0
        real_check = store.check

        async def counted_check(**options: int) -> None:
            nonlocal checks
            checks += 1
            await real_check(**options)

        store.check = counted_check
        answers = await asyncio.gather(*(client.get("/readyz") for _ in range(20)))
        assert [answer.status_code for answer in answers] == [200] * 20
        assert (await client.get("/readyz")).status_code == 200
    assert checks == 1


async def test_readyz_is_not_ready_when_the_disk_is_nearly_full(upstream, tmp_path):
    threshold = round(free_mb(tmp_path)) + 1_000_000
    settings = service_settings(upstream, image_dir=tmp_path / "images", min_free_disk_mb=threshold)
    async with serving(create_app(settings)) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "not ready"
    message = response.json()["checks"]["image_store"]
    assert re.fullmatch(
        rf"IMAGE_DIR has \d+ MB free, less than MIN_FREE_DISK_MB \({threshold}\)\.", message
    ), message


async def test_readyz_is_ready_with_room_above_the_threshold(upstream, tmp_path):
    threshold = max(0, round(free_mb(tmp_path)) - 1_000)
    settings = service_settings(upstream, image_dir=tmp_path / "images", min_free_disk_mb=threshold)
    async with serving(create_app(settings)) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["image_store"] == "ok"


# Errors


async def test_405_names_the_allowed_methods(upstream, tmp_path):
    async with serving(create_app(service_settings(upstream, image_dir=tmp_path))) as client:
        health = await client.post("/healthz")
        generations = await client.get("/v1/images/generations")
    assert health.status_code == 405
    # Starlette lists a route's methods from a set: in any order.
    assert sorted(health.headers["allow"].split(", ")) == ["GET", "HEAD"]
    assert health.json()["error"]["code"] == "method_not_allowed"
    assert generations.status_code == 405
    assert generations.headers["allow"] == "POST"


async def test_an_input_image_over_a_fractional_limit_names_that_limit(upstream, tmp_path):
    settings = service_settings(upstream, image_dir=tmp_path, max_image_mb=0.5)
    big = "data:image/png;base64," + base64.b64encode(PNG + bytes(600_000)).decode()
    async with serving(create_app(settings)) as client:
        response = await client.post(
            "/v1/images/edits",
            json={"model": "Qwen/Qwen-Image-Edit", "prompt": "too big", "image": big},
        )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "image is larger than the 0.5 MB limit."
    assert upstream.requests == []


# /docs


async def test_docs_are_off_by_default_and_the_document_stays(upstream, tmp_path):
    async with serving(create_app(service_settings(upstream, image_dir=tmp_path))) as client:
        docs = await client.get("/docs")
        document = await client.get("/openapi.json")
    assert docs.status_code == 404
    assert document.status_code == 200
    assert document.json()["info"]["title"] == "siliconflow-img-proxy"


async def test_docs_enabled_serves_swagger_ui(upstream, tmp_path):
    settings = service_settings(upstream, image_dir=tmp_path, docs_enabled=True)
    async with serving(create_app(settings)) as client:
        docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger-ui-bundle.js" in docs.text


# The OpenAPI document is as strict as the server


SIZES = [
    "1024x1024",
    "64x64",
    "4096x4096",
    "63x64",
    "64x4097",
    "auto",
    "AUTO",
    "1024X768",
    "1024×768",
    "1024*768",
    "16:9",
    " 1024x1024",
    "1024x1024 ",
    "01024x1024",
    "١٠٢٤x١٠٢٤",
    "",
    "x",
    "1024x",
    "banana",
]


def test_the_image_size_pattern_follows_the_side_limits():
    pattern = re.compile(IMAGE_SIZE_PATTERN)
    for side in range(1, 5000):
        expected = MIN_SIDE <= side <= MAX_SIDE
        assert (pattern.fullmatch(f"{side}x{MIN_SIDE}") is not None) == expected, side
        assert (pattern.fullmatch(f"{MAX_SIDE}x{side}") is not None) == expected, side


async def test_schema_and_server_agree_on_the_request_constraints(upstream, tmp_path):
    async with serving(create_app(service_settings(upstream, image_dir=tmp_path))) as client:
        document = (await client.get("/openapi.json")).json()
        generations = document["paths"]["/v1/images/generations"]["post"]["requestBody"]
        schema = generations["content"]["application/json"]["schema"]
        image_size = schema["properties"]["sf_image_size"]
        assert image_size["pattern"] == IMAGE_SIZE_PATTERN
        pattern = re.compile(image_size["pattern"])
        for size in SIZES:
            response = await client.post(
                "/v1/images/generations",
                json={"prompt": "sized", "sf_image_size": size, "model": "Kwai-Kolors/Kolors"},
            )
            expected = 200 if pattern.fullmatch(size) else 400
            assert response.status_code == expected, (size, response.text)

        edits = document["paths"]["/v1/images/edits"]["post"]["requestBody"]["content"]
        image = edits["application/json"]["schema"]["properties"]["image"]
        assert {"type": "array", "items": {"type": "string"}, "minItems": 1} in image["anyOf"]
        empty = await client.post(
            "/v1/images/edits",
            json={"model": "Qwen/Qwen-Image-Edit", "prompt": "nothing", "image": []},
        )
        assert empty.status_code == 400
        assert empty.json()["error"]["message"] == "Invalid 'image': send at least one image."
        assert empty.json()["error"]["param"] == "image"

        chat = document["paths"]["/v1/chat/completions"]["post"]["requestBody"]
        messages = chat["content"]["application/json"]["schema"]["properties"]["messages"]
        role = messages["items"]["properties"]["role"]
        roles = ["system", "developer", "user", "assistant", "tool", "function"]
        assert role["enum"] == roles
        for name in roles:
            history = [{"role": name, "content": "earlier"}, {"role": "user", "content": "cat"}]
            response = await client.post("/v1/chat/completions", json={"messages": history})
            assert response.status_code == 200, (name, response.text)
        wizard = await client.post(
            "/v1/chat/completions", json={"messages": [{"role": "wizard", "content": "cat"}]}
        )
    assert wizard.status_code == 400
    assert wizard.json()["error"]["param"] == "messages.0.role"


# Secrets in check-config and logs


@pytest.mark.parametrize("length", range(0, 130))
def test_mask_shows_at_most_four_characters_and_a_quarter(length):
    # Distinct characters, so what is shown can be placed in the secret exactly.
    secret = "".join(chr(0x4E00 + index) for index in range(length))
    masked = mask(secret)
    if masked == "***":
        shown = ""
    else:
        head, separator, tail = masked.partition("…")
        assert separator == "…"
        assert secret.startswith(head) and secret.endswith(tail)
        shown = head + tail
    assert len(shown) <= min(MASK_SHOWN_MAX, length // 4)
    if length >= 4 * MASK_SHOWN_MAX:
        # Long keys still show enough to tell two apart.
        assert len(shown) == MASK_SHOWN_MAX


# Trusted proxies (FORWARDED_ALLOW_IPS)

# The tests' client connects from this loopback address, which uvicorn's default (127.0.0.1
# and ::1) does not trust; the proxy listens on 127.0.0.1.
PEER = "127.0.0.2"


def two_clients_behind(proxy_url: str) -> list[int]:
    statuses = []
    with httpx.Client(transport=httpx.HTTPTransport(local_address=PEER), timeout=30) as http:
        for address in ("203.0.113.7", "203.0.113.8"):
            response = http.post(
                proxy_url + "/v1/images/generations",
                json={"prompt": "forwarded"},
                headers={"X-Forwarded-For": address},
            )
            statuses.append(response.status_code)
    return statuses


def test_a_trusted_peer_forwards_each_client_address(start: StartProxy):
    proxy = start(CLIENT_RPM="1", FORWARDED_ALLOW_IPS=PEER)
    assert two_clients_behind(proxy.url) == [200, 200]


def test_an_untrusted_peer_is_one_client_whatever_it_forwards(start: StartProxy):
    proxy = start(CLIENT_RPM="1", LOG_PROMPT_CHARS="99")
    assert two_clients_behind(proxy.url) == [200, 429]


def test_trusted_proxies_may_come_from_the_env_file(fake, tmp_path):
    # uvicorn reads FORWARDED_ALLOW_IPS from the process environment only; `.env` is ours.
    (tmp_path / ".env").write_text(f"FORWARDED_ALLOW_IPS=10.9.8.0/24,{PEER}\nCLIENT_RPM=1\n")
    env = {
        "SF_BASE": fake.base_url,
        "SILICONFLOW_API_KEY": fake.config.api_key or "x",
        "IMAGE_DIR": str(tmp_path / "images"),
    }
    proxy = start_proxy(env, tmp_path)
    try:
        assert two_clients_behind(proxy.url) == [200, 200]
    finally:
        proxy.stop()


@pytest.mark.parametrize("value", ["10.0.0.0/33", "nginx", "127.0.0.1 , ::1, localhost"])
def test_trusted_proxies_must_be_addresses_or_networks(value):
    with pytest.raises(ConfigError, match="FORWARDED_ALLOW_IPS"):
        load_settings(forwarded_allow_ips=value, _env_file=None)


@pytest.mark.parametrize(
    ("trusted", "statuses"),
    [
        ("127.0.0.1", [200, 200, 429]),
        ("", [200, 429, 429]),
        # "*" takes the header's first address, which the client wrote: why deploy/ avoids it.
        ("*", [200, 200, 200]),
    ],
)
def test_deploy_nginx_forwards_each_client_address(start: StartProxy, tmp_path, trusted, statuses):
    # deploy/nginx.conf appends the peer's address to X-Forwarded-For. Trusting nginx (on
    # 127.0.0.1 here), the proxy counts clients 127.0.0.2 and 127.0.0.3 apart, and an address
    # a client writes into the header itself does not make it a new client.
    binary = nginx_binary()
    assert binary is not None, "deploy/nginx.conf needs nginx (Debian package `nginx`)"
    proxy = start(CLIENT_RPM="1", FORWARDED_ALLOW_IPS=trusted, LOG_PROMPT_CHARS="98")
    address = proxy.url.removeprefix("http://")
    nginx = start_nginx(binary, {"proxy1": address, "proxy2": address}, tmp_path)
    answered = []
    try:
        for peer, forged in (
            ("127.0.0.2", None),
            ("127.0.0.3", None),
            ("127.0.0.2", "198.51.100.9"),
        ):
            headers = {"X-Forwarded-For": forged} if forged else {}
            transport = httpx.HTTPTransport(local_address=peer)
            with httpx.Client(transport=transport, timeout=30) as http:
                response = http.post(
                    nginx.url + "/v1/images/generations",
                    json={"prompt": "balanced"},
                    headers=headers,
                )
            answered.append(response.status_code)
    finally:
        nginx.stop()
    assert answered == statuses
