"""Discovery: `/v1/models` lists the account's image models, MODELS overrides them, and a
failed discovery falls back to the site's built-in list, against the fake over real HTTP."""

from __future__ import annotations

import logging
import time

import pytest

from sfproxy import discovery
from sfproxy.catalogue import SITE_MODELS
from sfproxy.fake_upstream import FakeSiliconFlow
from sfproxy.routes.health import ReadinessCache
from sfproxy.video_models import VIDEO_ENDPOINT_TYPE

from .support.inprocess import UPSTREAM_KEY, eventually, in_process, service_settings

CN_ORDER = [
    "Qwen/Qwen-Image",
    "Kwai-Kolors/Kolors",
    "Tongyi-MAI/Z-Image-Turbo",
    "Tongyi-MAI/Z-Image",
    "baidu/ERNIE-Image-Turbo",
    "Qwen/Qwen-Image-Edit",
    "Qwen/Qwen-Image-Edit-2509",
]
COM_BUILTIN = [spec.id for spec in SITE_MODELS["com"]]


async def listed(running) -> list[dict]:
    """The image models' cards: discovery reads the account's image models only. The video
    models, always listed after them, are checked once here and in test_video_models.py."""
    response = await running.http.get("/v1/models")
    assert response.status_code == 200, response.text
    cards = response.json()["data"]
    assert [
        card["id"] for card in cards if VIDEO_ENDPOINT_TYPE in card["supported_endpoint_types"]
    ] == [
        "Wan-AI/Wan2.2-T2V-A14B",
        "Wan-AI/Wan2.2-I2V-A14B",
    ]
    return [card for card in cards if VIDEO_ENDPOINT_TYPE not in card["supported_endpoint_types"]]


async def ready_checks(running) -> dict:
    # A fresh cache each time: the test reads the state after each change, not a cached one.
    running.app.state.readiness = ReadinessCache(max_age=0)
    response = await running.http.get("/readyz")
    assert response.status_code == 200, response.text
    return response.json()["checks"]


async def test_models_follow_the_account(tmp_path):
    async with FakeSiliconFlow(api_key=UPSTREAM_KEY) as fake:
        async with in_process(service_settings(fake, tmp_path)) as running:
            cards = await listed(running)
            assert [card["id"] for card in cards] == CN_ORDER
            assert {card["source"] for card in cards} == {"discovered"}
            assert (await ready_checks(running))["models"] == "discovered: 7 image models"

            fake.configure(listed_models=["acme/new-model", "Kwai-Kolors/Kolors"])
            assert await running.services.models.refresh() is True
            cards = await listed(running)
            # The site's models first, in its order; the others as the account lists them.
            assert [card["id"] for card in cards] == ["Kwai-Kolors/Kolors", "acme/new-model"]
            new = cards[1]
            # Unknown to the catalogue: a pass-through entry, nothing fitted or filtered.
            assert (new["source"], "sizes" in new, "params" in new) == ("discovered", False, False)
            # The default (and the aliases) follow the first listed model.
            response = await running.http.post(
                "/v1/images/generations", json={"model": "dall-e-3", "prompt": "a fox"}
            )
            assert response.status_code == 200, response.text
            assert fake.requests[-1].body["model"] == "Kwai-Kolors/Kolors"


async def test_the_list_is_refreshed_periodically(tmp_path):
    async with FakeSiliconFlow(api_key=UPSTREAM_KEY) as fake:
        settings = service_settings(fake, tmp_path, model_refresh_seconds=0.05)
        async with in_process(settings) as running:
            assert [card["id"] for card in await listed(running)] == CN_ORDER
            fake.configure(listed_models=["Qwen/Qwen-Image-Edit"])
            await eventually(
                lambda: (
                    [s.id for s in running.services.catalogue.listed] == ["Qwen/Qwen-Image-Edit"]
                ),
                what="the refresh",
            )
            assert [card["id"] for card in await listed(running)] == ["Qwen/Qwen-Image-Edit"]


async def test_configured_models_win_and_missing_ones_are_warned_about(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="sfproxy.discovery")
    async with FakeSiliconFlow(api_key=UPSTREAM_KEY) as fake:
        settings = service_settings(
            fake, tmp_path, models="Kwai-Kolors/Kolors, black-forest-labs/FLUX.2-pro"
        )
        async with in_process(settings) as running:
            cards = await listed(running)
            checks = await ready_checks(running)
    assert [card["id"] for card in cards] == ["Kwai-Kolors/Kolors", "black-forest-labs/FLUX.2-pro"]
    assert {card["source"] for card in cards} == {"configured"}
    warnings = [r.getMessage() for r in caplog.records if r.name == "sfproxy.discovery"]
    assert warnings == [
        "MODELS/MODELS_JSON list black-forest-labs/FLUX.2-pro, which the SiliconFlow account "
        "does not offer"
    ]
    assert checks["models"] == (
        "configured (MODELS/MODELS_JSON); not offered: black-forest-labs/FLUX.2-pro"
    )


async def test_a_failed_discovery_falls_back_to_the_sites_list_and_recovers(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="sfproxy.discovery")
    async with FakeSiliconFlow(api_key=UPSTREAM_KEY, site="com") as fake:
        fake.add_fault("status", target="models", status=500)
        settings = service_settings(fake, tmp_path, sf_site="com")
        async with in_process(settings) as running:
            cards = await listed(running)
            assert [card["id"] for card in cards] == COM_BUILTIN
            assert {card["source"] for card in cards} == {"built-in"}
            checks = await ready_checks(running)
            assert checks["models"].startswith(
                "built-in list for siliconflow.com: discovery failed: "
                "SiliconFlow failed (500) (SiliconFlow code 50500): Internal error "
                "(SiliconFlow trace id "
            )

            fake.configure(listed_models=["Qwen/Qwen-Image", "black-forest-labs/FLUX.2-pro"])
            assert await running.services.models.refresh() is True
            cards = await listed(running)
            assert [card["id"] for card in cards] == [
                "black-forest-labs/FLUX.2-pro",
                "Qwen/Qwen-Image",
            ]
            assert (await ready_checks(running))["models"] == "discovered: 2 image models"
    [warning] = [r.getMessage() for r in caplog.records if r.name == "sfproxy.discovery"]
    assert warning.endswith("; serving the built-in list for siliconflow.com")


async def test_a_failed_refresh_keeps_the_models_found_before(tmp_path):
    async with FakeSiliconFlow(api_key=UPSTREAM_KEY) as fake:
        async with in_process(service_settings(fake, tmp_path)) as running:
            fake.configure(listed_models=["Kwai-Kolors/Kolors"])
            assert await running.services.models.refresh() is True
            fake.add_fault("malformed", target="models")
            assert await running.services.models.refresh() is False
            assert [card["id"] for card in await listed(running)] == ["Kwai-Kolors/Kolors"]
            assert (await ready_checks(running))["models"] == (
                "discovered earlier; the last refresh failed: "
                "SiliconFlow's model list was not valid JSON."
            )


async def test_a_slow_model_list_does_not_hold_up_the_start(tmp_path, monkeypatch):
    monkeypatch.setattr(discovery, "START_WAIT_SECONDS", 0.2)
    async with FakeSiliconFlow(api_key=UPSTREAM_KEY) as fake:
        fake.add_fault("hang", target="models", seconds=30)
        started = time.monotonic()
        async with in_process(service_settings(fake, tmp_path)) as running:
            waited = time.monotonic() - started
            cards = await listed(running)
    assert waited < 2.0
    assert [card["id"] for card in cards] == CN_ORDER
    assert {card["source"] for card in cards} == {"built-in"}


async def test_a_rejected_key_is_reported_without_the_key(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    async with FakeSiliconFlow(api_key="sk-some-other-key") as fake:
        settings = service_settings(fake, tmp_path, siliconflow_api_key=UPSTREAM_KEY)
        async with in_process(settings) as running:
            status = running.services.models.status
            checks = await ready_checks(running)
    assert status.startswith("built-in list for siliconflow.cn: discovery failed: SiliconFlow ")
    assert checks["models"] == status
    assert not any(UPSTREAM_KEY in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("type=image&sub_type=image-to-image", ["Kwai-Kolors/Kolors", "Qwen/Qwen-Image-Edit"]),
        ("type=image&sub_type=text-to-image", ["Kwai-Kolors/Kolors", "Qwen/Qwen-Image"]),
        ("type=video", ["Wan-AI/Wan2.2-T2V-A14B", "Wan-AI/Wan2.2-I2V-A14B"]),
        ("type=video&sub_type=text-to-video", ["Wan-AI/Wan2.2-T2V-A14B"]),
        ("type=text", []),
    ],
)
async def test_the_fake_lists_models_in_siliconflows_shape(query, expected):
    import httpx

    models = ["Kwai-Kolors/Kolors", "Qwen/Qwen-Image", "Qwen/Qwen-Image-Edit"]
    async with FakeSiliconFlow(api_key=UPSTREAM_KEY, listed_models=models) as fake:
        async with httpx.AsyncClient(base_url=fake.base_url) as http:
            unauthorized = await http.get(f"/models?{query}")
            response = await http.get(
                f"/models?{query}", headers={"Authorization": f"Bearer {UPSTREAM_KEY}"}
            )
    assert (unauthorized.status_code, unauthorized.text) == (401, "Invalid token")
    body = response.json()
    assert body["object"] == "list"
    assert [item["id"] for item in body["data"]] == expected
    for item in body["data"]:
        assert set(item) == {"id", "object", "created", "owned_by"}
        assert (item["object"], item["owned_by"]) == ("model", item["id"].split("/")[0])
